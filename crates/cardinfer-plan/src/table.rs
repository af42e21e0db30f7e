//! The adaptation table: for each catalogued GPU, the largest model that runs at a given
//! decode speed or faster, as the cost model predicts it with a projected profile.

use crate::catalog::{ArchPreset, GpuSpec, PresetBytes, QuantShape, GPUS, H100, PRESETS, QUANTS};
use crate::cost::Prediction;
use crate::moe_cost::{predict_moe, MoePlacement, MoeShape};
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
    moe_table(&mut out, measured);
    let _ = writeln!(
        out,
        "Profile: {}; projected per GPU from PCIe generation, memory bandwidth and FP16 rate.",
        measured.device
    );
    out
}

/// Device bytes a mixture of experts needs besides its dense part and KV cache: the
/// kernels' scratch and a prefill chunk's activations.
const MOE_WORKSPACE: u64 = 256 << 20;

/// Where `shape` goes on `gpu` with a `kv` cache: resident when it all fits, else the
/// dense part resident and the experts in host memory (if the host holds them) with a
/// cache in what is left; `None` when the dense part does not fit.
pub fn moe_placement(shape: &MoeShape, kv: u64, gpu: &GpuSpec) -> Option<MoePlacement> {
    let room = gpu.vram_bytes().saturating_sub(RUNTIME_RESERVE + MOE_WORKSPACE + kv);
    let experts = shape.all_expert_bytes();
    if shape.dense_bytes + experts <= room {
        return Some(MoePlacement::Resident);
    }
    let host_fits = experts as f64 <= gpu.host_ram_gib * 0.8 * (1u64 << 30) as f64;
    (shape.dense_bytes <= room && host_fits)
        .then(|| MoePlacement::ExpertsOnHost { cache_bytes: room - shape.dense_bytes })
}

/// The mixtures of experts in Q4_K_M on each GPU: predicted decode at batch 1 (the cost
/// model of [`crate::moe_cost`], the router spreading tokens evenly — the cache's worst
/// case), context 4096.
fn moe_table(out: &mut String, measured: &Profile) {
    let Some(quant) = QUANTS.iter().find(|q| q.name == "Q4_K_M") else { return };
    let moe: Vec<&ArchPreset> = PRESETS.iter().filter(|a| a.is_moe()).collect();
    let _ = writeln!(
        out,
        "\nMixtures of experts in {}: predicted decode tok/s (context 4096, batch 1; experts that do not fit \
         in host memory with a device cache, the router spreading tokens evenly, the cache's worst case).\n",
        quant.name
    );
    let names: Vec<&str> = moe.iter().map(|a| a.name).collect();
    let _ = writeln!(out, "| GPU | {} |", names.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(moe.len()));
    for gpu in GPUS {
        let profile = gpu.project(measured, &H100);
        let cells: Vec<String> = moe
            .iter()
            .map(|arch| {
                let Some(shape) = MoeShape::of_preset(arch, quant) else { return "-".into() };
                let kv = arch.spec(4096).kv_bytes_per_token(cardinfer_core::KvType::default()) * 4096;
                match moe_placement(&shape, kv, &gpu) {
                    Some(p @ MoePlacement::Resident) => {
                        format!("{:.1} (resident)", predict_moe(&shape, p, &profile, 512, None).decode_tok_s)
                    }
                    Some(p) => format!("{:.1}", predict_moe(&shape, p, &profile, 512, None).decode_tok_s),
                    None if shape.all_expert_bytes() as f64 > gpu.host_ram_gib * 0.8 * (1u64 << 30) as f64 => {
                        format!("experts exceed {:.0} GiB of host RAM", gpu.host_ram_gib)
                    }
                    None => "dense part exceeds the device".into(),
                }
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", gpu.name, cells.join(" | "));
    }
}
