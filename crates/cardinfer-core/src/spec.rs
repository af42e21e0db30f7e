//! `ModelSpec`: a decoder model's family and hyper-parameters in typed fields.

use crate::family_config::{gemma3_text_config, gemma_from_hf_config, moe_from_hf_config};
use crate::CoreError;
use serde_json::Value;

/// Architecture family. All run through one generic decoder block; the family decides
/// the few places where they differ (biases, q/k norms, defaults, a mixture-of-experts
/// MLP described by [`ModelSpec::moe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Llama 2 / 3 / 3.1 / 3.2, SmolLM, and other `llama`-architecture models.
    Llama,
    /// Mistral (Llama-shaped; sliding window is ignored, full attention is exact for
    /// contexts up to the window).
    Mistral,
    /// Qwen2 / Qwen2.5: biases on q, k and v.
    Qwen2,
    /// Qwen3: RMS norm on q and k per head, `head_dim` independent of hidden / heads.
    Qwen3,
    /// Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): Qwen3's attention, routed experts in
    /// place of the MLP (dense MLPs in `mlp_only_layers`).
    Qwen3Moe,
    /// Mixtral: Llama's attention, routed experts in every layer's MLP.
    Mixtral,
    /// Gemma 3 (text): sliding-window and global layers with their own RoPE bases, q/k
    /// norms, norms after attention and the MLP too, GeLU-tanh, embeddings scaled by
    /// √hidden ([`GemmaSpec`]).
    Gemma3,
}

impl Family {
    /// Parses an architecture name (`llama`, `LlamaForCausalLM`, `qwen2`, ...).
    pub fn from_name(name: &str) -> Result<Self, CoreError> {
        let lower = name.to_ascii_lowercase();
        let family = match lower.as_str() {
            "llama" | "llamaforcausallm" => Self::Llama,
            "mistral" | "mistralforcausallm" => Self::Mistral,
            "qwen2" | "qwen2forcausallm" => Self::Qwen2,
            "qwen3" | "qwen3forcausallm" => Self::Qwen3,
            "qwen3_moe" | "qwen3moe" | "qwen3moeforcausallm" => Self::Qwen3Moe,
            "mixtral" | "mixtralforcausallm" => Self::Mixtral,
            "gemma3" | "gemma3_text" | "gemma3forcausallm" | "gemma3forconditionalgeneration" => Self::Gemma3,
            _ => return Err(CoreError::UnsupportedArchitecture { arch: name.to_string() }),
        };
        Ok(family)
    }

    /// The name GGUF uses for `general.architecture`.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Mistral => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Qwen3Moe => "qwen3moe",
            Self::Mixtral => "llama",
            Self::Gemma3 => "gemma3",
        }
    }

    /// Whether q and k get a per-head RMS norm (Qwen3, Qwen3-MoE, Gemma 3).
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Self::Qwen3 | Self::Qwen3Moe | Self::Gemma3)
    }
}

/// The routed experts that replace the MLP of a mixture-of-experts layer: a router picks
/// `experts_per_token` of `experts` SwiGLU MLPs per token and sums their outputs weighted
/// by the router's probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeSpec {
    /// Experts per layer.
    pub experts: usize,
    /// Experts each token is routed to (top-k).
    pub experts_per_token: usize,
    /// Width of one expert's hidden layer.
    pub expert_intermediate_size: usize,
    /// The top-k probabilities are divided by their sum (Mixtral always; Qwen3-MoE with
    /// `norm_topk_prob`), else used as the softmax over all experts gave them.
    pub norm_topk_prob: bool,
    /// Layers whose MLP is dense (`intermediate_size` wide) rather than routed, ascending.
    pub dense_layers: Vec<usize>,
}

/// Gemma 3's departures from the generic decoder block: per layer, attention within a
/// sliding window or over the whole context, each kind with its own RoPE base; scores
/// scaled by `query_pre_attn_scalar`; RMS norms that multiply by `1 + w` (Hugging Face
/// files; GGUF files store `1 + w`); norms after attention and after the MLP too;
/// GeLU-tanh; embeddings scaled by √hidden.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmaSpec {
    /// Positions a sliding-window layer's query sees: itself and the `window - 1` before.
    pub sliding_window: usize,
    /// Per layer: `true` for a global (full attention) layer, `false` for a sliding one.
    pub global_layers: Vec<bool>,
    /// RoPE base of the sliding-window layers (`ModelSpec::rope_theta` is the global ones').
    pub local_rope_theta: f64,
    /// Linear RoPE scaling of the global layers (positions divided by it), 1 for none.
    pub global_rope_factor: f64,
    /// Scores are scaled by `query_pre_attn_scalar^-0.5` (not `head_dim^-0.5`).
    pub query_pre_attn_scalar: f64,
    /// The stored norm weights are `w` of `1 + w` (Hugging Face), not `1 + w` (GGUF).
    pub norm_plus_one: bool,
}

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopeStyle {
    /// Pairs (0,1), (2,3), ...: GGUF `llama` files, whose q/k rows were permuted by the
    /// converter (Candle's `rope_i`).
    Interleaved,
    /// Pairs (i, i + d/2): Hugging Face checkpoints and GGUF qwen2/qwen3 ("NeoX",
    /// Candle's `rope`).
    Half,
}

/// Frequency scaling applied to RoPE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1 / 3.2 long-context scaling.
    Llama3 {
        /// Overall scale factor (8 for Llama 3.1, 32 for 3.2).
        factor: f64,
        /// Wavelengths longer than `original / low_freq_factor` are scaled fully.
        low_freq_factor: f64,
        /// Wavelengths shorter than `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// Context the model was pre-trained with.
        original_max_position_embeddings: usize,
    },
}

/// The hyper-parameters of a decoder-only transformer, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Architecture family.
    pub family: Family,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (GQA: divides `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon of every RMS norm.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Optional RoPE frequency scaling.
    pub rope_scaling: Option<RopeScaling>,
    /// Dimension pairing of RoPE (depends on the file format too).
    pub rope_style: RopeStyle,
    /// Longest context the model supports (positions).
    pub context_length: usize,
    /// The output head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// q, k and v projections carry a bias.
    pub qkv_bias: bool,
    /// q and k get a per-head RMS norm before RoPE.
    pub qk_norm: bool,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
    /// The routed experts of a mixture-of-experts model; `None` for a dense model.
    pub moe: Option<MoeSpec>,
    /// Gemma 3's layer kinds and departures from the generic block; `None` for others.
    pub gemma: Option<Box<GemmaSpec>>,
}

impl ModelSpec {
    /// Parses a Hugging Face `config.json` text.
    pub fn from_hf_config_str(text: &str) -> Result<Self, CoreError> {
        let value: Value = serde_json::from_str(text)?;
        Self::from_hf_config(&value)
    }

    /// Parses a Hugging Face `config.json` value.
    ///
    /// Accepts both `rope_scaling` and the newer `rope_parameters` spellings.
    pub fn from_hf_config(config: &Value) -> Result<Self, CoreError> {
        // A Gemma 3 checkpoint with a vision tower (`Gemma3ForConditionalGeneration`): its
        // text part's parameters are under `text_config`.
        if let Some(text) = gemma3_text_config(config) {
            return Self::from_hf_config(&text);
        }
        let arch = config
            .get("model_type")
            .and_then(Value::as_str)
            .or_else(|| config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str))
            .ok_or_else(|| CoreError::MissingField { key: "model_type".into() })?;
        let family = Family::from_name(arch)?;
        let hidden_size = req_usize(config, "hidden_size")?;
        let num_heads = req_usize(config, "num_attention_heads")?;
        let num_kv_heads = opt_usize(config, "num_key_value_heads")?.unwrap_or(num_heads);
        let head_dim = match opt_usize(config, "head_dim")? {
            Some(d) => d,
            None => hidden_size / num_heads.max(1),
        };
        let rope_params = config.get("rope_parameters").filter(|v| v.is_object());
        let rope_scaling_value = config.get("rope_scaling").filter(|v| v.is_object()).or(rope_params);
        // Gemma 3 (transformers 5): RoPE parameters per layer type; the global layers' here.
        let rope_params = match rope_params.and_then(|p| p.get("full_attention")) {
            Some(full) if family == Family::Gemma3 => Some(full),
            _ => rope_params,
        };
        let rope_theta = match opt_f64(config, "rope_theta")? {
            Some(t) => t,
            None => match rope_params {
                Some(p) => opt_f64(p, "rope_theta")?.unwrap_or(10_000.0),
                None => 10_000.0,
            },
        };
        let rope_scaling = match rope_scaling_value {
            // Gemma 3's linear scaling of its global layers is `GemmaSpec::global_rope_factor`.
            Some(_) if family == Family::Gemma3 => None,
            Some(v) => parse_rope_scaling(v)?,
            None => None,
        };
        let default_bias = family == Family::Qwen2;
        let moe = moe_from_hf_config(config, family)?;
        let gemma = gemma_from_hf_config(config, family)?;
        let qkv_bias = config.get("attention_bias").and_then(Value::as_bool).unwrap_or(default_bias);
        let spec = Self {
            family,
            vocab_size: req_usize(config, "vocab_size")?,
            hidden_size,
            intermediate_size: req_usize(config, "intermediate_size")?,
            num_layers: req_usize(config, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: opt_f64(config, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            rope_style: RopeStyle::Half,
            context_length: opt_usize(config, "max_position_embeddings")?.unwrap_or(4096),
            tie_word_embeddings: config.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            qkv_bias,
            qk_norm: family.has_qk_norm(),
            bos_token_id: opt_usize(config, "bos_token_id")?.map(|v| v.min(u32::MAX as usize) as u32),
            eos_token_ids: token_list(config.get("eos_token_id")),
            moe,
            gemma,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks that the numbers are consistent (non-zero, GQA divisible).
    pub fn validate(&self) -> Result<(), CoreError> {
        let counts = [
            ("vocab_size", self.vocab_size, limits::VOCAB),
            ("hidden_size", self.hidden_size, limits::WIDTH),
            ("intermediate_size", self.intermediate_size, limits::WIDTH),
            ("num_hidden_layers", self.num_layers, limits::LAYERS),
            ("num_attention_heads", self.num_heads, limits::HEADS),
            ("num_key_value_heads", self.num_kv_heads, limits::HEADS),
            ("head_dim", self.head_dim, limits::HEAD_DIM),
            ("context_length", self.context_length, limits::CONTEXT),
        ];
        check_counts(&counts)?;
        let token_ids = self.bos_token_id.iter().chain(&self.eos_token_ids);
        if let Some(id) = token_ids.copied().find(|&id| id as usize >= self.vocab_size) {
            return Err(invalid(
                "bos_token_id/eos_token_id",
                format!("{id} is outside the vocabulary of {}", self.vocab_size),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(invalid("rms_norm_eps", format!("{} is not a positive number", self.rms_norm_eps)));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(invalid(
                "num_key_value_heads",
                format!("{} query heads are not a multiple of {} KV heads", self.num_heads, self.num_kv_heads),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(invalid("head_dim", "RoPE needs an even head dimension"));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(invalid("rope_theta", format!("{} is not a positive number", self.rope_theta)));
        }
        if let Some(moe) = &self.moe {
            self.validate_moe(moe)?;
        }
        if let Some(g) = &self.gemma {
            check_counts(&[("sliding_window", g.sliding_window, limits::CONTEXT)])?;
            if g.global_layers.len() != self.num_layers {
                return Err(invalid(
                    "layer_types",
                    format!("{} layer types for {} layers", g.global_layers.len(), self.num_layers),
                ));
            }
            for (key, v) in [
                ("rope_local_base_freq", g.local_rope_theta),
                ("rope_scaling.factor", g.global_rope_factor),
                ("query_pre_attn_scalar", g.query_pre_attn_scalar),
            ] {
                if !(v.is_finite() && v > 0.0) {
                    return Err(invalid(key, format!("{v} is not a positive number")));
                }
            }
        }
        Ok(())
    }

    /// Whether layer `layer` attends within a sliding window (Gemma 3's local layers):
    /// the window, else `None` (full attention).
    pub fn sliding_window(&self, layer: usize) -> Option<usize> {
        let g = self.gemma.as_ref()?;
        match g.global_layers.get(layer) {
            Some(false) => Some(g.sliding_window),
            _ => None,
        }
    }

    fn validate_moe(&self, moe: &MoeSpec) -> Result<(), CoreError> {
        let counts = [
            ("num_experts", moe.experts, limits::EXPERTS),
            ("num_experts_per_tok", moe.experts_per_token, limits::EXPERTS),
            ("moe_intermediate_size", moe.expert_intermediate_size, limits::WIDTH),
        ];
        check_counts(&counts)?;
        if moe.experts_per_token > moe.experts {
            return Err(invalid(
                "num_experts_per_tok",
                format!("{} experts per token, but a layer has only {}", moe.experts_per_token, moe.experts),
            ));
        }
        if let Some(&layer) = moe.dense_layers.iter().find(|&&l| l >= self.num_layers) {
            return Err(invalid(
                "mlp_only_layers",
                format!("layer {layer} is not one of the {} layers", self.num_layers),
            ));
        }
        Ok(())
    }

    /// Whether layer `layer`'s MLP is routed experts (a mixture-of-experts layer).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.moe.as_ref().is_some_and(|moe| moe.dense_layers.binary_search(&layer).is_err())
    }

    /// Whether the stored norm weights are `w` of Gemma's `1 + w` (Hugging Face files),
    /// so that readers add 1.
    pub fn norms_plus_one(&self) -> bool {
        self.gemma.as_ref().is_some_and(|g| g.norm_plus_one)
    }

    /// Bytes of K and V for one token across all layers, stored as `kv`.
    pub fn kv_bytes_per_token(&self, kv: crate::KvType) -> u64 {
        2 * (self.num_layers * self.num_kv_heads) as u64 * kv.row_bytes(self.head_dim)
    }
}

fn parse_rope_scaling(v: &Value) -> Result<Option<RopeScaling>, CoreError> {
    let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str).unwrap_or("default");
    match kind {
        "default" | "none" => Ok(None),
        "llama3" => {
            let num = |key: &str| {
                v.get(key)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| CoreError::MissingField { key: format!("rope_scaling.{key}") })
            };
            Ok(Some(RopeScaling::Llama3 {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")? as usize,
            }))
        }
        other => Err(invalid("rope_scaling", format!("rope type `{other}` is not supported (llama3 is)"))),
    }
}

/// The largest counts a model file may state: far beyond any released model, small
/// enough that what they imply (per-layer state, embedding rows, KV positions) is checked
/// before anything is allocated. A file over one is refused, naming the key and the limit.
pub mod limits {
    /// Transformer layers.
    pub const LAYERS: usize = 1024;
    /// Hidden and intermediate widths.
    pub const WIDTH: usize = 1 << 20;
    /// Attention heads (query or key/value).
    pub const HEADS: usize = 4096;
    /// Elements per head.
    pub const HEAD_DIM: usize = 4096;
    /// Vocabulary entries.
    pub const VOCAB: usize = 1 << 24;
    /// Context positions.
    pub const CONTEXT: usize = 1 << 24;
    /// Experts per mixture-of-experts layer.
    pub const EXPERTS: usize = 4096;
}

/// Each `(key, value, limit)`: the value is at least 1 and at most the limit.
pub(crate) fn check_counts(counts: &[(&str, usize, usize)]) -> Result<(), CoreError> {
    for &(key, value, most) in counts {
        if value == 0 {
            return Err(invalid(key, "must be greater than zero"));
        }
        if value > most {
            return Err(invalid(key, format!("{value} is more than this engine's limit of {most}")));
        }
    }
    Ok(())
}

pub(crate) fn invalid(key: &str, reason: impl Into<String>) -> CoreError {
    CoreError::InvalidField { key: key.to_string(), reason: reason.into() }
}

pub(crate) fn opt_usize(config: &Value, key: &str) -> Result<Option<usize>, CoreError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| invalid(key, format!("expected a non-negative integer, found {v}"))),
    }
}

pub(crate) fn opt_f64(config: &Value, key: &str) -> Result<Option<f64>, CoreError> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| invalid(key, format!("expected a number, found {v}"))),
    }
}

pub(crate) fn req_usize(config: &Value, key: &str) -> Result<usize, CoreError> {
    opt_usize(config, key)?.ok_or_else(|| CoreError::MissingField { key: key.to_string() })
}

fn token_list(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n.min(u32::MAX as u64) as u32]).unwrap_or_default(),
        Some(Value::Array(items)) => {
            items.iter().filter_map(Value::as_u64).map(|n| n.min(u32::MAX as u64) as u32).collect()
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA31: &str = r#"{
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 131072,
        "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009],
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    }"#;

    #[test]
    fn parses_llama31_with_rope_scaling() {
        let spec = ModelSpec::from_hf_config_str(LLAMA31).unwrap();
        assert_eq!(spec.family, Family::Llama);
        assert_eq!(spec.head_dim, 128);
        assert_eq!(spec.eos_token_ids, vec![128001, 128008, 128009]);
        assert!(matches!(spec.rope_scaling, Some(RopeScaling::Llama3 { factor, .. }) if factor == 8.0));
        assert!(!spec.qkv_bias);
    }

    #[test]
    fn accepts_rope_parameters_spelling() {
        let text = LLAMA31.replace("\"rope_theta\": 500000.0,", "").replace("\"rope_scaling\"", "\"rope_parameters\"");
        let text = text.replace("\"rope_type\": \"llama3\"", "\"rope_type\": \"llama3\", \"rope_theta\": 500000.0");
        let spec = ModelSpec::from_hf_config_str(&text).unwrap();
        assert_eq!(spec.rope_theta, 500000.0);
        assert!(spec.rope_scaling.is_some());
    }

    #[test]
    fn qwen3_head_dim_is_independent() {
        let text = r#"{"model_type": "qwen3", "vocab_size": 512, "hidden_size": 64, "head_dim": 32,
            "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
            "num_key_value_heads": 2, "tie_word_embeddings": true}"#;
        let spec = ModelSpec::from_hf_config_str(text).unwrap();
        assert_eq!(spec.head_dim, 32);
        assert!(spec.qk_norm && spec.tie_word_embeddings && !spec.qkv_bias);
    }

    #[test]
    fn errors_name_the_problem() {
        let err = ModelSpec::from_hf_config_str(r#"{"model_type": "gpt_neox"}"#).unwrap_err();
        assert!(err.to_string().contains("gpt_neox"), "{err}");
        let err = ModelSpec::from_hf_config_str(r#"{"model_type": "llama", "hidden_size": 8}"#).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
        let bad_gqa = LLAMA31.replace("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 5");
        let err = ModelSpec::from_hf_config_str(&bad_gqa).unwrap_err();
        assert!(err.to_string().contains("KV heads"), "{err}");
        assert!(ModelSpec::from_hf_config_str("{not json").is_err());
    }

    #[test]
    fn absurd_counts_and_values_are_refused_before_anything_is_allocated() {
        let cases = [
            ("\"num_hidden_layers\": 32", "\"num_hidden_layers\": 4294967296", "num_hidden_layers"),
            ("\"vocab_size\": 128256", "\"vocab_size\": 18446744073709551615", "vocab_size"),
            ("\"num_attention_heads\": 32", "\"num_attention_heads\": 65536", "num_attention_heads"),
            ("\"rope_theta\": 500000.0", "\"rope_theta\": \"abc\"", "rope_theta"),
            ("\"rms_norm_eps\": 1e-5", "\"rms_norm_eps\": -1.0", "rms_norm_eps"),
            ("\"max_position_embeddings\": 131072", "\"max_position_embeddings\": 4294967296", "context_length"),
        ];
        for (from, to, key) in cases {
            assert!(LLAMA31.contains(from), "{from}");
            let err = ModelSpec::from_hf_config_str(&LLAMA31.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains(key), "{to}: {err}");
        }
        let huge = LLAMA31.replace("\"num_hidden_layers\": 32", "\"num_hidden_layers\": 4294967296");
        let err = ModelSpec::from_hf_config_str(&huge).unwrap_err().to_string();
        assert!(err.contains("limit of 1024"), "{err}");
        let eos = LLAMA31.replace("\"vocab_size\": 128256", "\"vocab_size\": 1000");
        let err = ModelSpec::from_hf_config_str(&eos).unwrap_err().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
    }
}
