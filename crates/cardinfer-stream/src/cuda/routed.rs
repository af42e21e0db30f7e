//! Routed experts of one decode token computed by the device in a few launches, for models
//! whose experts live in host memory with a device cache ([`crate::executor::expert_cache`]):
//! one launch per projection covers every expert the device computes (`kernels/moe.cu`'s
//! `moe_mmvq_*`, Candle's MMVQ core with each expert's address read from a table), and one
//! launch adds the device's and the CPU's outputs in ascending expert order. An expert
//! used to take ~10 launches of its own.
//!
//! Each expert's product is Candle's batch-1 MMVQ on that expert, so the device's experts
//! give the bits of the resident plain path.

use crate::cuda::slots::SlotArena;
use crate::Result;
use candle_core::quantized::GgmlDType;
use candle_core::Tensor;

/// The matrices of one expert the device computes: gate, up and down addresses.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the CUDA kernels' launches only
pub(crate) struct DeviceExpert {
    pub(crate) matrices: [u64; 3],
}

/// What a layer's experts share: sizes and each projection's quantization.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by the CUDA kernels' launches only
pub(crate) struct ExpertShape {
    pub(crate) hidden: usize,
    pub(crate) ffn: usize,
    pub(crate) dtypes: [GgmlDType; 3],
}

/// The unweighted outputs `[experts, hidden]` of `experts` on the one token `x`
/// (`[1, hidden]` f32 on the device), with the arena's kernel scratch; `fused_ops`: the
/// activation as one kernel ([`crate::cuda::fused_ops::silu_mul`]). `None` where the
/// kernels do not apply (not CUDA, scratch too small, a type without a kernel).
pub(crate) fn expert_outputs(
    x: &Tensor,
    experts: &[DeviceExpert],
    shape: ExpertShape,
    arena: &SlotArena,
    fused_ops: bool,
) -> Result<Option<Tensor>> {
    imp::expert_outputs(x, experts, shape, arena, fused_ops)
}

/// `Σ_c rows[order[c]] · weights[c]` over `c` ascending, as `[1, hidden]`: `rows` is
/// `[m, hidden]` f32 on the device.
pub(crate) fn weighted_sum(rows: &Tensor, order: &[u32], weights: &[f32]) -> Result<Tensor> {
    imp::weighted_sum(rows, order, weights)
}

/// The quantizations `kernels/moe.cu` has an expert product for.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // launched by the CUDA build only
pub(crate) const PRODUCT_TYPES: [GgmlDType; 10] = {
    use GgmlDType::*;
    [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K]
};

/// The expert-product kernel of `kernels/moe.cu` for weights of `dtype`, if there is one.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // launched by the CUDA build only
pub(crate) fn product_kernel(dtype: GgmlDType) -> Option<&'static str> {
    use GgmlDType::*;
    Some(match dtype {
        Q4_0 => "moe_mmvq_q4_0",
        Q4_1 => "moe_mmvq_q4_1",
        Q5_0 => "moe_mmvq_q5_0",
        Q5_1 => "moe_mmvq_q5_1",
        Q8_0 => "moe_mmvq_q8_0",
        Q2K => "moe_mmvq_q2_k",
        Q3K => "moe_mmvq_q3_k",
        Q4K => "moe_mmvq_q4_k",
        Q5K => "moe_mmvq_q5_k",
        Q6K => "moe_mmvq_q6_k",
        _ => return None,
    })
}

#[cfg(feature = "cuda")]
mod imp {
    use super::product_kernel;
    use super::{DeviceExpert, ExpertShape};
    use crate::cuda::sizes::{mmvq_scratch_bytes, pad, MATRIX_ROW_PADDING, QK8_1};
    use crate::cuda::slot_kernels::{quantize_q8_1, supports, Workspace};
    use crate::cuda::slots::SlotArena;
    use crate::Result;
    use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaView};
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::quantized::GgmlDType;
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, Layout, Shape, Tensor};
    use std::ffi::c_void;

    /// The f32 input of an op, which must be contiguous (`what` names the op).
    fn contiguous_input<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> candle_core::Result<CudaView<'a, f32>> {
        let Some((o1, o2)) = l.contiguous_offsets() else { candle_core::bail!("{what}: input must be contiguous") };
        Ok(s.as_cuda_slice::<f32>()?.slice(o1..o2))
    }

    /// Kernel `name` of `kernels/moe.cu` on `device`.
    fn moe_kernel(device: &CudaDevice, name: &str) -> candle_core::Result<CudaFunction> {
        let module = (crate::cuda::ptx::MOE_MODULE, crate::cuda::ptx::MOE);
        Ok(device.get_or_load_custom_func(name, module.0, module.1)?.into_cuda_function())
    }

    /// One projection of every listed expert: `out[e] = W_e · input[e]` (`input` one row
    /// shared by all, or one row per expert).
    struct Products<'a> {
        matrices: Vec<u64>,
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        workspace: &'a Workspace,
    }

    impl CustomOp1 for Products<'_> {
        fn name(&self) -> &'static str {
            "cardinfer-expert-products"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("expert products run on CUDA only")
        }

        fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let n = self.matrices.len();
            let (inputs, k) = layout.shape().dims2()?;
            let input = contiguous_input(storage, layout, "expert products")?;
            let name = product_kernel(self.dtype);
            let Some(name) = name.filter(|_| k == self.cols && (inputs == 1 || inputs == n) && n > 0) else {
                candle_core::bail!("expert products: {n} {:?} experts with input {:?}", self.dtype, layout.dims());
            };
            let ws = self.workspace;
            let device = &storage.device;
            let stream = device.cuda_stream();
            let input_address = input.device_ptr(&stream).0;
            // SAFETY: the input holds `inputs × k` f32; the caller checked the scratch size.
            unsafe { quantize_q8_1(ws, input_address, k, inputs, stream.cu_stream() as *mut c_void) };
            let table = stream.clone_htod(&self.matrices).map_err(candle_core::Error::wrap)?;
            let ids: Vec<i32> = (0..n as i32).collect();
            let ids = stream.clone_htod(&ids).map_err(candle_core::Error::wrap)?;
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f32>(n * self.rows)? };
            let f = moe_kernel(device, name)?;
            let stride = if inputs == 1 { 0 } else { (pad(k, MATRIX_ROW_PADDING) / QK8_1) as i32 };
            let (cols, rows, scratch) = (k as i32, self.rows as i32, ws.scratch_address());
            let mut builder = stream.launch_builder(&f);
            builder.arg(&table).arg(&ids).arg(&scratch).arg(&out).arg(&cols).arg(&rows).arg(&stride);
            let config =
                LaunchConfig { grid_dim: (self.rows as u32, n as u32, 1), block_dim: (32, 4, 1), shared_mem_bytes: 0 };
            // SAFETY: the arguments match moe_mmvq_*'s signature: `n` addresses of
            // `rows × k` matrices of `dtype`, ids below `n`, the quantized input rows in the
            // scratch and `n × rows` f32 out.
            unsafe { builder.launch(config) }.map_err(candle_core::Error::wrap)?;
            Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), Shape::from((n, self.rows))))
        }
    }

    pub(super) fn expert_outputs(
        x: &Tensor,
        experts: &[DeviceExpert],
        shape: ExpertShape,
        arena: &SlotArena,
        fused_ops: bool,
    ) -> Result<Option<Tensor>> {
        let Some(ws) = arena.workspace() else { return Ok(None) };
        let n = experts.len();
        let width = shape.hidden.max(shape.ffn);
        let fits = mmvq_scratch_bytes(n, width) <= ws.scratch_bytes();
        let known = shape.dtypes.iter().all(|&d| product_kernel(d).is_some());
        let whole = supports(shape.dtypes[0], shape.hidden) && supports(shape.dtypes[2], shape.ffn);
        if !x.device().is_cuda() || n == 0 || !fits || !known || !whole {
            return Ok(None);
        }
        let x = x.contiguous()?;
        let products = |p: usize, rows: usize, cols: usize| Products {
            matrices: experts.iter().map(|e| e.matrices[p]).collect(),
            dtype: shape.dtypes[p],
            rows,
            cols,
            workspace: ws,
        };
        let gate = x.apply_op1_no_bwd(&products(0, shape.ffn, shape.hidden))?;
        let up = x.apply_op1_no_bwd(&products(1, shape.ffn, shape.hidden))?;
        let act = crate::cuda::fused_ops::silu_mul(&gate, &up, fused_ops)?;
        Ok(Some(act.apply_op1_no_bwd(&products(2, shape.hidden, shape.ffn))?))
    }

    /// Kernel `moe_weighted_sum` over chosen rows.
    struct WeightedSum<'a> {
        order: &'a [u32],
        weights: &'a [f32],
    }

    impl CustomOp1 for WeightedSum<'_> {
        fn name(&self) -> &'static str {
            "cardinfer-expert-sum"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("the expert sum runs on CUDA only")
        }

        fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let (m, n) = layout.shape().dims2()?;
            let k = self.order.len();
            let rows = contiguous_input(storage, layout, "expert sum")?;
            if k == 0 || self.weights.len() != k || self.order.iter().any(|&r| r as usize >= m) {
                candle_core::bail!("expert sum: {k} terms over {m} rows");
            }
            let device = &storage.device;
            let stream = device.cuda_stream();
            let order: Vec<i32> = self.order.iter().map(|&r| r as i32).collect();
            let order = stream.clone_htod(&order).map_err(candle_core::Error::wrap)?;
            let weights = stream.clone_htod(self.weights).map_err(candle_core::Error::wrap)?;
            // SAFETY: every element is written by the kernel below.
            let out = unsafe { device.alloc::<f32>(n)? };
            let f = moe_kernel(device, "moe_weighted_sum")?;
            let (n_i, k_i) = (n as i32, k as i32);
            let mut builder = stream.launch_builder(&f);
            builder.arg(&rows).arg(&order).arg(&weights).arg(&out).arg(&n_i).arg(&k_i);
            let config =
                LaunchConfig { grid_dim: (n.div_ceil(256) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
            // SAFETY: `rows` holds m × n f32 and every order entry is below m; `out` holds n.
            unsafe { builder.launch(config) }.map_err(candle_core::Error::wrap)?;
            Ok((CudaStorage::wrap_cuda_slice(out, device.clone()), Shape::from((1, n))))
        }
    }

    pub(super) fn weighted_sum(rows: &Tensor, order: &[u32], weights: &[f32]) -> Result<Tensor> {
        Ok(rows.contiguous()?.apply_op1_no_bwd(&WeightedSum { order, weights })?)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::{DeviceExpert, ExpertShape};
    use crate::cuda::slots::SlotArena;
    use crate::{Result, StreamError};
    use candle_core::Tensor;

    pub(super) fn expert_outputs(
        _: &Tensor,
        _: &[DeviceExpert],
        _: ExpertShape,
        _: &SlotArena,
        _: bool,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    pub(super) fn weighted_sum(_: &Tensor, _: &[u32], _: &[f32]) -> Result<Tensor> {
        Err(StreamError::Internal("the expert sum needs the `cuda` feature".into()))
    }
}
