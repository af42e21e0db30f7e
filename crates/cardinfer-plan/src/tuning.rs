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
//! the best, refines around the best, and checks stream-only (count 0). When the fastest
//! is not the planned count, the two are measured again in turn, step by step, and the
//! faster kept: each count's trial is five steps at its own moment, and a loan's speed
//! drifts from moment to moment. On the H100 loans, searches that kept 13–16 of 18 planned
//! layers after such a moment ran at 26–30 tok/s where those keeping 17–18 ran at 31–34
//! (BENCHMARKS.md, run93–run95); steps in turn see the same moments.
//!
//! Then, when the CPU keeps host layers and the search was given a thread count, it
//! measures fewer CPU threads with that count of layers: two fewer at a time, while a
//! count is not clearly slower than the best, and keeps fewer than it started with only
//! when clearly faster. On the H100 machine's loans the probe's
//! best count for a CPU block alone (14 of 16) ran a 4B's hybrid decode at 29.5–31.4
//! tok/s on one loan where 10 or 12 ran it at 33.4–33.6, and was the fastest on the next
//! (BENCHMARKS.md, run78/run79): the threads the device's own thread and the copies
//! leave to the CPU's layers are measured, not assumed.
//!
//! Once settled, the search keeps watching ([`crate::split_watch`]): the split and
//! stream-only are measured again as decoding goes on, and the faster is kept. On one
//! H100 loan the CPU's rate changed from minute to minute (the probe found 46 GB/s at 8
//! threads where other loans gave 70 at 14): a split that measured 47 ms per token in its
//! trial then ran at 77 ms, against 54 streaming everything (BENCHMARKS.md, run86).

use crate::schedule::spread_from_first;
use crate::split_watch::{Recheck, SplitWatch};

/// Decode steps measured per count (their median is the count's time: on the H100
/// machine about one 14B step in eight took 15 ms longer than the others).
pub const TRIAL_STEPS: usize = 5;

/// Decode steps after the tuner starts that are not measured (first-use costs).
pub const WARMUP_STEPS: usize = 2;

/// A count slower than the best by more than this share ends the downward steps.
pub const SLOWER_BY: f64 = 0.03;

/// Fewer CPU threads than the search started with are kept only when faster than the
/// starting count by more than this share: closer trials are within a trial's noise. On
/// one H100 loan (BENCHMARKS.md, run115) the searches that moved to 10 or 8 threads on a
/// 0.4–1.2% lead ran at 23.5–28.9 tok/s, those that kept 12 at 30.8–32.4; in turn on
/// another (run118) the 4B's searches ran 26.50–30.45 tok/s without this margin (one
/// moved to 8 threads on a 0.9% lead: 26.50) and 27.54–31.58 with it.
pub const FEWER_THREADS_FASTER_BY: f64 = 0.03;

/// What the search measured, in the order it tried the counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TuningReport {
    /// `(host layers, median milliseconds per token)` for each count tried.
    pub tried: Vec<(usize, f64)>,
    /// The fastest count and the planned one measured again in turn (when they differ):
    /// `(host layers, median milliseconds per token)`.
    pub in_turn: Vec<(usize, f64)>,
    /// The count in use now (the fastest tried, once settled).
    pub in_use: usize,
    /// Host layers the plan placed.
    pub planned: usize,
    /// Whether the search has ended.
    pub settled: bool,
    /// `(CPU threads, median milliseconds per token)` for each thread count tried, with
    /// the count of host layers in use.
    pub threads_tried: Vec<(usize, f64)>,
    /// The CPU threads in use (`None` when the search was given no thread count).
    pub threads: Option<usize>,
    /// The settled split compared with stream-only again as decoding went on, oldest
    /// first (see [`crate::split_watch`]).
    pub rechecks: Vec<Recheck>,
}

impl std::fmt::Display for TuningReport {
    /// `planned 15: 15 → 36.1 ms, 12 → 34.0 ms, …; using 13; threads 14 → 33.0 ms, 12 →
    /// 31.9 ms, …; using 12 (settled)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// `{lead} a → x ms, b → y ms, …` (nothing when `pairs` is empty).
        fn timed(f: &mut std::fmt::Formatter<'_>, lead: &str, pairs: &[(usize, f64)]) -> std::fmt::Result {
            for (i, (setting, ms)) in pairs.iter().enumerate() {
                write!(f, "{} {setting} → {ms:.2} ms", if i == 0 { lead } else { "," })?;
            }
            Ok(())
        }
        write!(f, "planned {}:", self.planned)?;
        timed(f, "", &self.tried)?;
        timed(f, "; in turn", &self.in_turn)?;
        write!(f, "; using {}", self.in_use)?;
        if !self.threads_tried.is_empty() {
            timed(f, "; threads", &self.threads_tried)?;
            if let Some(threads) = self.threads {
                write!(f, "; using {threads}")?;
            }
        }
        let shown = self.rechecks.len().saturating_sub(MAX_RECHECKS_SHOWN);
        if shown > 0 {
            write!(f, "; {shown} earlier rechecks")?;
        }
        for recheck in &self.rechecks[shown..] {
            let kept = if recheck.chose_stream_only() { "stream-only" } else { "split" };
            write!(f, "; then split {:.2} ms, stream-only {:.2} ms: {kept}", recheck.split_ms, recheck.stream_only_ms)?;
        }
        write!(f, " ({})", if self.settled { "settled" } else { "searching" })
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
    /// The fastest count and the planned one being measured in turn.
    in_turn: Option<InTurn>,
    /// Their medians, once measured.
    in_turn_ms: Vec<(usize, f64)>,
    /// CPU threads in use (`None`: not searched).
    threads: Option<usize>,
    /// Thread counts measured after the layers' search, with their times.
    threads_tried: Vec<(usize, f64)>,
    settled: bool,
    /// The settled split against stream-only, measured again (once a search settled with
    /// both measured; a count the user asked for is never watched).
    watch: Option<SplitWatch>,
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
            in_turn: None,
            in_turn_ms: Vec::new(),
            threads: None,
            threads_tried: Vec::new(),
            settled: count == 0,
            watch: None,
        }
    }

    /// Also searches the CPU's thread count, from `threads` down, once the count of host
    /// layers is chosen (see the module's documentation).
    pub fn with_threads(self, threads: usize) -> Self {
        Self { threads: Some(threads.max(1)), ..self }
    }

    /// The CPU threads to use now (`None` when the search was given no thread count).
    pub fn threads(&self) -> Option<usize> {
        self.threads
    }

    /// A tuner that keeps all `planned` layers on the CPU and measures nothing (a count
    /// the user asked for): settled from the start, so never watched either.
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
        if !step_ms.is_finite() {
            return;
        }
        if self.settled {
            if let Some(watch) = &mut self.watch {
                watch.record(step_ms);
                self.count = watch.count();
            }
            return;
        }
        if self.warmup > 0 {
            self.warmup -= 1;
            return;
        }
        if let Some(in_turn) = &mut self.in_turn {
            let side = usize::from(self.count == in_turn.counts[1]);
            in_turn.samples[side].push(step_ms);
            if in_turn.samples.iter().any(|s| s.len() < TRIAL_STEPS) {
                self.count = in_turn.counts[1 - side];
                return;
            }
            let medians = (0..2).map(|i| (in_turn.counts[i], median_of(&mut in_turn.samples[i]))).collect();
            self.in_turn = None;
            self.in_turn_ms = medians;
            let (best, best_ms) = best_of(&self.in_turn_ms);
            return self.search_threads(best, best_ms);
        }
        let Some(median) = self.sample(step_ms, TRIAL_STEPS) else { return };
        if let (false, Some(threads)) = (self.threads_tried.is_empty(), self.threads) {
            self.threads_tried.push((threads, median));
            match self.next_threads() {
                Some(next) => self.threads = Some(next),
                None => {
                    self.threads = Some(self.chosen_threads());
                    self.settle();
                }
            }
            return;
        }
        self.tried.push((self.count, median));
        match self.next_count() {
            Some(next) => self.count = next,
            None => {
                let (best, best_ms) = self.best();
                let planned = self.planned.len();
                match best != planned && self.measured(planned) {
                    true => {
                        self.in_turn = Some(InTurn { counts: [best, planned], samples: Default::default() });
                        self.count = best;
                    }
                    false => self.search_threads(best, best_ms),
                }
            }
        }
    }

    /// Uses `count` host layers, and measures fewer CPU threads with them (from
    /// `count_ms`, their time at the starting thread count) or settles.
    fn search_threads(&mut self, count: usize, count_ms: f64) {
        self.count = count;
        match (self.threads, count) {
            (Some(threads), 1..) if threads > 2 => {
                self.threads_tried.push((threads, count_ms));
                self.threads = Some(threads - 2);
            }
            _ => self.settle(),
        }
    }

    /// Adds a step's time to the window; once it holds `steps`, empties it and returns its
    /// median.
    fn sample(&mut self, step_ms: f64, steps: usize) -> Option<f64> {
        self.samples.push(step_ms);
        full_window_median(&mut self.samples, steps)
    }

    /// Ends the search with the count in use, and starts watching it against stream-only
    /// when both were measured: the split is the count in use (which the steps in turn may
    /// have chosen over the fastest single trial), or the fastest count measured when
    /// stream-only won.
    fn settle(&mut self) {
        self.settled = true;
        let stream_only = self.tried.iter().find(|t| t.0 == 0).map(|t| t.1);
        // The count in use, or (stream-only kept) the fastest count measured.
        let split = match self.count {
            0 => best_of(&self.tried.iter().copied().filter(|t| t.0 > 0).collect::<Vec<_>>()).0,
            count => count,
        };
        if let (Some(stream_only_ms), 1..) = (stream_only, split) {
            self.watch = Some(SplitWatch::new(split, stream_only_ms, self.count > 0));
        }
    }

    /// The next thread count: two fewer while the last was not clearly slower than the
    /// best (and at least 2 remain); `None` when done.
    fn next_threads(&self) -> Option<usize> {
        let (_, best_ms) = best_of(&self.threads_tried);
        let &(last, last_ms) = self.threads_tried.last()?;
        (last_ms <= best_ms * (1.0 + SLOWER_BY) && last > 2).then(|| last - 2)
    }

    /// The thread count to keep once every count was measured: the fastest, where it
    /// beats the starting count by more than [`FEWER_THREADS_FASTER_BY`], else the
    /// starting count.
    fn chosen_threads(&self) -> usize {
        let (best, best_ms) = best_of(&self.threads_tried);
        match self.threads_tried.first() {
            Some(&(start, start_ms)) if best_ms >= start_ms * (1.0 - FEWER_THREADS_FASTER_BY) => start,
            _ => best,
        }
    }

    /// What was measured so far, and the count in use.
    pub fn report(&self) -> TuningReport {
        TuningReport {
            tried: self.tried.clone(),
            in_turn: self.in_turn_ms.clone(),
            in_use: self.count,
            planned: self.planned.len(),
            settled: self.settled,
            threads_tried: self.threads_tried.clone(),
            threads: self.threads,
            rechecks: self.watch.as_ref().map_or_else(Vec::new, |w| w.rechecks().to_vec()),
        }
    }

    fn best(&self) -> (usize, f64) {
        match self.tried.is_empty() {
            true => (self.planned.len(), f64::NAN),
            false => best_of(&self.tried),
        }
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

/// Two counts measured step by step in turn: `samples[i]` are the times of `counts[i]`.
#[derive(Debug, Clone)]
struct InTurn {
    counts: [usize; 2],
    samples: [Vec<f64>; 2],
}

/// Rechecks [`TuningReport`]'s line shows; earlier ones are counted.
const MAX_RECHECKS_SHOWN: usize = 3;

/// The median of `times` (sorted in place; not empty).
pub(crate) fn median_of(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The median of a window of step times once it holds `steps` of them (the window then
/// emptied for the next); `None` before.
pub(crate) fn full_window_median(window: &mut Vec<f64>, steps: usize) -> Option<f64> {
    if window.len() < steps {
        return None;
    }
    let median = median_of(window);
    window.clear();
    Some(median)
}

/// The fastest of `tried` (`(setting, milliseconds)`, not empty); the first on a tie.
fn best_of(tried: &[(usize, f64)]) -> (usize, f64) {
    tried.iter().copied().fold((0, f64::INFINITY), |best, t| if t.1 < best.1 { t } else { best })
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
        // The fastest and the planned count, measured again in turn.
        assert_eq!(report.in_turn, [(11, 30.0), (15, 34.0)], "{report}");
        assert_eq!(steps, WARMUP_STEPS + TRIAL_STEPS * counts.len() + 2 * TRIAL_STEPS);
    }

    /// The planned count's trial fell on a slow moment, so a smaller count looked
    /// fastest; measured in turn, the planned count wins.
    #[test]
    fn a_trial_on_a_slow_moment_is_measured_again_in_turn() {
        let mut tuner = HostSplitTuner::new((0..10).collect());
        let mut step = 0;
        while !tuner.settled() {
            let count = tuner.report().in_use;
            let slow_moment = if step < WARMUP_STEPS + TRIAL_STEPS { 5.0 } else { 0.0 };
            tuner.record(if count == 0 { 50.0 } else { 30.0 - 0.2 * count as f64 + slow_moment });
            step += 1;
            assert!(step < 200, "no end: {}", tuner.report());
        }
        let report = tuner.report();
        assert_eq!(report.tried[0], (10, 33.0), "{report}");
        // The descent and refinement found 9 fastest (its trial after the slow moment).
        let in_turn: Vec<usize> = report.in_turn.iter().map(|t| t.0).collect();
        assert_eq!(in_turn, [9, 10], "{report}");
        assert_eq!(report.in_use, 10, "{report}");
        assert!(report.to_string().contains("; in turn 9 → 28.20 ms, 10 → 28.00 ms; using 10"), "{report}");
        // The watch keeps the count the steps in turn chose, not the fastest trial's.
        for _ in 0..100 {
            let count = tuner.report().in_use;
            tuner.record(30.0 - 0.2 * count as f64);
        }
        assert_eq!(tuner.report().in_use, 10, "{}", tuner.report());
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

    /// Runs a search with threads from `threads` against `ms_at(count, threads)`.
    fn run_with_threads(planned: usize, threads: usize, ms_at: impl Fn(usize, usize) -> f64) -> TuningReport {
        let mut tuner = HostSplitTuner::new((0..planned).collect()).with_threads(threads);
        let mut steps = 0;
        while !tuner.settled() {
            let report = tuner.report();
            tuner.record(ms_at(report.in_use, report.threads.unwrap_or(0)));
            steps += 1;
            assert!(steps < 300, "no end: {:?}", tuner.report());
        }
        tuner.report()
    }

    #[test]
    fn fewer_threads_are_kept_when_faster() {
        // Fastest at 10 threads; 8 is clearly slower and ends the descent.
        let report = run_with_threads(6, 14, |c, t| 30.0 - c as f64 + (t as f64 - 10.0).abs());
        assert_eq!(report.in_use, 6, "{report}");
        let threads: Vec<usize> = report.threads_tried.iter().map(|t| t.0).collect();
        assert_eq!(threads, [14, 12, 10, 8], "{report}");
        assert_eq!(report.threads, Some(10), "{report}");
        // The first thread count's time is the best layer count's, not measured again.
        assert_eq!(report.threads_tried[0].1, report.tried.iter().map(|t| t.1).fold(f64::INFINITY, f64::min));
    }

    #[test]
    fn fewer_threads_within_the_noise_keep_the_starting_count() {
        // 12 and 10 threads 1% and 2% faster than 14 (within FEWER_THREADS_FASTER_BY), 8
        // clearly slower: 14 stays. With 10 threads 5% faster, 10 is kept.
        let times = |at_10: f64| {
            move |_c: usize, t: usize| match t {
                14 => 30.0,
                12 => 29.7,
                10 => at_10,
                _ => 33.0,
            }
        };
        let report = run_with_threads(4, 14, times(29.4));
        let threads: Vec<usize> = report.threads_tried.iter().map(|t| t.0).collect();
        assert_eq!(threads, [14, 12, 10, 8], "{report}");
        assert_eq!(report.threads, Some(14), "{report}");
        let report = run_with_threads(4, 14, times(28.5));
        assert_eq!(report.threads, Some(10), "{report}");
    }

    #[test]
    fn the_starting_threads_stay_when_fewer_are_slower() {
        let report = run_with_threads(4, 14, |c, t| 30.0 - c as f64 + (14 - t) as f64);
        let threads: Vec<usize> = report.threads_tried.iter().map(|t| t.0).collect();
        assert_eq!((threads, report.threads), (vec![14, 12], Some(14)), "{report}");
        assert!(report.to_string().ends_with("threads 14 → 26.00 ms, 12 → 28.00 ms; using 14 (settled)"), "{report}");
    }

    #[test]
    fn no_thread_search_without_host_layers_or_threads_to_spare() {
        // Stream-only wins: the CPU computes nothing, so its threads are not searched.
        let report = run_with_threads(3, 14, |c, _| 20.0 + c as f64);
        assert_eq!((report.in_use, report.threads_tried.len(), report.threads), (0, 0, Some(14)), "{report}");
        let report = run_with_threads(3, 2, |c, _| 20.0 - c as f64);
        assert_eq!((report.in_use, report.threads_tried.len()), (3, 0), "{report}");
        // Without a thread count, none is reported.
        let (report, _) = run(3, |c| 20.0 - c as f64);
        assert_eq!((report.threads, report.threads_tried.len()), (None, 0), "{report}");
    }

    /// Settled steps much slower than stream-only measured: after one watch window the
    /// search measures stream-only again, keeps it when faster, and says so.
    #[test]
    fn a_split_that_turns_slow_falls_back_to_stream_only() {
        use crate::split_watch::WATCH_STEPS;
        let mut tuner = HostSplitTuner::new((0..4).collect());
        // Fastest with all 4 on the CPU (20 ms), stream-only 30 ms.
        while !tuner.settled() {
            let count = tuner.report().in_use;
            tuner.record(if count == 0 { 30.0 } else { 20.0 + (4 - count) as f64 });
        }
        assert_eq!(tuner.report().in_use, 4);
        // As fast as measured: nothing changes.
        for _ in 0..3 * WATCH_STEPS {
            tuner.record(21.0);
        }
        assert_eq!((tuner.report().in_use, tuner.report().rechecks.len()), (4, 0));
        // The CPU slows down: one window later stream-only is measured, and kept.
        for _ in 0..WATCH_STEPS + TRIAL_STEPS {
            let count = tuner.report().in_use;
            tuner.record(if count == 0 { 31.0 } else { 45.0 });
        }
        let report = tuner.report();
        assert_eq!((report.in_use, report.rechecks.len()), (0, 1), "{report}");
        assert!(tuner.active_layers().is_empty());
        assert!(
            report.to_string().ends_with("; then split 45.00 ms, stream-only 31.00 ms: stream-only (settled)"),
            "{report}"
        );
        // A count the user asked for is kept however slow.
        let mut fixed = HostSplitTuner::fixed(vec![1, 2]);
        for _ in 0..3 * WATCH_STEPS {
            fixed.record(500.0);
        }
        assert_eq!((fixed.report().in_use, fixed.report().rechecks.len()), (2, 0));
    }

    /// A search that kept stream-only tries its fastest split again later.
    #[test]
    fn a_search_that_kept_stream_only_tries_its_best_split_later() {
        use crate::split_watch::RETRY_STEPS;
        let mut tuner = HostSplitTuner::new((0..8).collect());
        let mut fast_cpu = false;
        let ms_at = |count: usize, fast_cpu: bool| match (count, fast_cpu) {
            (0, _) => 30.0,
            (c, false) => 30.5 + (c as f64 - 4.0).abs(),
            (c, true) => 25.0 + (c as f64 - 4.0).abs(),
        };
        while !tuner.settled() {
            tuner.record(ms_at(tuner.report().in_use, fast_cpu));
        }
        assert_eq!(tuner.report().in_use, 0, "{}", tuner.report());
        fast_cpu = true;
        for _ in 0..RETRY_STEPS + TRIAL_STEPS {
            tuner.record(ms_at(tuner.report().in_use, fast_cpu));
        }
        let report = tuner.report();
        assert_eq!(report.in_use, 4, "the fastest count measured: {report}");
        assert_eq!(report.rechecks.len(), 1, "{report}");
    }

    #[test]
    fn the_report_shows_the_last_rechecks() {
        let recheck = |split_ms| Recheck { split_ms, stream_only_ms: 30.0 };
        let report = TuningReport {
            in_use: 2,
            rechecks: (0..5).map(|i| recheck(20.0 + i as f64 * 5.0)).collect(),
            ..TuningReport::default()
        };
        let line = report.to_string();
        assert!(line.contains("; 2 earlier rechecks; then split 30.00 ms"), "{line}");
        assert!(line.contains("split 35.00 ms, stream-only 30.00 ms: stream-only"), "{line}");
        assert!(!line.contains("split 25.00"), "{line}");
    }

    #[test]
    fn the_report_reads_as_a_line() {
        let (report, _) = run(2, |c| 10.0 + c as f64);
        let line = report.to_string();
        assert!(line.starts_with("planned 2: 2 → 12.00 ms"), "{line}");
        assert!(line.ends_with("using 0 (settled)"), "{line}");
    }
}
