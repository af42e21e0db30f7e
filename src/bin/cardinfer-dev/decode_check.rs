//! Compares the fused decode path with the plain one on the same resident model: a prompt,
//! then `-n` decode steps fed the same tokens (the plain path's choices) through both, so
//! a difference in one step does not change the next step's input.
//!
//! ```text
//! cardinfer-dev decode-check --model q4.gguf --device cuda -n 32
//! ```
//! Prints the largest logit difference per step and whether the chosen ids agree.

use anyhow::{bail, Result};
use cardinfer_stream::DecodePath;
use cardinfer_stream::{Logits, Runner, TextModel};

#[derive(clap::Args)]
pub struct Args {
    /// Prompt tokens before decoding.
    #[arg(short = 'p', default_value_t = 16)]
    prompt: usize,
    /// Decode steps compared.
    #[arg(short = 'n', default_value_t = 32)]
    steps: usize,
    /// Prompt text (encoded with the model's tokenizer) instead of `-p` synthetic ids.
    #[arg(long)]
    prompt_text: Option<String>,
    /// A continuation to feed both paths (e.g. llama.cpp's greedy output) instead of the
    /// plain path's own picks; each path's agreement with it is reported.
    #[arg(long)]
    feed_text: Option<String>,
    #[command(flatten)]
    model: crate::common::ModelArgs,
}

/// Logits of the prompt and of every decode step with `path`. The fed tokens are `feed`
/// when given, else each step's own choice (returned as the second value).
fn run_path(
    model: &mut Runner,
    path: DecodePath,
    prompt: &[u32],
    steps: usize,
    feed: Option<&[u32]>,
) -> Result<(Vec<Vec<f32>>, Vec<u32>)> {
    let Runner::Resident(resident) = model else { bail!("decode_check needs a resident model (--mode resident)") };
    resident.prepare_decode_path(path);
    eprintln!("{path:?}: {}", resident.decode_path());
    let mut kv = model.new_cache();
    let mut logits = vec![model.forward(prompt, &mut kv, Logits::Last)?.flatten_all()?.to_vec1::<f32>()?];
    let mut fed = Vec::with_capacity(steps);
    for step in 0..steps {
        let token = match feed {
            Some(tokens) => tokens[step],
            None => logits.last().map_or(0, |l| argmax(l)) as u32,
        };
        fed.push(token);
        logits.push(model.forward(&[token], &mut kv, Logits::Last)?.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok((logits, fed))
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

pub fn run(args: Args) -> Result<()> {
    let (mut loaded, _, _, _) = crate::common::load(&args.model)?;
    let vocab = loaded.model.spec().vocab_size as u64;
    let encode = |text: &str, continuation: bool| -> Result<Vec<u32>> {
        let Some(tokenizer) = &loaded.tokenizer else { bail!("the model has no tokenizer") };
        Ok(if continuation { tokenizer.encode_continuation(text)? } else { tokenizer.encode(text)? })
    };
    let prompt: Vec<u32> = match &args.prompt_text {
        Some(text) => encode(text, false)?,
        None => (0..args.prompt.max(1) as u64).map(|i| ((i * 7919 + 13) % vocab) as u32).collect(),
    };
    let feed = match &args.feed_text {
        Some(text) => Some(encode(text, true)?.into_iter().take(args.steps).collect::<Vec<_>>()),
        None => None,
    };
    let steps = feed.as_ref().map_or(args.steps, Vec::len);
    // Without a feed the plain path picks the tokens; the fused path is fed the same ones.
    let (plain, tokens) = run_path(&mut loaded.model, DecodePath::Plain, &prompt, steps, feed.as_deref())?;
    let (fused, _) = run_path(&mut loaded.model, DecodePath::Fused, &prompt, steps, Some(&tokens))?;
    if feed.is_some() {
        let agree = |logits: &[Vec<f32>]| logits.iter().zip(&tokens).filter(|(l, &t)| argmax(l) == t as usize).count();
        println!("fed tokens picked: plain {}/{steps}, fused {}/{steps}", agree(&plain), agree(&fused));
    }
    println!("| step | max abs diff | largest abs logit | plain id | fused id |");
    println!("|---:|---:|---:|---:|---:|");
    let (mut worst, mut agree) = (0f32, 0);
    for (step, (p, f)) in plain.iter().zip(&fused).enumerate() {
        let diff = p.iter().zip(f).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = p.iter().map(|a| a.abs()).fold(0f32, f32::max);
        let (ip, i_f) = (argmax(p), argmax(f));
        agree += usize::from(ip == i_f);
        worst = worst.max(diff);
        println!("| {step} | {diff:.3e} | {scale:.2} | {ip} | {i_f} |");
    }
    println!("\nsteps: {}, ids agree: {agree}/{}, largest logit difference: {worst:.3e}", plain.len(), plain.len());
    Ok(())
}
