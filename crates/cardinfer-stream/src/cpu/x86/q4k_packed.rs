//! The Q4_K × Q8_K products with AVX-512 VNNI over inputs repacked once per product, for
//! the CPU's matrix products ([`crate::cpu::matvec`]) on machines that have it.
//!
//! [`crate::cpu::x86::vnni_dot`]'s kernel reads Candle's Q8_K blocks as they are, so for
//! every weight row and input it gathers the input's bytes into the order of the nibble
//! vectors (eight 32-byte loads, four inserts), sums the input's sixteen partial sums into
//! eight sub-block sums, and reduces the block's minimum term to one scalar: about 36
//! instructions per block and input, where a prompt's product spends its time. Here the
//! inputs are repacked once per product ([`PackedQ8K`]: the bytes already in vector order,
//! the sub-block sums and the f32 scale precomputed), so a block and input take about 18:
//! four `vpdpbusd` with their inputs straight from memory, the scales applied by two
//! `vpmaddwd`, one float multiply-add, and the minimum term as a four-lane multiply-add
//! reduced once at the end of the row.
//!
//! Each input's steps are the same, in the same order, whatever number of inputs a call
//! takes, and every Q4_K product of a model (a decode step's too) goes through this kernel
//! where it runs, so chunked, streamed and resident CPU runs agree bit for bit.

use candle_core::quantized::k_quants::BlockQ8K;

use crate::cpu::x86::vnni_dot::{mirror, Q4K};
#[cfg(target_arch = "x86_64")]
use crate::cpu::x86::vnni_dot::{unpack_q4k, UnpackedQ4K};

/// Whether this machine runs the kernel (the features of [`crate::cpu::x86::vnni_dot`]).
pub fn available() -> bool {
    crate::cpu::x86::vnni_dot::available()
}

/// Q8_K input rows repacked for the kernel.
pub(crate) struct PackedQ8K {
    /// Blocks per input row.
    blocks: usize,
    /// Input rows.
    rows: usize,
    /// Each block's 256 bytes as the four 64-byte vectors the nibbles meet: values
    /// 0..32 with 64..96, 32..64 with 96..128, 128..160 with 192..224, 160..192 with 224..256.
    bytes: Vec<i8>,
    /// Each block's eight sub-block sums (32 values each).
    sub_sums: Vec<i16>,
    /// Each block's scale.
    scales: Vec<f32>,
}

/// Where each 32-byte run of a block's bytes goes in [`PackedQ8K::bytes`].
const RUN_ORDER: [usize; 8] = [0, 2, 1, 3, 4, 6, 5, 7];

impl PackedQ8K {
    /// Repacks `rows` input rows of `blocks` Q8_K blocks each (`xs`, row after row).
    pub(crate) fn new(xs: &[BlockQ8K], rows: usize, blocks: usize) -> Self {
        // SAFETY: the mirror has Candle's layout (checked at compile time in vnni_dot).
        let xs: &[crate::cpu::x86::vnni_dot::Q8K] = unsafe { mirror(xs) };
        let count = rows * blocks;
        let mut packed =
            Self { blocks, rows, bytes: vec![0; count * 256], sub_sums: vec![0; count * 8], scales: vec![0.0; count] };
        for (i, block) in xs.iter().take(count).enumerate() {
            for (run, &slot) in RUN_ORDER.iter().enumerate() {
                packed.bytes[i * 256 + slot * 32..][..32].copy_from_slice(&block.qs[run * 32..run * 32 + 32]);
            }
            for j in 0..8 {
                packed.sub_sums[i * 8 + j] = block.bsums[2 * j] + block.bsums[2 * j + 1];
            }
            packed.scales[i] = block.d;
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

/// The products of the Q4_K weight row `w` with input rows `first..first + out.len()` of
/// `x`, into `out`; `false` where the kernel is not [`available`] or the sizes do not
/// match.
pub(crate) fn dot_rows(w: &[Q4K], x: &PackedQ8K, first: usize, out: &mut [f32]) -> bool {
    if !available() || w.len() != x.blocks || first + out.len() > x.rows {
        return false;
    }
    // SAFETY: `available` checked the CPU features the kernel is compiled for; the sizes
    // were checked above.
    unsafe { each_group(w, x, first, out) };
    true
}

/// [`dot_rows`] after its checks.
///
/// # Safety
/// The CPU must have the features [`available`] checks, `w` `x.blocks` blocks, and `x` the
/// input rows `first..first + out.len()`.
#[cfg(target_arch = "x86_64")]
unsafe fn each_group(w: &[Q4K], x: &PackedQ8K, first: usize, out: &mut [f32]) {
    let mut at = first;
    for values in out.chunks_mut(GROUP) {
        // The rest of 2 or 3 inputs (a short verification pass of speculative decoding)
        // also reads the row's blocks once.
        // SAFETY (each call): as the caller promises.
        match values.len() {
            GROUP => values.copy_from_slice(&unsafe { dot_packed::<GROUP>(w, x, at) }),
            3 => values.copy_from_slice(&unsafe { dot_packed::<3>(w, x, at) }),
            2 => values.copy_from_slice(&unsafe { dot_packed::<2>(w, x, at) }),
            _ => values.copy_from_slice(&unsafe { dot_packed::<1>(w, x, at) }),
        }
        at += values.len();
    }
}

/// Off x86 [`available`] is false, so this is never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn each_group(_: &[Q4K], _: &PackedQ8K, _: usize, _: &mut [f32]) {}

/// The row `w`'s products with input rows `first..first + R` of `x`: the weights are
/// unpacked once per block, and each input's sum takes the same steps, in the same order,
/// whatever `R` is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c")]
#[allow(clippy::needless_range_loop)] // `r` picks both the input row and its accumulators
unsafe fn dot_packed<const R: usize>(w: &[Q4K], x: &PackedQ8K, first: usize) -> [f32; R] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); R];
    let mut mins_acc = [_mm_setzero_ps(); R];
    for (i, b) in w.iter().enumerate() {
        crate::cpu::x86::vnni_dot::prefetch_ahead((b as *const Q4K).cast());
        let UnpackedQ4K { nibbles, scales0213, scales4657, mins, scales } = unpack_q4k(b);
        let (d_w, dmin_w) = (_mm_cvtss_f32(scales), _mm_cvtss_f32(_mm_movehdup_ps(scales)));
        for r in 0..R {
            let at = (first + r) * x.blocks + i;
            // SAFETY: the caller promised input row `first + r` (of `x.blocks` blocks).
            let d_x = *x.scales.get_unchecked(at);
            let q8 = x.bytes.as_ptr().add(at * 256);
            let zero = _mm512_setzero_si512();
            let product = |v: usize| _mm512_dpbusd_epi32(zero, nibbles[v], _mm512_loadu_si512(q8.add(64 * v).cast()));
            let sum = _mm512_add_epi32(
                _mm512_madd_epi16(_mm512_packs_epi32(product(0), product(1)), scales0213),
                _mm512_madd_epi16(_mm512_packs_epi32(product(2), product(3)), scales4657),
            );
            acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d_w * d_x), _mm512_cvtepi32_ps(sum), acc[r]);
            let min_products = _mm_madd_epi16(mins, _mm_loadu_si128(x.sub_sums.as_ptr().add(at * 8).cast()));
            mins_acc[r] = _mm_fmadd_ps(_mm_set1_ps(dmin_w * d_x), _mm_cvtepi32_ps(min_products), mins_acc[r]);
        }
    }
    let mut sums = [0f32; R];
    for r in 0..R {
        let m = mins_acc[r];
        let two = _mm_add_ps(m, _mm_movehl_ps(m, m));
        let mins_total = _mm_cvtss_f32(_mm_add_ss(two, _mm_movehdup_ps(two)));
        sums[r] = _mm512_reduce_add_ps(acc[r]) - mins_total;
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ4K, GgmlType};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Against the exact integer sum (`vnni_dot::dot_reference`), for every input row, and
    /// any number of inputs per call gives each input's one-input bits.
    #[test]
    fn matches_the_exact_sum_in_any_group() {
        let (n, k, rows) = (8, 1024, 9);
        let values: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.3).collect();
        let w = QTensor::quantize(&Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap(), GgmlDType::Q4K).unwrap();
        let bytes = w.data().unwrap().into_owned();
        // SAFETY: the bytes are `n * k / 256` Candle Q4_K blocks (aligned: checked).
        assert!((bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<BlockQ4K>()));
        let blocks: &[BlockQ4K] = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), n * k / 256) };
        let xs: Vec<f32> = (0..rows * k).map(|i| ((i * 104729 % 997) as f32 / 997.0 - 0.5) * 4.0).collect();
        let mut xq = vec![BlockQ8K::zeros(); rows * k / 256];
        BlockQ8K::from_float(&xs, &mut xq);
        let packed = PackedQ8K::new(&xq, rows, k / 256);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for row in blocks.chunks_exact(k / 256) {
            // SAFETY: the mirror has Candle's layout.
            let w_ours: &[Q4K] = unsafe { mirror(row) };
            let mut all = vec![f32::NAN; rows];
            if !dot_rows(w_ours, &packed, 0, &mut all) {
                eprintln!("skipped: no AVX-512 VNNI on this CPU");
                return;
            }
            for (r, value) in all.iter().enumerate() {
                let exact = crate::cpu::x86::vnni_dot::dot_reference(row, &xq[r * k / 256..(r + 1) * k / 256]);
                assert!(
                    (f64::from(*value) - exact).abs() <= 1e-5 * exact.abs().max(1.0),
                    "input {r}: {value} vs {exact}"
                );
            }
            for count in 1..=rows {
                let mut some = vec![f32::NAN; count];
                assert!(dot_rows(w_ours, &packed, rows - count, &mut some));
                assert_eq!(bits(&some), bits(&all[rows - count..]), "the last {count} inputs");
            }
            assert!(!dot_rows(w_ours, &packed, rows, &mut [0.0]), "past the last input");
        }
    }
}
