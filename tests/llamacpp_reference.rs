//! Prompt ids and greedy continuations against llama.cpp on real trained GGUF models
//! (`tests/fixtures/reference/llamacpp/greedy.json`). SmolLM2 and Gemma-3-270M are fetched by
//! the project's own script (`scripts/fetch-model.sh`, which `.ci/run` calls); the Qwen2.5
//! case runs where that model is cached and is skipped with a message otherwise.

mod common;

use candle_core::Device;
use cardinfer_core::KvType;
use cardinfer_quant::Checkpoint;
use cardinfer_stream::{KvCache, Logits, ResidentModel, TextModel, Tokenizer};
use serde_json::Value;

/// Runs `file`'s cases: the prompt ids exactly, then llama.cpp's continuation teacher-forced
/// for 16 tokens with an f32 KV cache, where every step must pick llama.cpp's token or be a
/// near-tie; with an f16 cache (llama.cpp's own type) the first step where we part from
/// llama.cpp must be a near-tie (its attention also rounds queries and probabilities to f16,
/// ours only the stored keys and values, so later steps may part further). How many tokens
/// come before the first near-tie depends on the CPU's kernels: 6–16 on an AVX-512 machine,
/// 4–16 on an AVX2 one (a count asked for here failed there, 2026-12-08).
fn run_cases(file: &str, required: bool) {
    let Some(path) = common::cached_model(file, required) else { return };
    let text = std::fs::read_to_string(common::reference_dir().join("llamacpp/greedy.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let cases = reference[file]["cases"].as_array().unwrap();
    let ckpt = Checkpoint::open(&path).unwrap();
    let Checkpoint::Gguf(gguf) = &ckpt else { panic!("expected GGUF") };
    let tokenizer = Tokenizer::from_gguf(gguf).unwrap().expect("GGUF has a tokenizer");
    let model = ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).unwrap();
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let expected_ids: Vec<u32> =
            case["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let ids = tokenizer.encode(prompt).unwrap();
        assert_eq!(ids, expected_ids, "prompt ids of {prompt:?}");

        // Teacher-force llama.cpp's continuation: at every step our greedy pick must be
        // llama.cpp's token, unless the two are a near-tie in our logits (different
        // kernels accumulate in a different order; see tests/fixtures/reference/SOURCE.md).
        let theirs_text = case["greedy_continuation"].as_str().unwrap();
        let theirs = tokenizer.encode_continuation(theirs_text).unwrap();
        let layers = model.spec().num_layers;
        for kv_type in [KvType::F32, KvType::F16] {
            let mut kv = KvCache::new(layers, kv_type);
            let mut logits = model.forward(&ids, &mut kv, Logits::Last).unwrap();
            let mut exact_prefix = 0;
            let mut diverged = false;
            let mut first_split = None;
            for (step, &their_token) in theirs.iter().take(16).enumerate() {
                let row: Vec<f32> = logits.squeeze(0).unwrap().to_vec1().unwrap();
                let ours = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as u32;
                if ours == their_token && !diverged {
                    exact_prefix += 1;
                } else if kv_type == KvType::F16 {
                    first_split = Some(row[ours as usize] - row[their_token as usize]);
                    break;
                } else {
                    diverged = true;
                    let margin = row[ours as usize] - row[their_token as usize];
                    assert!(
                    margin < NEAR_TIE,
                    "{prompt:?} step {step}: we pick {ours}, llama.cpp {their_token}, margin {margin} is not a near-tie"
                );
                }
                if model.spec().eos_token_ids.contains(&their_token) {
                    break;
                }
                logits = model.forward(&[their_token], &mut kv, Logits::Last).unwrap();
            }
            eprintln!(
                "{file}, {kv_type} KV: {prompt:?}: {exact_prefix} tokens identical before any near-tie{}",
                first_split.map_or(String::new(), |m| format!("; f16 parts with a margin of {m}"))
            );
            if let Some(margin) = first_split {
                assert!(
                    margin < NEAR_TIE,
                    "{prompt:?}, f16 KV: after {exact_prefix} tokens equal llama.cpp's, a margin of {margin} is not a near-tie"
                );
            }
        }
    }
}

/// Logit gap below which two candidates count as a near-tie.
const NEAR_TIE: f32 = 0.15;

#[test]
fn smollm2_matches_llama_cpp() {
    // Its hidden states reach ~500, so a last-bit difference before an activation is
    // quantized moves later logits: the continuation meets near-ties (llama.cpp's KV
    // cache and attention run in f16, ours in f32), checked step by step.
    run_cases("SmolLM2-135M-Instruct.Q4_1.gguf", true);
}

#[test]
fn gemma3_270m_matches_llama_cpp() {
    // Fetched with `scripts/fetch-model.sh gemma3-270m` (CI does).
    run_cases("gemma-3-270m-q4_k_m.gguf", true);
}

#[test]
fn qwen25_coder_matches_llama_cpp() {
    // The chat case meets a near-tie (" with" / " power" / " in", within 0.05) at its
    // 7th token, so it is checked step by step rather than for 16 identical tokens.
    run_cases("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", false);
}
