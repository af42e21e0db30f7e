//! Choosing a Candle device from a user's string.

use crate::{Result, StreamError};
use candle_core::Device;

/// Parses `cpu`, `cuda` or `cuda:N` into a device.
///
/// Without the `cuda` feature, asking for CUDA is a clear error rather than a panic.
pub fn parse_device(text: &str) -> Result<Device> {
    let err = |reason: String| StreamError::Device { device: text.to_string(), reason };
    let lower = text.trim().to_ascii_lowercase();
    if lower == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match lower.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| err("expected cuda or cuda:N".into()))?,
        None => return Err(err("expected cpu, cuda or cuda:N".into())),
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(err("this build has no CUDA support: rebuild with `--features cuda`".into()));
    }
    Device::new_cuda(ordinal).map_err(|e| err(e.to_string()))
}

/// Free and total bytes of device memory, where the device can tell (CUDA); `None` on CPU.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    memory::query(device)
}

/// Bytes of host memory available to new allocations (`MemAvailable` on Linux); `None`
/// where the system does not say.
pub fn host_memory_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Makes `device`'s context current on this thread (CUDA; a no-op elsewhere). Threads
/// that issue device work, such as the prefetcher, call it first.
pub fn bind_thread(device: &Device) {
    memory::bind(device);
}

/// A point in a device's stream of work (a timing CUDA event), to time copies on the
/// device itself: host-side timers only see when a copy was queued.
#[derive(Clone)]
pub struct DeviceMarker(std::sync::Arc<memory::Marker>);

impl std::fmt::Debug for DeviceMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceMarker")
    }
}

impl DeviceMarker {
    /// Marks the work queued on `device` so far; `None` where the device cannot (CPU).
    pub fn now(device: &Device) -> Option<Self> {
        memory::marker(device).map(|m| Self(std::sync::Arc::new(m)))
    }

    /// Seconds between `self` and a later marker `end`, once both are reached (waits).
    pub fn secs_until(&self, end: &DeviceMarker) -> Option<f64> {
        memory::elapsed(&self.0, &end.0)
    }

    /// Blocks the calling thread until the device has reached this marker.
    pub fn wait_host(&self) {
        memory::synchronize(&self.0);
    }

    pub(crate) fn from_event(event: MarkerEvent) -> Self {
        Self(std::sync::Arc::new(event))
    }

    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn event(&self) -> &MarkerEvent {
        &self.0
    }
}

/// The device's event type behind a [`DeviceMarker`].
pub(crate) type MarkerEvent = memory::Marker;

/// A name for `device` that keys its cached profile: `cpu`, or `cuda<N>-<model name>`.
pub fn device_key(device: &Device) -> String {
    match memory::name(device) {
        Some(name) => name,
        None => "cpu".to_string(),
    }
}

/// Page-locked host memory allocated by the CUDA driver: the host tier of streamed
/// blocks, copied to the device by DMA at full link speed.
#[derive(Debug)]
pub struct PinnedBuffer {
    ptr: usize,
    len: usize,
}

// SAFETY: the buffer is plain host memory owned by this value.
unsafe impl Send for PinnedBuffer {}
// SAFETY: shared references only read it (`as_slice`); writing needs `&mut self`.
unsafe impl Sync for PinnedBuffer {}

impl PinnedBuffer {
    /// Allocates `len` bytes for copies to `device`; `None` on a non-CUDA device or
    /// when the driver refuses (callers fall back to pageable memory).
    pub fn alloc(device: &Device, len: usize) -> Option<Self> {
        memory::alloc_pinned(device, len).map(|ptr| Self { ptr, len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr as *mut u8, self.len) }
    }
}

impl Drop for PinnedBuffer {
    fn drop(&mut self) {
        memory::free_pinned(self.ptr);
    }
}

#[cfg(feature = "cuda")]
mod memory {
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaEvent};
    use candle_core::Device;

    pub type Marker = CudaEvent;

    pub fn marker(device: &Device) -> Option<Marker> {
        let Device::Cuda(cuda) = device else { return None };
        cuda.cuda_stream().record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).ok()
    }

    pub fn elapsed(start: &Marker, end: &Marker) -> Option<f64> {
        start.elapsed_ms(end).ok().map(|ms| ms as f64 / 1e3)
    }

    pub fn synchronize(marker: &Marker) {
        let _ = marker.synchronize();
    }

    pub fn query(device: &Device) -> Option<(u64, u64)> {
        match device {
            Device::Cuda(cuda) => {
                let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
                Some((free as u64, total as u64))
            }
            _ => None,
        }
    }

    pub fn name(device: &Device) -> Option<String> {
        let Device::Cuda(cuda) = device else { return None };
        let stream = cuda.cuda_stream();
        let ctx = stream.context();
        Some(format!("cuda{}-{}", ctx.ordinal(), ctx.name().ok()?))
    }

    pub fn bind(device: &Device) {
        if let Device::Cuda(cuda) = device {
            let _ = cuda.cuda_stream().context().bind_to_thread();
        }
    }

    pub fn alloc_pinned(device: &Device, len: usize) -> Option<usize> {
        let Device::Cuda(cuda) = device else { return None };
        cuda.cuda_stream().context().bind_to_thread().ok()?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: a plain allocation; flags 0 = ordinary (cached) page-locked memory.
        let status = unsafe { sys::cuMemHostAlloc(&mut ptr, len.max(1), 0) };
        (status == sys::CUresult::CUDA_SUCCESS && !ptr.is_null()).then_some(ptr as usize)
    }

    pub fn free_pinned(ptr: usize) {
        // SAFETY: `ptr` came from `alloc_pinned`.
        let _ = unsafe { sys::cuMemFreeHost(ptr as *mut _) };
    }
}

#[cfg(not(feature = "cuda"))]
mod memory {
    use candle_core::Device;
    pub struct Marker;
    pub fn marker(_device: &Device) -> Option<Marker> {
        None
    }
    pub fn elapsed(_start: &Marker, _end: &Marker) -> Option<f64> {
        None
    }
    pub fn synchronize(_marker: &Marker) {}
    pub fn query(_device: &Device) -> Option<(u64, u64)> {
        None
    }
    pub fn bind(_device: &Device) {}
    pub fn name(_device: &Device) -> Option<String> {
        None
    }
    pub fn alloc_pinned(_device: &Device, _len: usize) -> Option<usize> {
        None
    }
    pub fn free_pinned(_ptr: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_feature_is_a_clear_error() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
