//! Loading a model: open the checkpoint, read its tokenizer and chat template, plan its
//! placement within the budget, and build the resident or streamed runner.

mod draft;
mod options;
mod runner;
mod source;

pub use options::{HostTier, LoadOptions, DEFAULT_CONTEXT};
pub use runner::{RunMetrics, Runner};
pub use source::ModelSource;

use crate::executor::ResidentModel;
use crate::executor::{
    measure_device_overheads, CheckpointReader, Mode, PinnedReader, Placement, PlanRequest, StagedReader, StreamPlan,
    StreamedModel, Uploader,
};
use crate::model::block_adapter::{BlockAdapter, StreamableBlock};
use crate::model::family::Decoder;
use crate::model::layer_stream::LayerStream;
use crate::model::names::model_layout;
use crate::text::chat_template::ChatTemplate;
use crate::text::tokenizer::Tokenizer;
use crate::{Result, StreamError};
use candle_core::Device;
use cardinfer_core::ModelSpec;
use cardinfer_plan::Budget;
use cardinfer_quant::Checkpoint;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Builds the block computation for a model's spec and RoPE frequency divisors.
type FamilyFactory = Box<dyn FnOnce(ModelSpec, Option<Vec<f32>>) -> Box<dyn LayerStream + Send + Sync>>;

/// The reader of the streamed blocks for `options.host_tier` (see [`HostTier`]; uploads
/// on a copy stream with `options.copy_stream`), its name and the host bytes it
/// page-locked. `slots` (count, bytes, widest input, most rows) gives the reader
/// slot buffers for in-place use.
fn host_reader(
    ckpt: &Arc<Checkpoint>,
    spec: &ModelSpec,
    layout: &cardinfer_core::ModelLayout,
    streamed: &[cardinfer_core::BlockId],
    device: &Device,
    options: &LoadOptions,
    slots: Option<(usize, u64, usize, usize)>,
) -> (Arc<dyn crate::executor::BlockReader>, &'static str, u64) {
    let (tier, copy_stream) = (options.host_tier, options.copy_stream);
    let streamed_bytes: u64 = streamed.iter().flat_map(|b| layout.tensors(*b)).map(|t| t.len).sum();
    // Keep a quarter of the available memory for everything else.
    let ram_short = crate::device::host_memory_available().is_some_and(|free| streamed_bytes > free / 4 * 3);
    let disk = match tier {
        HostTier::Disk => true,
        HostTier::Pinned | HostTier::File => false,
        HostTier::Auto => !device.is_cpu() && ram_short,
    };
    let uploads = || {
        let mut uploads = Uploader::new(device, copy_stream);
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
    let pinned = match tier {
        HostTier::File => None,
        _ if !device.is_cpu() => PinnedReader::new(ckpt.clone(), spec.clone(), layout, streamed, device, uploads()),
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
    /// Why the model's own chat template is not the one in use, when it is not.
    pub chat_template_note: Option<String>,
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
        options.validate()?;
        crate::cpu::kernels::select(options.cpu_kernels);
        let ckpt = Checkpoint::open(path)?;
        let text = TextParts::read(&ckpt)?;
        let budget_bytes = resolve_budget(options.budget, device)?;
        let mut spec = ckpt.spec()?;
        spec.context_length = match options.context {
            Some(usize::MAX) => spec.context_length,
            Some(c) if c > spec.context_length => {
                return Err(StreamError::InvalidParameter {
                    name: "context",
                    reason: format!(
                        "{c} tokens asked, but {} was trained for at most {} (positions past it are untrained)",
                        path.display(),
                        spec.context_length
                    ),
                });
            }
            Some(c) => c,
            None => spec.context_length.min(DEFAULT_CONTEXT),
        };
        if !options.kv_type.supports(spec.head_dim) {
            return Err(StreamError::InvalidParameter {
                name: "kv-type",
                reason: format!(
                    "{} stores heads of a multiple of 32 values; {} has heads of {}: use f16",
                    options.kv_type,
                    path.display(),
                    spec.head_dim
                ),
            });
        }
        let layout = model_layout(&ckpt, &spec)?;
        let placement = Placed::plan(&spec, &layout, device, options, budget_bytes, false);
        let resident = matches!(&placement, Ok(p) if p.plan.slots == 0);
        let model = if resident && options.mode != Mode::Stream && family.is_none() {
            let mut model = ResidentModel::load_spec(&ckpt, spec, device, progress)?;
            model.prepare_decode_path_for(options.decode_path, options.kv_type);
            Runner::Resident(Box::new(model))
        } else if let Some(plan) =
            Self::experts_fit_on_host(&ckpt, &spec, device, options, budget_bytes, family.is_some())?
        {
            let cache_bytes = match options.expert_cache {
                true => plan.expert_cache_bytes(),
                false => 0,
            };
            let chunk = plan.prefill_chunk;
            let dense = plan.resident_bytes;
            let mut model =
                ResidentModel::load_experts_on_host(&ckpt, spec, device, cache_bytes, chunk, dense, progress)?;
            model.prepare_decode_path_for(options.decode_path, options.kv_type);
            model.set_prefill_chunk(chunk);
            Runner::Resident(Box::new(model))
        } else {
            Runner::Streamed(Box::new(placement?.stream(ckpt, spec, layout, device, options, family, progress)?))
        };
        let (chat_template, chat_template_note) =
            ChatTemplate::select_explained(text.template, text.tokenizer.as_ref(), text.bos, text.eos);
        let tokenizer = text.tokenizer;
        Ok(Self { model, budget_bytes, tokenizer, chat_template, chat_template_note, path: path.to_path_buf() })
    }
}

impl LoadedModel {
    /// Whether a mixture-of-experts model that does not fit whole should run with its
    /// routed experts in host memory and everything else resident — when the budget holds
    /// the rest resident (in the `auto` mode, with the built-in blocks) — and then the
    /// plan of that rest (its prefill chunk is the one whose workspace fits beside it; what
    /// it leaves of the budget holds the device's expert cache).
    fn experts_fit_on_host(
        ckpt: &Checkpoint,
        spec: &ModelSpec,
        device: &Device,
        options: &LoadOptions,
        budget_bytes: u64,
        custom_blocks: bool,
    ) -> Result<Option<StreamPlan>> {
        if spec.moe.is_none() || custom_blocks || options.mode != Mode::Auto {
            return Ok(None);
        }
        let dense = crate::model::names::layout_without_experts(ckpt, spec)?;
        let options = LoadOptions { hybrid: false, host_layers: None, ..options.clone() };
        Ok(Placed::plan(spec, &dense, device, &options, budget_bytes, true).ok().map(|p| p.plan))
    }
}

/// What a checkpoint says about text: its tokenizer, its chat template, and the text of
/// its beginning- and end-of-sequence tokens.
struct TextParts {
    tokenizer: Option<Tokenizer>,
    template: Option<String>,
    bos: Option<String>,
    eos: Option<String>,
}

impl TextParts {
    fn read(ckpt: &Checkpoint) -> Result<Self> {
        Ok(match ckpt {
            Checkpoint::Gguf(g) => {
                let tokenizer = Tokenizer::from_gguf(g)?;
                let template = g.metadata().get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string);
                let token_text = |key: &str| -> Option<String> {
                    let id = g.get_u64(key).ok().flatten()?;
                    tokenizer.as_ref()?.decode(&[id as u32]).ok()
                };
                let (bos, eos) = (token_text("tokenizer.ggml.bos_token_id"), token_text("tokenizer.ggml.eos_token_id"));
                Self { tokenizer, template, bos, eos }
            }
            Checkpoint::Hf(h) => {
                let tokenizer = h.tokenizer_path().map(Tokenizer::from_file).transpose()?;
                let spec = h.spec();
                let text = |id: Option<u32>| tokenizer.as_ref().zip(id).and_then(|(t, id)| t.decode(&[id]).ok());
                let (bos, eos) = (text(spec.bos_token_id), text(spec.eos_token_ids.first().copied()));
                Self { template: h.chat_template(), tokenizer, bos, eos }
            }
        })
    }
}

/// The budget in bytes: a percentage of free memory needs a device that reports it
/// (elsewhere it means no limit).
fn resolve_budget(budget: Budget, device: &Device) -> Result<u64> {
    let free = crate::device::device_memory(device).map(|(free, _)| free);
    match (budget, free) {
        (Budget::PercentOfFree(_), None) => Ok(u64::MAX),
        (budget, free) => {
            budget.resolve(free).map_err(|e| StreamError::InvalidParameter { name: "budget", reason: e.to_string() })
        }
    }
}

/// A plan for the device, with what building the streamed model needs besides.
struct Placed {
    plan: StreamPlan,
    /// Slot buffers used in place (CUDA with a copy stream).
    in_place: bool,
    /// The widest matrix input, for the kernels' scratch.
    max_cols: usize,
}

impl Placed {
    /// Plans `spec` on `device` within `budget_bytes` (`all_resident`: every block of
    /// `layout` resident, the prefill chunk lowered until its workspace fits), with the runtime's own device
    /// bytes (cuBLAS, kernel modules, measured with a tiny block of this family) and the
    /// slot buffers' scratch reserved inside the budget; hybrid plans place host layers
    /// at the rates of `options.profile`.
    fn plan(
        spec: &ModelSpec,
        layout: &cardinfer_core::ModelLayout,
        device: &Device,
        options: &LoadOptions,
        budget_bytes: u64,
        all_resident: bool,
    ) -> Result<Self> {
        let dominant = layout
            .tensors(cardinfer_core::BlockId::Layer(0))
            .iter()
            .map(|t| t.storage)
            .max_by_key(|s| s.is_quantized());
        let overheads = match budget_bytes {
            u64::MAX => None,
            _ => measure_device_overheads(
                spec,
                device,
                dominant.unwrap_or(cardinfer_core::StorageType::Q8_0),
                options.prefill_chunk,
                options.kv_type,
            )?,
        };
        let max_cols = spec.hidden_size.max(spec.intermediate_size).max(spec.num_heads * spec.head_dim);
        let in_place = !device.is_cpu() && options.copy_stream;
        let arena_overhead = match in_place {
            true => {
                crate::cuda::sizes::arena_overhead_bytes(options.slots.unwrap_or(2), max_cols, options.prefill_chunk)
            }
            false => 0,
        };
        let request = PlanRequest {
            budget_bytes,
            mode: options.mode,
            slots: options.slots,
            prefill_chunk: options.prefill_chunk,
            runtime_bytes: overheads.map_or(0, |o| o.runtime_bytes) + arena_overhead,
            measured_workspace_bytes: overheads.map(|o| o.workspace_bytes),
            overlapped_copies: crate::executor::copies_overlap(device, options.copy_stream),
            kv_type: options.kv_type,
        };
        let mut plan = match all_resident {
            true => StreamPlan::place_resident(spec, &crate::executor::device_block_bytes(layout, device), &request)?,
            false => crate::executor::plan_on_device(spec, layout, device, &request)?,
        };
        if options.hybrid || options.host_layers.is_some() {
            let profile = options.profile.clone().unwrap_or_else(cardinfer_plan::Profile::h100_fitted);
            plan.place_hybrid(
                &cardinfer_plan::DecodeRates::from_profile(&profile),
                options.host_layers,
                options.slots.unwrap_or(2),
                options.mode,
            );
        }
        Ok(Self { plan, in_place, max_cols })
    }

    /// The streaming executor over this plan: streamed (and host-placed) blocks in the
    /// host tier, the family's blocks (or `family`'s), the host-split search and the
    /// decode path.
    #[allow(clippy::too_many_arguments)]
    fn stream(
        self,
        ckpt: Checkpoint,
        spec: ModelSpec,
        layout: cardinfer_core::ModelLayout,
        device: &Device,
        options: &LoadOptions,
        family: Option<FamilyFactory>,
        progress: impl FnMut(usize, usize),
    ) -> Result<StreamedModel> {
        let Self { plan, in_place, max_cols } = self;
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
            options,
            in_place.then_some((plan.slots, plan.slot_bytes, max_cols, plan.prefill_chunk)),
        );
        let (family, decoder) = match family {
            Some(make) => (make(spec, rope_factors), None),
            None => {
                let mut decoder = Decoder::new(spec, rope_factors);
                decoder.set_fused_ops(options.decode_path.is_fused());
                decoder.set_kv_type(options.kv_type);
                (Box::new(decoder.clone()) as Box<dyn LayerStream + Send + Sync>, Some(decoder))
            }
        };
        let mut model = StreamedModel::new(family, layout, plan, device, reader, progress)?;
        model.set_host_tier(tier, host_bytes);
        model.set_host_tuning(options.tune_host_layers && options.host_layers.is_none());
        if let Some(decoder) = decoder {
            model.prepare_decode_path(options.decode_path, &decoder);
        }
        Ok(model)
    }
}
