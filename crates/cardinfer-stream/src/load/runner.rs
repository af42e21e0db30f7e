//! The loaded model, resident or streamed, and what a run cost.

use crate::executor::expert_cache::ExpertStats;
use crate::executor::ResidentModel;
use crate::executor::StreamedModel;
use crate::model::kv_cache::KvCache;
use crate::model::text_model::{Logits, TextModel};
use crate::Result;
use candle_core::{Device, Tensor};
use cardinfer_core::ModelSpec;

/// The model, resident or streamed.
pub enum Runner {
    /// Every block loaded once on the device.
    Resident(Box<ResidentModel>),
    /// Blocks placed by a plan, some streamed through the pool.
    Streamed(Box<StreamedModel>),
}

impl Runner {
    /// How single tokens are decoded on the device: `fused (CUDA graph)`, `fused (no
    /// graph)`, `fused (layer by layer)` for streamed and hybrid models, or `plain (why)`.
    pub fn decode_path(&self) -> &str {
        match self {
            Self::Resident(m) => m.decode_path(),
            Self::Streamed(m) => m.decode_path(),
        }
    }
}

impl TextModel for Runner {
    fn spec(&self) -> &ModelSpec {
        match self {
            Self::Resident(m) => m.spec(),
            Self::Streamed(m) => m.spec(),
        }
    }

    fn device(&self) -> &Device {
        match self {
            Self::Resident(m) => m.device(),
            Self::Streamed(m) => m.device(),
        }
    }

    fn forward(&self, tokens: &[u32], kv: &mut KvCache, which: Logits) -> Result<Tensor> {
        match self {
            Self::Resident(m) => m.forward(tokens, kv, which),
            Self::Streamed(m) => m.forward(tokens, kv, which),
        }
    }

    fn new_cache(&self) -> KvCache {
        match self {
            Self::Resident(m) => m.new_cache(),
            Self::Streamed(m) => m.new_cache(),
        }
    }
}

/// What a run cost, for reports (`generate --json`, `bench`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunMetrics {
    /// `resident` or `stream`.
    pub mode: &'static str,
    /// Bytes of weights on the device (resident blocks; the pool's slots).
    pub weight_bytes: u64,
    /// Device bytes by the executor's own accounting (resident + pool peak + KV + workspace).
    pub accounted_peak_bytes: u64,
    /// Bytes copied into the pool per weight pass (per decoded token).
    pub bytes_streamed_per_token: u64,
    /// Pool slots.
    pub slots: usize,
    /// Seconds spent reading blocks into slots (prefetch thread).
    pub copy_secs: f64,
    /// Seconds spent computing streamed passes.
    pub compute_secs: f64,
    /// Seconds compute waited for a slot.
    pub stall_secs: f64,
    /// Seconds the CPU computed host-placed layers (hybrid decode).
    pub host_secs: f64,
    /// Seconds the host waited for the device's queued work before host-placed layers.
    pub hop_wait_secs: f64,
    /// Bytes of layers computed on the host per decoded token (hybrid), with the count
    /// in use.
    pub host_bytes_per_token: u64,
    /// The host-layer search of a hybrid plan: counts tried, their milliseconds per
    /// token, the count in use, then the CPU thread counts tried and the one in use, and
    /// the settled split's rechecks against stream-only (see
    /// [`cardinfer_plan::TuningReport`]).
    pub host_tuning: Option<String>,
    /// Achieved streaming rate: bytes streamed ÷ copy time, GB/s.
    pub h2d_gb_s: Option<f64>,
    /// Host bytes page-locked for copies (0 on the CPU).
    pub pinned_bytes: u64,
    /// Where streamed blocks wait in host memory: `pinned` (all page-locked), `disk` (read
    /// on demand through a staging ring), `file` (the mapped file), or `-` (resident).
    pub host_tier: &'static str,
    /// A mixture-of-experts model with experts in host memory and a device cache of them:
    /// how its routed experts were computed (hit rate, uploads, CPU share, rates).
    pub experts: Option<ExpertStats>,
}

impl Runner {
    /// Metrics of the run so far.
    pub fn metrics(&self) -> RunMetrics {
        match self {
            Self::Resident(m) => RunMetrics {
                mode: match (m.experts_on_host(), m.expert_stats().is_some()) {
                    (true, true) => "resident, experts on host + device cache",
                    (true, false) => "resident, experts on cpu",
                    _ => "resident",
                },
                weight_bytes: m.weight_bytes(),
                accounted_peak_bytes: m.weight_bytes(),
                bytes_streamed_per_token: 0,
                slots: 0,
                copy_secs: 0.0,
                compute_secs: 0.0,
                stall_secs: 0.0,
                host_secs: 0.0,
                hop_wait_secs: 0.0,
                host_bytes_per_token: 0,
                host_tuning: None,
                h2d_gb_s: None,
                pinned_bytes: 0,
                host_tier: "-",
                experts: m.expert_stats(),
            },
            Self::Streamed(m) => {
                let t = m.timings();
                let stats = m.pool_stats();
                RunMetrics {
                    mode: "stream",
                    weight_bytes: m.plan().resident_bytes + m.plan().slots as u64 * m.plan().slot_bytes,
                    accounted_peak_bytes: m.accounted_peak_bytes(),
                    bytes_streamed_per_token: m.bytes_streamed_per_pass(),
                    slots: m.plan().slots,
                    copy_secs: t.copy_secs,
                    compute_secs: t.compute_secs,
                    stall_secs: t.stall_secs,
                    host_secs: t.host_secs,
                    hop_wait_secs: t.hop_wait_secs,
                    host_bytes_per_token: m.host_bytes_per_pass(),
                    host_tuning: m.host_tuning().map(|r| r.to_string()),
                    h2d_gb_s: (t.copy_secs > 0.0).then(|| stats.bytes_streamed as f64 / t.copy_secs / 1e9),
                    pinned_bytes: m.pinned_bytes(),
                    host_tier: m.host_tier(),
                    experts: None,
                }
            }
        }
    }
}
