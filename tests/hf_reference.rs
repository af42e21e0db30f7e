//! Logits and greedy tokens against Hugging Face transformers on the tiny reference
//! checkpoints in `tests/fixtures/reference/hf` (float32, CPU), with an f32 KV cache
//! (logits within 1e-4) and an f16 one (within 2e-3), as `common::check_against_transformers`
//! checks them.

mod common;

use candle_core::Device;
use cardinfer_quant::Checkpoint;
use cardinfer_stream::ResidentModel;

fn check(name: &str) {
    let dir = common::reference_dir().join("hf").join(name);
    let ckpt = Checkpoint::open(&dir).expect("open checkpoint");
    let model = ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).expect("load model");
    common::check_against_transformers(name, &model);
}

#[test]
fn qwen3_tiny_matches_transformers() {
    check("qwen3-tiny");
}

#[test]
fn qwen2_tiny_matches_transformers() {
    check("qwen2-tiny");
}

#[test]
fn llama_tiny_matches_transformers() {
    check("llama-tiny");
}
