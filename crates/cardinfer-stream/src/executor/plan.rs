//! The planner's placement (`cardinfer-plan`, pure) applied to a model on a real device:
//! block sizes are measured the way this device stores them (Candle's CUDA row padding
//! included), then [`StreamPlan::place`] decides.

use crate::cuda::sizes::device_bytes_of;
use crate::Result;
use candle_core::Device;
use cardinfer_core::{BlockId, ModelLayout, ModelSpec};
pub use cardinfer_plan::{Mode, Placement, PlanRequest, StreamPlan};

/// Device bytes of `block` once loaded on `device` (quant-aware, with Candle's CUDA row
/// padding).
pub fn block_device_bytes(layout: &ModelLayout, block: BlockId, device: &Device) -> u64 {
    layout.tensors(block).iter().map(|t| device_bytes_of(t, device)).sum()
}

/// Device bytes of every block of `layout` on `device`, in execution order.
pub fn device_block_bytes(layout: &ModelLayout, device: &Device) -> Vec<(BlockId, u64)> {
    layout.blocks.iter().map(|(b, _)| (*b, block_device_bytes(layout, *b, device))).collect()
}

/// Plans `layout` for `request` on `device`.
pub fn plan_on_device(
    spec: &ModelSpec,
    layout: &ModelLayout,
    device: &Device,
    request: &PlanRequest,
) -> Result<StreamPlan> {
    Ok(StreamPlan::place(spec, &device_block_bytes(layout, device), request)?)
}

/// Whether the executor overlaps block copies with compute on `device`: the CPU runs a
/// prefetch thread; CUDA uploads on a copy stream when `copy_stream`
/// ([`LoadOptions::copy_stream`](crate::LoadOptions::copy_stream)).
pub fn copies_overlap(device: &Device, copy_stream: bool) -> bool {
    device.is_cpu() || copy_stream
}
