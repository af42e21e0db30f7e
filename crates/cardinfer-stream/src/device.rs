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

#[cfg(feature = "cuda")]
mod memory {
    use candle_core::Device;
    pub fn query(device: &Device) -> Option<(u64, u64)> {
        match device {
            Device::Cuda(cuda) => {
                cuda.cuda_stream().context().bind_to_thread().ok()?;
                let (free, total) = candle_core::cuda_backend::cudarc::driver::result::mem_get_info().ok()?;
                Some((free as u64, total as u64))
            }
            _ => None,
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod memory {
    use candle_core::Device;
    pub fn query(_device: &Device) -> Option<(u64, u64)> {
        None
    }
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
