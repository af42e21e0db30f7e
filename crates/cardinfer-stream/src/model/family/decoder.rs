//! The generic decoder block: pre-norm attention with RoPE and GQA, then a SwiGLU MLP
//! or, in a mixture-of-experts layer, routed SwiGLU experts (`moe.rs`). Qwen2's q/k/v
//! biases and Qwen3's per-head q/k norms are switched on by the spec.

use super::tiled_attention::{tiled_attention, ATTENTION_KEY_TILE, TILED_FROM_KEYS};
use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::names::Role;
use crate::model::rope::Rope;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::{Device, Tensor};
use candle_nn::ops::{rms_norm, softmax_last_dim};
use cardinfer_core::{KvType, ModelSpec};

/// Llama / Mistral / Qwen2 / Qwen3 / Qwen3-MoE / Mixtral as one parameterized family.
#[derive(Debug, Clone)]
pub struct Decoder {
    spec: ModelSpec,
    rope: Rope,
    /// Gemma 3's sliding-window layers' RoPE (its own base); `rope` serves the global ones.
    local_rope: Option<Rope>,
    /// One-kernel versions of the masked softmax, RoPE and SwiGLU on CUDA ([`crate::cuda::fused_ops`]).
    fused_ops: bool,
    /// How the models built on this decoder store their KV caches.
    kv_type: KvType,
}

impl Decoder {
    /// A decoder for `spec`, with RoPE frequency divisors from the file if it has them.
    pub fn new(spec: ModelSpec, rope_freq_factors: Option<Vec<f32>>) -> Self {
        let mut rope = Rope::new(&spec, rope_freq_factors);
        let mut local_rope = None;
        if let Some(g) = &spec.gemma {
            rope = rope.scaled(g.global_rope_factor);
            local_rope = Some(Rope::new(&ModelSpec { rope_theta: g.local_rope_theta, ..spec.clone() }, None));
        }
        Self { spec, rope, local_rope, fused_ops: true, kv_type: KvType::default() }
    }

    /// How the KV caches of this decoder's models store keys and values (f16 by default);
    /// the fused decode kernels are built for it.
    pub fn set_kv_type(&mut self, kv_type: KvType) {
        self.kv_type = kv_type;
    }

    /// How the KV caches of this decoder's models store keys and values.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Switches the one-kernel masked softmax, RoPE and SwiGLU on or off (on by default,
    /// off with [`DecodePath::Plain`](crate::executor::fused::DecodePath::Plain)); they give the same bits as the Candle ops.
    pub fn set_fused_ops(&mut self, on: bool) {
        self.fused_ops = on;
    }

    /// RoPE of `x` (`[batch, seq, heads, head_dim]`) into attention's layout `[batch,
    /// heads, seq, head_dim]`: one kernel where the fused ops apply, else a transposing
    /// copy and the rotation (the same bits).
    fn rope_heads(&self, rope: &Rope, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let interleaved = rope.style() == cardinfer_core::RopeStyle::Interleaved;
        match crate::cuda::fused_ops::rope_heads(x, cos, sin, interleaved, self.fused_ops)? {
            Some(y) => Ok(y),
            None => rope.apply(&x.transpose(1, 2)?.contiguous()?, cos, sin),
        }
    }

    /// The model's rotary embeddings (tables cached per device) and causal mask.
    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    /// The rotary embeddings of layer `layer`: Gemma 3's sliding-window layers have their
    /// own base, every other layer uses [`Decoder::rope`].
    pub(crate) fn layer_rope(&self, layer: usize) -> &Rope {
        match (self.spec.sliding_window(layer), &self.local_rope) {
            (Some(_), Some(local)) => local,
            _ => &self.rope,
        }
    }

    /// The attention scores' scale as the CPU's and the fused kernels' f32 arithmetic take
    /// it: `query_pre_attn_scalar^-0.5` for Gemma 3, `head_dim^-0.5` otherwise.
    pub(crate) fn attention_scale_f32(&self) -> f32 {
        match &self.spec.gemma {
            Some(g) => 1.0 / (g.query_pre_attn_scalar as f32).sqrt(),
            None => 1.0 / (self.spec.head_dim as f32).sqrt(),
        }
    }

    /// Whether the stored norm weights are `w` of Gemma's `1 + w` (added at run time).
    pub(crate) fn norm_plus_one(&self) -> bool {
        self.spec.norms_plus_one()
    }

    pub(super) fn norm(&self, x: &Tensor, weights: &BlockWeights, role: Role) -> Result<Tensor> {
        let w = weights.get(role)?.dense()?;
        let eps = self.spec.rms_norm_eps as f32;
        match self.norm_plus_one() {
            // Gemma's norms multiply by 1 + w (Hugging Face files store w).
            true => Ok(rms_norm(&x.contiguous()?, &w.affine(1.0, 1.0)?, eps)?),
            false => Ok(rms_norm(&x.contiguous()?, w, eps)?),
        }
    }

    pub(super) fn project(&self, x: &Tensor, weights: &BlockWeights, role: Role, bias: Option<Role>) -> Result<Tensor> {
        let [y] = self.project_many(x, weights, [(role, bias)])?;
        Ok(y)
    }

    /// `x @ Wᵀ (+ bias)` for several roles that share the input (one CPU job for all).
    pub(super) fn project_many<const N: usize>(
        &self,
        x: &Tensor,
        weights: &BlockWeights,
        roles: [(Role, Option<Role>); N],
    ) -> Result<[Tensor; N]> {
        let matrices = roles.iter().map(|(role, _)| weights.get(*role)).collect::<Result<Vec<_>>>()?;
        let ys = crate::model::weights::Weight::matmul_t_many(&matrices, x)?;
        let mut out = Vec::with_capacity(N);
        for (y, (_, bias)) in ys.into_iter().zip(roles) {
            out.push(match bias {
                Some(b) if weights.has(b) => y.broadcast_add(weights.get(b)?.dense()?)?,
                _ => y,
            });
        }
        out.try_into().map_err(|_| crate::StreamError::InvalidParameter {
            name: "roles",
            reason: format!("{N} products asked, another count returned"),
        })
    }

    /// `[b, seq, heads * d]` → `[b, heads, seq, d]`.
    fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        Ok(x.reshape((b, seq, heads, head_dim))?.transpose(1, 2)?.contiguous()?)
    }

    pub(super) fn attention(
        &self,
        w: &BlockWeights,
        x: &Tensor,
        kv: &mut KvSlot,
        pos: usize,
        layer: usize,
    ) -> Result<Tensor> {
        let s = &self.spec;
        let window = s.sliding_window(layer);
        let rope = self.layer_rope(layer);
        let (b, seq, _) = x.dims3()?;
        let [q, k, v] = self.project_many(
            x,
            w,
            [
                (Role::AttnQ, Some(Role::AttnQBias)),
                (Role::AttnK, Some(Role::AttnKBias)),
                (Role::AttnV, Some(Role::AttnVBias)),
            ],
        )?;
        // q and k stay in the projection's layout [b, seq, heads, d] through the per-head
        // norm (a per-row op: any layout gives the same bits) and are transposed by RoPE.
        let mut q = q.reshape((b, seq, s.num_heads, s.head_dim))?;
        let mut k = k.reshape((b, seq, s.num_kv_heads, s.head_dim))?;
        let v = Self::split_heads(&v, s.num_kv_heads, s.head_dim)?;
        if s.qk_norm {
            q = self.norm(&q, w, Role::AttnQNorm)?;
            k = self.norm(&k, w, Role::AttnKNorm)?;
        }
        let (cos, sin) = rope.tables(pos, seq, x.device())?;
        let q = self.rope_heads(rope, &q, &cos, &sin)?;
        let k = self.rope_heads(rope, &k, &cos, &sin)?;
        if x.device().is_cpu() {
            // Row by row over each position's own keys (read as stored): the same bits in
            // any pass, and a decode step's are the fused path's (scale in f32 as its
            // kernels take it).
            let (k, v) = kv.append_stored(&k, &v)?;
            let y = crate::cpu::attention::attend(&q, &k, &v, pos, self.attention_scale_f32(), window)?;
            return self.project(&y, w, Role::AttnOutput, None);
        }
        let (k, v) = kv.append(&k, &v)?;
        let mut total = k.dim(2)?;
        // One query of a sliding-window layer sees the last `window` keys only.
        let (k, v) = match window {
            Some(wnd) if seq == 1 && total > wnd => {
                let (k, v) =
                    (k.narrow(2, total - wnd, wnd)?.contiguous()?, v.narrow(2, total - wnd, wnd)?.contiguous()?);
                total = wnd;
                (k, v)
            }
            _ => (k, v),
        };

        let scale = match &s.gemma {
            Some(g) => 1.0 / g.query_pre_attn_scalar.sqrt(),
            None => 1.0 / (s.head_dim as f64).sqrt(),
        };
        // GQA: view the query heads of one KV head as extra rows, so no KV copy is made.
        let group = s.num_heads / s.num_kv_heads;
        let q = q.reshape((b, s.num_kv_heads, group * seq, s.head_dim))?;
        let y = if window.is_none() && seq > 1 && total >= TILED_FROM_KEYS {
            // A long cache: the scores a tile of keys at a time, never the whole matrix.
            tiled_attention(&q, (&k, &v), (seq, pos), scale, ATTENTION_KEY_TILE)?
        } else {
            let scores = q.matmul(&k.t()?)?;
            let probs = if let (Some(wnd), true) = (window, seq > 1) {
                let mask = rope.window_mask(group, seq, pos, total, wnd, x.device())?;
                softmax_last_dim(&(scores * scale)?.broadcast_add(&mask)?)?
            } else if seq > 1 {
                let mask = || rope.causal_mask(group, seq, pos, total, x.device());
                crate::cuda::fused_ops::masked_softmax(&scores, scale, seq, pos, self.fused_ops, mask)?
            } else {
                softmax_last_dim(&(scores * scale)?)?
            };
            probs.matmul(&v)?
        }; // [b, kv_heads, group * seq, d]
        let y = y.reshape((b, s.num_heads, seq, s.head_dim))?.transpose(1, 2)?.reshape((
            b,
            seq,
            s.num_heads * s.head_dim,
        ))?;
        self.project(&y, w, Role::AttnOutput, None)
    }

    pub(super) fn fused_ops(&self) -> bool {
        self.fused_ops
    }

    pub(super) fn mlp(&self, w: &BlockWeights, x: &Tensor) -> Result<Tensor> {
        let [gate, up] = self.project_many(x, w, [(Role::FfnGate, None), (Role::FfnUp, None)])?;
        let act = crate::cuda::fused_ops::silu_mul(&gate, &up, self.fused_ops)?;
        self.project(&act, w, Role::FfnDown, None)
    }
}

/// Additive mask `[group * seq, total]`: query row `r` (position `pos + r % seq`) sees keys
/// `0..=pos + r % seq`. `group` query heads share each KV head and are stacked as rows.
/// Built on the host; [`Rope::causal_mask`] builds the same on the device.
pub fn causal_mask(group: usize, seq: usize, pos: usize, total: usize, device: &Device) -> Result<Tensor> {
    let mut mask = Vec::with_capacity(group * seq * total);
    for _ in 0..group {
        for i in 0..seq {
            let visible = pos + i;
            mask.extend((0..total).map(|j| if j <= visible { 0f32 } else { f32::NEG_INFINITY }));
        }
    }
    Ok(Tensor::from_vec(mask, (group * seq, total), device)?)
}

impl LayerStream for Decoder {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn embed(&self, weights: &BlockWeights, tokens: &Tensor) -> Result<Tensor> {
        let x = weights.get(Role::TokenEmbedding)?.embedding(tokens)?;
        match &self.spec.gemma {
            // Gemma scales the embeddings by √hidden (as an f32, like transformers).
            Some(_) => Ok(x.affine((self.spec.hidden_size as f64).sqrt() as f32 as f64, 0.0)?),
            None => Ok(x),
        }
    }

    fn block(&self, layer: usize, weights: &BlockWeights, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor> {
        if self.spec.gemma.is_some() {
            return self.gemma_block(layer, weights, x, kv, pos);
        }
        let h = self.norm(x, weights, Role::AttnNorm)?;
        let x = (x + self.attention(weights, &h, kv, pos, layer)?)?;
        let h = self.norm(&x, weights, Role::FfnNorm)?;
        let y = match self.spec.is_moe_layer(layer) {
            true => self.experts(weights, &h)?,
            false => self.mlp(weights, &h)?,
        };
        Ok((&x + y)?)
    }

    fn head(&self, weights: &BlockWeights, x: &Tensor) -> Result<Tensor> {
        let h = self.norm(x, weights, Role::OutputNorm)?;
        weights.get(Role::Output)?.matmul_t(&h)
    }
}
