//! Attention on the CPU, one query row at a time: the row at position `p` against keys
//! `0..=p` (or the last `window` of them) only, with one fixed order of arithmetic. A
//! position's values then depend on nothing but the tokens up to it — not on how many
//! tokens its pass holds, nor on where the pass ends — so a prompt scored, prefilled in
//! chunks of any size, or decoded token by token gives the same bits at every position.
//!
//! Every row takes the arithmetic of the CUDA decode kernels ([`attend_one`]), so a CPU
//! decode step also has the bits of the fused path's composition. Candle's matrix products
//! (the `gemm` crate), used before, pick their kernels and blocking by the matrices' sizes: a pass of 4 tokens and one of 13 computed position 2's scores in
//! another order, and after 27 layers of 8-bit activation quantization (which turns a
//! last-bit difference into a whole quantization step) SmolLM2's log-probability of the
//! next token differed by 0.04 nats (issue 29; `tests/generation.rs`).

use crate::cpu::exact::layout::ATTENTION_CHUNK;
use crate::cpu::kv_rows::with_host_kv;
use crate::{Result, StreamError};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// `Σ a·b` in eight interleaved partial sums combined in a fixed tree (the compiler keeps
/// the lanes in one vector register; the order never depends on the caller).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_tail) = a.split_at(a.len() / 8 * 8);
    let (b8, b_tail) = b.split_at(a8.len().min(b.len()));
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail
}

/// Softmax attention of one query head `q` (`d` values) over the keys `keys` (positions,
/// ascending) as the CUDA decode kernels compute it: each run of [`ATTENTION_CHUNK`] keys
/// from the first gives a partial (max score, sum of exponentials, weighted sum of values,
/// updated key by key), then the partials are combined (kernels `decode_attention_partial`
/// and `decode_attention_combine`; [`crate::executor::fused::reference`]). Writes `out`.
pub(crate) fn attend_one<'a>(
    q: &[f32],
    keys: std::ops::RangeInclusive<usize>,
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    out: &mut [f32],
) {
    let d = q.len();
    let (first, last) = (*keys.start(), *keys.end());
    let mut partials = Vec::new();
    for start in (first..=last).step_by(ATTENTION_CHUNK) {
        let mut m = f32::NEG_INFINITY;
        let mut l = 0f32;
        let mut acc = vec![0f32; d];
        for t in start..(start + ATTENTION_CHUNK).min(last + 1) {
            let s = dot(q, key(t)) * scale;
            let m_new = m.max(s);
            let p = (s - m_new).exp();
            if m_new == m {
                // The running maximum held: the correction is exp(0) = 1 and multiplying by
                // it changes nothing, so skipping it gives the same bits (half the `exp`s of
                // a long context, where the maximum rarely moves).
                l += p;
                for (a, v) in acc.iter_mut().zip(value(t)) {
                    *a += p * v;
                }
            } else {
                let correction = (m - m_new).exp();
                l = l * correction + p;
                for (a, v) in acc.iter_mut().zip(value(t)) {
                    *a = *a * correction + p * v;
                }
            }
            m = m_new;
        }
        partials.push((m, l, acc));
    }
    let m_max = partials.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = partials.iter().map(|(m, l, _)| l * (m - m_max).exp()).sum();
    for (i, o) in out.iter_mut().enumerate() {
        *o = partials.iter().map(|(m, _, acc)| acc[i] * (m - m_max).exp()).sum::<f32>() / total;
    }
}

/// Softmax attention of `q` (`[batch, heads, seq, d]`, query `s` at position `pos + s`)
/// over `k` and `v` (`[batch, kv_heads, total, d]`, key `j` at position `j`), scores
/// scaled by `scale`, each query seeing the keys up to its own position (the last
/// `window` of them, where given). Query head `h` reads KV head `h / (heads / kv_heads)`.
/// Returns `[batch, seq, heads · d]`, f32, on the CPU.
pub(crate) fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    pos: usize,
    scale: f32,
    window: Option<usize>,
) -> Result<Tensor> {
    let (b, heads, seq, d) = q.dims4()?;
    let (_, kv_heads, total, _) = k.dims4()?;
    if d == 0 {
        return Err(StreamError::InvalidParameter { name: "head_dim", reason: "attention heads of 0 values".into() });
    }
    let group = heads / kv_heads.max(1);
    let q = q.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; b * seq * heads * d];
    // The cache's keys and values read in place (no copy of the whole context per layer).
    let (k, v) = (k.contiguous()?, v.contiguous()?);
    with_host_kv(&k, |k, _| {
        with_host_kv(&v, |v, _| {
            // Rows stored in f16 or q8_0 are widened once for all the rows and heads that
            // read them.
            let (k, v) = (k.to_f32(), v.to_f32());
            // One task per (batch, position, head): a decode step's heads split over the
            // threads too (one task per position left one thread working).
            out.par_chunks_mut(d).enumerate().for_each(|(task, out)| {
                let (row, h) = (task / heads, task % heads);
                let (batch, s) = (row / seq, row % seq);
                let p = pos + s;
                let last = p.min(total.saturating_sub(1));
                let first = window.map_or(0, |w| (p + 1).saturating_sub(w.max(1))).min(last);
                let kv = h / group.max(1);
                let q_row = &q[((batch * heads + h) * seq + s) * d..][..d];
                let base = (batch * kv_heads + kv) * total;
                attend_one(
                    q_row,
                    first..=last,
                    |j| &k[(base + j) * d..][..d],
                    |j| &v[(base + j) * d..][..d],
                    scale,
                    out,
                );
            })
        })
    })??;
    Ok(Tensor::from_vec(out, (b, seq, heads * d), &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::attend;
    use candle_core::{Device, Tensor};

    fn random(shape: (usize, usize, usize, usize), seed: u32) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let values: Vec<f32> = (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn rows_are_the_same_bits_in_any_pass_and_match_the_formula() {
        let (heads, kv, d, total) = (4, 2, 20, 9);
        let q = random((1, heads, total, d), 1);
        let k = random((1, kv, total, d), 2);
        let v = random((1, kv, total, d), 3);
        let whole = attend(&q, &k, &v, 0, 0.3, None).unwrap().to_vec3::<f32>().unwrap();
        // Query `at` alone with keys `first..first + keys` (its position among them: the last).
        let alone = |at: usize, first: usize, keys: usize| -> Vec<f32> {
            let (q, k, v) =
                (q.narrow(2, at, 1).unwrap(), k.narrow(2, first, keys).unwrap(), v.narrow(2, first, keys).unwrap());
            attend(&q, &k, &v, keys - 1, 0.3, None).unwrap().to_vec3::<f32>().unwrap()[0][0].clone()
        };
        // Position 6 alone, with only its keys: the same bits.
        let one = alone(6, 0, 7);
        assert_eq!(one, whole[0][6]);
        // Against the softmax formula in f64, head 3 (KV head 1) at position 4.
        let q4 = q.get(0).unwrap().get(3).unwrap().get(4).unwrap().to_vec1::<f32>().unwrap();
        let keys = k.get(0).unwrap().get(1).unwrap().to_vec2::<f32>().unwrap();
        let values = v.get(0).unwrap().get(1).unwrap().to_vec2::<f32>().unwrap();
        let scores: Vec<f64> = (0..=4)
            .map(|j| 0.3 * q4.iter().zip(&keys[j]).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum::<f64>())
            .collect();
        let max = scores.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let z: f64 = e.iter().sum();
        for c in 0..d {
            let expected: f64 = (0..=4).map(|j| e[j] / z * f64::from(values[j][c])).sum();
            let ours = f64::from(whole[0][4][3 * d + c]);
            assert!((ours - expected).abs() < 1e-5, "column {c}: {ours} vs {expected}");
        }
        // A window of 3: position 8 sees keys 6, 7 and 8 only.
        let windowed = attend(&q, &k, &v, 0, 0.3, Some(3)).unwrap().to_vec3::<f32>().unwrap();
        let last = alone(8, 6, 3);
        assert_eq!(last, windowed[0][8]);
    }
}
