use super::reference::{self, AttentionShape, ATTENTION_CHUNK};
use super::DecodePath;
use crate::model::family::Decoder;
use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::names::Role;
use crate::model::weights::{BlockWeights, Weight};
use crate::test_util::values;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use cardinfer_core::{BlockId, Family, KvType, ModelSpec, RopeStyle};
use std::collections::HashMap;
use std::sync::Arc;

fn spec(family: Family, style: RopeStyle) -> ModelSpec {
    ModelSpec {
        family,
        vocab_size: 16,
        hidden_size: 64,
        intermediate_size: 96,
        num_layers: 1,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 32,
        rms_norm_eps: 1e-6,
        rope_theta: 1e4,
        rope_scaling: None,
        rope_style: style,
        context_length: 512,
        tie_word_embeddings: false,
        qkv_bias: family == Family::Qwen2,
        qk_norm: family == Family::Qwen3,
        bos_token_id: None,
        eos_token_ids: vec![],
        moe: None,
        gemma: None,
    }
}

fn layer(spec: &ModelSpec, quant: Option<GgmlDType>) -> BlockWeights {
    let (h, d, ff) = (spec.hidden_size, spec.head_dim, spec.intermediate_size);
    let (q, kv) = (spec.num_heads * d, spec.num_kv_heads * d);
    let mut seed = 0;
    let mut next = |n: usize, scale: f32| {
        seed += 1;
        values(n, seed, scale)
    };
    let mut weights = HashMap::new();
    let mut matrix = |role, rows: usize, cols: usize, weights: &mut HashMap<Role, Weight>| {
        let t = Tensor::from_vec(next(rows * cols, 0.3), (rows, cols), &Device::Cpu).unwrap();
        let w = match quant {
            Some(dtype) => Weight::Quantized(Arc::new(QTensor::quantize(&t, dtype).unwrap())),
            None => Weight::Dense(t),
        };
        weights.insert(role, w);
    };
    matrix(Role::AttnQ, q, h, &mut weights);
    matrix(Role::AttnK, kv, h, &mut weights);
    matrix(Role::AttnV, kv, h, &mut weights);
    matrix(Role::AttnOutput, h, q, &mut weights);
    matrix(Role::FfnGate, ff, h, &mut weights);
    matrix(Role::FfnUp, ff, h, &mut weights);
    matrix(Role::FfnDown, h, ff, &mut weights);
    crate::test_util::insert_vectors(spec, &mut weights);
    BlockWeights::from_parts(BlockId::Layer(0), weights)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A prompt of `prompt` tokens through the plain block, then one token through the plain
/// block and through the reference composition; returns (plain, fused) outputs.
fn decode_once(
    spec: &ModelSpec,
    weights: &BlockWeights,
    prompt: usize,
    kv_type: KvType,
) -> (Vec<f32>, Vec<f32>, KvSlot, KvSlot) {
    let decoder = Decoder::new(spec.clone(), None);
    let h = spec.hidden_size;
    let x = Tensor::from_vec(values(prompt * h, 7, 1.0), (1, prompt, h), &Device::Cpu).unwrap();
    let mut plain_kv = KvSlot::with_capacity(spec.context_length, kv_type);
    decoder.block(0, weights, &x, &mut plain_kv, 0).unwrap();
    let mut fused_kv = plain_kv.clone();
    let token = values(h, 9, 1.0);
    let x1 = Tensor::from_vec(token.clone(), (1, 1, h), &Device::Cpu).unwrap();
    let plain = decoder.block(0, weights, &x1, &mut plain_kv, prompt).unwrap().flatten_all().unwrap();
    let mut fused = token;
    reference::decode_block(&decoder, weights, &mut fused, &mut fused_kv).unwrap();
    (plain.to_vec1::<f32>().unwrap(), fused, plain_kv, fused_kv)
}

#[test]
fn fused_decode_step_equals_the_plain_block_for_every_family() {
    let cases = [
        (Family::Llama, RopeStyle::Interleaved),
        (Family::Mistral, RopeStyle::Half),
        (Family::Qwen2, RopeStyle::Half),
        (Family::Qwen3, RopeStyle::Half),
    ];
    for (family, style) in cases {
        let spec = spec(family, style);
        let kinds =
            [(None, KvType::F32), (Some(GgmlDType::Q8_0), KvType::F32), (None, KvType::F16), (None, KvType::Q8_0)];
        for (quant, kv_type) in kinds {
            let weights = layer(&spec, quant);
            let (plain, fused, plain_kv, fused_kv) = decode_once(&spec, &weights, 5, kv_type);
            let diff = max_abs_diff(&plain, &fused);
            assert!(diff < 1e-4, "{family:?} {quant:?} {kv_type}: max difference {diff}");
            assert_eq!(fused_kv.len(), 6);
            // The key written by the fused step is the one the plain block appended, in
            // the cache's type.
            let (pk, _) = plain_kv.buffers().unwrap();
            let (fk, _) = fused_kv.buffers().unwrap();
            assert_eq!(fk.dtype(), crate::model::kv_cache::storage_dtype(kv_type));
            let at = |t: &Tensor| {
                t.narrow(2, 5, 1)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
            };
            assert!(max_abs_diff(&at(pk), &at(fk)) < 1e-5, "{family:?} {kv_type}: new key differs");
        }
    }
}

/// A one-layer Gemma 3 spec whose layer is sliding (`window`) or global (`None`), with
/// RoPE bases, a RoPE factor and a score scale that all differ from the defaults, so a
/// composition taking the wrong one fails.
fn gemma_spec(window: Option<usize>) -> ModelSpec {
    let mut spec = spec(Family::Gemma3, RopeStyle::Half);
    spec.qk_norm = true;
    spec.rope_theta = 1e6;
    spec.gemma = Some(Box::new(cardinfer_core::GemmaSpec {
        sliding_window: window.unwrap_or(4),
        global_layers: vec![window.is_none()],
        local_rope_theta: 1e4,
        global_rope_factor: 8.0,
        query_pre_attn_scalar: 24.0,
        norm_plus_one: true,
    }));
    spec
}

#[test]
fn fused_gemma_step_equals_the_plain_block_on_local_and_global_layers() {
    // Prompts shorter than, equal to and longer than the window, on both layer kinds;
    // the long one also spans several attention chunks with the first ones outside.
    for (window, prompt) in [(Some(4), 2), (Some(4), 4), (Some(4), 9), (None, 9), (Some(80), 2 * ATTENTION_CHUNK + 17)]
    {
        let spec = gemma_spec(window);
        for quant in [None, Some(GgmlDType::Q8_0)] {
            let weights = layer(&spec, quant);
            let (plain, fused, _, fused_kv) = decode_once(&spec, &weights, prompt, KvType::F16);
            let diff = max_abs_diff(&plain, &fused);
            assert!(diff < 1e-4, "window {window:?}, prompt {prompt}, {quant:?}: max difference {diff}");
            assert_eq!(fused_kv.len(), prompt + 1);
        }
    }
}

#[test]
fn gemma_reference_differs_from_the_plain_block_without_its_window() {
    // The same weights as a global layer give another output once the prompt passes the
    // window: the test above would notice a composition that ignores it.
    let (local, global) = (gemma_spec(Some(4)), gemma_spec(None));
    let weights = layer(&local, None);
    let (windowed, _, _, _) = decode_once(&local, &weights, 9, KvType::F32);
    let (_, full, _, _) = decode_once(&global, &weights, 9, KvType::F32);
    assert!(max_abs_diff(&windowed, &full) > 1e-3);
}

#[test]
fn fused_decode_step_spans_several_attention_chunks() {
    let spec = spec(Family::Qwen3, RopeStyle::Half);
    let weights = layer(&spec, None);
    let prompt = 2 * ATTENTION_CHUNK + 17;
    let (plain, fused, _, _) = decode_once(&spec, &weights, prompt, KvType::Q8_0);
    let diff = max_abs_diff(&plain, &fused);
    assert!(diff < 1e-4, "max difference {diff} over {prompt} positions");
}

#[test]
fn chunked_attention_equals_one_softmax() {
    let shape = AttentionShape { heads: 4, kv_heads: 2, head_dim: 8, capacity: 300 };
    let len = 290;
    let q = values(4 * 8, 1, 1.0);
    let k = values(2 * 300 * 8, 2, 1.0);
    let v = values(2 * 300 * 8, 3, 1.0);
    let mut out = vec![0f32; 32];
    reference::decode_attention(&q, &k, &v, shape, len, &mut out);
    for h in 0..4 {
        let kh = h / 2;
        let qh = &q[h * 8..h * 8 + 8];
        let scores: Vec<f32> = (0..len)
            .map(|t| qh.iter().zip(&k[(kh * 300 + t) * 8..][..8]).map(|(a, b)| a * b).sum::<f32>() / 8f32.sqrt())
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        for i in 0..8 {
            let want: f32 = (0..len).map(|t| exp[t] / sum * v[(kh * 300 + t) * 8 + i]).sum();
            assert!((out[h * 8 + i] - want).abs() < 1e-5, "head {h} dim {i}: {} vs {want}", out[h * 8 + i]);
        }
    }
}

#[test]
fn add_rms_norm_adds_the_residual_first() {
    let mut x = vec![1.0, 2.0, 3.0, 4.0];
    let mut out = vec![0.0; 4];
    reference::add_rms_norm(&mut x, Some(&[1.0, 0.0, -1.0, 0.0]), &[1.0, 1.0, 1.0, 2.0], 0.0, &mut out);
    assert_eq!(x, vec![2.0, 2.0, 2.0, 4.0]);
    let rms = ((4.0 + 4.0 + 4.0 + 16.0) / 4.0f32).sqrt();
    let want = [2.0 / rms, 2.0 / rms, 2.0 / rms, 8.0 / rms];
    assert!(max_abs_diff(&out, &want) < 1e-6, "{out:?}");
}

#[test]
fn decode_path_parses_and_names_what_it_accepts() {
    assert_eq!("plain".parse::<DecodePath>().unwrap(), DecodePath::Plain);
    assert_eq!("fused".parse::<DecodePath>().unwrap(), DecodePath::Fused);
    let err = "fast".parse::<DecodePath>().unwrap_err().to_string();
    assert!(err.contains("fast") && err.contains("plain"), "{err}");
}

#[test]
fn scale_mask_softmax_reference_equals_the_composition() {
    use crate::cuda::fused_ops::masked_softmax;
    // [batch 1, kv_heads 2, group 3 × seq 4, total 9]: a chunk of 4 at position 5.
    let (kv_heads, group, seq, pos, total) = (2, 3, 4, 5, 9);
    let scores = Tensor::from_vec(
        values(kv_heads * group * seq * total, 5, 3.0),
        (1, kv_heads, group * seq, total),
        &Device::Cpu,
    )
    .unwrap();
    let decoder = Decoder::new(spec(Family::Qwen3, RopeStyle::Half), None);
    let mask = || decoder.rope().causal_mask(group, seq, pos, total, &Device::Cpu);
    let probs = masked_softmax(&scores, 0.125, seq, pos, false, mask).unwrap();
    let probs = probs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scores = scores.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for row in 0..kv_heads * group * seq {
        let want = reference::scale_mask_softmax(&scores[row * total..][..total], pos + row % seq, 0.125);
        let got = &probs[row * total..][..total];
        assert!(max_abs_diff(got, &want) < 1e-6, "row {row}: {got:?} vs {want:?}");
        assert!(got[pos + row % seq + 1..].iter().all(|&p| p == 0.0), "row {row} sees a later key");
    }
}

#[test]
fn silu_mul_equals_the_composition() {
    use crate::cuda::fused_ops;
    let gate = Tensor::from_vec(values(64, 11, 4.0), (2, 32), &Device::Cpu).unwrap();
    let up = Tensor::from_vec(values(64, 12, 4.0), (2, 32), &Device::Cpu).unwrap();
    let got = fused_ops::silu_mul(&gate, &up, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut want = vec![0f32; 64];
    let (g, u) =
        (gate.flatten_all().unwrap().to_vec1::<f32>().unwrap(), up.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    reference::silu_mul(&g, &u, &mut want);
    assert!(max_abs_diff(&got, &want) < 1e-6);
}
