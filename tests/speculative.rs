//! Speculative decoding against the target's own runs, on tiny synthetic models written by
//! the test: greedy output equals the target's greedy output token for token whatever the
//! draft (the same model, a 4-bit copy of it, an unrelated model), drafts of every length,
//! a streamed target, two turns in one conversation (rejected drafts leave nothing behind
//! in the caches); with sampling, the tokens that come out follow the target's distribution.

mod common;

use candle_core::Device;
use cardinfer_core::{ByteSize, Family, ModelSpec, StorageType};
use cardinfer_quant::synth::SyntheticModel;
use cardinfer_quant::Checkpoint;
use cardinfer_stream::{
    check_draft_vocabulary, Budget, GenerateOptions, LoadOptions, LoadedModel, Logits, Mode, ResidentModel,
    SamplingParams, Session, SpeculativeOptions, SpeculativeSession, StreamError, TextModel,
};
use std::path::{Path, PathBuf};

fn spec(layers: usize) -> ModelSpec {
    common::tiny_spec(Family::Qwen2, false, layers, 256)
}

/// Writes the target (F32), a Q4_0 copy of it and an unrelated model of the same shape.
fn models(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let target = SyntheticModel::random(&spec(3), 7);
    let other = SyntheticModel::random(&spec(1), 8);
    let paths = (dir.join("target.gguf"), dir.join("q4.gguf"), dir.join("other.gguf"));
    target.write_gguf(&paths.0, StorageType::F32, StorageType::F32).unwrap();
    target.write_gguf(&paths.1, StorageType::Q4_0, StorageType::Q8_0).unwrap();
    other.write_gguf(&paths.2, StorageType::F32, StorageType::F32).unwrap();
    paths
}

fn resident(path: &Path) -> ResidentModel {
    ResidentModel::load(&Checkpoint::open(path).unwrap(), &Device::Cpu, |_, _| {}).unwrap()
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, ..Default::default() }
}

const PROMPT: [u32; 6] = [5, 17, 250, 3, 99, 42];

#[test]
fn greedy_speculation_equals_the_target_for_every_draft_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let (target_path, q4_path, other_path) = models(dir.path());
    let target = resident(&target_path);
    let expected = Session::new(&target, None).generate(&PROMPT, &greedy(40), |_| {}).unwrap().generated_ids;
    for (name, path) in [("itself", &target_path), ("its Q4_0 copy", &q4_path), ("an unrelated model", &other_path)] {
        let draft = resident(path);
        for max_draft in [1, 2, 3, 5, 8] {
            for adaptive in [false, true] {
                let options = SpeculativeOptions { max_draft, min_confidence: 0.0, adaptive };
                let mut session = SpeculativeSession::new(&target, &draft, None, options).unwrap();
                let out = session.generate(&PROMPT, &greedy(40), |_| {}).unwrap();
                assert_eq!(out.generated_ids, expected, "draft {name}, up to {max_draft}, adaptive {adaptive}");
                let stats = out.speculation.unwrap();
                assert!(stats.passes < 40, "draft {name}: {stats:?}");
                if name == "itself" && !adaptive {
                    assert_eq!(stats.accepted, stats.drafted, "a model drafting for itself is always right");
                    assert!(stats.drafted > 0);
                }
                if name == "its Q4_0 copy" && max_draft == 8 && !adaptive {
                    // The rejection path runs: some drafts kept, some corrected.
                    assert!(stats.accepted > 0 && stats.accepted < stats.drafted, "{stats:?}");
                }
            }
        }
    }
}

#[test]
fn a_streamed_target_speculates_to_the_resident_output() {
    let dir = tempfile::tempdir().unwrap();
    let (target_path, q4_path, _) = models(dir.path());
    let target = resident(&target_path);
    let expected = Session::new(&target, None).generate(&PROMPT, &greedy(24), |_| {}).unwrap().generated_ids;
    let options = LoadOptions {
        budget: Budget::Bytes(ByteSize(u64::MAX / 2)),
        mode: Mode::Stream,
        slots: Some(2),
        context: Some(256),
        ..Default::default()
    };
    let streamed = LoadedModel::load_with(&target_path, &Device::Cpu, &options, |_, _| {}).unwrap();
    assert_eq!(streamed.model.metrics().mode, "stream");
    let draft = resident(&q4_path);
    let mut session = SpeculativeSession::new(&streamed.model, &draft, None, SpeculativeOptions::default()).unwrap();
    let out = session.generate(&PROMPT, &greedy(24), |_| {}).unwrap();
    assert_eq!(out.generated_ids, expected);
}

/// A second turn continues from what the first left in the caches: if a rejected draft
/// stayed in either cache, the second turn's tokens would differ from the target's.
#[test]
fn two_turns_continue_from_the_committed_tokens_only() {
    let dir = tempfile::tempdir().unwrap();
    let (target_path, q4_path, _) = models(dir.path());
    let (target, draft) = (resident(&target_path), resident(&q4_path));
    let mut plain = Session::new(&target, None);
    let options = SpeculativeOptions { max_draft: 6, min_confidence: 0.0, adaptive: false };
    let mut speculative = SpeculativeSession::new(&target, &draft, None, options).unwrap();
    for turn in [&PROMPT[..], &[7, 8, 9][..]] {
        let a = plain.generate(turn, &greedy(17), |_| {}).unwrap();
        let b = speculative.generate(turn, &greedy(17), |_| {}).unwrap();
        assert_eq!(a.generated_ids, b.generated_ids);
        assert_eq!(plain.tokens(), speculative.tokens());
    }
    // Stopping mid-pass (an EOS among accepted drafts) leaves the same state too.
    let stop = GenerateOptions { extra_eos: vec![plain.tokens()[PROMPT.len() + 5]], ..greedy(30) };
    let mut plain = Session::new(&target, None);
    let mut speculative = SpeculativeSession::new(&target, &draft, None, SpeculativeOptions::default()).unwrap();
    let a = plain.generate(&PROMPT, &stop, |_| {}).unwrap();
    let b = speculative.generate(&PROMPT, &stop, |_| {}).unwrap();
    assert_eq!((a.generated_ids, a.stop_reason), (b.generated_ids, b.stop_reason));
    assert_eq!(plain.tokens(), speculative.tokens());
}

/// The target's probabilities of the next token after `ids`, as the sampler defines them.
fn next_probs(model: &ResidentModel, ids: &[u32], params: &SamplingParams) -> Vec<f32> {
    let mut kv = model.new_cache();
    let logits = model.forward(ids, &mut kv, Logits::Last).unwrap();
    params.distribution(&logits, ids).unwrap()
}

/// With sampling, the second token (the first one drafted and verified) is distributed as
/// the target's, although the draft (an unrelated model) proposes from a very different
/// distribution: chi-square of its counts over the target's six likeliest second tokens
/// and the rest, against the exact marginal over every first token.
#[test]
fn sampled_speculation_keeps_the_target_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let (target_path, _, other_path) = models(dir.path());
    let (target, draft) = (resident(&target_path), resident(&other_path));
    let params = SamplingParams { temperature: 1.0, ..Default::default() };
    let first = next_probs(&target, &PROMPT, &params);
    let mut marginal = vec![0f64; first.len()];
    for (t1, &p1) in first.iter().enumerate() {
        let prefix: Vec<u32> = PROMPT.iter().copied().chain([t1 as u32]).collect();
        for (m, &p2) in marginal.iter_mut().zip(&next_probs(&target, &prefix, &params)) {
            *m += p1 as f64 * p2 as f64;
        }
    }
    let mut order: Vec<usize> = (0..marginal.len()).collect();
    order.sort_by(|&a, &b| marginal[b].total_cmp(&marginal[a]));
    let cell = |t: u32| order.iter().take(6).position(|&o| o == t as usize).unwrap_or(6);
    let mut expected = [0f64; 7];
    for (t, &m) in marginal.iter().enumerate() {
        expected[cell(t as u32)] += m;
    }
    let options = SpeculativeOptions { max_draft: 1, min_confidence: 0.0, adaptive: false };
    let mut session = SpeculativeSession::new(&target, &draft, None, options).unwrap();
    let (runs, mut counts, mut drafted, mut accepted) = (2000, [0usize; 7], 0, 0);
    for seed in 0..runs as u64 {
        session.reset();
        let sampling = SamplingParams { seed, ..params.clone() };
        let options = GenerateOptions { max_tokens: 3, sampling, ..Default::default() };
        let out = session.generate(&PROMPT, &options, |_| {}).unwrap();
        let stats = out.speculation.unwrap();
        (drafted, accepted) = (drafted + stats.drafted, accepted + stats.accepted);
        counts[cell(out.generated_ids[1])] += 1;
    }
    let chi2: f64 = counts
        .iter()
        .zip(&expected)
        .map(|(&c, &p)| {
            let e = runs as f64 * p;
            (c as f64 - e).powi(2) / e
        })
        .sum();
    eprintln!("chi-square {chi2:.2}: counts {counts:?}, expected {expected:?}; {accepted} of {drafted} drafts kept");
    assert!(expected.iter().all(|&p| runs as f64 * p >= 5.0), "cells too small for the test: {expected:?}");
    // 22.46 is the 0.1 % critical value of chi-square with 6 degrees of freedom.
    assert!(chi2 < 22.46, "chi-square {chi2:.2}: counts {counts:?}, expected {expected:?}");
    assert!(accepted > 0 && accepted < drafted, "both verdicts occur: {accepted} of {drafted} kept");
}

#[test]
fn a_draft_of_another_vocabulary_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (target_path, _, _) = models(dir.path());
    let small = ModelSpec { vocab_size: 280, ..spec(1) };
    let draft_path = dir.path().join("small-vocab.gguf");
    SyntheticModel::random(&small, 3).write_gguf(&draft_path, StorageType::F32, StorageType::F32).unwrap();
    let load = |p: &Path| LoadedModel::load(p, &Device::Cpu, |_, _| {}).unwrap();
    let (target, draft) = (load(&target_path), load(&draft_path));
    let err = check_draft_vocabulary(&target, &draft).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StreamError::VocabularyMismatch { .. }));
    assert!(text.contains("small-vocab.gguf") && text.contains("target.gguf"), "{text}");
    assert!(text.contains("300") && text.contains("280"), "{text}");
    assert!(SpeculativeSession::new(&target.model, &draft.model, None, SpeculativeOptions::default()).is_err());
    let bad = SpeculativeOptions { max_draft: 0, ..Default::default() };
    assert!(SpeculativeSession::new(&target.model, &target.model, None, bad).is_err());
}

/// A draft with a shorter context than the target drafts while it has room, then the
/// target goes on alone: the output is still the target's.
#[test]
fn a_draft_with_a_shorter_context_stops_drafting_at_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (target_path, q4_path, _) = models(dir.path());
    let target = resident(&target_path);
    let expected = Session::new(&target, None).generate(&PROMPT, &greedy(40), |_| {}).unwrap().generated_ids;
    let options = LoadOptions { context: Some(20), ..Default::default() };
    let draft = LoadedModel::load_with(&q4_path, &Device::Cpu, &options, |_, _| {}).unwrap();
    assert_eq!(draft.model.spec().context_length, 20);
    let fixed = SpeculativeOptions { max_draft: 4, min_confidence: 0.0, adaptive: false };
    let mut session = SpeculativeSession::new(&target, &draft.model, None, fixed).unwrap();
    let out = session.generate(&PROMPT, &greedy(40), |_| {}).unwrap();
    assert_eq!(out.generated_ids, expected);
    let stats = out.speculation.unwrap();
    assert!(stats.drafted > 0 && stats.passes > 20, "drafts early, plain passes after: {stats:?}");
}
