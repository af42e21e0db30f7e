//! Stream a transformer block type defined in this example (`block.rs`) through the pool,
//! and check it against the built-in model loaded fully resident.
//!
//! ```text
//! cargo run --release --example custom_block -- ~/.cache/cardinfer/models/SmolLM2-135M-Instruct.Q4_1.gguf
//! cargo run --release --features cuda --example custom_block -- q4.gguf --device cuda --vram-budget 500MiB
//! ```

mod block;

use anyhow::{ensure, Context, Result};
use cardinfer_stream::{GenerateOptions, LoadOptions, LoadedModel, Logits, Mode, Session, TextModel};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Stream a block type of your own and compare it with the built-in model")]
struct Args {
    /// A GGUF file or Hugging Face checkpoint directory of a Llama/Qwen-style model.
    model: std::path::PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Device memory for the streamed model (bytes such as 500MiB, or a share such as 80%).
    #[arg(long, default_value = "80%")]
    vram_budget: String,
    /// Prompt as comma-separated token ids (default: a fixed 16-token prompt).
    #[arg(long)]
    prompt_ids: Option<String>,
    /// Greedy tokens to generate with each model.
    #[arg(long, default_value_t = 16)]
    tokens: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let path = &args.model;
    let device = cardinfer_stream::device::parse_device(&args.device)?;
    let options = LoadOptions::default().budget(args.vram_budget.parse()?).mode(Mode::Stream);
    let custom = LoadedModel::load_with_block::<block::LlamaStyleBlock>(path, &device, &options, |_, _| {})
        .with_context(|| format!("loading {} with the example's block", path.display()))?;
    let builtin = LoadedModel::load(path, &device, |_, _| {})?;
    let vocab = builtin.model.spec().vocab_size as u64;
    let prompt: Vec<u32> = match &args.prompt_ids {
        Some(text) => text.split(',').map(|t| t.trim().parse()).collect::<Result<_, _>>()?,
        None => (0..16u64).map(|i| ((i * 7919 + 13) % vocab) as u32).collect(),
    };

    let logits = |model: &dyn TextModel| -> Result<Vec<Vec<f32>>> {
        let mut kv = model.new_cache();
        Ok(model.forward(&prompt, &mut kv, Logits::All)?.to_vec2::<f32>()?)
    };
    let (custom_logits, builtin_logits) = (logits(&custom.model)?, logits(&builtin.model)?);
    let max_diff = custom_logits
        .iter()
        .flatten()
        .zip(builtin_logits.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let options = GenerateOptions { max_tokens: args.tokens, ..Default::default() };
    let generate = |model: &dyn TextModel| Session::new(model, None).generate(&prompt, &options, |_| {});
    let (custom_ids, builtin_ids) = (generate(&custom.model)?.generated_ids, generate(&builtin.model)?.generated_ids);

    let metrics = custom.model.metrics();
    println!("| model | blocks computed by | mode | streamed MB/token | prompt logits max |Δ| | generated ids |");
    println!("|---|---|---|---|---|---|");
    println!("| {} | built-in decoder | resident | 0 | 0 | {builtin_ids:?} |", path.display());
    println!(
        "| {} | example's LlamaStyleBlock | {} | {:.1} | {max_diff:e} | {custom_ids:?} |",
        path.display(),
        metrics.mode,
        metrics.bytes_streamed_per_token as f64 / 1e6
    );
    ensure!(custom_ids == builtin_ids, "the streamed custom block generated different ids");
    Ok(())
}
