//! Device-side timeline of each weight pass (when every block's copy and compute ran,
//! from CUDA events, and how long the host took to queue it), a `debug` event of
//! [`crate::diagnostics::TIMELINE`]. For diagnosing how copies and compute overlap and
//! whether the device waits for the host; off by default (the events cost a little). At
//! `trace` every block of decode passes is shown too, host-computed layers included
//! (their span: from the device reaching the hop to the hidden state's return).

use crate::device::DeviceMarker;
use candle_core::Device;
use cardinfer_core::BlockId;

/// Whether timelines are recorded.
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: crate::diagnostics::TIMELINE, tracing::Level::DEBUG)
}

/// When the last printed pass ended (its timeline printed), for the gap before the next.
static LAST_PASS_END: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// When the pass being recorded was entered (before its embedding and plan), so the gap
/// between passes splits into the caller's time and the pass's setup.
static PASS_ENTERED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

/// Records that a pass starts now (does nothing unless [`enabled`]).
pub(crate) fn pass_entered() {
    if enabled() {
        *PASS_ENTERED.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
    }
}

/// Whether every block is shown for decode passes too.
fn detailed() -> bool {
    tracing::enabled!(target: crate::diagnostics::TIMELINE, tracing::Level::TRACE)
}

/// A span on the device: its start and end markers.
type Span = (DeviceMarker, DeviceMarker);

/// A host layer's wall times: hop in, compute, upload.
type HostParts = [std::time::Duration; 3];

/// One block of a pass: its id, its copy's span (if streamed), its compute span, the
/// host's milliseconds to queue it, and a host layer's wall times.
type Row = (BlockId, Option<Span>, Span, f64, Option<HostParts>);

/// One pass's events: per block, its copy (if streamed) and its compute.
pub(crate) struct Timeline {
    origin: Option<DeviceMarker>,
    device: Device,
    rows: Vec<Row>,
    open: Option<(DeviceMarker, std::time::Instant)>,
    started: std::time::Instant,
}

impl Timeline {
    /// Starts a pass on `device` (records nothing unless [`enabled`]).
    pub(crate) fn start(device: &Device) -> Self {
        let origin = enabled().then(|| DeviceMarker::now(device)).flatten();
        Self { origin, device: device.clone(), rows: Vec::new(), open: None, started: std::time::Instant::now() }
    }

    /// Marks the start of a block's compute.
    pub(crate) fn begin(&mut self) {
        if self.origin.is_some() {
            self.open = DeviceMarker::now(&self.device).map(|m| (m, std::time::Instant::now()));
        }
    }

    /// Marks the end of `block`'s compute; `copy` is its upload's span, if streamed.
    pub(crate) fn end(&mut self, block: BlockId, copy: Option<Span>) {
        self.close(block, copy, None);
    }

    /// Marks the end of a host-computed layer (after its output went back to the device);
    /// `parts` are the host's wall times of its hop in, its compute and its upload.
    pub(crate) fn end_host(&mut self, block: BlockId, parts: HostParts) {
        self.close(block, None, Some(parts));
    }

    fn close(&mut self, block: BlockId, copy: Option<Span>, host: Option<HostParts>) {
        if let (Some((start, queued)), Some(end)) = (self.open.take(), DeviceMarker::now(&self.device)) {
            self.rows.push((block, copy, (start, end), queued.elapsed().as_secs_f64() * 1e3, host));
        }
    }

    /// Prints the pass (waits for its events): every block for passes of more than 4
    /// tokens, a summary line otherwise (device time of the pass, the host's time to queue
    /// its blocks, and the wall time).
    pub(crate) fn print(&mut self, tokens: usize) {
        let Some(origin) = self.origin.take() else { return };
        let ms = |m: &DeviceMarker| origin.secs_until(m).map_or(f64::NAN, |s| s * 1e3);
        let device_ms = self.rows.last().map_or(0.0, |(_, _, (_, end), _, _)| ms(end));
        let queue_ms: f64 = self.rows.iter().filter(|r| r.4.is_none()).map(|r| r.3).sum();
        let wall_ms = self.started.elapsed().as_secs_f64() * 1e3;
        // Time between the previous pass's end and this one's start: the caller's work
        // between passes (sampling) and the pass's own setup (embedding, its plan).
        let mut last_end = LAST_PASS_END.lock().unwrap_or_else(|e| e.into_inner());
        let gap = last_end.map_or(String::new(), |end| {
            format!(", {:.2} ms since the last pass", self.started.saturating_duration_since(end).as_secs_f64() * 1e3)
        });
        *last_end = Some(std::time::Instant::now());
        drop(last_end);
        let entered = PASS_ENTERED.lock().unwrap_or_else(|e| e.into_inner()).take();
        let setup = entered.map_or(String::new(), |at| {
            format!(
                " (of which the pass's setup {:.2} ms)",
                self.started.saturating_duration_since(at).as_secs_f64() * 1e3
            )
        });
        let mut line = format!(
            "[timeline] {tokens} tokens: device {device_ms:.2} ms, host queued blocks in {queue_ms:.2} ms, wall {wall_ms:.2} ms{gap}{setup}"
        );
        if tokens > 4 || detailed() {
            for (block, copy, (start, end), queued, host) in &self.rows {
                let copy = copy.as_ref().map_or(String::new(), |(a, b)| format!(" copy {:.1}-{:.1}", ms(a), ms(b)));
                let what = match host {
                    Some([hop, cpu, up]) => format!(
                        "host (hop {:.2} cpu {:.2} up {:.2})",
                        hop.as_secs_f64() * 1e3,
                        cpu.as_secs_f64() * 1e3,
                        up.as_secs_f64() * 1e3
                    ),
                    None => "run".into(),
                };
                line.push_str(&format!(
                    " | {block}{copy} {what} {:.1}-{:.1} (queued in {queued:.1})",
                    ms(start),
                    ms(end)
                ));
            }
        }
        tracing::debug!(target: crate::diagnostics::TIMELINE, "{line}");
    }
}
