//! llama-bench-like speed test: prefill of `-p` tokens and decode of `-n` tokens (after
//! `-d` cached tokens), `-r` repetitions, median reported, with measured peak device memory.
//!
//! ```text
//! cardinfer bench --model q14.gguf -p 512 -n 128 -r 3 \
//!     --device cuda --vram-budget 6GiB --mode stream
//! ```
//! Prints one markdown row and one JSON line per test.

use anyhow::Result;
use cardinfer_plan::{predict, predict_decode_at, Mode, PlanRequest, StreamPlan};
use cardinfer_stream::executor::{copies_overlap, device_block_bytes};
use cardinfer_stream::{Logits, Runner, TextModel};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Prompt tokens for the prefill test (0 skips it).
    #[arg(short = 'p', default_value_t = 512)]
    prompt: usize,
    /// Tokens for the decode test (0 skips it).
    #[arg(short = 'n', default_value_t = 128)]
    generate: usize,
    /// Tokens in the cache before the decode test (llama-bench's `-d`): each repetition
    /// first prefills this many tokens, untimed, then decodes `-n` after them.
    #[arg(short = 'd', long = "depth", default_value_t = 0)]
    depth: usize,
    /// Repetitions (the median is reported).
    #[arg(short = 'r', default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    repetitions: u64,
    #[command(flatten)]
    model: crate::common::ModelArgs,
    #[command(flatten)]
    draft: crate::draft::DraftArgs,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: Args) -> Result<()> {
    let crate::draft::Loaded { target: loaded, draft, device, mut watch, .. } =
        crate::draft::load(&args.model, &args.draft)?;
    let model = &loaded.model;
    let vocab = model.spec().vocab_size as u64;
    let ids: Vec<u32> = (0..args.prompt.max(1) as u64).map(|i| ((i * 7919 + 13) % vocab) as u32).collect();
    let name = loaded.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let reps = args.repetitions as usize;
    let mut rows = Vec::new();

    // Warm-up: the first use of each kernel compiles or loads it.
    let mut kv = model.new_cache();
    let after_load = watch.peak_bytes();
    model.forward(&ids[..ids.len().min(8)], &mut kv, Logits::Last)?.to_vec2::<f32>()?;
    watch.sample();
    if let (Some(load), Some(warm)) = (after_load, watch.peak_bytes()) {
        eprintln!("device memory: {} MiB after load, {} MiB after the first forward pass", load >> 20, warm >> 20);
    }
    // One cache at a time, as a generator holds (the plan reserves room for one).
    drop(kv);

    if args.prompt > 0 {
        let mut rates = Vec::new();
        for _ in 0..reps {
            let mut kv = model.new_cache();
            let start = Instant::now();
            model.forward(&ids, &mut kv, Logits::Last)?.to_vec2::<f32>()?;
            rates.push(args.prompt as f64 / start.elapsed().as_secs_f64());
            watch.sample();
        }
        rows.push((format!("pp{}", args.prompt), median(rates), Vec::new()));
    }
    if args.generate > 0 {
        let mut rates = Vec::new();
        let mut generated = Vec::new();
        // One cache for every repetition, cleared before each, as llama-bench keeps its
        // context: its buffers are allocated by one untimed token, not in the timed ones
        // (with a fresh cache per repetition, the first token took 48–98 ms in the hybrid
        // runs against 35–47 for the others; BENCHMARKS.md, session 7).
        let mut kv = model.new_cache();
        model.forward(&ids[..1], &mut kv, Logits::Last)?.to_vec2::<f32>()?;
        let depth_ids: Vec<u32> = (0..args.depth as u64).map(|i| ((i * 104729 + 7) % vocab) as u32).collect();
        for _ in 0..reps {
            kv.clear();
            if !depth_ids.is_empty() {
                model.forward(&depth_ids, &mut kv, Logits::Last)?.to_vec2::<f32>()?;
            }
            let mut next = ids[0];
            generated.clear();
            let start = Instant::now();
            for _ in 0..args.generate {
                let logits = model.forward(&[next], &mut kv, Logits::Last)?;
                next = logits.squeeze(0)?.argmax(0)?.to_scalar::<u32>()?;
                generated.push(next);
                watch.sample();
            }
            rates.push(args.generate as f64 / start.elapsed().as_secs_f64());
        }
        let test = if args.depth > 0 {
            format!("tg{} @ d{}", args.generate, args.depth)
        } else {
            format!("tg{}", args.generate)
        };
        rows.push((test, median(rates), generated));
    }
    let speculative = match (&draft, args.generate) {
        (Some(draft), n) if n > 0 => {
            let costs =
                crate::bench_draft::pass_costs(model, &ids[..ids.len().min(64)], args.draft.draft_max + 1, reps)?;
            let run = crate::bench_draft::decode(&loaded, draft, &args.draft, ids[0], n, reps)?;
            watch.sample();
            Some((costs, run))
        }
        _ => None,
    };

    let metrics = model.metrics();
    // The cost model's prediction for this run: the plan the executor made, the device's
    // profile from `probe` (cached) or else the built-in fit.
    let profile = crate::common::profile_or_fitted(&device);
    let plan = match model {
        Runner::Streamed(m) => m.plan().clone(),
        Runner::Resident(m) => {
            let request = PlanRequest {
                budget_bytes: u64::MAX / 4,
                mode: Mode::Resident,
                slots: None,
                prefill_chunk: args.model.placement.prefill_chunk,
                runtime_bytes: 0,
                measured_workspace_bytes: None,
                overlapped_copies: false,
                kv_type: args.model.placement.kv_type.parse()?,
            };
            StreamPlan::place(model.spec(), &device_block_bytes(m.layout(), &device), &request)?
        }
    };
    let overlapped = copies_overlap(&device, !args.model.placement.no_copy_stream);
    let predicted = predict(model.spec(), &plan, &profile, overlapped);
    // Decode over the cache the run fills: its depth and half the tokens it generates.
    let decode_depth = args.depth + args.generate / 2;
    let predicted_decode = predict_decode_at(model.spec(), &plan, &profile, overlapped, decode_depth);
    eprintln!("plan: {} slots, prefill chunk {}", plan.slots, plan.prefill_chunk);
    eprintln!("decode path: {}", model.decode_path());
    for reason in &plan.reasons {
        eprintln!("plan: {reason}");
    }
    eprintln!(
        "predicted: decode {:.2} tok/s at depth {decode_depth}, prefill {:.0} tok/s (profile: {})",
        predicted_decode, predicted.prefill_tok_s, profile.device
    );
    if let Runner::Resident(m) = model {
        print_moe_prediction(&loaded.path, m, &profile, plan.prefill_chunk)?;
    }
    if let Some(tuning) = &metrics.host_tuning {
        eprintln!("host layers: {tuning}");
    }
    if let Some(e) = &metrics.experts {
        eprintln!(
            "experts: {} cache slots ({:.0} MiB), hit rate {:.1} %, {} uploaded, {} on the CPU, {} copied for one pass; CPU {:.1} GB/s, link {:.1} GB/s",
            e.slots,
            e.device_bytes as f64 / (1 << 20) as f64,
            100.0 * e.hit_rate(),
            e.uploaded,
            e.cpu,
            e.temporary,
            e.cpu_gbs,
            e.link_gbs
        );
    }
    let peak = watch.peak_bytes().or(device.is_cpu().then_some(metrics.accounted_peak_bytes));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let budget = (loaded.budget_bytes != u64::MAX).then_some(loaded.budget_bytes);
    println!("| model | device | mode | budget MiB | test | tok/s | peak MiB | streamed MB/token | h2d GB/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (test, rate, _) in &rows {
        println!(
            "| {name} | {} | {} | {} | {test} | {rate:.2} | {} | {:.1} | {} |",
            args.model.device,
            metrics.mode,
            budget.map_or("-".into(), |b| format!("{:.0}", mib(b))),
            peak.map_or("-".into(), |p| format!("{:.0}", mib(p))),
            metrics.bytes_streamed_per_token as f64 / 1e6,
            metrics.h2d_gb_s.map_or("-".into(), |g| format!("{g:.1}")),
        );
    }
    for (test, rate, generated) in &rows {
        let line = serde_json::json!({
            "model": name, "device": args.model.device, "test": test, "tok_s": rate, "repetitions": reps,
            "kv_type": model.new_cache().kv_type().name(), "budget_bytes": budget, "peak_device_bytes": peak, "peak_measured": watch.peak_bytes().is_some(),
            "metrics": metrics, "generated_first": generated.iter().take(16).collect::<Vec<_>>(),
            "generated_checksum": checksum(generated),
            "predicted_tok_s": if test.starts_with("pp") { predicted.prefill_tok_s } else { predicted_decode },
        });
        println!("{line}");
    }
    // Last, so that the harness reads the speculative decode row as the row's decode figure.
    if let Some((costs, run)) = &speculative {
        crate::bench_draft::print_pass_costs(costs);
        let plain = rows.iter().find(|(t, _, _)| t.starts_with("tg")).map(|(_, _, g)| g);
        let line = serde_json::json!({
            "model": name, "device": args.model.device, "test": format!("tg{} speculative", args.generate),
            "tok_s": run.tok_s, "repetitions": reps, "draft": draft.as_ref().map(|d| d.path.display().to_string()),
            "speculation": run.stats, "acceptance_rate": run.stats.acceptance_rate(),
            "tokens_per_pass": run.stats.tokens_per_pass(),
            "ids_equal_plain": plain.map(|g| g == &run.generated),
            "pass_secs": costs.iter().map(|(n, s)| serde_json::json!({"tokens": n, "secs": s})).collect::<Vec<_>>(),
            "peak_device_bytes": peak, "peak_measured": watch.peak_bytes().is_some(),
            "generated_first": run.generated.iter().take(16).collect::<Vec<_>>(),
            "generated_checksum": checksum(&run.generated),
        });
        println!("{line}");
    }
    Ok(())
}

/// The checksum of generated ids the harness compares across runs.
fn checksum(ids: &[u32]) -> u64 {
    ids.iter().fold(0u64, |h, &t| h.wrapping_mul(1_000_003).wrapping_add(t as u64))
}

/// A mixture of experts: the mixture's cost model for this run's placement, at the hit
/// rate the expert cache measured (the dense model's figure above reads every expert).
fn print_moe_prediction(
    path: &std::path::Path,
    m: &cardinfer_stream::ResidentModel,
    profile: &cardinfer_plan::Profile,
    chunk: usize,
) -> Result<()> {
    use cardinfer_plan::{predict_moe, MoePlacement};
    let ckpt = cardinfer_quant::Checkpoint::open(path)?;
    let Some(shape) = crate::plan::moe_shape(&ckpt, cardinfer_stream::TextModel::spec(m))? else { return Ok(()) };
    let stats = m.expert_stats();
    let (placement, hit) = match (m.experts_on_host(), stats) {
        (false, _) => (MoePlacement::Resident, None),
        (true, Some(s)) => (MoePlacement::ExpertsOnHost { cache_bytes: s.device_bytes }, Some(s.hit_rate())),
        (true, None) => (MoePlacement::ExpertsOnHost { cache_bytes: 0 }, Some(0.0)),
    };
    let p = predict_moe(&shape, placement, profile, chunk, hit);
    eprintln!(
        "predicted (mixture-of-experts model, {:.1} % of a token's experts on the device): decode {:.2} tok/s, prefill {:.0} tok/s",
        100.0 * p.hit_rate,
        p.decode_tok_s,
        p.prefill_tok_s
    );
    Ok(())
}
