//! Consumer GPUs to project a measured profile onto, and the quantizations the
//! adaptation table ranges over (with `cardinfer_core`'s architecture presets).

use crate::cost::layer_params;
use crate::profile::Profile;
use crate::PlanError;
use cardinfer_core::BlockId;

/// A GPU and the typical host it sits in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuSpec {
    /// Name on the command line (`rtx3060-12gb`).
    pub key: &'static str,
    /// Marketing name.
    pub name: &'static str,
    /// Device memory, GiB.
    pub vram_gib: f64,
    /// PCIe generation of the card's link.
    pub pcie_gen: u32,
    /// PCIe lanes.
    pub lanes: u32,
    /// Device memory bandwidth, GB/s (datasheet).
    pub mem_bw_gb_s: f64,
    /// Dense FP16 tensor throughput with FP32 accumulation, TFLOP/s (datasheet; FP32
    /// rate for cards without tensor cores).
    pub fp16_tflops: f64,
    /// Host RAM of a typical machine with this card, GiB (holds the streamed blocks).
    pub host_ram_gib: f64,
}

/// The GPU the built-in fitted profile was measured on.
pub const H100: GpuSpec = GpuSpec {
    key: "h100",
    name: "H100 80GB HBM3 (PCIe 5 x16 host link)",
    vram_gib: 80.0,
    pcie_gen: 5,
    lanes: 16,
    mem_bw_gb_s: 3350.0,
    fp16_tflops: 989.0,
    host_ram_gib: 125.0,
};

const fn gpu(
    key: &'static str,
    name: &'static str,
    vram_gib: f64,
    pcie_gen: u32,
    mem_bw_gb_s: f64,
    fp16_tflops: f64,
    host_ram_gib: f64,
) -> GpuSpec {
    GpuSpec { key, name, vram_gib, pcie_gen, lanes: 16, mem_bw_gb_s, fp16_tflops, host_ram_gib }
}

/// Consumer GPUs, smallest first. Typical hosts: 16–32 GiB of DDR4 for the older
/// cards, 64 GiB of DDR5 for the 16–24 GB cards.
pub const GPUS: [GpuSpec; 8] = [
    gpu("gtx1050", "GTX 1050 2 GB", 2.0, 3, 112.0, 1.9, 16.0),
    gpu("gtx1650", "GTX 1650 4 GB", 4.0, 3, 128.0, 3.0, 16.0),
    gpu("gtx1660", "GTX 1660 6 GB", 6.0, 3, 192.0, 5.0, 16.0),
    gpu("rtx3060-8gb", "RTX 3060 8 GB", 8.0, 4, 240.0, 25.0, 32.0),
    gpu("rtx3060-12gb", "RTX 3060 12 GB", 12.0, 4, 360.0, 25.0, 32.0),
    gpu("rtx4070", "RTX 4070 12 GB", 12.0, 4, 504.0, 58.0, 32.0),
    gpu("rtx4080", "RTX 4080 16 GB", 16.0, 4, 717.0, 97.0, 64.0),
    gpu("rtx4090", "RTX 4090 24 GB", 24.0, 4, 1008.0, 165.0, 64.0),
];

/// The GPU called `key` (or the H100 the built-in profile was fitted on).
pub fn gpu_by_key(key: &str) -> Result<GpuSpec, PlanError> {
    GPUS.iter().chain(std::iter::once(&H100)).find(|g| g.key.eq_ignore_ascii_case(key)).copied().ok_or_else(|| {
        PlanError::InvalidParameter {
            name: "gpu",
            reason: format!(
                "`{key}` is not catalogued (known: {})",
                GPUS.iter().map(|g| g.key).collect::<Vec<_>>().join(", ")
            ),
        }
    })
}

/// PCIe payload rate per lane, GB/s.
fn pcie_lane_gb_s(generation: u32) -> f64 {
    match generation {
        0..=3 => 0.985,
        4 => 1.969,
        _ => 3.938,
    }
}

impl GpuSpec {
    /// Link payload rate, GB/s.
    pub fn link_gb_s(&self) -> f64 {
        pcie_lane_gb_s(self.pcie_gen) * self.lanes as f64
    }

    /// Projects `measured` (taken on `on`) onto this GPU: each rate keeps the share of
    /// its datasheet ceiling that was achieved on the measured machine (link, memory
    /// bandwidth, FP16 throughput; the non-matmul prefill work by memory bandwidth); the
    /// host-side overhead per layer is kept; the CPU
    /// rate becomes a typical desktop's (dual-channel RAM, ~25 GB/s effective).
    pub fn project(&self, measured: &Profile, on: &GpuSpec) -> Profile {
        Profile {
            device: format!("{} (projected from {})", self.name, measured.device),
            h2d_gb_s: measured.h2d_gb_s / on.link_gb_s() * self.link_gb_s(),
            device_read_gb_s: measured.device_read_gb_s / on.mem_bw_gb_s * self.mem_bw_gb_s,
            prefill_tflops_at_4096: measured.prefill_tflops_at_4096 / on.fp16_tflops * self.fp16_tflops,
            prefill_width_exponent: measured.prefill_width_exponent,
            // Attention, norms and activations are bound by memory bandwidth.
            prefill_ms_per_layer_token: measured.prefill_ms_per_layer_token * on.mem_bw_gb_s / self.mem_bw_gb_s,
            decode_overhead_ms_per_layer: measured.decode_overhead_ms_per_layer,
            cpu_matvec_gb_s: 25.0,
            disk_gb_s: measured.disk_gb_s,
            cpu_best_threads: None,
            host_hop_ms: measured.host_hop_ms,
            cpu_block_fixed_ms: measured.cpu_block_fixed_ms,
            // A desktop CPU: the development machine's 2-vCPU rate, scaled as the matvec's.
            cpu_attention_gvalues_s: measured.cpu_attention_gvalues_s * 25.0 / measured.cpu_matvec_gb_s,
        }
    }

    /// Device memory in bytes.
    pub fn vram_bytes(&self) -> u64 {
        (self.vram_gib * (1u64 << 30) as f64) as u64
    }
}

pub use cardinfer_core::presets::{ArchPreset, PRESETS};

/// A whole-model quantization for projections: bits per weight of the layers (the
/// scheme's mix averaged) and of the output head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantShape {
    /// Scheme name.
    pub name: &'static str,
    /// Average bits per weight over the layers.
    pub layer_bpw: f64,
    /// Bits per weight of the output head.
    pub head_bpw: f64,
}

/// Schemes from largest to smallest (bits per weight as llama.cpp's mixes average out).
pub const QUANTS: [QuantShape; 5] = [
    QuantShape { name: "Q8_0", layer_bpw: 8.5, head_bpw: 8.5 },
    QuantShape { name: "Q6_K", layer_bpw: 6.5625, head_bpw: 6.5625 },
    QuantShape { name: "Q4_K_M", layer_bpw: 4.89, head_bpw: 6.5625 },
    QuantShape { name: "Q3_K_M", layer_bpw: 3.91, head_bpw: 6.5625 },
    QuantShape { name: "Q2_K", layer_bpw: 3.35, head_bpw: 6.5625 },
];

/// Block sizes of an [`ArchPreset`] in a [`QuantShape`], for projections.
pub trait PresetBytes {
    /// Estimated device bytes of every block in `quant` (embedding, layers, head).
    fn block_bytes(&self, quant: &QuantShape) -> Vec<(BlockId, u64)>;
}

impl PresetBytes for ArchPreset {
    fn block_bytes(&self, quant: &QuantShape) -> Vec<(BlockId, u64)> {
        let spec = self.spec(4096);
        let h = self.hidden as f64;
        let layer = (layer_params(&spec) as f64 * quant.layer_bpw / 8.0) as u64;
        let embed = (self.vocab as f64 * h * quant.layer_bpw / 8.0) as u64;
        let head = (self.vocab as f64 * h * quant.head_bpw / 8.0) as u64 + 4 * self.hidden as u64;
        let mut blocks = vec![(BlockId::Embed, embed)];
        blocks.extend((0..spec.num_layers).map(|i| (BlockId::Layer(i), layer)));
        blocks.push((BlockId::Head, head));
        blocks
    }
}
