//! How to place a model: [`LoadOptions`], the typed options every entry point fills.

use crate::cpu::kernels::CpuKernels;
use crate::executor::fused::DecodePath;
use crate::executor::Mode;
use crate::{Result, StreamError};
use cardinfer_core::KvType;
use cardinfer_plan::{Budget, Profile};

/// How to place the model on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Device memory the model may use (on a CPU device: RAM for streamed blocks).
    /// A percentage needs a device that reports free memory; elsewhere it means
    /// "no limit".
    pub budget: Budget,
    /// Resident, streamed, or chosen by the budget.
    pub mode: Mode,
    /// Pool slots (default 2).
    pub slots: Option<usize>,
    /// Tokens per prefill chunk.
    pub prefill_chunk: usize,
    /// Context length to reserve the KV cache for (default: the model's, at most 4096;
    /// `Some(usize::MAX)`: the model's trained maximum). Prompts beyond it are an error, and
    /// so is a context longer than the model was trained for.
    pub context: Option<usize>,
    /// Hybrid decode: compute a share of the non-resident layers on the CPU while the
    /// link streams the rest (rates from [`LoadOptions::profile`]).
    pub hybrid: bool,
    /// Hybrid decode with exactly this many host-placed layers (at most the streamed
    /// ones) instead of the count the schedule simulation finds fastest; implies `hybrid`.
    pub host_layers: Option<usize>,
    /// With a hybrid plan whose host-layer count the planner chose (no `host_layers`):
    /// let the first decode steps measure fewer host layers and keep the fastest count,
    /// then fewer CPU threads; after that, compare the split with stream-only again as
    /// decoding goes on and use the faster (see [`StreamedModel::set_host_tuning`](crate::executor::StreamedModel::set_host_tuning)). On by
    /// default.
    pub tune_host_layers: bool,
    /// Where streamed blocks wait in host memory.
    pub host_tier: HostTier,
    /// How single tokens are decoded on the device (fused kernels by default).
    pub decode_path: DecodePath,
    /// Uploads of page-locked blocks on a copy stream of their own, into slot buffers
    /// used in place (on by default); off, they are issued on the compute stream (to
    /// compare).
    pub copy_stream: bool,
    /// Which kernels compute quantized products on the CPU. A process-wide choice: the
    /// last model loaded sets it.
    pub cpu_kernels: CpuKernels,
    /// The device's measured rates for hybrid plans (the CLI's `probe` writes them);
    /// `None`: rates fitted on an H100 machine.
    pub profile: Option<Profile>,
    /// Mixture-of-experts models whose routed experts live in host memory: keep a cache
    /// of experts in the device memory the budget leaves, and upload missing experts
    /// while the CPU computes others (on by default, CUDA); off, the CPU computes every
    /// routed expert of a decode step (llama.cpp's `--cpu-moe`, to compare).
    pub expert_cache: bool,
    /// How the KV cache stores keys and values (f16 by default, as llama.cpp; f32 keeps
    /// them as computed, at twice the memory).
    pub kv_type: KvType,
}

/// Where streamed blocks wait in host memory between their uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostTier {
    /// Page-locked when host memory can hold them (CUDA), else the disk tier; on a CPU
    /// device, read from the mapped file.
    #[default]
    Auto,
    /// Every streamed block copied once into page-locked memory (CUDA).
    Pinned,
    /// Read on demand from the file through a small ring of staging buffers.
    Disk,
    /// Read from the mapped file at each use, never page-locked (to compare).
    File,
}

impl std::str::FromStr for HostTier {
    type Err = StreamError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "pinned" => Ok(Self::Pinned),
            "disk" => Ok(Self::Disk),
            "file" => Ok(Self::File),
            _ => Err(StreamError::InvalidParameter {
                name: "host tier",
                reason: format!("`{s}`: expected auto, pinned, disk or file"),
            }),
        }
    }
}

/// Context used when none is asked for: the model's, capped like llama.cpp's default.
pub const DEFAULT_CONTEXT: usize = 4096;

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            budget: Budget::default(),
            mode: Mode::Auto,
            slots: None,
            prefill_chunk: 512,
            context: None,
            hybrid: false,
            host_layers: None,
            tune_host_layers: true,
            host_tier: HostTier::Auto,
            decode_path: DecodePath::Fused,
            copy_stream: true,
            cpu_kernels: CpuKernels::Native,
            profile: None,
            expert_cache: true,
            kv_type: KvType::default(),
        }
    }
}

impl LoadOptions {
    /// Checks every value against its domain: at least one slot, a prefill chunk of at
    /// least one token, a context of at least one token, hybrid host layers only with
    /// something to stream. Loading calls this first, before the file is opened.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, reason: &str| Err(StreamError::InvalidParameter { name, reason: reason.into() });
        if self.slots == Some(0) {
            return bad("slots", "0: a streamed block needs at least one pool slot");
        }
        if self.prefill_chunk == 0 {
            return bad("prefill chunk", "0 tokens: a chunk holds at least one token");
        }
        if self.context == Some(0) {
            return bad("context", "0 tokens: the KV cache must hold at least one position");
        }
        if self.mode == Mode::Resident && (self.hybrid || self.host_layers.is_some()) {
            return bad("mode", "resident: hybrid decode needs blocks outside the device (--mode auto or stream)");
        }
        Ok(())
    }
}

/// Builder-style setters: `LoadOptions::default().budget(b).mode(Mode::Auto).hybrid(true)`.
impl LoadOptions {
    /// Sets [`LoadOptions::budget`].
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Sets [`LoadOptions::mode`].
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`LoadOptions::slots`].
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Sets [`LoadOptions::prefill_chunk`].
    pub fn prefill_chunk(mut self, tokens: usize) -> Self {
        self.prefill_chunk = tokens;
        self
    }

    /// Sets [`LoadOptions::context`].
    pub fn context(mut self, tokens: usize) -> Self {
        self.context = Some(tokens);
        self
    }

    /// Sets [`LoadOptions::hybrid`].
    pub fn hybrid(mut self, on: bool) -> Self {
        self.hybrid = on;
        self
    }

    /// Sets [`LoadOptions::host_layers`] (and so hybrid decode).
    pub fn host_layers(mut self, layers: usize) -> Self {
        self.host_layers = Some(layers);
        self
    }

    /// Sets [`LoadOptions::tune_host_layers`].
    pub fn tune_host_layers(mut self, on: bool) -> Self {
        self.tune_host_layers = on;
        self
    }

    /// Sets [`LoadOptions::host_tier`].
    pub fn host_tier(mut self, tier: HostTier) -> Self {
        self.host_tier = tier;
        self
    }

    /// Sets [`LoadOptions::decode_path`].
    pub fn decode_path(mut self, path: DecodePath) -> Self {
        self.decode_path = path;
        self
    }

    /// Sets [`LoadOptions::copy_stream`].
    pub fn copy_stream(mut self, on: bool) -> Self {
        self.copy_stream = on;
        self
    }

    /// Sets [`LoadOptions::cpu_kernels`].
    pub fn cpu_kernels(mut self, kernels: CpuKernels) -> Self {
        self.cpu_kernels = kernels;
        self
    }

    /// Sets [`LoadOptions::profile`].
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profile = Some(profile);
        self
    }

    /// Sets [`LoadOptions::kv_type`].
    pub fn kv_type(mut self, kv_type: KvType) -> Self {
        self.kv_type = kv_type;
        self
    }

    /// Sets [`LoadOptions::expert_cache`].
    pub fn expert_cache(mut self, on: bool) -> Self {
        self.expert_cache = on;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_outside_their_domain_are_refused() {
        assert!(LoadOptions::default().validate().is_ok());
        assert_eq!(LoadOptions::default().kv_type(KvType::Q8_0).kv_type, KvType::Q8_0);
        assert!(!LoadOptions::default().expert_cache(false).expert_cache);
        for (options, name) in [
            (LoadOptions::default().slots(0), "slots"),
            (LoadOptions::default().prefill_chunk(0), "prefill chunk"),
            (LoadOptions::default().context(0), "context"),
            (LoadOptions::default().mode(Mode::Resident).hybrid(true), "mode"),
        ] {
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }
}
