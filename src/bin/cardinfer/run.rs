//! Generate text from a prompt, streaming it to stdout.
//!
//! ```text
//! cardinfer run --prompt "The capital of France is" --temperature 0
//! cardinfer run --model model.gguf --prompt-ids 1,2,3 --json
//! ```

use anyhow::{bail, Result};
use cardinfer_stream::{encode_chat, GenerateOptions, Message, SamplingParams};

#[derive(clap::Args)]
pub struct Args {
    /// Prompt text.
    #[arg(short = 'p', long, conflicts_with = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long)]
    prompt_ids: Option<String>,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens: u64,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f64>,
    /// Keep only the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed.
    #[arg(long, default_value_t = 299792458)]
    seed: u64,
    /// Stop when the text contains this (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[command(flatten)]
    model: crate::common::ModelArgs,
    #[command(flatten)]
    draft: crate::draft::DraftArgs,
    /// Print one JSON object with ids, text and timings at the end.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let crate::draft::Loaded { target: loaded, draft, device, mut watch, load_secs } =
        crate::draft::load(&args.model, &args.draft)?;
    let tokenizer = loaded.tokenizer.as_ref();
    let prompt_ids = match (&args.prompt, &args.prompt_ids) {
        (_, Some(ids)) => crate::common::parse_ids(ids)?,
        (Some(text), None) => {
            let Some(tok) = tokenizer else {
                bail!("{} has no tokenizer: use --prompt-ids", loaded.path.display());
            };
            if args.chat {
                // The prompt is the user's message: its text never becomes control tokens.
                encode_chat(tok, &loaded.chat_template, &[Message::new("user", text.as_str())], true, false)?
            } else {
                tok.encode(text)?
            }
        }
        (None, None) => bail!("give --prompt TEXT or --prompt-ids 1,2,3"),
    };
    let options = GenerateOptions {
        max_tokens: args.max_tokens as usize,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
            ..Default::default()
        },
        stop_strings: args.stop.clone(),
        extra_eos: Vec::new(),
    };
    let mut session = crate::draft::AnySession::new(&loaded, draft.as_ref(), &args.draft)?;
    let quiet = args.json;
    // When each token's text arrived, seconds from the start (for `--json`: how decode
    // speed changes over a long run).
    let (start, mut token_secs) = (std::time::Instant::now(), Vec::with_capacity(args.max_tokens as usize));
    let result = session.generate(&prompt_ids, &options, |piece| {
        token_secs.push(start.elapsed().as_secs_f64());
        watch.sample();
        if !quiet {
            crate::logging::stdout_or_exit(piece);
        }
    })?;
    watch.sample();
    if args.json {
        let metrics = loaded.model.metrics();
        // Measured on CUDA (cuMemGetInfo, sampled); on the CPU the executor's accounting.
        let peak = watch.peak_bytes().or(device.is_cpu().then_some(metrics.accounted_peak_bytes));
        let report = serde_json::json!({
            "model": loaded.path.display().to_string(),
            "device": format!("{device:?}"),
            "mode": metrics.mode,
            "budget_bytes": (loaded.budget_bytes != u64::MAX).then_some(loaded.budget_bytes),
            "prompt_ids": result.prompt_ids,
            "generated_ids": result.generated_ids,
            "text": result.text,
            "stop_reason": format!("{:?}", result.stop_reason),
            "load_secs": load_secs,
            "prefill_tok_s": result.prefill_tok_s(),
            "decode_tok_s": result.decode_tok_s(),
            "weight_bytes": metrics.weight_bytes,
            "peak_device_bytes": peak,
            "peak_device_bytes_measured": watch.peak_bytes().is_some(),
            "bytes_streamed_per_token": metrics.bytes_streamed_per_token,
            "slots": metrics.slots,
            "h2d_gb_s": metrics.h2d_gb_s,
            "copy_secs": metrics.copy_secs,
            "compute_secs": metrics.compute_secs,
            "stall_secs": metrics.stall_secs,
            "host_secs": metrics.host_secs,
            "hop_wait_secs": metrics.hop_wait_secs,
            "host_bytes_per_token": metrics.host_bytes_per_token,
            "host_tuning": metrics.host_tuning,
            "token_secs": token_secs,
            "draft": draft.as_ref().map(|d| d.path.display().to_string()),
            "speculation": result.speculation,
        });
        crate::logging::stdout_or_exit(&format!("{report}\n"));
    } else {
        crate::logging::stdout_or_exit("\n");
        eprintln!(
            "[{} prompt tokens at {:.1} tok/s, {} generated at {:.1} tok/s, stop: {:?}]",
            result.prompt_ids.len(),
            result.prefill_tok_s(),
            result.generated_ids.len(),
            result.decode_tok_s(),
            result.stop_reason
        );
        if let Some(line) = crate::draft::summary(&result) {
            eprintln!("[{line}]");
        }
    }
    Ok(())
}
