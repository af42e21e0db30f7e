//! A fully resident model: every block loaded once onto one device.

use crate::cuda::sizes::{kernel_workspace_bytes, slot_tensor_bytes, MAX_TENSORS_PER_SLOT, SLOT_ALIGN};
use crate::executor::expert_cache::{ExpertCache, ExpertStats};
use crate::executor::Timeline;
use crate::model::family::Decoder;
use crate::model::kv_cache::KvCache;
use crate::model::layer_stream::LayerStream;
use crate::model::names::{model_layout, role_tensor, ExpertProj, Role};
use crate::model::text_model::{check_tokens, forward_in_chunks, Logits, TextModel};
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::{DType, Device, IndexOp, Tensor};
use cardinfer_core::{BlockId, KvType, ModelLayout, ModelSpec};
use cardinfer_quant::candle::load_tensor;
use cardinfer_quant::Checkpoint;

/// A model with all its weights resident on one device.
pub struct ResidentModel {
    decoder: Decoder,
    layout: ModelLayout,
    embed: BlockWeights,
    layers: Vec<BlockWeights>,
    head: BlockWeights,
    device: Device,
    /// The fused decode path, where the model and device allow it (see [`crate::executor::fused`]).
    #[cfg(feature = "cuda")]
    fused: Option<std::sync::Mutex<crate::executor::fused::cuda::FusedDecoder>>,
    /// Which path decodes single tokens, and why when it is not the fused one.
    decode_status: String,
    /// The routed experts live in host memory and the CPU computes them.
    experts_on_host: bool,
    /// The device's cache of routed experts, when they live in host memory on CUDA.
    expert_cache: Option<std::sync::Arc<ExpertCache>>,
    /// Longest piece of a prompt computed at once (its workspace is planned for).
    prefill_chunk: usize,
}

impl std::fmt::Debug for ResidentModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResidentModel").field("spec", self.decoder.spec()).field("device", &self.device).finish()
    }
}

impl ResidentModel {
    /// Loads every block of `ckpt` onto `device`. `progress(done, total)` is called after
    /// each block.
    pub fn load(ckpt: &Checkpoint, device: &Device, progress: impl FnMut(usize, usize)) -> Result<Self> {
        Self::load_spec(ckpt, ckpt.spec()?, device, progress)
    }

    /// Like [`ResidentModel::load`] with `spec` given (e.g. a shorter context).
    pub fn load_spec(
        ckpt: &Checkpoint,
        spec: ModelSpec,
        device: &Device,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        Self::load_placed(ckpt, spec, device, None, progress)
    }

    /// A mixture-of-experts model with everything but its routed experts on `device` and
    /// the experts in host memory (llama.cpp's `--cpu-moe`): the device holds the parts
    /// every token uses, and on CUDA a cache of experts in up to `cache_bytes` of its
    /// memory (the executor's expert cache), for passes of up to `max_rows` tokens.
    /// Experts not in the cache are computed by the CPU or uploaded, whichever is cheaper.
    ///
    /// `planned_dense_bytes`: the device bytes the plan gave the dense part. The cache is
    /// made last, and what the load took beyond that (measured: the fused decoder's
    /// buffers and kernels, what the driver holds for the page-locked experts) comes out
    /// of it, so the whole stays within the plan's budget.
    pub fn load_experts_on_host(
        ckpt: &Checkpoint,
        spec: ModelSpec,
        device: &Device,
        cache_bytes: u64,
        max_rows: usize,
        planned_dense_bytes: u64,
        progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        device.synchronize()?;
        let free_before = crate::device::device_memory(device).map(|(free, _)| free);
        let mut model = Self::load_placed(ckpt, spec, device, Some(None), progress)?;
        if cache_bytes == 0 {
            return Ok(model);
        }
        device.synchronize()?;
        let taken = match (free_before, crate::device::device_memory(device)) {
            (Some(before), Some((after, _))) => before.saturating_sub(after),
            _ => 0,
        };
        let room = cache_bytes.saturating_sub(taken.saturating_sub(planned_dense_bytes));
        let cache = Self::expert_cache(ckpt, model.spec(), device, room, max_rows)?.map(std::sync::Arc::new);
        if let Some(cache) = &cache {
            for host in model.layers.iter().filter_map(|w| w.host_experts()) {
                host.attach_cache(cache.clone());
            }
        }
        model.expert_cache = cache;
        Ok(model)
    }

    /// The largest cache of whole experts that fits `cache_bytes` (slots and kernel
    /// scratch), if any fits and the device has one.
    fn expert_cache(
        ckpt: &Checkpoint,
        spec: &ModelSpec,
        device: &Device,
        cache_bytes: u64,
        max_rows: usize,
    ) -> Result<Option<ExpertCache>> {
        let Some(moe) = spec.moe.as_ref() else { return Ok(None) };
        if device.is_cpu() || cache_bytes == 0 {
            return Ok(None);
        }
        // The largest expert of any layer (a Q4_K_M file mixes Q4_K and Q6_K down projections).
        let mut expert_bytes = 0;
        for layer in (0..spec.num_layers).filter(|&i| spec.is_moe_layer(i)) {
            let mut bytes = 0;
            for proj in ExpertProj::ALL {
                let info = role_tensor(ckpt, spec, BlockId::Layer(layer), Role::Expert(proj, 0))?;
                bytes += slot_tensor_bytes(&info) + SLOT_ALIGN;
            }
            expert_bytes = expert_bytes.max(bytes);
        }
        if expert_bytes == 0 {
            return Ok(None);
        }
        let max_cols = spec.hidden_size.max(moe.expert_intermediate_size);
        let scratch = kernel_workspace_bytes(max_cols, max_rows);
        let slots = (cache_bytes.saturating_sub(scratch) / (expert_bytes + SLOT_ALIGN * MAX_TENSORS_PER_SLOT)) as usize;
        Ok(ExpertCache::new(device, slots, expert_bytes, max_cols, max_rows.max(1)))
    }

    /// How the routed experts were computed so far, when a device cache holds some.
    pub fn expert_stats(&self) -> Option<ExpertStats> {
        self.expert_cache.as_ref().map(|c| c.stats())
    }

    fn load_placed(
        ckpt: &Checkpoint,
        spec: ModelSpec,
        device: &Device,
        experts_on_host: Option<Option<std::sync::Arc<ExpertCache>>>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let layout = model_layout(ckpt, &spec)?;
        let rope_factors = Self::rope_factors(ckpt)?;
        let total = spec.num_layers + 2;
        // With the experts in host memory the plan puts the embedding there too (a lookup
        // moves a few KB per token), leaving its device bytes to the expert cache.
        let embed_device = if experts_on_host.is_some() { Device::Cpu } else { device.clone() };
        let embed = BlockWeights::load(ckpt, &spec, BlockId::Embed, &embed_device)?;
        progress(1, total);
        let mut layers = Vec::with_capacity(spec.num_layers);
        for i in 0..spec.num_layers {
            let block = BlockId::Layer(i);
            layers.push(match &experts_on_host {
                Some(cache) => BlockWeights::load_experts_on_host(ckpt, &spec, block, device, cache.clone())?,
                None => BlockWeights::load(ckpt, &spec, block, device)?,
            });
            progress(i + 2, total);
        }
        let head = BlockWeights::load(ckpt, &spec, BlockId::Head, device)?;
        progress(total, total);
        let decoder = Decoder::new(spec, rope_factors);
        let mut model = Self {
            decoder,
            layout,
            embed,
            layers,
            head,
            device: device.clone(),
            #[cfg(feature = "cuda")]
            fused: None,
            decode_status: "plain".into(),
            experts_on_host: experts_on_host.is_some(),
            expert_cache: experts_on_host.flatten(),
            prefill_chunk: usize::MAX,
        };
        model.prepare_decode_path(crate::executor::fused::DecodePath::default());
        Ok(model)
    }

    /// Chooses how single tokens are decoded: the fused path where asked for and
    /// possible, else the plain one ([`ResidentModel::decode_path`] says which and why).
    pub fn prepare_decode_path(&mut self, path: crate::executor::fused::DecodePath) {
        self.prepare_decode_path_for(path, self.decoder.kv_type())
    }

    /// [`ResidentModel::prepare_decode_path`] for KV caches stored as `kv_type` (the
    /// caches [`TextModel::new_cache`](crate::TextModel::new_cache) makes from now on).
    pub fn prepare_decode_path_for(&mut self, path: crate::executor::fused::DecodePath, kv_type: KvType) {
        self.decoder.set_kv_type(kv_type);
        #[cfg(feature = "cuda")]
        {
            self.fused = None;
        }
        self.decoder.set_fused_ops(path.is_fused());
        self.decode_status = match path {
            crate::executor::fused::DecodePath::Plain => "plain (asked for)".into(),
            fused => self.try_fused(fused),
        };
    }

    #[cfg(feature = "cuda")]
    fn try_fused(&mut self, path: crate::executor::fused::DecodePath) -> String {
        use crate::executor::fused::cuda::FusedDecoder;
        match FusedDecoder::new(&self.decoder, &self.layers, &self.head, &self.device) {
            Ok(mut fused) => {
                fused.configure(path);
                let status = if fused.uses_graph() { "fused (CUDA graph)" } else { "fused (no graph)" };
                self.fused = Some(std::sync::Mutex::new(fused));
                status.into()
            }
            Err(e) => format!("plain ({e})"),
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn try_fused(&mut self, _path: crate::executor::fused::DecodePath) -> String {
        "plain (the fused path needs the `cuda` feature)".into()
    }

    /// Computes prompts longer than `tokens` in pieces of that many (at least 1), so the
    /// activations of a long prompt stay within what a budgeted plan reserved.
    pub fn set_prefill_chunk(&mut self, tokens: usize) {
        self.prefill_chunk = tokens.max(1);
    }

    /// Whether the routed experts of this mixture-of-experts model live in host memory,
    /// computed by the CPU ([`ResidentModel::load_experts_on_host`]).
    pub fn experts_on_host(&self) -> bool {
        self.experts_on_host
    }

    /// How single tokens are decoded: `fused (CUDA graph)`, `fused (no graph)`, or
    /// `plain (<why>)`.
    pub fn decode_path(&self) -> &str {
        &self.decode_status
    }

    /// The fused path's decode of one token, when it applies to this call.
    #[cfg(feature = "cuda")]
    fn fused_decode(&self, tokens: &[u32], kv: &mut KvCache) -> Result<Option<Tensor>> {
        let Some(fused) = &self.fused else { return Ok(None) };
        if tokens.len() != 1 {
            return Ok(None);
        }
        let x = self.embed(tokens)?;
        // Experts in host memory: the host places and computes them per layer (the cache,
        // uploads and the CPU), on the hidden state and router logits the kernels leave.
        let experts = |layer: usize, h: &Tensor, logits: &Tensor| -> Result<Tensor> {
            let w = self.layers.get(layer).ok_or_else(|| crate::StreamError::Internal(format!("no layer {layer}")))?;
            self.decoder.experts_with_logits(w, h, logits.clone())
        };
        let mut fused = fused.lock().unwrap_or_else(|e| e.into_inner());
        fused.decode_with(&x, kv, self.experts_on_host.then_some(&experts as &_))
    }

    #[cfg(not(feature = "cuda"))]
    fn fused_decode(&self, _tokens: &[u32], _kv: &mut KvCache) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The embeddings of `tokens` (`[1, tokens, hidden]`) on the model's device, looked up
    /// where the table is (the device, or host memory).
    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let table_on_host = self.embed.bytes_on(&Device::Cpu) > 0 && !self.device.is_cpu();
        let at = if table_on_host { Device::Cpu } else { self.device.clone() };
        let ids = Tensor::new(tokens, &at)?.unsqueeze(0)?;
        Ok(self.decoder.embed(&self.embed, &ids)?.to_device(&self.device)?)
    }

    /// RoPE frequency divisors stored in the file (GGUF `rope_freqs.weight`, Llama 3.1).
    pub fn rope_factors(ckpt: &Checkpoint) -> Result<Option<Vec<f32>>> {
        match ckpt.tensor("rope_freqs.weight") {
            Some(info) => Ok(Some(
                load_tensor(info, ckpt.tensor_bytes(info), DType::F32, &Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )),
            None => Ok(None),
        }
    }

    /// Blocks and their tensors' byte ranges in the file.
    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> u64 {
        let on = |b: &BlockWeights| b.bytes_on(&self.device);
        on(&self.embed) + self.layers.iter().map(on).sum::<u64>() + on(&self.head)
    }
}

impl TextModel for ResidentModel {
    fn spec(&self) -> &ModelSpec {
        self.decoder.spec()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    /// Runs `tokens` at the positions following what `kv` holds, appending to `kv`.
    /// Returns f32 logits `[1, vocab]` (`Logits::Last`) or `[tokens, vocab]` (`Logits::All`).
    fn forward(&self, tokens: &[u32], kv: &mut KvCache, which: Logits) -> Result<Tensor> {
        let spec = self.spec();
        check_tokens(spec, tokens, kv.len())?;
        forward_in_chunks(tokens, self.prefill_chunk, which, |piece, need| self.forward_piece(piece, kv, need))
    }

    fn new_cache(&self) -> KvCache {
        self.new_cache_inner()
    }
}

impl ResidentModel {
    /// One weight pass over `tokens`; the head runs only when logits are asked for.
    fn forward_piece(&self, tokens: &[u32], kv: &mut KvCache, which: Option<Logits>) -> Result<Option<Tensor>> {
        if let Some(logits) = self.fused_decode(tokens, kv)? {
            return Ok(which.map(|_| logits));
        }
        let pos = kv.len();
        let mut timeline = Timeline::start(&self.device);
        let mut x = self.embed(tokens)?;
        for (i, layer) in self.layers.iter().enumerate() {
            timeline.begin();
            x = self.decoder.block(i, layer, &x, kv.layer_mut(i), pos)?;
            timeline.end(BlockId::Layer(i), None);
        }
        let x = match which {
            None => {
                timeline.print(tokens.len());
                return Ok(None);
            }
            Some(Logits::Last) => x.i((.., tokens.len() - 1..tokens.len(), ..))?,
            Some(Logits::All) => x,
        };
        timeline.begin();
        let logits = self.decoder.head(&self.head, &x)?.squeeze(0)?;
        timeline.end(BlockId::Head, None);
        timeline.print(tokens.len());
        Ok(Some(logits))
    }

    /// A cache with buffers preallocated for the whole context when the fused path is
    /// on (it writes into them in place), else one that grows.
    fn new_cache_inner(&self) -> KvCache {
        #[cfg(feature = "cuda")]
        if let Some(fused) = &self.fused {
            let capacity = fused.lock().unwrap_or_else(|e| e.into_inner()).capacity();
            return KvCache::with_capacity(self.spec().num_layers, capacity, self.decoder.kv_type());
        }
        KvCache::new(self.spec().num_layers, self.decoder.kv_type())
    }
}
