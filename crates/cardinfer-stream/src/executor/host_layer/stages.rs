//! Each host layer computed by [`super::exact::decode_layer`] reports the milliseconds of its
//! steps as one `debug` event of [`crate::diagnostics::HOST_STAGES`] (`attn_norm 0.008
//! qkv 0.151 … down 0.326`), in a pass or in `cardinfer-dev host-layer`. Off, a mark costs
//! one check of a flag.
//!
//! This is how the serial steps between the matrix products were found to take 0.14 ms of
//! a 4B host layer's 1.38 in the pass on the H100 machine (BENCHMARKS.md, run121/run122).

use std::time::Instant;

/// Whether the stages are asked for.
fn enabled() -> bool {
    tracing::enabled!(target: crate::diagnostics::HOST_STAGES, tracing::Level::DEBUG)
}

/// The steps of one host layer so far: each name with the time since the step before.
pub struct StageClock {
    last: Option<Instant>,
    line: String,
}

impl StageClock {
    /// Starts timing a layer (nothing is timed unless the stages are asked for).
    pub fn start() -> Self {
        Self { last: enabled().then(Instant::now), line: String::new() }
    }

    /// Ends step `name` here.
    pub fn mark(&mut self, name: &str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            let ms = (now - last).as_secs_f64() * 1e3;
            self.line.push_str(&format!("{}{name} {ms:.3}", if self.line.is_empty() { "" } else { " " }));
            self.last = Some(now);
        }
    }

    /// Prints the layer's line, if timing.
    pub fn print(self) {
        if self.last.is_some() {
            tracing::debug!(target: crate::diagnostics::HOST_STAGES, "{}", self.line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_name_each_step_in_order() {
        let mut clock = StageClock { last: Some(Instant::now()), line: String::new() };
        clock.mark("norm");
        clock.mark("qkv");
        let names: Vec<&str> = clock.line.split(' ').step_by(2).collect();
        assert_eq!(names, ["norm", "qkv"]);
        let off = StageClock { last: None, line: String::new() };
        assert!(off.line.is_empty());
    }
}
