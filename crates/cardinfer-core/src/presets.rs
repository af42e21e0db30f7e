//! Architecture presets: the shapes of real model families, shared by the synthetic
//! model writer (`cardinfer-quant`) and the planner's projections (`cardinfer-plan`).

use crate::{Family, GemmaSpec, ModelSpec, RopeStyle};

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
    /// Gemma 3: the window of its sliding-window layers (every sixth layer is global);
    /// `None` where every layer attends to the whole context.
    pub sliding_window: Option<usize>,
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
        sliding_window: None,
    }
}

/// Gemma 3 (4B and larger: head size 256 but 128 for the 27B, a 1024-token window, a
/// vocabulary of 262144 tied to the embeddings, global RoPE base 10⁶ scaled by 8).
#[allow(clippy::too_many_arguments)] // one row of the table below
const fn gemma3(
    key: &'static str,
    name: &'static str,
    params_b: f64,
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
) -> ArchPreset {
    ArchPreset {
        key,
        name,
        arch: "gemma3",
        params_b,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        ffn,
        vocab: 262144,
        tied: true,
        rope_theta: 1e6,
        rms_eps: 1e-6,
        experts: None,
        sliding_window: Some(1024),
    }
}

/// Gemma 3's linear RoPE factor on the global layers of the presets above.
const GEMMA3_ROPE_FACTOR: f64 = 8.0;
/// Gemma 3's RoPE base on its sliding-window layers.
const GEMMA3_LOCAL_ROPE_THETA: f64 = 10_000.0;
/// Every this many layers one is global (the last of each group).
const GEMMA3_PATTERN: usize = 6;

/// Every preset, dense first: Qwen3 0.6B to 32B, Llama-3 8B and 70B, Gemma 3 4B to 27B;
/// then mixtures of experts: Qwen3-30B-A3B, gpt-oss-120b (not runnable), Qwen3-235B-A22B.
pub const PRESETS: [ArchPreset; 14] = [
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
        sliding_window: None,
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
        sliding_window: None,
    },
    gemma3("gemma3-4b", "Gemma-3-4B", 3.9, 2560, 34, 8, 4, 256, 10240),
    gemma3("gemma3-12b", "Gemma-3-12B", 11.8, 3840, 48, 16, 8, 256, 15360),
    gemma3("gemma3-27b", "Gemma-3-27B", 27.0, 5376, 62, 32, 16, 128, 21504),
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
        sliding_window: None,
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
        sliding_window: None,
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
        sliding_window: None,
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
        let family = match self.arch {
            "llama" => Family::Llama,
            "gemma3" => Family::Gemma3,
            _ => Family::Qwen3,
        };
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
            qk_norm: family != Family::Llama,
            bos_token_id: None,
            eos_token_ids: vec![],
            moe: None,
            gemma: self.sliding_window.map(|window| {
                Box::new(GemmaSpec {
                    sliding_window: window,
                    global_layers: (0..self.layers).map(|i| (i + 1) % GEMMA3_PATTERN == 0).collect(),
                    local_rope_theta: GEMMA3_LOCAL_ROPE_THETA,
                    global_rope_factor: GEMMA3_ROPE_FACTOR,
                    // llama.cpp's rule: hidden / heads for the 27B, the head size otherwise.
                    query_pre_attn_scalar: if self.layers == 62 {
                        (self.hidden / self.heads) as f64
                    } else {
                        self.head_dim as f64
                    },
                    norm_plus_one: false,
                })
            }),
        }
    }
}
