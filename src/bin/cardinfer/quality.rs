//! Compare a model with a reference on the same tokens: KL divergence of the next-token
//! distributions, top-1 agreement, and the perplexity of each. The reference is another
//! model (e.g. the f16 file a q4_k_m was made from) or a JSON logits file
//! (`{"input_ids": [...], "logits": [[...], ...]}`, as in `tests/fixtures/reference/hf/*/reference.json`).
//!
//! ```text
//! cardinfer quality --model m-q4_k_m.gguf --reference m-f16.gguf --text README.md
//! cardinfer quality --model qwen3-tiny-q8_0.gguf --reference reference.json --json
//! ```

use anyhow::{bail, Context, Result};
use cardinfer_quant::quality::QualityStats;
use cardinfer_stream::model::{Logits, TextModel};
use cardinfer_stream::LoadedModel;
use std::path::Path;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: crate::common::ModelArgs,
    /// The reference: a model (GGUF file or checkpoint directory) or a JSON logits file.
    #[arg(long)]
    reference: String,
    /// A text file to compare on (tokenized with the model's tokenizer).
    #[arg(long, conflicts_with = "ids")]
    text: Option<String>,
    /// Comma-separated token ids to compare on.
    #[arg(long)]
    ids: Option<String>,
    /// Tokens per forward pass (bounds the logits held in memory).
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The reference's logits, position by position.
enum Reference {
    Model(Box<LoadedModel>),
    Logits { input_ids: Option<Vec<u32>>, logits: Vec<Vec<f32>> },
}

fn read_logits_file(path: &Path) -> Result<Reference> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    #[derive(serde::Deserialize)]
    struct File {
        input_ids: Option<Vec<u32>>,
        logits: Vec<Vec<f32>>,
    }
    let file: File =
        serde_json::from_str(&text).with_context(|| format!("{}: expected {{input_ids, logits}}", path.display()))?;
    Ok(Reference::Logits { input_ids: file.input_ids, logits: file.logits })
}

/// Logits of a model for consecutive pieces of one token sequence (the KV cache carries over).
struct ChunkedLogits<'a> {
    model: &'a dyn TextModel,
    kv: cardinfer_stream::KvCache,
}

impl<'a> ChunkedLogits<'a> {
    fn new(model: &'a dyn TextModel) -> Self {
        Self { model, kv: model.new_cache() }
    }

    /// One row of logits per token of `piece`.
    fn next(&mut self, piece: &[u32]) -> Result<Vec<Vec<f32>>> {
        let logits = self.model.forward(piece, &mut self.kv, Logits::All)?;
        Ok(logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?)
    }
}

pub fn run(args: Args) -> Result<()> {
    let (loaded, device, _watch, _) = crate::common::load(&args.model)?;
    let reference_path = Path::new(&args.reference);
    let reference = if reference_path.extension().is_some_and(|e| e == "json") {
        read_logits_file(reference_path)?
    } else {
        let options = args.model.placement.options(None)?;
        let model = LoadedModel::load_with(reference_path, &device, &options, |_, _| {})
            .with_context(|| format!("loading reference {}", reference_path.display()))?;
        Reference::Model(Box::new(model))
    };
    let ids = match (crate::common::text_or_ids(args.text.as_deref(), args.ids.as_deref(), &loaded)?, &reference) {
        (Some(ids), _) => ids,
        (None, Reference::Logits { input_ids: Some(ids), .. }) => ids.clone(),
        (None, _) => bail!("give --text FILE or --ids 1,2,3"),
    };
    if ids.len() < 2 {
        bail!("need at least 2 tokens to compare, got {}", ids.len());
    }
    let context = loaded.model.spec().context_length;
    if ids.len() > context {
        bail!("{} tokens exceed the model's context of {context}: use a shorter text", ids.len());
    }

    if let Reference::Logits { logits, .. } = &reference {
        if logits.len() < ids.len() {
            bail!("{}: {} logit rows for {} tokens", args.reference, logits.len(), ids.len());
        }
    }
    let mut model_pass = ChunkedLogits::new(&loaded.model);
    enum ReferencePass<'a> {
        Model(ChunkedLogits<'a>),
        Logits(&'a [Vec<f32>]),
    }
    let mut reference_pass = match &reference {
        Reference::Model(m) => ReferencePass::Model(ChunkedLogits::new(&m.model)),
        Reference::Logits { logits, .. } => ReferencePass::Logits(logits),
    };
    let mut stats = QualityStats::new();
    for (index, piece) in ids.chunks(args.chunk.max(1)).enumerate() {
        let start = index * args.chunk.max(1);
        let model_rows = model_pass.next(piece)?;
        let reference_rows = match &mut reference_pass {
            ReferencePass::Model(pass) => pass.next(piece)?,
            ReferencePass::Logits(logits) => logits[start..start + piece.len()].to_vec(),
        };
        for (offset, (m, r)) in model_rows.iter().zip(&reference_rows).enumerate() {
            stats.add(m, r, ids.get(start + offset + 1).copied())?;
        }
    }
    let report = stats.report();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let ppl = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!("| metric | value |");
    println!("|---|---:|");
    println!("| positions | {} |", report.positions);
    println!("| KL mean (nats) | {:.6} |", report.kl_mean);
    println!("| KL max (nats) | {:.6} |", report.kl_max);
    println!("| top-1 agreement | {:.2}% |", 100.0 * report.top1_agreement);
    println!("| perplexity, model | {} |", ppl(report.perplexity_model));
    println!("| perplexity, reference | {} |", ppl(report.perplexity_reference));
    println!("| max abs logit diff | {:.4} |", report.max_abs_logit_diff);
    Ok(())
}
