//! Measuring, on the device, the memory a run takes besides its weights and KV cache:
//! the runtime itself (cuBLAS workspace, loaded kernel modules, the matmul kernels'
//! scratch) and the activations of a prefill chunk at the model's real size, so a plan
//! reserves what the device actually uses instead of an estimate. A budget is what the
//! whole process may use on the device, not only the weights.

use crate::device::device_memory;
use crate::model::family::Decoder;
use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::names::Role;
use crate::model::weights::{BlockWeights, Weight};
use crate::Result;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{Device, Tensor};
use cardinfer_core::{BlockId, ModelSpec, StorageType};
use cardinfer_quant::candle::{ggml_dtype, quantize};
use std::collections::HashMap;
use std::sync::Arc;

/// Device memory a run needs besides weights and KV cache, measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceOverheads {
    /// Held for good once the kernels ran (cuBLAS, modules, matmul scratch).
    pub runtime_bytes: u64,
    /// The peak of one block's activations over a whole context of prefill chunks and
    /// a decode step, beyond its weights and its own KV cache.
    pub workspace_bytes: u64,
}

/// Runs one tiny block and head of `spec`'s family on `device` (a prefill of 16 tokens,
/// which takes the batched matmul path, and one decode step, so every kernel family and
/// cuBLAS are initialized) and returns how much free device memory that cost once its
/// tensors are dropped. `None` where the device cannot report memory (CPU).
pub fn measure_runtime_bytes(spec: &ModelSpec, device: &Device, storage: StorageType) -> Result<Option<u64>> {
    let Some((free_before, _)) = device_memory(device) else { return Ok(None) };
    run_tiny_block(spec, device, storage)?;
    device.synchronize()?;
    let free_after = device_memory(device).map_or(free_before, |(f, _)| f);
    Ok(Some(free_before.saturating_sub(free_after)))
}

/// [`measure_runtime_bytes`], then one transformer block of `spec`'s real size (zeroed
/// weights in `storage`) run over the whole context in chunks of `chunk` tokens and one
/// decode step, sampling free memory after each: the workspace is the lowest free memory
/// seen, less the block's own weights and its KV cache at full context (preallocated and
/// stored as `kv_type`, as decoding keeps it: the attention's f32 copy of a layer's keys
/// and values is workspace). `None` on the CPU.
pub fn measure_device_overheads(
    spec: &ModelSpec,
    device: &Device,
    storage: StorageType,
    chunk: usize,
    kv_type: cardinfer_core::KvType,
) -> Result<Option<DeviceOverheads>> {
    // A routed layer's workspace is bounded by a dense MLP's of the same widths (each expert
    // computes only its tokens' rows): the probe runs the dense block.
    let spec = &ModelSpec { moe: None, ..spec.clone() };
    let Some(runtime_bytes) = measure_runtime_bytes(spec, device, storage)? else { return Ok(None) };
    let Some((free_start, _)) = device_memory(device) else { return Ok(None) };
    let workspace_bytes = {
        let decoder = Decoder::new(spec.clone(), None);
        let layer = zero_layer(spec, device, storage)?;
        device.synchronize()?;
        let free_loaded = device_memory(device).map_or(free_start, |(f, _)| f);
        let mut lowest = free_loaded;
        // The cache as decoding keeps it: the stored cache is subtracted below, what the
        // attention reads it back into is workspace. (A growing f32 slot, measured before,
        // hands the attention its own buffers and hid that copy: a 4B within 500 MiB with a
        // q8_0 cache held 518 MiB on an H100.)
        let mut slot = KvSlot::with_capacity(spec.context_length.max(1), kv_type);
        let chunk = chunk.clamp(1, spec.context_length.max(1));
        let h = spec.hidden_size;
        let mut pos = 0;
        while pos < spec.context_length {
            let len = chunk.min(spec.context_length - pos);
            let x = Tensor::zeros((1, len, h), candle_core::DType::F32, device)?;
            decoder.block(0, &layer, &x, &mut slot, pos)?.sum_all()?.to_vec0::<f32>()?;
            lowest = lowest.min(device_memory(device).map_or(lowest, |(f, _)| f));
            pos += len;
        }
        let kv_bytes = cardinfer_plan::KvPosition::of(spec, kv_type).bytes * spec.context_length as u64;
        let logits = 2 * 4 * spec.vocab_size as u64;
        free_loaded.saturating_sub(lowest).saturating_sub(kv_bytes) + logits
    };
    device.synchronize()?;
    Ok(Some(DeviceOverheads { runtime_bytes, workspace_bytes }))
}

/// A transformer block of `spec`'s size with zeroed quantized matrices (valid blocks,
/// all scales 0) and unit vectors, on `device`.
pub fn zero_layer(spec: &ModelSpec, device: &Device, storage: StorageType) -> Result<BlockWeights> {
    let storage = if storage.is_quantized() { storage } else { StorageType::Q8_0 };
    // Rows a type's blocks do not divide fall back as the files do: to Q8_0, else f32.
    let matrix = |rows: usize, cols: usize| -> Result<Weight> {
        let fits = |s: StorageType| cols.is_multiple_of(s.block_elems());
        let Some(storage) = [storage, StorageType::Q8_0].into_iter().find(|s| fits(*s)) else {
            return Ok(Weight::Dense(Tensor::zeros((rows, cols), candle_core::DType::F32, device)?));
        };
        let len = storage.tensor_bytes("workspace probe", cols, rows)? as usize;
        let q: QTensor = qtensor_from_ggml(ggml_dtype(storage), &vec![0u8; len], vec![rows, cols], device)?;
        Ok(Weight::Quantized(Arc::new(q)))
    };
    let vector = |n: usize| -> Result<Weight> { Ok(Weight::Dense(Tensor::ones(n, candle_core::DType::F32, device)?)) };
    layer_of(spec, matrix, vector)
}

/// A layer of `spec`'s shape (every role any family uses) from a matrix and a vector
/// maker.
fn layer_of(
    spec: &ModelSpec,
    matrix: impl Fn(usize, usize) -> Result<Weight>,
    vector: impl Fn(usize) -> Result<Weight>,
) -> Result<BlockWeights> {
    let (h, hd, ff) = (spec.hidden_size, spec.head_dim, spec.intermediate_size);
    let (q, kv) = (spec.num_heads * hd, spec.num_kv_heads * hd);
    let mut layer = HashMap::new();
    for (role, w) in [
        (Role::AttnNorm, vector(h)?),
        (Role::AttnQ, matrix(q, h)?),
        (Role::AttnK, matrix(kv, h)?),
        (Role::AttnV, matrix(kv, h)?),
        (Role::AttnQBias, vector(q)?),
        (Role::AttnKBias, vector(kv)?),
        (Role::AttnVBias, vector(kv)?),
        (Role::AttnQNorm, vector(hd)?),
        (Role::AttnKNorm, vector(hd)?),
        (Role::AttnOutput, matrix(h, q)?),
        (Role::FfnNorm, vector(h)?),
        (Role::PostAttnNorm, vector(h)?),
        (Role::PostFfnNorm, vector(h)?),
        (Role::FfnGate, matrix(ff, h)?),
        (Role::FfnUp, matrix(ff, h)?),
        (Role::FfnDown, matrix(h, ff)?),
    ] {
        layer.insert(role, w);
    }
    Ok(BlockWeights::from_parts(BlockId::Layer(0), layer))
}

/// One tiny block and head of `spec`'s family in `storage`, prefill then decode.
fn run_tiny_block(spec: &ModelSpec, device: &Device, storage: StorageType) -> Result<()> {
    {
        let tiny = ModelSpec {
            vocab_size: 64,
            hidden_size: 256,
            intermediate_size: 512,
            num_layers: 1,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 64,
            context_length: 32,
            moe: None,
            gemma: None,
            ..spec.clone()
        };
        let decoder = Decoder::new(tiny.clone(), None);
        let matrix = |rows: usize, cols: usize| -> Result<Weight> {
            let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.1).collect();
            let storage = if storage.is_quantized() { storage } else { StorageType::Q8_0 };
            let bytes = quantize("warmup", &values, &[rows, cols], storage)?;
            let q: QTensor = qtensor_from_ggml(ggml_dtype(storage), &bytes, vec![rows, cols], device)?;
            Ok(Weight::Quantized(Arc::new(q)))
        };
        let vector =
            |n: usize| -> Result<Weight> { Ok(Weight::Dense(Tensor::ones(n, candle_core::DType::F32, device)?)) };
        let h = tiny.hidden_size;
        let layer = layer_of(&tiny, matrix, vector)?;
        let mut head = HashMap::new();
        head.insert(Role::OutputNorm, vector(h)?);
        head.insert(Role::Output, matrix(64, h)?);
        let head = BlockWeights::from_parts(BlockId::Head, head);
        let mut slot = KvSlot::default();
        for (pos, len) in [(0usize, 16usize), (16, 1)] {
            let x = Tensor::ones((1, len, h), candle_core::DType::F32, device)?;
            let y = decoder.block(0, &layer, &x, &mut slot, pos)?;
            let logits = decoder.head(&head, &y)?;
            logits.flatten_all()?.argmax(0)?.to_vec0::<u32>()?;
        }
        device.synchronize()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardinfer_core::{Family, RopeStyle};

    #[test]
    fn the_tiny_block_runs_for_every_family_and_the_cpu_reports_nothing() {
        for family in [Family::Llama, Family::Mistral, Family::Qwen2, Family::Qwen3, Family::Gemma3] {
            let spec = ModelSpec {
                family,
                vocab_size: 10,
                hidden_size: 8,
                intermediate_size: 8,
                num_layers: 1,
                num_heads: 1,
                num_kv_heads: 1,
                head_dim: 8,
                rms_norm_eps: 1e-6,
                rope_theta: 1e4,
                rope_scaling: None,
                rope_style: RopeStyle::Half,
                context_length: 8,
                tie_word_embeddings: false,
                qkv_bias: family == Family::Qwen2,
                qk_norm: family == Family::Qwen3,
                bos_token_id: None,
                eos_token_ids: vec![],
                moe: None,
                // Gemma's layers have the norms of the attention and MLP outputs too.
                gemma: (family == Family::Gemma3).then(|| {
                    Box::new(cardinfer_core::GemmaSpec {
                        sliding_window: 4,
                        global_layers: vec![false],
                        local_rope_theta: 1e4,
                        global_rope_factor: 1.0,
                        query_pre_attn_scalar: 8.0,
                        norm_plus_one: false,
                    })
                }),
            };
            for storage in [StorageType::Q4_K, StorageType::Q8_0, StorageType::F16] {
                run_tiny_block(&spec, &Device::Cpu, storage).unwrap();
            }
            assert_eq!(measure_runtime_bytes(&spec, &Device::Cpu, StorageType::Q4_K).unwrap(), None);
            assert_eq!(
                measure_device_overheads(&spec, &Device::Cpu, StorageType::Q4_K, 4, cardinfer_core::KvType::F16)
                    .unwrap(),
                None
            );
            // The real-size block runs on the CPU too (its memory is just not measurable).
            let layer = zero_layer(&spec, &Device::Cpu, StorageType::Q8_0).unwrap();
            let x = Tensor::zeros((1, 3, spec.hidden_size), candle_core::DType::F32, &Device::Cpu).unwrap();
            let y = Decoder::new(spec.clone(), None).block(0, &layer, &x, &mut KvSlot::default(), 0).unwrap();
            assert_eq!(y.dims(), &[1, 3, spec.hidden_size]);
        }
    }
}
