//! Choosing how many of a hybrid plan's host layers the CPU computes, from measured
//! token times.
//!
//! The planner picks the host layers from a probe's rates, but on the H100 machine the
//! CPU and the link slow each other down once both run (a 4B host layer: 1.25 ms alone,
//! 1.7 ms beside the copies), and loans differ (a split that gave 23 tok/s on one machine
//! lost to stream-only on another; BENCHMARKS.md, session 6). So a generator's first
//! decode steps try fewer of the planned host layers — the others stream through the pool
//! like any streamed layer — and keep the count whose tokens were fastest.
//!
//! The search only lowers the count: a host layer keeps its KV cache in host memory (the
//! plan reserves device room for one visiting layer's), so a planned host layer may run
//! on the device with its cache visiting, but a device layer cannot move to the CPU.
//! It measures the planned count, then steps down until a count is clearly slower than
//! the best, refines around the best, checks stream-only (count 0), and settles.

use crate::schedule::spread_from_first;

/// Decode steps measured per count (their median is the count's time: on the H100
/// machine about one 14B step in eight took 15 ms longer than the others).
pub const TRIAL_STEPS: usize = 5;

/// Decode steps after the tuner starts that are not measured (first-use costs).
pub const WARMUP_STEPS: usize = 2;

/// A count slower than the best by more than this share ends the downward steps.
pub const SLOWER_BY: f64 = 0.03;

/// What the search measured, in the order it tried the counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TuningReport {
    /// `(host layers, median milliseconds per token)` for each count tried.
    pub tried: Vec<(usize, f64)>,
    /// The count in use now (the fastest tried, once settled).
    pub in_use: usize,
    /// Host layers the plan placed.
    pub planned: usize,
    /// Whether the search has ended.
    pub settled: bool,
}

impl std::fmt::Display for TuningReport {
    /// `planned 15: 15 → 36.1 ms, 12 → 34.0 ms, … ; using 13 (settled)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "planned {}:", self.planned)?;
        for (i, (count, ms)) in self.tried.iter().enumerate() {
            write!(f, "{} {count} → {ms:.2} ms", if i == 0 { "" } else { "," })?;
        }
        let state = if self.settled { "settled" } else { "searching" };
        write!(f, "; using {} ({state})", self.in_use)
    }
}

/// The search over how many of the planned host layers run on the CPU.
#[derive(Debug, Clone)]
pub struct HostSplitTuner {
    /// Planned host layers, in pass order.
    planned: Vec<usize>,
    /// Count in use.
    count: usize,
    /// Step of the downward search.
    step: usize,
    /// Token times of the current count (milliseconds).
    samples: Vec<f64>,
    /// Steps still to skip before measuring.
    warmup: usize,
    tried: Vec<(usize, f64)>,
    settled: bool,
}

impl HostSplitTuner {
    /// A search over the `planned` host layers (layer indices in pass order), starting
    /// with all of them.
    pub fn new(planned: Vec<usize>) -> Self {
        let count = planned.len();
        Self {
            step: count.div_ceil(5).max(1),
            planned,
            count,
            samples: Vec::new(),
            warmup: WARMUP_STEPS,
            tried: Vec::new(),
            settled: count == 0,
        }
    }

    /// A tuner that keeps all `planned` layers on the CPU and measures nothing (a count
    /// the user asked for).
    pub fn fixed(planned: Vec<usize>) -> Self {
        Self { settled: true, ..Self::new(planned) }
    }

    /// The layers the CPU computes now: `count` of the planned ones, spread over them
    /// from the first (the pass keeps starting on the CPU while the link copies).
    pub fn active_layers(&self) -> Vec<usize> {
        spread_from_first(self.planned.len(), self.count)
            .zip(&self.planned)
            .filter(|(on, _)| *on)
            .map(|(_, l)| *l)
            .collect()
    }

    /// Whether the search has ended.
    pub fn settled(&self) -> bool {
        self.settled
    }

    /// Records one decode step's time with the current count; may change the count for
    /// the next step.
    pub fn record(&mut self, step_ms: f64) {
        if self.settled || !step_ms.is_finite() {
            return;
        }
        if self.warmup > 0 {
            self.warmup -= 1;
            return;
        }
        self.samples.push(step_ms);
        if self.samples.len() < TRIAL_STEPS {
            return;
        }
        self.samples.sort_by(f64::total_cmp);
        let median = self.samples[self.samples.len() / 2];
        self.samples.clear();
        self.tried.push((self.count, median));
        match self.next_count() {
            Some(next) => self.count = next,
            None => {
                self.count = self.best().0;
                self.settled = true;
            }
        }
    }

    /// What was measured so far, and the count in use.
    pub fn report(&self) -> TuningReport {
        TuningReport {
            tried: self.tried.clone(),
            in_use: self.count,
            planned: self.planned.len(),
            settled: self.settled,
        }
    }

    fn best(&self) -> (usize, f64) {
        self.tried.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap_or((self.planned.len(), f64::NAN))
    }

    fn measured(&self, count: usize) -> bool {
        self.tried.iter().any(|(c, _)| *c == count)
    }

    /// The next count to measure: down by `step` while no count was clearly slower than
    /// the best, then the best's neighbours, then zero; `None` when done.
    fn next_count(&self) -> Option<usize> {
        let (best, best_ms) = self.best();
        let (last, last_ms) = *self.tried.last()?;
        let descending = self.tried.windows(2).all(|w| w[1].0 < w[0].0) && last_ms <= best_ms * (1.0 + SLOWER_BY);
        if descending && last > 0 {
            return Some(last.saturating_sub(self.step));
        }
        let neighbours = [best.checked_sub(1), Some(best + 1).filter(|&c| c <= self.planned.len())];
        neighbours.into_iter().flatten().chain([0]).find(|&c| !self.measured(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search against `ms_at(count)` until it settles; returns the report and
    /// how many steps it took.
    fn run(planned: usize, ms_at: impl Fn(usize) -> f64) -> (TuningReport, usize) {
        let mut tuner = HostSplitTuner::new((0..planned).map(|i| 2 * i).collect());
        let mut steps = 0;
        while !tuner.settled() {
            let count = tuner.report().in_use;
            tuner.record(ms_at(count));
            steps += 1;
            assert!(steps < 200, "no end: {:?}", tuner.report());
        }
        (tuner.report(), steps)
    }

    #[test]
    fn finds_the_fastest_count_below_the_planned_one() {
        // Fastest at 11 of 15 planned; the search steps 15, 12, 9, then refines.
        let (report, steps) = run(15, |c| 30.0 + (c as f64 - 11.0).abs());
        assert_eq!(report.in_use, 11, "{report}");
        let counts: Vec<usize> = report.tried.iter().map(|t| t.0).collect();
        assert_eq!(counts[..3], [15, 12, 9], "{report}");
        assert!(counts.contains(&0) && counts.contains(&11), "{report}");
        assert_eq!(steps, WARMUP_STEPS + TRIAL_STEPS * counts.len());
    }

    #[test]
    fn keeps_the_planned_count_when_it_is_fastest() {
        let (report, _) = run(8, |c| 40.0 - c as f64);
        assert_eq!(report.in_use, 8, "{report}");
        // 8, then 6 (slower: ends the descent), 7, then stream-only.
        let counts: Vec<usize> = report.tried.iter().map(|t| t.0).collect();
        assert_eq!(counts, [8, 6, 7, 0], "{report}");
    }

    #[test]
    fn falls_back_to_streaming_when_the_cpu_only_slows_tokens() {
        let (report, _) = run(8, |c| 70.0 + 3.0 * c as f64);
        assert_eq!(report.in_use, 0, "{report}");
        let counts: Vec<usize> = report.tried.iter().map(|t| t.0).collect();
        assert_eq!(counts, [8, 6, 4, 2, 0, 1], "{report}");
    }

    #[test]
    fn a_median_ignores_slow_steps() {
        let mut tuner = HostSplitTuner::new(vec![1, 3, 5, 7]);
        for ms in [99.0, 99.0, 10.0, 500.0, 10.0, 11.0, 400.0] {
            tuner.record(ms);
        }
        assert_eq!(tuner.report().tried, [(4, 11.0)]);
    }

    #[test]
    fn active_layers_are_spread_over_the_planned_ones_from_the_first() {
        let mut tuner = HostSplitTuner::new(vec![0, 2, 4, 6, 8, 10]);
        assert_eq!(tuner.active_layers(), [0, 2, 4, 6, 8, 10]);
        tuner.count = 2;
        assert_eq!(tuner.active_layers(), [0, 6]);
        tuner.count = 0;
        assert!(tuner.active_layers().is_empty());
    }

    #[test]
    fn a_fixed_split_measures_nothing() {
        let mut tuner = HostSplitTuner::fixed(vec![1, 2, 3]);
        for _ in 0..20 {
            tuner.record(5.0);
        }
        let report = tuner.report();
        assert!(report.settled && report.tried.is_empty() && report.in_use == 3, "{report}");
    }

    #[test]
    fn the_report_reads_as_a_line() {
        let (report, _) = run(2, |c| 10.0 + c as f64);
        let line = report.to_string();
        assert!(line.starts_with("planned 2: 2 → 12.00 ms"), "{line}");
        assert!(line.ends_with("using 0 (settled)"), "{line}");
    }
}
