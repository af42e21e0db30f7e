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
use crate::stats::{full_window_median, median_of};
pub use crate::stats::{SLOWER_BY, TRIAL_STEPS};

/// Decode steps after the tuner starts that are not measured (first-use costs).
pub const WARMUP_STEPS: usize = 2;

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

/// The fastest of `tried` (`(setting, milliseconds)`, not empty); the first on a tie.
fn best_of(tried: &[(usize, f64)]) -> (usize, f64) {
    tried.iter().copied().fold((0, f64::INFINITY), |best, t| if t.1 < best.1 { t } else { best })
}

#[cfg(test)]
mod tests;
