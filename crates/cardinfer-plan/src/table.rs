//! The adaptation table: for each catalogued GPU, the largest model that runs at a given
//! decode speed or faster, as the cost model predicts it with a projected profile.

use crate::catalog::{ArchPreset, GpuSpec, PresetBytes, QuantShape, GPUS, H100, PRESETS, QUANTS};
use crate::cost::Prediction;
use crate::plan::{PlanRequest, StreamPlan, Workload};
use crate::profile::Profile;
use cardinfer_core::{BlockId, ByteSize};
use std::fmt::Write;

/// Device bytes the CUDA runtime and a display take besides the model.
pub const RUNTIME_RESERVE: u64 = 400 << 20;

/// One projected run: a model in a quantization on a GPU.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The model.
    pub arch: ArchPreset,
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
pub fn project(
    arch: &ArchPreset,
    quant: &QuantShape,
    gpu: &GpuSpec,
    profile: &Profile,
    context: usize,
) -> Option<Projection> {
    let spec = arch.spec(context);
    let blocks = arch.block_bytes(quant);
    let request = PlanRequest::auto(gpu.vram_bytes().saturating_sub(RUNTIME_RESERVE));
    let (plan, prediction) =
        StreamPlan::place_for_workload(&spec, &blocks, &request, profile, Workload::default()).ok()?;
    let embed = blocks.iter().find(|(b, _)| *b == BlockId::Embed).map_or(0, |(_, n)| *n);
    let host_bytes = plan.streamed_bytes_per_pass() + embed;
    if host_bytes as f64 > gpu.host_ram_gib * 0.8 * (1u64 << 30) as f64 {
        return None;
    }
    Some(Projection { arch: *arch, quant: *quant, plan, prediction, host_bytes })
}

/// The largest dense model (most parameters, then most bits) predicted to decode at
/// `min_tok_s` or faster on `gpu`.
pub fn largest_model(gpu: &GpuSpec, profile: &Profile, min_tok_s: f64, context: usize) -> Option<Projection> {
    let mut archs: Vec<&ArchPreset> = PRESETS.iter().filter(|a| !a.is_moe()).collect();
    archs.sort_by(|a, b| b.params_b.total_cmp(&a.params_b));
    archs.into_iter().find_map(|arch| {
        QUANTS
            .iter()
            .filter_map(|q| project(arch, q, gpu, profile, context))
            .find(|p| p.prediction.decode_tok_s >= min_tok_s)
    })
}

/// The table as markdown: each catalogued GPU with the largest dense model predicted at
/// `min_tok_s` or faster, the measured profile (taken on the H100) projected onto it.
pub fn markdown(measured: &Profile, min_tok_s: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Largest dense model predicted at ≥ {min_tok_s} tok/s decode (context 4096, batch 1).\n");
    let _ =
        writeln!(out, "| GPU | largest model | decode tok/s | prefill tok/s | resident / streamed per token | bound |");
    let _ = writeln!(out, "|---|---|---:|---:|---|---|");
    for gpu in GPUS {
        let profile = gpu.project(measured, &H100);
        let _ = match largest_model(&gpu, &profile, min_tok_s, 4096) {
            Some(p) => writeln!(
                out,
                "| {} | {} {} | {:.1} | {:.0} | {} / {} | {} |",
                gpu.name,
                p.arch.name,
                p.quant.name,
                p.prediction.decode_tok_s,
                p.prediction.prefill_tok_s,
                ByteSize(p.plan.resident_bytes),
                ByteSize(p.prediction.streamed_bytes_per_token),
                p.prediction.decode_bound
            ),
            None => writeln!(out, "| {} | none | - | - | - | - |", gpu.name),
        };
    }
    let moe: Vec<&str> = PRESETS.iter().filter(|a| a.is_moe()).map(|a| a.name).collect();
    let _ = writeln!(
        out,
        "\nNot in this table (its cost model has no routed experts yet; `plan` on the file places them): {}.",
        moe.join(", ")
    );
    let _ = writeln!(
        out,
        "Profile: {}; projected per GPU from PCIe generation, memory bandwidth and FP16 rate.",
        measured.device
    );
    out
}
