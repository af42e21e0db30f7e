//! What a layer's Candle operations cost: for each kind of operation a decoder layer of
//! the plain path uses, the host time per call (queueing, allocation, launch) and the
//! device time per call, at Qwen3-4B's shapes, for one token (decode) or `--seq` tokens
//! (a prefill chunk). Plain resident decode was bound by the host queueing its kernels
//! (BENCHMARKS.md); this says which ones cost what.
//!
//! ```text
//! cardinfer-dev op-cost --device cuda [--calls 2000] [--seq 512]
//! ```

use anyhow::Result;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::ops::{rms_norm, silu, softmax_last_dim};
use cardinfer_stream::device::{parse_device, DeviceMarker};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Calls per operation.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Cached positions for the attention operations.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Tokens per call (1 = decode; more = a prefill chunk, attending to `--context`).
    #[arg(long, default_value_t = 1)]
    seq: usize,
}

/// One operation to time: a closure issuing it once.
type Op<'a> = Box<dyn FnMut() -> Result<Tensor> + 'a>;

/// Host microseconds per call (queueing only) and device microseconds per call.
///
/// Two phases. Host: `calls` calls back to back, timed on the host (the device keeps up
/// with these small kernels, so the host's pace is what is timed). Device: one long matmul
/// first, then 200 calls queued behind it — few enough that the launch queue never fills
/// and blocks the host — so the device runs them back to back and their span is the
/// kernels' time alone.
fn time(
    device: &Device,
    calls: usize,
    blocker: &Tensor,
    mut op: impl FnMut() -> Result<Tensor>,
) -> Result<(f64, Option<f64>)> {
    for _ in 0..20 {
        op()?;
    }
    device.synchronize()?;
    let host = Instant::now();
    for _ in 0..calls {
        op()?;
    }
    let host_us = host.elapsed().as_secs_f64() * 1e6 / calls as f64;
    device.synchronize()?;
    const QUEUED: usize = 200;
    if !device.is_cpu() {
        blocker.matmul(blocker)?;
    }
    let start = DeviceMarker::now(device);
    for _ in 0..QUEUED {
        op()?;
    }
    let end = DeviceMarker::now(device);
    device.synchronize()?;
    let device_us = start.zip(end).and_then(|(s, e)| s.secs_until(&e)).map(|s| s * 1e6 / QUEUED as f64);
    Ok((host_us, device_us))
}

pub fn run(args: Args) -> Result<()> {
    let dev = parse_device(&args.device)?;
    let (hidden, heads, kv_heads, head_dim, ffn) = (2560usize, 32usize, 8usize, 128usize, 9728usize);
    let seq = args.seq.max(1);
    let x = Tensor::randn(0f32, 1.0, (1, seq, hidden), &dev)?;
    let norm_w = Tensor::ones(hidden, DType::F32, &dev)?;
    let q4 = |rows: usize, cols: usize| -> Result<QMatMul> {
        let w = Tensor::randn(0f32, 0.02, (rows, cols), &Device::Cpu)?;
        Ok(QMatMul::from_qtensor(QTensor::quantize_onto(&w, GgmlDType::Q4K, &dev)?)?)
    };
    let wq = q4(heads * head_dim, hidden)?;
    let wd = q4(hidden, ffn)?;
    let q = Tensor::randn(0f32, 1.0, (1, heads, seq, head_dim), &dev)?;
    let cos = Tensor::ones((seq, head_dim / 2), DType::F32, &dev)?;
    let sin = Tensor::zeros((seq, head_dim / 2), DType::F32, &dev)?;
    let cached = Tensor::randn(0f32, 1.0, (1, kv_heads, args.context, head_dim), &dev)?;
    let new = Tensor::randn(0f32, 1.0, (1, kv_heads, seq, head_dim), &dev)?;
    let group = heads / kv_heads;
    let qg = q.reshape((1, kv_heads, group * seq, head_dim))?;
    let scores = qg.matmul(&cached.t()?)?;
    let mask = Tensor::zeros((group * seq, args.context), DType::F32, &dev)?;
    let h = Tensor::randn(0f32, 1.0, (1, seq, ffn), &dev)?;
    let transposed = Tensor::randn(0f32, 1.0, (1, seq, heads, head_dim), &dev)?.transpose(1, 2)?;
    let mask_adds = usize::from(seq > 1);
    let blocker_side = if dev.is_cpu() { 8 } else { 8192 };
    let blocker = Tensor::randn(0f32, 1.0, (blocker_side, blocker_side), &dev)?;

    let ops: Vec<(&str, usize, Op)> = vec![
        ("Q4_K matmul 4096×2560 (quantize + MMVQ/MMQ)", 7, Box::new(|| Ok(wq.forward(&x)?))),
        ("Q4_K matmul 2560×9728", 0, Box::new(|| Ok(wd.forward(&h)?))),
        ("rms_norm [seq × 2560]", 4, Box::new(|| Ok(rms_norm(&x, &norm_w, 1e-6)?))),
        ("rope [32 heads × seq × 128]", 2, Box::new(|| Ok(candle_nn::rotary_emb::rope(&q, &cos, &sin)?))),
        ("KV append: cat [8, T, 128] + seq", 2, Box::new(|| Ok(Tensor::cat(&[&cached, &new], 2)?))),
        ("attention q·kᵀ (cuBLAS)", 1, Box::new(|| Ok(qg.matmul(&cached.t()?)?))),
        ("scale (affine)", 1, Box::new(|| Ok((&scores * 0.088)?))),
        ("causal mask add (broadcast)", mask_adds, Box::new(|| Ok(scores.broadcast_add(&mask)?))),
        ("softmax_last_dim", 1, Box::new(|| Ok(softmax_last_dim(&scores)?))),
        ("probs·v (cuBLAS)", 1, Box::new(|| Ok(scores.matmul(&cached)?))),
        ("copy of a transposed tensor", if seq > 1 { 4 } else { 1 }, Box::new(|| Ok(transposed.contiguous()?))),
        ("silu [seq × 9728]", 1, Box::new(|| Ok(silu(&h)?))),
        ("mul [seq × 9728]", 1, Box::new(|| Ok((&h * &h)?))),
        ("add [seq × 2560]", 2, Box::new(|| Ok((&x + &x)?))),
        ("narrow (a view, no kernel)", 0, Box::new(|| Ok(h.narrow(D::Minus1, 0, 64)?))),
    ];
    println!("| operation | per layer | host µs / call (queueing) | device µs / call (kernels alone) |");
    println!("|---|---:|---:|---:|");
    let (mut host_layer, mut device_layer) = (0.0, 0.0);
    for (name, per_layer, mut op) in ops {
        let (host, device) = time(&dev, args.calls, &blocker, &mut op)?;
        host_layer += host * per_layer as f64;
        device_layer += device.unwrap_or(0.0) * per_layer as f64;
        let device = device.map_or("-".into(), |d| format!("{d:.2}"));
        println!("| {name} | {per_layer} | {host:.2} | {device} |");
    }
    println!(
        "| **one Qwen3-4B layer at {seq} token(s)** (counts above; the 7 products timed at 4096×2560) | | **{host_layer:.1}** | **{device_layer:.1}** |"
    );
    Ok(())
}
