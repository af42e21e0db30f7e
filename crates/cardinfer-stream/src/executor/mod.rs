//! Streaming execution: a [`StreamPlan`] places every block, a bounded `SlotPool`
//! holds the streamed ones, and a prefetch thread fills free slots ahead of the compute
//! loop, so a model larger than the budget still runs with unchanged output.
//!
//! Where this departs from the design (`docs/ARCHITECTURE.md`), and why:
//! - The placement ([`StreamPlan`]) is made by `cardinfer-plan` from the device bytes of
//!   every block ([`plan_on_device`]); resident layers are spread among the streamed ones
//!   so that copies overlap resident compute.
//! - On CUDA, slots are buffers allocated once (`cuda/slots.rs`): a streamed
//!   block's quantized matrices are copied into its slot and multiplied in place by
//!   Candle's own kernels launched on the raw pointer (`slot_kernels`, `cuda` feature),
//!   since a Candle `QTensor` cannot be built over existing device memory; float
//!   matrices are Candle tensors viewing the slot. Norms and biases get small allocations
//!   of their own per pass. On the CPU, slots are accounted by the `SlotPool` only.
//! - On CUDA, uploads from page-locked memory (`PinnedReader`) run on a copy stream
//!   of their own (`cuda/copy_stream`), synchronized with events; the compute loop,
//!   which issues all device work from one thread, reads streamed blocks ahead into every
//!   free slot (also while resident blocks compute), so the copy engine fills them while
//!   the current block computes. On the CPU a
//!   background thread reads ahead.
//! - Host tier: page-locked copies of every streamed block (`PinnedReader`), or, where
//!   host memory cannot hold them, the disk tier (`StagedReader`): blocks read from the
//!   file on demand into a ring of staging buffers by a background thread.

// The fused decode path's kernels and CPU reference: internals, public to the developer
// tools and tests (`dev` feature).
#[cfg(feature = "dev")]
pub mod fused;
#[cfg(not(feature = "dev"))]
#[allow(dead_code)]
pub(crate) mod fused;
mod hidden;
mod host_head;
mod host_split;
// The host layer's exact twin and its stage timings: public to the developer tools (`dev`).
#[cfg(feature = "dev")]
pub mod host_layer;
#[cfg(not(feature = "dev"))]
mod host_layer;
mod plan;
// Parts of these only the tests read (`dev`).
#[cfg_attr(not(feature = "dev"), allow(dead_code))]
pub(crate) mod expert_cache;
mod pool;
mod reader;
mod resident;
#[cfg_attr(not(feature = "dev"), allow(dead_code))]
mod staged;
mod streamed;
mod timeline;

pub(crate) use timeline::Timeline;
mod warmup;

pub use fused::DecodePath;
pub use host_layer::host_decode_step;
pub use plan::{
    block_device_bytes, copies_overlap, device_block_bytes, plan_on_device, Mode, Placement, PlanRequest, StreamPlan,
};
pub use pool::PoolStats;
pub use resident::ResidentModel;
pub use streamed::{StreamTimings, StreamedModel};
pub use warmup::zero_layer;

// The pool, the readers and the warm-up measurements: internals, public to the developer
// tools and tests (`dev` feature).
#[cfg(feature = "dev")]
pub use {
    pool::{SlotPool, SlotTicket},
    reader::{BlockReader, CheckpointReader, PinnedReader, Uploader},
    staged::StagedReader,
    warmup::{measure_device_overheads, measure_runtime_bytes, DeviceOverheads},
};
#[cfg(not(feature = "dev"))]
#[allow(unused_imports)]
pub(crate) use {
    pool::{SlotPool, SlotTicket},
    reader::{BlockReader, CheckpointReader, PinnedReader, Uploader},
    staged::StagedReader,
    warmup::{measure_device_overheads, measure_runtime_bytes, DeviceOverheads},
};
