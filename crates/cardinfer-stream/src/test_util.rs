//! Helpers shared by the unit tests: deterministic values and a layer's float vectors.

use crate::model::names::Role;
use crate::model::weights::Weight;
use candle_core::{Device, Tensor};
use cardinfer_core::ModelSpec;
use std::collections::HashMap;

/// Deterministic values in [-scale, scale).
pub(crate) fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Adds a layer's norms (and, as `spec` asks, q/k/v biases and per-head q/k norms) to
/// `weights`: values around 1.
pub(crate) fn insert_vectors(spec: &ModelSpec, weights: &mut HashMap<Role, Weight>) {
    let (h, d) = (spec.hidden_size, spec.head_dim);
    let (q, kv) = (spec.num_heads * d, spec.num_kv_heads * d);
    let mut vectors = vec![(Role::AttnNorm, h), (Role::FfnNorm, h)];
    if spec.qkv_bias {
        vectors.extend([(Role::AttnQBias, q), (Role::AttnKBias, kv), (Role::AttnVBias, kv)]);
    }
    if spec.qk_norm {
        vectors.extend([(Role::AttnQNorm, d), (Role::AttnKNorm, d)]);
    }
    if spec.gemma.is_some() {
        vectors.extend([(Role::PostAttnNorm, h), (Role::PostFfnNorm, h)]);
    }
    for (i, (role, n)) in vectors.into_iter().enumerate() {
        let v: Vec<f32> = values(n, 100 + i as u64, 0.5).into_iter().map(|v| 1.0 + v).collect();
        weights.insert(role, Weight::Dense(Tensor::from_vec(v, n, &Device::Cpu).expect("vector")));
    }
}
