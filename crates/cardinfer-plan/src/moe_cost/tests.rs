use super::*;
use crate::catalog::QUANTS;
use cardinfer_core::presets::PRESETS;

/// Synthetic Qwen3-30B-A3B Q4_K_M as the runs of BENCHMARKS.md §6 used it.
fn qwen3_30b() -> MoeShape {
    let arch = PRESETS.iter().find(|a| a.key == "qwen3-30b-a3b").expect("preset");
    let q4km = QUANTS.iter().find(|q| q.name == "Q4_K_M").expect("quant");
    MoeShape::of_preset(arch, q4km).expect("a mixture of experts")
}

fn within(predicted: f64, measured: f64, tolerance: f64) -> bool {
    (predicted / measured - 1.0).abs() <= tolerance
}

#[test]
fn the_preset_shape_matches_the_synthetic_file() {
    let s = qwen3_30b();
    // The file: 18.44 GiB in all; an expert 3.06 MB (Q4_K gate and up, Q6_K down).
    let all = s.dense_bytes + s.all_expert_bytes();
    assert!(within(all as f64, 18.44 * (1u64 << 30) as f64, 0.1), "{all}");
    assert!(within(s.expert_bytes as f64, 3.06e6, 0.1), "{}", s.expert_bytes);
    // A chunk of 512 tokens routes to nearly every expert of a layer; one token to k.
    assert!(s.used_experts(512) > 127.0 && (s.used_experts(1) - 8.0).abs() < 1e-9);
}

#[test]
fn the_model_matches_the_measured_runs_within_20_percent() {
    let s = qwen3_30b();
    let profile = Profile::h100_fitted();
    let resident = predict_moe(&s, MoePlacement::Resident, &profile, 512, None);
    // H100, commit 6d5e52b: resident decode 237.3 tok/s, pp512 787.9 tok/s.
    assert!(within(resident.decode_tok_s, 237.3, 0.2), "{resident:?}");
    assert!(within(resident.prefill_tok_s, 787.9, 0.2), "{resident:?}");
    // Within 1.9 GiB: a cache of 646 MiB; pp512 750.2 tok/s.
    let small = MoePlacement::ExpertsOnHost { cache_bytes: 646 << 20 };
    let p = predict_moe(&s, small, &profile, 512, None);
    assert!(within(p.prefill_tok_s, 750.2, 0.2), "{p:?}");
}
