//! Finding and loading a model: a local path (GGUF file or Hugging Face directory) or
//! `hf:org/repo[:file]` through hf-hub's cache.

use crate::model::block_adapter::{BlockAdapter, StreamableBlock};
use crate::text::chat_template::ChatTemplate;
use crate::executor::{
    measure_device_overheads, CheckpointReader, Mode, PinnedReader, Placement, PlanRequest, StagedReader,
    StreamedModel, Uploader,
};
use crate::model::family::Decoder;
use crate::model::kv_cache::KvCache;
use crate::model::layer_stream::LayerStream;
use crate::model::resident::{Logits, ResidentModel, TextModel};
use crate::model::names::model_layout;
use crate::text::tokenizer::Tokenizer;
use crate::{Result, StreamError};
use candle_core::Device;
use candle_core::Tensor;
use cardinfer_core::ModelSpec;
use cardinfer_plan::Budget;
use cardinfer_quant::Checkpoint;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where `scripts/fetch-model.sh` caches models: `$CARDINFER_CACHE/models`, else
/// `~/.cache/cardinfer/models`.
pub fn model_cache_dir() -> PathBuf {
    match std::env::var_os("CARDINFER_CACHE") {
        Some(dir) => PathBuf::from(dir).join("models"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cardinfer/models"),
    }
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file or a checkpoint directory on disk.
    Path(PathBuf),
    /// A Hugging Face hub repository, optionally one GGUF file in it.
    Hub {
        /// `org/repo`.
        repo: String,
        /// A file in the repository (a GGUF), or `None` for a safetensors checkpoint.
        file: Option<String>,
    },
}

impl ModelSource {
    /// Parses `hf:org/repo[:file]` or a path.
    pub fn parse(text: &str) -> Result<Self> {
        let Some(rest) = text.strip_prefix("hf:") else {
            return Ok(Self::Path(PathBuf::from(text)));
        };
        let (repo, file) = match rest.split_once(':') {
            Some((repo, file)) => (repo, Some(file.to_string())),
            None => (rest, None),
        };
        if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
            return Err(StreamError::Hub { repo: repo.to_string(), reason: "expected hf:org/repo[:file]".into() });
        }
        Ok(Self::Hub { repo: repo.to_string(), file })
    }

    /// A local path for the model, downloading into hf-hub's cache if needed.
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            Self::Path(p) => Ok(p.clone()),
            Self::Hub { repo, file } => download(repo, file.as_deref()),
        }
    }
}

fn download(repo: &str, file: Option<&str>) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let err = |reason: String| StreamError::Hub {
        repo: repo.to_string(),
        reason: format!("{reason} (is the network reachable? local paths work offline)"),
    };
    let api = ApiBuilder::from_env().with_progress(true).build().map_err(|e| err(e.to_string()))?;
    let hub = api.model(repo.to_string());
    if let Some(file) = file {
        return hub.get(file).map_err(|e| err(format!("{file}: {e}")));
    }
    let config = hub.get("config.json").map_err(|e| err(format!("config.json: {e}")))?;
    for optional in ["tokenizer.json", "tokenizer_config.json"] {
        let _ = hub.get(optional);
    }
    if hub.get("model.safetensors").is_err() {
        let index = hub
            .get("model.safetensors.index.json")
            .map_err(|e| err(format!("neither model.safetensors nor an index: {e}")))?;
        let text = std::fs::read_to_string(&index).map_err(|e| err(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let mut shards: Vec<&str> = value["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            hub.get(shard).map_err(|e| err(format!("{shard}: {e}")))?;
        }
    }
    config.parent().map(Path::to_path_buf).ok_or_else(|| err("bad cache path".into()))
}

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
    /// Context length to reserve the KV cache for (default: the model's, at most 4096).
    /// Prompts beyond it are an error.
    pub context: Option<usize>,
    /// Hybrid decode: compute a share of the non-resident layers on the CPU while the
    /// link streams the rest (rates from the device's profile, see the `probe` example).
    pub hybrid: bool,
    /// Hybrid decode with exactly this many host-placed layers (at most the streamed
    /// ones) instead of the count the schedule simulation finds fastest; implies `hybrid`.
    pub host_layers: Option<usize>,
    /// With a hybrid plan whose host-layer count the planner chose (no `host_layers`):
    /// let the first decode steps measure fewer host layers and keep the fastest count,
    /// then fewer CPU threads; after that, compare the split with stream-only again as
    /// decoding goes on and use the faster (see [`StreamedModel::set_host_tuning`]). On by
    /// default.
    pub tune_host_layers: bool,
    /// Where streamed blocks wait in host memory.
    pub host_tier: HostTier,
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
}

impl std::str::FromStr for HostTier {
    type Err = StreamError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "pinned" => Ok(Self::Pinned),
            "disk" => Ok(Self::Disk),
            _ => Err(StreamError::InvalidParameter {
                name: "host tier",
                reason: format!("`{s}`: expected auto, pinned or disk"),
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
        }
    }
}

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
}

impl Runner {
    /// Metrics of the run so far.
    pub fn metrics(&self) -> RunMetrics {
        match self {
            Self::Resident(m) => RunMetrics {
                mode: "resident",
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
                }
            }
        }
    }
}

/// Builds the block computation for a model's spec and RoPE frequency divisors.
type FamilyFactory = Box<dyn FnOnce(ModelSpec, Option<Vec<f32>>) -> Box<dyn LayerStream + Send + Sync>>;

/// The reader of the streamed blocks for `tier` (see [`HostTier`]), its name and the host
/// bytes it page-locked. `slots` (count, bytes, widest input, most rows) gives the reader
/// slot buffers for in-place use.
fn host_reader(
    ckpt: &Arc<Checkpoint>,
    spec: &ModelSpec,
    layout: &cardinfer_core::ModelLayout,
    streamed: &[cardinfer_core::BlockId],
    device: &Device,
    tier: HostTier,
    slots: Option<(usize, u64, usize, usize)>,
) -> (Arc<dyn crate::executor::BlockReader>, &'static str, u64) {
    let streamed_bytes: u64 = streamed.iter().flat_map(|b| layout.tensors(*b)).map(|t| t.len).sum();
    // Keep a quarter of the available memory for everything else.
    let ram_short = crate::device::host_memory_available().is_some_and(|free| streamed_bytes > free / 4 * 3);
    let disk = match tier {
        HostTier::Disk => true,
        HostTier::Pinned => false,
        HostTier::Auto => !device.is_cpu() && ram_short,
    };
    let uploads = || {
        let mut uploads = Uploader::new(device);
        if let Some((count, bytes, cols, rows)) = slots {
            uploads.allocate_slots(device, count, bytes, cols, rows);
        }
        uploads
    };
    let staged = || {
        let reader = StagedReader::new(ckpt.clone(), spec.clone(), layout, streamed, device, 3, uploads());
        let bytes = if device.is_cpu() { 0 } else { reader.ring_bytes() };
        (Arc::new(reader) as Arc<dyn crate::executor::BlockReader>, "disk", bytes)
    };
    if disk {
        return staged();
    }
    let pinned = match std::env::var_os("CARDINFER_NO_PIN") {
        None if !device.is_cpu() => PinnedReader::new(ckpt.clone(), spec.clone(), layout, streamed, device, uploads()),
        _ => None,
    };
    match pinned {
        Some(reader) => {
            let bytes = reader.pinned_bytes();
            (Arc::new(reader), "pinned", bytes)
        }
        // Page-locking refused (host memory short): the disk tier, on an accelerator.
        None if !device.is_cpu() && tier == HostTier::Auto => staged(),
        None => (Arc::new(CheckpointReader::new(ckpt.clone(), spec.clone())), "file", 0),
    }
}

/// A model with its tokenizer and chat template, ready to generate.
pub struct LoadedModel {
    /// The weights, resident or streamed.
    pub model: Runner,
    /// The budget in bytes the placement was made for.
    pub budget_bytes: u64,
    /// The tokenizer, if the checkpoint has one.
    pub tokenizer: Option<Tokenizer>,
    /// How conversations become prompts.
    pub chat_template: ChatTemplate,
    /// The local path the model was loaded from.
    pub path: PathBuf,
}

impl LoadedModel {
    /// Opens `path` and loads every block onto `device` (fully resident), reporting
    /// `progress(done, total)`.
    pub fn load(path: &Path, device: &Device, progress: impl FnMut(usize, usize)) -> Result<Self> {
        let options = LoadOptions {
            budget: Budget::Bytes(cardinfer_core::ByteSize(u64::MAX)),
            mode: Mode::Resident,
            context: Some(usize::MAX),
            ..Default::default()
        };
        Self::load_with(path, device, &options, progress)
    }

    /// Opens `path` and places it on `device` within `options.budget`.
    pub fn load_with(
        path: &Path,
        device: &Device,
        options: &LoadOptions,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_family(path, device, options, None, progress)
    }

    /// Like [`LoadedModel::load_with`], computing every transformer block with a block
    /// type of your own (see [`crate::model::block_adapter`]); the embedding and the head are the
    /// built-in decoder's. The model always runs through the streaming executor, which
    /// keeps blocks resident where the budget allows.
    pub fn load_with_block<B: StreamableBlock + 'static>(
        path: &Path,
        device: &Device,
        options: &LoadOptions,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let family: FamilyFactory = Box::new(|spec, rope| Box::new(BlockAdapter::<B>::new(spec, rope)));
        Self::load_family(path, device, options, Some(family), progress)
    }

    fn load_family(
        path: &Path,
        device: &Device,
        options: &LoadOptions,
        family: Option<FamilyFactory>,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        // `CARDINFER_DECODE`, read once here: a bad value is an error for every placement.
        let decode_path = crate::executor::fused::DecodePath::from_env()?;
        let ckpt = Checkpoint::open(path)?;
        let (tokenizer, template, bos, eos) = match &ckpt {
            Checkpoint::Gguf(g) => {
                let tok = Tokenizer::from_gguf(g)?;
                let template = g.metadata().get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string);
                let token_text = |key: &str| -> Option<String> {
                    let id = g.get_u64(key).ok().flatten()?;
                    tok.as_ref()?.decode(&[id as u32]).ok()
                };
                let (bos, eos) = (token_text("tokenizer.ggml.bos_token_id"), token_text("tokenizer.ggml.eos_token_id"));
                (tok, template, bos, eos)
            }
            Checkpoint::Hf(h) => {
                let tok = h.tokenizer_path().map(Tokenizer::from_file).transpose()?;
                let spec = h.spec();
                let text = |id: Option<u32>| tok.as_ref().zip(id).and_then(|(t, id)| t.decode(&[id]).ok());
                (tok.clone(), h.chat_template(), text(spec.bos_token_id), text(spec.eos_token_ids.first().copied()))
            }
        };
        let free = crate::device::device_memory(device).map(|(free, _)| free);
        let budget_bytes = match (options.budget, free) {
            (Budget::PercentOfFree(_), None) => u64::MAX,
            (budget, free) => budget
                .resolve(free)
                .map_err(|e| StreamError::InvalidParameter { name: "budget", reason: e.to_string() })?,
        };
        let mut spec = ckpt.spec()?;
        spec.context_length = match options.context {
            Some(c) => c.min(spec.context_length),
            None => spec.context_length.min(DEFAULT_CONTEXT),
        };
        let layout = model_layout(&ckpt, &spec)?;
        // On CUDA, measure what the runtime itself takes (cuBLAS, kernel modules) with a
        // tiny block of this family, and reserve it inside the budget.
        let dominant = layout
            .tensors(cardinfer_core::BlockId::Layer(0))
            .iter()
            .map(|t| t.storage)
            .max_by_key(|s| s.is_quantized());
        let overheads = match budget_bytes {
            u64::MAX => None,
            _ => measure_device_overheads(
                &spec,
                device,
                dominant.unwrap_or(cardinfer_core::StorageType::Q8_0),
                options.prefill_chunk,
            )?,
        };
        // Slot buffers used in place need the kernels' scratch (and alignment slack).
        let max_cols = spec.hidden_size.max(spec.intermediate_size).max(spec.num_heads * spec.head_dim);
        let in_place = !device.is_cpu() && crate::cuda::copy_stream::copy_stream_enabled();
        let arena_overhead = match in_place {
            true => crate::cuda::sizes::arena_overhead_bytes(options.slots.unwrap_or(2), max_cols, options.prefill_chunk),
            false => 0,
        };
        let request = PlanRequest {
            budget_bytes,
            mode: options.mode,
            slots: options.slots,
            prefill_chunk: options.prefill_chunk,
            runtime_bytes: overheads.map_or(0, |o| o.runtime_bytes) + arena_overhead,
            measured_workspace_bytes: overheads.map(|o| o.workspace_bytes),
            overlapped_copies: crate::executor::copies_overlap(device),
        };
        let mut plan = crate::executor::plan_on_device(&spec, &layout, device, &request)?;
        if options.hybrid || options.host_layers.is_some() {
            let profile = cardinfer_plan::Profile::for_device(&crate::device::device_key(device));
            plan.place_hybrid(
                &cardinfer_plan::DecodeRates::from_profile(&profile),
                options.host_layers,
                options.slots.unwrap_or(2),
                options.mode,
            );
        }
        let model = if plan.slots == 0 && options.mode != Mode::Stream && family.is_none() {
            Runner::Resident(Box::new(ResidentModel::load_spec(&ckpt, spec, device, progress)?))
        } else {
            let rope_factors = ResidentModel::rope_factors(&ckpt)?;
            let ckpt = Arc::new(ckpt);
            // Host-placed layers are also streamed by prefill chunks: page-lock them too.
            let streamed: Vec<_> = plan
                .blocks
                .iter()
                .filter(|(b, p)| {
                    *p == Placement::Streamed || (*p == Placement::Host && *b != cardinfer_core::BlockId::Embed)
                })
                .map(|(b, _)| *b)
                .collect();
            let (reader, tier, host_bytes) = host_reader(
                &ckpt,
                &spec,
                &layout,
                &streamed,
                device,
                options.host_tier,
                in_place.then_some((plan.slots, plan.slot_bytes, max_cols, plan.prefill_chunk)),
            );
            let (family, rope) = match family {
                Some(make) => (make(spec, rope_factors), None),
                None => {
                    let decoder = Decoder::new(spec, rope_factors);
                    let rope = decoder.rope().clone();
                    (Box::new(decoder) as Box<dyn crate::model::layer_stream::LayerStream + Send + Sync>, Some(rope))
                }
            };
            let mut model = StreamedModel::new(family, layout, plan, device, reader, progress)?;
            model.set_host_tier(tier, host_bytes);
            model.set_host_tuning(options.tune_host_layers && options.host_layers.is_none());
            if let Some(rope) = rope {
                model.prepare_decode_path(decode_path, &rope);
            }
            Runner::Streamed(Box::new(model))
        };
        let chat_template = ChatTemplate::select(template, tokenizer.as_ref(), bos, eos);
        Ok(Self { model, budget_bytes, tokenizer, chat_template, path: path.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(ModelSource::parse("m.gguf").unwrap(), ModelSource::Path("m.gguf".into()));
        assert_eq!(
            ModelSource::parse("hf:Qwen/Qwen3-0.6B").unwrap(),
            ModelSource::Hub { repo: "Qwen/Qwen3-0.6B".into(), file: None }
        );
        assert_eq!(
            ModelSource::parse("hf:org/repo:model-q4.gguf").unwrap(),
            ModelSource::Hub { repo: "org/repo".into(), file: Some("model-q4.gguf".into()) }
        );
        assert!(ModelSource::parse("hf:justone").is_err());
    }
}
