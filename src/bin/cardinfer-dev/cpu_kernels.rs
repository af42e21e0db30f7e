//! The CPU's matrix-vector products by weight type, as hybrid decode's host layers run
//! them on the host pool (`cardinfer_stream::cpu::host_pool`): weight GB/s for one token, from
//! memory (a matrix far larger than the caches) and from cache (about 1 MiB), with
//! `cardinfer_stream::cpu::matvec` (Q8_K inputs) and, for Q4_K and Q6_K, with the device's
//! bits (`cardinfer_stream::cpu::exact::mmvq`, what host layers run on the fused path). Then
//! the exact twin's attention for one token (a Qwen3-4B layer's heads) by cache length.
//! Compare the kernels by running it twice:
//!
//! ```text
//! RAYON_NUM_THREADS=14 cardinfer-dev cpu-kernels
//! CARDINFER_CPU_KERNEL=candle RAYON_NUM_THREADS=14 cardinfer-dev cpu-kernels
//! ```

use anyhow::{Context, Result};
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// MiB of weights read per product in the "from memory" case.
    #[arg(long, default_value_t = 512)]
    mib: usize,
    /// Products timed per case (the median is printed).
    #[arg(long, default_value_t = 7)]
    reps: usize,
}

/// A `rows × cols` matrix of `dtype` built by repeating one quantized 64-row tile.
fn matrix(dtype: GgmlDType, rows: usize, cols: usize) -> Result<QTensor> {
    let values: Vec<f32> = (0..64 * cols).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.3).collect();
    let tile = QTensor::quantize(&Tensor::from_vec(values, (64, cols), &Device::Cpu)?, dtype)?.data()?.to_vec();
    let bytes: Vec<u8> = tile.iter().copied().cycle().take(tile.len() * rows / 64).collect();
    Ok(qtensor_from_ggml(dtype, &bytes, vec![rows, cols], &Device::Cpu)?)
}

/// Which product a rate is taken of.
#[derive(Clone, Copy)]
enum Path {
    /// `cpu_matvec` (the input quantized to Q8_K).
    Matvec,
    /// `exact::mmvq` (the input quantized to Q8_1, the device's bits).
    Exact,
}

/// Median GB/s of weight bytes over `reps` products of `w` with one token; `None` where
/// `path` does not cover `w`'s type.
fn rate(w: &QTensor, path: Path, reps: usize) -> Result<Option<f64>> {
    let cols = w.shape().dims()[1];
    let x = Tensor::randn(0f32, 1.0, (1, 1, cols), &Device::Cpu)?;
    if let Path::Exact = path {
        if !cardinfer_stream::cpu::exact::mmvq::covers(w.dtype()) {
            return Ok(None);
        }
    }
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let secs = crate::common::median_secs(reps, || {
        match path {
            Path::Matvec => drop(cardinfer_stream::cpu::matvec::try_matvec(w, &x)?.context("no CPU kernel")?),
            Path::Exact => drop(cardinfer_stream::cpu::exact::mmvq::products(&[w], &xs)?.context("no exact kernel")?),
        }
        Ok(())
    })?;
    Ok(Some(w.storage_size_in_bytes() as f64 / secs / 1e9))
}

/// A rate for the table: GB/s, or a dash where the path does not apply.
fn cell(rate: Option<f64>) -> String {
    rate.map_or("–".into(), |r| format!("{r:.1}"))
}

pub fn run(args: Args) -> Result<()> {
    let cols = 4096;
    let kernel = if cardinfer_stream::cpu::x86::vnni_dot::available() { "ours (AVX-512 VNNI)" } else { "Candle's" };
    println!("Q4_K/Q6_K kernel: {kernel}; threads: {}", candle_core::utils::get_num_threads());
    println!("| weight | from memory GB/s | from cache GB/s | exact, from memory | exact, from cache |");
    println!("|---|---:|---:|---:|---:|");
    for dtype in [GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q8_0] {
        let row_bytes = dtype.type_size() * cols / dtype.block_size();
        let big_rows = (args.mib << 20) / row_bytes / 64 * 64;
        let big = matrix(dtype, big_rows.max(64), cols)?;
        // About 1 MiB: within a core's L2, in several tasks of the pool.
        let cached_rows = ((1 << 20) / row_bytes / 64 * 64).max(64);
        let cached = matrix(dtype, cached_rows, cols)?;
        let cells = [
            rate(&big, Path::Matvec, args.reps)?,
            rate(&cached, Path::Matvec, args.reps * 20)?,
            rate(&big, Path::Exact, args.reps)?,
            rate(&cached, Path::Exact, args.reps * 20)?,
        ]
        .map(cell);
        println!("| {dtype:?} | {} |", cells.join(" | "));
    }
    attention_table(args.reps)
}

/// Milliseconds of `exact::kernels::decode_attention` for one token with 32 query heads,
/// 8 KV heads of 128, by the number of cached positions (median of `reps` × 10 runs).
fn attention_table(reps: usize) -> Result<()> {
    use cardinfer_stream::cpu::exact::kernels::{decode_attention, AttentionShape};
    let (heads, kv_heads, d, capacity) = (32, 8, 128, 2048);
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104729) % 1013) as f32 / 1013.0 - 0.5).collect()
    };
    let (q, k, v) = (values(heads * d, 1), values(kv_heads * capacity * d, 2), values(kv_heads * capacity * d, 3));
    let shape = AttentionShape { heads, kv_heads, head_dim: d, capacity };
    let mut out = vec![0f32; heads * d];
    println!();
    println!("| exact attention, 32 heads / 8 KV heads of 128 | ms per layer |");
    println!("|---|---:|");
    for len in [64, 256, 640, 1024, 2048] {
        let secs = crate::common::median_secs(reps * 10, || {
            decode_attention(&q, &k, &v, shape, len, &mut out);
            Ok(())
        })?;
        println!("| {len} positions | {:.3} |", secs * 1e3);
    }
    Ok(())
}
