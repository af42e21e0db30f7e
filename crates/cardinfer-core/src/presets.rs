//! Architecture presets: the shapes of real model families, shared by the synthetic
//! model writer (`cardinfer-quant`) and the planner's projections (`cardinfer-plan`).

use crate::{Family, ModelSpec, RopeStyle};

/// The shape of a real architecture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArchPreset {
    /// Name on the command line (`qwen3-4b`).
    pub key: &'static str,
    /// Name in tables (`Qwen3-4B`).
    pub name: &'static str,
    /// GGUF architecture (`qwen3`, `llama`, `qwen3moe`, `gpt-oss`).
    pub arch: &'static str,
    /// Parameters, billions (for sorting and display).
    pub params_b: f64,
    /// Model width.
    pub hidden: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Feed-forward width (per expert for a mixture of experts).
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Output head tied to the embedding.
    pub tied: bool,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Mixture of experts: (experts, experts used per token); `None` for a dense model.
    pub experts: Option<(usize, usize)>,
}

#[allow(clippy::too_many_arguments)] // one row of the table below
const fn qwen3(
    key: &'static str,
    name: &'static str,
    params_b: f64,
    hidden: usize,
    layers: usize,
    heads: usize,
    ffn: usize,
    tied: bool,
) -> ArchPreset {
    ArchPreset {
        key,
        name,
        arch: "qwen3",
        params_b,
        hidden,
        layers,
        heads,
        kv_heads: 8,
        head_dim: 128,
        ffn,
        vocab: 151936,
        tied,
        rope_theta: 1e6,
        rms_eps: 1e-6,
        experts: None,
    }
}

/// Every preset, dense first: Qwen3 0.6B to 32B, Llama-3 8B and 70B; then mixtures of
/// experts (which CardInfer cannot run yet): Qwen3-30B-A3B, gpt-oss-120b, Qwen3-235B-A22B.
pub const PRESETS: [ArchPreset; 11] = [
    qwen3("qwen3-0.6b", "Qwen3-0.6B", 0.6, 1024, 28, 16, 3072, true),
    qwen3("qwen3-1.7b", "Qwen3-1.7B", 1.7, 2048, 28, 16, 6144, true),
    qwen3("qwen3-4b", "Qwen3-4B", 4.0, 2560, 36, 32, 9728, true),
    qwen3("qwen3-8b", "Qwen3-8B", 8.2, 4096, 36, 32, 12288, false),
    qwen3("qwen3-14b", "Qwen3-14B", 14.8, 5120, 40, 40, 17408, false),
    qwen3("qwen3-32b", "Qwen3-32B", 32.8, 5120, 64, 64, 25600, false),
    ArchPreset {
        key: "llama-3-8b",
        name: "Llama-3-8B",
        arch: "llama",
        params_b: 8.0,
        hidden: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        ffn: 14336,
        vocab: 128256,
        tied: false,
        rope_theta: 500000.0,
        rms_eps: 1e-5,
        experts: None,
    },
    ArchPreset {
        key: "llama-3-70b",
        name: "Llama-3-70B",
        arch: "llama",
        params_b: 70.6,
        hidden: 8192,
        layers: 80,
        heads: 64,
        kv_heads: 8,
        head_dim: 128,
        ffn: 28672,
        vocab: 128256,
        tied: false,
        rope_theta: 500000.0,
        rms_eps: 1e-5,
        experts: None,
    },
    ArchPreset {
        key: "qwen3-30b-a3b",
        name: "Qwen3-30B-A3B (MoE)",
        arch: "qwen3moe",
        params_b: 30.5,
        hidden: 2048,
        layers: 48,
        heads: 32,
        kv_heads: 4,
        head_dim: 128,
        ffn: 768,
        vocab: 151936,
        tied: false,
        rope_theta: 1e6,
        rms_eps: 1e-6,
        experts: Some((128, 8)),
    },
    ArchPreset {
        key: "gpt-oss-120b",
        name: "gpt-oss-120b (MoE)",
        arch: "gpt-oss",
        params_b: 117.0,
        hidden: 2880,
        layers: 36,
        heads: 64,
        kv_heads: 8,
        head_dim: 128,
        ffn: 2880,
        vocab: 201088,
        tied: false,
        rope_theta: 150000.0,
        rms_eps: 1e-5,
        experts: Some((128, 4)),
    },
    ArchPreset {
        key: "qwen3-235b-a22b",
        name: "Qwen3-235B-A22B (MoE)",
        arch: "qwen3moe",
        params_b: 235.0,
        hidden: 4096,
        layers: 94,
        heads: 64,
        kv_heads: 4,
        head_dim: 128,
        ffn: 1536,
        vocab: 151936,
        tied: false,
        rope_theta: 1e6,
        rms_eps: 1e-6,
        experts: Some((128, 8)),
    },
];

impl ArchPreset {
    /// A mixture of experts.
    pub fn is_moe(&self) -> bool {
        self.experts.is_some()
    }

    /// The dense model's spec with `context` tokens of context (a mixture of experts is
    /// described as the dense model of one expert's width, for shape arithmetic only).
    pub fn spec(&self, context: usize) -> ModelSpec {
        let family = if self.arch == "llama" { Family::Llama } else { Family::Qwen3 };
        ModelSpec {
            family,
            vocab_size: self.vocab,
            hidden_size: self.hidden,
            intermediate_size: self.ffn,
            num_layers: self.layers,
            num_heads: self.heads,
            num_kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_eps as f64,
            rope_theta: self.rope_theta as f64,
            rope_scaling: None,
            rope_style: RopeStyle::Half,
            context_length: context,
            tie_word_embeddings: self.tied,
            qkv_bias: false,
            qk_norm: family == Family::Qwen3,
            bos_token_id: None,
            eos_token_ids: vec![],
            moe: None,
            gemma: None,
        }
    }
}
