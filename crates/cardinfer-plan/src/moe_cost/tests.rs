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

/// The runs of BENCHMARKS.md §6 (H100, commit a97d320): placement, measured hit rate,
/// decode and pp512 tok/s.
#[test]
fn the_model_matches_the_measured_runs_within_20_percent() {
    let s = qwen3_30b();
    let profile = Profile::h100_fitted();
    let host = |mib: u64| MoePlacement::ExpertsOnHost { cache_bytes: mib << 20 };
    /// A run: its name, placement and measured hit rate, decode and pp512 tok/s.
    type Run = (&'static str, MoePlacement, Option<f64>, Option<f64>, Option<f64>);
    let runs: [Run; 5] = [
        ("resident", MoePlacement::Resident, None, Some(241.1), Some(1088.4)),
        ("1.9 GiB", host(646), Some(0.074), Some(32.1), Some(900.4)),
        ("5 GiB", host(3865), Some(0.941), Some(130.9), None),
        ("1.9 GiB, no cache", host(0), Some(0.0), Some(26.4), None),
        ("1.9 GiB, uniform router", host(646), None, Some(32.1), None),
    ];
    for (name, placement, hit, decode, prefill) in runs {
        let p = predict_moe(&s, placement, &profile, 512, hit);
        eprintln!("{name}: predicted decode {:.1}, prefill {:.0}", p.decode_tok_s, p.prefill_tok_s);
        if let Some(measured) = decode {
            assert!(within(p.decode_tok_s, measured, 0.2), "{name}: decode {p:?} against {measured}");
        }
        if let Some(measured) = prefill {
            assert!(within(p.prefill_tok_s, measured, 0.2), "{name}: prefill {p:?} against {measured}");
        }
    }
}

#[test]
fn more_cache_is_never_slower_and_resident_is_fastest() {
    let s = qwen3_30b();
    let profile = Profile::h100_fitted();
    let mut last = 0.0;
    for mib in [0u64, 256, 1024, 4096, 16384] {
        let p = predict_moe(&s, MoePlacement::ExpertsOnHost { cache_bytes: mib << 20 }, &profile, 512, None);
        assert!(p.decode_tok_s >= last, "{mib} MiB: {p:?}");
        last = p.decode_tok_s;
    }
    let resident = predict_moe(&s, MoePlacement::Resident, &profile, 512, None);
    assert!(resident.decode_tok_s > last);
}
