//! Where every block of a model would live for a budget, what moves per token, and the
//! predicted speed — on this machine's profile, or projected onto a catalogued GPU.
//!
//! ```text
//! cardinfer plan --model qwen3-14b.gguf --vram-budget 6GiB --gpu h100
//! cardinfer plan --model qwen3-14b.gguf --gpu rtx3060-12gb --json
//! cardinfer plan --table --min-tok-s 5
//! ```

use anyhow::{bail, Context, Result};
use cardinfer_core::{BlockId, ByteSize};
use cardinfer_plan::catalog::{gpu_by_key, GpuSpec, H100};
use cardinfer_plan::table::{markdown, RUNTIME_RESERVE};
use cardinfer_plan::{predict_batch, Budget, DecodeRates, Mode, Placement, PlanRequest, Profile, StreamPlan};
use cardinfer_plan::{predict_moe, MoePlacement, MoePrediction, MoeShape};
use cardinfer_quant::Checkpoint;
use cardinfer_stream::model::names::model_layout;
use cardinfer_stream::model::weights::device_bytes_for;

#[derive(clap::Args)]
pub struct Args {
    /// GGUF file or Hugging Face checkpoint directory.
    #[arg(short = 'm', long, required_unless_present = "table")]
    model: Option<String>,
    /// Device memory budget (500MiB, 6GiB); default: the GPU's memory less 400 MiB.
    #[arg(long)]
    vram_budget: Option<String>,
    /// Context to reserve the KV cache for (default: the model's, at most 4096).
    #[arg(long)]
    context: Option<usize>,
    /// How the KV cache stores keys and values: f16, q8_0 or f32.
    #[arg(long, default_value = "f16")]
    kv_type: String,
    /// Decode batch (sequences decoded together).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tokens per prefill chunk (lowered when its workspace does not fit).
    #[arg(long, default_value_t = 512)]
    prefill_chunk: usize,
    /// Pool slots (default: the planner's choice).
    #[arg(long)]
    slots: Option<usize>,
    /// auto, resident or stream.
    #[arg(long, default_value = "auto")]
    mode: String,
    /// Project onto a catalogued GPU (h100 = the machine the built-in profile was fitted on).
    #[arg(long, default_value = "h100")]
    gpu: String,
    /// A measured profile: a JSON file, or a device key whose cached profile `probe`
    /// wrote (e.g. `cuda0-NVIDIA_H100_80GB_HBM3`). Default: the built-in H100 fit.
    #[arg(long)]
    profile: Option<String>,
    /// Hybrid decode: place part of the streamed layers on the host (CPU compute).
    #[arg(long)]
    hybrid: bool,
    /// Print "GPU → largest model at ≥ --min-tok-s" for every catalogued GPU.
    #[arg(long)]
    table: bool,
    /// Decode speed the table asks for.
    #[arg(long, default_value_t = 5.0, value_parser = positive_rate)]
    min_tok_s: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn profile_for(args: &Args, gpu: &GpuSpec) -> Result<Profile> {
    let measured = load_profile(args.profile.as_deref())?;
    Ok(if gpu.key == H100.key { measured } else { gpu.project(&measured, &H100) })
}

/// A decode rate: a positive, finite number of tokens per second.
fn positive_rate(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("`{text}` is not a positive number of tokens per second")),
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.table {
        return print_table(&args);
    }
    let gpu = gpu_by_key(&args.gpu)?;
    let profile = profile_for(&args, &gpu)?;
    let Some(model) = args.model.as_deref() else { bail!("give --model (or --table)") };
    let mode = args.mode.parse::<Mode>()?;
    let ckpt = Checkpoint::open(model).with_context(|| format!("opening {model}"))?;
    let mut spec = ckpt.spec()?;
    spec.context_length = args.context.unwrap_or(spec.context_length.min(4096)).min(spec.context_length);
    let layout = model_layout(&ckpt, &spec)?;
    let blocks = block_bytes(&layout);
    let budget_bytes = match &args.vram_budget {
        Some(text) => text.parse::<Budget>()?.resolve(Some(gpu.vram_bytes()))?,
        None => gpu.vram_bytes().saturating_sub(RUNTIME_RESERVE),
    };
    let request = PlanRequest {
        budget_bytes,
        mode,
        slots: args.slots,
        prefill_chunk: args.prefill_chunk,
        runtime_bytes: 0,
        measured_workspace_bytes: None,
        overlapped_copies: false,
        kv_type: args.kv_type.parse()?,
    };
    // The placement the executor makes for these flags (`StreamPlan::place`), so the
    // prediction is of the run `generate`/`bench` would do.
    let mut plan = StreamPlan::place(&spec, &blocks, &request)?;
    if args.hybrid {
        plan.place_hybrid(&DecodeRates::from_profile(&profile), None, args.slots.unwrap_or(2), mode);
    }
    let prediction = predict_batch(&spec, &plan, &profile, false, args.batch);
    if args.json {
        let ranges: Vec<_> = ranges(&plan)
            .into_iter()
            .map(|(what, placement, bytes)| serde_json::json!({"blocks": what, "placement": placement, "bytes": bytes}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "model": model, "gpu": gpu.name, "profile": profile, "budget_bytes": budget_bytes,
                "context": spec.context_length, "batch": args.batch, "slots": plan.slots,
                "slot_bytes": plan.slot_bytes, "kv_bytes": plan.kv_bytes, "kv_on_host": plan.kv_on_host,
                "workspace_bytes": plan.workspace_bytes,
                "prefill_chunk": plan.prefill_chunk, "placement": ranges, "prediction": prediction,
                "reasons": plan.reasons,
            })
        );
        return Ok(());
    }
    println!(
        "{model} on {} within {} (context {}, batch {})",
        gpu.name,
        ByteSize(budget_bytes),
        spec.context_length,
        args.batch
    );
    println!("profile: {}", profile.device);
    println!();
    println!("| blocks | placement | bytes |");
    println!("|---|---|---:|");
    for (what, placement, bytes) in ranges(&plan) {
        println!("| {what} | {placement} | {} |", ByteSize(bytes));
    }
    println!(
        "| pool | {} slot(s) × {} | {} |",
        plan.slots,
        ByteSize(plan.slot_bytes),
        ByteSize(plan.slots as u64 * plan.slot_bytes)
    );
    let host_layers = plan.host_layer_count();
    let kv_where = match (plan.kv_on_host, host_layers) {
        (true, _) => "host (one layer at a time on the device)".to_string(),
        (false, 0) => "device".to_string(),
        (false, n) => {
            format!("host for the {n} host layers, device for the others (and one host layer's visiting in prefill)")
        }
    };
    println!(
        "| KV cache | {} tokens, {}, {kv_where} | {} |",
        spec.context_length,
        plan.kv_type,
        ByteSize(plan.kv_bytes)
    );
    println!("| workspace | chunk of {} | {} |", plan.prefill_chunk, ByteSize(plan.workspace_bytes));
    println!("| **device total** | of {} | **{}** |", ByteSize(budget_bytes), ByteSize(plan.device_bytes()));
    println!();
    // A mixture of experts: the dense cost model would read every expert per token; the
    // mixture's own model prices it (print_experts).
    if spec.moe.is_none() {
        print_dense_prediction(&prediction);
    }
    println!("why:");
    for reason in &plan.reasons {
        println!("  - {reason}");
    }
    print_experts(&ckpt, &spec, &blocks, &request, &profile)
}

fn print_dense_prediction(prediction: &cardinfer_plan::Prediction) {
    let d = prediction.decode_ms;
    println!("moved per token: {} over the link", ByteSize(prediction.streamed_bytes_per_token));
    println!(
        "predicted decode {:.1} tok/s (overhead {:.1} ms, resident reads {:.1} ms, link {:.1} ms, host {:.1} ms); bound: {}",
        prediction.decode_tok_s,
        d.overhead,
        d.resident_read,
        d.link,
        d.host,
        prediction.decode_bound
    );
    let full = prediction.decode_ms_at_context;
    println!(
        "predicted decode with the cache full {:.1} tok/s (device attention {:.1} ms, link {:.1} ms, host {:.1} ms)",
        prediction.decode_tok_s_at_context, full.attention, full.link, full.host
    );
    println!("predicted prefill {:.0} tok/s; bound: {}", prediction.prefill_tok_s, prediction.prefill_bound);
}

/// A mixture-of-experts model's split: the dense part every token reads (attention,
/// norms, routers, embedding and head) and the routed experts, of which a token reads k
/// per layer; and whether the loader's placement with the experts in host memory fits.
fn print_experts(
    ckpt: &Checkpoint,
    spec: &cardinfer_core::ModelSpec,
    blocks: &[(BlockId, u64)],
    request: &PlanRequest,
    profile: &Profile,
) -> Result<()> {
    let Some(moe) = &spec.moe else { return Ok(()) };
    let dense_blocks = block_bytes(&cardinfer_stream::model::names::layout_without_experts(ckpt, spec)?);
    let Some(shape) = shape_of(spec, blocks, &dense_blocks) else { return Ok(()) };
    let (all, dense) = (total(blocks), total(&dense_blocks));
    let experts = all.saturating_sub(dense);
    let routed_layers = (0..spec.num_layers).filter(|&l| spec.is_moe_layer(l)).count();
    let per_token = experts * moe.experts_per_token as u64 / moe.experts.max(1) as u64;
    println!();
    println!(
        "mixture of experts: {routed_layers} routed layers × {} experts, {} per token",
        moe.experts, moe.experts_per_token
    );
    println!("| part | bytes | read per token |");
    println!("|---|---:|---:|");
    println!("| dense: attention, norms, routers, embedding, head | {} | {} |", ByteSize(dense), ByteSize(dense));
    println!("| routed experts | {} | {} |", ByteSize(experts), ByteSize(per_token));
    // The loader's choice when the whole does not fit resident: the dense part resident
    // with the largest prefill chunk that fits, the experts in host memory.
    if all <= request.budget_bytes || request.mode != Mode::Auto {
        let chunk = request.prefill_chunk.max(1);
        print_moe_prediction(&predict_moe(&shape, MoePlacement::Resident, profile, chunk, None), "resident");
        return Ok(());
    }
    if let Ok(p) = StreamPlan::place_resident(spec, &dense_blocks, request) {
        let expert = experts / (routed_layers as u64 * moe.experts as u64).max(1);
        let cached = (p.expert_cache_bytes() / expert.max(1)).min(routed_layers as u64 * moe.experts as u64);
        println!(
            "placement (the loader's for this budget): the dense part resident, {} with KV cache and \
             workspace (prefill chunk {}); the experts in host memory, {} of them read per token; \
             on CUDA a device cache of about {cached} experts ({}, {:.1} % of them) in what the budget \
             leaves, the experts a token misses split between the CPU and uploads into the cache",
            ByteSize(p.device_bytes()),
            p.prefill_chunk,
            ByteSize(per_token),
            ByteSize(cached * expert),
            100.0 * cached as f64 / (routed_layers as u64 * moe.experts as u64).max(1) as f64
        );
        let placement = MoePlacement::ExpertsOnHost { cache_bytes: p.expert_cache_bytes() };
        print_moe_prediction(&predict_moe(&shape, placement, profile, p.prefill_chunk, None), "experts on host");
    }
    Ok(())
}

/// The mixture-of-experts cost model's figures ([`cardinfer_plan::moe_cost`]).
fn print_moe_prediction(p: &MoePrediction, placement: &str) {
    let d = p.decode_ms;
    println!(
        "predicted ({placement}; {:.1} % of a token's experts read on the device, the router spreading \
         tokens evenly) decode {:.1} tok/s (overhead {:.1} ms, device reads {:.1} ms, missed experts {:.1} ms); \
         bound: {}; prefill {:.0} tok/s",
        100.0 * p.hit_rate,
        p.decode_tok_s,
        d.overhead,
        d.device_read,
        d.misses,
        p.decode_bound,
        p.prefill_tok_s
    );
}

/// The cost model's description of a mixture-of-experts file: the dense bytes a token
/// reads (all but the experts and the embedding, a lookup) and one expert's bytes.
pub(crate) fn moe_shape(ckpt: &Checkpoint, spec: &cardinfer_core::ModelSpec) -> Result<Option<MoeShape>> {
    if spec.moe.is_none() {
        return Ok(None);
    }
    let dense_blocks = block_bytes(&cardinfer_stream::model::names::layout_without_experts(ckpt, spec)?);
    Ok(shape_of(spec, &block_bytes(&model_layout(ckpt, spec)?), &dense_blocks))
}

/// [`moe_shape`] from the file's blocks with and without their experts.
fn shape_of(
    spec: &cardinfer_core::ModelSpec,
    blocks: &[(BlockId, u64)],
    dense_blocks: &[(BlockId, u64)],
) -> Option<MoeShape> {
    let moe = spec.moe.as_ref()?;
    let (all, dense) = (total(blocks), total(dense_blocks));
    let embed = dense_blocks.iter().find(|(b, _)| *b == BlockId::Embed).map_or(0, |(_, b)| *b);
    let routed_layers = (0..spec.num_layers).filter(|&l| spec.is_moe_layer(l)).count();
    let experts = (routed_layers * moe.experts).max(1) as u64;
    Some(MoeShape {
        dense_bytes: dense.saturating_sub(embed),
        expert_bytes: all.saturating_sub(dense) / experts,
        experts: moe.experts,
        top_k: moe.experts_per_token,
        routed_layers,
        layers: spec.num_layers,
    })
}

/// The bytes of `blocks` together.
fn total(blocks: &[(BlockId, u64)]) -> u64 {
    blocks.iter().map(|(_, bytes)| bytes).sum()
}

/// Each block of `layout` with the bytes it takes on an accelerator.
fn block_bytes(layout: &cardinfer_core::ModelLayout) -> Vec<(BlockId, u64)> {
    layout.blocks.iter().map(|(b, ts)| (*b, ts.iter().map(|t| device_bytes_for(t, true)).sum())).collect()
}

/// Consecutive blocks with the same placement, as (blocks, placement, bytes).
fn ranges(plan: &StreamPlan) -> Vec<(String, &'static str, u64)> {
    let name = |p: Placement| match p {
        Placement::Resident => "resident",
        Placement::Streamed => "streamed",
        Placement::Host => "host",
    };
    let mut out: Vec<(Vec<BlockId>, Placement, u64)> = Vec::new();
    for &(block, placement) in &plan.blocks {
        let bytes = plan.bytes_of(block);
        match out.last_mut() {
            Some((blocks, p, total))
                if *p == placement && matches!((blocks[0], block), (BlockId::Layer(_), BlockId::Layer(_))) =>
            {
                blocks.push(block);
                *total += bytes;
            }
            _ => out.push((vec![block], placement, bytes)),
        }
    }
    out.into_iter()
        .map(|(blocks, p, bytes)| {
            let what = match (blocks.first(), blocks.last()) {
                (Some(BlockId::Layer(a)), Some(BlockId::Layer(b))) if a != b => format!("layers {a}-{b}"),
                (Some(first), _) => first.to_string(),
                (None, _) => String::new(),
            };
            (what, name(p), bytes)
        })
        .collect()
}

/// `--profile`: a file, a cached device key, or the built-in H100 fit.
fn load_profile(arg: Option<&str>) -> Result<Profile> {
    Ok(match arg {
        None => Profile::h100_fitted(),
        Some(text) if std::path::Path::new(text).is_file() => Profile::load(text.as_ref())?,
        // A path that is not there is reported as given, not as a cache path.
        Some(path) if path.contains(std::path::MAIN_SEPARATOR) || path.ends_with(".json") => {
            anyhow::bail!("profile {path}: no such file")
        }
        Some(key) => {
            let cached = Profile::cache_path(&crate::common::cache_dir(), key);
            Profile::load(&cached)
                .with_context(|| format!("`{key}` is neither a file nor a device key `probe` cached"))?
        }
    })
}

fn print_table(args: &Args) -> Result<()> {
    let measured = load_profile(args.profile.as_deref())?;
    print!("{}", markdown(&measured, args.min_tok_s));
    Ok(())
}
