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

/// Host memory page-locked for fast host → device copies; unlocked on drop.
#[derive(Debug, Default)]
pub struct HostPin {
    regions: Vec<(usize, usize)>,
}

impl HostPin {
    /// Page-locks `regions` (read-only) for `device`, best effort: on a CPU device, or
    /// where the driver refuses, the regions stay pageable (slower copies, same result).
    ///
    /// # Safety
    /// The regions must stay mapped, unmoved, until the returned value is dropped.
    pub unsafe fn pin(device: &Device, regions: &[&[u8]]) -> Self {
        let mut pinned = Vec::new();
        for r in regions {
            if memory::register(device, r.as_ptr() as usize, r.len()) {
                pinned.push((r.as_ptr() as usize, r.len()));
            }
        }
        Self { regions: pinned }
    }

    /// Bytes page-locked.
    pub fn bytes(&self) -> u64 {
        self.regions.iter().map(|(_, len)| *len as u64).sum()
    }
}

impl Drop for HostPin {
    fn drop(&mut self) {
        for &(ptr, _) in &self.regions {
            memory::unregister(ptr);
        }
    }
}

#[cfg(feature = "cuda")]
mod memory {
    use candle_core::cuda_backend::cudarc::driver::sys;
    use candle_core::Device;

    pub fn query(device: &Device) -> Option<(u64, u64)> {
        match device {
            Device::Cuda(cuda) => {
                let (free, total) = cuda.cuda_stream().context().mem_get_info().ok()?;
                Some((free as u64, total as u64))
            }
            _ => None,
        }
    }

    pub fn register(device: &Device, ptr: usize, len: usize) -> bool {
        let Device::Cuda(cuda) = device else { return false };
        if cuda.cuda_stream().context().bind_to_thread().is_err() {
            return false;
        }
        // SAFETY: the caller keeps the region mapped until `unregister`.
        let status = unsafe { sys::cuMemHostRegister_v2(ptr as *mut _, len, sys::CU_MEMHOSTREGISTER_READ_ONLY) };
        status == sys::CUresult::CUDA_SUCCESS
    }

    pub fn unregister(ptr: usize) {
        // SAFETY: `ptr` was registered by `register`.
        let _ = unsafe { sys::cuMemHostUnregister(ptr as *mut _) };
    }
}

#[cfg(not(feature = "cuda"))]
mod memory {
    use candle_core::Device;
    pub fn query(_device: &Device) -> Option<(u64, u64)> {
        None
    }
    pub fn register(_device: &Device, _ptr: usize, _len: usize) -> bool {
        false
    }
    pub fn unregister(_ptr: usize) {}
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
