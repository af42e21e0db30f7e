//! Quality metrics of a model against a reference on the same tokens: KL divergence of
//! the next-token distributions, top-1 agreement, and the perplexity of each.
//!
//! Positions are fed one at a time ([`QualityStats::add`]), so a long text never needs
//! all its logits in memory at once.

use crate::QuantError;
use serde::Serialize;

/// Running sums over the positions seen so far.
#[derive(Debug, Clone, Default)]
pub struct QualityStats {
    vocab: Option<usize>,
    positions: usize,
    kl_sum: f64,
    kl_max: f64,
    top1_equal: usize,
    scored: usize,
    nll_model: f64,
    nll_reference: f64,
    max_abs_logit_diff: f32,
}

/// The comparison of a model with a reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// Positions compared.
    pub positions: usize,
    /// Mean `KL(reference ‖ model)` of the next-token distributions, in nats.
    pub kl_mean: f64,
    /// Largest KL at any position, in nats.
    pub kl_max: f64,
    /// Share of positions where both pick the same most likely token.
    pub top1_agreement: f64,
    /// Perplexity of the model on the targets (`None` without targets).
    pub perplexity_model: Option<f64>,
    /// Perplexity of the reference on the targets.
    pub perplexity_reference: Option<f64>,
    /// Largest |logit difference| at any position and token.
    pub max_abs_logit_diff: f32,
}

/// Log-softmax in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let log_sum = logits.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln() + max;
    logits.iter().map(|&v| v as f64 - log_sum).collect()
}

fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0
}

impl QualityStats {
    /// No positions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one position: the model's and the reference's logits for the next token, and
    /// the token that actually follows (`None` at the last position of a text).
    pub fn add(&mut self, model: &[f32], reference: &[f32], target: Option<u32>) -> Result<(), QuantError> {
        let mismatch = |reason: String| QuantError::Mismatch { what: "logits".into(), reason };
        if model.len() != reference.len() {
            return Err(mismatch(format!(
                "the model has {} logits per position, the reference {} (different vocabularies?)",
                model.len(),
                reference.len()
            )));
        }
        if model.is_empty() || *self.vocab.get_or_insert(model.len()) != model.len() {
            return Err(mismatch(format!("position {} has {} logits", self.positions, model.len())));
        }
        if let Some(bad) = model.iter().chain(reference).find(|v| !v.is_finite()) {
            return Err(mismatch(format!("position {} holds a non-finite logit ({bad})", self.positions)));
        }
        let (lp_model, lp_ref) = (log_softmax(model), log_softmax(reference));
        let kl: f64 = lp_ref.iter().zip(&lp_model).map(|(&r, &m)| r.exp() * (r - m)).sum::<f64>().max(0.0);
        self.kl_sum += kl;
        self.kl_max = self.kl_max.max(kl);
        self.top1_equal += usize::from(argmax(model) == argmax(reference));
        let diff = model.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        self.max_abs_logit_diff = self.max_abs_logit_diff.max(diff);
        if let Some(t) = target {
            let t = t as usize;
            if t >= model.len() {
                return Err(mismatch(format!("target token {t} is outside the vocabulary of {}", model.len())));
            }
            self.nll_model -= lp_model[t];
            self.nll_reference -= lp_ref[t];
            self.scored += 1;
        }
        self.positions += 1;
        Ok(())
    }

    /// The metrics over every position added.
    pub fn report(&self) -> QualityReport {
        let n = self.positions.max(1) as f64;
        let ppl = |nll: f64| (self.scored > 0).then(|| (nll / self.scored as f64).exp());
        QualityReport {
            positions: self.positions,
            kl_mean: self.kl_sum / n,
            kl_max: self.kl_max,
            top1_agreement: self.top1_equal as f64 / n,
            perplexity_model: ppl(self.nll_model),
            perplexity_reference: ppl(self.nll_reference),
            max_abs_logit_diff: self.max_abs_logit_diff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_have_zero_kl_and_full_agreement() {
        let mut stats = QualityStats::new();
        stats.add(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], Some(2)).unwrap();
        let r = stats.report();
        assert_eq!((r.kl_mean, r.top1_agreement, r.max_abs_logit_diff), (0.0, 1.0, 0.0));
        assert_eq!(r.perplexity_model, r.perplexity_reference);
    }

    #[test]
    fn kl_and_perplexity_match_hand_computed_values() {
        // Reference: uniform over 2 tokens; model: p = (0.8, 0.2).
        let (m, r) = ([0.8f32.ln(), 0.2f32.ln()], [0.0f32, 0.0]);
        let mut stats = QualityStats::new();
        stats.add(&m, &r, Some(1)).unwrap();
        let report = stats.report();
        let kl = 0.5 * (0.5f64 / 0.8).ln() + 0.5 * (0.5f64 / 0.2).ln();
        assert!((report.kl_mean - kl).abs() < 1e-6, "{report:?}");
        assert!((report.perplexity_model.unwrap() - 5.0).abs() < 1e-5);
        assert!((report.perplexity_reference.unwrap() - 2.0).abs() < 1e-6);
        assert_eq!(report.top1_agreement, 1.0); // both argmax to token 0 (ties go to the first)
    }

    #[test]
    fn different_vocabularies_and_bad_targets_are_errors() {
        let mut stats = QualityStats::new();
        assert!(stats.add(&[0.0; 3], &[0.0; 4], None).unwrap_err().to_string().contains("vocabularies"));
        assert!(stats.add(&[0.0; 3], &[0.0; 3], Some(3)).unwrap_err().to_string().contains("outside"));
        assert!(stats.add(&[f32::NAN; 3], &[0.0; 3], None).unwrap_err().to_string().contains("non-finite"));
    }
}
