//! The MMVQ rows of [`super::mmvq`] with AVX-512 VNNI: one 16-lane vector holds 16 of the
//! kernel's threads, each lane doing exactly that thread's float steps (`vfmadd` is the
//! GPU's FFMA, one rounding), so a row's bits are the reference's.
//!
//! The input's side of every step (which Q8_1 values and scale each thread reads) is the
//! same for all rows: [`Prepared`] lays it out once per product, lane by lane; a row then
//! costs two permutes of its nibbles (Q4_K) and a few `vpdpbusd` per super-block.

use super::q8_1::{BLOCK, Q8_1};
use crate::vnni_dot::{prefetch_ahead, Q4K, Q6K};
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

/// Whether this machine runs these kernels (AVX-512 F/BW/VNNI and F16C, and not
/// `CARDINFER_CPU_KERNEL=candle`), as [`crate::vnni_dot::available`].
pub fn available() -> bool {
    crate::vnni_dot::available()
}

fn q8_int(x: &Q8_1, block: usize, index: usize) -> i32 {
    let at = block * BLOCK + 4 * index;
    i32::from_le_bytes([x.qs[at] as u8, x.qs[at + 1] as u8, x.qs[at + 2] as u8, x.qs[at + 3] as u8])
}

fn byte_sum(v: i32) -> i32 {
    v.to_le_bytes().iter().map(|&b| b as i8 as i32).sum()
}

impl Prepared {
    /// Lays out `x` (a multiple of 256 values).
    pub fn new(x: &Q8_1) -> Self {
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

/// The 32 lanes' butterfly after the first step (lanes `l` and `l + 16` already added):
/// masks 8, 4, 2, 1 on 16 values.
#[target_feature(enable = "avx512f")]
unsafe fn finish_butterfly(v: __m512) -> f32 {
    let mut lanes = [0f32; 16];
    // SAFETY: `lanes` holds 16 f32.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), v) };
    super::arith::butterfly(lanes)
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
        let sm = crate::vnni_dot::scales_and_mins(&b.scales);
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
