//! The routed experts of a mixture-of-experts layer (Qwen3-MoE, Mixtral): the router's
//! softmax picks `k` experts per token, each chosen expert's SwiGLU MLP runs on the rows
//! of the tokens routed to it, and its output, weighted by the router's probability, is
//! added into the tokens' rows — experts in ascending order, as transformers does, so
//! every token's sum has one order on every device and placement.

use super::decoder::Decoder;
use crate::model::names::{ExpertProj, Role};
use crate::model::weights::{BlockWeights, Weight};
use crate::{Result, StreamError};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{DType, Device, Tensor};
use cardinfer_core::MoeSpec;

/// Tokens in a forward pass from which routed experts in host memory are copied to the
/// device and computed there rather than by the CPU.
const UPLOAD_TOKENS: usize = 32;

/// Expert `expert`'s three matrices of `w` (in host memory) copied to `device`.
fn upload_expert(w: &BlockWeights, expert: u16, device: &Device) -> Result<BlockWeights> {
    let mut parts = std::collections::HashMap::new();
    for proj in ExpertProj::ALL {
        let role = Role::Expert(proj, expert);
        let on_device = match w.get(role)? {
            Weight::Quantized(q) => {
                let bytes = q.data()?;
                let q = qtensor_from_ggml(q.dtype(), &bytes, q.shape().dims().to_vec(), device)?;
                Weight::Quantized(std::sync::Arc::new(q))
            }
            Weight::Dense(t) => Weight::Dense(t.to_device(device)?),
            other => other.clone(),
        };
        parts.insert(role, on_device);
    }
    Ok(BlockWeights::from_parts(w.block, parts))
}

/// The experts of one token with their weights, best first.
pub(crate) type Route = Vec<(usize, f32)>;

/// Routes each row of router logits (`tokens × experts`, row-major): softmax over the
/// experts (in f32, as transformers computes it), the `k` most probable (ties to the
/// lower index), divided by their sum where `norm_topk_prob`.
pub(crate) fn route(logits: &[f32], experts: usize, k: usize, norm_topk_prob: bool) -> Vec<Route> {
    logits
        .chunks(experts.max(1))
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = row.iter().map(|&l| (l - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| exps[b].total_cmp(&exps[a]).then(a.cmp(&b)));
            let mut chosen: Route = order.into_iter().take(k).map(|e| (e, exps[e] / sum)).collect();
            if norm_topk_prob {
                let total: f32 = chosen.iter().map(|(_, p)| p).sum();
                chosen.iter_mut().for_each(|(_, p)| *p /= total);
            }
            chosen
        })
        .collect()
}

/// For each expert, the tokens routed to it and their weights, in token order.
pub(crate) fn tokens_by_expert(routes: &[Route], experts: usize) -> Vec<Vec<(u32, f32)>> {
    let mut by_expert = vec![Vec::new(); experts];
    for (token, route) in routes.iter().enumerate() {
        for &(expert, weight) in route {
            if let Some(list) = by_expert.get_mut(expert) {
                list.push((token as u32, weight));
            }
        }
    }
    by_expert
}

impl Decoder {
    /// The mixture-of-experts MLP of `x` (`[batch, seq, hidden]`, f32, normed).
    pub(super) fn experts(&self, w: &BlockWeights, x: &Tensor) -> Result<Tensor> {
        let moe = self.moe_spec()?;
        let (b, seq, hidden) = x.dims3()?;
        let xs = x.reshape((b * seq, hidden))?;
        let logits = w.get(Role::FfnRouter)?.matmul_t(&xs)?.to_dtype(DType::F32)?;
        // Experts in host memory need the activations there too: one copy with the logits.
        let host_experts =
            matches!(w.get(Role::Expert(ExpertProj::Gate, 0)), Ok(Weight::Quantized(q)) if q.device().is_cpu());
        // A prompt chunk routes its tokens to most experts: copying each used expert to the
        // device once and computing its tokens there beats the CPU (and gives the bits of
        // the resident run, whose experts the device computes).
        let upload = host_experts && !x.device().is_cpu() && b * seq >= UPLOAD_TOKENS;
        let (xs_host, logits) = match host_experts && !upload && !x.device().is_cpu() {
            true => {
                let both = Tensor::cat(&[&xs.to_dtype(DType::F32)?, &logits], 1)?.to_device(&Device::Cpu)?;
                (Some(both.narrow(1, 0, hidden)?), both.narrow(1, hidden, moe.experts)?)
            }
            false => (None, logits),
        };
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let routes = route(&logits, moe.experts, moe.experts_per_token, moe.norm_topk_prob);
        let by_expert = tokens_by_expert(&routes, moe.experts);
        if host_experts && !upload {
            if let Some(out) = self.experts_on_host(w, xs_host.as_ref().unwrap_or(&xs), &by_expert)? {
                return Ok(out.to_device(x.device())?.reshape((b, seq, hidden))?);
            }
        }
        let mut out = Tensor::zeros((b * seq, hidden), DType::F32, x.device())?;
        for (expert, tokens) in by_expert.into_iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let expert = expert as u16;
            // An expert in host memory, used by this chunk: its matrices copied to the
            // device for this chunk only (one expert's bytes at a time).
            let uploaded;
            let w = match upload {
                true => {
                    uploaded = upload_expert(w, expert, x.device())?;
                    &uploaded
                }
                false => w,
            };
            let ids: Vec<u32> = tokens.iter().map(|(t, _)| *t).collect();
            let weights: Vec<f32> = tokens.iter().map(|(_, p)| *p).collect();
            let n = ids.len();
            let ids = Tensor::from_vec(ids, n, x.device())?;
            let rows = if n == b * seq { xs.clone() } else { xs.index_select(&ids, 0)? };
            let [gate, up] = self.project_many(
                &rows,
                w,
                [(Role::Expert(ExpertProj::Gate, expert), None), (Role::Expert(ExpertProj::Up, expert), None)],
            )?;
            let act = crate::cuda::fused_ops::silu_mul(&gate, &up, self.fused_ops())?;
            let y = self.project(&act, w, Role::Expert(ExpertProj::Down, expert), None)?;
            let y = y.broadcast_mul(&Tensor::from_vec(weights, (n, 1), x.device())?)?;
            out = out.index_add(&ids, &y, 0)?;
        }
        Ok(out.reshape((b, seq, hidden))?)
    }

    /// The routed experts computed by the CPU from host memory, when every routed expert's
    /// matrices are block-quantized there (experts placed on the host, or a CPU run): all
    /// gate and up products in one job of the host pool, then all down products in
    /// another, instead of three jobs per expert. The products are the same per-row
    /// kernels as one expert at a time, so the bits are too. `None` where this does not
    /// apply.
    fn experts_on_host(&self, w: &BlockWeights, xs: &Tensor, by_expert: &[Vec<(u32, f32)>]) -> Result<Option<Tensor>> {
        let host_matrix = |role: Role| match w.get(role) {
            Ok(Weight::Quantized(q)) if q.device().is_cpu() => Some(q.clone()),
            _ => None,
        };
        let mut hit = Vec::new();
        for (expert, tokens) in by_expert.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            let e = expert as u16;
            let [Some(gate), Some(up), Some(down)] = ExpertProj::ALL.map(|p| host_matrix(Role::Expert(p, e))) else {
                return Ok(None);
            };
            hit.push((tokens, gate, up, down));
        }
        let xs = xs.to_device(&Device::Cpu)?;
        let all = xs.dim(0)?;
        let mut rows = Vec::with_capacity(hit.len());
        for (tokens, ..) in &hit {
            let ids: Vec<u32> = tokens.iter().map(|(t, _)| *t).collect();
            let n = ids.len();
            let ids = Tensor::from_vec(ids, n, &Device::Cpu)?;
            let r = if n == all { xs.clone() } else { xs.index_select(&ids, 0)? };
            rows.push((ids, r));
        }
        let pairs: Vec<(&QTensor, &Tensor)> = hit
            .iter()
            .zip(&rows)
            .flat_map(|((_, gate, up, _), (_, r))| [(gate.as_ref(), r), (up.as_ref(), r)])
            .collect();
        let Some(gate_up) = crate::cpu::matvec::try_matvec_pairs(&pairs)? else { return Ok(None) };
        let acts = gate_up
            .chunks_exact(2)
            .map(|gu| crate::cuda::fused_ops::silu_mul(&gu[0], &gu[1], self.fused_ops()))
            .collect::<Result<Vec<_>>>()?;
        let pairs: Vec<(&QTensor, &Tensor)> = hit.iter().zip(&acts).map(|((.., down), a)| (down.as_ref(), a)).collect();
        let Some(downs) = crate::cpu::matvec::try_matvec_pairs(&pairs)? else { return Ok(None) };
        let mut out = Tensor::zeros(xs.dims(), DType::F32, &Device::Cpu)?;
        for (((tokens, ..), (ids, _)), y) in hit.iter().zip(&rows).zip(downs) {
            let weights: Vec<f32> = tokens.iter().map(|(_, p)| *p).collect();
            let y = y.broadcast_mul(&Tensor::from_vec(weights, (tokens.len(), 1), &Device::Cpu)?)?;
            out = out.index_add(ids, &y, 0)?;
        }
        Ok(Some(out))
    }

    fn moe_spec(&self) -> Result<&MoeSpec> {
        use crate::model::layer_stream::LayerStream;
        self.spec()
            .moe
            .as_ref()
            .ok_or_else(|| StreamError::Internal("a routed layer in a model without experts".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::{route, tokens_by_expert};

    #[test]
    fn routing_picks_the_top_k_by_softmax_and_normalizes_when_asked() {
        let logits = [0.0, 2.0, 1.0, 2.0, /* token 1 */ 5.0, 0.0, 0.0, 0.0];
        let plain = route(&logits, 4, 2, false);
        // Ties go to the lower index; weights are the softmax over all four experts.
        assert_eq!(plain[0].iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 3]);
        let z: f32 = [0.0f32, 2.0, 1.0, 2.0].iter().map(|l| (l - 2.0).exp()).sum();
        assert!((plain[0][0].1 - 1.0 / z).abs() < 1e-6);
        let normed = route(&logits, 4, 2, true);
        assert!((normed[0][0].1 - 0.5).abs() < 1e-6 && (normed[0][1].1 - 0.5).abs() < 1e-6);
        assert_eq!(normed[1][0].0, 0);
        let by_expert = tokens_by_expert(&normed, 4);
        assert_eq!(by_expert[0].iter().map(|t| t.0).collect::<Vec<_>>(), vec![1]);
        assert_eq!(by_expert[1].len(), 2);
        assert!(by_expert[2].is_empty() || by_expert[2][0].0 == 1);
    }
}
