//! `ModelSpec` from GGUF metadata.

use super::GgufFile;
use crate::QuantError;
use cardinfer_core::{limits, CoreError, Family, GemmaSpec, ModelSpec, MoeSpec, RopeStyle};

/// Our converter's list of Gemma 3's global layers (llama.cpp reads a fixed pattern).
pub const GLOBAL_LAYERS_KEY: &str = "cardinfer.gemma3.global_layers";

impl GgufFile {
    /// Reads the model's hyper-parameters from the `{arch}.*` and `tokenizer.ggml.*` keys.
    pub fn model_spec(&self) -> Result<ModelSpec, QuantError> {
        let arch = self.get_str("general.architecture")?.to_string();
        let spec_err = |source| QuantError::Spec { path: self.path().to_path_buf(), source };
        let mut family = Family::from_name(&arch).map_err(spec_err)?;
        let key = |k: &str| format!("{arch}.{k}");
        let expert_count = self.get_u64(&key("expert_count"))?.filter(|&n| n > 0);
        if family == Family::Llama && expert_count.is_some() {
            // Mixtral is written as the `llama` architecture with experts.
            family = Family::Mixtral;
        }
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
        // Gemma's turns end with `<end_of_turn>`, which llama.cpp also treats as the end of
        // generation; its files name only `<eos>`.
        if family == Family::Gemma3 {
            let tokens = self.metadata().get("tokenizer.ggml.tokens").and_then(|v| v.as_array());
            let eot = tokens.and_then(|t| t.iter().position(|v| v.as_str() == Some("<end_of_turn>")));
            if let Some(id) = eot.map(|i| i as u32).filter(|id| !eos_token_ids.contains(id)) {
                eos_token_ids.push(id);
            }
        }
        let num_layers = req("block_count")?;
        let moe = match (family, expert_count) {
            (Family::Qwen3Moe | Family::Mixtral, Some(experts)) => Some(self.moe_spec(&arch, experts, num_layers)?),
            (Family::Qwen3Moe, None) => return Err(spec_err(CoreError::MissingField { key: key("expert_count") })),
            _ => None,
        };
        let gemma = match family {
            Family::Gemma3 => Some(Box::new(self.gemma_spec(&arch, num_layers, num_heads, hidden_size, head_dim)?)),
            _ => None,
        };
        let spec = ModelSpec {
            family,
            vocab_size,
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: self.get_f64(&key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-6),
            rope_theta: self.get_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0),
            // Llama 3.1 scaling travels as the `rope_freqs.weight` tensor in GGUF.
            rope_scaling: None,
            rope_style: match family {
                Family::Llama | Family::Mistral | Family::Mixtral => RopeStyle::Interleaved,
                Family::Qwen2 | Family::Qwen3 | Family::Qwen3Moe | Family::Gemma3 => RopeStyle::Half,
            },
            context_length: self.get_u64(&key("context_length"))?.map_or(4096, |v| v as usize),
            tie_word_embeddings: self.tensor("output.weight").is_none(),
            qkv_bias: self.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: self.tensor("blk.0.attn_q_norm.weight").is_some(),
            bos_token_id: self.get_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32),
            eos_token_ids,
            moe,
            gemma,
        };
        spec.validate().map_err(|e| spec_err(gguf_key(e, &arch)))?;
        Ok(spec)
    }
}

impl GgufFile {
    /// The routed experts of an `{arch}` file with `experts` per layer: `expert_used_count`,
    /// `expert_feed_forward_length` (else `feed_forward_length`, as Mixtral files have),
    /// `expert_weights_norm` (llama.cpp normalizes the top-k weights of both families
    /// unless it says otherwise), and the layers without a router tensor are dense.
    /// Gemma 3's layer kinds and attention parameters as llama.cpp reads them: a global
    /// layer every `attention.sliding_window_pattern` (6 when absent) unless the file lists
    /// them (`cardinfer.gemma3.global_layers`, written by our converter), the local RoPE
    /// base 10000, linear `rope.scaling.factor` on global layers, and the score scale of
    /// `head_dim` (hidden / heads for the 62-layer 27B, as llama.cpp); norms stored as `1 + w`.
    fn gemma_spec(
        &self,
        arch: &str,
        num_layers: usize,
        num_heads: usize,
        hidden_size: usize,
        head_dim: usize,
    ) -> Result<GemmaSpec, QuantError> {
        let key = |k: &str| format!("{arch}.{k}");
        let listed =
            self.metadata().get(GLOBAL_LAYERS_KEY).and_then(|v| v.as_array()).map(|items| {
                items.iter().map(|v| matches!(v, crate::gguf::GgufValue::Bool(true))).collect::<Vec<bool>>()
            });
        let global_layers = match listed {
            Some(list) => list,
            None => {
                let pattern = self.get_u64(&key("attention.sliding_window_pattern"))?.unwrap_or(6).max(1) as usize;
                (0..num_layers.min(limits::LAYERS + 1)).map(|i| (i + 1) % pattern == 0).collect()
            }
        };
        let scalar = match self.get_f64(&key("attention.query_pre_attn_scalar"))? {
            Some(v) => v,
            None if num_layers == 62 => (hidden_size / num_heads.max(1)) as f64,
            None => head_dim as f64,
        };
        let factor = match self.metadata().get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            Some("linear") => self.get_f64(&key("rope.scaling.factor"))?.unwrap_or(1.0),
            _ => 1.0,
        };
        Ok(GemmaSpec {
            sliding_window: self.get_u64(&key("attention.sliding_window"))?.map_or(4096, |v| v as usize),
            global_layers,
            local_rope_theta: self.get_f64(&key("rope.local_freq_base"))?.unwrap_or(10_000.0),
            global_rope_factor: factor,
            query_pre_attn_scalar: scalar,
            norm_plus_one: false,
        })
    }

    fn moe_spec(&self, arch: &str, experts: u64, num_layers: usize) -> Result<MoeSpec, QuantError> {
        let key = |k: &str| format!("{arch}.{k}");
        let spec_err = |source| QuantError::Spec { path: self.path().to_path_buf(), source };
        let used = self
            .get_u64(&key("expert_used_count"))?
            .ok_or_else(|| spec_err(CoreError::MissingField { key: key("expert_used_count") }))?;
        let ff = match self.get_u64(&key("expert_feed_forward_length"))? {
            Some(ff) => ff,
            None => self
                .get_u64(&key("feed_forward_length"))?
                .ok_or_else(|| spec_err(CoreError::MissingField { key: key("expert_feed_forward_length") }))?,
        };
        let norm_topk_prob = match self.metadata().get(&key("expert_weights_norm")) {
            Some(value) => value.as_bool().ok_or_else(|| QuantError::Metadata {
                path: self.path().to_path_buf(),
                key: key("expert_weights_norm"),
                reason: "expected a boolean".into(),
            })?,
            None => true,
        };
        // `num_layers` is checked against its limit by `validate`, after this: scan no
        // more layers than the limit allows.
        let dense_layers = (0..num_layers.min(limits::LAYERS + 1))
            .filter(|l| self.tensor(&format!("blk.{l}.ffn_gate_inp.weight")).is_none())
            .collect();
        let clamp = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(MoeSpec {
            experts: clamp(experts),
            experts_per_token: clamp(used),
            expert_intermediate_size: clamp(ff),
            norm_topk_prob,
            dense_layers,
        })
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
        "num_experts" => "expert_count",
        "num_experts_per_tok" => "expert_used_count",
        "moe_intermediate_size" => "expert_feed_forward_length",
        "bos_token_id/eos_token_id" => {
            return CoreError::InvalidField { key: "tokenizer.ggml.bos_token_id/eos_token_id".into(), reason }
        }
        _ => return CoreError::InvalidField { key, reason },
    };
    CoreError::InvalidField { key: format!("{arch}.{suffix}"), reason }
}
