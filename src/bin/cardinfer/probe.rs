//! Measure this machine's profile for the planner: host→device copies (page-locked and
//! pageable), the device's decode and prefill rates on Q4_K weights, the per-layer
//! decode overhead, the CPU's quantized matvec rate by thread count (alone, and beside
//! copies to the device as in hybrid decode), and a file read rate. Saves it where `plan` and the loader look for it (see `Profile::cache_path`).
//!
//! ```text
//! cardinfer probe --device cuda
//! ```

use anyhow::{bail, Context, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use cardinfer_core::{Family, StorageType};
use cardinfer_plan::cost::layer_params;
use cardinfer_plan::Profile;
use cardinfer_quant::synth::SyntheticModel;
use cardinfer_stream::device::{device_key, parse_device, DeviceMarker, PinnedBuffer};
use cardinfer_stream::{LoadedModel, Logits, TextModel};
use std::io::Read;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// A large file to time sequential reads on (e.g. a model); skipped when absent.
    #[arg(long)]
    file: Option<String>,
    /// Where to write the profile (default: the cache path for this device).
    #[arg(long)]
    output: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: time only the CPU block (at the thread count of `RAYON_NUM_THREADS`) and
    /// print its GB/s; the probe runs itself so for each thread count it tries.
    #[arg(long, hide = true)]
    cpu_block_only: bool,
}

/// The CPU block measured in the probe: width 4096, Q4_K, a 512-token context.
fn cpu_block_spec() -> cardinfer_core::ModelSpec {
    cardinfer_core::ModelSpec {
        hidden_size: 4096,
        intermediate_size: 12288,
        num_heads: 32,
        num_kv_heads: 8,
        context_length: 512,
        ..crate::common::probe_spec(Family::Qwen3, 1)
    }
}

/// Thread counts tried for the CPU block on `cores` cores: a quarter, half, three
/// quarters, and all but two. Two cores stay free for the thread feeding the device and
/// the copies' driver work — hybrid decode measured fastest at 12–14 of 16 cores on some
/// loans of the H100 machine (BENCHMARKS.md, run43/44/54) and at 8 on others, whose block
/// rate halved from 8 to 14 threads (run55/56): the count is measured, not assumed.
fn thread_candidates(cores: usize) -> Vec<usize> {
    let mut counts: Vec<usize> =
        [cores / 4, cores / 2, cores * 3 / 4, cores.saturating_sub(2)].into_iter().filter(|&n| n > 0).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() {
        counts.push(1);
    }
    counts
}

/// The CPU block's weight rate (GB/s) and fixed cost per block (ms), fitted from blocks
/// of width 4096 and 1024: `time = fixed + bytes / rate`. Noise that makes the fit
/// meaningless (a negative cost or rate) leaves the large block's plain rate and no fixed
/// cost.
fn cpu_block_fit() -> Result<(f64, f64)> {
    let (large_secs, large_bytes) = cpu_block_secs(&cpu_block_spec())?;
    let small_spec =
        cardinfer_core::ModelSpec { hidden_size: 1024, intermediate_size: 3072, num_heads: 8, ..cpu_block_spec() };
    let (small_secs, small_bytes) = cpu_block_secs(&small_spec)?;
    let plain = (large_bytes as f64 / large_secs / 1e9, 0.0);
    if large_secs <= small_secs {
        return Ok(plain);
    }
    let rate = (large_bytes - small_bytes) as f64 / (large_secs - small_secs) / 1e9;
    let fixed_ms = (large_secs - large_bytes as f64 / (rate * 1e9)) * 1e3;
    Ok(if rate > 0.0 && fixed_ms >= 0.0 { (rate, fixed_ms) } else { plain })
}

/// This program run again with `--cpu-block-only` at `threads` threads (Candle sizes
/// its pool once per process), started.
fn spawn_cpu_block(threads: usize) -> Result<std::process::Child> {
    let exe = std::env::current_exe().context("finding the probe's own executable")?;
    std::process::Command::new(exe)
        .arg("--cpu-block-only")
        .env("RAYON_NUM_THREADS", threads.to_string())
        .env_remove("CANDLE_NUM_THREADS")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running the CPU block probe")
}

/// GB/s and fixed ms of the CPU block at `threads` threads, measured in a child process
/// (see [`spawn_cpu_block`]).
fn cpu_rate_at(threads: usize) -> Result<(f64, f64)> {
    parse_cpu_block(threads, spawn_cpu_block(threads)?)
}

/// Bytes of one copy beside the CPU block: a layer-sized upload.
const COPY_BYTES: usize = 64 << 20;

/// As [`cpu_rate_at`], while this process copies `pinned` to `device` back to back, as
/// the link does beside the CPU's layers in hybrid decode (both read host memory: on the
/// H100 machine a host layer took 1.7 ms beside the copies against 1.25 ms alone).
/// The copies walk through all of `pinned` in [`COPY_BYTES`] pieces: a hybrid pass
/// uploads a gigabyte of distinct weights from memory, and one piece copied again and
/// again would sit in the CPU's last-level cache (300 MiB on the H100 machine's loans)
/// instead of competing with the CPU for memory. Also returns the copies' GB/s meanwhile.
fn cpu_rate_under_copies(threads: usize, device: &Device, pinned: &[u8]) -> Result<(f64, f64, f64)> {
    let mut child = spawn_cpu_block(threads)?;
    let piece_rows = COPY_BYTES.min(pinned.len()) / 34 / 128;
    let piece = piece_rows * 128 * 34;
    let pieces = (pinned.len() / piece).max(1);
    let (mut copied, mut next, start) = (0usize, 0usize, Instant::now());
    while child.try_wait()?.is_none() {
        let at = next % pieces * piece;
        let q = qtensor_from_ggml(GgmlDType::Q8_0, &pinned[at..at + piece], vec![piece_rows, 4096], device)?;
        device.synchronize()?;
        drop(q);
        copied += piece;
        next += 1;
    }
    let link_gb_s = copied as f64 / start.elapsed().as_secs_f64() / 1e9;
    let (rate, fixed_ms) = parse_cpu_block(threads, child)?;
    Ok((rate, fixed_ms, link_gb_s))
}

/// The child's `rate fixed_ms` line.
fn parse_cpu_block(threads: usize, child: std::process::Child) -> Result<(f64, f64)> {
    let out = child.wait_with_output().context("waiting for the CPU block probe")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<f64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match numbers[..] {
        [rate, fixed_ms] => Ok((rate, fixed_ms)),
        _ => bail!("CPU block probe at {threads} threads printed `{}`", text.trim()),
    }
}

/// Host→device GB/s for uploads of `bytes` (Q8_0 blocks) the way the executor uploads a
/// streamed block, timed with device events around the copy (allocation excluded), best
/// of 5.
fn h2d_rate(device: &Device, bytes: &[u8]) -> Result<f64> {
    let rows = bytes.len() / 34 / 128;
    let mut best = 0f64;
    for _ in 0..6 {
        let start = DeviceMarker::now(device);
        let q = qtensor_from_ggml(GgmlDType::Q8_0, &bytes[..rows * 128 * 34], vec![rows, 4096], device)?;
        let end = DeviceMarker::now(device);
        device.synchronize()?;
        if let Some(secs) = start.zip(end).and_then(|(s, e)| s.secs_until(&e)) {
            best = best.max((rows * 128 * 34) as f64 / secs / 1e9);
        }
        drop(q);
    }
    Ok(best)
}

/// A Q4_K matrix of `rows × cols` with random values, on `device`.
fn q4k_matrix(rows: usize, cols: usize, device: &Device) -> Result<QMatMul> {
    let w = Tensor::randn(0f32, 0.05, (rows, cols), &Device::Cpu)?;
    Ok(QMatMul::from_qtensor(QTensor::quantize_onto(&w, GgmlDType::Q4K, device)?)?)
}

/// Milliseconds per decoded token, and per prompt token of a 256-token prefill, of a
/// resident synthetic Qwen3 with `layers` layers.
fn model_ms(device: &Device, layers: usize, dir: &std::path::Path) -> Result<(f64, f64)> {
    let mut spec = crate::common::probe_spec(Family::Qwen3, layers);
    spec.context_length = 256;
    let path = dir.join(format!("probe-{layers}.gguf"));
    SyntheticModel::random(&spec, 1).write_gguf(&path, StorageType::Q4_K, StorageType::Q8_0)?;
    let loaded = LoadedModel::load(&path, device, |_, _| {})?;
    let model = &loaded.model;
    let prompt: Vec<u32> = (0..128).map(|i| (i * 7 % 500 + 1) as u32).collect();
    let mut prefill = f64::INFINITY;
    for _ in 0..3 {
        let mut kv = model.new_cache();
        let start = Instant::now();
        model.forward(&prompt, &mut kv, Logits::Last)?.to_vec2::<f32>()?;
        prefill = prefill.min(start.elapsed().as_secs_f64() * 1e3 / prompt.len() as f64);
    }
    let mut kv = model.new_cache();
    model.forward(&[1, 2, 3, 4], &mut kv, Logits::Last)?.to_vec2::<f32>()?;
    let tokens = 48;
    let start = Instant::now();
    let mut next = 5u32;
    for _ in 0..tokens {
        let logits = model.forward(&[next], &mut kv, Logits::Last)?;
        next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()? % 200 + 1;
    }
    Ok((start.elapsed().as_secs_f64() * 1e3 / tokens as f64, prefill))
}

/// Seconds per decoded token of one zero-weight Q4_K block of `spec` on the CPU, and its
/// weight bytes, over [`crate::common::cpu_blocks`] (weights from memory). Timed the way hybrid
/// decode computes a host layer: with the device's bits ([`cardinfer_stream::executor::host_decode_step`],
/// what a host layer runs where the device decodes with the fused kernels) where they
/// cover the block, else Candle's block with its small ops on one thread. On the H100
/// machine the exact layer took 1.17–1.22 ms where Candle's took 0.96 (4B-shaped,
/// 14 threads, run73), so timing the other one made the planner put too many layers on
/// the CPU.
fn cpu_block_secs(spec: &cardinfer_core::ModelSpec) -> Result<(f64, u64)> {
    let (layers, bytes) = crate::common::cpu_blocks(spec)?;
    let count = layers.len();
    let decoder = cardinfer_stream::model::family::Decoder::new(spec.clone(), None);
    let mut slots = vec![cardinfer_stream::KvSlot::default(); count];
    let x = Tensor::zeros((1, 1, spec.hidden_size), candle_core::DType::F32, &Device::Cpu)?;
    let mut step = 0;
    let secs = crate::common::median_secs(4 * count, || {
        let i = step % count;
        let (layer, slot) = (&layers[i], &mut slots[i]);
        cardinfer_stream::executor::host_decode_step(&decoder, Some(&decoder), 0, layer, &x, slot, step / count)?;
        step += 1;
        Ok(())
    })?;
    Ok((secs, bytes))
}

/// Host→device copies, page-locked and pageable, and the hybrid hop.
fn probe_link(device: &Device, profile: &mut Profile, rows: &mut Vec<(String, String)>) -> Result<()> {
    // 1. Host→device copies.
    let len = 256 << 20;
    if !device.is_cpu() {
        let pageable = vec![0u8; len];
        let pageable_rate = h2d_rate(device, &pageable)?;
        rows.push(("h2d, pageable".into(), format!("{pageable_rate:.1} GB/s")));
        if let Some(mut pinned) = PinnedBuffer::alloc(device, len) {
            pinned.as_mut_slice().fill(0);
            profile.h2d_gb_s = h2d_rate(device, pinned.as_slice())?;
            rows.push(("h2d, page-locked".into(), format!("{:.1} GB/s", profile.h2d_gb_s)));
        } else {
            profile.h2d_gb_s = pageable_rate;
        }
        // A hybrid hop: one hidden state (width 5120) to the host and back.
        let hidden = Tensor::zeros((1, 1, 5120), candle_core::DType::F32, device)?;
        let hop = crate::common::median_secs(50, || {
            hidden.to_device(&Device::Cpu)?.to_device(device)?;
            device.synchronize()?;
            Ok(())
        })?;
        profile.host_hop_ms = hop * 1e3;
        rows.push(("hidden state to the host and back (hybrid hop)".into(), format!("{:.3} ms", profile.host_hop_ms)));
    }
    Ok(())
}

/// The device's decode matvec and prefill matmul rates on Q4_K weights of width 4096.
fn probe_device(device: &Device, profile: &mut Profile, rows: &mut Vec<(String, String)>) -> Result<()> {
    // 2. Decode matvec and 3. prefill matmul on Q4_K weights of width 4096.
    // Eight distinct 14336×4096 matrices (264 MB, more than any cache), read in turn.
    let (rows_w, cols) = (14336, 4096);
    let mats: Vec<QMatMul> = (0..8).map(|_| q4k_matrix(rows_w, cols, device)).collect::<Result<_>>()?;
    let w = &mats[0];
    let weight_bytes = (rows_w * cols / 256 * 144) as f64;
    let x1 = Tensor::randn(0f32, 1.0, (1, cols), &Device::Cpu)?.to_device(device)?;
    let gemv = crate::common::median_secs(10, || {
        for _ in 0..4 {
            for m in &mats {
                m.forward(&x1)?;
            }
        }
        device.synchronize()?;
        Ok(())
    })?;
    profile.device_read_gb_s = 32.0 * weight_bytes / gemv / 1e9;
    rows.push(("Q4_K matvec (weights read)".into(), format!("{:.0} GB/s", profile.device_read_gb_s)));
    let m = if device.is_cpu() { 64 } else { 512 };
    let xm = Tensor::randn(0f32, 1.0, (m, cols), &Device::Cpu)?.to_device(device)?;
    let gemm = crate::common::median_secs(5, || {
        w.forward(&xm)?;
        device.synchronize()?;
        Ok(())
    })?;
    profile.prefill_tflops_at_4096 = 2.0 * (m * rows_w * cols) as f64 / gemm / 1e12;
    rows.push((format!("Q4_K matmul, {m} tokens"), format!("{:.1} TFLOP/s", profile.prefill_tflops_at_4096)));
    Ok(())
}

/// The decode overhead and the non-matmul prefill work per layer, from models of 2 and 10 layers.
fn probe_overheads(device: &Device, profile: &mut Profile, rows: &mut Vec<(String, String)>) -> Result<()> {
    // 4. Decode overhead per layer: slope of ms/token between 2 and 10 layers.
    let dir = std::env::temp_dir().join(format!("cardinfer-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // Each size twice, alternating, keeping the faster: the first run loads kernels.
    let (mut small, mut large) = (f64::INFINITY, f64::INFINITY);
    let (mut small_prefill, mut large_prefill) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..2 {
        let (d, p) = model_ms(device, 2, &dir)?;
        (small, small_prefill) = (small.min(d), small_prefill.min(p));
        let (d, p) = model_ms(device, 10, &dir)?;
        (large, large_prefill) = (large.min(d), large_prefill.min(p));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The slope also holds reading one layer's weights; take that out at the measured rate.
    let probe_layer_params = layer_params(&crate::common::probe_spec(Family::Qwen3, 1));
    let layer_read_ms = (probe_layer_params / 256 * 144) as f64 / (profile.device_read_gb_s * 1e9) * 1e3;
    profile.decode_overhead_ms_per_layer = ((large - small) / 8.0 - layer_read_ms).max(0.0);
    // Prefill: what a layer costs per token beyond its weight matmuls at the measured rate.
    let matmul_ms = 2.0 * probe_layer_params as f64 / (profile.prefill_tflops_at_4096 * 1e12) * 1e3;
    profile.prefill_ms_per_layer_token = ((large_prefill - small_prefill) / 8.0 - matmul_ms).max(0.0);
    // The matmul rate was measured at width 4096 directly: no width scaling.
    profile.prefill_width_exponent = 0.0;
    rows.push(("prefill, non-matmul work".into(), format!("{:.5} ms/layer/token", profile.prefill_ms_per_layer_token)));
    rows.push((
        "decode overhead".into(),
        format!("{:.3} ms/layer ({small:.2} ms at 2 layers, {large:.2} at 10)", profile.decode_overhead_ms_per_layer),
    ));
    Ok(())
}

/// The CPU computing a transformer block as hybrid decode does, by thread count, alone and beside copies; the best count is kept.
fn probe_cpu(device: &Device, profile: &mut Profile, rows: &mut Vec<(String, String)>) -> Result<()> {
    // 5. The CPU computing a whole transformer block of width 4096 (Q4_K, zeroed
    //    weights) for one token, as hybrid decode does: weight bytes read per second, at
    //    each candidate thread count (the best is recorded with its rate).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rates = Vec::new();
    for threads in thread_candidates(cores) {
        match cpu_rate_at(threads) {
            Ok((rate, fixed_ms)) => {
                let what = format!("CPU, Q4_K blocks of width 4096 and 1024 per token, {threads} threads");
                rows.push((what, format!("{rate:.1} GB/s + {fixed_ms:.3} ms per block")));
                rates.push((threads, rate, fixed_ms));
            }
            Err(e) => rows.push((format!("CPU block at {threads} threads"), format!("not measured: {e:#}"))),
        }
    }
    if rates.is_empty() {
        // No child process could run: measure here, with the pool this process has.
        let (rate, fixed_ms) = cpu_block_fit()?;
        rates.push((candle_core::utils::get_num_threads(), rate, fixed_ms));
    }
    // The same beside back-to-back copies, where there is a link: what hybrid decode
    // sees. The planner uses these rates when measured.
    // 1 GiB of copy sources, larger than any last-level cache (64 MiB where the driver
    // will not lock that much).
    let pinned = match device.is_cpu() {
        true => None,
        false => PinnedBuffer::alloc(device, 1 << 30).or_else(|| PinnedBuffer::alloc(device, COPY_BYTES)),
    };
    if let Some(mut pinned) = pinned {
        pinned.as_mut_slice().fill(0);
        let mut loaded = Vec::new();
        for &(threads, alone, _) in &rates {
            match cpu_rate_under_copies(threads, device, pinned.as_slice()) {
                Ok((rate, fixed_ms, link)) => {
                    let what = format!("CPU block beside copies, {threads} threads (alone {alone:.1} GB/s)");
                    rows.push((what, format!("{rate:.1} GB/s + {fixed_ms:.3} ms per block; copies {link:.1} GB/s")));
                    loaded.push((threads, rate, fixed_ms));
                }
                Err(e) => {
                    rows.push((format!("CPU block beside copies, {threads} threads"), format!("not measured: {e:#}")))
                }
            }
        }
        if !loaded.is_empty() {
            rates = loaded;
        }
    }
    // The best count: the fastest block of width 4096 (what a hybrid layer is like).
    let large_bytes = layer_params(&cpu_block_spec()) / 256 * 144;
    let block_ms = |rate: f64, fixed_ms: f64| fixed_ms + large_bytes as f64 / (rate * 1e9) * 1e3;
    let (threads, rate, fixed_ms) = rates.into_iter().fold((0, 0.0, f64::INFINITY), |best, r| {
        if block_ms(r.1, r.2) < block_ms(best.1, best.2) {
            r
        } else {
            best
        }
    });
    profile.cpu_matvec_gb_s = rate;
    profile.cpu_block_fixed_ms = fixed_ms;
    profile.cpu_best_threads = Some(threads);
    rows.push((
        "CPU block, best (weights from memory, beside copies where measured; RAYON_NUM_THREADS for hybrid)".into(),
        format!("{rate:.1} GB/s + {fixed_ms:.3} ms per block at {threads} of {cores} threads"),
    ));
    Ok(())
}

/// A file read rate, where `--file` is given.
fn probe_file(file: Option<&str>, profile: &mut Profile, rows: &mut Vec<(String, String)>) -> Result<()> {
    // 6. File read.
    if let Some(file) = file {
        let mut f = std::fs::File::open(file).with_context(|| format!("opening {file}"))?;
        let mut buf = vec![0u8; 8 << 20];
        let (mut total, start) = (0usize, Instant::now());
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n;
        }
        profile.disk_gb_s = total as f64 / start.elapsed().as_secs_f64() / 1e9;
        rows.push((format!("read {file}"), format!("{:.2} GB/s (page cache may be warm)", profile.disk_gb_s)));
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if args.cpu_block_only {
        let (rate, fixed_ms) = cpu_block_fit()?;
        println!("{rate} {fixed_ms}");
        return Ok(());
    }
    let device = parse_device(&args.device)?;
    let key = device_key(&device);
    let mut profile = Profile { device: key.clone(), ..Profile::conservative() };
    let steps = 5;
    let bar = crate::common::ProgressBar::new(format!("probing {key}"));
    let mut rows: Vec<(String, String)> = Vec::new();

    bar.show(0, steps, "probes");
    probe_link(&device, &mut profile, &mut rows)?;
    bar.show(1, steps, "probes");
    probe_device(&device, &mut profile, &mut rows)?;
    bar.show(2, steps, "probes");
    probe_overheads(&device, &mut profile, &mut rows)?;
    bar.show(3, steps, "probes");
    probe_cpu(&device, &mut profile, &mut rows)?;
    bar.show(4, steps, "probes");
    probe_file(args.file.as_deref(), &mut profile, &mut rows)?;
    bar.show(steps, steps, "probes");

    let path = args
        .output
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Profile::cache_path(&crate::common::cache_dir(), &key));
    profile.save(&path)?;
    bar.finish(&format!("saved {}", path.display()));
    if args.json {
        println!("{}", serde_json::to_string(&profile)?);
    } else {
        println!("| probe | measured |");
        println!("|---|---|");
        for (what, value) in rows {
            println!("| {what} | {value} |");
        }
    }
    Ok(())
}
