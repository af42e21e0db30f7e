//! The legacy 32-value block types — Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 — against 8-bit inputs
//! with AVX-512 VNNI, for the CPU's matrix products ([`crate::cpu::matvec`]) on machines
//! that have it (else the AVX2 kernels of [`crate::cpu::x86::legacy_dot`] run).
//!
//! Small real models are mostly these types (rows of 576, 640 or 896 values make a Q4_K_M
//! file fall back to Q5_0 / Q8_0; SmolLM2's default file is Q4_1), and a prompt's product
//! reads each weight block once for many inputs, so what bounds it is the work per block
//! and input. The AVX2 kernel spends about fifteen instructions there (two f16 scales
//! converted, `maddubs` + `madd` over 32 weights, a broadcast, a float multiply-add); here
//! it is five over 64 weights (two blocks):
//! - the inputs are repacked once per product ([`PackedInputs`]): their bytes two blocks to
//!   a 64-byte vector, their scales as f32 already spread over each block's eight lanes,
//!   and the offset term below as the dot product's starting value;
//! - a weight block's values are made unsigned by an offset (`q + 8` for Q4_0, `q + 16`
//!   for Q5_0, `q + 128` for Q8_0), so one `vpdpbusd` (u8 × i8) multiplies them, started
//!   from `−offset × Σ x` of each lane's four inputs: the integer sums are exact;
//! - each lane's sum becomes a float and takes the two blocks' scales per lane; Q4_1 and
//!   Q5_1 add `m · s` (the weight block's minimum times the input block's scaled sum) as
//!   a second multiply-add over the lanes (`s / 8` in each of the block's eight lanes).
//!
//! A value's float sums run in another order than the AVX2 kernel's, so the last bits can
//! differ from it; every CPU product of a model goes through one of the two (chosen once
//! per machine), and each input's steps are the same whatever number of inputs a call
//! takes, so chunked, streamed and resident CPU runs agree bit for bit.

use candle_core::quantized::k_quants::{BlockQ8_0, BlockQ8_1};

use crate::cpu::x86::legacy_dot::{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0};

/// Whether this machine runs these kernels: AVX-512 VNNI (with F, BW, VL) for the products
/// and AVX2 and F16C for unpacking, and the legacy kernels are chosen at all
/// ([`crate::cpu::x86::legacy_dot::available`]).
pub fn available() -> bool {
    crate::cpu::x86::legacy_dot::available() && crate::cpu::x86::vnni_dot::available()
}

/// A legacy weight block as `vpdpbusd` takes it.
pub(crate) trait Unsigned: Sized + Sync {
    /// Added to each value to make it unsigned (taken off again through the inputs' sums).
    const OFFSET: i32;
    /// Whether a block has a minimum (Q4_1, Q5_1): `m · s` is added per block.
    const HAS_MIN: bool = false;
    /// The block's f16 scale, and its f16 minimum (0 without one).
    fn scale_and_min(&self) -> (u16, u16);
    /// The 32 values plus [`Self::OFFSET`], as bytes in value order.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn unsigned_bytes(&self) -> std::arch::x86_64::__m256i;
}

#[cfg(target_arch = "x86_64")]
use crate::cpu::x86::legacy_dot::{bit_bytes, nibbles};

/// Nibbles plus the fifth bits of Q5_0 / Q5_1 (0..32).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
unsafe fn five_bits(qs: &[u8; 16], qh: &[u8; 4]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: as the caller promises.
    unsafe { _mm256_or_si256(nibbles(qs), _mm256_and_si256(bit_bytes(qh), _mm256_set1_epi8(0x10))) }
}

/// `Unsigned` for a block type: its offset, its minimum (a field, or none), and how its
/// values become unsigned bytes.
macro_rules! unsigned {
    ($block:ty, $offset:expr, $min:ident, |$b:ident| $bytes:expr) => {
        impl Unsigned for $block {
            const OFFSET: i32 = $offset;
            const HAS_MIN: bool = unsigned!(@has $min);
            fn scale_and_min(&self) -> (u16, u16) {
                (self.d, unsigned!(@min self, $min))
            }
            #[cfg(target_arch = "x86_64")]
            unsafe fn unsigned_bytes(&self) -> std::arch::x86_64::__m256i {
                let $b = self;
                // SAFETY: the caller promises AVX2 (the trait's contract).
                unsafe { $bytes }
            }
        }
    };
    (@has none) => { false };
    (@has m) => { true };
    (@min $self:ident, none) => { 0 };
    (@min $self:ident, m) => { $self.m };
}

unsigned!(Q4_0, 8, none, |b| nibbles(&b.qs));
unsigned!(Q4_1, 0, m, |b| nibbles(&b.qs));
unsigned!(Q5_0, 16, none, |b| five_bits(&b.qs, &b.qh));
unsigned!(Q5_1, 0, m, |b| five_bits(&b.qs, &b.qh));
unsigned!(Q8_0, 128, none, |b| {
    use std::arch::x86_64::*;
    _mm256_xor_si256(_mm256_loadu_si256(b.qs.as_ptr().cast()), _mm256_set1_epi8(i8::MIN))
});

/// An 8-bit input block as Candle quantizes it (Q8_0 or Q8_1): scale, scaled sum, bytes.
pub(crate) trait InputBlock {
    /// The f16 scale, the f16 `s` (0 for Q8_0), and the 32 bytes.
    fn parts(&self) -> (u16, u16, &[i8; 32]);
}

impl InputBlock for BlockQ8_0 {
    fn parts(&self) -> (u16, u16, &[i8; 32]) {
        // SAFETY: the mirror has Candle's layout (checked in legacy_dot).
        let q: &Q8_0 = unsafe { &crate::cpu::x86::vnni_dot::mirror::<_, Q8_0>(std::slice::from_ref(self))[0] };
        (q.d, 0, &q.qs)
    }
}

impl InputBlock for BlockQ8_1 {
    fn parts(&self) -> (u16, u16, &[i8; 32]) {
        use crate::cpu::x86::legacy_dot::Q8_1;
        // SAFETY: the mirror has Candle's layout (checked in legacy_dot).
        let q: &Q8_1 = unsafe { &crate::cpu::x86::vnni_dot::mirror::<_, Q8_1>(std::slice::from_ref(self))[0] };
        (q.d, q.s, &q.qs)
    }
}

/// Input rows repacked for the kernel, two blocks (a pair) to a 64-byte vector; an odd
/// last block is paired with zeros.
pub(crate) struct PackedInputs {
    /// Pairs per input row.
    pairs: usize,
    /// Input rows.
    rows: usize,
    /// The bytes, 64 per pair.
    bytes: Vec<i8>,
    /// Each block's f32 scale in its eight lanes, 16 per pair.
    scales: Vec<f32>,
    /// `−offset × Σ` of each lane's four bytes: the product's starting value, 16 per pair.
    starts: Vec<i32>,
    /// Each block's `s / 8` in its eight lanes (types with a minimum), 16 per pair.
    sums: Vec<f32>,
}

impl PackedInputs {
    /// Repacks `rows` input rows of `blocks` blocks each (`xs`, row after row) for weights
    /// of type `M`.
    pub(crate) fn new<M: Unsigned, X: InputBlock>(xs: &[X], rows: usize, blocks: usize) -> Self {
        let pairs = blocks.div_ceil(2);
        let mut packed = Self {
            pairs,
            rows,
            bytes: vec![0; rows * pairs * 64],
            scales: vec![0.0; rows * pairs * 16],
            starts: vec![0; rows * pairs * 16],
            sums: vec![0.0; if M::HAS_MIN { rows * pairs * 16 } else { 0 }],
        };
        for (r, row) in xs.chunks_exact(blocks).take(rows).enumerate() {
            for (b, block) in row.iter().enumerate() {
                let (d, s, qs) = block.parts();
                let at = r * pairs * 2 + b; // the block's index among 32-value slots
                packed.bytes[at * 32..at * 32 + 32].copy_from_slice(qs);
                let lanes = at * 8..at * 8 + 8;
                packed.scales[lanes.clone()].fill(half::f16::from_bits(d).to_f32());
                for (lane, four) in lanes.clone().zip(qs.chunks_exact(4)) {
                    packed.starts[lane] = -M::OFFSET * four.iter().map(|&q| i32::from(q)).sum::<i32>();
                }
                if M::HAS_MIN {
                    packed.sums[lanes].fill(half::f16::from_bits(s).to_f32() / 8.0);
                }
            }
        }
        packed
    }

    /// Input rows.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }
}

/// Inputs one call of the kernel takes at most.
const GROUP: usize = 4;

/// Weight rows one call of the kernel takes together: each input vector loaded serves
/// all of them.
pub(crate) const ROWS: usize = 4;

/// The products of weight rows `ws` (blocks of `M`, each as long) with input rows
/// `first..first + n` of `x`, where `outs` holds each weight row's `n` values one row
/// after another; `false` where the kernels are not [`available`] or the sizes do not
/// match. With [`GROUP`] inputs or more, [`ROWS`] weight rows go through one call of the
/// kernel, else one by one; every value has the same bits either way.
pub(crate) fn dot_rows<M: Unsigned>(ws: &[&[M]], x: &PackedInputs, first: usize, outs: &mut [f32]) -> bool {
    let Some(w0) = ws.first() else { return true };
    let n = outs.len() / ws.len();
    let fits = ws.iter().all(|w| w.len() == w0.len()) && outs.len() == n * ws.len();
    if !available() || !fits || w0.len().div_ceil(2) != x.pairs || first + n > x.rows {
        return false;
    }
    // SAFETY: `available` checked the CPU features the kernels are compiled for; the sizes
    // were checked above.
    unsafe { each_row_group(ws, x, first, n, outs) };
    true
}

/// [`dot_rows`] after its checks.
///
/// # Safety
/// The CPU must have the features [`available`] checks, every row of `ws` `x.pairs` pairs
/// of blocks, and `x` the input rows `first..first + n`.
#[cfg(target_arch = "x86_64")]
unsafe fn each_row_group<M: Unsigned>(ws: &[&[M]], x: &PackedInputs, first: usize, n: usize, outs: &mut [f32]) {
    for (w, out) in ws.chunks(ROWS).zip(outs.chunks_mut(ROWS * n)) {
        // A decode step (few inputs) reads each row once: one row at a time keeps the
        // weight stream sequential (four rows at once measured 25-35 % slower there).
        if w.len() == ROWS && n >= GROUP {
            // SAFETY: as the caller promises.
            unsafe { inputs_of::<M, ROWS>(std::array::from_fn(|i| w[i]), x, first, n, out) };
        } else {
            for (w, out) in w.iter().zip(out.chunks_mut(n)) {
                // SAFETY: as the caller promises.
                unsafe { inputs_of::<M, 1>([*w], x, first, n, out) };
            }
        }
    }
}

/// Off x86 [`available`] is false, so this is never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn each_row_group<M: Unsigned>(_: &[&[M]], _: &PackedInputs, _: usize, _: usize, _: &mut [f32]) {}

/// [`dot_vnni`] over input rows `first..first + n`, [`GROUP`] at a time and the rest one
/// by one; `out` holds each weight row's `n` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn inputs_of<M: Unsigned, const W: usize>(
    ws: [&[M]; W],
    x: &PackedInputs,
    first: usize,
    n: usize,
    out: &mut [f32],
) {
    let mut at = 0;
    while at < n {
        if n - at >= GROUP {
            let values = dot_vnni::<M, W, GROUP>(ws, x, first + at);
            for (row, values) in values.iter().enumerate() {
                out[row * n + at..row * n + at + GROUP].copy_from_slice(values);
            }
            at += GROUP;
        } else {
            let values = dot_vnni::<M, W, 1>(ws, x, first + at);
            for (row, values) in values.iter().enumerate() {
                out[row * n + at] = values[0];
            }
            at += 1;
        }
    }
}

/// The products of the `W` weight rows `ws` with input rows `first..first + R` of `x`: the
/// weights are unpacked once per pair of blocks, each input's vectors loaded once for all
/// `W` rows, and each (row, input) sum takes the same steps, in the same order, whatever
/// `W` and `R` are.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
#[allow(clippy::needless_range_loop)] // `r` picks both the input row and the accumulator
unsafe fn dot_vnni<M: Unsigned, const W: usize, const R: usize>(
    ws: [&[M]; W],
    x: &PackedInputs,
    first: usize,
) -> [[f32; R]; W] {
    use std::arch::x86_64::*;
    // Lanes 0..8 take the first block's value, 8..16 the second's.
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let mut acc = [[_mm512_setzero_ps(); R]; W];
    for p in 0..x.pairs {
        let mut unpacked = [(_mm512_setzero_si512(), _mm512_setzero_ps(), _mm512_setzero_ps()); W];
        for (row, slot) in unpacked.iter_mut().enumerate() {
            let w = ws[row];
            // SAFETY: `dot_rows` checked that every row has `x.pairs` pairs, so `2p` is a
            // block of the row.
            let first_block = w.get_unchecked(2 * p);
            crate::cpu::x86::vnni_dot::prefetch_ahead((first_block as *const M).cast());
            let (d0, m0) = first_block.scale_and_min();
            let (second_block, (d1, m1)) = match w.get(2 * p + 1) {
                Some(b) => (b.unsigned_bytes(), b.scale_and_min()),
                None => (_mm256_setzero_si256(), (0, 0)),
            };
            let weights = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(first_block.unsigned_bytes()), second_block);
            let halves = _mm_cvtph_ps(_mm_setr_epi16(d0 as i16, d1 as i16, m0 as i16, m1 as i16, 0, 0, 0, 0));
            let d_w = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(halves));
            let m_w = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(_mm_movehl_ps(halves, halves)));
            *slot = (weights, d_w, m_w);
        }
        for r in 0..R {
            let at = (first + r) * x.pairs + p;
            let bytes = _mm512_loadu_si512(x.bytes.as_ptr().add(at * 64).cast());
            let start = _mm512_loadu_si512(x.starts.as_ptr().add(at * 16).cast());
            let scale_x = _mm512_loadu_ps(x.scales.as_ptr().add(at * 16));
            let sum_x = if M::HAS_MIN { _mm512_loadu_ps(x.sums.as_ptr().add(at * 16)) } else { _mm512_setzero_ps() };
            for (row, (weights, d_w, m_w)) in unpacked.iter().enumerate() {
                let dot = _mm512_dpbusd_epi32(start, *weights, bytes);
                let scale = _mm512_mul_ps(*d_w, scale_x);
                acc[row][r] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), acc[row][r]);
                if M::HAS_MIN {
                    acc[row][r] = _mm512_fmadd_ps(*m_w, sum_x, acc[row][r]);
                }
            }
        }
    }
    let mut sums = [[0f32; R]; W];
    for (sums, acc) in sums.iter_mut().zip(&acc) {
        for (sum, acc) in sums.iter_mut().zip(acc) {
            *sum = _mm512_reduce_add_ps(*acc);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, GgmlType};

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Each type against Candle's scalar product of the same blocks (even block counts; odd
    /// ones against the AVX2 kernel, which takes them), and any number of inputs per call gives each input's one-input bits.
    fn check<T: GgmlType, M: Unsigned>(k: usize, avx2: fn(&[T], &[T::VecDotType]) -> Option<f32>)
    where
        T::VecDotType: InputBlock,
    {
        let mut w = vec![T::zeros(); k / 32];
        T::from_float(&values(k, 7), &mut w);
        let rows = 11;
        let mut xs = vec![T::VecDotType::zeros(); rows * k / 32];
        T::VecDotType::from_float(&values(rows * k, 100), &mut xs);
        let packed = PackedInputs::new::<M, _>(&xs, rows, k / 32);
        // SAFETY: the mirrors have Candle's layouts (checked in legacy_dot).
        let w_ours: &[M] = unsafe { crate::cpu::x86::vnni_dot::mirror(&w) };
        let mut all = vec![f32::NAN; rows];
        if !dot_rows(&[w_ours], &packed, 0, &mut all) {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        for (r, value) in all.iter().enumerate() {
            let x = &xs[r * k / 32..(r + 1) * k / 32];
            // Candle's scalar kernel takes even block counts only; the AVX2 kernel any.
            let theirs =
                if (k / 32).is_multiple_of(2) { T::vec_dot_unopt(k, &w, x) } else { avx2(&w, x).unwrap_or(*value) };
            assert!((value - theirs).abs() <= 1e-4 * theirs.abs().max(1.0), "row {r}: {value} vs {theirs}");
            let mut one = [f32::NAN];
            assert!(dot_rows(&[w_ours], &packed, r, &mut one));
            assert_eq!(value.to_bits(), one[0].to_bits(), "row {r} alone");
        }
        for n in 1..=rows {
            let mut some = vec![f32::NAN; n];
            assert!(dot_rows(&[w_ours], &packed, rows - n, &mut some));
            assert_eq!(bits(&some), bits(&all[rows - n..]), "the last {n} inputs");
            // Several weight rows at once (the same row again) give each row's bits.
            for weights in 1..=2 * ROWS + 1 {
                let mut many = vec![f32::NAN; weights * n];
                assert!(dot_rows(&vec![w_ours; weights], &packed, rows - n, &mut many));
                for values in many.chunks_exact(n) {
                    assert_eq!(bits(values), bits(&all[rows - n..]), "{weights} weight rows, {n} inputs");
                }
            }
        }
        assert!(!dot_rows(&[w_ours], &packed, rows, &mut [0.0]), "past the last input row");
    }

    #[test]
    fn every_legacy_type_agrees_with_candle() {
        for k in [32 * 18, 32 * 7] {
            use crate::cpu::x86::legacy_dot as avx2;
            check::<BlockQ4_0, Q4_0>(k, avx2::dot_q4_0);
            check::<BlockQ4_1, Q4_1>(k, avx2::dot_q4_1);
            check::<BlockQ5_0, Q5_0>(k, avx2::dot_q5_0);
            check::<BlockQ5_1, Q5_1>(k, avx2::dot_q5_1);
            check::<BlockQ8_0, Q8_0>(k, avx2::dot_q8_0);
        }
    }
}
