//! The Q6_K × Q8_K dot products with AVX-512 VNNI, for the CPU's matrix-vector products
//! ([`crate::cpu::matvec`]) on x86 machines that have it (a Q4_K_M file is Q4_K with Q6_K
//! for `attn_v`, `ffn_down` and the head), and what the Q4_K kernel
//! ([`crate::cpu::x86::q4k_packed`]) shares with them: the block layouts, the unpacking
//! of a Q4_K block ([`unpack_q4k`]), the prefetch distance and the exact reference sum.
//!
//! A decoded token reads each weight once, so what bounds these products is how fast one
//! thread pulls a stream of blocks from memory: on the H100 machine 14 threads read 51–70
//! GB/s of Q4_K (`probe`), each far below what it computes on cached weights. Two changes
//! over Candle's AVX2 kernels (`maddubs` + `madd` per 32 weights):
//! - each block asks the cache for the weights 2 KB ahead ([`PREFETCH_BYTES`]; a row's
//!   blocks are followed by the next row's) — with the rest, 2.6× Candle's rate from
//!   memory on the development machine (BENCHMARKS.md, session 7);
//! - 64 weights go through one `vpdpbusd` (u8 × i8, four products summed per i32 lane),
//!   Q4_K's scales are applied by one `vpmaddwd` per two sub-block pairs, and each block
//!   ends in one float multiply-add.
//!
//! The integer parts are exact; the float sums run in another order than Candle's, so a
//! row's value can differ from Candle's kernel in the last bits (every CPU product of the
//! decoder goes through the same kernel, so streamed and resident CPU runs still agree bit
//! for bit). `CARDINFER_CPU_KERNEL=candle` at start uses Candle's kernels instead.

use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K, BlockQ8K};

/// Q4_K's block as laid out in the file (`#[repr(C)]`, as Candle's `BlockQ4K`): f16 scale
/// and min scale, 12 bytes of 6-bit sub-block scales and mins, 128 bytes of nibbles.
#[repr(C)]
pub(crate) struct Q4K {
    pub(crate) d: u16,
    pub(crate) dmin: u16,
    pub(crate) scales: [u8; 12],
    pub(crate) qs: [u8; 128],
}

/// Q8_K's block (`#[repr(C)]`, as Candle's `BlockQ8K`): f32 scale, 256 values, and the sum
/// of every 16 of them.
#[repr(C)]
pub(crate) struct Q8K {
    pub(crate) d: f32,
    pub(crate) qs: [i8; 256],
    pub(crate) bsums: [i16; 16],
}

/// Q6_K's block (`#[repr(C)]`, as Candle's `BlockQ6K`): low 4 bits of 256 values, their
/// high 2 bits, 16 signed sub-block scales, the f16 scale. A value is `q - 32`.
#[repr(C)]
pub(crate) struct Q6K {
    pub(crate) ql: [u8; 128],
    pub(crate) qh: [u8; 64],
    pub(crate) scales: [i8; 16],
    pub(crate) d: u16,
}

const _: () = assert!(std::mem::size_of::<Q6K>() == std::mem::size_of::<BlockQ6K>());
const _: () = assert!(std::mem::align_of::<Q6K>() <= std::mem::align_of::<BlockQ6K>());
const _: () = assert!(std::mem::size_of::<Q4K>() == std::mem::size_of::<BlockQ4K>());
const _: () = assert!(std::mem::align_of::<Q4K>() <= std::mem::align_of::<BlockQ4K>());
const _: () = assert!(std::mem::size_of::<Q8K>() == std::mem::size_of::<BlockQ8K>());
const _: () = assert!(std::mem::align_of::<Q8K>() <= std::mem::align_of::<BlockQ8K>());

/// Whether this machine runs the kernel (AVX-512 F, BW, VL and VNNI, and F16C) and it is
/// chosen ([`CpuKernels::CandleBlockDot`](crate::cpu::kernels::CpuKernels::CandleBlockDot)
/// turns it off: Candle's kernel then runs).
pub fn available() -> bool {
    hardware() && crate::cpu::kernels::selected() != crate::cpu::kernels::CpuKernels::CandleBlockDot
}

/// Whether this machine has what the kernel needs.
fn hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `Σ w·x` over matching blocks of a Q6_K row and a Q8_K input; `None` where the kernel
/// is not [`available`] or the lengths differ.
pub fn dot_q6k(w: &[BlockQ6K], x: &[BlockQ8K]) -> Option<f32> {
    let (w, x) = ready::<_, Q6K>(w, x)?;
    // SAFETY: `ready` checked the CPU features the kernel is compiled for.
    Some(unsafe { dot_q6k_avx512::<1>(w, [x])[0] })
}

/// `Σ w·x` of a Q6_K row with each of several Q8_K input rows, `xs` holding `out.len()`
/// rows of `w.len()` blocks one after the other: the row's blocks are unpacked once for
/// all of them (a prompt chunk's product). Each value has the bits [`dot_q6k`] gives for
/// that input. `false`, with `out` untouched, where the kernel is not [`available`] or the
/// lengths differ.
pub fn dot_q6k_many(w: &[BlockQ6K], xs: &[BlockQ8K], out: &mut [f32]) -> bool {
    let Some((w, xs)) = ready_many::<_, Q6K>(w, xs, out.len()) else { return false };
    // SAFETY: `ready_many` checked the CPU features the kernel is compiled for.
    unsafe {
        for_each_group(
            w,
            xs,
            out,
            |w, x| dot_q6k_avx512::<GROUP>(w, x),
            (|w, x| dot_q6k_avx512::<3>(w, x), |w, x| dot_q6k_avx512::<2>(w, x), |w, x| dot_q6k_avx512::<1>(w, x)),
        )
    };
    true
}

/// Inputs one call of the kernel takes together in [`dot_q6k_many`].
const GROUP: usize = 4;

/// Runs `group` on each [`GROUP`] of the inputs in `xs` (rows of `w.len()` blocks, as
/// many as `out` has values; `w` not empty) and the kernel of the remainder's size (3, 2
/// or 1 inputs) on the rest, writing `out`: 2 or 3 inputs (a short verification pass of
/// speculative decoding) read the row's blocks once, not once per input.
fn for_each_group<M>(
    w: &[M],
    xs: &[Q8K],
    out: &mut [f32],
    group: impl Fn(&[M], [&[Q8K]; GROUP]) -> [f32; GROUP],
    (three, two, one): (
        impl Fn(&[M], [&[Q8K]; 3]) -> [f32; 3],
        impl Fn(&[M], [&[Q8K]; 2]) -> [f32; 2],
        impl Fn(&[M], [&[Q8K]; 1]) -> [f32; 1],
    ),
) {
    let row = w.len();
    for (values, inputs) in out.chunks_mut(GROUP).zip(xs.chunks(row * GROUP)) {
        let input = |r: usize| &inputs[r * row..(r + 1) * row];
        match values.len() {
            GROUP => values.copy_from_slice(&group(w, std::array::from_fn(input))),
            3 => values.copy_from_slice(&three(w, std::array::from_fn(input))),
            2 => values.copy_from_slice(&two(w, std::array::from_fn(input))),
            _ => values.copy_from_slice(&one(w, [input(0)])),
        }
    }
}

/// [`ready`] for `rows` inputs of `w.len()` blocks each in `xs`.
fn ready_many<'a, T, M>(w: &'a [T], xs: &'a [BlockQ8K], rows: usize) -> Option<(&'a [M], &'a [Q8K])> {
    if !available() || w.is_empty() || xs.len() != w.len() * rows {
        return None;
    }
    // SAFETY: as in `ready`.
    Some(unsafe { (mirror(w), mirror(xs)) })
}

/// `w` and `x` seen as their mirrors, where the kernels are [`available`] and the
/// lengths match.
fn ready<'a, T, M>(w: &'a [T], x: &'a [BlockQ8K]) -> Option<(&'a [M], &'a [Q8K])> {
    if !available() || w.len() != x.len() {
        return None;
    }
    // SAFETY: each mirror has its Candle type's size and no stricter alignment (checked
    // at compile time above), and all are `#[repr(C)]` plain data.
    Some(unsafe { (mirror(w), mirror(x)) })
}

/// `blocks` seen as their `#[repr(C)]` mirror `M`.
///
/// # Safety
/// `M` must have `T`'s size and layout and no stricter alignment.
pub(crate) unsafe fn mirror<T, M>(blocks: &[T]) -> &[M] {
    debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<M>());
    // SAFETY: as the caller promises.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<M>(), blocks.len()) }
}

/// The 6-bit scales (bytes 0..8) and mins (8..16) of a block, unpacked as ggml's
/// `get_scale_min_k4` (the same bit shuffle as Candle's kernels).
pub(crate) fn scales_and_mins(packed: &[u8; 12]) -> [u8; 16] {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    let word = |i: usize| u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]]);
    let mut u = [word(0), word(1), word(2), 0];
    u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
    let mins_low = u[1] & KMASK1;
    u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
    u[2] = mins_low;
    u[0] &= KMASK1;
    let mut out = [0u8; 16];
    for (i, w) in u.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Bytes ahead of the block being read that the kernels ask the cache for: on one thread
/// of the development machine none gave 5.2–5.9 GB/s, 1 KB 8.2–9.3, 2 KB 8.9–9.3 and 4 KB
/// 8.9–9.1 (BENCHMARKS.md, session 7).
pub const PREFETCH_BYTES: usize = 2048;

/// Asks for the weights [`PREFETCH_BYTES`] ahead of `at` (a row's blocks are followed by
/// the next row's, so this runs across rows).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_ahead(at: *const u8) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    let ahead = at.wrapping_add(PREFETCH_BYTES);
    // SAFETY: a prefetch never faults, wherever it points.
    unsafe {
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128).cast());
    }
}

/// A Q4_K block unpacked for `vpdpbusd`: its nibbles as four 64-byte vectors (sub-blocks
/// 0/2, 1/3, 4/6 and 5/7), its sub-block scales laid out for the `madd` of packed products,
/// its mins, and its two scales as f32 (lanes 0 and 1).
#[cfg(target_arch = "x86_64")]
pub(crate) struct UnpackedQ4K {
    pub(crate) nibbles: [std::arch::x86_64::__m512i; 4],
    pub(crate) scales0213: std::arch::x86_64::__m512i,
    pub(crate) scales4657: std::arch::x86_64::__m512i,
    pub(crate) mins: std::arch::x86_64::__m128i,
    pub(crate) scales: std::arch::x86_64::__m128,
}

/// Unpacks `b` ([`UnpackedQ4K`]).
///
/// # Safety
/// The CPU must have AVX-512 F and BW, and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
#[inline]
pub(crate) unsafe fn unpack_q4k(b: &Q4K) -> UnpackedQ4K {
    use std::arch::x86_64::*;
    // Sub-block j of a block covers weights 32j..32j+32: the low nibbles of bytes
    // 32(j/2).. for even j, the high nibbles for odd j. One 64-byte load holds two
    // sub-blocks' nibbles: lanes 0..8 of the products belong to one, 8..16 to the other.
    // The i32 products of two sub-block pairs fit i16 (|Σ| ≤ 4·15·128): packed together
    // (per 128-bit lane: four of the first vector, four of the second), one `madd` with
    // each lane's scale applies the scales and sums neighbours of the same sub-block.
    const SCALE_LANES: [[i16; 32]; 2] = {
        let mut lanes = [[0i16; 32]; 2];
        let mut i = 0;
        while i < 32 {
            let (lane, second) = (i / 8, (i % 8) / 4);
            let pair = if lane < 2 { 0 } else { 2 };
            lanes[0][i] = pair + second as i16;
            lanes[1][i] = 4 + pair + second as i16;
            i += 1;
        }
        lanes
    };
    let nibble = _mm512_set1_epi8(0x0F);
    // SAFETY: each array is 64 bytes.
    let (idx0213, idx4657) = unsafe {
        (_mm512_loadu_si512(SCALE_LANES[0].as_ptr().cast()), _mm512_loadu_si512(SCALE_LANES[1].as_ptr().cast()))
    };
    let sm = scales_and_mins(&b.scales);
    // SAFETY: `sm` is 16 bytes.
    let (sub_scales, mins) =
        unsafe { (_mm_loadl_epi64(sm.as_ptr().cast()), _mm_loadl_epi64(sm.as_ptr().add(8).cast())) };
    let sub_scales = _mm512_castsi128_si512(_mm_cvtepu8_epi16(sub_scales));
    let q4 = b.qs.as_ptr();
    // SAFETY: `b.qs` is 128 bytes.
    let (first, second) = unsafe { (_mm512_loadu_si512(q4.cast()), _mm512_loadu_si512(q4.add(64).cast())) };
    UnpackedQ4K {
        nibbles: [
            _mm512_and_si512(first, nibble),
            _mm512_and_si512(_mm512_srli_epi16::<4>(first), nibble),
            _mm512_and_si512(second, nibble),
            _mm512_and_si512(_mm512_srli_epi16::<4>(second), nibble),
        ],
        scales0213: _mm512_permutexvar_epi16(idx0213, sub_scales),
        scales4657: _mm512_permutexvar_epi16(idx4657, sub_scales),
        mins: _mm_cvtepu8_epi16(mins),
        scales: _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(b.d) | (i32::from(b.dmin) << 16))),
    }
}

/// The Q6_K row `w`'s products with each of the `R` inputs `xs` (each `w.len()` blocks):
/// the weights are unpacked once per block, and each input's sum takes the same steps, in
/// the same order, whatever `R` is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
unsafe fn dot_q6k_avx512<const R: usize>(w: &[Q6K], xs: [&[Q8K]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let (nibble, two_bits) = (_mm512_set1_epi8(0x0F), _mm512_set1_epi8(0x03));
    // In each half of a block (128 values), byte l of `ql` holds values l and l + 64 (low
    // and high nibble), byte l + 32 values l + 32 and l + 96; byte l of `qh` their high
    // two bits at shifts 0, 4, 2, 6. So one 64-byte load of `ql` gives values 0..64 (low
    // nibbles) and 64..128 (high), each matching a contiguous run of the input; the high
    // bits come from `qh` twice over, shifted by 0 / 2 (values 0..64) or 4 / 6.
    let shift_low = _mm512_inserti64x4::<1>(_mm512_set1_epi16(0), _mm256_set1_epi16(2));
    let shift_high = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(6));
    // Value group g (16 values) has scale g: four i32 lanes per group in a product vector.
    let groups = |g: i32| {
        _mm512_setr_epi32(
            g,
            g,
            g,
            g,
            g + 1,
            g + 1,
            g + 1,
            g + 1,
            g + 2,
            g + 2,
            g + 2,
            g + 2,
            g + 3,
            g + 3,
            g + 3,
            g + 3,
        )
    };
    let idx = [groups(0), groups(4), groups(8), groups(12)];
    let mut acc = [_mm512_setzero_ps(); R];
    let mut offsets = [0f32; R];
    for (i, b) in w.iter().enumerate() {
        prefetch_ahead((b as *const Q6K).cast());
        let d_w = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(b.d))));
        let scales_i8 = _mm_loadu_si128(b.scales.as_ptr().cast());
        let scales = _mm512_cvtepi8_epi32(scales_i8);
        let group_scales = idx.map(|idx| _mm512_permutexvar_epi32(idx, scales));
        // Values 0..64 and 64..128 of each half, with their high bits.
        let values: [[__m512i; 2]; 2] = std::array::from_fn(|half| {
            let ql = _mm512_loadu_si512(b.ql.as_ptr().add(64 * half).cast());
            let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.qh.as_ptr().add(32 * half).cast()));
            let high_bits =
                |shift: __m512i| _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srlv_epi16(qh, shift), two_bits));
            let low = _mm512_or_si512(_mm512_and_si512(ql, nibble), high_bits(shift_low));
            let high = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), nibble), high_bits(shift_high));
            [low, high]
        });
        for r in 0..R {
            let q = &xs[r][i];
            let d = q.d * d_w;
            // The stored values are q + 32: take 32 × Σ_g scale_g × (input sum of group g) off.
            let bsums = _mm256_loadu_si256(q.bsums.as_ptr().cast());
            let weighted = _mm256_madd_epi16(_mm256_cvtepi8_epi16(scales_i8), bsums);
            offsets[r] += d * (32 * _mm512_reduce_add_epi32(_mm512_zextsi256_si512(weighted))) as f32;
            let mut sum = _mm512_setzero_si512();
            for (half, [low, high]) in values.iter().enumerate() {
                let q8 = q.qs.as_ptr().add(128 * half);
                let zero = _mm512_setzero_si512();
                let p_low = _mm512_dpbusd_epi32(zero, *low, _mm512_loadu_si512(q8.cast()));
                let p_high = _mm512_dpbusd_epi32(zero, *high, _mm512_loadu_si512(q8.add(64).cast()));
                sum = _mm512_add_epi32(
                    sum,
                    _mm512_add_epi32(
                        _mm512_mullo_epi32(p_low, group_scales[2 * half]),
                        _mm512_mullo_epi32(p_high, group_scales[2 * half + 1]),
                    ),
                );
            }
            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sum), acc[r]);
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]) - offsets[r])
}

/// Off x86 there is no kernel: [`available`] is false there, so this is never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn dot_q6k_avx512<const R: usize>(_: &[Q6K], _: [&[Q8K]; R]) -> [f32; R] {
    [f32::NAN; R]
}

/// The same sum without SIMD, for tests: exact integer parts, then the block scales.
pub fn dot_reference(w: &[BlockQ4K], x: &[BlockQ8K]) -> f64 {
    // SAFETY: the mirrors match Candle's layouts (checked at compile time above).
    let (w, x): (&[Q4K], &[Q8K]) = unsafe { (mirror(w), mirror(x)) };
    let mut total = 0f64;
    for (b, q) in w.iter().zip(x) {
        let sm = scales_and_mins(&b.scales);
        let (mut sum, mut mins) = (0i64, 0i64);
        for j in 0..8 {
            let mut sub = 0i64;
            for i in 0..32 {
                let byte = b.qs[32 * (j / 2) + i];
                let nib = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
                sub += i64::from(nib) * i64::from(q.qs[32 * j + i]);
            }
            sum += i64::from(sm[j]) * sub;
            mins += i64::from(sm[8 + j]) * (i64::from(q.bsums[2 * j]) + i64::from(q.bsums[2 * j + 1]));
        }
        let (d, dmin) = (half::f16::from_bits(b.d).to_f64(), half::f16::from_bits(b.dmin).to_f64());
        total += f64::from(q.d) * (d * sum as f64 - dmin * mins as f64);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, GgmlType, QTensor};
    use candle_core::{Device, Tensor};

    const N: usize = 16;
    const K: usize = 1024;

    /// Quantizes `xs` to Q8_K blocks as Candle does (the input side of the dot product).
    fn quantize_input(xs: &[f32]) -> Vec<BlockQ8K> {
        let mut blocks = vec![BlockQ8K::zeros(); xs.len() / 256];
        BlockQ8K::from_float(xs, &mut blocks);
        blocks
    }

    /// `N` rows of `K` weights quantized to `dtype` (their bytes), and one input row as
    /// Q8_K blocks.
    fn rows_and_input(dtype: GgmlDType) -> (Vec<u8>, Vec<BlockQ8K>) {
        let values: Vec<f32> = (0..N * K).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.3).collect();
        let w = QTensor::quantize(&Tensor::from_vec(values, (N, K), &Device::Cpu).unwrap(), dtype).unwrap();
        let xs: Vec<f32> = (0..K).map(|i| ((i * 104729 % 997) as f32 / 997.0 - 0.5) * 4.0).collect();
        (w.data().unwrap().into_owned(), quantize_input(&xs))
    }

    /// The rows' blocks as `T` (the bytes are Candle's blocks of `T`).
    fn blocks<T>(bytes: &[u8]) -> &[T] {
        assert!((bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()));
        // SAFETY: aligned (checked), and the bytes hold `N * K / 256` blocks of `T`.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), N * K / 256) }
    }

    /// Our Q4_K kernel (`q4k_packed`, on the blocks as `unpack_q4k` reads them) against the
    /// exact integer sum and against Candle's AVX2 kernel, over rows whose scales and mins
    /// take many values; skipped where the CPU lacks AVX-512 VNNI (the caller then uses
    /// Candle's kernel).
    #[test]
    fn matches_the_exact_sum_and_candles_kernel() {
        use crate::cpu::x86::q4k_packed::{dot_rows, PackedQ8K};
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let (bytes, xq) = rows_and_input(GgmlDType::Q4K);
        let blocks = blocks::<BlockQ4K>(&bytes);
        let packed = PackedQ8K::new(&xq, 1, K / 256);
        let ours = |row: &[BlockQ4K]| {
            let mut value = [f32::NAN];
            // SAFETY: the mirror has Candle's layout (checked at compile time above).
            dot_rows(unsafe { mirror(row) }, &packed, 0, &mut value).then_some(value[0])
        };
        for row in blocks.chunks_exact(K / 256) {
            let ours = ours(row).expect("available");
            let exact = dot_reference(row, &xq);
            let candle = BlockQ4K::vec_dot(K, row, &xq);
            let tolerance = 1e-5 * exact.abs().max(1.0);
            assert!((f64::from(ours) - exact).abs() <= tolerance, "ours {ours} exact {exact}");
            assert!((f64::from(candle) - exact).abs() <= tolerance, "candle {candle} exact {exact}");
        }
        assert!(ours(&blocks[..2]).is_none(), "lengths differ");
    }

    /// Q6_K against Candle's kernel (exact integer parts there too, its own float order).
    #[test]
    fn q6k_matches_candles_kernel() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let (bytes, xq) = rows_and_input(GgmlDType::Q6K);
        for row in blocks::<BlockQ6K>(&bytes).chunks_exact(K / 256) {
            let ours = dot_q6k(row, &xq).expect("available");
            let candle = BlockQ6K::vec_dot(K, row, &xq);
            assert!((ours - candle).abs() <= 1e-5 * candle.abs().max(1.0), "ours {ours} candle {candle}");
        }
    }

    /// Several inputs at once give each input's single-row bits, for every count of
    /// inputs (whole groups and the rest); wrong lengths are refused. (Q4_K's kernel:
    /// `q4k_packed`'s tests.)
    #[test]
    fn many_inputs_give_each_inputs_bits() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let xs: Vec<f32> = (0..9 * K).map(|i| ((i * 104729 % 997) as f32 / 997.0 - 0.5) * 4.0).collect();
        let xq = quantize_input(&xs);
        let per_row = K / 256;
        let (bytes, _) = rows_and_input(GgmlDType::Q6K);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for rows in 1..=9 {
            let inputs = &xq[..rows * per_row];
            for w_row in 0..N {
                let w = &blocks::<BlockQ6K>(&bytes)[w_row * per_row..(w_row + 1) * per_row];
                let mut many = vec![f32::NAN; rows];
                assert!(dot_q6k_many(w, inputs, &mut many));
                let single: Vec<f32> =
                    inputs.chunks_exact(per_row).map(|x| dot_q6k(w, x).expect("available")).collect();
                assert_eq!(bits(&many), bits(&single), "{rows} inputs, row {w_row}");
            }
        }
        let w = &blocks::<BlockQ6K>(&bytes)[..per_row];
        assert!(!dot_q6k_many(w, &xq[..2 * per_row + 1], &mut [0.0; 2]), "lengths differ");
    }

    #[test]
    fn scales_unpack_as_ggml_does() {
        // ggml's get_scale_min_k4, written out.
        let packed: [u8; 12] = [0xC1, 0x82, 0x43, 0xFF, 0x05, 0x46, 0x87, 0xC8, 0x9A, 0x3B, 0xEC, 0x0D];
        let sm = scales_and_mins(&packed);
        for j in 0..8 {
            let (sc, m) = if j < 4 {
                (packed[j] & 63, packed[j + 4] & 63)
            } else {
                ((packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4), (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4))
            };
            assert_eq!((sm[j], sm[8 + j]), (sc, m), "sub-block {j}");
        }
    }
}
