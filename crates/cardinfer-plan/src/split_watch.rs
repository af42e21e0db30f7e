//! Watching a settled hybrid split against stream-only while decoding goes on.
//!
//! The search ([`crate::HostSplitTuner`]) measures each count of host layers for a few
//! steps and settles. Then the machine can change under it: on one H100 loan the CPU's
//! rate changed from minute to minute, and a split that measured 47 ms per token in its
//! trial ran at 61–77 ms, against 54 ms streaming everything (BENCHMARKS.md, run86). What
//! slows the CPU (another tenant's work, say) may slow the link's copies too, so a
//! stream-only time measured minutes ago is no reference: both are measured again.
//!
//! - Running the split, every [`WATCH_STEPS`] steps the window's median is compared with
//!   stream-only's last time. Clearly slower ([`SLOWER_BY`]) moves every layer to the
//!   device's path for [`TRIAL_STEPS`], and the faster of the two is kept. Steps far
//!   slower ([`FAR_SLOWER_BY`]) do that after [`TRIAL_STEPS`] of them, without waiting
//!   for the window: with a neighbour copying memory on 6 of 16 cores, a 4B split's steps
//!   took 179 ms against 61 ms streaming (BENCHMARKS.md, run88).
//! - Running stream-only (after that, or when the search kept it), the split is tried
//!   again for [`TRIAL_STEPS`] after [`RETRY_STEPS`], against the last stream-only
//!   window; [`EARLY_STEPS`] far slower steps end the try at once. Each retry that loses
//!   doubles the wait, up to [`MAX_RETRY_STEPS`]: a machine where the CPU never helps
//!   pays for the tries less and less often.

use crate::stats::{full_window_median, median_of, SLOWER_BY, TRIAL_STEPS};

/// Decode steps per check of the running split against stream-only.
pub const WATCH_STEPS: usize = 16;

/// Stream-only decode steps before the split is first tried again.
pub const RETRY_STEPS: usize = 4 * WATCH_STEPS;

/// A step slower than stream-only's last time by more than this share is far slower.
pub const FAR_SLOWER_BY: f64 = 0.5;

/// Far slower steps that end a try of the split before its [`TRIAL_STEPS`].
pub const EARLY_STEPS: usize = 2;

/// The longest wait between tries of the split.
pub const MAX_RETRY_STEPS: usize = 64 * WATCH_STEPS;

/// One comparison of the split with stream-only, both measured within a few steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recheck {
    /// Median milliseconds per token with the split.
    pub split_ms: f64,
    /// Median milliseconds per token with every layer on the device's path.
    pub stream_only_ms: f64,
}

impl Recheck {
    /// Whether stream-only won (and so is in use after this recheck).
    pub fn chose_stream_only(&self) -> bool {
        self.stream_only_ms < self.split_ms
    }
}

/// What the watch is doing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Running the split; windows of [`WATCH_STEPS`] are compared with stream-only's last.
    Split,
    /// The split's last window was clearly slower: stream-only is measured again.
    MeasuringStreamOnly { split_ms: f64 },
    /// Running stream-only; the split is tried after `wait` more steps.
    StreamOnly { wait: usize, interval: usize },
    /// Trying the split again against stream-only's last window.
    MeasuringSplit { stream_only_ms: f64, interval: usize },
}

/// The settled choice between a split of `split` host layers and stream-only, measured
/// again as decoding goes on (see the module's documentation).
#[derive(Debug, Clone)]
pub struct SplitWatch {
    split: usize,
    stream_only_ms: f64,
    phase: Phase,
    /// Step times of the current window (milliseconds).
    samples: Vec<f64>,
    rechecks: Vec<Recheck>,
}

impl SplitWatch {
    /// The watch of a search that measured `split` host layers against stream-only at
    /// `stream_only_ms`, starting on the split when `on_split`, else on stream-only.
    pub fn new(split: usize, stream_only_ms: f64, on_split: bool) -> Self {
        let phase = match on_split {
            true => Phase::Split,
            false => Phase::StreamOnly { wait: RETRY_STEPS, interval: RETRY_STEPS },
        };
        Self { split, stream_only_ms, phase, samples: Vec::new(), rechecks: Vec::new() }
    }

    /// Host layers the CPU computes now: the split's count, or 0 for stream-only.
    pub fn count(&self) -> usize {
        match self.phase {
            Phase::Split | Phase::MeasuringSplit { .. } => self.split,
            Phase::MeasuringStreamOnly { .. } | Phase::StreamOnly { .. } => 0,
        }
    }

    /// The comparisons made so far, oldest first.
    pub fn rechecks(&self) -> &[Recheck] {
        &self.rechecks
    }

    /// Records one decode step's time (milliseconds) with the count in use; may change
    /// the count for the next step.
    pub fn record(&mut self, step_ms: f64) {
        self.samples.push(step_ms);
        self.phase = match self.phase {
            Phase::Split => match self.far_slower(TRIAL_STEPS).or_else(|| self.window(WATCH_STEPS)) {
                Some(split_ms) if split_ms > self.stream_only_ms * (1.0 + SLOWER_BY) => {
                    Phase::MeasuringStreamOnly { split_ms }
                }
                _ => Phase::Split,
            },
            Phase::MeasuringStreamOnly { split_ms } => match self.window(TRIAL_STEPS) {
                Some(stream_only_ms) => self.decide(split_ms, stream_only_ms, RETRY_STEPS),
                None => self.phase,
            },
            Phase::StreamOnly { wait, interval } => {
                // Keep the last window's steps: the split's retry is compared with them.
                if self.samples.len() > WATCH_STEPS {
                    self.samples.remove(0);
                }
                match wait.saturating_sub(1) {
                    0 => {
                        let stream_only_ms = median_of(&mut self.samples);
                        self.samples.clear();
                        Phase::MeasuringSplit { stream_only_ms, interval }
                    }
                    wait => Phase::StreamOnly { wait, interval },
                }
            }
            Phase::MeasuringSplit { stream_only_ms, interval } => {
                match self.far_slower(EARLY_STEPS).or_else(|| self.window(TRIAL_STEPS)) {
                    Some(split_ms) => self.decide(split_ms, stream_only_ms, (2 * interval).min(MAX_RETRY_STEPS)),
                    None => self.phase,
                }
            }
        };
    }

    /// The median of the window once it holds `steps` steps (then emptied).
    fn window(&mut self, steps: usize) -> Option<f64> {
        full_window_median(&mut self.samples, steps)
    }

    /// When the window's last `steps` steps are all far slower than stream-only's last
    /// time: their median (the window emptied).
    fn far_slower(&mut self, steps: usize) -> Option<f64> {
        let limit = self.stream_only_ms * (1.0 + FAR_SLOWER_BY);
        let last = self.samples.len().checked_sub(steps).map(|from| &mut self.samples[from..])?;
        if !last.iter().all(|&ms| ms > limit) {
            return None;
        }
        let median = median_of(last);
        self.samples.clear();
        Some(median)
    }

    /// Keeps the faster of the split and stream-only, both just measured; stream-only
    /// waits `interval` steps before the split's next try.
    fn decide(&mut self, split_ms: f64, stream_only_ms: f64, interval: usize) -> Phase {
        let recheck = Recheck { split_ms, stream_only_ms };
        self.rechecks.push(recheck);
        self.stream_only_ms = stream_only_ms;
        match recheck.chose_stream_only() {
            true => Phase::StreamOnly { wait: interval, interval },
            false => Phase::Split,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Step times of a machine where stream-only takes `stream_only` ms and the split
    /// `split` ms.
    fn times(stream_only: f64, split: f64) -> impl Fn(usize) -> f64 {
        move |count| if count == 0 { stream_only } else { split }
    }

    /// Feeds `steps` steps whose time is `ms_at(count in use)`.
    fn feed(watch: &mut SplitWatch, steps: usize, ms_at: impl Fn(usize) -> f64) {
        for _ in 0..steps {
            watch.record(ms_at(watch.count()));
        }
    }

    #[test]
    fn a_split_that_stays_fast_is_kept_without_rechecks() {
        let mut watch = SplitWatch::new(4, 30.0, true);
        feed(&mut watch, 10 * WATCH_STEPS, times(30.0, 21.0));
        assert_eq!((watch.count(), watch.rechecks().len()), (4, 0));
    }

    #[test]
    fn a_slow_split_loses_to_stream_only_measured_again() {
        let mut watch = SplitWatch::new(4, 30.0, true);
        // The CPU slows down; streaming does not.
        feed(&mut watch, WATCH_STEPS, times(31.0, 45.0));
        assert_eq!(watch.count(), 0, "stream-only is measured after one slow window");
        feed(&mut watch, TRIAL_STEPS, times(31.0, 45.0));
        assert_eq!(watch.rechecks(), [Recheck { split_ms: 45.0, stream_only_ms: 31.0 }]);
        assert_eq!(watch.count(), 0);
        assert!(watch.rechecks()[0].chose_stream_only());
    }

    #[test]
    fn far_slower_steps_are_noticed_before_the_window_ends() {
        let mut watch = SplitWatch::new(4, 30.0, true);
        feed(&mut watch, 3, |_| 21.0);
        feed(&mut watch, TRIAL_STEPS - 1, |_| 180.0);
        assert_eq!(watch.count(), 4);
        feed(&mut watch, 1, |_| 180.0);
        assert_eq!(watch.count(), 0, "measuring stream-only after {TRIAL_STEPS} far slower steps");
        feed(&mut watch, TRIAL_STEPS, times(60.0, 180.0));
        assert_eq!(watch.rechecks(), [Recheck { split_ms: 180.0, stream_only_ms: 60.0 }]);
        // A try of the split ends after two far slower steps.
        feed(&mut watch, RETRY_STEPS, times(60.0, 180.0));
        assert_eq!(watch.count(), 4);
        feed(&mut watch, EARLY_STEPS, times(60.0, 180.0));
        assert_eq!((watch.count(), watch.rechecks().len()), (0, 2));
    }

    #[test]
    fn a_slowdown_of_both_keeps_the_split() {
        // Something slows the whole machine: the split is slower than stream-only was,
        // but stream-only measured now is slower still.
        let mut watch = SplitWatch::new(4, 30.0, true);
        feed(&mut watch, WATCH_STEPS + TRIAL_STEPS, times(60.0, 45.0));
        assert_eq!(watch.rechecks(), [Recheck { split_ms: 45.0, stream_only_ms: 60.0 }]);
        assert_eq!(watch.count(), 4);
        // Stream-only's new time is the reference now: no more rechecks at 45 ms.
        feed(&mut watch, 10 * WATCH_STEPS, times(60.0, 45.0));
        assert_eq!((watch.count(), watch.rechecks().len()), (4, 1));
    }

    #[test]
    fn the_split_comes_back_when_the_cpu_recovers() {
        let mut watch = SplitWatch::new(4, 30.0, false);
        feed(&mut watch, RETRY_STEPS - 1, |_| 30.0);
        assert_eq!(watch.count(), 0);
        feed(&mut watch, 1, |_| 30.0);
        assert_eq!(watch.count(), 4, "tried again after {RETRY_STEPS} steps");
        feed(&mut watch, TRIAL_STEPS, times(30.0, 20.0));
        assert_eq!(watch.rechecks(), [Recheck { split_ms: 20.0, stream_only_ms: 30.0 }]);
        assert_eq!(watch.count(), 4);
    }

    #[test]
    fn each_losing_retry_doubles_the_wait() {
        let mut watch = SplitWatch::new(4, 30.0, false);
        let mut retries_at = Vec::new();
        for step in 0..RETRY_STEPS * 20 {
            let before = watch.count();
            watch.record(if before == 0 { 30.0 } else { 40.0 });
            if before == 0 && watch.count() == 4 {
                retries_at.push(step + 1);
            }
        }
        let waits: Vec<usize> = retries_at.windows(2).map(|w| w[1] - w[0] - TRIAL_STEPS).collect();
        assert_eq!(retries_at[0], RETRY_STEPS);
        assert_eq!(waits[..3], [2 * RETRY_STEPS, 4 * RETRY_STEPS, 8 * RETRY_STEPS], "{retries_at:?}");
        assert!(waits.iter().all(|&w| w <= MAX_RETRY_STEPS), "{waits:?}");
        assert!(watch.rechecks().iter().all(Recheck::chose_stream_only));
    }

    #[test]
    fn a_retry_compares_with_the_latest_stream_only_steps() {
        // Stream-only slowed to 50 ms while it ran; the split at 40 ms now wins although
        // it lost to the 30 ms measured at first.
        let mut watch = SplitWatch::new(4, 30.0, false);
        feed(&mut watch, RETRY_STEPS + TRIAL_STEPS, times(50.0, 40.0));
        assert_eq!(watch.rechecks(), [Recheck { split_ms: 40.0, stream_only_ms: 50.0 }]);
        assert_eq!(watch.count(), 4);
    }
}
