//! The fused decode path on CUDA: preallocated activations, the kernels of
//! `kernels/decode.cu` and Candle's MMVQ kernels launched on raw addresses, recorded into
//! one CUDA graph per KV cache and replayed for every token.
//!
//! Every address a launch uses is taken once, when the decoder is built, so nothing
//! recorded touches Candle's allocator or its event tracking. What changes between tokens
//! is read by the kernels from device memory written before each replay: the position,
//! and a table of the KV buffers' addresses (rewritten only when a new cache is used). So
//! the graph is recorded once, at the first decoded token, and replayed for all others.

use super::reference::ATTENTION_CHUNK;
use crate::cuda::copy_stream::dense_address;
use crate::cuda::slot_kernels::{self, Workspace};
use crate::model::family::Decoder;
use crate::model::kv_cache::{storage_dtype, KvCache, KvSlot};
use crate::model::layer_stream::LayerStream;
use crate::model::names::Role;
use crate::model::rope::Rope;
use crate::model::weights::{BlockWeights, Weight};
use crate::{Result, StreamError};
use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaGraph, CudaStream, DevicePtr};
use candle_core::op::BackpropOp;
use candle_core::quantized::GgmlDType;
use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};
use cardinfer_core::{KvType, ModelSpec, RopeStyle};
use std::sync::Arc;

mod buffers;
mod launches;
mod layerwise;
mod moe;

use buffers::{load_kernels, Buffers, Kernels};
use moe::{MoeDims, MoeState, RoutedLayer, Router};

/// Computes a routed layer's experts held in host memory for one token: called with the
/// layer, its normed hidden state `[1, hidden]` and router logits `[1, experts]` (both on
/// the device), it returns the experts' weighted sum `[1, hidden]` on the device.
pub type HostExperts<'a> = dyn Fn(usize, &Tensor, &Tensor) -> Result<Tensor> + 'a;

/// Threads of the attention partial kernel (it combines exactly 4 warps).
const ATTENTION_THREADS: u32 = 128;

/// A block-quantized matrix on the device.
#[derive(Debug, Clone, Copy)]
struct Matrix {
    address: u64,
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
}

/// Addresses of one layer's weights (0 where the family has no such tensor).
#[derive(Debug, Clone, Copy)]
struct LayerAddresses {
    attn_norm: u64,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    q_bias: u64,
    k_bias: u64,
    v_bias: u64,
    q_norm: u64,
    k_norm: u64,
    o: Matrix,
    ffn_norm: u64,
    /// Gemma 3's norms of the attention and MLP outputs (0 for other families).
    post_attn_norm: u64,
    post_ffn_norm: u64,
    ffn: Ffn,
}

/// A layer's MLP: dense, or routed to experts (mixture-of-experts layers).
#[derive(Debug, Clone, Copy)]
enum Ffn {
    Dense {
        gate: Matrix,
        up: Matrix,
        down: Matrix,
    },
    Routed(RoutedLayer),
    /// Routed to experts held in host memory: the device computes the router's logits,
    /// the caller the experts ([`HostExperts`]).
    HostRouted(Router),
}

/// The head's final norm weight and output matrix on the device.
#[derive(Debug, Clone, Copy)]
struct Head {
    norm: u64,
    output: Matrix,
}

/// The model's sizes as the kernels take them.
#[derive(Debug, Clone, Copy)]
struct Dims {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    vocab: usize,
    capacity: usize,
    chunks: usize,
    layers: usize,
    eps: f32,
    interleaved: bool,
    /// Norm weights stored as Gemma's `w` of `1 + w`.
    plus_one: bool,
    /// GeLU-tanh (Gemma 3) instead of SwiGLU.
    gelu: bool,
    /// The attention scores' scale.
    attention_scale: f32,
}

/// Decodes one token through a resident model with fused kernels and a CUDA graph.
pub struct FusedDecoder {
    spec: ModelSpec,
    device: CudaDevice,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    /// How the KV caches the kernels write and read are stored.
    kv_type: KvType,
    /// Whether a cache whose buffers this path cannot take was reported (once).
    unsuited_cache_reported: std::sync::atomic::AtomicBool,
    buffers: Buffers,
    workspace: Workspace,
    layers: Vec<LayerAddresses>,
    /// The output norm and matrix (resident models; `None` layer by layer, where the
    /// caller runs the head).
    head: Option<Head>,
    /// cos and sin tables of the global layers' RoPE, and of the sliding-window layers'
    /// (Gemma 3) when they have their own.
    rope: (u64, u64),
    local_rope: Option<(u64, u64)>,
    _rope_tables: Vec<Tensor>,
    /// Per layer: the sliding window (0 for full attention).
    windows: Vec<i32>,
    dims: Dims,
    use_graph: bool,
    /// Benchmarks only ([`super::DecodePath::ProductsOnly`]): launch just the quantized matrix
    /// products, so a token's time is what reading the weights costs and the difference
    /// to a full token is the overhead. The output is meaningless.
    matvec_only: bool,
    /// The routing kernels, buffers and expert tables of a mixture-of-experts model.
    moe: Option<MoeState>,
    /// Some layers' experts are in host memory ([`Ffn::HostRouted`]): tokens are launched
    /// layer by layer, without a graph, calling back for the experts.
    host_routed: bool,
    graph: Option<CudaGraph>,
    pos_host: Box<[u32; 1]>,
    /// What the device's KV table holds: keys and values addresses, layer by layer.
    kv_table_host: Vec<u64>,
    /// Layer by layer only: the last layer's MLP output still waits in `down` to be added
    /// to the residual stream `x` (the next norm kernel adds it).
    residual_pending: bool,
}

// SAFETY: the only members that are not `Send` are the CUDA graph's driver handles. The
// driver allows a graph to be launched and destroyed from any thread of the process, and
// the decoder is used by one thread at a time (the models keep it behind a `Mutex`).
unsafe impl Send for FusedDecoder {}

/// The head layouts the kernels take: head size a multiple of 64 up to 256, whole groups.
fn check_heads(spec: &ModelSpec) -> Result<()> {
    let d = spec.head_dim;
    if !d.is_multiple_of(64) || d > 256 || spec.num_kv_heads == 0 || !spec.num_heads.is_multiple_of(spec.num_kv_heads) {
        return Err(unsupported(format!(
            "head size {d} with {}/{} heads (the kernels take multiples of 64 up to 256)",
            spec.num_heads, spec.num_kv_heads
        )));
    }
    Ok(())
}

impl LayerAddresses {
    /// The addresses of layer weights `w`, each checked against the spec's shapes, and,
    /// for a routed layer, its experts' matrix addresses (gate, up, down; empty for a
    /// dense layer).
    fn of(spec: &ModelSpec, w: &BlockWeights) -> Result<(Self, Vec<u64>)> {
        let d = spec.head_dim;
        let (hidden, q_dim, kv_dim, ffn) =
            (spec.hidden_size, spec.num_heads * d, spec.num_kv_heads * d, spec.intermediate_size);
        let (ffn, experts) = match MoeDims::of(spec)? {
            Some(m) if w.has(Role::FfnRouter) && w.host_experts().is_some() => {
                (Ffn::HostRouted(moe::router(spec, w, &m)?), Vec::new())
            }
            Some(m) if w.has(Role::FfnRouter) => {
                let (routed, experts) = moe::routed_layer(spec, w, &m)?;
                (Ffn::Routed(routed), experts)
            }
            _ => {
                let dense = Ffn::Dense {
                    gate: matrix(w, Role::FfnGate, ffn, hidden)?,
                    up: matrix(w, Role::FfnUp, ffn, hidden)?,
                    down: matrix(w, Role::FfnDown, hidden, ffn)?,
                };
                (dense, Vec::new())
            }
        };
        let layer = Self {
            attn_norm: vector(w, Role::AttnNorm, hidden)?,
            q: matrix(w, Role::AttnQ, q_dim, hidden)?,
            k: matrix(w, Role::AttnK, kv_dim, hidden)?,
            v: matrix(w, Role::AttnV, kv_dim, hidden)?,
            q_bias: vector(w, Role::AttnQBias, q_dim)?,
            k_bias: vector(w, Role::AttnKBias, kv_dim)?,
            v_bias: vector(w, Role::AttnVBias, kv_dim)?,
            q_norm: if spec.qk_norm { vector(w, Role::AttnQNorm, d)? } else { 0 },
            k_norm: if spec.qk_norm { vector(w, Role::AttnKNorm, d)? } else { 0 },
            o: matrix(w, Role::AttnOutput, hidden, q_dim)?,
            ffn_norm: vector(w, Role::FfnNorm, hidden)?,
            post_attn_norm: if spec.gemma.is_some() { vector(w, Role::PostAttnNorm, hidden)? } else { 0 },
            post_ffn_norm: if spec.gemma.is_some() { vector(w, Role::PostFfnNorm, hidden)? } else { 0 },
            ffn,
        };
        Ok((layer, experts))
    }
}

fn unsupported(reason: impl Into<String>) -> StreamError {
    StreamError::InvalidParameter { name: "fused decode", reason: reason.into() }
}

fn cuda_err(e: impl std::fmt::Display) -> StreamError {
    StreamError::Device { device: "cuda".into(), reason: format!("fused decode: {e}") }
}

/// The quantized matrix of `role`, checked to be `rows × cols` (`rows` 0: any) — the
/// kernels read exactly that many bytes from its address.
fn matrix(weights: &BlockWeights, role: Role, want_rows: usize, want_cols: usize) -> Result<Matrix> {
    let (address, dtype, (rows, cols)) = match weights.get(role)? {
        Weight::Quantized(q) => (q.device_ptr()? as u64, q.dtype(), q.shape().dims2()?),
        // Streamed blocks: the matrix in its slot, laid out as Candle's MMVQ reads it.
        Weight::InSlot(t) => (t.address(), t.dtype, t.shape),
        Weight::Dense(_) => return Err(unsupported(format!("{role:?} is not block-quantized"))),
    };
    if cols != want_cols || (want_rows != 0 && rows != want_rows) {
        return Err(StreamError::ShapeMismatch {
            tensor: format!("{role:?} (fused decode path)"),
            expected: vec![want_rows, want_cols],
            found: vec![rows, cols],
        });
    }
    if !slot_kernels::supports(dtype, cols) {
        return Err(unsupported(format!("no MMVQ kernel for {role:?} ({dtype:?}, {cols} columns)")));
    }
    Ok(Matrix { address, dtype, rows, cols })
}

fn vector(weights: &BlockWeights, role: Role, len: usize) -> Result<u64> {
    if !weights.has(role) {
        return Ok(0);
    }
    let t = weights.get(role)?.dense()?;
    if t.dtype() != DType::F32 || t.elem_count() != len || !t.is_contiguous() {
        return Err(unsupported(format!("{role:?} is not {len} contiguous f32")));
    }
    dense_address(t).ok_or_else(|| unsupported(format!("{role:?} is not on the CUDA device")))
}

impl FusedDecoder {
    /// Prepares the fused path for a resident model: checks that every matrix has an MMVQ
    /// kernel and the head size suits the kernels, loads the kernels, allocates the
    /// activations. Errors say why the model cannot take this path (it then decodes
    /// through the plain one).
    pub fn new(decoder: &Decoder, layers: &[BlockWeights], head: &BlockWeights, device: &Device) -> Result<Self> {
        let spec = decoder.spec();
        let moe = MoeDims::of(spec)?;
        let mut addresses = Vec::with_capacity(layers.len());
        let mut tables = Vec::new();
        for w in layers {
            let (layer, experts) = LayerAddresses::of(spec, w)?;
            match (moe, experts.is_empty()) {
                (Some(m), true) => tables.resize(tables.len() + 3 * m.experts, 0),
                _ => tables.extend(experts),
            }
            addresses.push(layer);
        }
        let head = Head {
            norm: vector(head, Role::OutputNorm, spec.hidden_size)?,
            output: matrix(head, Role::Output, 0, spec.hidden_size)?,
        };
        let host_routed = addresses.iter().any(|l| matches!(l.ffn, Ffn::HostRouted(_)));
        let mut fused = Self::build(decoder, device, addresses, Some(head))?;
        // The host computes experts within the token: no graph can hold it.
        fused.use_graph &= !host_routed;
        fused.host_routed = host_routed;
        if let (Some(m), Device::Cuda(cuda)) = (moe, device) {
            fused.moe = Some(MoeState::new(cuda, &fused.dims, m, &tables)?);
        }
        Ok(fused)
    }

    /// The decoder without weights of its own, for models whose blocks move (streamed and
    /// hybrid): each token is run layer by layer with the weights where they are at that
    /// moment ([`FusedDecoder::layer`]); see `fused/layerwise.rs`.
    pub fn layerwise(decoder: &Decoder, device: &Device) -> Result<Self> {
        Self::build(decoder, device, Vec::new(), None)
    }

    fn build(decoder: &Decoder, device: &Device, layers: Vec<LayerAddresses>, head: Option<Head>) -> Result<Self> {
        let spec = decoder.spec();
        let Device::Cuda(cuda) = device else { return Err(unsupported("not a CUDA device")) };
        check_heads(spec)?;
        let d = spec.head_dim;
        let (hidden, q_dim, kv_dim, ffn) =
            (spec.hidden_size, spec.num_heads * d, spec.num_kv_heads * d, spec.intermediate_size);
        let capacity = spec.context_length;
        let dims = Dims {
            hidden,
            heads: spec.num_heads,
            kv_heads: spec.num_kv_heads,
            head_dim: d,
            ffn,
            // Layer by layer there are no logits: a one-element buffer stands in.
            vocab: head.map_or(1, |h| h.output.rows),
            capacity,
            chunks: capacity.div_ceil(ATTENTION_CHUNK),
            layers: spec.num_layers,
            eps: spec.rms_norm_eps as f32,
            interleaved: spec.rope_style == RopeStyle::Interleaved,
            plus_one: decoder.norm_plus_one(),
            gelu: spec.gemma.is_some(),
            attention_scale: decoder.attention_scale_f32(),
        };
        let mut rope_tables = Vec::new();
        let mut tables_of = |rope: &Rope| -> Result<(u64, u64)> {
            let (cos, sin) = rope.tables(0, capacity, device)?;
            let addresses = (
                dense_address(&cos).ok_or_else(|| unsupported("RoPE tables not on the device"))?,
                dense_address(&sin).ok_or_else(|| unsupported("RoPE tables not on the device"))?,
            );
            rope_tables.extend([cos, sin]);
            Ok(addresses)
        };
        let rope_addresses = tables_of(decoder.rope())?;
        let windows: Vec<i32> = (0..spec.num_layers).map(|l| spec.sliding_window(l).map_or(0, |w| w as i32)).collect();
        let local_layer = windows.iter().position(|&w| w > 0);
        let local_rope = local_layer.map(|l| tables_of(decoder.layer_rope(l))).transpose()?;
        let stream = cuda.cuda_stream();
        let kernels = load_kernels(cuda, decoder.kv_type())?;
        let buffers = Buffers::new(cuda, &dims, q_dim, kv_dim, spec.num_layers)?;
        // Routed layers quantize the k chosen experts' activations at once.
        let moe = MoeDims::of(spec)?;
        let (expert_ffn, rows) = moe.map_or((0, 1), |m| (m.expert_ffn, m.top_k));
        let workspace = Workspace::new(cuda, hidden.max(q_dim).max(ffn).max(expert_ffn), rows)?;
        Ok(Self {
            spec: spec.clone(),
            kv_type: decoder.kv_type(),
            unsuited_cache_reported: std::sync::atomic::AtomicBool::new(false),
            device: cuda.clone(),
            stream,
            kernels,
            buffers,
            workspace,
            layers,
            head,
            rope: rope_addresses,
            local_rope,
            _rope_tables: rope_tables,
            windows,
            dims,
            use_graph: true,
            matvec_only: false,
            graph: None,
            pos_host: Box::new([0]),
            kv_table_host: Vec::new(),
            residual_pending: false,
            moe: None,
            host_routed: false,
        })
    }

    /// The cos and sin tables layer `layer` rotates with.
    fn rope_of(&self, layer: usize) -> (u64, u64) {
        match (self.windows.get(layer), self.local_rope) {
            (Some(&w), Some(local)) if w > 0 => local,
            _ => self.rope,
        }
    }

    /// Positions the KV cache must hold ([`KvCache::with_capacity`]) for this path.
    pub fn capacity(&self) -> usize {
        self.dims.capacity
    }

    /// Applies the variant of the fused path `path` asks for: with or without the CUDA
    /// graph, or the products alone.
    pub fn configure(&mut self, path: super::DecodePath) {
        self.use_graph = path != super::DecodePath::FusedNoGraph && !self.host_routed;
        self.matvec_only = path == super::DecodePath::ProductsOnly;
    }

    /// Whether tokens are replayed from a CUDA graph ([`super::DecodePath::FusedNoGraph`]
    /// launches the kernels one by one instead).
    pub fn uses_graph(&self) -> bool {
        self.use_graph
    }

    /// Runs the token whose embedding is `x` (`[1, 1, hidden]` f32) at position
    /// `kv.len()`, appending its keys and values, and returns the logits `[1, vocab]`.
    /// `Ok(None)` when `kv` has no preallocated buffers of this path's capacity yet (the
    /// first token after a reset): the caller runs it through the plain path.
    pub fn decode(&mut self, x: &Tensor, kv: &mut KvCache) -> Result<Option<Tensor>> {
        self.decode_with(x, kv, None)
    }

    /// [`FusedDecoder::decode`] for a model whose routed experts live in host memory:
    /// `experts` computes them for each such layer.
    pub fn decode_with(
        &mut self,
        x: &Tensor,
        kv: &mut KvCache,
        experts: Option<&HostExperts<'_>>,
    ) -> Result<Option<Tensor>> {
        if kv.num_layers() != self.layers.len() {
            return Err(unsupported(format!("KV cache of {} layers for {}", kv.num_layers(), self.layers.len())));
        }
        let Some(kv_table) = self.kv_addresses(kv, &|_| true)? else { return Ok(None) };
        self.load_token(x, kv.len(), kv_table)?;
        if !self.use_graph {
            self.enqueue(experts)?;
        } else {
            if self.graph.is_none() {
                self.graph = Some(self.record()?);
            }
            if let Some(graph) = &self.graph {
                graph.launch().map_err(cuda_err)?;
            }
        }
        for i in 0..kv.num_layers() {
            kv.layer_mut(i).commit(1)?;
        }
        self.logits()
    }

    /// Copies the token's embedding `x` into the residual stream and writes its position
    /// and the KV table (when it changed) where the kernels read them.
    pub(super) fn load_token(&mut self, x: &Tensor, pos: usize, kv_table: Vec<u64>) -> Result<()> {
        let x = x.contiguous()?;
        let source = self.checked_hidden(&x)?;
        self.pos_host[0] = pos as u32;
        let stream = self.stream.cu_stream();
        // SAFETY: the device buffers hold `hidden` f32, one u32 and 2 × layers u64; the
        // host data lives in `self` and the copies are ordered before the launches below.
        unsafe {
            result::memcpy_dtod_async(self.buffers.x, source, self.dims.hidden * 4, stream).map_err(cuda_err)?;
            result::memcpy_htod_async(self.buffers.pos_address, &self.pos_host[..], stream).map_err(cuda_err)?;
            if kv_table != self.kv_table_host {
                self.kv_table_host = kv_table;
                result::memcpy_htod_async(self.buffers.kv_table_address, &self.kv_table_host[..], stream)
                    .map_err(cuda_err)?;
            }
        }
        self.residual_pending = false;
        Ok(())
    }

    /// Checks that `x` is one f32 hidden state on the device; returns its address.
    fn checked_hidden(&self, x: &Tensor) -> Result<u64> {
        if x.elem_count() != self.dims.hidden || x.dtype() != DType::F32 {
            return Err(StreamError::ShapeMismatch {
                tensor: "hidden state (fused decode path)".into(),
                expected: vec![1, 1, self.dims.hidden],
                found: x.dims().to_vec(),
            });
        }
        dense_address(x).ok_or_else(|| unsupported("hidden state not on the device"))
    }

    /// The device addresses of the keys and values of every layer `on_device` (0 for the
    /// others), or `None` when one of them has no preallocated buffers of this path's
    /// capacity on the device (then the plain path runs the token).
    pub(super) fn kv_addresses(&self, kv: &KvCache, on_device: &dyn Fn(usize) -> bool) -> Result<Option<Vec<u64>>> {
        let mut addresses = Vec::with_capacity(2 * kv.num_layers());
        for i in 0..kv.num_layers() {
            if !on_device(i) {
                addresses.extend([0, 0]);
                continue;
            }
            let Some(slot) = self.slot_addresses(kv.layer(i)) else {
                // No buffers yet is the first token's case; buffers this path cannot take
                // would silently keep every token on the plain path: say so, once.
                let reported = &self.unsuited_cache_reported;
                if kv.layer(i).buffers().is_some() && !reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        layer = i,
                        kv_type = %self.kv_type,
                        "the KV cache's buffers do not suit the fused decode kernels (storage type, shape or \
                         device): single tokens decode on the plain path"
                    );
                }
                return Ok(None);
            };
            addresses.extend(slot);
        }
        Ok(Some(addresses))
    }

    /// The device addresses of `slot`'s keys and values when they are buffers this path's
    /// kernels take: preallocated `[1, kv_heads, capacity, row]` of the cache's storage type
    /// (a row: the head's values, or for `q8_0` its blocks' bytes) on the device.
    pub(super) fn slot_addresses(&self, slot: &KvSlot) -> Option<[u64; 2]> {
        let dtype = storage_dtype(self.kv_type);
        let row = self.kv_type.row_bytes(self.dims.head_dim) as usize / dtype.size_in_bytes();
        let want = [1, self.dims.kv_heads, self.dims.capacity, row];
        let (k, v) = slot.buffers()?;
        let fits = |t: &Tensor| t.dims() == want && t.dtype() == dtype;
        if !fits(k) || !fits(v) {
            return None;
        }
        Some([dense_address(k)?, dense_address(v)?])
    }

    fn record(&self) -> Result<CudaGraph> {
        self.stream.begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED).map_err(cuda_err)?;
        let enqueued = self.enqueue(None);
        // The capture must end whatever happened, or the stream stays unusable.
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(cuda_err);
        enqueued?;
        graph?.ok_or_else(|| cuda_err("stream capture recorded nothing"))
    }

    /// Launches one token: every block, then the head. Recorded or run as is. With
    /// `matvec_only` only the quantizations and matrix products are launched.
    fn enqueue(&self, experts: Option<&HostExperts<'_>>) -> Result<()> {
        let head = self.head.ok_or_else(|| unsupported("a layer-by-layer decoder has no head to run a token"))?;
        for (i, layer) in self.layers.iter().enumerate() {
            self.enqueue_layer(i, layer, i > 0, experts)?;
        }
        self.enqueue_head(&head)
    }

    /// A copy of the logits buffer as a Candle tensor `[1, vocab]`.
    fn logits(&self) -> Result<Option<Tensor>> {
        self.copy_out(self.buffers.logits, (1, self.dims.vocab)).map(Some)
    }

    /// A new tensor of `shape` holding a copy of the f32 at device `address` (one of the
    /// decoder's buffers), ordered on the stream.
    fn copy_out(&self, address: u64, shape: impl Into<candle_core::Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        // SAFETY: every element is written by the copy below, ordered on the stream.
        let out = unsafe { self.device.alloc::<f32>(n)? };
        let (dst, guard) = out.device_ptr(&self.stream);
        // SAFETY: both hold `n` f32 on this device (the buffers are sized by `dims`).
        unsafe { result::memcpy_dtod_async(dst, address, n * 4, self.stream.cu_stream()) }.map_err(cuda_err)?;
        drop(guard);
        let storage = CudaStorage::wrap_cuda_slice(out, self.device.clone());
        Ok(Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false))
    }
}
