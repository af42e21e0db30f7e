//! The cost model of a mixture-of-experts model (issue 30): decode and prefill speed of a
//! placement — everything resident, or everything but the routed experts resident with the
//! experts in host memory and a device cache of them in what the budget leaves.
//!
//! Decode, per token: the fused kernels' per-layer cost; the resident weights a token
//! reads (the dense part and its k experts per routed layer) at the device's read rate;
//! with the experts in host memory, a round trip to the host per routed layer (the host
//! places the layer's experts) and the experts the cache misses, read at the CPU's and
//! the link's rates together (the executor splits them so both finish at once).
//! Prefill, per chunk: each used expert's products as their own operations (a fixed cost
//! per used expert per layer, the expected number of distinct experts a chunk routes to),
//! overlapped with copying those experts over the link when they live in host memory.
//!
//! The constants are fitted from the H100 runs of BENCHMARKS.md §6 (synthetic
//! Qwen3-30B-A3B Q4_K_M, commit a97d320); the tests hold those runs and check the model
//! against them.

use crate::catalog::QuantShape;
use crate::cost::Bound;
use crate::profile::Profile;
use cardinfer_core::presets::ArchPreset;
use serde::Serialize;

/// Fused decode cost per layer besides reading weights, milliseconds (routing on the
/// device, the k experts' launches, attention): resident Qwen3-30B-A3B decoded 237 tok/s
/// where reading its weights takes ~1 ms of the 4.2.
pub const FUSED_LAYER_MS: f64 = 0.0675;
/// With the experts in host memory, the host's part of a routed layer per token besides
/// reading experts (the logits' copy to the host, routing and placing the experts, the
/// launches and copies around them), milliseconds.
pub const HOST_LAYER_MS: f64 = 0.036;
/// The share of the link's rate ([`Profile::h2d_gb_s`]) copies of experts reach (three
/// copies of about a megabyte each per expert: 34–39 GB/s measured against the 50 fitted).
pub const EXPERT_LINK_SHARE: f64 = 0.72;
/// The share of the CPU's and the link's rates together that a decode step's missed
/// experts get: the split between them, the waits and hand-offs around the CPU's jobs
/// (a 1.9 GiB run read its misses at ~42 GB/s where the two measured 35 and 36).
pub const MISS_OVERLAP: f64 = 0.64;
/// The CPU's rate computing routed experts from host memory as a share of its block
/// rate ([`Profile::cpu_matvec_gb_s`]): the executor measured 30–34 GB/s beside uploads on
/// the H100 machine's 16 vCPU, whose fitted block rate is 50.
pub const CPU_EXPERT_SHARE: f64 = 0.6;
/// A prompt chunk's cost per used expert per routed layer, milliseconds: the expert's
/// products run as their own small operations (resident pp512: 1088 tok/s).
pub const PREFILL_EXPERT_MS: f64 = 0.0766;

/// A mixture of experts as the cost model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MoeShape {
    /// Bytes every token reads besides its experts: attention, norms, routers, the head
    /// (the embedding is a lookup).
    pub dense_bytes: u64,
    /// Bytes of one expert (gate, up and down).
    pub expert_bytes: u64,
    /// Experts per routed layer.
    pub experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Layers routed to experts.
    pub routed_layers: usize,
    /// All layers.
    pub layers: usize,
}

impl MoeShape {
    /// The shape of preset `arch` in `quant` (`None` for a dense preset).
    pub fn of_preset(arch: &ArchPreset, quant: &QuantShape) -> Option<Self> {
        let (experts, top_k) = arch.experts?;
        let (h, ff) = (arch.hidden as f64, arch.ffn as f64);
        let attention = h * arch.head_dim as f64 * (2 * arch.heads + 2 * arch.kv_heads) as f64;
        let layer_dense = attention * quant.layer_bpw / 8.0 + h * experts as f64 * 4.0;
        let head = arch.vocab as f64 * h * quant.head_bpw / 8.0;
        Some(Self {
            dense_bytes: (arch.layers as f64 * layer_dense + head) as u64,
            expert_bytes: (3.0 * h * ff * quant.layer_bpw / 8.0) as u64,
            experts,
            top_k,
            routed_layers: arch.layers,
            layers: arch.layers,
        })
    }

    /// Bytes of every routed expert.
    pub fn all_expert_bytes(&self) -> u64 {
        self.expert_bytes * (self.experts * self.routed_layers) as u64
    }

    /// Bytes of the experts one token reads.
    pub fn active_expert_bytes(&self) -> u64 {
        self.expert_bytes * (self.top_k * self.routed_layers) as u64
    }

    /// Expected distinct experts a chunk of `tokens` routes to in one layer, the router
    /// spreading tokens evenly (each token picks k of the experts).
    pub fn used_experts(&self, tokens: usize) -> f64 {
        let e = self.experts.max(1) as f64;
        let miss = (1.0 - self.top_k as f64 / e).max(0.0);
        e * (1.0 - miss.powf(tokens as f64))
    }
}

/// Where a mixture of experts lives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum MoePlacement {
    /// Every weight on the device.
    Resident,
    /// Everything but the routed experts on the device; the experts in host memory, a
    /// device cache of `cache_bytes` holding some.
    ExpertsOnHost {
        /// Device bytes of the expert cache.
        cache_bytes: u64,
    },
}

/// Where a decoded token's time goes, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MoeDecodeMs {
    /// The fused kernels' per-layer cost and, with experts on the host, the host's part of
    /// each routed layer.
    pub overhead: f64,
    /// Reading the dense part and the cached (or resident) experts on the device.
    pub device_read: f64,
    /// The experts the cache misses, read by the CPU and over the link at once.
    pub misses: f64,
}

/// Predicted speed of a mixture-of-experts placement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MoePrediction {
    /// Decode tokens per second at batch 1.
    pub decode_tok_s: f64,
    /// Prefill tokens per second in chunks of the given size.
    pub prefill_tok_s: f64,
    /// The fraction of a token's experts served from the device (1 when resident).
    pub hit_rate: f64,
    /// Where a decoded token's time goes.
    pub decode_ms: MoeDecodeMs,
    /// What bounds decode.
    pub decode_bound: Bound,
}

/// Predicts decode and prefill (chunks of `chunk` tokens) of `shape` placed as
/// `placement` on a machine of `profile`. `hit_rate`: the fraction of a token's experts
/// the cache serves; `None` takes the router spreading tokens evenly, the cache's worst
/// case (its share of all experts).
pub fn predict_moe(
    shape: &MoeShape,
    placement: MoePlacement,
    profile: &Profile,
    chunk: usize,
    hit_rate: Option<f64>,
) -> MoePrediction {
    let device = profile.device_read_gb_s * 1e9;
    let active = shape.active_expert_bytes() as f64;
    let fused = shape.layers as f64 * FUSED_LAYER_MS;
    let chunk = chunk.max(1);
    let used = shape.used_experts(chunk) * shape.routed_layers as f64;
    let prefill_compute = used * PREFILL_EXPERT_MS;
    let (hit, host, misses, prefill_link) = match placement {
        MoePlacement::Resident => (1.0, 0.0, 0.0, 0.0),
        MoePlacement::ExpertsOnHost { cache_bytes } => {
            let even = cache_bytes as f64 / shape.all_expert_bytes().max(1) as f64;
            let hit = hit_rate.unwrap_or(even).clamp(0.0, 1.0);
            let cpu = CPU_EXPERT_SHARE * profile.cpu_matvec_gb_s * 1e9;
            let upload = EXPERT_LINK_SHARE * profile.h2d_gb_s * 1e9;
            // Without a cache the CPU computes every expert alone (nothing to split).
            let rate = if cache_bytes == 0 { cpu } else { MISS_OVERLAP * (cpu + upload) };
            let misses = (1.0 - hit) * active / rate * 1e3;
            let link = used * shape.expert_bytes as f64 / upload * 1e3;
            (hit, shape.routed_layers as f64 * HOST_LAYER_MS, misses, link)
        }
    };
    let device_read = (shape.dense_bytes as f64 + hit * active) / device * 1e3;
    let overhead = fused + host;
    let total = overhead + device_read + misses;
    let decode_bound = if misses >= overhead.max(device_read) {
        Bound::HostCompute
    } else if overhead >= device_read {
        Bound::Overhead
    } else {
        Bound::DeviceMemory
    };
    MoePrediction {
        decode_tok_s: 1e3 / total,
        prefill_tok_s: chunk as f64 * 1e3 / prefill_compute.max(prefill_link),
        hit_rate: hit,
        decode_ms: MoeDecodeMs { overhead, device_read, misses },
        decode_bound,
    }
}

#[cfg(test)]
mod tests;
