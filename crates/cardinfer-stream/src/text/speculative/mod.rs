//! Speculative decoding: a small draft model proposes tokens, the target model checks all
//! of them in one pass (one weight pass of a streamed target for several tokens), and the
//! speculative sampling rule keeps the output distributed exactly as the target's own —
//! under greedy decoding, the target's argmax chain as its multi-token pass computes it
//! (on the CPU the same bits as plain decode; on CUDA that pass runs the prefill kernels,
//! whose rounding differs from the fused decode kernels', so near-ties can go the other way).
//!
//! Both models keep a KV cache of the tokens committed so far; drafted tokens the target
//! rejects are cut from both caches ([`KvCache::truncate`]).

mod acceptance;
mod draft_length;
mod vocabulary;

pub use vocabulary::check_draft_vocabulary;

use crate::model::text_model::{Logits, TextModel};
use crate::text::emission::Emitter;
use crate::text::generator::{reusable_prefix, start, GenerateOptions, Generation, Started, StopReason};
use crate::text::sampling::Sampler;
use crate::text::tokenizer::Tokenizer;
use crate::{KvCache, Result, StreamError};
use acceptance::verify;
use candle_core::{Tensor, D};
use draft_length::DraftLength;
use std::time::Instant;

/// How drafts are made.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeculativeOptions {
    /// Most tokens drafted before a verification pass.
    pub max_draft: usize,
    /// Stop drafting when the draft's most likely next token has a probability below this
    /// (0 drafts the whole length).
    pub min_confidence: f32,
    /// Choose each draft's length from the measured acceptance and pass costs (else
    /// always `max_draft`, cut only by `min_confidence`).
    pub adaptive: bool,
}

impl Default for SpeculativeOptions {
    fn default() -> Self {
        Self { max_draft: 8, min_confidence: 0.4, adaptive: true }
    }
}

impl SpeculativeOptions {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        if self.max_draft == 0 || self.max_draft > 64 {
            return Err(StreamError::InvalidParameter { name: "draft length", reason: "must be 1 to 64".into() });
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(StreamError::InvalidParameter { name: "draft confidence", reason: "must be in [0, 1]".into() });
        }
        Ok(())
    }
}

/// What the draft contributed to one generation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SpeculationStats {
    /// Verification passes of the target after the prompt (each yields at least one token).
    pub passes: usize,
    /// Tokens the draft proposed.
    pub drafted: usize,
    /// Drafted tokens the target kept.
    pub accepted: usize,
    /// Seconds the draft model ran (its prompt included).
    pub draft_secs: f64,
    /// Seconds the target's verification passes ran.
    pub verify_secs: f64,
}

impl SpeculationStats {
    /// Share of drafted tokens kept.
    pub fn acceptance_rate(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }

    /// Tokens produced per target pass (1 without speculation).
    pub fn tokens_per_pass(&self) -> f64 {
        if self.passes == 0 {
            0.0
        } else {
            (self.passes + self.accepted) as f64 / self.passes as f64
        }
    }
}

/// A conversation with a target model and a draft model of the same vocabulary.
pub struct SpeculativeSession<'m> {
    target: &'m dyn TextModel,
    draft: &'m dyn TextModel,
    tokenizer: Option<&'m Tokenizer>,
    options: SpeculativeOptions,
    target_kv: KvCache,
    draft_kv: KvCache,
    /// Tokens in the target's cache; the draft's cache holds a prefix of them.
    tokens: Vec<u32>,
}

impl<'m> SpeculativeSession<'m> {
    /// A session with empty caches. The models must have the same number of logits (see
    /// [`check_draft_vocabulary`] for the token-by-token check of their tokenizers).
    pub fn new(
        target: &'m dyn TextModel,
        draft: &'m dyn TextModel,
        tokenizer: Option<&'m Tokenizer>,
        options: SpeculativeOptions,
    ) -> Result<Self> {
        options.validate()?;
        let (tv, dv) = (target.spec().vocab_size, draft.spec().vocab_size);
        if tv != dv {
            return Err(StreamError::VocabularyMismatch {
                target: "the target".into(),
                draft: "the draft".into(),
                reason: format!("the target scores {tv} tokens, the draft {dv}"),
            });
        }
        Ok(Self {
            target,
            draft,
            tokenizer,
            options,
            target_kv: target.new_cache(),
            draft_kv: draft.new_cache(),
            tokens: Vec::new(),
        })
    }

    /// Tokens in the target's cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) {
        self.target_kv.clear();
        self.draft_kv.clear();
        self.tokens.clear();
    }

    /// Keeps the longest cached prefix of `ids` and returns the part still to feed.
    pub fn reuse_prefix(&mut self, ids: &[u32]) -> Result<Vec<u32>> {
        let common = reusable_prefix(&self.tokens, ids);
        self.rewind(common)?;
        Ok(ids[common..].to_vec())
    }

    fn rewind(&mut self, len: usize) -> Result<()> {
        self.tokens.truncate(len);
        self.target_kv.truncate(len)?;
        self.draft_kv.truncate(len)
    }

    /// Feeds `prompt_ids` after what the caches hold, then generates as
    /// [`crate::Session::generate`] does; [`Generation::speculation`] tells what the
    /// draft contributed.
    pub fn generate(
        &mut self,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let spec = self.target.spec();
        let Started { mut sampler, mut next, prefill_secs } =
            start(self.target, &mut self.target_kv, &mut self.tokens, prompt_ids, options)?;
        // The draft draws from its own stream, so its draws and the checks are independent.
        let draft_params =
            crate::SamplingParams { seed: options.sampling.seed ^ 0x9e37_79b9_7f4a_7c15, ..options.sampling.clone() };
        let mut draft_sampler = Sampler::new(draft_params)?;
        let mut length = DraftLength::new(self.options.max_draft, self.options.adaptive);
        let mut stats = SpeculationStats::default();

        let decode_start = Instant::now();
        let mut emitter = Emitter::new(self.tokenizer, options, &spec.eos_token_ids);
        let stop_reason = 'generation: loop {
            if let Some(stop) = emitter.push(next, &mut on_text)? {
                break stop;
            }
            if self.target_kv.len() >= spec.context_length {
                break StopReason::ContextFull;
            }
            // Room for the drafts: in the target's context after `next`, in the tokens
            // still to generate after `next`, and in the draft's context.
            let cached = self.tokens.len();
            let limit = (spec.context_length - cached - 1)
                .min(options.max_tokens - emitter.generated().len() - 1)
                .min(self.draft.spec().context_length.saturating_sub(cached + 1));
            let want = length.choose(limit);

            let draft_start = Instant::now();
            let (drafts, draft_probs) = self.draft_tokens(next, want, &mut draft_sampler)?;
            let draft_secs = draft_start.elapsed().as_secs_f64();

            let verify_start = Instant::now();
            let chunk: Vec<u32> = std::iter::once(next).chain(drafts.iter().copied()).collect();
            let which = if drafts.is_empty() { Logits::Last } else { Logits::All };
            let rows = self.target.forward(&chunk, &mut self.target_kv, which)?;
            self.tokens.push(next);
            // Row i's history: the committed tokens, `next` and the first i drafts.
            let history: Vec<u32> = self.tokens.iter().chain(&drafts).copied().collect();
            let before_drafts = self.tokens.len();
            let target_probs = |i: usize| options.sampling.distribution(&rows.get(i)?, &history[..before_drafts + i]);
            let verdict = verify(&drafts, &draft_probs, target_probs, &mut sampler)?;
            let verify_secs = verify_start.elapsed().as_secs_f64();

            length.record(drafts.len(), verdict.accepted, draft_secs, verify_secs);
            stats.passes += 1;
            stats.drafted += drafts.len();
            stats.accepted += verdict.accepted;
            stats.draft_secs += draft_secs;
            stats.verify_secs += verify_secs;

            // Keep the accepted drafts in both caches; the rejected ones go.
            let kept = &drafts[..verdict.accepted];
            self.tokens.extend_from_slice(kept);
            let committed = self.tokens.len();
            self.rewind(committed)?;
            for (i, &token) in kept.iter().enumerate() {
                if let Some(stop) = emitter.push(token, &mut on_text)? {
                    // The last generated token stays out of the caches, as in `Session`.
                    self.rewind(committed - kept.len() + i)?;
                    break 'generation stop;
                }
            }
            next = verdict.next;
        };
        let (generated_ids, text) = emitter.finish(stop_reason, &mut on_text)?;
        Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            generated_ids,
            text,
            stop_reason,
            prefill_secs,
            decode_secs: decode_start.elapsed().as_secs_f64(),
            speculation: Some(stats),
        })
    }

    /// Up to `want` tokens drawn from the draft after the committed tokens and `next`,
    /// with the distributions they were drawn from; drafting stops early when the draft's
    /// confidence falls below `min_confidence`. The draft's cache catches up on the
    /// committed tokens it has not seen first (its prompt, or the tokens of the last pass).
    fn draft_tokens(&mut self, next: u32, want: usize, sampler: &mut Sampler) -> Result<(Vec<u32>, Vec<Vec<f32>>)> {
        let (mut drafts, mut probs) = (Vec::with_capacity(want), Vec::with_capacity(want));
        if want == 0 {
            return Ok((drafts, probs));
        }
        let mut history: Vec<u32> = self.tokens.clone();
        history.push(next);
        let feed = &history[self.draft_kv.len()..];
        let mut logits = self.draft.forward(feed, &mut self.draft_kv, Logits::Last)?;
        loop {
            if top_probability(&logits)? < self.options.min_confidence {
                break;
            }
            let q = sampler.distribution(&logits, &history)?;
            let token = sampler.draw(&q)?;
            drafts.push(token);
            probs.push(q);
            history.push(token);
            if drafts.len() == want {
                break;
            }
            logits = self.draft.forward(&[token], &mut self.draft_kv, Logits::Last)?;
        }
        Ok((drafts, probs))
    }
}

/// The largest probability of the softmax of `logits` (`[1, vocab]`).
fn top_probability(logits: &Tensor) -> Result<f32> {
    let logits = logits.flatten_all()?.to_dtype(candle_core::DType::F32)?;
    let max = logits.max(D::Minus1)?;
    let total = logits.broadcast_sub(&max)?.exp()?.sum_all()?.to_scalar::<f32>()?;
    Ok(1.0 / total)
}
