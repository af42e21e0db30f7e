//! The legacy 32-value block types — Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 — against 8-bit inputs
//! (Q8_0, or Q8_1 for the types with a minimum) with AVX2, for the CPU's matrix-vector
//! products ([`crate::cpu::matvec`]). Small real models are made of these: rows of 576 or
//! 896 values are not multiples of 256, so a Q4_K_M file falls back to them, and SmolLM2's
//! default file is Q4_1. Candle's kernels for them are scalar unless the crate is built
//! for a CPU with AVX (`-C target-cpu`), which a distributed binary is not; these are
//! chosen at run time.
//!
//! Per block, as ggml's AVX2 kernels: the 32 weights unpacked to bytes (nibbles, plus the
//! fifth bit from `qh` for Q5), multiplied with the input's bytes by `maddubs` (unsigned ×
//! signed; signed × signed through `sign`), pairs summed by `madd`, and one float
//! multiply-add with the two scales; Q4_1 and Q5_1 add `m · s` (the weight block's minimum
//! times the input block's scaled sum). The integer parts are exact; the float sums run in
//! another order than Candle's, so the last bits can differ from its kernel (every CPU
//! product goes through the same kernel, so streamed and resident CPU runs agree).

use candle_core::quantized::k_quants::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};

/// Q4_0's block: f16 scale, 32 nibbles (value `j` the low nibble of byte `j`, value `j + 16`
/// its high nibble), a value is `nibble - 8`.
#[repr(C)]
pub(crate) struct Q4_0 {
    pub(crate) d: u16,
    pub(crate) qs: [u8; 16],
}

/// Q4_1's block: f16 scale and minimum, 32 nibbles; a value is `d · nibble + m`.
#[repr(C)]
pub(crate) struct Q4_1 {
    pub(crate) d: u16,
    pub(crate) m: u16,
    pub(crate) qs: [u8; 16],
}

/// Q5_0's block: f16 scale, the 32 fifth bits, 32 nibbles; a value is `(nibble | bit << 4) - 16`.
#[repr(C)]
pub(crate) struct Q5_0 {
    pub(crate) d: u16,
    pub(crate) qh: [u8; 4],
    pub(crate) qs: [u8; 16],
}

/// Q5_1's block: f16 scale and minimum, the fifth bits, nibbles; a value is `d · q + m`.
#[repr(C)]
pub(crate) struct Q5_1 {
    pub(crate) d: u16,
    pub(crate) m: u16,
    pub(crate) qh: [u8; 4],
    pub(crate) qs: [u8; 16],
}

/// Q8_0's block: f16 scale, 32 signed bytes.
#[repr(C)]
pub(crate) struct Q8_0 {
    pub(crate) d: u16,
    pub(crate) qs: [i8; 32],
}

/// Q8_1's block: f16 scale, f16 `s` (the scale times the sum of the bytes), 32 signed bytes.
#[repr(C)]
pub(crate) struct Q8_1 {
    pub(crate) d: u16,
    pub(crate) s: u16,
    pub(crate) qs: [i8; 32],
}

macro_rules! same_layout {
    ($($ours:ty => $candle:ty),*) => {$(
        const _: () = assert!(std::mem::size_of::<$ours>() == std::mem::size_of::<$candle>());
        const _: () = assert!(std::mem::align_of::<$ours>() <= std::mem::align_of::<$candle>());
    )*};
}
same_layout!(Q4_0 => BlockQ4_0, Q4_1 => BlockQ4_1, Q5_0 => BlockQ5_0, Q5_1 => BlockQ5_1, Q8_0 => BlockQ8_0, Q8_1 => BlockQ8_1);

/// Whether this machine runs the kernels (AVX2, FMA and F16C) and they are chosen
/// ([`CpuKernels::CandleBlockDot`](crate::cpu::kernels::CpuKernels::CandleBlockDot) turns
/// them off).
pub fn available() -> bool {
    hardware() && crate::cpu::kernels::selected() != crate::cpu::kernels::CpuKernels::CandleBlockDot
}

fn hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The weight types these kernels cover, each with its input type and how a block's 32
/// weights become bytes for `maddubs`.
trait Legacy: Sized {
    /// The input block type (Q8_0 or Q8_1).
    type Input: Input;
    /// Whether a block has a minimum (Q4_1, Q5_1).
    const HAS_MIN: bool = false;
    /// The weight block's f16 scale.
    fn d(&self) -> u16;
    /// The weight block's f16 minimum and the input block's f16 `s`, for the types with a
    /// minimum (`m · s` is added per block).
    fn min_and_sum(&self, _x: &Self::Input) -> Option<(u16, u16)> {
        None
    }
    /// The 32 weights as bytes, with whether they are signed (then multiplied through
    /// `sign`) or unsigned.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn bytes(&self) -> (std::arch::x86_64::__m256i, bool);
}

/// An 8-bit input block: its f16 scale and its 32 bytes.
trait Input {
    fn scale_and_bytes(&self) -> (u16, &[i8; 32]);
}

impl Input for Q8_0 {
    fn scale_and_bytes(&self) -> (u16, &[i8; 32]) {
        (self.d, &self.qs)
    }
}

impl Input for Q8_1 {
    fn scale_and_bytes(&self) -> (u16, &[i8; 32]) {
        (self.d, &self.qs)
    }
}

/// 32 nibbles as bytes in value order (the low nibbles, then the high ones).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn nibbles(qs: &[u8; 16]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let packed = _mm_loadu_si128(qs.as_ptr().cast());
    let both = _mm256_insertf128_si256::<1>(_mm256_castsi128_si256(packed), _mm_srli_epi16::<4>(packed));
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// The 32 bits of `qh` as bytes: 0xFF where bit `j` is set, 0 elsewhere (ggml's
/// `bytes_from_bits_32`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn bit_bytes(qh: &[u8; 4]) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let bits = _mm256_set1_epi32(i32::from_le_bytes(*qh));
    let spread =
        _mm256_shuffle_epi8(bits, _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0));
    let marked = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(marked, _mm256_set1_epi64x(-1))
}

impl Legacy for Q4_0 {
    type Input = Q8_0;
    fn d(&self) -> u16 {
        self.d
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn bytes(&self) -> (std::arch::x86_64::__m256i, bool) {
        use std::arch::x86_64::*;
        (_mm256_sub_epi8(nibbles(&self.qs), _mm256_set1_epi8(8)), true)
    }
}

impl Legacy for Q8_0 {
    type Input = Q8_0;
    fn d(&self) -> u16 {
        self.d
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn bytes(&self) -> (std::arch::x86_64::__m256i, bool) {
        (std::arch::x86_64::_mm256_loadu_si256(self.qs.as_ptr().cast()), true)
    }
}

impl Legacy for Q4_1 {
    type Input = Q8_1;
    const HAS_MIN: bool = true;
    fn d(&self) -> u16 {
        self.d
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn bytes(&self) -> (std::arch::x86_64::__m256i, bool) {
        (nibbles(&self.qs), false)
    }
    fn min_and_sum(&self, x: &Q8_1) -> Option<(u16, u16)> {
        Some((self.m, x.s))
    }
}

impl Legacy for Q5_0 {
    type Input = Q8_0;
    fn d(&self) -> u16 {
        self.d
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn bytes(&self) -> (std::arch::x86_64::__m256i, bool) {
        use std::arch::x86_64::*;
        // Without the fifth bit a value is nibble - 16: the nibble with 0xF0 set, as i8.
        let high = _mm256_andnot_si256(bit_bytes(&self.qh), _mm256_set1_epi8(0xF0u8 as i8));
        (_mm256_or_si256(nibbles(&self.qs), high), true)
    }
}

impl Legacy for Q5_1 {
    type Input = Q8_1;
    const HAS_MIN: bool = true;
    fn d(&self) -> u16 {
        self.d
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn bytes(&self) -> (std::arch::x86_64::__m256i, bool) {
        use std::arch::x86_64::*;
        let high = _mm256_and_si256(bit_bytes(&self.qh), _mm256_set1_epi8(0x10));
        (_mm256_or_si256(nibbles(&self.qs), high), false)
    }
    fn min_and_sum(&self, x: &Q8_1) -> Option<(u16, u16)> {
        Some((self.m, x.s))
    }
}

/// The row `w`'s products with each of the `R` inputs `xs` (each `w.len()` blocks): the
/// weights are unpacked once per block, and each input's sum takes the same steps, in the
/// same order, whatever `R` is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2<M: Legacy, const R: usize>(w: &[M], xs: [&[M::Input]; R]) -> [f32; R] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut offsets = [0f32; R];
    for (i, b) in w.iter().enumerate() {
        // One request per 64 bytes or so of weights (blocks are 18 to 34 bytes).
        if i % 2 == 0 {
            crate::cpu::x86::vnni_dot::prefetch_ahead((b as *const M).cast());
        }
        let (weights, signed) = b.bytes();
        // Signed weights: |w| × (x with w's sign), as `maddubs` takes an unsigned side.
        let magnitude = if signed { _mm256_sign_epi8(weights, weights) } else { weights };
        for r in 0..R {
            let x = &xs[r][i];
            let (d_x, qs) = x.scale_and_bytes();
            let mut q = _mm256_loadu_si256(qs.as_ptr().cast());
            if signed {
                q = _mm256_sign_epi8(q, weights);
            }
            let pairs = _mm256_maddubs_epi16(magnitude, q);
            let sums = _mm256_madd_epi16(pairs, ones);
            // The block's f16 numbers in one conversion (F16C): d_w, d_x, m_w, s_x.
            let (m, s) = b.min_and_sum(x).unwrap_or((0, 0));
            let halves = _mm_cvtph_ps(_mm_setr_epi16(b.d() as i16, d_x as i16, m as i16, s as i16, 0, 0, 0, 0));
            let d = _mm_cvtss_f32(_mm_mul_ss(halves, _mm_movehdup_ps(halves)));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sums), acc[r]);
            if M::HAS_MIN {
                let high = _mm_movehl_ps(halves, halves);
                offsets[r] += _mm_cvtss_f32(_mm_mul_ss(high, _mm_movehdup_ps(high)));
            }
        }
    }
    std::array::from_fn(|r| {
        let v = acc[r];
        let four = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let two = _mm_add_ps(four, _mm_movehl_ps(four, four));
        let one = _mm_add_ss(two, _mm_movehdup_ps(two));
        _mm_cvtss_f32(one) + offsets[r]
    })
}

/// Inputs one call of the kernel takes together in the `_many` products.
const GROUP: usize = 4;

macro_rules! kernels {
    ($one:ident, $many:ident, $candle:ty, $input:ty, $ours:ty, $ours_input:ty) => {
        /// `Σ w·x` over matching blocks of a weight row and an input row; `None` where the
        /// kernel is not [`available`] or the lengths differ.
        pub fn $one(w: &[$candle], x: &[$input]) -> Option<f32> {
            if !available() || w.len() != x.len() {
                return None;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the mirrors have their Candle types' size and no stricter alignment
            // (checked at compile time above), all plain data; `available` checked the
            // CPU features the kernel is compiled for.
            unsafe {
                let (w, x) = (mirror::<_, $ours>(w), mirror::<_, $ours_input>(x));
                return Some(dot_avx2::<$ours, 1>(w, [x])[0]);
            }
            #[cfg(not(target_arch = "x86_64"))]
            None
        }

        /// The row's products with each of several input rows (`xs` holds `out.len()` rows
        /// of `w.len()` blocks), each value the bits of the single product; `false`, with
        /// `out` untouched, where the kernel is not [`available`] or the lengths differ.
        pub fn $many(w: &[$candle], xs: &[$input], out: &mut [f32]) -> bool {
            if !available() || w.is_empty() || xs.len() != w.len() * out.len() {
                return false;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in the single product.
            unsafe {
                let (w, xs) = (mirror::<_, $ours>(w), mirror::<_, $ours_input>(xs));
                let row = w.len();
                for (values, inputs) in out.chunks_mut(GROUP).zip(xs.chunks(row * GROUP)) {
                    if values.len() == GROUP {
                        let group = std::array::from_fn(|r| &inputs[r * row..(r + 1) * row]);
                        values.copy_from_slice(&dot_avx2::<$ours, GROUP>(w, group));
                    } else {
                        for (value, x) in values.iter_mut().zip(inputs.chunks_exact(row)) {
                            *value = dot_avx2::<$ours, 1>(w, [x])[0];
                        }
                    }
                }
                return true;
            }
            #[cfg(not(target_arch = "x86_64"))]
            false
        }
    };
}

kernels!(dot_q4_0, dot_q4_0_many, BlockQ4_0, BlockQ8_0, Q4_0, Q8_0);
kernels!(dot_q4_1, dot_q4_1_many, BlockQ4_1, BlockQ8_1, Q4_1, Q8_1);
kernels!(dot_q5_0, dot_q5_0_many, BlockQ5_0, BlockQ8_0, Q5_0, Q8_0);
kernels!(dot_q5_1, dot_q5_1_many, BlockQ5_1, BlockQ8_1, Q5_1, Q8_1);
kernels!(dot_q8_0, dot_q8_0_many, BlockQ8_0, BlockQ8_0, Q8_0, Q8_0);

use crate::cpu::x86::vnni_dot::mirror;

#[cfg(test)]
mod tests {
    use candle_core::quantized::k_quants::{
        BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, GgmlType,
    };

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0 - 1.0).collect()
    }

    /// Each kernel against Candle's scalar product of the same blocks, for one input and
    /// for several (whose values must be the single product's bits).
    type Many<T> = fn(&[T], &[<T as GgmlType>::VecDotType], &mut [f32]) -> bool;

    fn check<T: GgmlType>(one: fn(&[T], &[T::VecDotType]) -> Option<f32>, many: Many<T>) {
        let k = 32 * 18; // SmolLM2's width: 576
        let mut w = vec![T::zeros(); k / 32];
        T::from_float(&values(k, 7), &mut w);
        let inputs: Vec<Vec<T::VecDotType>> = (0..6)
            .map(|r| {
                let mut x = vec![T::VecDotType::zeros(); k / 32];
                T::VecDotType::from_float(&values(k, 100 + r), &mut x);
                x
            })
            .collect();
        let Some(ours) = one(&w, &inputs[0]) else { return }; // no AVX2 here
        let theirs = T::vec_dot_unopt(k, &w, &inputs[0]);
        assert!((ours - theirs).abs() <= 1e-4 * theirs.abs().max(1.0), "{ours} vs Candle's {theirs}");
        let flat: Vec<T::VecDotType> = inputs.iter().flatten().cloned().collect();
        let mut out = vec![0f32; inputs.len()];
        assert!(many(&w, &flat, &mut out));
        for (value, x) in out.iter().zip(&inputs) {
            assert_eq!(value.to_bits(), one(&w, x).unwrap().to_bits());
        }
    }

    #[test]
    fn every_legacy_type_agrees_with_candle() {
        check::<BlockQ4_0>(super::dot_q4_0, super::dot_q4_0_many);
        check::<BlockQ4_1>(super::dot_q4_1, super::dot_q4_1_many);
        check::<BlockQ5_0>(super::dot_q5_0, super::dot_q5_0_many);
        check::<BlockQ5_1>(super::dot_q5_1, super::dot_q5_1_many);
        check::<BlockQ8_0>(super::dot_q8_0, super::dot_q8_0_many);
        let _ = std::mem::size_of::<BlockQ8_1>();
    }
}
