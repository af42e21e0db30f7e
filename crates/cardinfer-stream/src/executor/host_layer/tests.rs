//! The exact layer against Candle's CPU block (same layer to quantization accuracy: the
//! exact path quantizes inputs to Q8_1, Candle's to Q8_K) and against itself (the same
//! bits whatever the cache's storage).

use super::exact::{decode_layer, supports};
use crate::model::family::Decoder;
use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::names::Role;
use crate::model::weights::{BlockWeights, Weight};
use crate::test_util::values;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use cardinfer_core::{BlockId, Family, KvType, ModelSpec, RopeStyle};
use std::collections::HashMap;
use std::sync::Arc;

fn spec(family: Family, style: RopeStyle, head_dim: usize) -> ModelSpec {
    ModelSpec {
        family,
        vocab_size: 16,
        hidden_size: 256,
        intermediate_size: 512,
        num_layers: 1,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim,
        rms_norm_eps: 1e-6,
        rope_theta: 1e4,
        rope_scaling: None,
        rope_style: style,
        context_length: 256,
        tie_word_embeddings: false,
        qkv_bias: family == Family::Qwen2,
        qk_norm: family == Family::Qwen3,
        bos_token_id: None,
        eos_token_ids: vec![],
        moe: None,
        gemma: None,
    }
}

/// A Q4_K_M-like layer: Q4_K matrices, Q6_K for v and down.
fn layer(spec: &ModelSpec) -> BlockWeights {
    let (h, d, ff) = (spec.hidden_size, spec.head_dim, spec.intermediate_size);
    let (q, kv) = (spec.num_heads * d, spec.num_kv_heads * d);
    let mut weights = HashMap::new();
    let matrices = [
        (Role::AttnQ, q, h, GgmlDType::Q4K),
        (Role::AttnK, kv, h, GgmlDType::Q4K),
        (Role::AttnV, kv, h, GgmlDType::Q6K),
        (Role::AttnOutput, h, q, GgmlDType::Q4K),
        (Role::FfnGate, ff, h, GgmlDType::Q4K),
        (Role::FfnUp, ff, h, GgmlDType::Q4K),
        (Role::FfnDown, h, ff, GgmlDType::Q6K),
    ];
    for (i, (role, rows, cols, dtype)) in matrices.into_iter().enumerate() {
        let t = Tensor::from_vec(values(rows * cols, i as u64 + 1, 0.1), (rows, cols), &Device::Cpu).unwrap();
        weights.insert(role, Weight::Quantized(Arc::new(QTensor::quantize(&t, dtype).unwrap())));
    }
    crate::test_util::insert_vectors(spec, &mut weights);
    BlockWeights::from_parts(BlockId::Layer(0), weights)
}

fn hidden(spec: &ModelSpec, seed: u64) -> Tensor {
    Tensor::from_vec(values(spec.hidden_size, seed, 1.0), (1, 1, spec.hidden_size), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Decode steps after a prompt (70 positions: two attention chunks): each exact step is
/// Candle's block to quantization accuracy, for every family's options and both RoPE
/// pairings; a growing cache and a preallocated one give the same bits.
#[test]
fn exact_layer_is_the_layer() {
    let cases =
        [(Family::Llama, RopeStyle::Interleaved), (Family::Qwen2, RopeStyle::Half), (Family::Qwen3, RopeStyle::Half)];
    let kv_types = [KvType::F32, KvType::F16, KvType::Q8_0];
    for ((family, style), kv_type) in cases.into_iter().zip(kv_types) {
        let spec = spec(family, style, 64);
        let weights = layer(&spec);
        assert!(supports(&spec, &weights));
        let decoder = Decoder::new(spec.clone(), None);
        let prompt = Tensor::from_vec(values(68 * 256, 7, 1.0), (1, 68, 256), &Device::Cpu).unwrap();
        let mut plain_kv = KvSlot::with_capacity(spec.context_length, kv_type);
        decoder.block(0, &weights, &prompt, &mut plain_kv, 0).unwrap();
        let mut exact_kv = plain_kv.clone();
        let mut growing_kv = KvSlot::new(kv_type);
        decoder.block(0, &weights, &prompt, &mut growing_kv, 0).unwrap();
        for step in 0..3 {
            let x = hidden(&spec, 20 + step);
            let pos = plain_kv.len();
            let plain = flat(&decoder.block(0, &weights, &x, &mut plain_kv, pos).unwrap());
            let exact = decode_layer(&decoder, 0, &weights, &x, &mut exact_kv).unwrap().unwrap();
            let grown = decode_layer(&decoder, 0, &weights, &x, &mut growing_kv).unwrap().unwrap();
            let exact = flat(&exact);
            assert_eq!(exact, flat(&grown), "{family:?} step {step}: cache storage changed the bits");
            let scale = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = plain.iter().zip(&exact).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            // Measured: 1.0–1.7% of the largest output (the inputs of the products are
            // quantized to Q8_1 here, to Q8_K by Candle's CPU path).
            assert!(diff < 3e-2 * scale, "{family:?} step {step}: max difference {diff} (scale {scale})");
            assert_eq!(exact_kv.len(), pos + 1);
            assert_eq!(growing_kv.len(), pos + 1);
        }
    }
}

#[test]
fn declines_what_the_kernels_do_not_take() {
    let narrow = ModelSpec { num_heads: 8, ..spec(Family::Qwen3, RopeStyle::Half, 32) };
    let weights = layer(&narrow);
    assert!(!supports(&narrow, &weights), "head size 32");
    let decoder = Decoder::new(narrow.clone(), None);
    let mut kv = KvSlot::default();
    assert!(decode_layer(&decoder, 0, &weights, &hidden(&narrow, 1), &mut kv).unwrap().is_none());
    assert!(kv.is_empty(), "nothing appended");
    let spec = spec(Family::Qwen3, RopeStyle::Half, 64);
    let mut parts: HashMap<Role, Weight> = layer(&spec).iter().map(|(r, w)| (r, w.clone())).collect();
    let t = Tensor::from_vec(values(256 * 256, 1, 0.1), (256, 256), &Device::Cpu).unwrap();
    parts.insert(Role::AttnQ, Weight::Quantized(Arc::new(QTensor::quantize(&t, GgmlDType::Q8_0).unwrap())));
    assert!(!supports(&spec, &BlockWeights::from_parts(BlockId::Layer(0), parts)), "a Q8_0 matrix");
}

/// Gemma 3 (a sliding-window layer of 40 positions and a global one, `1 + w` norms as
/// Hugging Face files store them, the norms of the attention and MLP outputs, GeLU, the
/// score scale): each exact step is the plain block to quantization accuracy, and
/// without the window the local layer's step is not.
#[test]
fn exact_gemma_layers_are_the_layers() {
    let gemma = cardinfer_core::GemmaSpec {
        sliding_window: 40,
        global_layers: vec![false, true],
        local_rope_theta: 1e4,
        global_rope_factor: 8.0,
        query_pre_attn_scalar: 48.0,
        norm_plus_one: true,
    };
    let spec = ModelSpec {
        family: Family::Gemma3,
        num_layers: 2,
        rope_theta: 1e6,
        qk_norm: true,
        gemma: Some(Box::new(gemma)),
        ..spec(Family::Gemma3, RopeStyle::Half, 64)
    };
    let weights = layer(&spec);
    assert!(supports(&spec, &weights));
    let decoder = Decoder::new(spec.clone(), None);
    let mut all_global = spec.clone();
    if let Some(g) = all_global.gemma.as_mut() {
        g.global_layers = vec![true, true];
    }
    let unwindowed = Decoder::new(all_global, None);
    for layer_index in [0, 1] {
        let prompt = Tensor::from_vec(values(68 * 256, 7, 1.0), (1, 68, 256), &Device::Cpu).unwrap();
        let mut plain_kv = KvSlot::with_capacity(spec.context_length, KvType::F16);
        decoder.block(layer_index, &weights, &prompt, &mut plain_kv, 0).unwrap();
        let (mut exact_kv, mut full_kv) = (plain_kv.clone(), plain_kv.clone());
        for step in 0..3 {
            let x = hidden(&spec, 20 + step);
            let pos = plain_kv.len();
            let plain = flat(&decoder.block(layer_index, &weights, &x, &mut plain_kv, pos).unwrap());
            let exact = flat(&decode_layer(&decoder, layer_index, &weights, &x, &mut exact_kv).unwrap().unwrap());
            let full = flat(&decode_layer(&unwindowed, layer_index, &weights, &x, &mut full_kv).unwrap().unwrap());
            let scale = plain.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = |a: &[f32]| plain.iter().zip(a).fold(0f32, |m, (p, e)| m.max((p - e).abs()));
            assert!(diff(&exact) < 3e-2 * scale, "layer {layer_index} step {step}: {} (scale {scale})", diff(&exact));
            if layer_index == 0 {
                assert!(diff(&full) > 5e-2 * scale, "the window matters: {} (scale {scale})", diff(&full));
            }
        }
    }
}
