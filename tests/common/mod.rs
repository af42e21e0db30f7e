//! Shared helpers for the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/reference` relative to the repository root.
pub fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference")
}

/// A tiny model of `family` whose rows suit every quant type (256 wide): 4 heads of 64,
/// 2 KV heads, vocabulary 300.
pub fn tiny_spec(
    family: cardinfer_core::Family,
    tied: bool,
    num_layers: usize,
    context: usize,
) -> cardinfer_core::ModelSpec {
    use cardinfer_core::Family;
    cardinfer_core::ModelSpec {
        family,
        vocab_size: 300,
        hidden_size: 256,
        intermediate_size: 512,
        num_layers,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: None,
        rope_style: cardinfer_core::RopeStyle::Half,
        context_length: context,
        tie_word_embeddings: tied,
        qkv_bias: family == Family::Qwen2,
        qk_norm: family == Family::Qwen3,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}
