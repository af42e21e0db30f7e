//! Speculative decoding through the library: a small draft model of the same vocabulary
//! proposes tokens, the target checks them in one pass each. Greedy output is the target's
//! own; the statistics say how many drafted tokens each pass kept.
//!
//! ```text
//! scripts/fetch-model.sh qwen2.5-1.5b; scripts/fetch-model.sh qwen2.5-0.5b
//! cargo run --release --example speculative -- \
//!     ~/.cache/cardinfer/models/qwen2.5-coder-1.5b-instruct.gguf \
//!     ~/.cache/cardinfer/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf "Write a haiku about Rust."
//! ```

use cardinfer_stream::candle_core::Device;
use cardinfer_stream::{
    encode_chat, GenerateOptions, LoadOptions, LoadedModel, Message, SpeculativeOptions, SpeculativeSession,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: speculative TARGET.gguf DRAFT.gguf [PROMPT]";
    let (target, draft) = (args.next().ok_or(usage)?, args.next().ok_or(usage)?);
    let prompt = args.next().unwrap_or_else(|| "Write a haiku about Rust.".into());

    // The draft is loaded resident first; the target is placed in what it leaves of the
    // budget (on a GPU: `Device::new_cuda(0)?` and e.g. `.budget("6GiB".parse()?)`).
    let (target, draft) = LoadedModel::load_with_draft(
        target.as_ref(),
        draft.as_ref(),
        &Device::Cpu,
        &LoadOptions::default(),
        |_, _| {},
    )?;
    let tokenizer = target.tokenizer.as_ref().ok_or("the target has no tokenizer")?;
    // The user's text never becomes control tokens.
    let ids = encode_chat(tokenizer, &target.chat_template, &[Message::new("user", prompt.as_str())], true, false)?;

    let options = SpeculativeOptions { max_draft: 6, ..Default::default() };
    let mut session = SpeculativeSession::new(&target.model, &draft.model, Some(tokenizer), options)?;
    let reply = session.generate(&ids, &GenerateOptions { max_tokens: 64, ..Default::default() }, |t| print!("{t}"))?;
    println!();
    if let Some(stats) = &reply.speculation {
        eprintln!(
            "{} tokens at {:.1} tok/s; {} of {} drafted tokens kept, {:.2} tokens per pass of the target",
            reply.generated_ids.len(),
            reply.decode_tok_s(),
            stats.accepted,
            stats.drafted,
            stats.tokens_per_pass()
        );
    }
    Ok(())
}
