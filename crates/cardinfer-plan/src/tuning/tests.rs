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
