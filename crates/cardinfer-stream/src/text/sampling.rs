//! Choosing the next token: greedy, or sampling with temperature, top-k, top-p and a
//! repetition penalty, reproducible from a seed.

use crate::{Result, StreamError};
use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy (argmax).
    pub temperature: f64,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches `p`.
    pub top_p: Option<f64>,
    /// Divide positive logits (multiply negative ones) of recent tokens by this; 1 is off.
    pub repetition_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: None, top_p: None, repetition_penalty: 1.0, repeat_last_n: 64, seed: 299792458 }
    }
}

impl SamplingParams {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |name, reason: &str| Err(StreamError::InvalidParameter { name, reason: reason.to_string() });
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature", "must be a finite number ≥ 0");
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top-p", "must be in (0, 1]");
            }
        }
        if self.top_k == Some(0) {
            return bad("top-k", "must be at least 1");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition penalty", "must be a positive number");
        }
        Ok(())
    }
}

/// A seeded sampler.
pub struct Sampler {
    params: SamplingParams,
    processor: LogitsProcessor,
}

impl Sampler {
    /// A sampler for `params` (validated).
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let t = params.temperature;
        let sampling = if t == 0.0 {
            Sampling::ArgMax
        } else {
            match (params.top_k, params.top_p) {
                (None, None) => Sampling::All { temperature: t },
                (Some(k), None) => Sampling::TopK { k, temperature: t },
                (None, Some(p)) => Sampling::TopP { p, temperature: t },
                (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature: t },
            }
        };
        Ok(Self { processor: LogitsProcessor::from_sampling(params.seed, sampling), params })
    }

    /// Picks the next token from `logits` (`[vocab]` or `[1, vocab]`), given the tokens so far.
    pub fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let logits = logits.flatten_all()?.to_device(&candle_core::Device::Cpu)?;
        let logits = if self.params.repetition_penalty != 1.0 {
            let start = history.len().saturating_sub(self.params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(
                &logits,
                self.params.repetition_penalty,
                &history[start..],
            )?
        } else {
            logits
        };
        Ok(self.processor.sample(&logits)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Tensor {
        Tensor::new(&[0.1f32, 3.0, 2.9, -1.0], &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 1);
    }

    #[test]
    fn repetition_penalty_changes_the_pick() {
        let params = SamplingParams { repetition_penalty: 1.5, ..Default::default() };
        let mut s = Sampler::new(params).unwrap();
        assert_eq!(s.sample(&logits(), &[1]).unwrap(), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_reproduce() {
        let params = SamplingParams { temperature: 0.8, top_k: Some(1), ..Default::default() };
        let mut s = Sampler::new(params).unwrap();
        assert_eq!(s.sample(&logits(), &[]).unwrap(), 1);
        let params = SamplingParams { temperature: 1.0, seed: 7, ..Default::default() };
        let draws = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..20).map(|_| s.sample(&logits(), &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draws(&params), draws(&params));
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        for p in [
            SamplingParams { temperature: -1.0, ..Default::default() },
            SamplingParams { top_p: Some(1.5), ..Default::default() },
            SamplingParams { top_k: Some(0), ..Default::default() },
            SamplingParams { repetition_penalty: 0.0, ..Default::default() },
        ] {
            assert!(Sampler::new(p).is_err());
        }
    }
}
