//! The interface every placement of a model offers the text layer: token ids in, logits
//! out, with a KV cache the caller owns.

use crate::model::kv_cache::KvCache;
use crate::{Result, StreamError};
use candle_core::{Device, Tensor};
use cardinfer_core::ModelSpec;

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation).
    Last,
    /// Every position (scoring).
    All,
}

/// What the generator needs of a model, however its weights are placed.
pub trait TextModel {
    /// The model's hyper-parameters.
    fn spec(&self) -> &ModelSpec;

    /// The device computing the blocks.
    fn device(&self) -> &Device;

    /// Runs `tokens` at the positions following what `kv` holds, appending to `kv`.
    /// Returns f32 logits `[1, vocab]` (`Logits::Last`) or `[tokens, vocab]` (`Logits::All`).
    fn forward(&self, tokens: &[u32], kv: &mut KvCache, which: Logits) -> Result<Tensor>;

    /// An empty KV cache for this model (f16 unless the model was loaded with another
    /// [`KvType`](cardinfer_core::KvType)).
    fn new_cache(&self) -> KvCache {
        KvCache::new(self.spec().num_layers, cardinfer_core::KvType::default())
    }
}

/// Checks that `tokens` is non-empty, in the vocabulary, and fits after `cached` positions.
pub fn check_tokens(spec: &ModelSpec, tokens: &[u32], cached: usize) -> Result<()> {
    if tokens.is_empty() {
        return Err(StreamError::InvalidParameter { name: "tokens", reason: "no tokens to run".into() });
    }
    if let Some(&id) = tokens.iter().find(|&&t| t as usize >= spec.vocab_size) {
        return Err(StreamError::TokenOutOfRange { id, vocab: spec.vocab_size });
    }
    if cached + tokens.len() > spec.context_length {
        return Err(StreamError::ContextOverflow { tokens: tokens.len(), cached, context: spec.context_length });
    }
    Ok(())
}

/// Runs `tokens` through `pass` in pieces of at most `chunk` tokens (one weight pass
/// each), asking for logits only where `which` needs them — every piece's for
/// `Logits::All`, the last piece's for `Logits::Last` — and joins them.
pub(crate) fn forward_in_chunks(
    tokens: &[u32],
    chunk: usize,
    which: Logits,
    mut pass: impl FnMut(&[u32], Option<Logits>) -> Result<Option<Tensor>>,
) -> Result<Tensor> {
    let chunks: Vec<&[u32]> = tokens.chunks(chunk.max(1)).collect();
    let mut rows = Vec::with_capacity(chunks.len());
    for (i, piece) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        rows.extend(pass(piece, (last || which == Logits::All).then_some(which))?);
    }
    Ok(match which {
        Logits::All => Tensor::cat(&rows, 0)?,
        Logits::Last => {
            rows.pop().ok_or_else(|| StreamError::InvalidParameter { name: "tokens", reason: "empty".into() })?
        }
    })
}
