//! Matrix-vector products with the bits of Candle's MMVQ kernels at batch 1
//! (`candle-kernels/src/mmvq_gguf.cu`, as `slot_kernels::mmvq` launches them).
//!
//! A row is one CUDA block of 4 warps (128 threads, `tid = 32·warp + lane`):
//! - **Q4_K**: thread `t` takes super-blocks `t/16, t/16 + 8, …`, in each the 8 nibbles
//!   of sub-blocks `2g` and `2g+1` (`g = (t%16)/4`) at offsets `4r..4r+4` and
//!   `16+4r..16+4r+4` (`r = t%4`). Per super-block (from the kernel's SASS):
//!   `sd = fma(d8₁, dot₁·sc₁, fma(d8₀, dot₀·sc₀, 0))`, `sm` likewise with the mins and the
//!   sums of the Q8_1 values, `tmp += fma(sd, d, -(dmin·sm))`;
//! - **Q6_K**: thread `t` takes super-blocks `t/32, t/32 + 4, …` at `iqs = t%32`:
//!   `s = fma(d8₁, dot₁·sc₁, fma(d8₀, dot₀·sc₀, 0))`, `tmp = fma(d, s, tmp)`;
//! - then lane `l` of warp 0 adds warps 1, 2, 3's `tmp` in that order, and the warp's xor
//!   butterfly sums the lanes.
//!
//! The integer dot products are exact, so only the float steps' order matters: the
//! scalar functions here are the reference; `exact/mmvq_avx512.rs` computes 16 threads at
//! once with the same steps.

use super::arith::warp_sum;
use super::q8_1::{BLOCK, Q8_1};
use crate::cpu::x86::vnni_dot::{mirror, scales_and_mins, Q4K, Q6K};
use candle_core::quantized::k_quants::{BlockQ4K, BlockQ6K};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

/// Values per super-block.
const QK_K: usize = 256;
/// Rows per task of the thread pool (as `cpu_matvec`).
const ROWS_PER_TASK: usize = 64;

/// One block-quantized matrix in a type this module covers, `rows × cols`.
#[derive(Clone, Copy)]
pub(crate) enum Blocks<'a> {
    /// Q4_K super-blocks, row after row.
    Q4K(&'a [Q4K]),
    /// Q6_K super-blocks, row after row.
    Q6K(&'a [Q6K]),
}

/// Whether a matrix of `dtype` is covered.
pub fn covers(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4K | GgmlDType::Q6K)
}

/// The input of a product: quantized, and laid out for the vector kernels where they run.
pub struct Input {
    q8: Q8_1,
    #[cfg(target_arch = "x86_64")]
    lanes: Option<crate::cpu::x86::mmvq_avx512::Prepared>,
}

impl Input {
    /// Quantizes `x` (a multiple of 256 values) as the device does.
    pub fn new(x: &[f32]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::x86::mmvq_avx512::available() {
            let q8 = crate::cpu::x86::mmvq_avx512::quantize(x);
            let lanes = Some(crate::cpu::x86::mmvq_avx512::Prepared::new(&q8));
            return Self { q8, lanes };
        }
        let q8 = Q8_1::quantize(x);
        #[cfg(target_arch = "x86_64")]
        let lanes = None;
        Self {
            q8,
            #[cfg(target_arch = "x86_64")]
            lanes,
        }
    }
}

/// `x · row` for row `row` of a matrix `cols` wide, with the kernel's bits.
pub(crate) fn row_dot(w: Blocks<'_>, row: usize, cols: usize, x: &Input) -> f32 {
    let per_row = cols / QK_K;
    let range = row * per_row..(row + 1) * per_row;
    #[cfg(target_arch = "x86_64")]
    if let Some(lanes) = &x.lanes {
        // SAFETY: `lanes` exists only where the CPU has the kernels' features, and it was
        // laid out from an input `cols` wide.
        return unsafe {
            match w {
                Blocks::Q4K(b) => crate::cpu::x86::mmvq_avx512::row_q4k(&b[range], lanes),
                Blocks::Q6K(b) => crate::cpu::x86::mmvq_avx512::row_q6k(&b[range], lanes),
            }
        };
    }
    match w {
        Blocks::Q4K(b) => row_q4k(&b[range], &x.q8),
        Blocks::Q6K(b) => row_q6k(&b[range], &x.q8),
    }
}

/// The four warps' per-lane sums combined as the kernel does: warp 0's lane plus warps 1,
/// 2, 3's, then the butterfly. `tmp[t]` is thread `t`'s sum.
pub fn reduce_threads(tmp: &[f32; 128]) -> f32 {
    let mut lanes = [0f32; 32];
    for (lane, v) in lanes.iter_mut().enumerate() {
        *v = ((tmp[lane] + tmp[32 + lane]) + tmp[64 + lane]) + tmp[96 + lane];
    }
    warp_sum(lanes)
}

/// A little-endian i32 from 4 bytes.
fn int_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// `Σ aᵢ·bᵢ` over the 4 signed bytes of each (`dp4a`).
fn dp4a(a: i32, b: i32) -> i32 {
    a.to_le_bytes().iter().zip(b.to_le_bytes()).map(|(&x, y)| x as i8 as i32 * y as i8 as i32).sum()
}

/// The 4 values of Q8_1 block `block` at int `index` (bytes `4·index..`), as an i32.
fn q8_int(x: &Q8_1, block: usize, index: usize) -> i32 {
    let at = block * BLOCK + 4 * index;
    i32::from_le_bytes([x.qs[at] as u8, x.qs[at + 1] as u8, x.qs[at + 2] as u8, x.qs[at + 3] as u8])
}

/// The reference Q4_K row (one super-block per `w` element).
pub(crate) fn row_q4k(w: &[Q4K], x: &Q8_1) -> f32 {
    let mut tmp = [0f32; 128];
    for (s, b) in w.iter().enumerate() {
        let (d, dmin) = (f16::from_bits(b.d).to_f32(), f16::from_bits(b.dmin).to_f32());
        let sm = scales_and_mins(&b.scales);
        for slot in 0..16 {
            let (g, r) = (slot / 4, slot % 4);
            let v = [int_at(&b.qs, 32 * g + 4 * r), int_at(&b.qs, 32 * g + 16 + 4 * r)];
            let (mut sum_d, mut sum_m) = (0f32, 0f32);
            for i in 0..2 {
                let sub = 2 * g + i;
                let block = s * (QK_K / BLOCK) + sub;
                let u = [q8_int(x, block, r), q8_int(x, block, r + 4)];
                let nibbles = |v: i32| (v >> (4 * i)) & 0x0F0F_0F0F;
                let dot = dp4a(nibbles(v[0]), u[0]) + dp4a(nibbles(v[1]), u[1]);
                let sum = dp4a(0x0101_0101, u[0]) + dp4a(0x0101_0101, u[1]);
                let d8 = x.d[block];
                sum_d = d8.mul_add((dot * sm[sub] as i32) as f32, sum_d);
                sum_m = d8.mul_add((sum * sm[8 + sub] as i32) as f32, sum_m);
            }
            let t = 16 * (s % 8) + slot;
            tmp[t] += sum_d.mul_add(d, -(dmin * sum_m));
        }
    }
    reduce_threads(&tmp)
}

/// The reference Q6_K row.
pub(crate) fn row_q6k(w: &[Q6K], x: &Q8_1) -> f32 {
    let mut tmp = [0f32; 128];
    for (s, b) in w.iter().enumerate() {
        let d = f16::from_bits(b.d).to_f32();
        for iqs in 0..32 {
            let offset = 4 * (iqs / 16) + (iqs % 16) / 8;
            let scale_offset = 8 * (iqs / 16) + (iqs % 16) / 4;
            let vh_shift = 2 * ((iqs % 16) / 8);
            let vl = int_at(&b.ql, 4 * iqs);
            let vh = int_at(&b.qh, 4 * (8 * (iqs / 16) + iqs % 8)) >> vh_shift;
            let mut sum = 0f32;
            for i in 0..2 {
                let sc = b.scales[scale_offset + 4 * i] as i32;
                let low = (vl >> (4 * i)) & 0x0F0F_0F0F;
                let high = ((vh >> (4 * i)) << 4) & 0x3030_3030;
                let block = s * (QK_K / BLOCK) + offset + 2 * i;
                // (low | high) − 32 in each byte (`__vsubss4`): 0..63 → −32..31.
                let values = i32::from_le_bytes((low | high).to_le_bytes().map(|b| (b as i8 - 32) as u8));
                let dot = dp4a(values, q8_int(x, block, iqs % 8));
                sum = x.d[block].mul_add((dot * sc) as f32, sum);
            }
            let t = 32 * (s % 4) + iqs;
            tmp[t] = d.mul_add(sum, tmp[t]);
        }
    }
    reduce_threads(&tmp)
}

/// `x · Wᵀ` for several matrices sharing the input `x` (a layer's q, k, v; its gate and
/// up), as one job of the thread pool; `None` when one of them is not a covered type in
/// host memory of width `x.len()`.
pub fn products(ws: &[&QTensor], x: &[f32]) -> candle_core::Result<Option<Vec<Vec<f32>>>> {
    let cols = x.len();
    if !cols.is_multiple_of(QK_K) {
        return Ok(None);
    }
    let mut shapes = Vec::with_capacity(ws.len());
    for w in ws {
        match (w.device(), w.shape().dims(), covers(w.dtype())) {
            (candle_core::Device::Cpu, [n, k], true) if *k == cols => shapes.push(*n),
            _ => return Ok(None),
        }
    }
    let data = ws.iter().map(|w| w.data()).collect::<candle_core::Result<Vec<_>>>()?;
    let mut matrices = Vec::with_capacity(ws.len());
    for ((w, bytes), &n) in ws.iter().zip(&data).zip(&shapes) {
        match blocks(w.dtype(), bytes, n, cols) {
            Some(b) => matrices.push(b),
            None => return Ok(None),
        }
    }
    let xq = Input::new(x);
    let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&n| vec![0f32; n]).collect();
    let mut tasks = Vec::new();
    for (m, out) in matrices.iter().zip(outs.iter_mut()) {
        for (t, chunk) in out.chunks_mut(ROWS_PER_TASK).enumerate() {
            tasks.push((*m, t * ROWS_PER_TASK, chunk));
        }
    }
    crate::cpu::matvec::run_tasks(tasks, |(m, first, out)| {
        for (i, y) in out.iter_mut().enumerate() {
            *y = row_dot(*m, *first + i, cols, &xq);
        }
    });
    Ok(Some(outs))
}

/// `bytes` as the super-blocks of an `n × k` matrix of `dtype`, when the length and
/// alignment fit ([`crate::cpu::matvec::blocks_of`]).
fn blocks(dtype: GgmlDType, bytes: &[u8], n: usize, k: usize) -> Option<Blocks<'_>> {
    use crate::cpu::matvec::blocks_of;
    // SAFETY: each mirror has its Candle type's size and layout (checked at compile time
    // in `vnni_dot`); Candle's block types are plain data.
    unsafe {
        match dtype {
            GgmlDType::Q4K => blocks_of::<BlockQ4K>(bytes, n, k).map(|b| Blocks::Q4K(mirror(b))),
            GgmlDType::Q6K => blocks_of::<BlockQ6K>(bytes, n, k).map(|b| Blocks::Q6K(mirror(b))),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn weights(dtype: GgmlDType, n: usize, k: usize) -> QTensor {
        let values = crate::test_util::values(n * k, 1, 0.1);
        QTensor::quantize(&Tensor::from_vec(values, (n, k), &Device::Cpu).expect("tensor"), dtype).expect("quantize")
    }

    fn input(k: usize) -> Vec<f32> {
        crate::test_util::values(k, 2, 1.0)
    }

    /// Products equal the true product of the dequantized weights with the quantized
    /// input (the per-thread reference path, indices included) to float accuracy, and
    /// the pool's rows equal the reference row by row, bit for bit.
    #[test]
    fn rows_are_the_products() {
        let k = 1024;
        let x = input(k);
        let xq = Q8_1::quantize(&x);
        let xd: Vec<f64> = xq.qs.iter().enumerate().map(|(i, q)| *q as f64 * xq.d[i / BLOCK] as f64).collect();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            let n = 130;
            let w = weights(dtype, n, k);
            let dense = w.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
            let bytes = w.data().unwrap();
            let m = blocks(dtype, &bytes, n, k).unwrap();
            let ys = products(&[&w], &x).unwrap().unwrap().remove(0);
            for (row, y) in ys.iter().enumerate() {
                let want: f64 = dense[row].iter().zip(&xd).map(|(a, b)| *a as f64 * b).sum();
                let magnitude: f64 = dense[row].iter().zip(&xd).map(|(a, b)| (*a as f64 * b).abs()).sum();
                assert!((*y as f64 - want).abs() < 1e-6 * magnitude, "{dtype:?} row {row}: {y} vs {want}");
                let reference = match m {
                    Blocks::Q4K(b) => row_q4k(&b[row * 4..row * 4 + 4], &xq),
                    Blocks::Q6K(b) => row_q6k(&b[row * 4..row * 4 + 4], &xq),
                };
                assert_eq!(y.to_bits(), reference.to_bits(), "{dtype:?} row {row}: pool vs reference");
            }
        }
        assert!(products(&[&weights(GgmlDType::Q8_0, 4, 256)], &input(256)).unwrap().is_none(), "Q8_0");
        assert!(products(&[&weights(GgmlDType::Q4K, 4, 512)], &input(256)).unwrap().is_none(), "width");
    }
}
