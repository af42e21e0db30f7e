//! The routed experts of a mixture-of-experts layer (Qwen3-MoE, Mixtral): the router's
//! softmax picks `k` experts per token, each chosen expert's SwiGLU MLP runs on the rows
//! of the tokens routed to it, and its output, weighted by the router's probability, is
//! added into the tokens' rows — experts in ascending order, as transformers does, so
//! every token's sum has one order on every device and placement.

use super::decoder::Decoder;
use super::moe_host::{sum_in_order, upload_expert, HostSide};
use crate::executor::expert_cache::UPLOAD_TOKENS;
use crate::model::names::{ExpertProj, Role};
use crate::model::weights::BlockWeights;
use crate::{Result, StreamError};
use candle_core::{DType, Device, Tensor};
use cardinfer_core::MoeSpec;

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

/// The routed tokens' ids and weights of every used expert on a device: all experts' in
/// one copy each (a decode step would otherwise make two small copies per expert).
pub(crate) struct Routing {
    /// Per expert: its tokens' ids `[n]` and weights `[n, 1]`, if any token is routed to it.
    per_expert: Vec<Option<(Tensor, Tensor)>>,
}

impl Routing {
    /// The routing of `by_expert` (each expert's tokens and weights) on `device`.
    pub(crate) fn upload(by_expert: &[Vec<(u32, f32)>], device: &Device) -> Result<Self> {
        let ids: Vec<u32> = by_expert.iter().flatten().map(|(t, _)| *t).collect();
        let weights: Vec<f32> = by_expert.iter().flatten().map(|(_, p)| *p).collect();
        let total = ids.len();
        let mut per_expert = Vec::with_capacity(by_expert.len());
        if total == 0 {
            per_expert.resize_with(by_expert.len(), || None);
            return Ok(Self { per_expert });
        }
        let ids = Tensor::from_vec(ids, total, device)?;
        let weights = Tensor::from_vec(weights, (total, 1), device)?;
        let mut at = 0;
        for tokens in by_expert {
            let n = tokens.len();
            per_expert.push(match n {
                0 => None,
                _ => Some((ids.narrow(0, at, n)?, weights.narrow(0, at, n)?)),
            });
            at += n;
        }
        Ok(Self { per_expert })
    }

    /// Expert `expert`'s token ids and weights.
    pub(crate) fn of(&self, expert: u16) -> Result<&(Tensor, Tensor)> {
        self.per_expert
            .get(expert as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| StreamError::Internal(format!("no token is routed to expert {expert}")))
    }
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
        let (b, seq, hidden) = x.dims3()?;
        let xs = x.reshape((b * seq, hidden))?;
        let logits = w.get(Role::FfnRouter)?.matmul_t(&xs)?.to_dtype(DType::F32)?;
        Ok(self.experts_with_logits(w, &xs, logits)?.reshape((b, seq, hidden))?)
    }

    /// The mixture-of-experts MLP of the rows `xs` (`[tokens, hidden]`, f32, normed) whose
    /// router logits `[tokens, experts]` (f32) are computed already (the fused decode path
    /// computes them on the device): `[tokens, hidden]`.
    pub(crate) fn experts_with_logits(&self, w: &BlockWeights, xs: &Tensor, logits: Tensor) -> Result<Tensor> {
        let moe = self.moe_spec()?;
        let (tokens, hidden) = xs.dims2()?;
        let on_device = !xs.device().is_cpu();
        let host = HostSide::of(w);
        let cache = w.host_experts().and_then(|h| h.cache()).filter(|_| on_device);
        // A prompt chunk routes its tokens to most experts: copying each used expert to
        // the device once and computing its tokens there beats the CPU (and gives the
        // bits of the resident run, whose experts the device computes).
        let upload = host.is_some() && on_device && tokens >= UPLOAD_TOKENS;
        // Experts the CPU may compute need the activations in host memory too: one copy
        // with the logits.
        let (xs_host, logits) = match host.is_some() && !upload && on_device {
            true => {
                let both = Tensor::cat(&[&xs.to_dtype(DType::F32)?, &logits], 1)?.to_device(&Device::Cpu)?;
                (Some(both.narrow(1, 0, hidden)?.contiguous()?), both.narrow(1, hidden, moe.experts)?)
            }
            false => (None, logits),
        };
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let routes = route(&logits, moe.experts, moe.experts_per_token, moe.norm_topk_prob);
        let by_expert = tokens_by_expert(&routes, moe.experts);
        let out = match (cache, &host) {
            (Some(cache), Some(host)) => self.experts_cached(w, host, cache, xs, xs_host.as_ref(), &by_expert)?,
            (None, Some(host)) if !upload => {
                let xs_host = xs_host.unwrap_or_else(|| xs.clone());
                match self.experts_by_cpu(host, &xs_host, &by_expert, None)? {
                    Some(ys) => sum_in_order(ys, xs_host.dims(), &Device::Cpu)?.to_device(xs.device())?,
                    None => self.experts_on_device(w, xs, &by_expert, false)?,
                }
            }
            _ => self.experts_on_device(w, xs, &by_expert, upload)?,
        };
        Ok(out)
    }

    /// Every routed expert computed on the device of `xs`, in ascending order, each
    /// copied there for this pass first where `upload` (experts in host memory).
    fn experts_on_device(
        &self,
        w: &BlockWeights,
        xs: &Tensor,
        by_expert: &[Vec<(u32, f32)>],
        upload: bool,
    ) -> Result<Tensor> {
        let routing = Routing::upload(by_expert, xs.device())?;
        let mut ys = Vec::new();
        for (expert, tokens) in by_expert.iter().enumerate() {
            if tokens.is_empty() {
                continue;
            }
            let expert = expert as u16;
            let uploaded;
            let weights = match upload {
                true => {
                    uploaded = upload_expert(w, expert, xs.device())?;
                    &uploaded
                }
                false => w,
            };
            let (ids, y) = self.expert_on_device(weights, expert, xs, &routing)?;
            ys.push((expert, ids, y));
        }
        sum_in_order(ys, xs.dims(), xs.device())
    }

    /// One expert's weighted output for its tokens (of the rows of `xs`), with its
    /// matrices in `w` on the device of `xs`: the token ids and the `[n, hidden]` rows.
    pub(super) fn expert_on_device(
        &self,
        w: &BlockWeights,
        expert: u16,
        xs: &Tensor,
        routing: &Routing,
    ) -> Result<(Tensor, Tensor)> {
        let (ids, weights) = routing.of(expert)?;
        let n = ids.dim(0)?;
        let rows = if n == xs.dim(0)? { xs.clone() } else { xs.index_select(ids, 0)? };
        let [gate, up] = self.project_many(
            &rows,
            w,
            [(Role::Expert(ExpertProj::Gate, expert), None), (Role::Expert(ExpertProj::Up, expert), None)],
        )?;
        let act = crate::cuda::fused_ops::silu_mul(&gate, &up, self.fused_ops())?;
        let y = self.project(&act, w, Role::Expert(ExpertProj::Down, expert), None)?;
        let y = y.broadcast_mul(weights)?;
        Ok((ids.clone(), y))
    }

    pub(super) fn moe_spec(&self) -> Result<&MoeSpec> {
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
