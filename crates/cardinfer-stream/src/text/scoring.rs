//! Teacher-forced scoring: the log-probability of each token given the ones before it.

use crate::model::text_model::{check_tokens, Logits, TextModel};
use crate::{Result, StreamError};
use candle_core::{IndexOp, D};
use serde::Serialize;

/// Per-token log-probabilities of a sequence.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// The scored tokens.
    pub token_ids: Vec<u32>,
    /// `log p(token[i] | token[..i])` for i ≥ 1 (one fewer than `token_ids`).
    pub logprobs: Vec<f32>,
    /// Mean negative log-likelihood.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
}

/// Scores `ids` in one forward pass.
pub fn score(model: &dyn TextModel, ids: &[u32]) -> Result<Score> {
    if ids.len() < 2 {
        return Err(StreamError::InvalidParameter { name: "ids", reason: "scoring needs at least 2 tokens".into() });
    }
    // Every id, the last (only a target) included, must be in the vocabulary.
    check_tokens(model.spec(), ids, 0)?;
    let mut kv = model.new_cache();
    let logits = model.forward(&ids[..ids.len() - 1], &mut kv, Logits::All)?;
    let logprobs_all = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let mut logprobs = Vec::with_capacity(ids.len() - 1);
    for (row, &target) in ids[1..].iter().enumerate() {
        logprobs.push(logprobs_all.i((row, target as usize))?.to_scalar::<f32>()?);
    }
    let mean_nll = -logprobs.iter().map(|&l| l as f64).sum::<f64>() / logprobs.len() as f64;
    Ok(Score { token_ids: ids.to_vec(), logprobs, mean_nll, perplexity: mean_nll.exp() })
}
