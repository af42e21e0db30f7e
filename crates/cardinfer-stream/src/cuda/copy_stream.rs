//! A second CUDA stream for host → device copies, so uploads of the next streamed blocks
//! run on the copy engine while the compute stream works on the current one.
//!
//! Synchronization, per block (all issued from the one thread that drives the device):
//! 1. the copy stream waits for an event recorded on the compute stream after everything
//!    queued there so far: the kernels of the block that last used the destination slot
//!    ("slot free"; see [`crate::cuda::slots`]), or the stream-ordered allocation of a
//!    destination of its own;
//! 2. it copies every tensor from page-locked host memory;
//! 3. an event recorded on the copy stream after the copies ("slot ready") is waited on
//!    by the compute stream before the block's first kernel ([`UploadEvents::wait`]).
//!
//! Candle's per-tensor event tracking is switched off for the device when the copy
//! stream is created: it would add an event record to every kernel launch, and the
//! three rules above are the synchronization the copies need.

use crate::cuda::sizes::float_dtype;
use crate::device::DeviceMarker;
use crate::{Result, StreamError};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use cardinfer_core::TensorInfo;
use cardinfer_quant::candle::ggml_dtype;
use std::sync::Arc;

/// A copy stream on a CUDA device.
pub struct CopyStream(imp::CopyStream);

/// Device address of a dense CUDA tensor's first element (f32, f16 or bf16).
#[cfg(feature = "cuda")]
pub(crate) use imp::dense_address;

impl std::fmt::Debug for CopyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CopyStream")
    }
}

/// One host → device copy: `src` into device memory at address `dst` (`src.len()` bytes).
#[derive(Debug, Clone, Copy)]
pub struct CopyJob<'a> {
    /// Device address of the destination.
    pub dst: u64,
    /// Source bytes; must be page-locked for the copy to be asynchronous.
    pub src: &'a [u8],
    /// Bytes after the copy to set to zero (the row padding Candle's kernels read).
    pub zero_after: usize,
}

/// The events of one block's upload: when its copies started and when they finished
/// ("slot ready").
pub struct UploadEvents {
    start: DeviceMarker,
    ready: DeviceMarker,
    compute: imp::ComputeStream,
}

impl std::fmt::Debug for UploadEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadEvents")
    }
}

impl UploadEvents {
    /// Makes the compute stream's later work wait until the copies are done.
    pub fn wait(&self) -> Result<()> {
        imp::wait(&self.compute, &self.ready).map_err(copy_error)
    }

    /// The copy's start and end on the device (for timing).
    pub fn span(&self) -> (DeviceMarker, DeviceMarker) {
        (self.start.clone(), self.ready.clone())
    }
}

fn copy_error(reason: String) -> StreamError {
    StreamError::Device { device: "cuda copy stream".into(), reason }
}

impl CopyStream {
    /// A copy stream on `device`; `None` on a device without one (CPU) or when the driver
    /// refuses.
    pub fn new(device: &Device) -> Option<Self> {
        imp::CopyStream::new(device).map(Self)
    }

    /// Queues `jobs` on the copy stream after the work queued so far on the compute
    /// stream (the destinations' allocations), and returns the events that mark them.
    ///
    /// # Safety
    /// Every `src` must stay valid and unchanged until the copies finish (page-locked
    /// memory owned by the reader), and every `dst` must be device memory of at least
    /// `src.len() + zero_after` bytes that is neither freed nor reused before the compute
    /// stream has waited on the returned events.
    pub unsafe fn upload(&self, jobs: &[CopyJob<'_>]) -> Result<UploadEvents> {
        let (start, ready, compute) = self.0.upload(jobs).map_err(copy_error)?;
        Ok(UploadEvents { start: DeviceMarker::from_event(start), ready: DeviceMarker::from_event(ready), compute })
    }
}

/// A device tensor allocated for a copy: quantized storage as is, floats in their stored
/// type.
#[derive(Debug)]
pub enum Destination {
    /// Block-quantized storage.
    Quantized(Arc<QTensor>),
    /// Floats.
    Dense(Tensor),
}

/// Allocates the device tensor a matrix stored as `info` is copied into (quantized
/// storage as is, floats in their stored type), and returns it with its device address.
/// An error on a device without copy streams.
pub fn alloc_destination(info: &TensorInfo, device: &Device) -> Result<(Destination, u64)> {
    let err = |reason: String| StreamError::Device { device: format!("{device:?}"), reason };
    let (weight, address) = if info.storage.is_quantized() {
        let q = imp::alloc_quantized(device, ggml_dtype(info.storage), &info.shape)
            .ok_or_else(|| err(format!("cannot allocate `{}` for a copy", info.name)))?;
        if q.storage_size_in_bytes() as u64 != info.len {
            return Err(err(format!(
                "`{}`: {} bytes stored, {} allocated",
                info.name,
                info.len,
                q.storage_size_in_bytes()
            )));
        }
        let address = q.device_ptr().map_err(|e| err(e.to_string()))? as u64;
        (Destination::Quantized(Arc::new(q)), address)
    } else {
        let dtype = float_dtype(info.storage);
        if (info.elem_count() * dtype.size_in_bytes()) as u64 != info.len {
            return Err(err(format!("`{}`: {} bytes stored for {:?} {dtype:?}", info.name, info.len, info.shape)));
        }
        let t = Tensor::zeros(info.shape.as_slice(), dtype, device)?;
        let address = imp::dense_address(&t).ok_or_else(|| err(format!("no device address for `{}`", info.name)))?;
        (Destination::Dense(t), address)
    };
    Ok((weight, address))
}

#[cfg(feature = "cuda")]
mod imp {
    use super::CopyJob;
    use candle_core::cuda_backend::cudarc::driver::{sys, CudaEvent, CudaStream, DevicePtr};
    use candle_core::quantized::{cuda::QCudaStorage, GgmlDType, QStorage, QTensor};
    use candle_core::{DType, Device, Storage, Tensor};
    use std::sync::Arc;

    pub fn alloc_quantized(device: &Device, dtype: GgmlDType, shape: &[usize]) -> Option<QTensor> {
        let Device::Cuda(cuda) = device else { return None };
        let storage = QCudaStorage::zeros(cuda, shape.iter().product(), dtype).ok()?;
        QTensor::new(QStorage::Cuda(storage), shape).ok()
    }

    pub type ComputeStream = Arc<CudaStream>;

    pub struct CopyStream {
        copy: Arc<CudaStream>,
        compute: Arc<CudaStream>,
    }

    impl CopyStream {
        pub fn new(device: &Device) -> Option<Self> {
            let Device::Cuda(cuda) = device else { return None };
            // SAFETY: the executor orders every cross-stream use itself (module docs).
            unsafe { cuda.disable_event_tracking() };
            let compute = cuda.cuda_stream();
            let copy = compute.context().new_stream().ok()?;
            Some(Self { copy, compute })
        }

        pub fn upload(&self, jobs: &[CopyJob<'_>]) -> Result<(CudaEvent, CudaEvent, ComputeStream), String> {
            let timed = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
            let allocated = self.compute.record_event(Some(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING));
            self.copy.wait(&allocated.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            let start = self.copy.record_event(timed).map_err(|e| e.to_string())?;
            for job in jobs {
                // SAFETY: the caller guarantees both ends live until the copy is waited on.
                let status = unsafe {
                    sys::cuMemcpyHtoDAsync_v2(
                        job.dst as sys::CUdeviceptr,
                        job.src.as_ptr() as *const std::ffi::c_void,
                        job.src.len(),
                        self.copy.cu_stream(),
                    )
                };
                if status != sys::CUresult::CUDA_SUCCESS {
                    return Err(format!("cuMemcpyHtoDAsync of {} bytes: {status:?}", job.src.len()));
                }
                if job.zero_after > 0 {
                    let end = job.dst + job.src.len() as u64;
                    // SAFETY: the caller's destination covers the padding too.
                    let status = unsafe { sys::cuMemsetD8Async(end, 0, job.zero_after, self.copy.cu_stream()) };
                    if status != sys::CUresult::CUDA_SUCCESS {
                        return Err(format!("cuMemsetD8Async of {} bytes: {status:?}", job.zero_after));
                    }
                }
            }
            let ready = self.copy.record_event(timed).map_err(|e| e.to_string())?;
            Ok((start, ready, self.compute.clone()))
        }
    }

    pub fn wait(compute: &ComputeStream, ready: &crate::device::DeviceMarker) -> Result<(), String> {
        compute.wait(ready.event()).map_err(|e| e.to_string())
    }

    pub fn dense_address(tensor: &Tensor) -> Option<u64> {
        let (storage, layout) = tensor.storage_and_layout();
        let Storage::Cuda(cuda) = &*storage else { return None };
        let stream = cuda.device.cuda_stream();
        let offset = layout.start_offset() as u64 * tensor.dtype().size_in_bytes() as u64;
        let base = match tensor.dtype() {
            DType::F32 => cuda.as_cuda_slice::<f32>().ok()?.device_ptr(&stream).0,
            DType::F16 => cuda.as_cuda_slice::<half::f16>().ok()?.device_ptr(&stream).0,
            DType::BF16 => cuda.as_cuda_slice::<half::bf16>().ok()?.device_ptr(&stream).0,
            // A q8_0 KV cache's blocks.
            DType::U8 => cuda.as_cuda_slice::<u8>().ok()?.device_ptr(&stream).0,
            _ => return None,
        };
        Some(base + offset)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::CopyJob;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    pub fn alloc_quantized(_device: &Device, _dtype: GgmlDType, _shape: &[usize]) -> Option<QTensor> {
        None
    }

    pub type ComputeStream = ();
    pub enum CopyStream {}

    impl CopyStream {
        pub fn new(_device: &Device) -> Option<Self> {
            None
        }

        pub fn upload(&self, _jobs: &[CopyJob<'_>]) -> Result<(super::NoEvent, super::NoEvent, ()), String> {
            match *self {}
        }
    }

    pub fn wait(_compute: &ComputeStream, _ready: &crate::device::DeviceMarker) -> Result<(), String> {
        Ok(())
    }

    pub fn dense_address(_tensor: &Tensor) -> Option<u64> {
        None
    }
}

#[cfg(not(feature = "cuda"))]
type NoEvent = crate::device::MarkerEvent;
