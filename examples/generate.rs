//! The library in a few lines: load a model within a device-memory budget (blocks that
//! do not fit stream through a small pool), then generate a chat reply.
//!
//! ```text
//! scripts/fetch-model.sh        # prints the path of SmolLM2-135M-Instruct
//! cargo run --release --example generate -- ~/.cache/cardinfer/models/SmolLM2-135M-Instruct.Q4_1.gguf "What is the capital of France?"
//! ```

use cardinfer_stream::candle_core::Device;
use cardinfer_stream::{GenerateOptions, LoadOptions, LoadedModel, Message, Mode, SamplingParams, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: generate MODEL.gguf [QUESTION]")?;
    let question = args.next().unwrap_or_else(|| "What is the capital of France?".into());

    // 64 MiB for the weights' pool (on the CPU a budget bounds the RAM of streamed
    // blocks); `Device::new_cuda(0)?` with the `cuda` feature puts them on a GPU.
    let device = Device::Cpu;
    let options = LoadOptions::default().budget("64MiB".parse()?).mode(Mode::Stream);
    let model = LoadedModel::load_with(path.as_ref(), &device, &options, |_, _| {})?;
    let tokenizer = model.tokenizer.as_ref().ok_or("the model has no tokenizer")?;

    let prompt = model.chat_template.render(&[Message::new("user", question.as_str())], true)?;
    let ids = tokenizer.encode(&prompt)?;
    let options = GenerateOptions {
        max_tokens: 48,
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        ..Default::default()
    };
    let reply = Session::new(&model.model, Some(tokenizer)).generate(&ids, &options, |piece| print!("{piece}"))?;
    println!();
    eprintln!(
        "{} tokens at {:.1} tok/s; {} MB streamed per token",
        reply.generated_ids.len(),
        reply.decode_tok_s(),
        model.model.metrics().bytes_streamed_per_token / 1_000_000
    );
    Ok(())
}
