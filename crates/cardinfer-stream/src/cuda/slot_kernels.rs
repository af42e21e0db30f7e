//! Candle's quantized matmul kernels called on a raw device pointer: the weights of a
//! streamed block are used in place in their slot buffer.
//!
//! Candle's `QTensor` owns its device memory and cannot be built over existing bytes, so
//! a slot allocated once could not hold quantized weights through the public API. This
//! module launches the same kernels Candle's `QCudaStorage::fwd` uses (from
//! `candle_kernels::ffi`, as `candle-core/src/quantized/fast_mmvq.rs` and `fast_mmq.rs`
//! do) with the weight pointer inside a slot: MMVQ for at most 8 activation rows, MMQ
//! above. Same kernels, same arguments, so the result is bit-identical to the resident
//! path. Only f32 activations are handled (the executor's hidden states are f32).

use candle_core::cuda_backend::cudarc::driver::{result, sys, CudaSlice, DevicePtr};
use candle_core::quantized::GgmlDType;
use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, Layout, Result, Shape};
use std::ffi::c_void;

pub use crate::cuda::sizes::{kernel_workspace_bytes as workspace_bytes, supports_ggml as supports};
use crate::cuda::sizes::{mmq_scratch_bytes, mmvq_scratch_bytes, pad};
use crate::cuda::sizes::{MATRIX_ROW_PADDING, MMQ_FIXUP_BYTES, MMVQ_MAX_BATCH, QK8_1};

/// Device scratch for the kernels, allocated once.
pub struct Workspace {
    _scratch: CudaSlice<u8>,
    /// Device address of `scratch`, taken once: launches recorded into a CUDA graph must
    /// not touch Candle's event tracking.
    scratch_address: u64,
    scratch_bytes: usize,
    fixup: CudaSlice<u8>,
    device: CudaDevice,
    info: DeviceInfo,
}

#[derive(Clone, Copy)]
struct DeviceInfo {
    cc: i32,
    nsm: i32,
    smpbo: i64,
    warp_size: i32,
}

impl Workspace {
    /// Scratch for up to `max_cols` columns and `max_rows` activation rows.
    pub fn new(device: &CudaDevice, max_cols: usize, max_rows: usize) -> Result<Self> {
        let scratch_bytes = workspace_bytes(max_cols, max_rows) as usize - MMQ_FIXUP_BYTES;
        // SAFETY: scratch is written by the quantize kernels before it is read.
        let scratch = unsafe { device.alloc::<u8>(scratch_bytes)? };
        // SAFETY: MMQ's stream-k fixup buffer is written by the kernel before it is read.
        let fixup = unsafe { device.alloc::<u8>(MMQ_FIXUP_BYTES)? };
        let scratch_address = scratch.device_ptr(&device.cuda_stream()).0;
        Ok(Self {
            _scratch: scratch,
            scratch_address,
            scratch_bytes,
            fixup,
            device: device.clone(),
            info: device_info(device),
        })
    }

    /// Device address of the quantized activations (what [`quantize_q8_1`] writes).
    pub(crate) fn scratch_address(&self) -> u64 {
        self.scratch_address
    }

    /// Bytes of the quantized-activation scratch.
    pub(crate) fn scratch_bytes(&self) -> usize {
        self.scratch_bytes
    }
}

fn device_info(device: &CudaDevice) -> DeviceInfo {
    let cu_device = device.cuda_stream().context().cu_device();
    // SAFETY: plain attribute queries of a valid device.
    let attr = |a, default| unsafe { result::device::get_attribute(cu_device, a) }.unwrap_or(default);
    use sys::CUdevice_attribute as A;
    let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 8);
    let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0);
    DeviceInfo {
        cc: major * 100 + minor * 10,
        nsm: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 1),
        smpbo: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 49152) as i64,
        warp_size: attr(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE, 32),
    }
}

/// `x @ Wᵀ` for a quantized `W` of `rows × cols` at device address `weight`.
pub struct SlotMatMul<'a> {
    /// Device address of the weight's bytes (followed by zeroed row padding).
    pub weight: u64,
    /// The weight's quantization.
    pub dtype: GgmlDType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Scratch of the slot arena.
    pub workspace: &'a Workspace,
}

impl CustomOp1 for SlotMatMul<'_> {
    fn name(&self) -> &'static str {
        "cardinfer-slot-qmatmul"
    }

    fn cpu_fwd(&self, _storage: &CpuStorage, _layout: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("slot matmul runs on CUDA devices only")
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let (b_size, k) = match layout.shape().dims() {
            [b, m, k] => (b * m, *k),
            [b, k] => (*b, *k),
            dims => candle_core::bail!("slot matmul: unexpected input shape {dims:?}"),
        };
        if k != self.cols || !supports(self.dtype, k) || b_size == 0 {
            candle_core::bail!(
                "slot matmul: {:?} {}×{} with input {:?}",
                self.dtype,
                self.rows,
                self.cols,
                layout.dims()
            );
        }
        let Some((o1, o2)) = layout.contiguous_offsets() else {
            candle_core::bail!("slot matmul: input must be contiguous")
        };
        let ws = self.workspace;
        let stream = ws.device.cuda_stream();
        let stream_ptr = stream.cu_stream() as *mut c_void;
        let input = storage.as_cuda_slice::<f32>()?.slice(o1..o2);
        let input_ptr = input.device_ptr(&stream).0 as *const c_void;
        // SAFETY: every element is written by the kernel below.
        let out = unsafe { ws.device.alloc::<f32>(self.rows * b_size)? };
        let out_ptr = out.device_ptr(&stream).0 as *mut c_void;
        let scratch = ws.scratch_address as *mut c_void;
        let weight = self.weight as *const c_void;
        let k_padded = pad(k, MATRIX_ROW_PADDING);
        if b_size <= MMVQ_MAX_BATCH {
            if mmvq_scratch_bytes(b_size, k) > ws.scratch_bytes {
                candle_core::bail!("slot matmul: scratch too small for {b_size}×{k}");
            }
            // SAFETY: pointers are live device buffers of the sizes checked above; all
            // launches are on the device's stream, in order.
            unsafe {
                quantize_q8_1(ws, input_ptr as u64, k, b_size, stream_ptr);
                mmvq(ws, self.dtype, self.weight, self.rows, k, b_size, out_ptr as u64, stream_ptr)?;
            }
        } else {
            let k_mmq = pad(k_padded, 4 * QK8_1);
            if mmq_scratch_bytes(b_size, k) > ws.scratch_bytes {
                candle_core::bail!("slot matmul: scratch too small for {b_size}×{k}");
            }
            let (quantize, launch) = mmq_launchers(self.dtype).ok_or_else(|| unsupported(self.dtype))?;
            let fixup = ws.fixup.device_ptr(&stream).0 as *mut c_void;
            let qk = self.dtype.block_size();
            let di = ws.info;
            // SAFETY: as above.
            unsafe {
                quantize(
                    input_ptr,
                    std::ptr::null(),
                    scratch,
                    0,
                    k as i64,
                    k as i64,
                    0,
                    0,
                    k_mmq as i64,
                    b_size as i64,
                    1,
                    1,
                    stream_ptr,
                );
                launch(
                    fixup,
                    weight,
                    scratch,
                    out_ptr,
                    k as i64,
                    self.rows as i64,
                    b_size as i64,
                    (k / qk) as i64,
                    self.rows as i64,
                    di.cc,
                    di.nsm,
                    di.smpbo,
                    di.warp_size,
                    stream_ptr,
                );
            }
        }
        let mut shape = layout.dims().to_vec();
        shape.pop();
        shape.push(self.rows);
        Ok((CudaStorage::wrap_cuda_slice(out, ws.device.clone()), shape.into()))
    }
}

/// Quantizes `b_size` rows of `k` f32 values at device address `input` into Q8_1 blocks in
/// the workspace's scratch, as MMVQ reads them.
///
/// # Safety
/// `input` must hold `b_size × k` f32 on the device, the scratch must be large enough
/// ([`mmvq_scratch_bytes`]), and `stream` must be a stream of the workspace's context.
pub(crate) unsafe fn quantize_q8_1(ws: &Workspace, input: u64, k: usize, b_size: usize, stream: *mut c_void) {
    let scratch = ws.scratch_address as *mut c_void;
    let k_padded = pad(k, MATRIX_ROW_PADDING);
    candle_kernels::ffi::launch_mmvq_gguf_quantize_q8_1_f32(
        input as *const c_void,
        scratch,
        k as i32,
        k_padded as i32,
        b_size as i32,
        stream,
    );
}

/// `out = W · x` for the `b_size` Q8_1 rows in the scratch ([`quantize_q8_1`]) and the
/// quantized `rows × cols` matrix at device address `weight`; `out` gets `b_size × rows` f32.
///
/// # Safety
/// As [`quantize_q8_1`]; `weight` must hold the whole matrix (plus row padding) and `out`
/// `b_size × rows` f32.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn mmvq(
    ws: &Workspace,
    dtype: GgmlDType,
    weight: u64,
    rows: usize,
    cols: usize,
    b_size: usize,
    out: u64,
    stream: *mut c_void,
) -> Result<()> {
    let launch = mmvq_launcher(dtype).ok_or_else(|| unsupported(dtype))?;
    let scratch = ws.scratch_address as *const c_void;
    let k_padded = pad(cols, MATRIX_ROW_PADDING);
    launch(
        weight as *const c_void,
        scratch,
        out as *mut c_void,
        cols as i32,
        rows as i32,
        (k_padded / QK8_1) as i32,
        rows as i32,
        b_size as i32,
        stream,
    );
    Ok(())
}

fn unsupported(dtype: GgmlDType) -> candle_core::Error {
    candle_core::Error::Msg(format!("slot matmul: no kernel for {dtype:?}"))
}

type MmvqLauncher =
    unsafe extern "C" fn(*const c_void, *const c_void, *mut c_void, i32, i32, i32, i32, i32, *mut c_void);

fn mmvq_launcher(dtype: GgmlDType) -> Option<MmvqLauncher> {
    use candle_kernels::ffi;
    Some(match dtype {
        GgmlDType::Q4_0 => ffi::launch_mmvq_gguf_q4_0_f32_plain,
        GgmlDType::Q4_1 => ffi::launch_mmvq_gguf_q4_1_f32_plain,
        GgmlDType::Q5_0 => ffi::launch_mmvq_gguf_q5_0_f32_plain,
        GgmlDType::Q5_1 => ffi::launch_mmvq_gguf_q5_1_f32_plain,
        GgmlDType::Q8_0 => ffi::launch_mmvq_gguf_q8_0_f32_plain,
        GgmlDType::Q2K => ffi::launch_mmvq_gguf_q2_k_f32_plain,
        GgmlDType::Q3K => ffi::launch_mmvq_gguf_q3_k_f32_plain,
        GgmlDType::Q4K => ffi::launch_mmvq_gguf_q4_k_f32_plain,
        GgmlDType::Q5K => ffi::launch_mmvq_gguf_q5_k_f32_plain,
        GgmlDType::Q6K => ffi::launch_mmvq_gguf_q6_k_f32_plain,
        _ => return None,
    })
}

type QuantizeLauncher = unsafe extern "C" fn(
    *const c_void,
    *const i32,
    *mut c_void,
    i32,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    *mut c_void,
);
type MmqLauncher = unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    *const c_void,
    *mut c_void,
    i64,
    i64,
    i64,
    i64,
    i64,
    i32,
    i32,
    i64,
    i32,
    *mut c_void,
);

/// The activation quantizer (its scale layout depends on the weight type) and the MMQ
/// kernel, as Candle pairs them.
fn mmq_launchers(dtype: GgmlDType) -> Option<(QuantizeLauncher, MmqLauncher)> {
    use candle_kernels::ffi;
    let (d4, ds4, d2s6): (QuantizeLauncher, QuantizeLauncher, QuantizeLauncher) =
        (ffi::launch_mmq_quantize_q8_1_D4, ffi::launch_mmq_quantize_q8_1_DS4, ffi::launch_mmq_quantize_q8_1_D2S6);
    Some(match dtype {
        GgmlDType::Q4_0 => (ds4, ffi::launch_mmq_gguf_q4_0),
        GgmlDType::Q4_1 => (ds4, ffi::launch_mmq_gguf_q4_1),
        GgmlDType::Q5_0 => (d4, ffi::launch_mmq_gguf_q5_0),
        GgmlDType::Q5_1 => (ds4, ffi::launch_mmq_gguf_q5_1),
        GgmlDType::Q8_0 => (d4, ffi::launch_mmq_gguf_q8_0),
        GgmlDType::Q2K => (d2s6, ffi::launch_mmq_gguf_q2_k),
        GgmlDType::Q3K => (d4, ffi::launch_mmq_gguf_q3_k),
        GgmlDType::Q4K => (ds4, ffi::launch_mmq_gguf_q4_k),
        GgmlDType::Q5K => (ds4, ffi::launch_mmq_gguf_q5_k),
        GgmlDType::Q6K => (d4, ffi::launch_mmq_gguf_q6_k),
        _ => return None,
    })
}
