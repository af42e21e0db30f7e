//! Diagnostics are [`tracing`] events, off unless a subscriber asks for their targets
//! (the `cardinfer` CLI maps `CARDINFER_TIMELINE`, `CARDINFER_TRACE` and
//! `CARDINFER_HOST_STAGES` to them, or takes `RUST_LOG`):
//!
//! | target | level | what |
//! |---|---|---|
//! | [`TIMELINE`] | `debug` | each weight pass's device timeline (CUDA events): every block's copy and compute for passes over 4 tokens, a summary line for decode steps |
//! | [`TIMELINE`] | `trace` | every block of decode steps too |
//! | [`BLOCKS`] | `trace` | every block read and computed by the streaming executor (for stalls) |
//! | [`HOST_STAGES`] | `debug` | the milliseconds of each step of a host layer computed on the CPU |
//!
//! Recording a timeline costs CUDA events: it is done only while its target is enabled.

/// The device timeline of each weight pass.
pub const TIMELINE: &str = "cardinfer::timeline";
/// Every block read and computed by the streaming executor.
pub const BLOCKS: &str = "cardinfer::blocks";
/// The steps of each host layer.
pub const HOST_STAGES: &str = "cardinfer::host_stages";
