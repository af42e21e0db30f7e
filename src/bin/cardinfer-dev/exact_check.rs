//! Checks, on a CUDA device, that the CPU's MMVQ products ([`cardinfer_stream::cpu::exact`])
//! give the device's bits: random Q4_K and Q6_K matrices at a 14B model's shapes, each
//! multiplied with a few random inputs by Candle's CUDA kernels and by the CPU.
//!
//! ```text
//! cardinfer-dev exact-check
//! ```
//! Prints one line per matrix and input: rows compared, rows whose bits differ, the
//! largest difference. Exits with an error when any row differs.

use anyhow::{bail, Result};
use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use std::borrow::Cow;
use std::sync::Arc;

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub fn run() -> Result<()> {
    let gpu = Device::new_cuda(0)?;
    let mut failures = 0;
    println!("| type | rows × cols | input | rows differing | max abs diff |");
    println!("|---|---|---:|---:|---:|");
    for (dtype, rows, cols) in [
        (GgmlDType::Q4K, 5120, 5120),
        (GgmlDType::Q6K, 1024, 5120),
        (GgmlDType::Q4K, 2048, 17408),
        (GgmlDType::Q6K, 5120, 17408),
    ] {
        let dense = Tensor::from_vec(values(rows * cols, rows as u64 + cols as u64, 0.05), (rows, cols), &Device::Cpu)?;
        let host = QTensor::quantize(&dense, dtype)?;
        // The same blocks on the device (not re-quantized there).
        let storage = QStorage::from_data(Cow::Owned(host.data()?.into_owned()), &gpu, dtype)?;
        let device = QMatMul::QTensor(Arc::new(QTensor::new(storage, (rows, cols))?));
        for seed in 0..3u64 {
            // Activations of a decode step: mostly small, a few large (outlier channels).
            let mut x = values(cols, 1000 + seed, 1.0);
            x.iter_mut().step_by(97).for_each(|v| *v *= 40.0);
            let on_gpu =
                device.forward(&Tensor::from_slice(&x, (1, 1, cols), &gpu)?)?.flatten_all()?.to_vec1::<f32>()?;
            let Some(mut on_cpu) = cardinfer_stream::cpu::exact::mmvq::products(&[&host], &x)? else {
                bail!("{dtype:?} is not covered by the CPU's MMVQ products")
            };
            let on_cpu = on_cpu.remove(0);
            let differing = on_gpu.iter().zip(&on_cpu).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            let max_diff = on_gpu.iter().zip(&on_cpu).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            println!("| {dtype:?} | {rows} × {cols} | {seed} | {differing} | {max_diff:e} |");
            failures += differing;
        }
    }
    if failures > 0 {
        bail!("{failures} rows differ from the device's");
    }
    println!("every row has the device's bits");
    Ok(())
}
