//! Streaming execution: a [`StreamPlan`] places every block, a bounded [`SlotPool`]
//! holds the streamed ones, and a prefetch thread fills free slots ahead of the compute
//! loop, so a model larger than the budget still runs with unchanged output.

mod plan;
mod pool;
mod reader;
mod streamed;

pub use plan::{block_device_bytes, Mode, Placement, StreamPlan};
pub use pool::{PoolStats, SlotPool, SlotTicket};
pub use reader::{BlockReader, CheckpointReader, PinnedReader};
pub use streamed::{StreamTimings, StreamedModel};
