//! How many tokens to draft before the next verification pass: the count that maximises
//! expected tokens per second, from the measured acceptance, the measured seconds per
//! drafted token and the measured seconds of a target pass over each number of tokens
//! (a streamed target's pass costs about the same for 1 or 9 tokens; host layers on the
//! CPU cost more per token, so their measured cost says where drafting stops paying).

/// The running estimates behind the choice.
#[derive(Debug, Clone)]
pub(crate) struct DraftLength {
    max: usize,
    adaptive: bool,
    /// Decayed counts of kept drafted tokens and of rejections.
    kept: f64,
    rejected: f64,
    /// Seconds per drafted token (decayed mean), once measured.
    draft_secs: Option<f64>,
    /// Seconds of a target pass over `n + 1` tokens at index `n` (decayed mean).
    pass_secs: Vec<Option<f64>>,
    /// Passes since the last one with drafted tokens.
    since_draft: usize,
}

/// Weight of the past in every decayed estimate.
const DECAY: f64 = 0.9;

/// Passes without drafts after which one token is drafted anyway, so that an acceptance
/// estimate that fell to nothing can recover when the text becomes predictable.
const PROBE_AFTER: usize = 64;

impl DraftLength {
    /// Drafts of at most `max` tokens; `adaptive` false always asks for `max`.
    pub(crate) fn new(max: usize, adaptive: bool) -> Self {
        Self {
            max,
            adaptive,
            kept: 0.0,
            rejected: 0.0,
            draft_secs: None,
            pass_secs: vec![None; max + 1],
            since_draft: 0,
        }
    }

    /// The estimated chance that a drafted token is kept (a prior of 1/2 before data).
    pub(crate) fn acceptance(&self) -> f64 {
        (self.kept + 1.0) / (self.kept + self.rejected + 2.0)
    }

    /// Tokens to draft now (at most `limit`).
    pub(crate) fn choose(&self, limit: usize) -> usize {
        let max = self.max.min(limit);
        if !self.adaptive || max == 0 {
            return max;
        }
        // The first pass decodes one token alone: its cost is what every draft must beat.
        if self.pass_secs[0].is_none() {
            return 0;
        }
        let a = self.acceptance();
        let draft = self.draft_secs.unwrap_or(0.0);
        let mut best = (0, 0.0);
        for k in 0..=max {
            // Tokens out of a pass with k drafts: 1 + a + … + a^k.
            let tokens: f64 = (0..=k).map(|i| a.powi(i as i32)).sum();
            let Some(pass) = self.pass_estimate(k) else { return max };
            let rate = tokens / (k as f64 * draft + pass);
            if rate > best.1 {
                best = (k, rate);
            }
        }
        if best.0 == 0 && self.since_draft >= PROBE_AFTER {
            return 1;
        }
        best.0
    }

    /// The measured pass over `k + 1` tokens, or the nearest measured one (passes over a
    /// few more tokens cost about the same until measured otherwise); `None` before any.
    fn pass_estimate(&self, k: usize) -> Option<f64> {
        (0..=self.max)
            .flat_map(|d| [k.checked_sub(d), Some(k + d)])
            .flatten()
            .find_map(|i| self.pass_secs.get(i).copied().flatten())
    }

    /// Records a verification pass: `drafted` tokens proposed, `kept` of them kept, the
    /// pass over `drafted + 1` tokens took `pass_secs`, drafting took `draft_secs`.
    pub(crate) fn record(&mut self, drafted: usize, kept: usize, draft_secs: f64, pass_secs: f64) {
        let mix = |old: Option<f64>, new: f64| Some(old.map_or(new, |o| DECAY * o + (1.0 - DECAY) * new));
        self.since_draft = if drafted > 0 { 0 } else { self.since_draft + 1 };
        if drafted > 0 {
            self.kept = DECAY * self.kept + kept as f64;
            self.rejected = DECAY * self.rejected + f64::from(u8::from(kept < drafted));
            self.draft_secs = mix(self.draft_secs, draft_secs / drafted as f64);
        }
        if let Some(slot) = self.pass_secs.get_mut(drafted) {
            *slot = mix(*slot, pass_secs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_pass_cost_and_good_drafts_ask_for_long_drafts() {
        let mut d = DraftLength::new(8, true);
        assert_eq!(d.choose(8), 0, "a plain pass is measured first");
        for _ in 0..20 {
            d.record(8, 8, 8.0 * 0.001, 0.100);
            d.record(0, 0, 0.0, 0.100);
        }
        assert!(d.acceptance() > 0.9);
        assert_eq!(d.choose(16), 8);
        assert_eq!(d.choose(3), 3, "the limit caps the draft");
    }

    #[test]
    fn rejected_drafts_and_a_costly_pass_ask_for_short_ones() {
        let mut d = DraftLength::new(8, true);
        for _ in 0..30 {
            // Nothing kept, and a pass over more tokens costs more (host layers).
            d.record(4, 0, 4.0 * 0.002, 0.050);
            d.record(0, 0, 0.0, 0.010);
        }
        assert!(d.acceptance() < 0.1);
        assert_eq!(d.choose(8), 0);
        for _ in 0..PROBE_AFTER {
            d.record(0, 0, 0.0, 0.010);
        }
        assert_eq!(d.choose(8), 1, "a probe after many passes without drafts");
        let fixed = DraftLength::new(8, false);
        assert_eq!(fixed.choose(8), 8);
    }
}
