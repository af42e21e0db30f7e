//! CPU reference implementations of the fused decode kernels (`kernels/decode.cu`), one
//! function per kernel, with the same sequence of operations. Arithmetic follows Candle's
//! CPU kernels (the norm divides by the root mean square, sums run in Candle's order),
//! so a decode step composed of these functions reproduces the plain CPU path bit for
//! bit, which `tests/fused_reference.rs` checks on a real model and the unit tests on
//! tiny ones: the composition the CUDA path records is tested without a GPU. The CPU
//! twins that give the CUDA kernels' own bits are in [`crate::cpu::exact`].

// `ATTENTION_CHUNK` is the tests' (`fused/tests.rs`) and the developer tools'.
#[allow(unused_imports)]
pub use crate::cpu::exact::layout::{AttentionShape, Rotation, ATTENTION_CHUNK};

/// `x += delta` (when given), then `out = x / rms(x) * weight`.
/// Kernel `add_rms_norm`: the residual add of the previous sub-block fused with the next norm.
pub fn add_rms_norm(x: &mut [f32], delta: Option<&[f32]>, weight: &[f32], eps: f32, out: &mut [f32]) {
    if let Some(delta) = delta {
        x.iter_mut().zip(delta).for_each(|(x, d)| *x += d);
    }
    rms_norm(x, weight, eps, out);
}

/// `out = x / sqrt(mean(x²) + eps) * weight`, as Candle's CPU `rms_norm`.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f32 = x.iter().map(|v| v * v).sum();
    let rms = (sum / x.len() as f32 + eps).sqrt();
    for ((o, x), w) in out.iter_mut().zip(x).zip(weight) {
        *o = x / rms * w;
    }
}

/// One head of q, k or v: `+ bias`, per-head RMS norm, rotation — each when given.
/// Kernel `qk_norm_rope_append` (one CUDA block per head; k and v heads are written
/// straight into the KV buffers at the new position).
pub fn head_norm_rope(
    src: &[f32],
    bias: Option<&[f32]>,
    norm: Option<(&[f32], f32)>,
    rotation: Option<Rotation<'_>>,
    dst: &mut [f32],
) {
    dst.copy_from_slice(src);
    if let Some(bias) = bias {
        dst.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
    }
    if let Some((weight, eps)) = norm {
        let x = dst.to_vec();
        rms_norm(&x, weight, eps, dst);
    }
    if let Some(r) = rotation {
        for i in 0..dst.len() / 2 {
            let (a, b) = r.pair(i, dst.len());
            let (xa, xb) = (dst[a], dst[b]);
            dst[a] = xa * r.cos[i] - xb * r.sin[i];
            dst[b] = xb * r.cos[i] + xa * r.sin[i];
        }
    }
}

/// Softmax attention of one query position over keys `0..len`, as the CUDA kernels do it:
/// each chunk of [`ATTENTION_CHUNK`] keys gives a partial (max score, sum of exponentials,
/// weighted sum of values), then the partials are combined (kernels
/// `decode_attention_partial` and `decode_attention_combine`). `out` is `[heads, head_dim]`.
pub fn decode_attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    shape: AttentionShape,
    len: usize,
    out: &mut [f32],
) {
    let scale = 1.0 / (shape.head_dim as f32).sqrt();
    decode_attention_in_window(q, k_cache, v_cache, shape, len, (scale, None), out);
}

/// [`decode_attention`] with the scores' scale given and, on a sliding-window layer
/// (Gemma 3), only the last `window` keys: `scope` is `(scale, window)`.
pub fn decode_attention_in_window(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    shape: AttentionShape,
    len: usize,
    scope: (f32, Option<usize>),
    out: &mut [f32],
) {
    let AttentionShape { heads, kv_heads, head_dim: d, capacity } = shape;
    let (scale, window) = scope;
    let first = window.map_or(0, |w| len.saturating_sub(w));
    let group = heads / kv_heads;
    for h in 0..heads {
        let base = (h / group) * capacity;
        crate::cpu::attention::attend_one(
            &q[h * d..(h + 1) * d],
            first..=len.saturating_sub(1),
            |t| &k_cache[(base + t) * d..][..d],
            |t| &v_cache[(base + t) * d..][..d],
            scale,
            &mut out[h * d..(h + 1) * d],
        );
    }
}

/// `out = silu(gate) · up`. Kernel `silu_mul`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Kernel `gelu_mul` (Gemma 3): `out = gelu(gate) · up` with GeLU's tanh form, the
/// exact twin's arithmetic.
pub fn gelu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    crate::cpu::exact::kernels::gelu_mul(gate, up, out)
}

/// One decoder block for one new token, composed of the functions above in the order the
/// CUDA path launches its kernels: `x` (`[hidden]`) becomes the block's output, the new
/// key and value are written into the slot's preallocated buffers and committed. The
/// CUDA path defers the final residual add into the next block's `add_rms_norm`; here it
/// is done at the end, which is the same arithmetic. Gemma 3's blocks add the norms of
/// the attention and MLP outputs, GeLU, their own RoPE and window on local layers.
pub fn decode_block(
    decoder: &crate::model::family::Decoder,
    weights: &crate::model::weights::BlockWeights,
    x: &mut [f32],
    kv: &mut crate::model::kv_cache::KvSlot,
) -> crate::Result<()> {
    use crate::model::layer_stream::LayerStream;
    use crate::model::names::Role;
    use candle_core::{Device, Tensor};
    let spec = decoder.spec();
    let (d, heads, kv_heads) = (spec.head_dim, spec.num_heads, spec.num_kv_heads);
    let eps = spec.rms_norm_eps as f32;
    let pos = kv.len();
    let layer = match weights.block {
        cardinfer_core::BlockId::Layer(i) => i,
        _ => 0,
    };
    let vector = |role: Role| -> crate::Result<Option<Vec<f32>>> {
        match weights.has(role) {
            true => Ok(Some(weights.get(role)?.dense()?.flatten_all()?.to_vec1::<f32>()?)),
            false => Ok(None),
        }
    };
    // Norm weights as the kernels multiply by them (Gemma's stored `w` → `1 + w`).
    let norm_vector = |role: Role| -> crate::Result<Option<Vec<f32>>> {
        let plus = if decoder.norm_plus_one() { 1.0 } else { 0.0 };
        Ok(vector(role)?.map(|w| w.into_iter().map(|w| w + plus).collect()))
    };
    let matvec = |role: Role, input: &[f32]| -> crate::Result<Vec<f32>> {
        let x = Tensor::from_slice(input, (1, 1, input.len()), &Device::Cpu)?;
        Ok(weights.get(role)?.matmul_t(&x)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let norm = |role| -> crate::Result<Vec<f32>> {
        norm_vector(role)?
            .ok_or(crate::StreamError::InvalidParameter { name: "weights", reason: format!("no {role:?}") })
    };

    let mut h = vec![0f32; spec.hidden_size];
    add_rms_norm(x, None, &norm(Role::AttnNorm)?, eps, &mut h);
    let (q, k, v) = (matvec(Role::AttnQ, &h)?, matvec(Role::AttnK, &h)?, matvec(Role::AttnV, &h)?);
    let (q_bias, k_bias, v_bias) = (vector(Role::AttnQBias)?, vector(Role::AttnKBias)?, vector(Role::AttnVBias)?);
    let (q_norm, k_norm) =
        if spec.qk_norm { (norm_vector(Role::AttnQNorm)?, norm_vector(Role::AttnKNorm)?) } else { (None, None) };
    let (cos, sin) = decoder.layer_rope(layer).tables(pos, 1, &Device::Cpu)?;
    let (cos, sin) = (cos.flatten_all()?.to_vec1::<f32>()?, sin.flatten_all()?.to_vec1::<f32>()?);
    let rotation = Rotation { cos: &cos, sin: &sin, style: spec.rope_style };
    let head = |i: usize, all: &[f32], bias: &Option<Vec<f32>>, norm: &Option<Vec<f32>>, rotate: bool| {
        let mut out = vec![0f32; d];
        let slice = |v: &[f32]| v[i * d..(i + 1) * d].to_vec();
        let bias = bias.as_deref().map(slice);
        let norm = norm.as_deref().map(|w| (w, eps));
        head_norm_rope(&all[i * d..(i + 1) * d], bias.as_deref(), norm, rotate.then_some(rotation), &mut out);
        out
    };
    let q_rot: Vec<f32> = (0..heads).flat_map(|i| head(i, &q, &q_bias, &q_norm, true)).collect();
    let k_new: Vec<f32> = (0..kv_heads).flat_map(|i| head(i, &k, &k_bias, &k_norm, true)).collect();
    let v_new: Vec<f32> = (0..kv_heads).flat_map(|i| head(i, &v, &v_bias, &None, false)).collect();

    // The new position goes into the preallocated buffers (rounded to their type), as the
    // kernel writes it; attention reads the stored values back.
    let (k_buf, v_buf) = kv
        .buffers()
        .ok_or(crate::StreamError::InvalidParameter { name: "kv", reason: "no preallocated buffers".into() })?;
    let kv_type = kv.kv_type();
    let stored = |new: Vec<f32>| {
        crate::model::kv_cache::stored(kv_type, &Tensor::from_vec(new, (1, kv_heads, 1, d), &Device::Cpu)?)
    };
    k_buf.slice_set(&stored(k_new)?, 2, pos)?;
    v_buf.slice_set(&stored(v_new)?, 2, pos)?;
    let capacity = kv.capacity();
    let read = |t: &Tensor| -> crate::Result<Vec<f32>> {
        Ok(crate::model::kv_cache::widened(kv_type, t)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (k_all, v_all) = (read(k_buf)?, read(v_buf)?);
    kv.commit(1)?;

    let mut attn = vec![0f32; heads * d];
    let shape = AttentionShape { heads, kv_heads, head_dim: d, capacity };
    let scope = (decoder.attention_scale_f32(), spec.sliding_window(layer));
    decode_attention_in_window(&q_rot, &k_all, &v_all, shape, pos + 1, scope, &mut attn);
    let gemma = spec.gemma.is_some();
    let mut o = matvec(Role::AttnOutput, &attn)?;
    if gemma {
        o = post_norm(&o, &norm(Role::PostAttnNorm)?, eps);
    }
    add_rms_norm(x, Some(&o), &norm(Role::FfnNorm)?, eps, &mut h);
    let (gate, up) = (matvec(Role::FfnGate, &h)?, matvec(Role::FfnUp, &h)?);
    let mut act = vec![0f32; gate.len()];
    match gemma {
        true => gelu_mul(&gate, &up, &mut act),
        false => silu_mul(&gate, &up, &mut act),
    }
    let mut down = matvec(Role::FfnDown, &act)?;
    if gemma {
        down = post_norm(&down, &norm(Role::PostFfnNorm)?, eps);
    }
    x.iter_mut().zip(&down).for_each(|(x, d)| *x += d);
    Ok(())
}

/// Gemma 3's norm of a sub-block's output before it is added (`add_rms_norm_exact` in
/// place, without a residual).
fn post_norm(y: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; y.len()];
    rms_norm(y, weight, eps, &mut out);
    out
}

/// One row of prefill attention scores → probabilities: `softmax(row · scale)` over keys
/// `0..=visible`, zero after. Kernel `scale_mask_softmax` ([`crate::cuda::fused_ops::masked_softmax`]).
pub fn scale_mask_softmax(row: &[f32], visible: usize, scale: f32) -> Vec<f32> {
    let scaled: Vec<f32> =
        row.iter().enumerate().map(|(j, s)| if j <= visible { s * scale } else { f32::NEG_INFINITY }).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = scaled.iter().map(|s| (s - max).exp()).collect();
    let inv = 1.0 / exp.iter().sum::<f32>();
    exp.into_iter().map(|e| e * inv).collect()
}
