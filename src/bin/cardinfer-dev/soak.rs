//! A soak run: many generations (and chat turns) in one process, with the process's
//! resident memory (and, on CUDA, device memory) sampled, to show that nothing grows but
//! the KV cache's own use.
//!
//! ```text
//! cardinfer-dev soak -n 1000 --turns 1000
//! ```
//! Prints a markdown table: after how many generations or turns, RSS MiB, device MiB.

use anyhow::Result;
use cardinfer_stream::{GenerateOptions, Message, SamplingParams, Session, TextModel};

#[derive(clap::Args)]
pub struct Args {
    /// Independent generations (each a fresh session over the same model).
    #[arg(short = 'n', long, default_value_t = 1000)]
    generations: usize,
    /// Chat turns in one session (the conversation reset whenever the context fills).
    #[arg(long, default_value_t = 1000)]
    turns: usize,
    /// Tokens per generation or turn.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Rows in the table per phase.
    #[arg(long, default_value_t = 10)]
    rows: usize,
    #[command(flatten)]
    model: crate::common::ModelArgs,
}

/// Resident set size of this process, MiB (Linux `/proc/self/statm`).
fn rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .unwrap_or(0);
    pages as f64 * 4096.0 / (1 << 20) as f64
}

pub fn run(args: Args) -> Result<()> {
    let (loaded, _device, mut watch, _) = crate::common::load(&args.model)?;
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| anyhow::anyhow!("soak needs a tokenizer"))?;
    let options = |seed: u64| GenerateOptions {
        max_tokens: args.tokens,
        sampling: SamplingParams { temperature: 0.8, seed, ..Default::default() },
        ..Default::default()
    };
    let every = |n: usize| (n / args.rows.max(1)).max(1);
    let device_mib = |watch: &crate::common::MemoryWatch| {
        watch.peak_bytes().map_or("-".to_string(), |b| format!("{:.0}", b as f64 / (1 << 20) as f64))
    };
    println!("| phase | done | RSS MiB | device peak MiB |");
    println!("|---|---:|---:|---:|");
    println!("| loaded | 0 | {:.1} | {} |", rss_mib(), device_mib(&watch));
    let prompt = loaded.chat_template.render(&[Message::new("user", "Tell me about the sea.")], true)?;
    let ids = tokenizer.encode(&prompt)?;
    for i in 1..=args.generations {
        let mut session = Session::new(&loaded.model, Some(tokenizer));
        session.generate(&ids, &options(i as u64), |_| {})?;
        watch.sample();
        if i % every(args.generations) == 0 {
            println!("| generations | {i} | {:.1} | {} |", rss_mib(), device_mib(&watch));
        }
    }
    let mut session = Session::new(&loaded.model, Some(tokenizer));
    let mut messages = Vec::new();
    let mut resets = 0;
    for turn in 1..=args.turns {
        messages.push(Message::new("user", format!("Say a word, number {turn}.")));
        let mut ids = cardinfer_stream::encode_chat(tokenizer, &loaded.chat_template, &messages, true, false)?;
        if ids.len() + args.tokens + 1 > loaded.model.spec().context_length {
            // The context is full: a new conversation starting with this turn's message.
            messages = vec![messages.pop().unwrap_or_else(|| Message::new("user", "Hi"))];
            session.reset();
            resets += 1;
            ids = cardinfer_stream::encode_chat(tokenizer, &loaded.chat_template, &messages, true, false)?;
        }
        let new_ids = session.reuse_prefix(&ids)?;
        let reply = session.generate(&new_ids, &options(turn as u64), |_| {})?;
        messages.push(Message::new("assistant", reply.text.trim()));
        watch.sample();
        if turn % every(args.turns) == 0 {
            println!("| chat turns | {turn} | {:.1} | {} |", rss_mib(), device_mib(&watch));
        }
    }
    if args.turns > 0 {
        println!("\n{} chat turns, the context full (a new conversation) {resets} times.", args.turns);
    }
    Ok(())
}
