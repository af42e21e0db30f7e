//! Measuring the device memory the runtime itself takes (cuBLAS workspace, loaded kernel
//! modules, the memory pool's rounding), so a plan can reserve it: a budget is what the
//! whole process may use on the device, not only the weights.

use crate::device::device_memory;
use crate::family::Decoder;
use crate::kv_cache::KvSlot;
use crate::layer_stream::LayerStream;
use crate::names::Role;
use crate::weights::{BlockWeights, Weight};
use crate::Result;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::{Device, Tensor};
use cardinfer_core::{BlockId, ModelSpec, StorageType};
use cardinfer_quant::candle::{ggml_dtype, quantize};
use std::collections::HashMap;
use std::sync::Arc;

/// Runs one tiny block and head of `spec`'s family on `device` (a prefill of 8 tokens and
/// one decode step, so every kernel family and cuBLAS are initialized) and returns how
/// much free device memory that cost once its tensors are dropped. `None` where the device
/// cannot report memory (CPU).
pub fn measure_runtime_bytes(spec: &ModelSpec, device: &Device, storage: StorageType) -> Result<Option<u64>> {
    let Some((free_before, _)) = device_memory(device) else { return Ok(None) };
    run_tiny_block(spec, device, storage)?;
    device.synchronize()?;
    let free_after = device_memory(device).map_or(free_before, |(f, _)| f);
    Ok(Some(free_before.saturating_sub(free_after)))
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
            context_length: 16,
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
        let (h, q, kv, ff) = (256, 256, 128, 512);
        let mut layer = HashMap::new();
        for (role, w) in [
            (Role::AttnNorm, vector(h)?),
            (Role::AttnQ, matrix(q, h)?),
            (Role::AttnK, matrix(kv, h)?),
            (Role::AttnV, matrix(kv, h)?),
            (Role::AttnQBias, vector(q)?),
            (Role::AttnKBias, vector(kv)?),
            (Role::AttnVBias, vector(kv)?),
            (Role::AttnQNorm, vector(64)?),
            (Role::AttnKNorm, vector(64)?),
            (Role::AttnOutput, matrix(h, q)?),
            (Role::FfnNorm, vector(h)?),
            (Role::FfnGate, matrix(ff, h)?),
            (Role::FfnUp, matrix(ff, h)?),
            (Role::FfnDown, matrix(h, ff)?),
        ] {
            layer.insert(role, w);
        }
        let layer = BlockWeights::from_parts(BlockId::Layer(0), layer);
        let mut head = HashMap::new();
        head.insert(Role::OutputNorm, vector(h)?);
        head.insert(Role::Output, matrix(64, h)?);
        let head = BlockWeights::from_parts(BlockId::Head, head);
        let mut slot = KvSlot::default();
        for (pos, len) in [(0usize, 8usize), (8, 1)] {
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
        for family in [Family::Llama, Family::Mistral, Family::Qwen2, Family::Qwen3] {
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
            };
            for storage in [StorageType::Q4_K, StorageType::Q8_0, StorageType::F16] {
                run_tiny_block(&spec, &Device::Cpu, storage).unwrap();
            }
            assert_eq!(measure_runtime_bytes(&spec, &Device::Cpu, StorageType::Q4_K).unwrap(), None);
        }
    }
}
