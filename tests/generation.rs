//! The generator on the real default model (SmolLM2-135M-Instruct, fetched by
//! `scripts/fetch-model.sh`): multi-turn KV reuse, streaming text, stop strings,
//! the GGUF chat template, and scoring.

mod common;

use candle_core::Device;
use cardinfer_stream::{
    score, ChatTemplate, GenerateOptions, IncrementalDecoder, LoadedModel, Message, Session, StopReason, TextModel,
};

fn smollm2() -> Option<LoadedModel> {
    let path = common::model_cache_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        assert!(std::env::var("CI").is_err(), "CI must fetch SmolLM2 (scripts/fetch-model.sh)");
        eprintln!("SKIP: {} not cached; run scripts/fetch-model.sh", path.display());
        return None;
    }
    Some(LoadedModel::load(&path, &Device::Cpu, |_, _| {}).unwrap())
}

#[test]
fn second_turn_reusing_the_cache_equals_a_fresh_run() {
    let Some(m) = smollm2() else { return };
    let tok = m.tokenizer.as_ref().unwrap();
    let options = GenerateOptions { max_tokens: 12, ..Default::default() };
    let mut messages = vec![Message::new("user", "Name a color.")];

    let mut session = Session::new(&m.model, Some(tok));
    let ids = tok.encode(&m.chat_template.render(&messages, true).unwrap()).unwrap();
    let fresh_ids = session.reuse_prefix(&ids).unwrap();
    assert_eq!(fresh_ids, ids, "an empty session feeds everything");
    let first = session.generate(&fresh_ids, &options, |_| {}).unwrap();
    messages.push(Message::new("assistant", first.text.trim()));
    messages.push(Message::new("user", "Another one."));

    let ids = tok.encode(&m.chat_template.render(&messages, true).unwrap()).unwrap();
    let new_ids = session.reuse_prefix(&ids).unwrap();
    assert!(new_ids.len() < ids.len() / 2, "turn 2 feeds only its new tokens ({} of {})", new_ids.len(), ids.len());
    let reused = session.generate(&new_ids, &options, |_| {}).unwrap();

    let mut fresh = Session::new(&m.model, Some(tok));
    let from_scratch = fresh.generate(&ids, &options, |_| {}).unwrap();
    assert_eq!(reused.generated_ids, from_scratch.generated_ids);
}

#[test]
fn streamed_pieces_concatenate_to_the_text_and_respect_stop_strings() {
    let Some(m) = smollm2() else { return };
    let tok = m.tokenizer.as_ref().unwrap();
    let prompt = tok.encode("The capital of France is").unwrap();
    let mut pieces = String::new();
    let options = GenerateOptions { max_tokens: 32, ..Default::default() };
    let out = Session::new(&m.model, Some(tok)).generate(&prompt, &options, |p| pieces.push_str(p)).unwrap();
    assert_eq!(pieces, out.text);
    assert!(out.text.starts_with(" Paris."), "{:?}", out.text);
    assert!(matches!(out.stop_reason, StopReason::MaxTokens | StopReason::Eos), "{:?}", out.stop_reason);

    // A stop string taken from the middle of that text: the same generation ends just
    // before it, and no piece handed out holds any of it.
    let stop: String = out.text.chars().skip(9).take(4).collect();
    let cut = out.text.find(&stop).expect("the stop string is in the text");
    let options = GenerateOptions { max_tokens: 32, stop_strings: vec![stop.clone()], ..Default::default() };
    let mut pieces = String::new();
    let stopped = Session::new(&m.model, Some(tok)).generate(&prompt, &options, |p| pieces.push_str(p)).unwrap();
    assert_eq!(stopped.stop_reason, StopReason::StopString, "stop string {stop:?} in {:?}", out.text);
    assert_eq!(stopped.text, out.text[..cut]);
    assert_eq!(pieces, stopped.text, "held-back text never leaks the stop string");
}

#[test]
fn incremental_decoding_never_splits_a_character() {
    let Some(m) = smollm2() else { return };
    let tok = m.tokenizer.as_ref().unwrap();
    let text = "Crème brûlée 🍮 costs 5€ — 東京";
    let ids = tok.encode(text).unwrap();
    let mut decoder = IncrementalDecoder::new();
    let mut out = String::new();
    for &id in &ids {
        if let Some(piece) = decoder.push(tok, id).unwrap() {
            assert!(!piece.contains('\u{FFFD}'), "piece {piece:?} holds half a character");
            out += &piece;
        }
    }
    out += &decoder.finish(tok).unwrap().unwrap_or_default();
    assert_eq!(out, text);
}

#[test]
fn gguf_chat_template_is_used_and_matches_llama_cpp_prompt() {
    let Some(m) = smollm2() else { return };
    assert!(matches!(m.chat_template, ChatTemplate::Jinja { .. }));
    let text = m.chat_template.render(&[Message::new("user", "What is 2+2?")], true).unwrap();
    assert!(text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"));
    assert!(text.ends_with("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"));
}

#[test]
fn score_agrees_with_generation_logits() {
    let Some(m) = smollm2() else { return };
    let tok = m.tokenizer.as_ref().unwrap();
    let ids = tok.encode("The capital of France is Paris.").unwrap();
    let s = score(&m.model, &ids).unwrap();
    assert_eq!(s.logprobs.len(), ids.len() - 1);
    assert!(s.logprobs.iter().all(|l| *l <= 0.0));
    assert!((s.perplexity - s.mean_nll.exp()).abs() < 1e-9);
    // " Paris" after "The capital of France is" is likely under a trained model.
    let paris = s.logprobs[ids.len() - 3];
    assert!(paris > -2.0, "log p(Paris) = {paris}");
    assert!(score(&m.model, &ids[..1]).is_err());
}

#[test]
fn scoring_an_id_outside_the_vocabulary_names_it() {
    let Some(m) = smollm2() else { return };
    let vocab = m.model.spec().vocab_size as u32;
    let err = score(&m.model, &[1, 2, vocab]).unwrap_err().to_string();
    assert!(err.contains(&vocab.to_string()) && err.contains("outside the vocabulary"), "{err}");
}

/// Every row of a pass goes through the same kernels: a position's log-prob does not
/// depend on whether it is the last of the pass (issue 29: the last of a 14-token pass was
/// 0.15 nats away from the same position inside a 37-token pass), nor on the pass's length.
#[test]
fn a_positions_logprob_does_not_depend_on_the_pass_length() {
    let Some(m) = smollm2() else { return };
    let tok = m.tokenizer.as_ref().unwrap();
    let text = "The quick brown fox jumps over the lazy dog. It was a sunny day and the children were \
                playing in the park while their parents watched from the benches nearby.";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() >= 30, "{} ids", ids.len());
    let whole = score(&m.model, &ids).unwrap().logprobs;
    for len in [2, 5, 14, 29] {
        let part = score(&m.model, &ids[..len]).unwrap().logprobs;
        assert_eq!(part, whole[..len - 1], "a {len}-token pass");
    }
}
