//! The launches of one fused decode layer and of the head: each of `kernels/decode.cu`'s
//! kernels and Candle's MMVQ products on the decoder's preallocated buffers.

use super::{cuda_err, Ffn, FusedDecoder, HostExperts, LayerAddresses, Matrix, ATTENTION_THREADS};
use crate::cuda::slot_kernels;
use crate::executor::fused::reference::ATTENTION_CHUNK;
use crate::Result;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, LaunchConfig, PushKernelArg};
use std::ffi::c_void;

/// Threads of the whole-vector RMS norm kernel: Candle's choice for its rmsnorm kernel
/// (one warp under 1024 elements), so both add the squares in the same order.
fn norm_threads(n: usize) -> u32 {
    if n < 1024 {
        32
    } else {
        1024
    }
}

impl FusedDecoder {
    /// Launches the head: the final norm (adding the last layer's pending MLP output),
    /// then the output matrix into the logits. With `matvec_only` only the product.
    pub(super) fn enqueue_head(&self, head: &super::Head) -> Result<()> {
        let b = &self.buffers;
        if !self.matvec_only {
            let residual = if self.layers.is_empty() { 0 } else { b.down };
            self.norm(&self.kernels.add_rms_norm, b.x, residual, head.norm, b.h)?;
        }
        self.quantize(b.h, self.dims.hidden);
        self.matvec(&head.output, b.logits)
    }

    /// Launches layer `i`; `residual_pending`: the previous layer's MLP output in `down`
    /// is still to be added to `x` (the first norm adds it). Gemma 3's layers also
    /// normalize the attention and MLP outputs in place before they are added.
    /// `experts` computes the experts of a layer routed to host memory.
    pub(super) fn enqueue_layer(
        &self,
        i: usize,
        layer: &LayerAddresses,
        residual_pending: bool,
        experts: Option<&HostExperts<'_>>,
    ) -> Result<()> {
        let b = &self.buffers;
        let dims = self.dims;
        let full = !self.matvec_only;
        let exact = &self.kernels.add_rms_norm_exact;
        if full {
            self.norm(exact, b.x, if residual_pending { b.down } else { 0 }, layer.attn_norm, b.h)?;
        }
        self.quantize(b.h, dims.hidden);
        self.matvec(&layer.q, b.q)?;
        self.matvec(&layer.k, b.k)?;
        self.matvec(&layer.v, b.v)?;
        if full {
            self.qk_norm_rope_append(layer, i)?;
            self.attention(i)?;
        }
        self.quantize(b.attn, dims.heads * dims.head_dim);
        self.matvec(&layer.o, b.o)?;
        if full {
            if layer.post_attn_norm != 0 {
                self.norm(exact, b.o, 0, layer.post_attn_norm, b.o)?;
            }
            self.norm(exact, b.x, b.o, layer.ffn_norm, b.h)?;
        }
        self.quantize(b.h, dims.hidden);
        match &layer.ffn {
            Ffn::Dense { gate, up, down } => {
                self.matvec(gate, b.gate)?;
                self.matvec(up, b.up)?;
                if full {
                    self.activation()?;
                }
                self.quantize(b.act, dims.ffn);
                self.matvec(down, b.down)?;
            }
            Ffn::Routed(routed) => self.enqueue_routed(i, routed)?,
            Ffn::HostRouted(router) => {
                let experts = experts.ok_or_else(|| super::unsupported("no host computes this layer's experts"))?;
                self.host_routed_layer(i, router, experts)?;
            }
        }
        if full && layer.post_ffn_norm != 0 {
            self.norm(exact, b.down, 0, layer.post_ffn_norm, b.down)?;
        }
        Ok(())
    }

    /// Launches `f` with its arguments in the order the kernels of decode.cu take them:
    /// device addresses, then integers, then floats.
    pub(super) fn launch(
        &self,
        f: &CudaFunction,
        grid: (u32, u32),
        block: u32,
        args: &[&u64],
        ints: &[i32],
        floats: &[f32],
    ) -> Result<()> {
        let mut builder = self.stream.launch_builder(f);
        for a in args {
            builder.arg(*a);
        }
        for i in ints {
            builder.arg(i);
        }
        for x in floats {
            builder.arg(x);
        }
        let config = LaunchConfig { grid_dim: (grid.0, grid.1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: the argument lists match the kernels' signatures in decode.cu, and every
        // address is a live device buffer of the size the kernel reads or writes.
        unsafe { builder.launch(config) }.map_err(cuda_err)?;
        Ok(())
    }

    /// `x += residual` (unless 0), `out = norm(x) · weight` (`1 + weight` for Gemma's
    /// stored `w`), by `kernel` (one of the two norms); `out` may be `x`.
    fn norm(&self, kernel: &CudaFunction, x: u64, residual: u64, weight: u64, out: u64) -> Result<()> {
        let d = self.dims;
        self.launch(
            kernel,
            (1, 1),
            norm_threads(d.hidden),
            &[&x, &residual, &weight, &out],
            &[d.hidden as i32, d.plus_one as i32],
            &[d.eps],
        )
    }

    fn quantize(&self, input: u64, k: usize) {
        // SAFETY: `input` holds `k` f32; the workspace was sized for the widest input.
        unsafe { slot_kernels::quantize_q8_1(&self.workspace, input, k, 1, self.stream_ptr()) }
    }

    pub(super) fn matvec(&self, m: &Matrix, out: u64) -> Result<()> {
        // SAFETY: the matrix is a resident QTensor of `rows × cols`; `out` holds `rows` f32.
        unsafe { slot_kernels::mmvq(&self.workspace, m.dtype, m.address, m.rows, m.cols, 1, out, self.stream_ptr()) }?;
        Ok(())
    }

    fn qk_norm_rope_append(&self, l: &LayerAddresses, layer: usize) -> Result<()> {
        let (b, d) = (&self.buffers, self.dims);
        let (cos, sin) = self.rope_of(layer);
        self.launch(
            &self.kernels.qk_norm_rope_append,
            ((d.heads + 2 * d.kv_heads) as u32, 1),
            (d.head_dim / 2) as u32,
            &[
                &b.q,
                &b.k,
                &b.v,
                &l.q_bias,
                &l.k_bias,
                &l.v_bias,
                &l.q_norm,
                &l.k_norm,
                &cos,
                &sin,
                &b.pos_address,
                &b.q_rot,
                &b.kv_table_address,
            ],
            &[
                layer as i32,
                d.heads as i32,
                d.kv_heads as i32,
                d.head_dim as i32,
                d.capacity as i32,
                d.interleaved as i32,
                d.plus_one as i32,
            ],
            &[d.eps],
        )
    }

    fn attention(&self, layer: usize) -> Result<()> {
        let (b, d) = (&self.buffers, self.dims);
        let (chunk, chunks) = (ATTENTION_CHUNK as i32, d.chunks as i32);
        let window = self.windows.get(layer).copied().unwrap_or(0);
        self.launch(
            &self.kernels.attention_partial,
            (d.heads as u32, d.chunks as u32),
            ATTENTION_THREADS,
            &[&b.q_rot, &b.kv_table_address, &b.pos_address, &b.part_max, &b.part_sum, &b.part_acc],
            &[
                layer as i32,
                d.heads as i32,
                d.kv_heads as i32,
                d.head_dim as i32,
                d.capacity as i32,
                chunk,
                chunks,
                window,
            ],
            &[d.attention_scale],
        )?;
        self.launch(
            &self.kernels.attention_combine,
            (d.heads as u32, 1),
            d.head_dim as u32,
            &[&b.part_max, &b.part_sum, &b.part_acc, &b.pos_address, &b.attn],
            &[d.head_dim as i32, chunk, chunks, window],
            &[],
        )
    }

    /// The MLP's activation: SwiGLU, or GeLU-tanh times up for Gemma 3.
    fn activation(&self) -> Result<()> {
        let b = &self.buffers;
        let n = self.dims.ffn;
        let kernel = if self.dims.gelu { &self.kernels.gelu_mul } else { &self.kernels.silu_mul_exact };
        self.launch(kernel, (n.div_ceil(256) as u32, 1), 256, &[&b.gate, &b.up, &b.act], &[n as i32], &[])
    }

    pub(super) fn stream_ptr(&self) -> *mut c_void {
        self.stream.cu_stream() as *mut c_void
    }
}
