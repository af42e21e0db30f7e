//! Mixture-of-experts models against Hugging Face transformers: the tiny Qwen3-MoE and
//! Mixtral checkpoints of `tests/fixtures/reference/hf` (float32, CPU), loaded from their
//! safetensors (one tensor per expert) and from a GGUF slice of them (experts stacked per
//! projection, as llama.cpp stores them); then streamed = resident, and bad input.

mod common;

use candle_core::Device;
use cardinfer_core::{Family, StorageType};
use cardinfer_quant::slice::{slice, SliceOptions};
use cardinfer_quant::Checkpoint;
use cardinfer_stream::{Logits, ResidentModel, TextModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn reference_dir(name: &str) -> PathBuf {
    common::reference_dir().join("hf").join(name)
}

fn ids(v: &Value, key: &str) -> Vec<u32> {
    v[key].as_array().expect(key).iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn load(path: &Path) -> ResidentModel {
    let ckpt = Checkpoint::open(path).expect("open checkpoint");
    ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).expect("load model")
}

/// Logits at all 24 positions within 1e-4 of transformers, and its 16 greedy tokens.
fn check_against_transformers(name: &str, model: &ResidentModel) {
    let text = std::fs::read_to_string(reference_dir(name).join("reference.json")).expect("reference.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    let (_, _, reference) = common::hf_reference(name);
    let mut kv = model.new_cache();
    let ours: Vec<Vec<f32>> = model.forward(&ids(&v, "input_ids"), &mut kv, Logits::All).unwrap().to_vec2().unwrap();
    assert_eq!(ours.len(), reference.len());
    let max_diff = ours
        .iter()
        .zip(&reference)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "{name}: max |Δlogit| = {max_diff}");

    let mut kv = model.new_cache();
    let mut logits = model.forward(&ids(&v, "greedy_prefix"), &mut kv, Logits::Last).unwrap();
    let mut generated = Vec::new();
    for _ in 0..16 {
        let next = logits.squeeze(0).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
        generated.push(next);
        logits = model.forward(&[next], &mut kv, Logits::Last).unwrap();
    }
    assert_eq!(generated, ids(&v, "greedy_new_tokens"), "{name}: greedy tokens");
}

fn gguf_slice(name: &str, dir: &Path) -> PathBuf {
    let ckpt = Checkpoint::open(reference_dir(name)).expect("open checkpoint");
    let out = dir.join(format!("{name}.gguf"));
    slice(&ckpt, &out, &SliceOptions { scheme: None, threads: 2, tokenizer: false }, &mut |_| {}).expect("slice");
    out
}

#[test]
fn qwen3moe_tiny_matches_transformers_from_safetensors() {
    let model = load(&reference_dir("qwen3moe-tiny"));
    assert_eq!(model.spec().family, Family::Qwen3Moe);
    check_against_transformers("qwen3moe-tiny", &model);
}

#[test]
fn mixtral_tiny_matches_transformers_from_safetensors() {
    let model = load(&reference_dir("mixtral-tiny"));
    assert_eq!(model.spec().family, Family::Mixtral);
    check_against_transformers("mixtral-tiny", &model);
}

#[test]
fn moe_gguf_slices_stack_experts_and_match_transformers() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["qwen3moe-tiny", "mixtral-tiny"] {
        let path = gguf_slice(name, dir.path());
        let ckpt = Checkpoint::open(&path).expect("open slice");
        let Checkpoint::Gguf(gguf) = &ckpt else { panic!("a GGUF") };
        let spec = gguf.model_spec().expect("spec");
        let moe = spec.moe.clone().expect("experts");
        // One 3-D tensor per projection: [experts, rows, columns], as llama.cpp loads them.
        let gate = gguf.tensor("blk.0.ffn_gate_exps.weight").expect("stacked gate");
        assert_eq!(gate.shape, vec![moe.experts, moe.expert_intermediate_size, spec.hidden_size]);
        assert_eq!(gate.storage, StorageType::F32);
        assert!(gguf.tensor("blk.0.ffn_gate_inp.weight").is_some(), "router");
        assert_eq!(moe.experts_per_token, 2);
        check_against_transformers(name, &load(&path));
    }
}
