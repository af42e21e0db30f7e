//! Generation: prefill, decode loop, sampling and stop conditions, over a KV cache that
//! persists across calls (multi-turn chat).

use crate::model::text_model::{check_tokens, Logits, TextModel};
use crate::text::emission::Emitter;
use crate::text::sampling::{Sampler, SamplingParams};
use crate::text::speculative::SpeculationStats;
use crate::text::tokenizer::Tokenizer;
use crate::{KvCache, Result, StreamError};
use std::time::Instant;

/// What ends a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-sequence token.
    Eos,
    /// The text contains one of the stop strings.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
}

/// Options of one generation.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Token selection.
    pub sampling: SamplingParams,
    /// Stop when the text contains any of these (the stop string is not returned).
    pub stop_strings: Vec<String>,
    /// Extra token ids that end generation, besides the model's EOS ids.
    pub extra_eos: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_tokens: 128, sampling: SamplingParams::default(), stop_strings: Vec::new(), extra_eos: Vec::new() }
    }
}

/// Result and timings of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Tokens fed as the prompt of this call.
    pub prompt_ids: Vec<u32>,
    /// Tokens generated (including a final EOS token, if any).
    pub generated_ids: Vec<u32>,
    /// Text of the generated tokens (without the EOS token or stop string); empty
    /// without a tokenizer.
    pub text: String,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Seconds spent on the prompt.
    pub prefill_secs: f64,
    /// Seconds spent generating after the first token.
    pub decode_secs: f64,
    /// Drafted and accepted tokens, when a draft model proposed them.
    pub speculation: Option<SpeculationStats>,
}

impl Generation {
    /// Prompt tokens per second.
    pub fn prefill_tok_s(&self) -> f64 {
        rate(self.prompt_ids.len(), self.prefill_secs)
    }

    /// Generated tokens per second, after the first (which prefill produced).
    pub fn decode_tok_s(&self) -> f64 {
        rate(self.generated_ids.len().saturating_sub(1), self.decode_secs)
    }
}

fn rate(tokens: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        tokens as f64 / secs
    } else {
        0.0
    }
}

/// A conversation with one model: its KV cache and the tokens it holds.
pub struct Session<'m> {
    model: &'m dyn TextModel,
    tokenizer: Option<&'m Tokenizer>,
    kv: KvCache,
    tokens: Vec<u32>,
}

impl<'m> Session<'m> {
    /// A session with an empty cache.
    pub fn new(model: &'m dyn TextModel, tokenizer: Option<&'m Tokenizer>) -> Self {
        Self { model, tokenizer, kv: model.new_cache(), tokens: Vec::new() }
    }

    /// Tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) {
        self.kv.clear();
        self.tokens.clear();
    }

    /// Keeps the longest cached prefix of `ids` and returns the part still to feed, so a
    /// re-rendered conversation only pays for its new tokens.
    pub fn reuse_prefix(&mut self, ids: &[u32]) -> Result<Vec<u32>> {
        let common = reusable_prefix(&self.tokens, ids);
        self.kv.truncate(common)?;
        self.tokens.truncate(common);
        Ok(ids[common..].to_vec())
    }

    /// Feeds `prompt_ids` after what the cache holds, then generates. `on_text` receives
    /// text pieces as they complete (never half a UTF-8 character).
    pub fn generate(
        &mut self,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let spec = self.model.spec();
        let Started { mut sampler, mut next, prefill_secs } =
            start(self.model, &mut self.kv, &mut self.tokens, prompt_ids, options)?;

        let decode_start = Instant::now();
        let mut emitter = Emitter::new(self.tokenizer, options, &spec.eos_token_ids);
        let stop_reason = loop {
            if let Some(stop) = emitter.push(next, &mut on_text)? {
                break stop;
            }
            if self.kv.len() >= spec.context_length {
                break StopReason::ContextFull;
            }
            let logits = self.model.forward(&[next], &mut self.kv, Logits::Last)?;
            self.tokens.push(next);
            next = sampler.sample(&logits, &self.tokens)?;
        };
        // The last token is generated but not yet in the cache; a next turn feeds it.
        let (generated_ids, text) = emitter.finish(stop_reason, &mut on_text)?;
        Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            generated_ids,
            text,
            stop_reason,
            prefill_secs,
            decode_secs: decode_start.elapsed().as_secs_f64(),
            speculation: None,
        })
    }

    /// Text of ids for callers without their own tokenizer handle.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.ok_or_else(|| StreamError::Tokenizer("this model has no tokenizer".into()))?.decode(ids)
    }
}

/// How many of `cached` tokens a conversation re-rendered as `ids` keeps: their common
/// prefix, less one where that is all of `ids` (something must be fed to get logits, so
/// the last position is recomputed).
pub(crate) fn reusable_prefix(cached: &[u32], ids: &[u32]) -> usize {
    let common = cached.iter().zip(ids).take_while(|(a, b)| a == b).count();
    if common == ids.len() && common > 0 {
        common - 1
    } else {
        common
    }
}

/// What every generation loop starts from: the sampler, the first generated token (not
/// yet in the cache) and the seconds the prompt took.
pub(crate) struct Started {
    pub(crate) sampler: Sampler,
    pub(crate) next: u32,
    pub(crate) prefill_secs: f64,
}

/// Checks the request, runs `prompt_ids` through `model` after what `kv` holds (adding
/// them to `tokens`) and samples the first token.
pub(crate) fn start(
    model: &dyn TextModel,
    kv: &mut KvCache,
    tokens: &mut Vec<u32>,
    prompt_ids: &[u32],
    options: &GenerateOptions,
) -> Result<Started> {
    if options.max_tokens == 0 {
        return Err(StreamError::InvalidParameter {
            name: "max tokens",
            reason: "0: nothing would be generated".into(),
        });
    }
    check_tokens(model.spec(), prompt_ids, kv.len())?;
    let mut sampler = Sampler::new(options.sampling.clone())?;
    let start = Instant::now();
    let logits = model.forward(prompt_ids, kv, Logits::Last)?;
    tokens.extend_from_slice(prompt_ids);
    let next = sampler.sample(&logits, tokens)?;
    Ok(Started { sampler, next, prefill_secs: start.elapsed().as_secs_f64() })
}
