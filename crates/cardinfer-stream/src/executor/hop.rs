//! The hidden state's way back to the device after a layer computed on the CPU (hybrid
//! decode).
//!
//! A plain upload of pageable memory (`Tensor::to_device`) goes through a copy engine,
//! where it can queue behind the streamed block being copied at that moment (~4 ms for a
//! 14B layer), so every host layer's output could wait for a whole block copy. The few KB
//! instead cross the link without the copy engines: the CPU writes them into page-locked
//! memory mapped into the device's address space, and a small kernel on the compute
//! stream reads them over PCIe into a new device tensor. Other devices use `to_device`,
//! and so does CUDA with `CARDINFER_HOP_UPLOAD=copy` (to compare).

use crate::Result;
use candle_core::{Device, Tensor};

/// Uploads hidden states from the host to the model's device, past the copy engines.
pub(crate) struct HiddenUpload {
    device: Device,
    /// `CARDINFER_HOP_UPLOAD=copy`: plain `to_device` uploads on every device.
    plain: bool,
    #[cfg(feature = "cuda")]
    mapped: std::sync::Mutex<Option<imp::Mapped>>,
}

impl HiddenUpload {
    /// An uploader to `device` (its buffer is allocated at the first upload).
    pub(crate) fn new(device: &Device) -> Self {
        Self {
            device: device.clone(),
            plain: std::env::var("CARDINFER_HOP_UPLOAD").is_ok_and(|v| v == "copy"),
            #[cfg(feature = "cuda")]
            mapped: std::sync::Mutex::new(None),
        }
    }

    /// `y` (f32, on the host) as a tensor on the device, in the compute stream's order.
    pub(crate) fn upload(&self, y: &Tensor) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let (Device::Cuda(cuda), candle_core::DType::F32, false) = (&self.device, y.dtype(), self.plain) {
            let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
            return imp::upload(cuda, &mut mapped, y);
        }
        Ok(y.to_device(&self.device)?)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use crate::fused::ptx::{DECODE, MODULE};
    use crate::{Result, StreamError};
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaEvent, DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, Storage, Tensor};

    /// Page-locked host memory mapped into the device, and the event of the last kernel
    /// that read it (the next write waits for it).
    pub(super) struct Mapped {
        host: usize,
        device_address: u64,
        floats: usize,
        read: Option<CudaEvent>,
    }

    // SAFETY: the mapping is plain page-locked memory owned by this value; the event is a
    // driver handle usable from any thread. Access goes through the uploader's Mutex.
    unsafe impl Send for Mapped {}

    impl Drop for Mapped {
        fn drop(&mut self) {
            if let Some(event) = &self.read {
                let _ = event.synchronize();
            }
            // SAFETY: `host` came from cuMemHostAlloc and no kernel reads it any more.
            let _ = unsafe { sys::cuMemFreeHost(self.host as *mut _) };
        }
    }

    fn err(e: impl std::fmt::Display) -> StreamError {
        StreamError::Device { device: "cuda".into(), reason: format!("hidden-state upload: {e}") }
    }

    fn map(cuda: &CudaDevice, floats: usize) -> Result<Mapped> {
        cuda.cuda_stream().context().bind_to_thread().map_err(err)?;
        let mut host = std::ptr::null_mut();
        // SAFETY: a plain allocation of page-locked memory mapped into the device.
        let status = unsafe { sys::cuMemHostAlloc(&mut host, floats * 4, sys::CU_MEMHOSTALLOC_DEVICEMAP) };
        if status != sys::CUresult::CUDA_SUCCESS || host.is_null() {
            return Err(err(format!("cuMemHostAlloc: {status:?}")));
        }
        let mut device_address = 0;
        // SAFETY: `host` is a mapped allocation of this context.
        let status = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device_address, host, 0) };
        let mapped = Mapped { host: host as usize, device_address, floats, read: None };
        if status != sys::CUresult::CUDA_SUCCESS {
            return Err(err(format!("cuMemHostGetDevicePointer: {status:?}")));
        }
        Ok(mapped)
    }

    pub(super) fn upload(cuda: &CudaDevice, mapped: &mut Option<Mapped>, y: &Tensor) -> Result<Tensor> {
        let values = y.flatten_all()?.to_vec1::<f32>()?;
        let n = values.len();
        if mapped.as_ref().is_none_or(|m| m.floats < n) {
            *mapped = Some(map(cuda, n.max(1))?);
        }
        let Some(buffer) = mapped.as_mut() else { return Err(err("no mapped buffer")) };
        if let Some(event) = buffer.read.take() {
            event.synchronize().map_err(err)?;
        }
        // SAFETY: the buffer holds `floats ≥ n` f32 and no kernel reads it (waited above).
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), buffer.host as *mut f32, n) };
        let stream = cuda.cuda_stream();
        let function = cuda.get_or_load_custom_func("copy_f32", MODULE, DECODE)?.into_cuda_function();
        // SAFETY: every element is written by the kernel below.
        let out = unsafe { cuda.alloc::<f32>(n)? };
        let (dst, guard) = out.device_ptr(&stream);
        let count = n as i32;
        let mut builder = stream.launch_builder(&function);
        builder.arg(&buffer.device_address).arg(&dst).arg(&count);
        let config =
            LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: `copy_f32(src, dst, n)` reads n f32 of the mapped buffer, writes n of `out`.
        unsafe { builder.launch(config) }.map_err(err)?;
        drop(guard);
        buffer.read = Some(stream.record_event(None).map_err(err)?);
        let storage = CudaStorage::wrap_cuda_slice(out, cuda.clone());
        Ok(Tensor::from_storage(Storage::Cuda(storage), y.shape().clone(), BackpropOp::none(), false))
    }
}
