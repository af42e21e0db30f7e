//! Routed experts held in host memory: computed by the CPU from there, copied to the
//! device for one pass, or — on CUDA, with the device's expert cache — split per pass
//! between the cache, uploads into it, and the CPU ([`crate::executor::expert_cache`]).
//!
//! Whatever computes them, every expert's weighted output is added into the tokens' rows in
//! ascending expert order ([`sum_in_order`]), as the resident run adds them: experts the
//! device computes (cached or uploaded) give the resident run's bits; experts the CPU
//! computes give its kernels' bits (the last bits can differ from the device's).

use super::decoder::Decoder;
use super::moe::Routing;
use crate::cpu::matvec::{try_matvec_host_pairs, HostMatrix};
use crate::cuda::copy_stream::{CopyJob, UploadEvents};
use crate::executor::expert_cache::{ExpertCache, Source};
use crate::model::host_experts::HostExperts;
use crate::model::names::{ExpertProj, Role};
use crate::model::weights::{BlockWeights, Weight};
use crate::{Result, StreamError};
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::{DType, Device, Tensor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// One expert's output: the expert, its tokens' ids and its weighted rows `[n, hidden]`.
pub(super) type ExpertOutput = (u16, Tensor, Tensor);

/// Where a layer's routed experts in host memory are.
pub(super) enum HostSide<'a> {
    /// One buffer of block-quantized matrices (page-locked on CUDA).
    Buffer(&'a Arc<HostExperts>),
    /// Block-quantized host tensors, one per matrix (experts placed on the host without
    /// a buffer, or a CPU run).
    Tensors(&'a BlockWeights),
}

impl<'a> HostSide<'a> {
    /// The host side of `w`'s experts, if they are in host memory.
    pub fn of(w: &'a BlockWeights) -> Option<Self> {
        if let Some(host) = w.host_experts() {
            return Some(Self::Buffer(host));
        }
        matches!(w.get(Role::Expert(ExpertProj::Gate, 0)), Ok(Weight::Quantized(q)) if q.device().is_cpu())
            .then_some(Self::Tensors(w))
    }

    /// Expert `expert`'s gate, up and down matrices as the CPU's kernels read them;
    /// `None` where one is not block-quantized in host memory.
    fn matrices(&self, expert: u16) -> Result<Option<[HostMatrix<'a>; 3]>> {
        match self {
            Self::Buffer(host) => {
                let e = expert as usize;
                Ok(Some([
                    host.matrix(e, ExpertProj::Gate)?,
                    host.matrix(e, ExpertProj::Up)?,
                    host.matrix(e, ExpertProj::Down)?,
                ]))
            }
            Self::Tensors(w) => {
                let mut out = Vec::with_capacity(3);
                for proj in ExpertProj::ALL {
                    let Ok(Weight::Quantized(q)) = w.get(Role::Expert(proj, expert)) else { return Ok(None) };
                    let (Cow::Borrowed(bytes), [rows, cols]) = (q.data()?, q.shape().dims()) else { return Ok(None) };
                    out.push(HostMatrix { dtype: q.dtype(), bytes, rows: *rows, cols: *cols });
                }
                Ok(out.try_into().ok())
            }
        }
    }
}

/// Expert `expert`'s three matrices of `w` (in host memory) copied to `device`, for one pass.
pub(super) fn upload_expert(w: &BlockWeights, expert: u16, device: &Device) -> Result<BlockWeights> {
    let mut parts = HashMap::new();
    for proj in ExpertProj::ALL {
        let role = Role::Expert(proj, expert);
        let on_device = match (w.host_experts(), w.get(role)) {
            (Some(host), _) => {
                let info = host.info(expert as usize, proj)?;
                let dtype = cardinfer_quant::candle::ggml_dtype(info.storage);
                let q = qtensor_from_ggml(dtype, host.bytes(expert as usize, proj)?, info.shape.clone(), device)?;
                Weight::Quantized(Arc::new(q))
            }
            (None, Ok(Weight::Quantized(q))) => {
                let q = qtensor_from_ggml(q.dtype(), &q.data()?, q.shape().dims().to_vec(), device)?;
                Weight::Quantized(Arc::new(q))
            }
            (None, Ok(Weight::Dense(t))) => Weight::Dense(t.to_device(device)?),
            (None, other) => other?.clone(),
        };
        parts.insert(role, on_device);
    }
    Ok(BlockWeights::from_parts(w.block, parts))
}

/// The experts' outputs added into zeroed `dims` rows on `device`, in ascending expert
/// order (the order of the resident run). An output covering every row (a decode step's)
/// is added whole rather than through an index (the same single addition per value);
/// the first such output is taken as the sum so far.
pub(super) fn sum_in_order(mut ys: Vec<ExpertOutput>, dims: &[usize], device: &Device) -> Result<Tensor> {
    ys.sort_by_key(|(expert, ..)| *expert);
    let rows = dims.first().copied().unwrap_or(0);
    let mut out: Option<Tensor> = None;
    for (_, ids, y) in ys {
        let whole = y.dim(0)? == rows;
        out = Some(match (out, whole) {
            (None, true) => y,
            (None, false) => Tensor::zeros(dims, DType::F32, device)?.index_add(&ids, &y, 0)?,
            (Some(sum), true) => (sum + y)?,
            (Some(sum), false) => sum.index_add(&ids, &y, 0)?,
        });
    }
    match out {
        Some(out) => Ok(out),
        None => Ok(Tensor::zeros(dims, DType::F32, device)?),
    }
}

impl Decoder {
    /// The routed experts computed by the CPU from host memory (all of them, or those
    /// `only` marks): all gate and up products in one job of the host pool, then all down
    /// products in another, instead of three jobs per expert. `None` where a matrix is not
    /// block-quantized in host memory.
    pub(super) fn experts_by_cpu(
        &self,
        host: &HostSide<'_>,
        xs: &Tensor,
        by_expert: &[Vec<(u32, f32)>],
        only: Option<&[bool]>,
    ) -> Result<Option<Vec<ExpertOutput>>> {
        let mut hit = Vec::new();
        for (expert, tokens) in by_expert.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            if only.is_some_and(|only| !only.get(expert).copied().unwrap_or(false)) {
                continue;
            }
            let Some(matrices) = host.matrices(expert as u16)? else { return Ok(None) };
            hit.push((expert as u16, tokens, matrices));
        }
        if hit.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let xs = xs.to_device(&Device::Cpu)?.contiguous()?;
        let all = xs.dim(0)?;
        let mut rows = Vec::with_capacity(hit.len());
        for (_, tokens, _) in &hit {
            let ids: Vec<u32> = tokens.iter().map(|(t, _)| *t).collect();
            let n = ids.len();
            let ids = Tensor::from_vec(ids, n, &Device::Cpu)?;
            let r = if n == all { xs.clone() } else { xs.index_select(&ids, 0)? };
            rows.push((ids, r));
        }
        let pairs: Vec<(HostMatrix<'_>, &Tensor)> =
            hit.iter().zip(&rows).flat_map(|((_, _, [gate, up, _]), (_, r))| [(*gate, r), (*up, r)]).collect();
        let Some(gate_up) = try_matvec_host_pairs(&pairs)? else { return Ok(None) };
        let acts = gate_up
            .chunks_exact(2)
            .map(|gu| crate::cuda::fused_ops::silu_mul(&gu[0], &gu[1], self.fused_ops()))
            .collect::<Result<Vec<_>>>()?;
        let pairs: Vec<(HostMatrix<'_>, &Tensor)> =
            hit.iter().zip(&acts).map(|((_, _, [_, _, down]), a)| (*down, a)).collect();
        let Some(downs) = try_matvec_host_pairs(&pairs)? else { return Ok(None) };
        let mut out = Vec::with_capacity(hit.len());
        for (((expert, tokens, _), (ids, _)), y) in hit.iter().zip(rows).zip(downs) {
            let weights: Vec<f32> = tokens.iter().map(|(_, p)| *p).collect();
            let y = y.broadcast_mul(&Tensor::from_vec(weights, (tokens.len(), 1), &Device::Cpu)?)?;
            out.push((*expert, ids, y));
        }
        Ok(Some(out))
    }

    /// The routed experts with the device's expert cache: where the cache assigns each
    /// ([`ExpertCache::assign`]), uploads queued first, then the device's experts (cached
    /// ones first: they wait for no copy), then the CPU's share while the copies and
    /// kernels run, then the sum in ascending order.
    pub(super) fn experts_cached(
        &self,
        w: &BlockWeights,
        host: &HostSide<'_>,
        cache: &Arc<ExpertCache>,
        xs: &Tensor,
        xs_host: Option<&Tensor>,
        by_expert: &[Vec<(u32, f32)>],
    ) -> Result<Tensor> {
        let HostSide::Buffer(experts) = host else {
            return Err(StreamError::Internal("an expert cache without a host buffer".into()));
        };
        let used: Vec<(u16, u64)> = by_expert
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty())
            .map(|(e, _)| (e as u16, experts.expert_bytes(e)))
            .collect();
        let sources = cache.assign(w.block, &used, xs.dim(0)?);
        // The copies, all queued before any kernel of this pass so that none waits for one.
        let mut uploads: Vec<(usize, BlockWeights, UploadEvents)> = Vec::new();
        let mut uploaded_bytes = 0;
        for (i, source) in sources.iter().enumerate() {
            if let Source::Upload(slot) = *source {
                let (expert, bytes) = used[i];
                match queue_upload(cache, experts, w, slot, expert) {
                    Ok((weights, events)) => {
                        uploaded_bytes += bytes;
                        uploads.push((i, weights, events));
                    }
                    Err(e) => {
                        cache.evict(slot);
                        return Err(e);
                    }
                }
            }
        }
        if let (Some((.., first)), Some((.., last))) = (uploads.first(), uploads.last()) {
            cache.record_uploads((first.span().0, last.span().1), uploaded_bytes);
        }
        if xs.dim(0)? == 1 {
            let pass = Pass { host, cache, xs, xs_host, by_expert, used: &used, sources: &sources };
            if let Some(out) = self.one_token_on_device(w, &pass, &uploads)? {
                return Ok(out);
            }
        }
        let routing = Routing::upload(by_expert, xs.device())?;
        let mut ys = Vec::with_capacity(used.len());
        for (i, source) in sources.iter().enumerate() {
            if let Source::Cached(slot) = *source {
                let expert = used[i].0;
                let weights = cache
                    .weights(slot)
                    .ok_or_else(|| StreamError::Internal(format!("expert cache slot {slot} has no weights")))?;
                let (ids, y) = self.expert_on_device(&slot_weights(w, expert, weights), expert, xs, &routing)?;
                ys.push((expert, ids, y));
            }
        }
        for (i, weights, events) in &uploads {
            events.wait()?;
            let expert = used[*i].0;
            let (ids, y) = self.expert_on_device(weights, expert, xs, &routing)?;
            ys.push((expert, ids, y));
        }
        for (i, source) in sources.iter().enumerate() {
            if *source == Source::Temporary {
                let expert = used[i].0;
                let weights = upload_expert(w, expert, xs.device())?;
                let (ids, y) = self.expert_on_device(&weights, expert, xs, &routing)?;
                ys.push((expert, ids, y));
            }
        }
        // The CPU's share, computed while the device works through the above.
        let pass = Pass { host, cache, xs, xs_host, by_expert, used: &used, sources: &sources };
        ys.extend(to_device(self.cpu_share(&pass)?, xs.device())?);
        sum_in_order(ys, xs.dims(), xs.device())
    }

    /// The experts of `pass` the cache assigned to the CPU, computed by it from host
    /// memory (weighted, in host memory), with the CPU's rate recorded.
    pub(super) fn cpu_share(&self, pass: &Pass<'_>) -> Result<Vec<ExpertOutput>> {
        let mut on_cpu = vec![false; pass.by_expert.len()];
        let mut cpu_bytes = 0;
        for (i, source) in pass.sources.iter().enumerate() {
            if *source == Source::Cpu {
                on_cpu[pass.used[i].0 as usize] = true;
                cpu_bytes += pass.used[i].1;
            }
        }
        if cpu_bytes == 0 {
            return Ok(Vec::new());
        }
        let xs_host = match pass.xs_host {
            Some(x) => x.clone(),
            None => pass.xs.to_device(&Device::Cpu)?,
        };
        let started = std::time::Instant::now();
        let outputs = self
            .experts_by_cpu(pass.host, &xs_host, pass.by_expert, Some(&on_cpu))?
            .ok_or_else(|| StreamError::Internal("routed experts the CPU's kernels do not cover".into()))?;
        pass.cache.record_cpu(started.elapsed().as_secs_f64(), cpu_bytes);
        Ok(outputs)
    }
}

/// One pass through a layer's routed experts with the device cache: the activations (on
/// the device, and in host memory when the CPU computes some), each expert's tokens, the
/// used experts `(expert, bytes)` ascending and where the cache put each.
pub(super) struct Pass<'a> {
    pub(super) host: &'a HostSide<'a>,
    pub(super) cache: &'a Arc<ExpertCache>,
    pub(super) xs: &'a Tensor,
    pub(super) xs_host: Option<&'a Tensor>,
    pub(super) by_expert: &'a [Vec<(u32, f32)>],
    pub(super) used: &'a [(u16, u64)],
    pub(super) sources: &'a [Source],
}

/// Queues the copy of expert `expert` from `experts` into cache slot `slot` and returns its
/// weights there (as a block's, for the decoder's products) with the copy's events.
fn queue_upload(
    cache: &ExpertCache,
    experts: &HostExperts,
    w: &BlockWeights,
    slot: usize,
    expert: u16,
) -> Result<(BlockWeights, UploadEvents)> {
    let mut cursor = cache.arena().slot(slot);
    let mut jobs = Vec::with_capacity(3);
    let mut placed = Vec::with_capacity(3);
    for proj in ExpertProj::ALL {
        let info = experts.info(expert as usize, proj)?;
        let (weight, dst, zero_after) = cursor
            .place(info)
            .ok_or_else(|| StreamError::Internal(format!("`{}` does not fit an expert cache slot", info.name)))?;
        jobs.push(CopyJob { dst, src: experts.bytes(expert as usize, proj)?, zero_after });
        placed.push(Weight::from(weight));
    }
    // SAFETY: the sources are the host buffer of the experts, which the model's block
    // weights own for as long as the model lives (past this pass, whose kernels wait for
    // the copies); the destinations are the slot's memory, reused only by a later upload,
    // which the copy stream queues after the kernels queued before it (these experts').
    let events = unsafe { cache.copy_stream().upload(&jobs)? };
    let [gate, up, down]: [Weight; 3] =
        placed.try_into().map_err(|_| StreamError::Internal("an expert of other than three matrices".into()))?;
    cache.fill(slot, [gate.clone(), up.clone(), down.clone()]);
    Ok((slot_weights(w, expert, [gate, up, down]), events))
}

/// Expert `expert`'s three weights as a block's (the roles the decoder's products look up).
fn slot_weights(w: &BlockWeights, expert: u16, [gate, up, down]: [Weight; 3]) -> BlockWeights {
    let parts = HashMap::from([
        (Role::Expert(ExpertProj::Gate, expert), gate),
        (Role::Expert(ExpertProj::Up, expert), up),
        (Role::Expert(ExpertProj::Down, expert), down),
    ]);
    BlockWeights::from_parts(w.block, parts)
}

/// The CPU's expert outputs moved to `device`: every expert's rows in one copy, its ids in
/// another.
fn to_device(outputs: Vec<ExpertOutput>, device: &Device) -> Result<Vec<ExpertOutput>> {
    if outputs.is_empty() || device.is_cpu() {
        return Ok(outputs);
    }
    let ids = Tensor::cat(&outputs.iter().map(|(_, ids, _)| ids).collect::<Vec<_>>(), 0)?.to_device(device)?;
    let ys = Tensor::cat(&outputs.iter().map(|(.., y)| y).collect::<Vec<_>>(), 0)?.to_device(device)?;
    let mut moved = Vec::with_capacity(outputs.len());
    let mut at = 0;
    for (expert, expert_ids, _) in &outputs {
        let n = expert_ids.dim(0)?;
        moved.push((*expert, ids.narrow(0, at, n)?, ys.narrow(0, at, n)?));
        at += n;
    }
    Ok(moved)
}
