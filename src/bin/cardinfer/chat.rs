//! A multi-turn chat on stdin/stdout. The conversation and its KV cache persist across
//! turns (each turn only pays for its new tokens). `/reset` starts over, `/exit` quits.
//!
//! ```text
//! cardinfer chat --system "You are concise."
//! ```

use anyhow::{bail, Result};
use cardinfer_stream::{encode_chat, GenerateOptions, Message, SamplingParams};
use std::io::BufRead;

#[derive(clap::Args)]
pub struct Args {
    /// System prompt.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens: u64,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 0.9)]
    top_p: f64,
    /// Random seed.
    #[arg(long, default_value_t = 299792458)]
    seed: u64,
    #[command(flatten)]
    model: crate::common::ModelArgs,
    #[command(flatten)]
    draft: crate::draft::DraftArgs,
}

pub fn run(args: Args) -> Result<()> {
    let crate::draft::Loaded { target: loaded, draft, .. } = crate::draft::load(&args.model, &args.draft)?;
    let Some(tokenizer) = loaded.tokenizer.as_ref() else {
        bail!("{} has no tokenizer; chat needs one", loaded.path.display());
    };
    let mut session = crate::draft::AnySession::new(&loaded, draft.as_ref(), &args.draft)?;
    let initial: Vec<Message> = args.system.iter().map(|s| Message::new("system", s.as_str())).collect();
    let mut messages = initial.clone();
    let mut turn = 0u64;
    eprintln!("chat ready: type a message; /reset starts over, /exit quits");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut bytes = Vec::new();
        if stdin.lock().read_until(b'\n', &mut bytes)? == 0 {
            break;
        }
        // A line that is not UTF-8 is reported and skipped; the conversation goes on.
        let Ok(line) = String::from_utf8(bytes) else {
            eprintln!("(that line is not UTF-8 text; type it again)");
            continue;
        };
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = initial.clone();
                session.reset();
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", line));
        // Typed text is tokenized as text: control-token strings in it stay text.
        let ids = encode_chat(tokenizer, &loaded.chat_template, &messages, true, false)?;
        let new_ids = session.reuse_prefix(&ids)?;
        let options = GenerateOptions {
            max_tokens: args.max_tokens as usize,
            sampling: SamplingParams {
                temperature: args.temperature,
                top_p: Some(args.top_p),
                seed: args.seed + turn,
                ..Default::default()
            },
            ..Default::default()
        };
        let reply = match session.generate(&new_ids, &options, |piece| {
            crate::logging::stdout_or_exit(piece);
        }) {
            Ok(reply) => reply,
            Err(e) => {
                eprintln!("\nerror: {e} (use /reset to start over)");
                messages.pop();
                continue;
            }
        };
        crate::logging::stdout_or_exit("\n");
        eprintln!(
            "[{} new prompt tokens, {} generated, {:.1} tok/s]",
            new_ids.len(),
            reply.generated_ids.len(),
            reply.decode_tok_s()
        );
        if let Some(line) = crate::draft::summary(&reply) {
            eprintln!("[{line}]");
        }
        messages.push(Message::new("assistant", reply.text.trim()));
        turn += 1;
    }
    Ok(())
}
