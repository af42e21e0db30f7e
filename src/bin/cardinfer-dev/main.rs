//! `cardinfer-dev`: developer tools that need the library's internals (the `dev`
//! feature): kernel rates, bit-exactness checks of the CPU twins, a host layer's time,
//! the fused decode path against the plain one.
//!
//! ```text
//! cargo build --release --features dev --bin cardinfer-dev
//! ```

#[path = "../cardinfer/common.rs"]
mod common;
mod cpu_kernels;
mod decode_check;
mod exact_check;
mod host_layer;
#[path = "../cardinfer/logging.rs"]
#[allow(dead_code)]
mod logging;
mod op_cost;
mod soak;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cardinfer-dev", version, about = "CardInfer's developer tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One subcommand is parsed once per process: boxing the large ones buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// CPU matrix-vector product rates by weight type (the kernel in use).
    CpuKernels(cpu_kernels::Args),
    /// Fused decode path against the plain one, step by step.
    DecodeCheck(decode_check::Args),
    /// The CPU's MMVQ products against the device's, bit for bit (CUDA).
    ExactCheck,
    /// A host layer's CPU time: small ops on one thread or on Rayon's pool.
    HostLayer(host_layer::Args),
    /// Host and device cost per call of a decode layer's operations.
    OpCost(op_cost::Args),
    /// Many generations and chat turns in one process, memory sampled.
    Soak(soak::Args),
}

fn main() -> std::process::ExitCode {
    logging::init();
    // The kernels are used here without a model to load them with.
    cardinfer_stream::cpu::kernels::select(common::cpu_kernels_with_env(cardinfer_stream::CpuKernels::Native));
    let result = match Cli::parse().command {
        Command::CpuKernels(args) => cpu_kernels::run(args),
        Command::DecodeCheck(args) => decode_check::run(args),
        Command::ExactCheck => exact_check::run(),
        Command::HostLayer(args) => host_layer::run(args),
        Command::OpCost(args) => op_cost::run(args),
        Command::Soak(args) => soak::run(args),
    };
    logging::exit_code(result)
}
