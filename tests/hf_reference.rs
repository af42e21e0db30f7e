//! Logits and greedy tokens against Hugging Face transformers on the tiny reference
//! checkpoints in `tests/fixtures/reference/hf` (float32, CPU).

mod common;

use candle_core::Device;
use cardinfer_quant::Checkpoint;
use cardinfer_stream::{Logits, ResidentModel, TextModel};
use serde_json::Value;

struct Reference {
    input_ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy_prefix: Vec<u32>,
    greedy_new_tokens: Vec<u32>,
}

fn load_reference(name: &str) -> (ResidentModel, Reference) {
    let dir = common::reference_dir().join("hf").join(name);
    let ckpt = Checkpoint::open(&dir).expect("open checkpoint");
    let model = ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).expect("load model");
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let v: Value = serde_json::from_str(&text).expect("json");
    let ids = |key: &str| v[key].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>();
    let (_, _, logits) = common::hf_reference(name);
    let reference = Reference {
        input_ids: ids("input_ids"),
        logits,
        greedy_prefix: ids("greedy_prefix"),
        greedy_new_tokens: ids("greedy_new_tokens"),
    };
    (model, reference)
}

fn check_logits(name: &str) {
    let (model, reference) = load_reference(name);
    let mut kv = model.new_cache();
    let logits = model.forward(&reference.input_ids, &mut kv, Logits::All).unwrap();
    let ours: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    assert_eq!(ours.len(), 24);
    let mut max_diff = 0f32;
    for (row_ours, row_ref) in ours.iter().zip(&reference.logits) {
        assert_eq!(row_ours.len(), row_ref.len());
        for (a, b) in row_ours.iter().zip(row_ref) {
            max_diff = max_diff.max((a - b).abs());
        }
    }
    assert!(max_diff < 1e-4, "{name}: max |Δlogit| = {max_diff}");
}

fn check_greedy(name: &str) {
    let (model, reference) = load_reference(name);
    let mut kv = model.new_cache();
    let mut logits = model.forward(&reference.greedy_prefix, &mut kv, Logits::Last).unwrap();
    let mut generated = Vec::new();
    for _ in 0..reference.greedy_new_tokens.len() {
        let next = logits.squeeze(0).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
        generated.push(next);
        logits = model.forward(&[next], &mut kv, Logits::Last).unwrap();
    }
    assert_eq!(generated, reference.greedy_new_tokens, "{name}");
}

#[test]
fn qwen3_tiny_logits_match_transformers() {
    check_logits("qwen3-tiny");
}

#[test]
fn qwen2_tiny_logits_match_transformers() {
    check_logits("qwen2-tiny");
}

#[test]
fn llama_tiny_logits_match_transformers() {
    check_logits("llama-tiny");
}

#[test]
fn qwen3_tiny_greedy_matches_transformers() {
    check_greedy("qwen3-tiny");
}

#[test]
fn qwen2_tiny_greedy_matches_transformers() {
    check_greedy("qwen2-tiny");
}

#[test]
fn llama_tiny_greedy_matches_transformers() {
    check_greedy("llama-tiny");
}
