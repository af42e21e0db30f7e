//! `ModelSpec` from GGUF metadata.

use super::GgufFile;
use crate::QuantError;
use cardinfer_core::{CoreError, Family, ModelSpec, RopeStyle};

impl GgufFile {
    /// Reads the model's hyper-parameters from the `{arch}.*` and `tokenizer.ggml.*` keys.
    pub fn model_spec(&self) -> Result<ModelSpec, QuantError> {
        let arch = self.get_str("general.architecture")?.to_string();
        let spec_err = |source| QuantError::Spec { path: self.path().to_path_buf(), source };
        let family = Family::from_name(&arch).map_err(spec_err)?;
        let key = |k: &str| format!("{arch}.{k}");
        let req = |k: &str| -> Result<usize, QuantError> {
            self.get_u64(&key(k))?.map(|v| v as usize).ok_or_else(|| spec_err(CoreError::MissingField { key: key(k) }))
        };
        let hidden_size = req("embedding_length")?;
        let num_heads = req("attention.head_count")?;
        let num_kv_heads = self.get_u64(&key("attention.head_count_kv"))?.map_or(num_heads, |v| v as usize);
        let head_dim =
            self.get_u64(&key("attention.key_length"))?.map_or(hidden_size / num_heads.max(1), |v| v as usize);
        let vocab_size = match self.get_u64(&key("vocab_size"))? {
            Some(v) => v as usize,
            None => match self.metadata().get("tokenizer.ggml.tokens").and_then(|v| v.as_array()) {
                Some(tokens) => tokens.len(),
                None => self
                    .tensor("token_embd.weight")
                    .map(|t| t.shape[0])
                    .ok_or_else(|| spec_err(CoreError::MissingField { key: key("vocab_size") }))?,
            },
        };
        let mut eos_token_ids = Vec::new();
        for k in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(id) = self.get_u64(k)? {
                if !eos_token_ids.contains(&(id as u32)) {
                    eos_token_ids.push(id as u32);
                }
            }
        }
        let spec = ModelSpec {
            family,
            vocab_size,
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            num_layers: req("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.get_f64(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6),
            rope_theta: self.get_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            // Llama 3.1 scaling travels as the `rope_freqs.weight` tensor in GGUF.
            rope_scaling: None,
            rope_style: match family {
                Family::Llama | Family::Mistral => RopeStyle::Interleaved,
                Family::Qwen2 | Family::Qwen3 => RopeStyle::Half,
            },
            context_length: self.get_u64(&key("context_length"))?.map_or(4096, |v| v as usize),
            tie_word_embeddings: self.tensor("output.weight").is_none(),
            qkv_bias: self.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: self.tensor("blk.0.attn_q_norm.weight").is_some(),
            bos_token_id: self.get_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32),
            eos_token_ids,
        };
        spec.validate().map_err(|e| spec_err(gguf_key(e, &arch)))?;
        Ok(spec)
    }
}

/// `error` naming the GGUF key (`qwen3.block_count`) where it names the `config.json` one
/// (`num_hidden_layers`) that `ModelSpec::validate` uses.
fn gguf_key(error: CoreError, arch: &str) -> CoreError {
    let CoreError::InvalidField { key, reason } = error else { return error };
    let suffix = match key.as_str() {
        "vocab_size" => "vocab_size",
        "hidden_size" => "embedding_length",
        "intermediate_size" => "feed_forward_length",
        "num_hidden_layers" => "block_count",
        "num_attention_heads" => "attention.head_count",
        "num_key_value_heads" => "attention.head_count_kv",
        "head_dim" => "attention.key_length",
        "context_length" => "context_length",
        "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
        "rope_theta" => "rope.freq_base",
        "bos_token_id/eos_token_id" => {
            return CoreError::InvalidField { key: "tokenizer.ggml.bos_token_id/eos_token_id".into(), reason }
        }
        _ => return CoreError::InvalidField { key, reason },
    };
    CoreError::InvalidField { key: format!("{arch}.{suffix}"), reason }
}
