//! The hidden state's hop between the device and a layer the CPU computes (hybrid
//! decode), through page-locked host memory mapped into the device's address space: one
//! small kernel each way and one wait for the stream.
//!
//! Candle's copies cost more on that path: device allocations, an addition kernel for the
//! pending residual, and a copy to pageable memory that waits behind the layer uploads
//! the copy engines are running (run109: 0.15 ms per hop while the link copied, 0.09 ms
//! once it was done). Kernels reading and writing mapped memory do not use the copy
//! engines.

use super::{cuda_err, FusedDecoder};
use crate::Result;
use candle_core::cuda_backend::cudarc::driver::{sys, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Threads per block of the hop kernels.
const HOP_THREADS: u32 = 256;

/// Page-locked host memory mapped for the device: `hidden` f32 for the state going out to
/// the CPU, then `hidden` for the CPU's output coming back.
pub(super) struct MappedHop {
    host: *mut f32,
    device: u64,
    hidden: usize,
    /// The stream the hop kernels run on (waited for before the memory is freed).
    stream: Arc<CudaStream>,
    /// A kernel reading the incoming half is queued and may not have run yet.
    upload_queued: bool,
}

impl MappedHop {
    /// The buffer for a hidden state of `hidden` values, for kernels on `stream`; `None`
    /// where the driver refuses (hops then go through Candle's copies).
    pub(super) fn new(hidden: usize, stream: &Arc<CudaStream>) -> Option<Self> {
        stream.context().bind_to_thread().ok()?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: a plain allocation: page-locked, cached for the CPU, mapped for kernels.
        let status = unsafe { sys::cuMemHostAlloc(&mut ptr, 2 * hidden * 4, sys::CU_MEMHOSTALLOC_DEVICEMAP) };
        if status != sys::CUresult::CUDA_SUCCESS || ptr.is_null() {
            return None;
        }
        let mut device = 0;
        // SAFETY: `ptr` was allocated mapped just above.
        let status = unsafe { sys::cuMemHostGetDevicePointer_v2(&mut device, ptr, 0) };
        if status != sys::CUresult::CUDA_SUCCESS {
            // SAFETY: `ptr` came from cuMemHostAlloc and is not used again.
            unsafe { sys::cuMemFreeHost(ptr) };
            return None;
        }
        Some(Self { host: ptr.cast(), device, hidden, stream: stream.clone(), upload_queued: false })
    }

    /// The device address of the outgoing half.
    fn device_out(&self) -> u64 {
        self.device
    }

    /// The device address of the incoming half.
    fn device_in(&self) -> u64 {
        self.device + (self.hidden * 4) as u64
    }
}

impl Drop for MappedHop {
    fn drop(&mut self) {
        if self.upload_queued {
            // A queued kernel may still read the incoming half.
            let _ = self.stream.synchronize();
        }
        // SAFETY: `host` came from cuMemHostAlloc, and no queued kernel uses it any more.
        unsafe { sys::cuMemFreeHost(self.host.cast()) };
    }
}

impl FusedDecoder {
    /// The residual stream after the layers queued so far, in host memory (for a layer
    /// the CPU computes): the same values [`FusedDecoder::hidden`] gives, without device
    /// allocations or copies. `None` without a mapped buffer (the caller then uses
    /// [`FusedDecoder::hidden`]). The decoder's state is unchanged: the pending residual
    /// stays pending until [`FusedDecoder::set_hidden_from_host`] replaces the stream.
    pub fn hidden_to_host(&mut self) -> Result<Option<Vec<f32>>> {
        let Some(hop) = &self.hop else { return Ok(None) };
        let n = self.dims.hidden;
        let delta = if self.residual_pending { self.buffers.down } else { 0 };
        let out = hop.device_out();
        self.launch_hop(&self.kernels.hop_to_host, &[&self.buffers.x, &delta, &out])?;
        self.stream.synchronize().map_err(cuda_err)?;
        let hop = self.hop.as_mut().expect("checked above");
        hop.upload_queued = false;
        // SAFETY: the outgoing half holds `hidden` f32, written by the kernel the stream
        // just finished.
        Ok(Some(unsafe { std::slice::from_raw_parts(hop.host, n) }.to_vec()))
    }

    /// Replaces the residual stream with `x` (`hidden` f32 in host memory: a CPU layer's
    /// output), read by a kernel ordered on the stream. `false` without a mapped buffer
    /// (the caller then uses [`FusedDecoder::set_hidden`]).
    pub fn set_hidden_from_host(&mut self, x: &[f32]) -> Result<bool> {
        let n = self.dims.hidden;
        if x.len() != n {
            return Err(crate::StreamError::ShapeMismatch {
                tensor: "hidden state (hop from the host)".into(),
                expected: vec![n],
                found: vec![x.len()],
            });
        }
        let Some(hop) = &self.hop else { return Ok(false) };
        if hop.upload_queued {
            // The previous upload may still read the incoming half.
            self.stream.synchronize().map_err(cuda_err)?;
        }
        let hop = self.hop.as_mut().expect("checked above");
        // SAFETY: the incoming half holds `hidden` f32 and no queued kernel reads it now.
        unsafe { std::slice::from_raw_parts_mut(hop.host.add(n), n) }.copy_from_slice(x);
        hop.upload_queued = true;
        let input = hop.device_in();
        self.launch_hop(&self.kernels.hop_from_host, &[&input, &self.buffers.x])?;
        self.residual_pending = false;
        Ok(true)
    }

    /// Launches a hop kernel over the hidden state with `args` (device addresses).
    fn launch_hop(&self, f: &CudaFunction, args: &[&u64]) -> Result<()> {
        let n = self.dims.hidden as i32;
        let mut builder = self.stream.launch_builder(f);
        for a in args {
            builder.arg(*a);
        }
        builder.arg(&n);
        let blocks = (self.dims.hidden as u32).div_ceil(HOP_THREADS);
        let config = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (HOP_THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the arguments match hop_to_host / hop_from_host in decode.cu; the device
        // buffers and both halves of the mapped buffer hold `hidden` f32.
        unsafe { builder.launch(config) }.map_err(cuda_err)?;
        Ok(())
    }
}
