//! What a machine can do, measured: link, device and CPU rates and the per-token
//! overhead. The cost model turns a plan into predicted speed with these numbers.
//!
//! Profiles are measured by `cardinfer probe` and fitted from benchmark runs; they
//! are cached per machine and device as JSON. Without one, [`Profile::conservative`]
//! stands in.

use crate::PlanError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Measured (or assumed) rates of one host + device pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// What was measured (device name, machine), for people reading the file.
    pub device: String,
    /// Host→device copy rate from page-locked memory, GB/s.
    pub h2d_gb_s: f64,
    /// Rate at which decode kernels read resident quantized weights, GB/s.
    pub device_read_gb_s: f64,
    /// Effective prefill matmul rate for a model of width 4096, TFLOP/s (2 FLOP per
    /// weight per token).
    pub prefill_tflops_at_4096: f64,
    /// How the prefill rate scales with model width: `rate ∝ (hidden / 4096)^exponent`
    /// (small matrices keep the device less busy).
    pub prefill_width_exponent: f64,
    /// Prefill work besides the weight matmuls (attention, norms, RoPE, activations), per
    /// layer per prompt token, milliseconds.
    #[serde(default)]
    pub prefill_ms_per_layer_token: f64,
    /// Host-side cost per layer per decoded token (kernel launches, allocations,
    /// synchronizations), milliseconds.
    pub decode_overhead_ms_per_layer: f64,
    /// CPU rate computing a quantized transformer block for one token, in weight bytes
    /// read per second, GB/s (`probe` measures a Q4_K block of width 4096 at its best
    /// thread count, computed as a host layer is — with the device's bits where the
    /// fused kernels decode — and on a device with a link while copies to it stream a
    /// gigabyte from memory, as in hybrid decode: on the H100 machine host layers read
    /// 40–49 GB/s in place where the probe's block alone read 60–70).
    pub cpu_matvec_gb_s: f64,
    /// Sequential read rate of the model file from disk (page cache cold), GB/s.
    pub disk_gb_s: f64,
    /// CPU threads at which `cpu_matvec_gb_s` was reached (`None` when not probed).
    #[serde(default)]
    pub cpu_best_threads: Option<usize>,
    /// Hybrid decode: moving the hidden state to the host and back around one host-placed
    /// block (waits and copies besides the device's own work), milliseconds.
    #[serde(default = "default_host_hop_ms")]
    pub host_hop_ms: f64,
    /// Hybrid decode: what computing one block on the CPU costs besides reading its
    /// weights (norms, RoPE, attention, the thread pool's hand-offs), milliseconds; with
    /// it a block takes `cpu_block_fixed_ms + bytes / cpu_matvec_gb_s`. `probe` fits both
    /// from two block sizes. Measured on the H100 machine at ~0.3 ms: a third of a
    /// Qwen3-4B block's time, so leaving it out put too many small blocks on the CPU.
    #[serde(default)]
    pub cpu_block_fixed_ms: f64,
    /// Hybrid decode: how fast a host layer's attention reads its KV cache, in cached
    /// values (keys and values, whatever the storage type) per second, billions. The CPU
    /// widens each value to f32 and takes a dot product with it, so the rate is nearly the
    /// same for f32, f16 and q8_0 caches (measured on 2 vCPU: 1.3–1.5 G values/s for each).
    #[serde(default = "default_cpu_attention_gvalues_s")]
    pub cpu_attention_gvalues_s: f64,
}

/// [`Profile::cpu_attention_gvalues_s`] on the H100 machine's 16 vCPU: a Qwen3-4B host
/// layer (`cardinfer-dev host-layer --ways exact`, 16 threads, 2026-12-07) took 1.25 /
/// 3.5 / 8.1 ms at depth 0 / 4096 / 16384 with an f16 cache and 0.9 / 2.7 / 8.5 ms with
/// q8_0: 3.7–4.9 G values/s.
const H100_CPU_ATTENTION_GVALUES_S: f64 = 4.5;

/// [`Profile::cpu_attention_gvalues_s`] of profiles written before it was measured: the
/// 2-vCPU development machine's rate (`cardinfer-dev host-layer --depth 4096`).
fn default_cpu_attention_gvalues_s() -> f64 {
    1.4
}

/// [`Profile::host_hop_ms`] of profiles written before it was measured.
fn default_host_hop_ms() -> f64 {
    0.1
}

impl Profile {
    /// A deliberately modest machine: PCIe 3 ×16, a mid-range GPU, DDR4 dual channel.
    /// Used when no measured profile exists; real machines are usually faster.
    pub fn conservative() -> Self {
        Self {
            device: "conservative default (no profile measured)".into(),
            h2d_gb_s: 11.0,
            device_read_gb_s: 250.0,
            prefill_tflops_at_4096: 10.0,
            prefill_width_exponent: 1.2,
            prefill_ms_per_layer_token: 0.0,
            decode_overhead_ms_per_layer: 0.3,
            cpu_matvec_gb_s: 20.0,
            disk_gb_s: 1.0,
            cpu_best_threads: None,
            host_hop_ms: default_host_hop_ms(),
            cpu_block_fixed_ms: 0.0,
            cpu_attention_gvalues_s: default_cpu_attention_gvalues_s(),
        }
    }

    /// The profile fitted on the H100 machine of `BENCHMARKS.md` (2026-11-22 runs):
    /// pinned h2d from the streamed runs, decode overhead and device read rate from the
    /// resident 4B/14B decodes, prefill rate from the resident pp512 (chunk 512 and 64)
    /// runs. CPU and disk figures measured beside llama.cpp on 2026-11-22 (`BENCHMARKS.md`).
    pub fn h100_fitted() -> Self {
        Self {
            device: "NVIDIA H100 80GB HBM3, PCIe 5 x16, 16 vCPU (fitted 2026-11-23 from BENCHMARKS.md runs)".into(),
            h2d_gb_s: 50.0,
            device_read_gb_s: 2000.0,
            prefill_tflops_at_4096: 88.0,
            prefill_width_exponent: 1.2,
            prefill_ms_per_layer_token: 0.0,
            decode_overhead_ms_per_layer: 0.255,
            cpu_matvec_gb_s: 50.0,
            disk_gb_s: 2.0,
            cpu_best_threads: Some(16),
            host_hop_ms: default_host_hop_ms(),
            cpu_block_fixed_ms: 0.0,
            cpu_attention_gvalues_s: H100_CPU_ATTENTION_GVALUES_S,
        }
    }

    /// The profile `probe` cached for `device_key` (see [`Profile::cache_path`]), or the
    /// built-in H100 fit when none was measured (or the cached file is unreadable).
    pub fn for_device(cache_dir: &Path, device_key: &str) -> Self {
        Self::load(&Self::cache_path(cache_dir, device_key)).unwrap_or_else(|_| Self::h100_fitted())
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Self, PlanError> {
        let err = |reason: String| PlanError::Profile { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let profile: Self = serde_json::from_str(&text).map_err(|e| err(format!("invalid profile: {e}")))?;
        profile.validate().map_err(err)?;
        Ok(profile)
    }

    /// Writes the profile (to a temporary name, renamed when complete).
    pub fn save(&self, path: &Path) -> Result<(), PlanError> {
        let err = |reason: String| PlanError::Profile { path: path.to_path_buf(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    /// Where the profile of `device_key` (e.g. `cuda0-NVIDIA_H100`) is cached under
    /// `cache_dir` (the CLI's is `$CARDINFER_CACHE`, else `~/.cache/cardinfer`):
    /// `cache_dir/profiles/<key>.json`.
    pub fn cache_path(cache_dir: &Path, device_key: &str) -> PathBuf {
        let base = cache_dir;
        let safe: String =
            device_key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        base.join("profiles").join(format!("{safe}.json"))
    }

    /// Every rate must be positive and finite.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("h2d_gb_s", self.h2d_gb_s),
            ("device_read_gb_s", self.device_read_gb_s),
            ("prefill_tflops_at_4096", self.prefill_tflops_at_4096),
            ("cpu_matvec_gb_s", self.cpu_matvec_gb_s),
            ("disk_gb_s", self.disk_gb_s),
            ("cpu_attention_gvalues_s", self.cpu_attention_gvalues_s),
        ];
        for (name, v) in rates {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number, found {v}"));
            }
        }
        if !(self.prefill_ms_per_layer_token.is_finite() && self.prefill_ms_per_layer_token >= 0.0) {
            return Err(format!("prefill_ms_per_layer_token must be ≥ 0, found {}", self.prefill_ms_per_layer_token));
        }
        if !(self.decode_overhead_ms_per_layer.is_finite() && self.decode_overhead_ms_per_layer >= 0.0) {
            return Err(format!(
                "decode_overhead_ms_per_layer must be ≥ 0, found {}",
                self.decode_overhead_ms_per_layer
            ));
        }
        Ok(())
    }

    /// Effective prefill rate (FLOP/s) for a model of width `hidden`.
    pub fn prefill_flops(&self, hidden: usize) -> f64 {
        self.prefill_tflops_at_4096 * 1e12 * (hidden as f64 / 4096.0).powf(self.prefill_width_exponent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_round_trip_through_their_file() {
        // `save` makes the folder it writes into.
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("profiles").join("p.json");
        let p = Profile::h100_fitted();
        p.save(&path).unwrap();
        assert_eq!(Profile::load(&path).unwrap(), p);
        std::fs::write(&path, r#"{"device": "x"}"#).unwrap();
        let err = Profile::load(&path).unwrap_err().to_string();
        assert!(err.contains("p.json") && err.contains("invalid profile"), "{err}");
        let mut bad = Profile::conservative();
        bad.h2d_gb_s = 0.0;
        bad.save(&path).unwrap();
        assert!(Profile::load(&path).unwrap_err().to_string().contains("h2d_gb_s"));
    }

    #[test]
    fn cache_paths_are_file_name_safe() {
        let p = Profile::cache_path(Path::new("/cache"), "cuda:0 NVIDIA H100/80GB");
        assert_eq!(p, Path::new("/cache/profiles/cuda_0_NVIDIA_H100_80GB.json"));
    }
}
