//! The MMVQ rows of [`crate::cpu::exact::mmvq`] with AVX-512 VNNI: one 16-lane vector holds 16 of the
//! kernel's threads, each lane doing exactly that thread's float steps (`vfmadd` is the
//! GPU's FFMA, one rounding), so a row's bits are the reference's.
//!
//! The input's side of every step (which Q8_1 values and scale each thread reads) is the
//! same for all rows: [`Prepared`] lays it out once per product, lane by lane; a row then
//! costs two permutes of its nibbles (Q4_K) and a few `vpdpbusd` per super-block.

use crate::cpu::exact::q8_1::{BLOCK, Q8_1};
use crate::cpu::x86::vnni_dot::{prefetch_ahead, Q4K, Q6K};
use std::arch::x86_64::*;

/// 16 i32 lanes, aligned for vector loads.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Ints([i32; 16]);

/// 16 f32 lanes, aligned for vector loads.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Floats([f32; 16]);

/// What the 16 threads `16a + j` of a Q4_K super-block read of the input, for sub-block
/// `2g + i` (`g = j / 4`): Q8_1 ints `r` and `r + 4` (`r = j % 4`), the sum of those 8
/// values, and the block's scale.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Q4kInput {
    first: [Ints; 2],
    second: [Ints; 2],
    /// The sum as a float (exact: at most 8 · 127).
    sum: [Floats; 2],
    d8: [Floats; 2],
}

/// What threads `iqs` (two halves of 16) of a Q6_K super-block read: the Q8_1 int
/// `iqs % 8` of block `offset + 2i`, 32 × the sum of its 4 values (the −32 of Q6_K's
/// values, moved to the input), and the block's scale.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Q6kInput {
    u: [[Ints; 2]; 2],
    bias: [[Ints; 2]; 2],
    d8: [[Floats; 2]; 2],
}

/// The input of one product laid out per lane, for both types.
pub struct Prepared {
    q4k: Vec<Q4kInput>,
    q6k: Vec<Q6kInput>,
}

/// Whether this machine runs these kernels and they are chosen, as
/// [`crate::cpu::x86::vnni_dot::available`].
pub fn available() -> bool {
    crate::cpu::x86::vnni_dot::available()
}

#[cfg(test)]
fn q8_int(x: &Q8_1, block: usize, index: usize) -> i32 {
    let at = block * BLOCK + 4 * index;
    i32::from_le_bytes([x.qs[at] as u8, x.qs[at + 1] as u8, x.qs[at + 2] as u8, x.qs[at + 3] as u8])
}

#[cfg(test)]
fn byte_sum(v: i32) -> i32 {
    v.to_le_bytes().iter().map(|&b| b as i8 as i32).sum()
}

impl Prepared {
    /// Lays out `x` (a multiple of 256 values). Only where [`available`] says so.
    pub fn new(x: &Q8_1) -> Self {
        let supers = x.len() / 256;
        let mut prepared = Self { q4k: vec![Q4kInput::default(); supers], q6k: vec![Q6kInput::default(); supers] };
        // SAFETY: callers build a `Prepared` only where `available()` (these features).
        unsafe { prepared.fill(x) };
        prepared
    }

    /// Fills both layouts, a super-block (64 ints of `x`, 8 scales) at a time, with
    /// permutes. It runs on one thread before every product of a host layer: with the
    /// scalar loop it replaces ([`Prepared::new_scalar`], the reference in the tests) and
    /// the scalar quantization, an input took 7–28 µs on the development machine (2560–9728
    /// values), now 0.7–2.2 µs (BENCHMARKS.md, session 15).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn fill(&mut self, x: &Q8_1) {
        // No closures here: a closure is compiled without this function's target features.
        let ones = _mm512_set1_epi8(1);
        for (s, (q4k, q6k)) in self.q4k.iter_mut().zip(self.q6k.iter_mut()).enumerate() {
            let qs = &x.qs[256 * s..256 * (s + 1)];
            // SAFETY: `qs` holds 256 bytes: four vectors of 16 ints.
            let z: [__m512i; 4] = unsafe {
                let at = |k: usize| qs.as_ptr().add(64 * k).cast();
                [
                    _mm512_loadu_si512(at(0)),
                    _mm512_loadu_si512(at(1)),
                    _mm512_loadu_si512(at(2)),
                    _mm512_loadu_si512(at(3)),
                ]
            };
            let d = &x.d[8 * s..8 * (s + 1)];
            // SAFETY: `d` holds the super-block's 8 scales.
            let scales = _mm512_castps256_ps512(unsafe { _mm256_loadu_ps(d.as_ptr()) });
            for i in 0..2 {
                // Lanes 4g..4g+4 take ints 8i + r (+ 4) of vector g: pairs of vectors
                // first, then their low halves side by side.
                let (lo, hi) = (ints(&Q4K_PREP_FIRST[i]), ints(&Q4K_PREP_SECOND[i]));
                let first = _mm512_shuffle_i64x2::<0x44>(
                    _mm512_permutex2var_epi32(z[0], lo, z[1]),
                    _mm512_permutex2var_epi32(z[2], lo, z[3]),
                );
                let second = _mm512_shuffle_i64x2::<0x44>(
                    _mm512_permutex2var_epi32(z[0], hi, z[1]),
                    _mm512_permutex2var_epi32(z[2], hi, z[3]),
                );
                let sum = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, first), ones, second);
                // SAFETY: the layouts' fields are 64-byte aligned vectors of 16 lanes.
                unsafe {
                    _mm512_store_si512(q4k.first[i].0.as_mut_ptr().cast(), first);
                    _mm512_store_si512(q4k.second[i].0.as_mut_ptr().cast(), second);
                    _mm512_store_ps(q4k.sum[i].0.as_mut_ptr(), _mm512_cvtepi32_ps(sum));
                    _mm512_store_ps(q4k.d8[i].0.as_mut_ptr(), _mm512_permutexvar_ps(ints(&Q4K_PREP_SCALE[i]), scales));
                }
                for half in 0..2 {
                    // Q6_K lane `l` of half `h` reads int `32h + 16i + l`: vector 2h + i.
                    let u = z[2 * half + i];
                    let d8 = _mm512_permutexvar_ps(ints(&Q6K_PREP_SCALE[i][half]), scales);
                    // SAFETY: as above.
                    unsafe {
                        _mm512_store_si512(q6k.u[i][half].0.as_mut_ptr().cast(), u);
                        _mm512_store_si512(
                            q6k.bias[i][half].0.as_mut_ptr().cast(),
                            _mm512_slli_epi32::<5>(_mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, u)),
                        );
                        _mm512_store_ps(q6k.d8[i][half].0.as_mut_ptr(), d8);
                    }
                }
            }
        }
    }

    /// The layouts lane by lane, as the kernels' threads read the input (the reference
    /// for [`Prepared::fill`]).
    #[cfg(test)]
    fn new_scalar(x: &Q8_1) -> Self {
        let supers = x.len() / 256;
        let mut q4k = vec![Q4kInput::default(); supers];
        let mut q6k = vec![Q6kInput::default(); supers];
        for s in 0..supers {
            let p = &mut q4k[s];
            for j in 0..16 {
                let (g, r) = (j / 4, j % 4);
                for i in 0..2 {
                    let block = 8 * s + 2 * g + i;
                    let (a, b) = (q8_int(x, block, r), q8_int(x, block, r + 4));
                    p.first[i].0[j] = a;
                    p.second[i].0[j] = b;
                    p.sum[i].0[j] = (byte_sum(a) + byte_sum(b)) as f32;
                    p.d8[i].0[j] = x.d[block];
                }
            }
            let p = &mut q6k[s];
            for iqs in 0..32 {
                let (half, lane) = (iqs / 16, iqs % 16);
                let offset = 4 * (iqs / 16) + (iqs % 16) / 8;
                for i in 0..2 {
                    let block = 8 * s + offset + 2 * i;
                    let u = q8_int(x, block, iqs % 8);
                    p.u[i][half].0[lane] = u;
                    p.bias[i][half].0[lane] = 32 * byte_sum(u);
                    p.d8[i][half].0[lane] = x.d[block];
                }
            }
        }
        Self { q4k, q6k }
    }
}

/// [`Q8_1::quantize`] with AVX-512, block by block with the same IEEE steps: the largest
/// magnitude, `d = amax / 127` (a correctly rounded division, as the kernel's), each value
/// divided by `d` and rounded half away from zero, `d` through f16. A block with a NaN or
/// an infinity (never a hidden state's) takes the scalar steps. 2560 values took ~5 µs
/// the scalar way on the development machine, on one thread before every product.
pub fn quantize(x: &[f32]) -> Q8_1 {
    debug_assert!(x.len().is_multiple_of(BLOCK));
    let mut q8 = Q8_1 { qs: vec![0i8; x.len()], d: vec![0f32; x.len() / BLOCK] };
    // SAFETY: callers quantize this way only where `available()` (these features).
    unsafe { quantize_into(x, &mut q8) };
    q8
}

/// [`quantize`] into `q8` (zeroed, `x.len()` values). Needs the features it enables.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_into(x: &[f32], q8: &mut Q8_1) {
    let magnitude = _mm512_set1_epi32(0x7fff_ffff);
    let half = _mm512_set1_ps(0.5);
    let one = _mm512_set1_ps(1.0);
    let sign = _mm512_set1_epi32(i32::MIN);
    for (block, (qs, d)) in x.chunks_exact(BLOCK).zip(q8.qs.chunks_exact_mut(BLOCK).zip(q8.d.iter_mut())) {
        // SAFETY: `block` holds 32 values: two vectors.
        let v = unsafe { [_mm512_loadu_ps(block.as_ptr()), _mm512_loadu_ps(block.as_ptr().add(16))] };
        let abs = [
            _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v[0]), magnitude)),
            _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v[1]), magnitude)),
        ];
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(abs[0], abs[1]));
        if !amax.is_finite() {
            let scalar = Q8_1::quantize(block);
            qs.copy_from_slice(&scalar.qs);
            *d = scalar.d[0];
            continue;
        }
        let scale = amax / 127.0;
        *d = half::f16::from_f32(scale).to_f32();
        if amax == 0.0 {
            continue;
        }
        let by = _mm512_set1_ps(scale);
        for (i, v) in v.iter().enumerate() {
            let q = _mm512_div_ps(*v, by);
            // Half away from zero: truncate, then one step out where the rest is ≥ ½
            // (`q − trunc(q)` is exact for |q| ≤ 128).
            let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(q);
            let rest = _mm512_sub_ps(q, t);
            let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(
                _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(rest), magnitude)),
                half,
            );
            let step = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(_mm512_castps_si512(q), sign),
                _mm512_castps_si512(one),
            ));
            let r = _mm512_mask_add_ps(t, away, t, step);
            // |r| ≤ 127: the narrowing keeps every value.
            let bytes = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(r));
            // SAFETY: `qs` holds 32 bytes; this writes 16 at 16·i.
            unsafe { _mm_storeu_si128(qs.as_mut_ptr().add(16 * i).cast(), bytes) };
        }
    }
}

/// The 32 lanes' butterfly after the first step (lanes `l` and `l + 16` already added):
/// masks 8, 4, 2, 1 on 16 values.
#[target_feature(enable = "avx512f")]
unsafe fn finish_butterfly(v: __m512) -> f32 {
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` holds 16 f32.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
    crate::cpu::exact::arith::butterfly(lanes)
}

#[inline(always)]
unsafe fn ints(v: &Ints) -> __m512i {
    // SAFETY: `Ints` is 64 bytes, 64-aligned.
    unsafe { _mm512_load_si512(v.0.as_ptr().cast()) }
}

#[inline(always)]
unsafe fn floats(v: &Floats) -> __m512 {
    // SAFETY: `Floats` is 64 bytes, 64-aligned.
    unsafe { _mm512_load_ps(v.0.as_ptr()) }
}

/// Lane indices `mul·(j / div) + add + (j % modulo)` for lanes j = 0..16, built at
/// compile time: a row is a few super-blocks (10 for a width of 2560), so index vectors
/// built per row cost a third of the kernel's time (perf, development machine).
const fn lane_index(mul: i32, div: i32, add: i32, modulo: i32) -> Ints {
    let mut lanes = [0i32; 16];
    let mut j = 0;
    while j < 16 {
        lanes[j] = mul * (j as i32 / div) + add + (j as i32 % modulo);
        j += 1;
    }
    Ints(lanes)
}

/// Q4_K: the `qs` ints of the first (`8·(j/4) + j%4`) and second (`+ 4`) half of each
/// lane's sub-block pair, the scale of sub-block `2·(j/4) + i` and its min (`+ 8`).
const Q4K_FIRST: Ints = lane_index(8, 4, 0, 4);
const Q4K_SECOND: Ints = lane_index(8, 4, 4, 4);
const Q4K_SCALE: [Ints; 2] = [lane_index(2, 4, 0, 1), lane_index(2, 4, 1, 1)];
const Q4K_MIN: [Ints; 2] = [lane_index(2, 4, 8, 1), lane_index(2, 4, 9, 1)];
/// Q6_K: the `qh` int of each lane in both halves (`base + j%8`), its shift
/// (`2·(j/8)`), and the scale of `base + j/4 + 4i`.
const Q6K_HIGH: [Ints; 2] = [lane_index(0, 1, 0, 8), lane_index(0, 1, 8, 8)];
const Q6K_SHIFT: Ints = lane_index(2, 8, 0, 1);
const Q6K_SCALE: [[Ints; 2]; 2] =
    [[lane_index(1, 4, 0, 1), lane_index(1, 4, 8, 1)], [lane_index(1, 4, 4, 1), lane_index(1, 4, 12, 1)]];

/// [`Prepared::fill`]'s Q4_K lanes: from a pair of vectors, ints `8i + r` (`r = j % 4`)
/// of the first in lanes 0..4 and of the second (`16 +`) in lanes 4..8 (`+ 4` for the
/// second half); and the scale of block `2·(j/4) + i`.
const Q4K_PREP_FIRST: [Ints; 2] = [lane_index(16, 4, 0, 4), lane_index(16, 4, 8, 4)];
const Q4K_PREP_SECOND: [Ints; 2] = [lane_index(16, 4, 4, 4), lane_index(16, 4, 12, 4)];
const Q4K_PREP_SCALE: [Ints; 2] = [lane_index(2, 4, 0, 1), lane_index(2, 4, 1, 1)];
/// Its Q6_K scales: block `4h + 2i + l/8` for lane `l` of half `h`.
const Q6K_PREP_SCALE: [[Ints; 2]; 2] =
    [[lane_index(1, 8, 0, 1), lane_index(1, 8, 4, 1)], [lane_index(1, 8, 2, 1), lane_index(1, 8, 6, 1)]];

/// Both f16 scales of a block (`d` in the low half of `word`, the second in the high
/// half), widened and broadcast.
#[inline(always)]
unsafe fn scales_f16(word: u32) -> (__m512, __m512) {
    let both = _mm_cvtph_ps(_mm_cvtsi32_si128(word as i32));
    (_mm512_broadcastss_ps(both), _mm512_broadcastss_ps(_mm_movehdup_ps(both)))
}

/// A Q4_K row (`w`: its super-blocks) against the prepared input. `dot · sc` is formed
/// as a float product: both factors and the product are integers below 2^24, so it is
/// exact, as the kernel's integer product converted to float.
///
/// # Safety
/// The CPU must have the features [`available`] checks; `x` must cover `w`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
pub unsafe fn row_q4k(w: &[Q4K], x: &Prepared) -> f32 {
    let (first_idx, second_idx) = (ints(&Q4K_FIRST), ints(&Q4K_SECOND));
    let sc_idx = [ints(&Q4K_SCALE[0]), ints(&Q4K_SCALE[1])];
    let min_idx = [ints(&Q4K_MIN[0]), ints(&Q4K_MIN[1])];
    let nibble = _mm512_set1_epi8(0x0F);
    let zero = _mm512_setzero_ps();
    let mut acc = [zero; 8];
    for (s, (b, p)) in w.iter().zip(&x.q4k).enumerate() {
        prefetch_ahead((b as *const Q4K).cast());
        let q0 = _mm512_loadu_si512(b.qs.as_ptr().cast());
        let q1 = _mm512_loadu_si512(b.qs.as_ptr().add(64).cast());
        let v_first = _mm512_permutex2var_epi32(q0, first_idx, q1);
        let v_second = _mm512_permutex2var_epi32(q0, second_idx, q1);
        let sm = crate::cpu::x86::vnni_dot::scales_and_mins(&b.scales);
        let sm = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(sm.as_ptr().cast())));
        let (mut sum_d, mut sum_m) = (zero, zero);
        for i in 0..2 {
            let (f, s2) = if i == 0 {
                (_mm512_and_si512(v_first, nibble), _mm512_and_si512(v_second, nibble))
            } else {
                (
                    _mm512_and_si512(_mm512_srli_epi32::<4>(v_first), nibble),
                    _mm512_and_si512(_mm512_srli_epi32::<4>(v_second), nibble),
                )
            };
            let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), f, ints(&p.first[i]));
            let dot = _mm512_dpbusd_epi32(dot, s2, ints(&p.second[i]));
            let sc = _mm512_permutexvar_ps(sc_idx[i], sm);
            let mn = _mm512_permutexvar_ps(min_idx[i], sm);
            let d8 = floats(&p.d8[i]);
            sum_d = _mm512_fmadd_ps(d8, _mm512_mul_ps(_mm512_cvtepi32_ps(dot), sc), sum_d);
            sum_m = _mm512_fmadd_ps(d8, _mm512_mul_ps(floats(&p.sum[i]), mn), sum_m);
        }
        let (d, dmin) = scales_f16(u32::from(b.d) | (u32::from(b.dmin) << 16));
        let r = _mm512_fmsub_ps(sum_d, d, _mm512_mul_ps(dmin, sum_m));
        acc[s % 8] = _mm512_add_ps(acc[s % 8], r);
    }
    let low = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[2]), acc[4]), acc[6]);
    let high = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc[1], acc[3]), acc[5]), acc[7]);
    // SAFETY: same features.
    unsafe { finish_butterfly(_mm512_add_ps(low, high)) }
}

/// A Q6_K row against the prepared input.
///
/// # Safety
/// As [`row_q4k`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
pub unsafe fn row_q6k(w: &[Q6K], x: &Prepared) -> f32 {
    let qh_idx = [ints(&Q6K_HIGH[0]), ints(&Q6K_HIGH[1])];
    let qh_shift = ints(&Q6K_SHIFT);
    let sc_idx = [[ints(&Q6K_SCALE[0][0]), ints(&Q6K_SCALE[0][1])], [ints(&Q6K_SCALE[1][0]), ints(&Q6K_SCALE[1][1])]];
    let nibble = _mm512_set1_epi8(0x0F);
    let high_bits = _mm512_set1_epi8(0x30);
    let zero = _mm512_setzero_ps();
    let mut acc = [[zero; 2]; 4];
    for (s, (b, p)) in w.iter().zip(&x.q6k).enumerate() {
        prefetch_ahead((b as *const Q6K).cast());
        let qh = _mm512_loadu_si512(b.qh.as_ptr().cast());
        let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b.scales.as_ptr().cast())));
        let (d, _) = scales_f16(u32::from(b.d));
        for half in 0..2 {
            let vl = _mm512_loadu_si512(b.ql.as_ptr().add(64 * half).cast());
            let vh = _mm512_srav_epi32(_mm512_permutexvar_epi32(qh_idx[half], qh), qh_shift);
            let mut sum = zero;
            for (i, sc_idx) in sc_idx.iter().enumerate() {
                let (low, high) = if i == 0 {
                    (_mm512_and_si512(vl, nibble), _mm512_and_si512(_mm512_slli_epi32::<4>(vh), high_bits))
                } else {
                    (_mm512_and_si512(_mm512_srli_epi32::<4>(vl), nibble), _mm512_and_si512(vh, high_bits))
                };
                let values = _mm512_or_si512(low, high);
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), values, ints(&p.u[i][half]));
                let dot = _mm512_sub_epi32(dot, ints(&p.bias[i][half]));
                // dot · sc as a float product: exact (integers below 2^24).
                let x = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(sc_idx[half], sc));
                sum = _mm512_fmadd_ps(floats(&p.d8[i][half]), x, sum);
            }
            acc[s % 4][half] = _mm512_fmadd_ps(d, sum, acc[s % 4][half]);
        }
    }
    // No closure here: a closure is compiled without this function's target features.
    let first = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0][0], acc[1][0]), acc[2][0]), acc[3][0]);
    let second = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0][1], acc[1][1]), acc[2][1]), acc[3][1]);
    // SAFETY: same features.
    unsafe { finish_butterfly(_mm512_add_ps(first, second)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector quantization equals the scalar one bit for bit: random blocks, halves
    /// to round away from zero, a block of zeros, and blocks with a NaN or an infinity.
    #[test]
    fn vector_quantization_is_the_scalar_one() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut x: Vec<f32> = crate::test_util::values(9728, 5, 40.0);
        // Block 1: amax 127, so d = 1 and every k + ½ is a tie.
        for (i, v) in x[32..64].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 };
        }
        x[64..96].iter_mut().for_each(|v| *v = 0.0);
        x[100] = f32::NAN;
        x[130] = f32::INFINITY;
        x[170] = -1e-30;
        let (got, want) = (quantize(&x), Q8_1::quantize(&x));
        assert_eq!(got.qs, want.qs);
        let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.d), bits(&want.d));
        assert_eq!(&got.qs[32..36], &[127, -15, -14, -13], "ties round away from zero");
    }

    /// The permuted layouts equal the lane-by-lane reference in every field, bit for bit.
    #[test]
    fn permuted_layout_is_the_reference() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        for width in [256, 2560, 9728] {
            let x: Vec<f32> = crate::test_util::values(width, width as u64, 3.0);
            let q8 = Q8_1::quantize(&x);
            let (got, want) = (Prepared::new(&q8), Prepared::new_scalar(&q8));
            let int_lanes = |v: &Ints| v.0;
            let float_bits = |v: &Floats| v.0.map(f32::to_bits);
            for (s, (g, w)) in got.q4k.iter().zip(&want.q4k).enumerate() {
                for i in 0..2 {
                    assert_eq!(
                        int_lanes(&g.first[i]),
                        int_lanes(&w.first[i]),
                        "width {width}, Q4_K super {s}, first {i}"
                    );
                    assert_eq!(
                        int_lanes(&g.second[i]),
                        int_lanes(&w.second[i]),
                        "width {width}, Q4_K super {s}, second {i}"
                    );
                    assert_eq!(float_bits(&g.sum[i]), float_bits(&w.sum[i]), "width {width}, Q4_K super {s}, sum {i}");
                    assert_eq!(float_bits(&g.d8[i]), float_bits(&w.d8[i]), "width {width}, Q4_K super {s}, scale {i}");
                }
            }
            for (s, (g, w)) in got.q6k.iter().zip(&want.q6k).enumerate() {
                for (i, h) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    assert_eq!(
                        int_lanes(&g.u[i][h]),
                        int_lanes(&w.u[i][h]),
                        "width {width}, Q6_K super {s}, ints {i}/{h}"
                    );
                    assert_eq!(
                        int_lanes(&g.bias[i][h]),
                        int_lanes(&w.bias[i][h]),
                        "width {width}, Q6_K super {s}, bias {i}/{h}"
                    );
                    assert_eq!(
                        float_bits(&g.d8[i][h]),
                        float_bits(&w.d8[i][h]),
                        "width {width}, Q6_K super {s}, scale {i}/{h}"
                    );
                }
            }
        }
    }
}
