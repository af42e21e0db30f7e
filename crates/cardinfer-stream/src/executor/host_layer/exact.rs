//! One decoder layer for one new token on the CPU, with the bits of the CUDA path's fused
//! layer (`FusedDecoder::enqueue_layer`): the kernels' CPU twins in its launch order.

use super::stages::StageClock;
use crate::cpu::exact::kernels::{
    add_rms_norm, decode_attention_rows, gelu_mul, head_norm_rope, silu_mul, AttentionShape, Rotation,
};
use crate::cpu::exact::mmvq;
use crate::cpu::kv_rows::with_host_kv;
use crate::model::family::Decoder;
use crate::model::kv_cache::stored;
use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::names::Role;
use crate::model::weights::{BlockWeights, Weight};
use crate::{Result, StreamError};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use cardinfer_core::ModelSpec;

/// Whether [`decode_layer`] computes a layer of `spec` with `weights`: the head layout the
/// kernels take, Q4_K/Q6_K matrices and f32 norms in host memory.
pub fn supports(spec: &ModelSpec, weights: &BlockWeights) -> bool {
    let d = spec.head_dim;
    let heads_ok = d.is_multiple_of(64)
        && d <= 256
        && spec.num_kv_heads > 0
        && spec.num_heads.is_multiple_of(spec.num_kv_heads)
        && spec.hidden_size.is_multiple_of(256)
        && spec.intermediate_size.is_multiple_of(256)
        && (spec.num_heads * d).is_multiple_of(256);
    let matrix_ok =
        |role| matches!(weights.get(role), Ok(Weight::Quantized(q)) if mmvq::covers(q.dtype()) && q.device().is_cpu());
    let vector_ok = |role| match weights.get(role) {
        Ok(Weight::Dense(t)) => t.dtype() == candle_core::DType::F32 && t.device().is_cpu(),
        _ => false,
    };
    let optional_ok = |role| !weights.has(role) || vector_ok(role);
    // Gemma 3's norms of the attention and MLP outputs.
    let gemma_ok = spec.gemma.is_none() || [Role::PostAttnNorm, Role::PostFfnNorm].into_iter().all(vector_ok);
    gemma_ok
        && heads_ok
        && [Role::AttnQ, Role::AttnK, Role::AttnV, Role::AttnOutput, Role::FfnGate, Role::FfnUp, Role::FfnDown]
            .into_iter()
            .all(matrix_ok)
        && [Role::AttnNorm, Role::FfnNorm].into_iter().all(vector_ok)
        && [Role::AttnQBias, Role::AttnKBias, Role::AttnVBias, Role::AttnQNorm, Role::AttnKNorm]
            .into_iter()
            .all(optional_ok)
}

/// Layer `layer` of `decoder` (its weights `weights`) for the token at position
/// `kv.len()` with residual input `x` (`[1, 1, hidden]` f32 on the CPU): returns the
/// layer's output and appends the token's key and value to `kv` (moved to host memory
/// first). `None`, with nothing changed, where [`supports`] says no. Gemma 3's layers add
/// `1 + w` norms, the norms of the attention and MLP outputs, GeLU, the score scale, their
/// own RoPE and, on sliding-window layers, the window — as the fused kernels take them.
pub fn decode_layer(
    decoder: &Decoder,
    layer: usize,
    weights: &BlockWeights,
    x: &Tensor,
    kv: &mut KvSlot,
) -> Result<Option<Tensor>> {
    let spec = decoder.spec();
    if !supports(spec, weights) {
        return Ok(None);
    }
    let (d, heads, kv_heads) = (spec.head_dim, spec.num_heads, spec.num_kv_heads);
    let eps = spec.rms_norm_eps as f32;
    let pos = kv.len();
    let rope = decoder.layer_rope(layer);
    let plus_one = decoder.norm_plus_one();
    // A norm's weights, `1 + w` where the file stores Gemma's `w` (`norm_weight` of the kernels).
    let vector = |role: Role| -> Result<Option<Vec<f32>>> {
        match weights.has(role) {
            true => {
                let mut w = weights.get(role)?.dense()?.flatten_all()?.to_vec1::<f32>()?;
                if plus_one && role.is_norm() {
                    w.iter_mut().for_each(|w| *w += 1.0);
                }
                Ok(Some(w))
            }
            false => Ok(None),
        }
    };
    let required = |role: Role| -> Result<Vec<f32>> {
        vector(role)?.ok_or(StreamError::InvalidParameter { name: "weights", reason: format!("no {role:?}") })
    };
    let mut stages = StageClock::start();
    let mut x = x.flatten_all()?.to_vec1::<f32>()?;
    let mut h = vec![0f32; spec.hidden_size];
    add_rms_norm(&mut x, None, &required(Role::AttnNorm)?, eps, &mut h);
    stages.mark("attn_norm");
    let [q, k, v] = products(weights, [Role::AttnQ, Role::AttnK, Role::AttnV], &h)?;
    stages.mark("qkv");
    let (q_bias, k_bias, v_bias) = (vector(Role::AttnQBias)?, vector(Role::AttnKBias)?, vector(Role::AttnVBias)?);
    let (q_norm, k_norm) =
        if spec.qk_norm { (vector(Role::AttnQNorm)?, vector(Role::AttnKNorm)?) } else { (None, None) };
    stages.mark("head_norms");
    let (cos, sin) = rope.tables(pos, 1, &Device::Cpu)?;
    let (cos, sin) = (cos.flatten_all()?.to_vec1::<f32>()?, sin.flatten_all()?.to_vec1::<f32>()?);
    stages.mark("rope");
    let rotation = Rotation { cos: &cos, sin: &sin, style: spec.rope_style };
    let heads_of = |all: &[f32], count: usize, bias: &Option<Vec<f32>>, norm: &Option<Vec<f32>>, rotate: bool| {
        let mut out = vec![0f32; count * d];
        for (i, dst) in out.chunks_exact_mut(d).enumerate() {
            let bias = bias.as_deref().map(|b| &b[i * d..(i + 1) * d]);
            let norm = norm.as_deref().map(|w| (w, eps));
            head_norm_rope(&all[i * d..(i + 1) * d], bias, norm, rotate.then_some(rotation), dst);
        }
        out
    };
    let q_rot = heads_of(&q, heads, &q_bias, &q_norm, true);
    stages.mark("q_heads");
    let k_new = heads_of(&k, kv_heads, &k_bias, &k_norm, true);
    let v_new = heads_of(&v, kv_heads, &v_bias, &None, false);

    stages.mark("kv_heads");
    let mut attn = vec![0f32; heads * d];
    let (keys, values) = append(kv, k_new, v_new, kv_heads, d)?;
    stages.mark("append");
    with_host_kv(&keys, |k_all, capacity| {
        with_host_kv(&values, |v_all, _| {
            let shape = AttentionShape { heads, kv_heads, head_dim: d, capacity };
            let scope = (decoder.attention_scale_f32(), spec.sliding_window(layer));
            decode_attention_rows(&q_rot, (k_all, v_all), shape, pos + 1, scope, &mut attn);
        })
    })??;
    stages.mark("attention");
    let [mut o] = products(weights, [Role::AttnOutput], &attn)?;
    stages.mark("o");
    if let Some(w) = vector(Role::PostAttnNorm)?.filter(|_| spec.gemma.is_some()) {
        o = post_norm(o, &w, eps);
    }
    add_rms_norm(&mut x, Some(&o), &required(Role::FfnNorm)?, eps, &mut h);
    stages.mark("ffn_norm");
    let [gate, up] = products(weights, [Role::FfnGate, Role::FfnUp], &h)?;
    stages.mark("gate_up");
    let mut act = vec![0f32; gate.len()];
    match spec.gemma.is_some() {
        true => gelu_mul(&gate, &up, &mut act),
        false => silu_mul(&gate, &up, &mut act),
    }
    stages.mark("activation");
    let [mut down] = products(weights, [Role::FfnDown], &act)?;
    stages.mark("down");
    if let Some(w) = vector(Role::PostFfnNorm)?.filter(|_| spec.gemma.is_some()) {
        down = post_norm(down, &w, eps);
    }
    x.iter_mut().zip(&down).for_each(|(x, d)| *x += d);
    stages.print();
    Ok(Some(Tensor::from_vec(x, (1, 1, spec.hidden_size), &Device::Cpu)?))
}

/// `norm(v) · w` of a sublayer's output, as the kernels apply it in place.
fn post_norm(mut v: Vec<f32>, w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    add_rms_norm(&mut v, None, w, eps, &mut out);
    out
}

/// `input · Wᵀ` for the matrices of `roles` (one job of the thread pool).
fn products<const N: usize>(weights: &BlockWeights, roles: [Role; N], input: &[f32]) -> Result<[Vec<f32>; N]> {
    let not_layer = |reason: String| StreamError::InvalidParameter { name: "weights", reason };
    let mut ws: Vec<&QTensor> = Vec::with_capacity(N);
    for role in roles {
        match weights.get(role)? {
            Weight::Quantized(q) => ws.push(q),
            _ => return Err(not_layer(format!("{role:?} is not quantized"))),
        }
    }
    let ys = mmvq::products(&ws, input)?.ok_or_else(|| not_layer(format!("{roles:?}: not the layer's shapes")))?;
    ys.try_into().map_err(|_| not_layer(format!("{roles:?}: another count of products")))
}

/// Appends the new key and value (`[kv_heads, head_dim]` each) to `kv` in host memory and
/// returns the key and value tensors `[1, kv_heads, capacity, head_dim]` attention reads
/// (the preallocated buffers, or the grown cache).
fn append(kv: &mut KvSlot, k: Vec<f32>, v: Vec<f32>, kv_heads: usize, d: usize) -> Result<(Tensor, Tensor)> {
    kv.move_to(&Device::Cpu)?;
    let k = Tensor::from_vec(k, (1, kv_heads, 1, d), &Device::Cpu)?;
    let v = Tensor::from_vec(v, (1, kv_heads, 1, d), &Device::Cpu)?;
    if let Some((kb, vb)) = kv.buffers() {
        // Stored as the cache's type, as the kernels write it.
        let kv_type = kv.kv_type();
        let (k, v) = (stored(kv_type, &k)?, stored(kv_type, &v)?);
        let (kb, vb) = (kb.clone(), vb.clone());
        if kv.len() < kv.capacity() {
            kb.slice_set(&k, 2, kv.len())?;
            vb.slice_set(&v, 2, kv.len())?;
        }
        kv.commit(1)?;
        return Ok((kb, vb));
    }
    kv.append_stored(&k, &v)
}
