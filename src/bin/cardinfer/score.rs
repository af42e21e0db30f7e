//! Teacher-forced scoring: log-probability of each token given the ones before it.
//!
//! ```text
//! cardinfer score --text README.md --json
//! ```

use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// A text file to score.
    #[arg(long, conflicts_with = "ids")]
    text: Option<String>,
    /// Comma-separated token ids to score.
    #[arg(long)]
    ids: Option<String>,
    #[command(flatten)]
    model: crate::common::ModelArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (loaded, _device, _watch, _) = crate::common::load(&args.model)?;
    let Some(ids) = crate::common::text_or_ids(args.text.as_deref(), args.ids.as_deref(), &loaded)? else {
        bail!("give --text FILE or --ids 1,2,3");
    };
    let score = cardinfer_stream::score(&loaded.model, &ids)?;
    if args.json {
        println!("{}", serde_json::to_string(&score)?);
    } else {
        println!("tokens      {}", score.token_ids.len());
        println!("mean NLL    {:.4}", score.mean_nll);
        println!("perplexity  {:.3}", score.perplexity);
    }
    Ok(())
}
