//! `cardinfer`: run language models larger than the GPU's memory.
//!
//! ```text
//! cardinfer run -p "The capital of France is" --temperature 0
//! cardinfer chat
//! cardinfer plan -m qwen3-14b.gguf --vram-budget 6GiB
//! cardinfer bench -m qwen3-14b.gguf --vram-budget 6GiB --hybrid
//! ```
//! Every subcommand takes `--help`. The library reads no environment variable; this
//! binary maps the ones it documents to typed options (see `common.rs`) and to the
//! library's diagnostics (`tracing`).

mod bench;
mod bench_draft;
mod chat;
mod common;
mod draft;
mod logging;
mod plan;
mod probe;
mod quality;
mod run;
mod score;
mod slice;
mod synth;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cardinfer",
    version,
    about = "Run language models larger than the GPU's memory, with identical output"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One subcommand is parsed once per process: boxing the large ones buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    #[command(visible_alias = "generate")]
    Run(run::Args),
    /// Chat with a model on stdin/stdout.
    Chat(chat::Args),
    /// Plan a model's placement for a memory budget and predict its speed.
    Plan(plan::Args),
    /// Measure prefill and decode speed (llama-bench style).
    Bench(bench::Args),
    /// Measure the rates the planner's cost model needs and save them as a profile.
    Probe(probe::Args),
    /// Write a checkpoint as a block-ordered GGUF, optionally quantized.
    Slice(slice::Args),
    /// Write a GGUF of an architecture preset with random weights.
    Synth(synth::Args),
    /// KL divergence, top-1 agreement and perplexity of a model against a reference.
    Quality(quality::Args),
    /// Score a text or token ids with a model.
    Score(score::Args),
}

fn main() -> std::process::ExitCode {
    logging::init();
    let result = match Cli::parse().command {
        Command::Run(args) => run::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Slice(args) => slice::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Quality(args) => quality::run(args),
        Command::Score(args) => score::run(args),
    };
    logging::exit_code(result)
}
