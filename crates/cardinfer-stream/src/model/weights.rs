//! A block's weights, loaded onto a device, looked up by role.

use crate::cuda::copy_stream::{alloc_destination, CopyJob, CopyStream, Destination, UploadEvents};
use crate::cuda::sizes::float_dtype;
pub use crate::cuda::sizes::{device_bytes_for, device_bytes_of};
use crate::cuda::slots::{Placed, SlotCursor, SlotTensor};
use crate::device::DeviceMarker;
use crate::executor::expert_cache::ExpertCache;
use crate::model::host_experts::HostExperts;
use crate::model::names::{resolve_name, role_tensor, ExpertProj, Role};
use crate::{Result, StreamError};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use cardinfer_core::{BlockId, ModelSpec, StorageType};
use cardinfer_quant::candle::{load_qtensor, load_tensor};
use cardinfer_quant::Checkpoint;
use std::collections::HashMap;
use std::sync::Arc;

/// One weight tensor on a device.
#[derive(Debug, Clone)]
pub enum Weight {
    /// Block-quantized, used in place by Candle's quantized kernels.
    Quantized(Arc<QTensor>),
    /// Plain floats (norms and biases always; matrices of F32/F16/BF16 checkpoints).
    Dense(Tensor),
    /// Block-quantized, in a slot buffer of the pool, used in place (CUDA).
    InSlot(SlotTensor),
}

impl Weight {
    /// `x @ Wᵀ` for a weight stored `[out, in]`; `x` is f32, the result is f32.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        let y = match self {
            Weight::Quantized(q) => match crate::cpu::matvec::try_matvec(q, x)? {
                Some(y) => y,
                None => QMatMul::QTensor(q.clone()).forward(x)?,
            },
            Weight::InSlot(t) => t.matmul_t(x)?,
            Weight::Dense(w) => {
                let xs = x.to_dtype(w.dtype())?;
                xs.broadcast_matmul(&w.t()?)?.to_dtype(DType::F32)?
            }
        };
        Ok(y)
    }

    /// `x @ Wᵢᵀ` for several weights that share the input `x`: one parallel job on the CPU
    /// when all are block-quantized in host memory (`cpu/matvec.rs`),
    /// else each on its own.
    pub fn matmul_t_many(weights: &[&Weight], x: &Tensor) -> Result<Vec<Tensor>> {
        let quantized: Option<Vec<&QTensor>> =
            weights.iter().map(|w| if let Weight::Quantized(q) = w { Some(q.as_ref()) } else { None }).collect();
        if let Some(qs) = quantized {
            if let Some(ys) = crate::cpu::matvec::try_matvec_many(&qs, x)? {
                return Ok(ys);
            }
        }
        weights.iter().map(|w| w.matmul_t(x)).collect()
    }

    /// Rows of an embedding table for `ids`, as f32.
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        let rows = match self {
            Weight::Quantized(q) => q.embedding(ids)?,
            Weight::InSlot(t) => {
                return Err(StreamError::InvalidParameter {
                    name: "weight",
                    reason: format!("an embedding table cannot be streamed through a slot ({t:?})"),
                })
            }
            Weight::Dense(w) => {
                let hidden = w.dim(1)?;
                let flat = ids.flatten_all()?;
                let mut shape = ids.dims().to_vec();
                shape.push(hidden);
                w.index_select(&flat, 0)?.reshape(shape)?
            }
        };
        Ok(rows.to_dtype(DType::F32)?)
    }

    /// The dense tensor (norms, biases); an error for quantized storage.
    pub fn dense(&self) -> Result<&Tensor> {
        match self {
            Weight::Dense(t) => Ok(t),
            Weight::Quantized(q) => Err(StreamError::InvalidParameter {
                name: "weight",
                reason: format!("expected a float tensor, found {:?}", q.dtype()),
            }),
            Weight::InSlot(t) => Err(StreamError::InvalidParameter {
                name: "weight",
                reason: format!("expected a float tensor, found {:?}", t.dtype),
            }),
        }
    }

    /// Whether this weight is in host memory (on the CPU device).
    pub fn is_on_host(&self) -> bool {
        match self {
            Weight::Quantized(q) => q.device().is_cpu(),
            Weight::InSlot(_) => false,
            Weight::Dense(t) => t.device().is_cpu(),
        }
    }

    /// Bytes this weight occupies on its device.
    pub fn device_bytes(&self) -> u64 {
        match self {
            Weight::Quantized(q) => q.storage_size_in_bytes() as u64,
            Weight::InSlot(t) => t.device_bytes(),
            Weight::Dense(t) => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
        }
    }
}

impl From<Placed> for Weight {
    fn from(placed: Placed) -> Self {
        match placed {
            Placed::Dense(t) => Weight::Dense(t),
            Placed::InSlot(t) => Weight::InSlot(t),
        }
    }
}

impl From<Destination> for Weight {
    fn from(destination: Destination) -> Self {
        match destination {
            Destination::Quantized(q) => Weight::Quantized(q),
            Destination::Dense(t) => Weight::Dense(t),
        }
    }
}

/// The weights of one block (embedding, a layer, or the head), by role.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// Which block these are.
    pub block: BlockId,
    weights: HashMap<Role, Weight>,
    /// The copy-stream upload still filling these weights, if any ("slot ready").
    upload: Option<Arc<UploadEvents>>,
    /// The routed experts, when they are held as one buffer in host memory (then the
    /// map has no `Role::Expert` weights).
    host_experts: Option<Arc<HostExperts>>,
}

impl BlockWeights {
    /// Loads block `block` of `ckpt` onto `device`, checking every shape against `spec`.
    pub fn load(ckpt: &Checkpoint, spec: &ModelSpec, block: BlockId, device: &Device) -> Result<Self> {
        Self::load_with(ckpt, spec, block, device, &|info| ckpt.tensor_bytes(info), None)
    }

    /// Like [`BlockWeights::load`], taking each tensor's bytes from `bytes_of` (a copy
    /// of the file's bytes elsewhere, such as page-locked host memory). With an `upload`
    /// the matrices are copied on its copy stream, overlapping the compute stream's work,
    /// into its slot where they fit; call [`BlockWeights::wait_ready`] before computing
    /// with them.
    pub fn load_with<'a>(
        ckpt: &Checkpoint,
        spec: &ModelSpec,
        block: BlockId,
        device: &Device,
        bytes_of: &dyn Fn(&cardinfer_core::TensorInfo) -> &'a [u8],
        mut upload: Option<&mut Upload<'_>>,
    ) -> Result<Self> {
        let mut weights = HashMap::new();
        let mut jobs = Vec::new();
        for role in Role::block_roles(spec, block) {
            let info = checked_role_tensor(ckpt, spec, block, role)?;
            let weight = load_or_queue(&info, bytes_of(&info), device, upload.as_deref_mut(), &mut jobs)?;
            weights.insert(role, weight);
        }
        let upload = queue_upload(upload.as_deref(), &jobs)?;
        Ok(Self { block, weights, upload, host_experts: None })
    }

    /// Loads block `block` like [`BlockWeights::load`], with the matrices of its routed
    /// experts in host memory and everything else on `device` (llama.cpp's `--cpu-moe`).
    /// Block-quantized experts are copied into one buffer (page-locked for `device` where
    /// it can be; [`HostExperts`]) from which the CPU computes them and `cache`, if given,
    /// uploads them; float experts become host tensors.
    pub(crate) fn load_experts_on_host(
        ckpt: &Checkpoint,
        spec: &ModelSpec,
        block: BlockId,
        device: &Device,
        cache: Option<Arc<ExpertCache>>,
    ) -> Result<Self> {
        let mut weights = HashMap::new();
        let mut expert_tensors = Vec::new();
        for role in Role::block_roles(spec, block) {
            let info = checked_role_tensor(ckpt, spec, block, role)?;
            match role {
                Role::Expert(..) => expert_tensors.push((role, info)),
                _ => {
                    weights.insert(role, load_weight(&info, ckpt.tensor_bytes(&info), device)?);
                }
            }
        }
        // Per expert, gate, up and down (roles come expert by expert in that order).
        let mut by_expert: Vec<[Option<cardinfer_core::TensorInfo>; 3]> = Vec::new();
        for (role, info) in &expert_tensors {
            if let Role::Expert(proj, expert) = *role {
                let expert = expert as usize;
                if by_expert.len() <= expert {
                    by_expert.resize_with(expert + 1, Default::default);
                }
                let index = ExpertProj::ALL.iter().position(|p| *p == proj).unwrap_or(0);
                by_expert[expert][index] = Some(info.clone());
            }
        }
        let complete: Option<Vec<[cardinfer_core::TensorInfo; 3]>> =
            by_expert.into_iter().map(|[g, u, d]| Some([g?, u?, d?])).collect();
        let host = match complete {
            Some(infos) => HostExperts::load(block, infos, &|info| ckpt.tensor_bytes(info), device, cache)?,
            None => None,
        };
        if host.is_none() {
            for (role, info) in expert_tensors {
                weights.insert(role, load_weight(&info, ckpt.tensor_bytes(&info), &Device::Cpu)?);
            }
        }
        Ok(Self { block, weights, upload: None, host_experts: host.map(Arc::new) })
    }

    /// The routed experts held as one buffer in host memory, if they are.
    pub(crate) fn host_experts(&self) -> Option<&Arc<HostExperts>> {
        self.host_experts.as_ref()
    }

    /// The head's final norm and the output rows `rows` only: one chunk of a head too
    /// large for a pool slot. Logits of the chunks, concatenated, equal the whole head's.
    /// `bytes_of` is asked for the norm and for the rows' part of the output tensor
    /// ([`head_rows_info`]: same name, the rows' offset and length).
    pub fn load_head_rows<'a>(
        ckpt: &Checkpoint,
        spec: &ModelSpec,
        rows: std::ops::Range<usize>,
        device: &Device,
        bytes_of: &dyn Fn(&cardinfer_core::TensorInfo) -> &'a [u8],
        mut upload: Option<&mut Upload<'_>>,
    ) -> Result<Self> {
        let block = BlockId::Head;
        let norm_info = ckpt.require(&resolve_name(ckpt, spec, block, Role::OutputNorm))?;
        let out_name = resolve_name(ckpt, spec, block, Role::Output);
        let out_info = ckpt.require(&out_name)?;
        let vocab = out_info.shape.first().copied().unwrap_or(0);
        if rows.start >= rows.end || rows.end > vocab || out_info.shape.len() != 2 {
            return Err(StreamError::InvalidParameter {
                name: "head rows",
                reason: format!("rows {rows:?} of `{out_name}` {:?}", out_info.shape),
            });
        }
        let chunk_info = head_rows_info(out_info, &rows);
        let chunk = bytes_of(&chunk_info);
        let mut weights = HashMap::new();
        let mut jobs = Vec::new();
        weights.insert(Role::OutputNorm, load_weight(norm_info, bytes_of(norm_info), device)?);
        weights.insert(Role::Output, load_or_queue(&chunk_info, chunk, device, upload.as_deref_mut(), &mut jobs)?);
        let upload = queue_upload(upload.as_deref(), &jobs)?;
        Ok(Self { block, weights, upload, host_experts: None })
    }

    /// Builds block weights from tensors already on a device (tests, adapters).
    pub fn from_parts(block: BlockId, weights: HashMap<Role, Weight>) -> Self {
        Self { block, weights, upload: None, host_experts: None }
    }

    /// Makes the device's compute stream wait until a copy-stream upload of these weights
    /// has finished ("slot ready"); nothing to do for weights loaded otherwise.
    pub fn wait_ready(&self) -> Result<()> {
        match &self.upload {
            Some(upload) => upload.wait(),
            None => Ok(()),
        }
    }

    /// The device-side start and end of the copy-stream upload, if there was one.
    pub fn upload_span(&self) -> Option<(DeviceMarker, DeviceMarker)> {
        self.upload.as_deref().map(UploadEvents::span)
    }

    /// The weight of `role`.
    pub fn get(&self, role: Role) -> Result<&Weight> {
        self.weights.get(&role).ok_or_else(|| StreamError::InvalidParameter {
            name: "block weights",
            reason: format!("{} has no {role:?} weight", self.block),
        })
    }

    /// Every weight of the block with its role.
    pub fn iter(&self) -> impl Iterator<Item = (Role, &Weight)> {
        self.weights.iter().map(|(role, weight)| (*role, weight))
    }

    /// Whether the block has a weight for `role`.
    pub fn has(&self, role: Role) -> bool {
        self.weights.contains_key(&role)
    }

    /// Bytes the block occupies on its device.
    pub fn device_bytes(&self) -> u64 {
        self.weights.values().map(Weight::device_bytes).sum()
    }

    /// Bytes of the weights held on `device`'s kind of memory (the device's, or host
    /// memory for the CPU): a block whose experts live in host memory holds only the rest
    /// on an accelerator.
    pub fn bytes_on(&self, device: &Device) -> u64 {
        self.weights.values().filter(|w| w.is_on_host() == device.is_cpu()).map(Weight::device_bytes).sum()
    }
}

/// The part of the output head `out` (`[vocab, hidden]`) holding rows `rows`, as a tensor
/// of its own: its shape, file offset and length.
pub fn head_rows_info(out: &cardinfer_core::TensorInfo, rows: &std::ops::Range<usize>) -> cardinfer_core::TensorInfo {
    let vocab = out.shape.first().copied().unwrap_or(1).max(1);
    let row_bytes = out.len / vocab as u64;
    cardinfer_core::TensorInfo {
        shape: vec![rows.len(), out.shape.get(1).copied().unwrap_or(0)],
        offset: out.offset + rows.start as u64 * row_bytes,
        len: rows.len() as u64 * row_bytes,
        ..out.clone()
    }
}

/// What one chunk of the head holds: its matrices cut to rows `rows`
/// ([`head_rows_info`]), its vectors (the final norm) whole.
pub fn head_rows_parts(
    head: &[cardinfer_core::TensorInfo],
    rows: &std::ops::Range<usize>,
) -> Vec<cardinfer_core::TensorInfo> {
    head.iter()
        .map(|t| match t.shape.len() {
            2 => head_rows_info(t, rows),
            _ => t.clone(),
        })
        .collect()
}

/// A block's upload through a copy stream: matrices are copied there, into `slot` where
/// one is given and the matrix fits it, else into an allocation of their own.
pub struct Upload<'c> {
    /// The copy stream.
    pub copy: &'c CopyStream,
    /// The slot this block fills, where the device has slot buffers.
    pub slot: Option<SlotCursor>,
}

/// Loads `info` now, or — matrices, with an upload — places or allocates it and queues
/// the copy of `bytes` into `jobs`.
fn load_or_queue<'a>(
    info: &cardinfer_core::TensorInfo,
    bytes: &'a [u8],
    device: &Device,
    upload: Option<&mut Upload<'_>>,
    jobs: &mut Vec<CopyJob<'a>>,
) -> Result<Weight> {
    // Matrices, and f32 vectors (norms, biases) as stored, go through the copy stream: a
    // small copy on the compute stream would wait behind the copy engine's uploads.
    // Vectors stored in f16/bf16 are converted to f32 here, on the compute stream.
    let by_copy = info.shape.len() == 2 || info.storage == StorageType::F32;
    let Some(upload) = upload.filter(|_| by_copy) else {
        return load_weight(info, bytes, device);
    };
    if let Some((weight, dst, zero_after)) = upload.slot.as_mut().and_then(|slot| slot.place(info)) {
        jobs.push(CopyJob { dst, src: bytes, zero_after });
        return Ok(weight.into());
    }
    let (weight, dst) = alloc_destination(info, device)?;
    jobs.push(CopyJob { dst, src: bytes, zero_after: 0 });
    Ok(weight.into())
}

/// Issues the queued copies of one block on the copy stream.
fn queue_upload(upload: Option<&Upload<'_>>, jobs: &[CopyJob<'_>]) -> Result<Option<Arc<UploadEvents>>> {
    match upload {
        // SAFETY: the sources are the reader's page-locked buffer, alive as long as the
        // model; the destinations belong to the returned weights (their own allocations,
        // or a slot that the pool hands to no other block until these weights' kernels
        // are queued), which the executor keeps until the compute stream has waited on
        // the upload (`wait_ready`) and queued its kernels.
        Some(upload) if !jobs.is_empty() => Ok(Some(Arc::new(unsafe { upload.copy.upload(jobs)? }))),
        _ => Ok(None),
    }
}

/// Loads one tensor: quantized matrices stay quantized; float matrices keep their type on
/// accelerators (half the memory for f16/bf16) and compute in f32 on the CPU; vectors
/// (norms, biases) are f32.
fn load_weight(info: &cardinfer_core::TensorInfo, bytes: &[u8], device: &Device) -> Result<Weight> {
    let is_matrix = info.shape.len() == 2;
    if is_matrix && info.storage.is_quantized() {
        return Ok(Weight::Quantized(Arc::new(load_qtensor(info, bytes, device)?)));
    }
    let dtype = match (is_matrix, device) {
        (true, Device::Cuda(_) | Device::Metal(_)) => float_dtype(info.storage),
        _ => DType::F32,
    };
    Ok(Weight::Dense(load_tensor(info, bytes, dtype, device)?))
}

/// The tensor of `role` ([`role_tensor`]), checked to have the shape `spec` implies.
fn checked_role_tensor(
    ckpt: &Checkpoint,
    spec: &ModelSpec,
    block: BlockId,
    role: Role,
) -> Result<cardinfer_core::TensorInfo> {
    let info = role_tensor(ckpt, spec, block, role)?;
    let expected = expected_shape(spec, role);
    if info.shape != expected {
        let tensor = match role {
            Role::Expert(_, expert) if info.name.contains("_exps") => format!("{} (expert {expert})", info.name),
            _ => info.name.clone(),
        };
        return Err(StreamError::ShapeMismatch { tensor, expected, found: info.shape.clone() });
    }
    Ok(info)
}

fn expected_shape(spec: &ModelSpec, role: Role) -> Vec<usize> {
    let h = spec.hidden_size;
    let q = spec.num_heads * spec.head_dim;
    let kv = spec.num_kv_heads * spec.head_dim;
    let ff = spec.intermediate_size;
    match role {
        Role::TokenEmbedding | Role::Output => vec![spec.vocab_size, h],
        Role::AttnNorm | Role::FfnNorm | Role::PostAttnNorm | Role::PostFfnNorm | Role::OutputNorm => vec![h],
        Role::AttnQ => vec![q, h],
        Role::AttnK | Role::AttnV => vec![kv, h],
        Role::AttnQBias => vec![q],
        Role::AttnKBias | Role::AttnVBias => vec![kv],
        Role::AttnQNorm | Role::AttnKNorm => vec![spec.head_dim],
        Role::AttnOutput => vec![h, q],
        Role::FfnGate | Role::FfnUp => vec![ff, h],
        Role::FfnDown => vec![h, ff],
        Role::FfnRouter => vec![spec.moe.as_ref().map_or(0, |moe| moe.experts), h],
        Role::Expert(proj, _) => {
            let eff = spec.moe.as_ref().map_or(0, |moe| moe.expert_intermediate_size);
            match proj {
                ExpertProj::Gate | ExpertProj::Up => vec![eff, h],
                ExpertProj::Down => vec![h, eff],
            }
        }
    }
}
