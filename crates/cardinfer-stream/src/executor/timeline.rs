//! `CARDINFER_TIMELINE=1`: device-side timeline of each weight pass (when every block's
//! copy and compute ran, from CUDA events), printed to stderr. For diagnosing how copies
//! and compute overlap; off by default (the events cost a little).

use crate::device::DeviceMarker;
use candle_core::Device;
use cardinfer_core::BlockId;

/// Whether timelines are recorded.
pub(crate) fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CARDINFER_TIMELINE").is_some())
}

/// A span on the device: its start and end markers.
type Span = (DeviceMarker, DeviceMarker);

/// One pass's events: per block, its copy (if streamed) and its compute.
pub(crate) struct Timeline {
    origin: Option<DeviceMarker>,
    device: Device,
    rows: Vec<(BlockId, Option<Span>, Span)>,
    open: Option<DeviceMarker>,
}

impl Timeline {
    /// Starts a pass on `device` (records nothing unless [`enabled`]).
    pub(crate) fn start(device: &Device) -> Self {
        let origin = enabled().then(|| DeviceMarker::now(device)).flatten();
        Self { origin, device: device.clone(), rows: Vec::new(), open: None }
    }

    /// Marks the start of a block's compute.
    pub(crate) fn begin(&mut self) {
        if self.origin.is_some() {
            self.open = DeviceMarker::now(&self.device);
        }
    }

    /// Marks the end of `block`'s compute; `copy` is its upload's span, if streamed.
    pub(crate) fn end(&mut self, block: BlockId, copy: Option<Span>) {
        if let (Some(start), Some(end)) = (self.open.take(), DeviceMarker::now(&self.device)) {
            self.rows.push((block, copy, (start, end)));
        }
    }

    /// Prints the pass (waits for its events).
    pub(crate) fn print(self, tokens: usize) {
        let Some(origin) = self.origin else { return };
        let ms = |m: &DeviceMarker| origin.secs_until(m).map_or(f64::NAN, |s| s * 1e3);
        let mut line = format!("[timeline] {tokens} tokens:");
        for (block, copy, (start, end)) in &self.rows {
            let copy = copy.as_ref().map_or(String::new(), |(a, b)| format!(" copy {:.1}-{:.1}", ms(a), ms(b)));
            line.push_str(&format!(" | {block}{copy} run {:.1}-{:.1}", ms(start), ms(end)));
        }
        eprintln!("{line}");
    }
}
