//! Slice a checkpoint into a streaming-ordered GGUF (each block one contiguous byte
//! range), optionally quantized the way llama.cpp's schemes mix types.
//!
//! ```text
//! cardinfer slice --input ./Qwen3-0.6B --output qwen3-0.6b-q4_k_m.gguf --quant q4_k_m
//! cardinfer slice --input model.gguf --output model.streaming.gguf   # re-pack only
//! ```

use anyhow::{Context, Result};
use cardinfer_quant::gguf::GgufFile;
use cardinfer_quant::scheme::QuantScheme;
use cardinfer_quant::slice::{block_ranges, slice, SliceOptions};
use cardinfer_quant::Checkpoint;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face checkpoint directory (F32/F16/BF16 safetensors) or a GGUF file.
    #[arg(long)]
    input: String,
    /// The GGUF file to write (written to OUTPUT.tmp, renamed when complete).
    #[arg(long)]
    output: String,
    /// f16, q8_0, q6_k, q5_k_m, q4_k_m, q3_k_m, q2_k, or keep (re-pack without requantizing).
    #[arg(long, default_value = "keep")]
    quant: String,
    /// Do not embed the Hugging Face tokenizer.
    #[arg(long)]
    no_tokenizer: bool,
    /// Quantization threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let input = Checkpoint::open(&args.input).with_context(|| format!("opening {}", args.input))?;
    let mut options = SliceOptions { tokenizer: !args.no_tokenizer, ..SliceOptions::default() };
    options.scheme = match args.quant.as_str() {
        "keep" => None,
        name => Some(name.parse::<QuantScheme>()?),
    };
    if let Some(threads) = args.threads {
        options.threads = threads.max(1);
    }
    crate::common::clean_temporary_on_signal(&args.output)?;
    let start = Instant::now();
    let bar = crate::common::ProgressBar::new(format!("slicing into {}", args.output));
    let report = slice(&input, args.output.as_ref(), &options, &mut |p| {
        bar.show(p.done_bytes >> 20, p.total_bytes >> 20, "MiB")
    })?;
    bar.finish(&format!("wrote {} ({:.1} s)", args.output, start.elapsed().as_secs_f64()));

    let written = GgufFile::open(&args.output)?;
    let blocks = block_ranges(&written)?;
    println!("| type | tensors | MiB |");
    println!("|---|---:|---:|");
    for (name, (count, bytes)) in &report.by_type {
        println!("| {name} | {count} | {:.1} |", *bytes as f64 / 1048576.0);
    }
    println!(
        "{} tensors, {:.1} MiB → {:.1} MiB, {} blocks each one contiguous range, tokenizer {}",
        report.tensors,
        report.input_bytes as f64 / 1048576.0,
        report.output_bytes as f64 / 1048576.0,
        blocks.len(),
        if report.tokenizer { "embedded" } else { "absent" }
    );
    Ok(())
}
