//! Teacher-forced scoring: log-probability of each token given the ones before it.
//!
//! ```text
//! cargo run --release --example score -- --text README.md --json
//! ```

#[path = "cli/mod.rs"]
mod cli;

use anyhow::{bail, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Score a text or token ids with a model")]
struct Args {
    /// A text file to score.
    #[arg(long, conflicts_with = "ids")]
    text: Option<String>,
    /// Comma-separated token ids to score.
    #[arg(long)]
    ids: Option<String>,
    #[command(flatten)]
    model: cli::ModelArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (loaded, _device, _watch, _) = cli::load(&args.model)?;
    let Some(ids) = cli::text_or_ids(args.text.as_deref(), args.ids.as_deref(), &loaded)? else {
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
