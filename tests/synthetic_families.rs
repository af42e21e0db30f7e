//! Every family on tiny synthetic models written by the test itself, in both formats
//! and every storage type: the GGUF (F32) run equals the safetensors run (which proves
//! the llama q/k permutation + interleaved RoPE path), and each quant type stays close
//! to the f32 logits and generates end to end.

mod common;

use candle_core::Device;
use cardinfer_core::{Family, ModelSpec, StorageType};
use cardinfer_quant::synth::SyntheticModel;
use cardinfer_quant::Checkpoint;
use cardinfer_stream::{GenerateOptions, Logits, ResidentModel, Session, TextModel};

fn spec(family: Family, tied: bool) -> ModelSpec {
    ModelSpec { eos_token_ids: vec![299], ..common::tiny_spec(family, tied, 2, 512) }
}

/// A fresh directory for a test's files, removed when dropped.
fn work_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("cardinfer-synth-{tag}-")).tempdir().unwrap()
}

/// Every position's logits with an f32 KV cache: the formats are compared, and an f16
/// cache would round values that differ in their last f32 bit (RoPE's two layouts) apart.
fn logits_of(path: &std::path::Path, ids: &[u32]) -> (ResidentModel, Vec<Vec<f32>>) {
    let ckpt = Checkpoint::open(path).unwrap();
    let model = ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).unwrap();
    let mut kv = cardinfer_stream::KvCache::new(model.spec().num_layers, cardinfer_core::KvType::F32);
    let logits = model.forward(ids, &mut kv, Logits::All).unwrap().to_vec2().unwrap();
    (model, logits)
}

const PROMPT: [u32; 12] = [5, 17, 250, 3, 99, 42, 7, 7, 128, 64, 1, 200];

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Pearson correlation of all logits.
fn correlation(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let xs: Vec<f64> = a.iter().flatten().map(|&v| v as f64).collect();
    let ys: Vec<f64> = b.iter().flatten().map(|&v| v as f64).collect();
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let vy: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn gguf_f32_equals_safetensors_for_every_family() {
    let cases = [
        (Family::Llama, false),
        (Family::Mistral, true),
        (Family::Qwen2, false),
        (Family::Qwen3, true),
        (Family::Qwen3Moe, false),
        (Family::Mixtral, false),
    ];
    for (family, tied) in cases {
        let dir = work_dir(&format!("{family:?}"));
        let synth = SyntheticModel::random(&spec(family, tied), 42);
        synth.write_hf(&dir.path().join("hf")).unwrap();
        synth.write_gguf(&dir.path().join("f32.gguf"), StorageType::F32, StorageType::F32).unwrap();
        let (hf_model, hf) = logits_of(&dir.path().join("hf"), &PROMPT);
        let (gguf_model, gguf) = logits_of(&dir.path().join("f32.gguf"), &PROMPT);
        assert_eq!(gguf_model.spec().rope_style, synth.gguf_spec().rope_style);
        assert_eq!(hf_model.spec().tie_word_embeddings, tied);
        assert_eq!(hf_model.spec().moe, synth.spec.moe, "{family:?}: experts read back from config.json");
        assert_eq!(gguf_model.spec().moe, synth.spec.moe, "{family:?}: experts read back from GGUF metadata");
        let diff = max_abs_diff(&hf, &gguf);
        assert!(diff < 1e-4, "{family:?}: GGUF vs safetensors max |Δ| = {diff}");
    }
}

/// Minimum correlation with the f32 logits per storage type, on random weights (which
/// are harder to quantize than trained ones); measured values are printed by the test.
const QUANT_FLOOR: [(StorageType, f64); 12] = [
    (StorageType::F16, 0.9999),
    (StorageType::BF16, 0.999),
    (StorageType::Q8_0, 0.998),
    (StorageType::Q6_K, 0.995),
    (StorageType::Q5_K, 0.985),
    (StorageType::Q5_1, 0.985),
    (StorageType::Q5_0, 0.985),
    (StorageType::Q4_K, 0.95),
    (StorageType::Q4_1, 0.95),
    (StorageType::Q4_0, 0.94),
    (StorageType::Q3_K, 0.8),
    (StorageType::Q2_K, 0.6),
];

#[test]
fn every_storage_type_runs_and_stays_close_to_f32() {
    let dir = work_dir("quant");
    let synth = SyntheticModel::random(&spec(Family::Qwen3, false), 7);
    synth.write_gguf(&dir.path().join("f32.gguf"), StorageType::F32, StorageType::F32).unwrap();
    let (_, reference) = logits_of(&dir.path().join("f32.gguf"), &PROMPT);
    let mut report = Vec::new();
    for (storage, floor) in QUANT_FLOOR {
        let path = dir.path().join(format!("{}.gguf", storage.name()));
        // Embedding and head in Q8_0 for quantized mixes, as llama.cpp files often do.
        let embed = if storage.is_quantized() { StorageType::Q8_0 } else { storage };
        synth.write_gguf(&path, storage, embed).unwrap();
        let (model, logits) = logits_of(&path, &PROMPT);
        assert!(logits.iter().flatten().all(|v| v.is_finite()), "{storage:?}: non-finite logits");
        let agreement = correlation(&reference, &logits);
        report.push(format!("{storage:?}: r = {agreement:.4}"));
        assert!(agreement >= floor, "{storage:?}: correlation {agreement} < {floor}");

        // End to end through the generator: deterministic greedy output.
        let options = GenerateOptions { max_tokens: 8, ..Default::default() };
        let first = Session::new(&model, None).generate(&PROMPT, &options, |_| {}).unwrap();
        let second = Session::new(&model, None).generate(&PROMPT, &options, |_| {}).unwrap();
        assert_eq!(first.generated_ids, second.generated_ids);
        assert!(!first.generated_ids.is_empty());
    }
    eprintln!("{}", report.join(", "));
}

#[test]
fn kv_cache_decode_equals_full_forward() {
    let dir = work_dir("kv");
    let synth = SyntheticModel::random(&spec(Family::Llama, false), 3);
    synth.write_gguf(&dir.path().join("m.gguf"), StorageType::F32, StorageType::F32).unwrap();
    let (model, _) = logits_of(&dir.path().join("m.gguf"), &PROMPT);
    let layers = model.spec().num_layers;
    for kv_type in [cardinfer_core::KvType::F32, cardinfer_core::KvType::F16, cardinfer_core::KvType::Q8_0] {
        let cache = || cardinfer_stream::KvCache::new(layers, kv_type);
        let full = model.forward(&PROMPT, &mut cache(), Logits::All).unwrap().to_vec2::<f32>().unwrap();
        // Prefill half, then one token at a time: each position's logits match the full pass
        // with the same cache type (a pass reads its own keys as stored, too).
        let mut kv = cache();
        let mut rows = model.forward(&PROMPT[..6], &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap();
        for &t in &PROMPT[6..] {
            rows.extend(model.forward(&[t], &mut kv, Logits::Last).unwrap().to_vec2::<f32>().unwrap());
        }
        let diff = max_abs_diff(&full, &rows);
        assert!(diff < 1e-4, "{kv_type} KV: incremental decode differs by {diff}");
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = work_dir("errors");
    let synth = SyntheticModel::random(&spec(Family::Qwen2, false), 1);
    synth.write_gguf(&dir.path().join("m.gguf"), StorageType::Q8_0, StorageType::Q8_0).unwrap();
    let ckpt = Checkpoint::open(dir.path().join("m.gguf")).unwrap();
    let model = ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).unwrap();

    let mut session = Session::new(&model, None);
    let too_long = vec![1u32; 513];
    let err = session.generate(&too_long, &GenerateOptions::default(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("513") && err.contains("512"), "{err}");
    let err = session.generate(&[300], &GenerateOptions::default(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("300"), "{err}");

    // A truncated copy of the model fails to open, naming the file.
    let bytes = std::fs::read(dir.path().join("m.gguf")).unwrap();
    std::fs::write(dir.path().join("cut.gguf"), &bytes[..bytes.len() - 100]).unwrap();
    let err = Checkpoint::open(dir.path().join("cut.gguf")).unwrap_err().to_string();
    assert!(err.contains("cut.gguf") && err.contains("truncated"), "{err}");

    // An unknown architecture names itself.
    let mut hf = dir.path().join("hf");
    synth.write_hf(&hf).unwrap();
    let config = std::fs::read_to_string(hf.join("config.json")).unwrap().replace("\"qwen2\"", "\"gpt_bigcode\"");
    std::fs::write(hf.join("config.json"), config).unwrap();
    let err = Checkpoint::open(&hf).unwrap_err().to_string();
    assert!(err.contains("gpt_bigcode"), "{err}");

    // A missing tensor names the tensor.
    hf = dir.path().join("hf2");
    let mut partial = synth.clone();
    partial.tensors.remove("model.layers.1.mlp.up_proj.weight");
    partial.write_hf(&hf).unwrap();
    let ckpt = Checkpoint::open(&hf).unwrap();
    let err = ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).unwrap_err().to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
}
