//! What a fused decoder allocates once: its kernels and the activations of one token.

use super::{cuda_err, Dims};
use crate::Result;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaSlice, DevicePtr};
use candle_core::CudaDevice;
use cardinfer_core::KvType;

/// The decode kernels of `kernels/decode.cu`, loaded once per device.
pub(super) struct Kernels {
    /// The head's norm (Candle's rmsnorm bits, as the plain head computes it).
    pub(super) add_rms_norm: CudaFunction,
    /// The layers' norms (bits the CPU reproduces: [`crate::cpu::exact`]).
    pub(super) add_rms_norm_exact: CudaFunction,
    pub(super) qk_norm_rope_append: CudaFunction,
    pub(super) attention_partial: CudaFunction,
    pub(super) attention_combine: CudaFunction,
    pub(super) silu_mul_exact: CudaFunction,
    /// Gemma 3's GeLU-tanh times up.
    pub(super) gelu_mul: CudaFunction,
}

/// The activations of one token, allocated once: a few MiB, most of it the attention
/// partials (`heads × ceil(context / 64) × (head_dim + 2)` f32; 13 MiB for the 14B at a
/// 40960-token context). The planner does not count them apart; every CUDA plan reserves
/// the slot kernels' scratch (17–25 MiB for these models), which a fully resident run
/// leaves unused and which has held them in every run so far — a model with many more
/// heads at a long context would need them counted.
pub(super) struct Buffers {
    /// Owns the memory the addresses below point into.
    _slices: Vec<CudaSlice<f32>>,
    _pos: CudaSlice<u32>,
    _kv_table: CudaSlice<u64>,
    pub(super) kv_table_address: u64,
    pub(super) x: u64,
    pub(super) h: u64,
    pub(super) q: u64,
    pub(super) k: u64,
    pub(super) v: u64,
    pub(super) q_rot: u64,
    pub(super) attn: u64,
    pub(super) o: u64,
    pub(super) gate: u64,
    pub(super) up: u64,
    pub(super) act: u64,
    pub(super) down: u64,
    pub(super) logits: u64,
    pub(super) part_max: u64,
    pub(super) part_sum: u64,
    pub(super) part_acc: u64,
    pub(super) pos_address: u64,
}

/// Loads the decode kernels (compiled once per device by the driver from the PTX), those
/// that write and read the KV cache for caches stored as `kv_type`.
pub(super) fn load_kernels(device: &CudaDevice, kv_type: KvType) -> Result<Kernels> {
    use crate::cuda::ptx::{DECODE, MODULE};
    let f = |name: &str| -> Result<CudaFunction> {
        Ok(device.get_or_load_custom_func(name, MODULE, DECODE)?.into_cuda_function())
    };
    let suffix = match kv_type {
        KvType::F32 => "",
        KvType::Q8_0 => "_q8_0",
        _ => "_f16",
    };
    Ok(Kernels {
        add_rms_norm: f("add_rms_norm")?,
        add_rms_norm_exact: f("add_rms_norm_exact")?,
        qk_norm_rope_append: f(&format!("qk_norm_rope_append{suffix}"))?,
        attention_partial: f(&format!("decode_attention_partial{suffix}"))?,
        attention_combine: f("decode_attention_combine")?,
        silu_mul_exact: f("silu_mul_exact")?,
        gelu_mul: f("gelu_mul")?,
    })
}

impl Buffers {
    pub(super) fn new(device: &CudaDevice, d: &Dims, q_dim: usize, kv_dim: usize, layers: usize) -> Result<Self> {
        let stream = device.cuda_stream();
        let partials = d.heads * d.chunks;
        let sizes = [
            d.hidden,
            d.hidden,
            q_dim,
            kv_dim,
            kv_dim,
            q_dim,
            q_dim,
            d.hidden,
            d.ffn,
            d.ffn,
            d.ffn,
            d.hidden,
            d.vocab,
            partials,
            partials,
            partials * d.head_dim,
        ];
        let slices =
            sizes.iter().map(|&n| stream.alloc_zeros::<f32>(n).map_err(cuda_err)).collect::<Result<Vec<_>>>()?;
        let pos = stream.alloc_zeros::<u32>(1).map_err(cuda_err)?;
        let a: Vec<u64> = slices.iter().map(|s| s.device_ptr(&stream).0).collect();
        let pos_address = pos.device_ptr(&stream).0;
        let kv_table = stream.alloc_zeros::<u64>(2 * layers).map_err(cuda_err)?;
        let kv_table_address = kv_table.device_ptr(&stream).0;
        Ok(Self {
            x: a[0],
            h: a[1],
            q: a[2],
            k: a[3],
            v: a[4],
            q_rot: a[5],
            attn: a[6],
            o: a[7],
            gate: a[8],
            up: a[9],
            act: a[10],
            down: a[11],
            logits: a[12],
            part_max: a[13],
            part_sum: a[14],
            part_acc: a[15],
            pos_address,
            _slices: slices,
            _pos: pos,
            _kv_table: kv_table,
            kv_table_address,
        })
    }
}
