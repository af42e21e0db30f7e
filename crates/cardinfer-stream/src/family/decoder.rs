//! The generic decoder block: pre-norm attention with RoPE and GQA, then a SwiGLU MLP.
//! Qwen2's q/k/v biases and Qwen3's per-head q/k norms are switched on by the spec.

use crate::kv_cache::KvSlot;
use crate::layer_stream::LayerStream;
use crate::names::Role;
use crate::rope::Rope;
use crate::weights::BlockWeights;
use crate::Result;
use candle_core::{Device, Tensor};
use std::sync::Mutex;
use candle_nn::ops::{rms_norm, silu, softmax_last_dim};
use cardinfer_core::ModelSpec;

/// Llama / Mistral / Qwen2 / Qwen3 as one parameterized family.
#[derive(Debug)]
pub struct Decoder {
    spec: ModelSpec,
    rope: Rope,
    /// RoPE tables of the current pass, per device: every layer of a pass asks for the
    /// same positions, so they are built and copied to the device once per pass instead
    /// of once per layer (one host→device copy pair per token instead of one per layer).
    rope_tables: Mutex<Vec<RopeTables>>,
}

/// cos/sin for positions `pos..pos + len` on one device.
#[derive(Debug)]
struct RopeTables {
    pos: usize,
    len: usize,
    device: Device,
    cos: Tensor,
    sin: Tensor,
}

impl Clone for Decoder {
    fn clone(&self) -> Self {
        Self { spec: self.spec.clone(), rope: self.rope.clone(), rope_tables: Mutex::new(Vec::new()) }
    }
}

/// `CARDINFER_NO_ROPE_CACHE=1` rebuilds the RoPE tables in every layer (the plain path,
/// for debugging and before/after measurements).
fn rope_cache_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("CARDINFER_NO_ROPE_CACHE").is_none())
}

impl Decoder {
    /// A decoder for `spec`, with RoPE frequency divisors from the file if it has them.
    pub fn new(spec: ModelSpec, rope_freq_factors: Option<Vec<f32>>) -> Self {
        let rope = Rope::new(&spec, rope_freq_factors);
        Self { spec, rope, rope_tables: Mutex::new(Vec::new()) }
    }

    /// The RoPE tables for `pos..pos + len` on `device`, from the pass cache when the
    /// previous layer asked for the same.
    fn rope_tables(&self, pos: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        if !rope_cache_enabled() {
            return self.rope.tables(pos, len, device);
        }
        let mut cache = self.rope_tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.iter().find(|t| t.pos == pos && t.len == len && t.device.same_device(device)) {
            return Ok((t.cos.clone(), t.sin.clone()));
        }
        let (cos, sin) = self.rope.tables(pos, len, device)?;
        // One entry per device (a hybrid pass uses two).
        cache.retain(|t| !t.device.same_device(device));
        cache.push(RopeTables { pos, len, device: device.clone(), cos: cos.clone(), sin: sin.clone() });
        Ok((cos, sin))
    }

    fn norm(&self, x: &Tensor, weights: &BlockWeights, role: Role) -> Result<Tensor> {
        Ok(rms_norm(&x.contiguous()?, weights.get(role)?.dense()?, self.spec.rms_norm_eps as f32)?)
    }

    fn project(&self, x: &Tensor, weights: &BlockWeights, role: Role, bias: Option<Role>) -> Result<Tensor> {
        let y = weights.get(role)?.matmul_t(x)?;
        match bias {
            Some(b) if weights.has(b) => Ok(y.broadcast_add(weights.get(b)?.dense()?)?),
            _ => Ok(y),
        }
    }

    /// `[b, seq, heads * d]` → `[b, heads, seq, d]`.
    fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        Ok(x.reshape((b, seq, heads, head_dim))?.transpose(1, 2)?.contiguous()?)
    }

    fn attention(&self, w: &BlockWeights, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor> {
        let s = &self.spec;
        let (b, seq, _) = x.dims3()?;
        let q = self.project(x, w, Role::AttnQ, Some(Role::AttnQBias))?;
        let k = self.project(x, w, Role::AttnK, Some(Role::AttnKBias))?;
        let v = self.project(x, w, Role::AttnV, Some(Role::AttnVBias))?;
        let mut q = Self::split_heads(&q, s.num_heads, s.head_dim)?;
        let mut k = Self::split_heads(&k, s.num_kv_heads, s.head_dim)?;
        let v = Self::split_heads(&v, s.num_kv_heads, s.head_dim)?;
        if s.qk_norm {
            q = self.norm(&q, w, Role::AttnQNorm)?;
            k = self.norm(&k, w, Role::AttnKNorm)?;
        }
        let (cos, sin) = self.rope_tables(pos, seq, x.device())?;
        let q = self.rope.apply(&q, &cos, &sin)?;
        let k = self.rope.apply(&k, &cos, &sin)?;
        let (k, v) = kv.append(&k, &v)?;
        let total = k.dim(2)?;

        // GQA: view the query heads of one KV head as extra rows, so no KV copy is made.
        let group = s.num_heads / s.num_kv_heads;
        let q = q.reshape((b, s.num_kv_heads, group * seq, s.head_dim))?;
        let scale = 1.0 / (s.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = if seq > 1 {
            let mask = causal_mask(group, seq, pos, total, x.device())?;
            scores.broadcast_add(&mask)?
        } else {
            scores
        };
        let probs = softmax_last_dim(&scores)?;
        let y = probs.matmul(&v)?; // [b, kv_heads, group * seq, d]
        let y = y.reshape((b, s.num_heads, seq, s.head_dim))?.transpose(1, 2)?.reshape((
            b,
            seq,
            s.num_heads * s.head_dim,
        ))?;
        self.project(&y, w, Role::AttnOutput, None)
    }

    fn mlp(&self, w: &BlockWeights, x: &Tensor) -> Result<Tensor> {
        let gate = silu(&self.project(x, w, Role::FfnGate, None)?)?;
        let up = self.project(x, w, Role::FfnUp, None)?;
        self.project(&(gate * up)?, w, Role::FfnDown, None)
    }
}

/// Additive mask `[group * seq, total]`: query row `r` (position `pos + r % seq`) sees keys
/// `0..=pos + r % seq`.
fn causal_mask(group: usize, seq: usize, pos: usize, total: usize, device: &Device) -> Result<Tensor> {
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
        weights.get(Role::TokenEmbedding)?.embedding(tokens)
    }

    fn block(&self, _layer: usize, weights: &BlockWeights, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor> {
        let h = self.norm(x, weights, Role::AttnNorm)?;
        let x = (x + self.attention(weights, &h, kv, pos)?)?;
        let h = self.norm(&x, weights, Role::FfnNorm)?;
        Ok((&x + self.mlp(weights, &h)?)?)
    }

    fn head(&self, weights: &BlockWeights, x: &Tensor) -> Result<Tensor> {
        let h = self.norm(x, weights, Role::OutputNorm)?;
        weights.get(Role::Output)?.matmul_t(&h)
    }
}

#[cfg(test)]
mod rope_cache_tests {
    use super::*;
    use cardinfer_core::{Family, RopeStyle};

    #[test]
    fn a_pass_builds_its_rope_tables_once_and_they_equal_fresh_ones() {
        let spec = ModelSpec {
            family: Family::Qwen3,
            vocab_size: 16,
            hidden_size: 32,
            intermediate_size: 32,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 16,
            rms_norm_eps: 1e-6,
            rope_theta: 1e4,
            rope_scaling: None,
            rope_style: RopeStyle::Half,
            context_length: 64,
            tie_word_embeddings: true,
            qkv_bias: false,
            qk_norm: true,
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        let decoder = Decoder::new(spec.clone(), None);
        let (cos, sin) = decoder.rope_tables(5, 3, &Device::Cpu).unwrap();
        let (cos2, _) = decoder.rope_tables(5, 3, &Device::Cpu).unwrap();
        let (fresh_cos, fresh_sin) = Rope::new(&spec, None).tables(5, 3, &Device::Cpu).unwrap();
        let v = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((v(&cos), v(&sin)), (v(&fresh_cos), v(&fresh_sin)));
        assert_eq!(v(&cos2), v(&cos));
        assert_eq!(decoder.rope_tables.lock().unwrap().len(), 1);
        // The next position replaces the entry of that device.
        decoder.rope_tables(8, 1, &Device::Cpu).unwrap();
        let cache = decoder.rope_tables.lock().unwrap();
        assert_eq!((cache.len(), cache[0].pos, cache[0].len), (1, 8, 1));
    }
}
