//! Streaming execution: a [`StreamPlan`] places every block, a bounded [`SlotPool`]
//! holds the streamed ones, and a prefetch thread fills free slots ahead of the compute
//! loop, so a model larger than the budget still runs with unchanged output.
//!
//! Where this departs from `DESIGN.md`, and why:
//! - [`StreamPlan`] lives here rather than in `cardinfer-plan`: it is a fixed,
//!   deterministic policy (head resident if it fits, then layers in order) that the
//!   cost-model planner will replace; the executor only consumes the placement.
//! - Slots are accounted, not preallocated: a streamed block is uploaded into a fresh
//!   allocation from the device's stream-ordered memory pool and freed after use, and the
//!   [`SlotPool`] bounds how many exist at once. Using preallocated slot buffers in place
//!   needs Candle's quantized kernels called on raw pointers (its `QTensor` cannot be
//!   built over existing device memory); that is the next step.
//! - On CUDA, uploads are issued inline on the compute stream from page-locked memory
//!   ([`PinnedReader`]); they are asynchronous but share the stream with compute, so copy
//!   and compute do not overlap yet. A second copy stream with events is the next step.
//!   On the CPU a background thread reads ahead.

mod plan;
mod pool;
mod reader;
mod streamed;
mod warmup;

pub use plan::{
    block_device_bytes, copies_overlap, device_block_bytes, plan_on_device, Mode, Placement, PlanRequest, StreamPlan,
};
pub use pool::{PoolStats, SlotPool, SlotTicket};
pub use reader::{BlockReader, CheckpointReader, PinnedReader};
pub use streamed::{StreamTimings, StreamedModel};
pub use warmup::{measure_device_overheads, measure_runtime_bytes, zero_layer, DeviceOverheads};
