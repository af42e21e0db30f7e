//! Write a synthetic GGUF of a real architecture (random but valid Q4_K / Q6_K blocks,
//! the quant mix of Q4_K_M) for speed and memory benchmarks. llama.cpp loads it too.
//!
//! ```text
//! cardinfer synth --preset qwen3-14b --output qwen3-14b.gguf
//! cardinfer synth --preset qwen3-4b --layers 2 --output tiny.gguf
//! ```

use anyhow::Result;
use cardinfer_quant::synth_preset::{preset, presets, SynthGguf, SynthOptions};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Preset name; --list shows them.
    #[arg(long, required_unless_present = "list")]
    preset: Option<String>,
    /// The GGUF file to write (written to OUTPUT.tmp, renamed when complete).
    #[arg(long, required_unless_present = "list")]
    output: Option<String>,
    /// Override the layer count (1 to 1024, `cardinfer_core::limits::LAYERS`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=cardinfer_core::limits::LAYERS as u64))]
    layers: Option<u64>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Mixture-of-experts presets: this many hot experts per layer (router rows 8× larger,
    /// routed to far more often); 0, the default, routes uniformly (the worst case for a
    /// cache of experts).
    #[arg(long, default_value_t = 0)]
    hot_experts: usize,
    /// List the presets with their sizes.
    #[arg(long)]
    list: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.list {
        println!("| preset | arch | layers | d | heads/kv | ffn | vocab | GiB |");
        println!("|---|---|---:|---:|---:|---:|---:|---:|");
        for p in presets() {
            let gib = p.file_bytes() as f64 / (1u64 << 30) as f64;
            let ffn = match p.experts {
                Some((e, used)) => format!("{}×{e} ({used} used)", p.ffn),
                None => p.ffn.to_string(),
            };
            println!(
                "| {} | {} | {} | {} | {}/{} | {ffn} | {} | {gib:.2} |",
                p.key, p.arch, p.layers, p.hidden, p.heads, p.kv_heads, p.vocab
            );
        }
        return Ok(());
    }
    let (Some(name), Some(output)) = (args.preset.as_deref(), args.output.as_deref()) else {
        anyhow::bail!("give --preset and --output (or --list)");
    };
    let mut p = preset(name)?;
    if let Some(layers) = args.layers.map(|n| n as usize) {
        anyhow::ensure!(layers > 0, "--layers must be at least 1");
        p.layers = layers;
    }
    crate::common::clean_temporary_on_signal(output)?;
    let start = Instant::now();
    let bar = crate::common::ProgressBar::new(format!("writing {output}"));
    if args.hot_experts > 0 {
        let experts = p.experts.map_or(0, |(e, _)| e);
        anyhow::ensure!(
            args.hot_experts <= experts,
            "--hot-experts {}: {} has {experts} experts per layer",
            args.hot_experts,
            p.key
        );
    }
    let options = SynthOptions { seed: args.seed, hot_experts: args.hot_experts };
    p.write_gguf_with(output.as_ref(), &options, &mut |done, total| bar.show(done >> 20, total >> 20, "MiB"))?;
    let secs = start.elapsed().as_secs_f64();
    bar.finish(&format!(
        "wrote {output}: {} ({} layers), {:.2} GiB in {secs:.1} s",
        p.key,
        p.layers,
        p.file_bytes() as f64 / (1u64 << 30) as f64
    ));
    Ok(())
}
