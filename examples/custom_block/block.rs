//! A pre-norm attention + SwiGLU block written with plain Candle ops, as a user of the
//! library would write their own: weights come from the slot through `BlockVars`, the KV
//! state is handed in. It computes exactly what the built-in decoder computes (same ops
//! in the same order), so streaming it must reproduce the built-in model bit for bit.

use candle_core::{DType, Module, Tensor};
use candle_nn::ops::{rms_norm, silu, softmax_last_dim};
use cardinfer_core::ModelSpec;
use cardinfer_stream::model::block_adapter::{BlockVars, StreamableBlock, StreamedLinear};
use cardinfer_stream::model::rope::Rope;
use cardinfer_stream::{KvSlot, Result};

/// One attention + MLP layer of a Llama / Qwen-style model.
pub struct LlamaStyleBlock {
    spec: ModelSpec,
    rope: Rope,
    attn_norm: Tensor,
    q: StreamedLinear,
    k: StreamedLinear,
    v: StreamedLinear,
    qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    qk_norm: Option<(Tensor, Tensor)>,
    o: StreamedLinear,
    ffn_norm: Tensor,
    gate: StreamedLinear,
    up: StreamedLinear,
    down: StreamedLinear,
}

impl StreamableBlock for LlamaStyleBlock {
    fn load(vars: &BlockVars<'_>) -> Result<Self> {
        let spec = vars.spec().clone();
        let vb = vars.var_builder(DType::F32);
        let (h, q_dim, kv_dim, d) =
            (spec.hidden_size, spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim, spec.head_dim);
        let qkv_bias = match vars.contains("attn_q.bias") {
            true => {
                Some((vb.get(q_dim, "attn_q.bias")?, vb.get(kv_dim, "attn_k.bias")?, vb.get(kv_dim, "attn_v.bias")?))
            }
            false => None,
        };
        let qk_norm = match vars.contains("attn_q_norm.weight") {
            true => Some((vb.get(d, "attn_q_norm.weight")?, vb.get(d, "attn_k_norm.weight")?)),
            false => None,
        };
        Ok(Self {
            rope: vars.rope().clone(),
            attn_norm: vb.get(h, "attn_norm.weight")?,
            q: vars.linear("attn_q.weight")?,
            k: vars.linear("attn_k.weight")?,
            v: vars.linear("attn_v.weight")?,
            qkv_bias,
            qk_norm,
            o: vars.linear("attn_output.weight")?,
            ffn_norm: vb.get(h, "ffn_norm.weight")?,
            gate: vars.linear("ffn_gate.weight")?,
            up: vars.linear("ffn_up.weight")?,
            down: vars.linear("ffn_down.weight")?,
            spec,
        })
    }

    fn forward(&self, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor> {
        let eps = self.spec.rms_norm_eps as f32;
        let h = rms_norm(&x.contiguous()?, &self.attn_norm, eps)?;
        let x = (x + self.attention(&h, kv, pos)?)?;
        let h = rms_norm(&x.contiguous()?, &self.ffn_norm, eps)?;
        let mlp = self.down.forward(&(silu(&self.gate.forward(&h)?)? * self.up.forward(&h)?)?)?;
        Ok((&x + mlp)?)
    }
}

impl LlamaStyleBlock {
    fn attention(&self, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor> {
        let s = &self.spec;
        let (b, seq, _) = x.dims3()?;
        let (mut q, mut k, mut v) = (self.q.forward(x)?, self.k.forward(x)?, self.v.forward(x)?);
        if let Some((qb, kb, vb)) = &self.qkv_bias {
            (q, k, v) = (q.broadcast_add(qb)?, k.broadcast_add(kb)?, v.broadcast_add(vb)?);
        }
        let heads = |t: &Tensor, n: usize| t.reshape((b, seq, n, s.head_dim))?.transpose(1, 2)?.contiguous();
        let (mut q, mut k, v) = (heads(&q, s.num_heads)?, heads(&k, s.num_kv_heads)?, heads(&v, s.num_kv_heads)?);
        if let Some((qn, kn)) = &self.qk_norm {
            let eps = s.rms_norm_eps as f32;
            (q, k) = (rms_norm(&q.contiguous()?, qn, eps)?, rms_norm(&k.contiguous()?, kn, eps)?);
        }
        let (cos, sin) = self.rope.tables(pos, seq, x.device())?;
        let (q, k) = (self.rope.apply(&q, &cos, &sin)?, self.rope.apply(&k, &cos, &sin)?);
        let (k, v) = kv.append(&k, &v)?;
        let group = s.num_heads / s.num_kv_heads;
        let q = q.reshape((b, s.num_kv_heads, group * seq, s.head_dim))?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (s.head_dim as f64).sqrt()))?;
        let scores = match seq > 1 {
            true => scores.broadcast_add(&self.rope.causal_mask(group, seq, pos, k.dim(2)?, x.device())?)?,
            false => scores,
        };
        let y = softmax_last_dim(&scores)?.matmul(&v)?;
        let y = y.reshape((b, s.num_heads, seq, s.head_dim))?.transpose(1, 2)?.reshape((
            b,
            seq,
            s.num_heads * s.head_dim,
        ))?;
        Ok(self.o.forward(&y)?)
    }
}
