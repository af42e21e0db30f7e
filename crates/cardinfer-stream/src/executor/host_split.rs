//! Which of a hybrid plan's host layers the CPU computes in a pass, chosen from measured
//! decode steps by [`HostSplitTuner`].
//!
//! A decode step is timed from the start of one single-token pass to the start of the
//! next at the following cache position: that span holds everything a token costs (the
//! pass, reading its logits, sampling). Any other pass (a prompt chunk, a new cache)
//! breaks the chain, so a step is only measured between two consecutive decode passes.

use cardinfer_plan::{HostSplitTuner, TuningReport};
use std::time::Instant;

/// The host layers in use and the search choosing them.
#[derive(Debug)]
pub(crate) struct HostSplit {
    tuner: HostSplitTuner,
    layers: usize,
    /// Cache position and start of the last single-token pass.
    last_step: Option<(usize, Instant)>,
}

impl HostSplit {
    /// The split over `planned` host layers (in pass order) of a model of `layers`
    /// layers. `search: Some(threads)` searches the count and then the CPU threads from
    /// `threads` down (set on the host pool, [`crate::cpu::host_pool`], as the search goes);
    /// `None` keeps all planned layers on the CPU and the threads as they are.
    pub(crate) fn new(planned: Vec<usize>, layers: usize, search: Option<usize>) -> Self {
        let tuner = match search {
            Some(threads) => HostSplitTuner::new(planned).with_threads(threads),
            None => HostSplitTuner::fixed(planned),
        };
        Self { tuner, layers, last_step: None }
    }

    /// The CPU threads the search uses now (`None` without a search).
    pub(crate) fn threads(&self) -> Option<usize> {
        self.tuner.threads()
    }

    /// Starts a pass of `tokens` tokens at cache position `pos` at time `now`: closes the
    /// previous decode step's time if this pass continues it, and sets the CPU threads the
    /// search asks for. Returns, per layer, whether this pass computes it on the CPU (when
    /// the pass is narrow enough to do so at all).
    pub(crate) fn begin_pass(&mut self, tokens: usize, pos: usize, now: Instant) -> Vec<bool> {
        if tokens == 1 {
            if let Some((last_pos, start)) = self.last_step {
                if pos == last_pos + 1 {
                    self.tuner.record((now - start).as_secs_f64() * 1e3);
                }
            }
            self.last_step = Some((pos, now));
        } else {
            self.last_step = None;
        }
        if let Some(threads) = self.threads() {
            crate::cpu::host_pool::set_threads(threads);
        }
        self.on_cpu()
    }

    /// Per layer, whether the CPU computes it with the count in use.
    pub(crate) fn on_cpu(&self) -> Vec<bool> {
        let mut on_cpu = vec![false; self.layers];
        for layer in self.tuner.active_layers() {
            if let Some(flag) = on_cpu.get_mut(layer) {
                *flag = true;
            }
        }
        on_cpu
    }

    /// What the search measured and the count in use.
    pub(crate) fn report(&self) -> TuningReport {
        self.tuner.report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_consecutive_decode_steps_are_measured() {
        let mut split = HostSplit::new(vec![0, 2], 4, Some(1));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A prompt chunk, then decode steps at positions 8, 9, …, 10 ms apart; a new
        // cache (position 0) in between breaks the chain.
        split.begin_pass(8, 0, at(0));
        let mut time = 0;
        for pos in 8..8 + 2 + 3 {
            split.begin_pass(1, pos, at(time));
            time += 10;
        }
        split.begin_pass(1, 0, at(time + 1000));
        let tried = split.report().tried;
        // Steps 8→9 … 11→12: two warm-up steps, then two of the first count's five.
        assert!(tried.is_empty(), "{tried:?}");
        for pos in 1..1 + 3 {
            time += 10;
            split.begin_pass(1, pos, at(time + 1000));
        }
        let tried = split.report().tried;
        assert_eq!(tried.len(), 1, "{tried:?}");
        assert!((tried[0].1 - 10.0).abs() < 1e-6, "the new cache's first step was not measured: {tried:?}");
    }

    /// Decode steps whose time depends on the layers on the CPU and the threads: the
    /// search ends on the fastest of both.
    #[test]
    fn the_search_ends_on_the_fastest_layers_and_threads() {
        let mut split = HostSplit::new(vec![0, 1, 2, 3], 6, Some(8));
        let t0 = Instant::now();
        let mut at = 0.0f64;
        for pos in 0..200 {
            let on_cpu = split.begin_pass(1, pos, t0 + std::time::Duration::from_secs_f64(at / 1e3));
            let (count, threads) = (on_cpu.iter().filter(|c| **c).count(), split.threads().unwrap_or(0));
            // Fastest with every planned layer on the CPU and 6 threads.
            at += 40.0 - 2.0 * count as f64 + (threads as f64 - 6.0).abs();
        }
        let report = split.report();
        assert!(report.settled, "{report}");
        assert_eq!((report.in_use, report.threads), (4, Some(6)), "{report}");
        assert_eq!(split.threads(), Some(6));
    }

    /// A CPU that slows down for a while after the search settled, then recovers: the
    /// passes stream every layer during the slow stretch and use the CPU again after it.
    #[test]
    fn passes_follow_a_cpu_that_slows_down_and_recovers() {
        use cardinfer_plan::split_watch::{MAX_RETRY_STEPS, RETRY_STEPS};
        let mut split = HostSplit::new(vec![0, 1, 2, 3], 6, Some(4));
        let t0 = Instant::now();
        let (mut at, mut cpu_counts) = (0.0f64, Vec::new());
        let slow = 300..300 + 2 * RETRY_STEPS;
        for pos in 0..slow.end + MAX_RETRY_STEPS + 50 {
            let on_cpu = split.begin_pass(1, pos, t0 + Duration::from_secs_f64(at / 1e3));
            let count = on_cpu.iter().filter(|c| **c).count();
            cpu_counts.push(count);
            // Streaming costs 30 ms; each CPU layer saves 2 ms, or costs 10 while slow.
            let per_layer = if slow.contains(&pos) { 10.0 } else { -2.0 };
            at += 30.0 + per_layer * count as f64;
        }
        let report = split.report();
        assert_eq!(cpu_counts[slow.start - 1], 4, "{report}");
        // Most of the slow stretch streams everything (a window to notice, retries).
        let streamed = cpu_counts[slow.clone()].iter().filter(|&&c| c == 0).count();
        assert!(streamed > slow.len() * 3 / 4, "{streamed} of {} slow steps streamed: {report}", slow.len());
        assert_eq!(*cpu_counts.last().unwrap_or(&0), 4, "the CPU is used again: {report}");
        assert!(report.rechecks.iter().any(|r| r.chose_stream_only()), "{report}");
        assert!(!report.rechecks.last().is_some_and(|r| r.chose_stream_only()), "{report}");
    }

    #[test]
    fn a_fixed_split_keeps_every_planned_layer_on_the_cpu() {
        let mut split = HostSplit::new(vec![1, 3], 4, None);
        assert_eq!(split.on_cpu(), [false, true, false, true]);
        let t0 = Instant::now();
        for pos in 0..50 {
            split.begin_pass(1, pos, t0 + Duration::from_millis(pos as u64));
        }
        assert_eq!(split.on_cpu(), [false, true, false, true]);
        assert!(split.report().tried.is_empty());
    }
}
