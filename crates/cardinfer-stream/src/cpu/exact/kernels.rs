//! CPU twins of the decode layer's kernels in `kernels/decode.cu`, operation for
//! operation: the same per-thread order, the same reductions, the same fused
//! multiply-adds (`f32::mul_add`), so each gives the kernel's bits.

use super::arith::{block_sum, exp, fast_cpu, inv_rms, warp_sum};
use crate::cpu::kv_rows::KvRows;

/// Keys per attention block (`ATTENTION_CHUNK` of the CUDA path).
pub use super::layout::ATTENTION_CHUNK;
pub use super::layout::{AttentionShape, Rotation};

/// Warps of the attention partial kernel (`ATTENTION_THREADS / 32`).
const ATTENTION_WARPS: usize = 4;

/// Runs `$imp(args)` compiled for AVX2 and FMA where the CPU has them ([`fast_cpu`]), as
/// is elsewhere: the same operations, so the same bits, faster.
macro_rules! dispatch {
    ($fast:ident, $imp:ident, ($($arg:ident: $ty:ty),*)) => {
        dispatch!($fast, $imp, ($($arg: $ty),*) -> ())
    };
    ($fast:ident, $imp:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty) => {{
        #[cfg(target_arch = "x86_64")]
        if fast_cpu() {
            #[target_feature(enable = "avx2,fma")]
            unsafe fn $fast($($arg: $ty),*) -> $ret {
                $imp($($arg),*)
            }
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { $fast($($arg),*) };
        }
        $imp($($arg),*)
    }};
}

/// Kernel `add_rms_norm_exact`: `x += delta` (when given), then `out = x · (1/rms) · w`.
/// One block of 32 threads under 1024 elements, 1024 from there on; thread `t` sums the
/// squares of elements `t, t + threads, …`.
pub fn add_rms_norm(x: &mut [f32], delta: Option<&[f32]>, weight: &[f32], eps: f32, out: &mut [f32]) {
    dispatch!(fast, add_rms_norm_impl, (x: &mut [f32], delta: Option<&[f32]>, weight: &[f32], eps: f32, out: &mut [f32]))
}

#[inline(always)]
fn add_rms_norm_impl(x: &mut [f32], delta: Option<&[f32]>, weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    let threads = if n < 1024 { 32 } else { 1024 };
    if let Some(delta) = delta {
        for (v, d) in x.iter_mut().zip(delta) {
            *v += d;
        }
    }
    let mut sums = [0f32; 1024];
    // Thread `t` adds elements `t, t + threads, …` in order: row after row of `threads`
    // (a loop the compiler vectorizes, where `i % threads` indexing was not).
    for row in x.chunks(threads) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s = v.mul_add(*v, *s);
        }
    }
    let scale = inv_rms(block_sum(&sums[..threads]), n, eps);
    for ((o, x), w) in out.iter_mut().zip(x.iter()).zip(weight) {
        *o = (scale * x) * w;
    }
}

/// Kernel `qk_norm_rope_append` for one head: `+ bias`, the per-head RMS norm (one warp,
/// lane `l` summing elements `l, l + 32, …`) and the rotation, each when given.
pub fn head_norm_rope(
    src: &[f32],
    bias: Option<&[f32]>,
    norm: Option<(&[f32], f32)>,
    rotation: Option<Rotation<'_>>,
    dst: &mut [f32],
) {
    dispatch!(fast, head_norm_rope_impl, (src: &[f32], bias: Option<&[f32]>, norm: Option<(&[f32], f32)>, rotation: Option<Rotation<'_>>, dst: &mut [f32]))
}

#[inline(always)]
fn head_norm_rope_impl(
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
        let mut lanes = [0f32; 32];
        for (col, v) in dst.iter().enumerate() {
            let s = &mut lanes[col % 32];
            *s = v.mul_add(*v, *s);
        }
        let scale = inv_rms(warp_sum(lanes), dst.len(), eps);
        dst.iter_mut().zip(weight).for_each(|(x, w)| *x = (scale * *x) * w);
    }
    if let Some(r) = rotation {
        for i in 0..dst.len() / 2 {
            let (a, b) = r.pair(i, dst.len());
            let (xa, xb, c, s) = (dst[a], dst[b], r.cos[i], r.sin[i]);
            dst[a] = xa.mul_add(c, -(xb * s));
            dst[b] = xa.mul_add(s, xb * c);
        }
    }
}

/// Kernels `decode_attention_partial` and `decode_attention_combine`: softmax attention
/// of one query position over keys `0..len`. `k_cache`/`v_cache` are `[kv_heads,
/// shape.capacity, head_dim]`; `out` is `[heads, head_dim]`.
///
/// The partials (one per head and [`ATTENTION_CHUNK`] keys, as the CUDA blocks compute
/// them) run as tasks of the host pool ([`crate::cpu::host_pool`]), one task per KV head and
/// chunk for all the query heads sharing that KV head: their keys and values are read
/// from memory once, not once per query head, and a long cache gives many more tasks than
/// threads. Each head's arithmetic is the kernel's whatever the grouping, so the bits are
/// too. Then one task per head combines its chunks.
pub fn decode_attention(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    shape: AttentionShape,
    len: usize,
    out: &mut [f32],
) {
    let scale = 1.0 / (shape.head_dim as f32).sqrt();
    decode_attention_in_window(q, k_cache, v_cache, shape, len, (scale, None), out)
}

/// [`decode_attention`] with the scores scaled by `scale` and, on a sliding-window layer
/// (`window` given), only the last `window` keys: chunks wholly before them are not
/// computed and the chunk holding the first is computed from it, as the kernels do.
pub fn decode_attention_in_window(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    shape: AttentionShape,
    len: usize,
    scope: (f32, Option<usize>),
    out: &mut [f32],
) {
    decode_attention_rows(q, (KvRows::F32(k_cache), KvRows::F32(v_cache)), shape, len, scope, out)
}

/// [`decode_attention_in_window`] over a cache stored as f32, f16 or q8_0 (each chunk of
/// keys and values widened to f32 once for its query heads).
pub(crate) fn decode_attention_rows(
    q: &[f32],
    (k_cache, v_cache): (KvRows<'_>, KvRows<'_>),
    shape: AttentionShape,
    len: usize,
    (scale, window): (f32, Option<usize>),
    out: &mut [f32],
) {
    let AttentionShape { heads, kv_heads, head_dim: d, capacity } = shape;
    let group = heads / kv_heads;
    let first = window.map_or(0, |w| len.saturating_sub(w));
    let skipped = first / ATTENTION_CHUNK;
    let chunks = len.div_ceil(ATTENTION_CHUNK) - skipped;
    // Per (KV head, chunk, query head of the group): the chunk's largest score and sum of
    // exponentials, and its weighted values.
    let mut stats = vec![(0f32, 0f32); kv_heads * chunks * group];
    let mut weighted = vec![0f32; kv_heads * chunks * group * d];
    let tasks: Vec<PartialTask> = stats
        .chunks_mut(group)
        .zip(weighted.chunks_mut(group * d))
        .enumerate()
        .map(|(index, (stats, weighted))| PartialTask { index, stats, weighted })
        .collect();
    crate::cpu::matvec::run_tasks(tasks, |PartialTask { index, stats, weighted }| {
        let (kv, c) = (*index / chunks, skipped + *index % chunks);
        let (start, end) = ((c * ATTENTION_CHUNK).max(first), ((c + 1) * ATTENTION_CHUNK).min(len));
        // The chunk's rows, from its first (whole q8_0 blocks: a row is whole blocks); rows
        // stored in f16 or q8_0 are widened once here for the group's query heads (the
        // warps take keys relative to `start`, so the shifted indices give the same bits).
        let base = c * ATTENTION_CHUNK;
        let rows = (kv * capacity + base) * d..(kv * capacity + end) * d;
        let (keys, values) = (k_cache.slice(rows.clone()), v_cache.slice(rows));
        let (keys, values) = (keys.to_f32(), values.to_f32());
        for (g, (stat, acc)) in stats.iter_mut().zip(weighted.chunks_mut(d)).enumerate() {
            let h = kv * group + g;
            *stat = head_chunk(&q[h * d..(h + 1) * d], &keys, &values, (start - base, end - base, scale), acc);
        }
    });
    let tasks: Vec<(usize, &mut [f32])> = out.chunks_mut(d).take(heads).enumerate().collect();
    crate::cpu::matvec::run_tasks(tasks, |(h, out)| {
        let (kv, g) = (*h / group, *h % group);
        let at = |c: usize| (kv * chunks + c) * group + g;
        let stats: Vec<(f32, f32)> = (0..chunks).map(|c| stats[at(c)]).collect();
        let parts: Vec<&[f32]> = (0..chunks).map(|c| &weighted[at(c) * d..(at(c) + 1) * d]).collect();
        combine(&stats, &parts, out);
    });
}

/// One task of [`decode_attention`]'s partials: KV head and chunk number `index` (`kv ×
/// chunks + chunk`), and where its query heads' `(max, sum)` and weighted values go.
struct PartialTask<'a> {
    index: usize,
    stats: &'a mut [(f32, f32)],
    weighted: &'a mut [f32],
}

/// One head's partial over keys `start..end` of `keys`/`values` (its KV head's rows),
/// scores scaled by `scale`.
fn head_chunk(q: &[f32], keys: &[f32], values: &[f32], range: (usize, usize, f32), acc: &mut [f32]) -> (f32, f32) {
    dispatch!(fast, head_chunk_impl, (q: &[f32], keys: &[f32], values: &[f32], range: (usize, usize, f32), acc: &mut [f32]) -> (f32, f32))
}

#[inline(always)]
fn head_chunk_impl(q: &[f32], keys: &[f32], values: &[f32], range: (usize, usize, f32), acc: &mut [f32]) -> (f32, f32) {
    let (start, end, scale) = range;
    chunk_partial(q, keys, values, start, end, scale, acc)
}

/// Kernel `decode_attention_combine` for one head: its chunks' `(max, sum)` and weighted
/// values, rescaled to the largest max, summed in chunk order, divided by the total.
fn combine(stats: &[(f32, f32)], parts: &[&[f32]], out: &mut [f32]) {
    dispatch!(fast, combine_impl, (stats: &[(f32, f32)], parts: &[&[f32]], out: &mut [f32]))
}

#[inline(always)]
fn combine_impl(stats: &[(f32, f32)], parts: &[&[f32]], out: &mut [f32]) {
    let max = stats.iter().fold(f32::NEG_INFINITY, |max, s| max.max(s.0));
    let weights: Vec<f32> = stats.iter().map(|s| exp(s.0 - max)).collect();
    let total = stats.iter().zip(&weights).fold(0f32, |total, (s, w)| s.1.mul_add(*w, total));
    for (i, o) in out.iter_mut().enumerate() {
        let a = parts.iter().zip(&weights).fold(0f32, |a, (part, w)| part[i].mul_add(*w, a));
        *o = a / total;
    }
}

/// The most warps' worth of state a block holds: 4 warps × 256 dimensions.
const MAX_HEAD_DIM: usize = 256;

/// One block of `decode_attention_partial`: 4 warps, warp `w` taking keys `start + w,
/// start + w + 4, …` with an online softmax, then the warps combined. Writes the weighted
/// values into `acc_out`; returns the largest score and the sum of exponentials.
#[inline(always)]
fn chunk_partial(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    end: usize,
    scale: f32,
    acc_out: &mut [f32],
) -> (f32, f32) {
    let d = q.len();
    let per = d / 32;
    let mut warp_max = [f32::NEG_INFINITY; ATTENTION_WARPS];
    let mut warp_sum_exp = [0f32; ATTENTION_WARPS];
    let mut warp_acc = [[0f32; MAX_HEAD_DIM]; ATTENTION_WARPS];
    for w in 0..ATTENTION_WARPS {
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        let acc = &mut warp_acc[w][..d];
        let mut t = start + w;
        while t < end {
            let (k, v) = (&keys[t * d..(t + 1) * d], &values[t * d..(t + 1) * d]);
            // Constant `per` for the usual head sizes, so `lane_dots` unrolls for them.
            let lanes = match per {
                2 => lane_dots(q, k, 2),
                4 => lane_dots(q, k, 4),
                8 => lane_dots(q, k, 8),
                _ => lane_dots(q, k, per),
            };
            let s = warp_sum(lanes) * scale;
            let m_new = m.max(s);
            let (correction, p) = (exp(m - m_new), exp(s - m_new));
            l = l.mul_add(correction, p);
            for (a, v) in acc.iter_mut().zip(v) {
                *a = p.mul_add(*v, *a * correction);
            }
            m = m_new;
            t += ATTENTION_WARPS;
        }
        warp_max[w] = m;
        warp_sum_exp[w] = l;
    }
    let mut max = f32::NEG_INFINITY;
    for m in &warp_max {
        max = max.max(*m);
    }
    let mut weights = [0f32; ATTENTION_WARPS];
    for w in 0..ATTENTION_WARPS {
        weights[w] = if warp_max[w] > f32::NEG_INFINITY { exp(warp_max[w] - max) } else { 0.0 };
    }
    for (i, a) in acc_out.iter_mut().enumerate() {
        let mut sum = 0f32;
        for w in 0..ATTENTION_WARPS {
            if warp_max[w] > f32::NEG_INFINITY {
                sum = warp_acc[w][i].mul_add(weights[w], sum);
            }
        }
        *a = sum;
    }
    let mut total = 0f32;
    for w in 0..ATTENTION_WARPS {
        if warp_max[w] > f32::NEG_INFINITY {
            total = warp_sum_exp[w].mul_add(weights[w], total);
        }
    }
    (max, total)
}

/// The 32 lanes' partial dot products of `q · k`: lane `l` sums elements `l·per ..
/// (l+1)·per` in order with fused multiply-adds. Inlined, so a constant `per` lets the
/// compiler unroll and vectorize it across lanes.
#[inline(always)]
fn lane_dots(q: &[f32], k: &[f32], per: usize) -> [f32; 32] {
    let mut lanes = [0f32; 32];
    for ((s, q), k) in lanes.iter_mut().zip(q.chunks_exact(per)).zip(k.chunks_exact(per)) {
        for (q, k) in q.iter().zip(k) {
            *s = q.mul_add(*k, *s);
        }
    }
    lanes
}

/// Values per task of [`silu_mul`].
const SILU_CHUNK: usize = 1024;

/// Kernel `silu_mul_exact`: `out = g / (1 + e^-g) · up`, element by element, so split
/// into tasks of the host pool ([`crate::cpu::host_pool`]) with the same bits: one thread took
/// 0.033 ms for a 4B layer's 9728 values on the H100 machine (run121).
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let tasks: Vec<_> = gate.chunks(SILU_CHUNK).zip(up.chunks(SILU_CHUNK)).zip(out.chunks_mut(SILU_CHUNK)).collect();
    crate::cpu::matvec::run_tasks(tasks, |((gate, up), out)| silu_mul_chunk(gate, up, out));
}

/// [`silu_mul`] over one task's values.
fn silu_mul_chunk(gate: &[f32], up: &[f32], out: &mut [f32]) {
    dispatch!(fast, silu_mul_impl, (gate: &[f32], up: &[f32], out: &mut [f32]))
}

#[inline(always)]
fn silu_mul_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = (g / (1.0 + exp(-g))) * u;
    }
}

/// Kernel `gelu_mul_exact`: `out = gelu(g) · up` with GeLU's tanh form, tanh(a) written as
/// `1 − 2 / (e^(2a) + 1)` with the kernels' e^x, so the CPU gives the device's bits
/// (Gemma 3's MLP).
pub fn gelu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let tasks: Vec<_> = gate.chunks(SILU_CHUNK).zip(up.chunks(SILU_CHUNK)).zip(out.chunks_mut(SILU_CHUNK)).collect();
    crate::cpu::matvec::run_tasks(tasks, |((gate, up), out)| {
        for ((o, &g), u) in out.iter_mut().zip(gate.iter()).zip(up.iter()) {
            *o = gelu_exact(g) * u;
        }
    });
}

/// GeLU (tanh form) of `g`, each operation rounded as `gelu_mul_exact` rounds it.
pub fn gelu_exact(g: f32) -> f32 {
    // √(2/π) rounded to f32 as the kernel's literal is.
    const SQRT_2_OVER_PI: f32 = 0.797_884_560_802_865_4_f64 as f32;
    let a = SQRT_2_OVER_PI * (g + ((0.044715 * g) * g) * g);
    let tanh = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    (0.5 * g) * (1.0 + tanh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardinfer_core::RopeStyle;

    /// Deterministic values in [-1.5, 1.5).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        crate::test_util::values(n, seed, 1.5)
    }

    /// The twins agree with the plain formulas to float accuracy (their bits are the
    /// kernels', checked on the GPU; here: nothing is mis-indexed).
    #[test]
    fn twins_compute_the_formulas() {
        let (x0, w) = (values(2048, 1), values(2048, 2));
        let delta = values(2048, 3);
        let (mut x, mut out) = (x0.clone(), vec![0f32; 2048]);
        add_rms_norm(&mut x, Some(&delta), &w, 1e-6, &mut out);
        let summed: Vec<f32> = x0.iter().zip(&delta).map(|(a, b)| a + b).collect();
        assert_eq!(x, summed);
        let rms = (summed.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 2048.0 + 1e-6).sqrt();
        for i in 0..2048 {
            let want = summed[i] as f64 / rms * w[i] as f64;
            assert!((out[i] as f64 - want).abs() < 1e-5, "norm {i}");
        }

        let (d, heads, kv_heads, len, capacity) = (64, 4, 2, 150, 160);
        let q = values(heads * d, 4);
        let (k, v) = (values(kv_heads * capacity * d, 5), values(kv_heads * capacity * d, 6));
        let mut attn = vec![0f32; heads * d];
        decode_attention(&q, &k, &v, AttentionShape { heads, kv_heads, head_dim: d, capacity }, len, &mut attn);
        for h in 0..heads {
            let kh = h / 2;
            let scores: Vec<f64> = (0..len)
                .map(|t| (0..d).map(|j| q[h * d + j] as f64 * k[(kh * capacity + t) * d + j] as f64).sum::<f64>() / 8.0)
                .collect();
            let max = scores.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for j in 0..d {
                let want = (0..len).map(|t| e[t] * v[(kh * capacity + t) * d + j] as f64).sum::<f64>() / total;
                assert!((attn[h * d + j] as f64 - want).abs() < 1e-5, "attention head {h} dim {j}");
            }
        }

        let (g, u) = (values(300, 7), values(300, 8));
        let mut act = vec![0f32; 300];
        silu_mul(&g, &u, &mut act);
        for i in 0..300 {
            let want = g[i] as f64 / (1.0 + (-g[i] as f64).exp()) * u[i] as f64;
            assert!((act[i] as f64 - want).abs() < 1e-6, "silu {i}");
        }
    }

    /// The attention before tasks were grouped by KV head and chunk (session 11): one
    /// task per query head, its chunks one after another, then combined.
    fn per_head_attention(q: &[f32], keys: &[f32], values: &[f32], out: &mut [f32]) {
        let d = q.len();
        let len = keys.len() / d;
        let scale = 1.0 / (d as f32).sqrt();
        let chunks = len.div_ceil(ATTENTION_CHUNK);
        let (mut part_max, mut part_sum, mut part_acc) =
            (vec![0f32; chunks], vec![0f32; chunks], vec![0f32; chunks * d]);
        for c in 0..chunks {
            let (start, end) = (c * ATTENTION_CHUNK, ((c + 1) * ATTENTION_CHUNK).min(len));
            let (m, l) = chunk_partial(q, keys, values, start, end, scale, &mut part_acc[c * d..(c + 1) * d]);
            part_max[c] = m;
            part_sum[c] = l;
        }
        let max = part_max.iter().fold(f32::NEG_INFINITY, |a, m| a.max(*m));
        let weights: Vec<f32> = part_max.iter().map(|m| exp(m - max)).collect();
        let mut total = 0f32;
        for c in 0..chunks {
            total = part_sum[c].mul_add(weights[c], total);
        }
        for (i, o) in out.iter_mut().enumerate() {
            let mut a = 0f32;
            for c in 0..chunks {
                a = part_acc[c * d + i].mul_add(weights[c], a);
            }
            *o = a / total;
        }
    }

    /// Grouping the partials by KV head and chunk leaves every head's bits as they were.
    #[test]
    fn grouped_attention_keeps_each_heads_bits() {
        for (d, heads, kv_heads) in [(128, 32, 8), (128, 40, 8), (64, 4, 4), (256, 2, 1)] {
            for len in [1, 5, 64, 65, 150, 600] {
                let capacity = 640;
                let q = values(heads * d, len as u64);
                let (k, v) = (values(kv_heads * capacity * d, 11), values(kv_heads * capacity * d, 12));
                let mut got = vec![0f32; heads * d];
                let shape = AttentionShape { heads, kv_heads, head_dim: d, capacity };
                decode_attention(&q, &k, &v, shape, len, &mut got);
                for h in 0..heads {
                    let rows = (h / (heads / kv_heads)) * capacity * d..((h / (heads / kv_heads)) * capacity + len) * d;
                    let mut want = vec![0f32; d];
                    per_head_attention(&q[h * d..(h + 1) * d], &k[rows.clone()], &v[rows], &mut want);
                    let same = want.iter().zip(&got[h * d..(h + 1) * d]).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "head {h} of {heads} (d {d}, {kv_heads} KV heads), {len} keys");
                }
            }
        }
    }

    #[test]
    fn head_rotation_and_norm() {
        let src = values(64, 9);
        let (cos, sin) = (vec![0f32; 32], vec![1f32; 32]);
        let mut dst = vec![0f32; 64];
        let rotation = Rotation { cos: &cos, sin: &sin, style: RopeStyle::Half };
        head_norm_rope(&src, None, None, Some(rotation), &mut dst);
        for i in 0..32 {
            assert_eq!(dst[i], -src[i + 32]);
            assert_eq!(dst[i + 32], src[i]);
        }
        let ones = vec![1f32; 64];
        head_norm_rope(&src, Some(&src), Some((&ones, 0.0)), None, &mut dst);
        let ms = dst.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 64.0;
        assert!((ms - 1.0).abs() < 1e-5, "normed mean square {ms}");
    }
}
