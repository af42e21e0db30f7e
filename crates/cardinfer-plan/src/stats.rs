//! The statistics the host-split search and its watch share: how many decode steps make a
//! measurement, when a count counts as slower, and the medians of step times.

/// Decode steps measured per count (their median is the count's time: on the H100
/// machine about one 14B step in eight took 15 ms longer than the others).
pub const TRIAL_STEPS: usize = 5;

/// A count slower than the best by more than this share ends the downward steps.
pub const SLOWER_BY: f64 = 0.03;

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
