//! The KV cache's `q8_0` storage ([`KvType::Q8_0`](cardinfer_core::KvType::Q8_0)), in
//! llama.cpp's block layout: per 32 values an f16 scale `d = max|x| / 127` and 32 signed
//! bytes `round(x / d)` (ties away from zero). The CPU functions here and the kernels
//! `kv_quantize_q8_0` / `kv_dequantize_q8_0` / the fused decode kernels of
//! `kernels/decode.cu` take the same steps, each explicitly rounded once, so a cache
//! written on either side holds the same bytes and reads back as the same f32 values.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape};
use cardinfer_core::{Q8_0_BLOCK as BLOCK, Q8_0_BLOCK_BYTES as BLOCK_BYTES};
use half::f16;

/// Writes the `q8_0` block of 32 values `x` into `out` (34 bytes).
pub(crate) fn quantize_block(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
    for (q, v) in out[2..BLOCK_BYTES].iter_mut().zip(x) {
        *q = ((v * id).round() as i8) as u8;
    }
}

/// The 32 values of the `q8_0` block `block` (34 bytes) into `out`: `q · d`.
#[inline(always)]
pub(crate) fn dequantize_block(block: &[u8], out: &mut [f32]) {
    let d = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
    for (o, q) in out.iter_mut().zip(&block[2..BLOCK_BYTES]) {
        *o = (*q as i8) as f32 * d;
    }
}

/// `[.., d]` f32 (contiguous, `d` a multiple of 32) → `[.., d / 32 · 34]` bytes.
pub(crate) struct QuantizeQ8_0;

/// `[.., d / 32 · 34]` bytes → `[.., d]` f32.
pub(crate) struct DequantizeQ8_0;

fn contiguous_range(l: &Layout, op: &str) -> candle_core::Result<std::ops::Range<usize>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(a..b),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// The output shape: `shape` with its last dimension `last`.
fn with_last(shape: &Shape, last: usize) -> Shape {
    let mut dims = shape.dims().to_vec();
    if let Some(d) = dims.last_mut() {
        *d = last;
    }
    Shape::from(dims)
}

/// The blocks' shape for values laid out as `l` (rows of a multiple of 32 values).
fn quantized_shape(l: &Layout) -> candle_core::Result<Shape> {
    let d = *l.dims().last().unwrap_or(&0);
    if !d.is_multiple_of(BLOCK) {
        candle_core::bail!("q8_0 KV cache: rows of {d} values are not whole blocks of {BLOCK}");
    }
    Ok(with_last(l.shape(), d / BLOCK * BLOCK_BYTES))
}

/// The values' shape for blocks laid out as `l` (rows of a multiple of 34 bytes).
fn dequantized_shape(l: &Layout) -> candle_core::Result<Shape> {
    let row = *l.dims().last().unwrap_or(&0);
    if !row.is_multiple_of(BLOCK_BYTES) {
        candle_core::bail!("q8_0 KV cache: rows of {row} bytes are not whole blocks of {BLOCK_BYTES}");
    }
    Ok(with_last(l.shape(), row / BLOCK_BYTES * BLOCK))
}

impl CustomOp1 for QuantizeQ8_0 {
    fn name(&self) -> &'static str {
        "cardinfer-kv-quantize-q8_0"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = quantized_shape(l)?;
        let x = &s.as_slice::<f32>()?[contiguous_range(l, self.name())?];
        let mut out = vec![0u8; x.len() / BLOCK * BLOCK_BYTES];
        for (x, o) in x.chunks_exact(BLOCK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
            quantize_block(x, o);
        }
        Ok((CpuStorage::U8(out), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let shape = quantized_shape(l)?;
        let blocks = l.shape().elem_count() / BLOCK;
        Ok((map_kernel::<f32, u8>(s, l, "kv_quantize_q8_0", blocks, blocks * BLOCK_BYTES)?, shape))
    }
}

impl CustomOp1 for DequantizeQ8_0 {
    fn name(&self) -> &'static str {
        "cardinfer-kv-dequantize-q8_0"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = dequantized_shape(l)?;
        let bytes = &s.as_slice::<u8>()?[contiguous_range(l, self.name())?];
        let mut out = vec![0f32; bytes.len() / BLOCK_BYTES * BLOCK];
        for (b, o) in bytes.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
            dequantize_block(b, o);
        }
        Ok((CpuStorage::F32(out), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let shape = dequantized_shape(l)?;
        let n = l.shape().elem_count() / BLOCK_BYTES * BLOCK;
        Ok((map_kernel::<u8, f32>(s, l, "kv_dequantize_q8_0", n, n)?, shape))
    }
}

/// Runs kernel `name(input, output, threads)` of `kernels/decode.cu` on `threads` threads
/// (blocks of 256) over the contiguous input `s`/`l`, into a new output of `out_len`
/// elements, which the kernel writes whole.
#[cfg(feature = "cuda")]
fn map_kernel<I, O>(
    s: &candle_core::CudaStorage,
    l: &Layout,
    name: &str,
    threads: usize,
    out_len: usize,
) -> candle_core::Result<candle_core::CudaStorage>
where
    I: candle_core::cuda_backend::CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
    O: candle_core::cuda_backend::CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr,
{
    use crate::cuda::ptx::{DECODE, MODULE};
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    let input = s.as_cuda_slice::<I>()?.slice(contiguous_range(l, name)?);
    // SAFETY: the kernel writes every element of the output.
    let out = unsafe { s.device.alloc::<O>(out_len)? };
    let func = s.device.get_or_load_custom_func(name, MODULE, DECODE)?.into_cuda_function();
    let grid = threads.div_ceil(256).max(1) as u32;
    let config = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let stream = s.device.cuda_stream();
    let count = threads as i32;
    let mut builder = stream.launch_builder(&func);
    builder.arg(&input).arg(&out).arg(&count);
    // SAFETY: the callers size `input` and `out_len` as the kernel reads and writes them
    // for `threads` threads (decode.cu).
    unsafe { builder.launch(config) }.map_err(|e| candle_core::Error::Msg(format!("kernel `{name}`: {e}")))?;
    Ok(candle_core::CudaStorage::wrap_cuda_slice(out, s.device.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn blocks_follow_llama_cpp_and_read_back_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) * 0.173).collect();
        let t = Tensor::from_vec(x.clone(), (1, 1, 1, 64), &Device::Cpu).unwrap();
        let q = t.apply_op1_no_bwd(&QuantizeQ8_0).unwrap();
        assert_eq!(q.dims(), &[1, 1, 1, 68]);
        let bytes = q.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        for (b, xs) in bytes.chunks(34).zip(x.chunks(32)) {
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            assert_eq!(d, f16::from_f32(amax / 127.0).to_f32(), "the scale is max|x| / 127 as f16");
            assert!(b[2..].iter().any(|&q| q as i8 == 127 || q as i8 == -127), "the largest value maps to ±127");
        }
        let back = q.apply_op1_no_bwd(&DequantizeQ8_0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (i, (a, b)) in x.iter().zip(&back).enumerate() {
            let d = f16::from_bits(u16::from_le_bytes([bytes[i / 32 * 34], bytes[i / 32 * 34 + 1]])).to_f32();
            assert!((a - b).abs() <= 0.5 * d * 1.001, "value {i}: {a} read back as {b}");
        }
        let zeros = Tensor::zeros((1, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        let z = zeros.apply_op1_no_bwd(&QuantizeQ8_0).unwrap().apply_op1_no_bwd(&DequantizeQ8_0).unwrap();
        assert_eq!(z.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0f32; 32], "an all-zero block");
        let odd = Tensor::zeros((1, 48), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(odd.apply_op1_no_bwd(&QuantizeQ8_0).unwrap_err().to_string().contains("whole blocks"));
    }
}
