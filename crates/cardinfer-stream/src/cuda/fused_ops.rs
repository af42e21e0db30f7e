//! Fused operations of the plain (per-block) path, which runs prefill chunks and every
//! pass of streamed models: each gives the same bits as the Candle composition it
//! replaces, in one kernel on CUDA. Elsewhere, or when switched off
//! (`CARDINFER_DECODE=plain`), the composition itself runs.

use crate::Result;
use candle_core::Tensor;
use candle_nn::ops::{silu, softmax_last_dim};

/// Attention probabilities of a prefill chunk: `softmax(scores · scale + causal mask)`.
/// `scores` is `[batch, kv_heads, group · seq, total]`; row `r` of a KV head is the query
/// at position `pos + r % seq`, which sees keys `0..=pos + r % seq`. `mask` builds the
/// additive mask for the composition (`[group · seq, total]`).
pub fn masked_softmax(
    scores: &Tensor,
    scale: f64,
    seq: usize,
    pos: usize,
    fused: bool,
    mask: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if kernel_applies(fused, scores) {
        return Ok(scores.contiguous()?.apply_op1_no_bwd(&cuda::ScaleMaskSoftmax { scale: scale as f32, seq, pos })?);
    }
    let _ = (fused, seq, pos);
    Ok(softmax_last_dim(&(scores * scale)?.broadcast_add(&mask()?)?)?)
}

/// RoPE of `x` in the projection's layout `[batch, seq, heads, head_dim]` (per-head norms
/// already applied), returned in attention's layout `[batch, heads, seq, head_dim]`:
/// one kernel on CUDA instead of a transposing copy and the rotation. `None` where the
/// kernel does not apply (the caller transposes and rotates).
pub fn rope_heads(x: &Tensor, cos: &Tensor, sin: &Tensor, interleaved: bool, fused: bool) -> Result<Option<Tensor>> {
    #[cfg(feature = "cuda")]
    if kernel_applies(fused, x) {
        let op = cuda::RopeTranspose { interleaved };
        return Ok(Some(x.contiguous()?.apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &op)?));
    }
    let _ = (x, cos, sin, interleaved, fused);
    Ok(None)
}

/// `silu(gate) · up`.
pub fn silu_mul(gate: &Tensor, up: &Tensor, fused: bool) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if kernel_applies(fused, gate) && gate.shape() == up.shape() {
        return Ok(gate.contiguous()?.apply_op2_no_bwd(&up.contiguous()?, &cuda::SiluMul)?);
    }
    let _ = fused;
    Ok((silu(gate)? * up)?)
}

/// Whether the one-kernel version runs for `x`: switched on, on CUDA, f32 (the kernels'
/// type).
#[cfg(feature = "cuda")]
fn kernel_applies(fused: bool, x: &Tensor) -> bool {
    fused && x.device().is_cuda() && x.dtype() == candle_core::DType::F32
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::cuda_backend::cudarc::driver::{
        CudaFunction, CudaSlice, CudaView, LaunchArgs, LaunchConfig, PushKernelArg,
    };
    use candle_core::{CpuStorage, CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape};

    use crate::cuda::ptx::{DECODE, MODULE};

    fn contiguous<'a>(s: &'a CudaStorage, l: &Layout) -> candle_core::Result<CudaView<'a, f32>> {
        let Some((o1, o2)) = l.contiguous_offsets() else { candle_core::bail!("fused op: input must be contiguous") };
        Ok(s.as_cuda_slice::<f32>()?.slice(o1..o2))
    }

    /// Kernel `name` of `kernels/decode.cu` and a new output buffer of `len` f32 for it.
    fn prepare(device: &CudaDevice, name: &str, len: usize) -> candle_core::Result<(CudaFunction, CudaSlice<f32>)> {
        // SAFETY: every element is written by the kernel (each kernel writes its whole output).
        let dst = unsafe { device.alloc::<f32>(len)? };
        Ok((device.get_or_load_custom_func(name, MODULE, DECODE)?.into_cuda_function(), dst))
    }

    /// Launches a kernel whose arguments `builder` holds on `grid × block` threads.
    fn launch(mut builder: LaunchArgs<'_>, name: &str, (grid, block): (usize, u32)) -> candle_core::Result<()> {
        let config = LaunchConfig { grid_dim: (grid as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the callers push the arguments of the kernel's signature in decode.cu, on
        // buffers of the sizes it reads and writes.
        unsafe { builder.launch(config) }
            .map_err(|e| candle_core::Error::Msg(format!("fused kernel `{name}`: {e}")))?;
        Ok(())
    }

    /// Kernel `scale_mask_softmax`.
    pub struct ScaleMaskSoftmax {
        pub scale: f32,
        pub seq: usize,
        pub pos: usize,
    }

    impl CustomOp1 for ScaleMaskSoftmax {
        fn name(&self) -> &'static str {
            "cardinfer-scale-mask-softmax"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("scale-mask-softmax runs on CUDA only (the CPU uses the composition)")
        }

        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let src = contiguous(s, l)?;
            let ncols = *l.dims().last().unwrap_or(&1);
            let len = l.shape().elem_count();
            let (ncols_i, seq, pos) = (ncols as i32, self.seq as i32, self.pos as i32);
            // One warp per row, as Candle's softmax.
            let (func, dst) = prepare(&s.device, "scale_mask_softmax", len)?;
            let stream = s.device.cuda_stream();
            let mut b = stream.launch_builder(&func);
            b.arg(&src).arg(&dst).arg(&ncols_i).arg(&seq).arg(&pos).arg(&self.scale);
            launch(b, "scale_mask_softmax", (len / ncols.max(1), 32))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, s.device.clone()), l.shape().clone()))
        }
    }

    /// Kernel `silu_mul`.
    pub struct SiluMul;

    impl CustomOp2 for SiluMul {
        fn name(&self) -> &'static str {
            "cardinfer-silu-mul"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("silu-mul runs on CUDA only (the CPU uses the composition)")
        }

        fn cuda_fwd(
            &self,
            g: &CudaStorage,
            gl: &Layout,
            u: &CudaStorage,
            ul: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (gate, up) = (contiguous(g, gl)?, contiguous(u, ul)?);
            let n = gl.shape().elem_count();
            let n_i = n as i32;
            let (func, dst) = prepare(&g.device, "silu_mul", n)?;
            let stream = g.device.cuda_stream();
            let mut b = stream.launch_builder(&func);
            b.arg(&gate).arg(&up).arg(&dst).arg(&n_i);
            launch(b, "silu_mul", (n.div_ceil(256), 256))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, g.device.clone()), gl.shape().clone()))
        }
    }

    /// Kernel `rope_transpose`.
    pub struct RopeTranspose {
        pub interleaved: bool,
    }

    impl CustomOp3 for RopeTranspose {
        fn name(&self) -> &'static str {
            "cardinfer-rope-transpose"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("rope-transpose runs on CUDA only (the CPU uses the composition)")
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            xl: &Layout,
            c: &CudaStorage,
            cl: &Layout,
            s: &CudaStorage,
            sl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let [b, t, h, d] = *xl.dims() else { candle_core::bail!("rope-transpose: expected [b, t, h, d]") };
            if cl.dims() != [t, d / 2] || sl.dims() != [t, d / 2] {
                candle_core::bail!("rope-transpose: tables {:?} for {t} positions of {d}", cl.dims());
            }
            let (src, cos, sin) = (contiguous(x, xl)?, contiguous(c, cl)?, contiguous(s, sl)?);
            let n = xl.shape().elem_count();
            let dims = [b as i32, t as i32, h as i32, d as i32, i32::from(self.interleaved)];
            let (func, dst) = prepare(&x.device, "rope_transpose", n)?;
            let stream = x.device.cuda_stream();
            let mut args = stream.launch_builder(&func);
            args.arg(&src).arg(&cos).arg(&sin).arg(&dst);
            for v in &dims {
                args.arg(v);
            }
            launch(args, "rope_transpose", ((n / 2).div_ceil(256), 256))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, x.device.clone()), Shape::from((b, h, t, d))))
        }
    }
}
