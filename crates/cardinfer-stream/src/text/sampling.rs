//! Choosing the next token: greedy, or sampling with temperature, top-k, top-p and a
//! repetition penalty, reproducible from a seed.

use crate::{Result, StreamError};
use candle_core::Tensor;
use rand::distr::{weighted::WeightedIndex, Distribution};
use rand::{Rng, SeedableRng};

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
    /// The distribution the next token is drawn from: the repetition penalty over the last
    /// `repeat_last_n` of `history`, then softmax at the temperature, then top-k (the k
    /// largest; ties to the lower id), then top-p (tokens in falling order while the sum
    /// of those before is below p, as Candle's `LogitsProcessor` cuts), renormalised.
    /// Greedy (temperature 0) is the one-hot vector of the argmax.
    pub fn distribution(&self, logits: &Tensor, history: &[u32]) -> Result<Vec<f32>> {
        let logits = self.penalized(logits, history)?;
        if self.temperature == 0.0 {
            let mut one_hot = vec![0f32; logits.dim(0)?];
            one_hot[logits.argmax(0)?.to_scalar::<u32>()? as usize] = 1.0;
            return Ok(one_hot);
        }
        self.probabilities(&logits)
    }

    fn penalized(&self, logits: &Tensor, history: &[u32]) -> Result<Tensor> {
        let logits = logits.flatten_all()?.to_device(&candle_core::Device::Cpu)?;
        if self.repetition_penalty == 1.0 {
            return Ok(logits);
        }
        let start = history.len().saturating_sub(self.repeat_last_n);
        Ok(candle_transformers::utils::apply_repeat_penalty(&logits, self.repetition_penalty, &history[start..])?)
    }

    fn probabilities(&self, logits: &Tensor) -> Result<Vec<f32>> {
        let scaled = (logits.to_dtype(candle_core::DType::F32)? / self.temperature)?;
        let mut probs = candle_nn::ops::softmax_last_dim(&scaled)?.to_vec1::<f32>()?;
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
        let kept = self.top_k.map_or(order.len(), |k| k.min(order.len()));
        let mut cut = kept;
        if let Some(p) = self.top_p.map(|p| p as f32) {
            let kept_mass: f32 = order[..kept].iter().map(|&i| probs[i]).sum();
            if p < kept_mass {
                let mut before = 0f32;
                cut = order[..kept]
                    .iter()
                    .take_while(|&&i| {
                        let keep = before < p;
                        before += probs[i];
                        keep
                    })
                    .count();
            }
        }
        for &i in &order[cut..] {
            probs[i] = 0.0;
        }
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        Ok(probs)
    }

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

/// A seeded sampler. Greedy picks the argmax; otherwise the token is drawn from
/// [`Sampler::distribution`], the one definition of what the parameters mean (speculative
/// decoding accepts and corrects drafted tokens against the same distributions).
pub struct Sampler {
    params: SamplingParams,
    rng: rand::rngs::StdRng,
}

impl Sampler {
    /// A sampler for `params` (validated).
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Self { rng: rand::rngs::StdRng::seed_from_u64(params.seed), params })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// True when the pick is the argmax.
    pub fn is_greedy(&self) -> bool {
        self.params.temperature == 0.0
    }

    /// Picks the next token from `logits` (`[vocab]` or `[1, vocab]`), given the tokens so far.
    pub fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let logits = self.params.penalized(logits, history)?;
        if self.is_greedy() {
            return Ok(logits.argmax(0)?.to_scalar::<u32>()?);
        }
        let probs = self.params.probabilities(&logits)?;
        self.draw(&probs)
    }

    /// [`SamplingParams::distribution`] of these parameters.
    pub fn distribution(&self, logits: &Tensor, history: &[u32]) -> Result<Vec<f32>> {
        self.params.distribution(logits, history)
    }

    /// A token drawn from `probs` (non-negative weights, not all zero).
    pub fn draw(&mut self, probs: &[f32]) -> Result<u32> {
        let index = WeightedIndex::new(probs).map_err(|e| StreamError::InvalidParameter {
            name: "sampling weights",
            reason: format!("cannot draw from them: {e}"),
        })?;
        Ok(index.sample(&mut self.rng) as u32)
    }

    /// A uniform number in [0, 1) from the sampler's stream.
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
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
