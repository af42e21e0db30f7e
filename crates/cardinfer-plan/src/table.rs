//! The adaptation table: for each catalogued GPU, the largest model that runs at a given
//! decode speed or faster, as the cost model predicts it with a projected profile.

use crate::catalog::{ArchShape, GpuSpec, QuantShape, ARCHS, QUANTS};
use crate::cost::{predict, Prediction};
use crate::placement::{Mode, PlanRequest, StreamPlan};
use crate::profile::Profile;
use cardinfer_core::BlockId;

/// Device bytes the CUDA runtime and a display take besides the model.
pub const RUNTIME_RESERVE: u64 = 400 << 20;

/// One projected run: a model in a quantization on a GPU.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The model.
    pub arch: ArchShape,
    /// The quantization.
    pub quant: QuantShape,
    /// The plan made for the GPU's memory.
    pub plan: StreamPlan,
    /// Its predicted speed.
    pub prediction: Prediction,
    /// Bytes of weights kept in host memory (streamed blocks and the embedding).
    pub host_bytes: u64,
}

/// Plans and predicts `arch` in `quant` on `gpu` with `profile` (already projected onto
/// it), the budget being the GPU's memory less [`RUNTIME_RESERVE`]. `None` when it does
/// not fit the device or the host's RAM.
pub fn project(arch: &ArchShape, quant: &QuantShape, gpu: &GpuSpec, profile: &Profile, context: usize) -> Option<Projection> {
    let spec = arch.spec(context);
    let blocks = arch.block_bytes(quant);
    let request = PlanRequest {
        budget_bytes: gpu.vram_bytes().saturating_sub(RUNTIME_RESERVE),
        mode: Mode::Auto,
        slots: None,
        prefill_chunk: 512,
        runtime_bytes: 0,
        overlapped_copies: false,
    };
    let plan = StreamPlan::place(&spec, &blocks, &request).ok()?;
    let embed = blocks.iter().find(|(b, _)| *b == BlockId::Embed).map_or(0, |(_, n)| *n);
    let host_bytes = plan.streamed_bytes_per_pass() + embed;
    if host_bytes as f64 > gpu.host_ram_gib * 0.8 * (1u64 << 30) as f64 {
        return None;
    }
    let prediction = predict(&spec, &plan, profile, false);
    Some(Projection { arch: *arch, quant: *quant, plan, prediction, host_bytes })
}

/// The largest dense model (most parameters, then most bits) predicted to decode at
/// `min_tok_s` or faster on `gpu`.
pub fn largest_model(gpu: &GpuSpec, profile: &Profile, min_tok_s: f64, context: usize) -> Option<Projection> {
    let mut archs: Vec<&ArchShape> = ARCHS.iter().filter(|a| !a.moe).collect();
    archs.sort_by(|a, b| b.params_b.total_cmp(&a.params_b));
    archs.into_iter().find_map(|arch| {
        QUANTS
            .iter()
            .filter_map(|q| project(arch, q, gpu, profile, context))
            .find(|p| p.prediction.decode_tok_s >= min_tok_s)
    })
}
