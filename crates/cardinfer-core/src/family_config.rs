//! The parts of a Hugging Face `config.json` only some families have: the routed experts of
//! Qwen3-MoE and Mixtral, Gemma 3's layer kinds and attention parameters, and the text part
//! of a multimodal Gemma 3 configuration.

use crate::spec::{invalid, limits, opt_f64, opt_usize, req_usize};
use crate::{CoreError, Family, GemmaSpec, MoeSpec};
use serde_json::Value;

/// The text model's configuration of a multimodal Gemma 3 `config.json` (`model_type`
/// `gemma3` with a `text_config`), marked `gemma3_text`; `None` otherwise.
pub(crate) fn gemma3_text_config(config: &Value) -> Option<Value> {
    let text = config.get("text_config").filter(|v| v.is_object())?;
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or_default();
    let arch = config.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or_default();
    let gemma = model_type == "gemma3" || arch.eq_ignore_ascii_case("Gemma3ForConditionalGeneration");
    let mut text = text.clone();
    if let Some(object) = text.as_object_mut().filter(|_| gemma) {
        object.insert("model_type".into(), Value::String("gemma3_text".into()));
        return Some(text);
    }
    None
}

/// Gemma 3's layer kinds, RoPE bases and scaling of a `config.json` (transformers 5's
/// `rope_parameters` per layer type, or 4's `rope_theta` / `rope_local_base_freq`, and
/// `layer_types` or `sliding_window_pattern`); `None` for other families.
pub(crate) fn gemma_from_hf_config(config: &Value, family: Family) -> Result<Option<Box<GemmaSpec>>, CoreError> {
    if family != Family::Gemma3 {
        return Ok(None);
    }
    let num_layers = req_usize(config, "num_hidden_layers")?.min(limits::LAYERS + 1);
    let global_layers: Vec<bool> = match config.get("layer_types") {
        Some(Value::Array(kinds)) => kinds
            .iter()
            .map(|k| match k.as_str() {
                Some("full_attention") => Ok(true),
                Some("sliding_attention") => Ok(false),
                _ => Err(invalid("layer_types", format!("unknown layer type {k}"))),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            let pattern = opt_usize(config, "sliding_window_pattern")?
                .or(opt_usize(config, "_sliding_window_pattern")?)
                .unwrap_or(6)
                .max(1);
            (0..num_layers).map(|i| (i + 1) % pattern == 0).collect()
        }
    };
    let by_type = config.get("rope_parameters").filter(|v| v.get("full_attention").is_some());
    let theta_of = |kind: &str, fallback: f64| -> Result<f64, CoreError> {
        match by_type.and_then(|p| p.get(kind)) {
            Some(p) => Ok(opt_f64(p, "rope_theta")?.unwrap_or(fallback)),
            None => Ok(fallback),
        }
    };
    let local_rope_theta = theta_of("sliding_attention", opt_f64(config, "rope_local_base_freq")?.unwrap_or(10_000.0))?;
    let scaling = match by_type.and_then(|p| p.get("full_attention")) {
        Some(p) => Some(p),
        None => config.get("rope_scaling").filter(|v| v.is_object()),
    };
    let global_rope_factor = match scaling {
        Some(s) => match s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str).unwrap_or("default") {
            "default" => 1.0,
            "linear" => opt_f64(s, "factor")?.unwrap_or(1.0),
            other => return Err(invalid("rope_scaling", format!("{other} scaling of Gemma 3 is not supported"))),
        },
        None => 1.0,
    };
    let head_dim = opt_usize(config, "head_dim")?.unwrap_or(256);
    Ok(Some(Box::new(GemmaSpec {
        sliding_window: opt_usize(config, "sliding_window")?.unwrap_or(4096),
        global_layers,
        local_rope_theta,
        global_rope_factor,
        query_pre_attn_scalar: opt_f64(config, "query_pre_attn_scalar")?.unwrap_or(head_dim as f64),
        norm_plus_one: true,
    })))
}

/// The experts of a Qwen3-MoE or Mixtral `config.json`; `None` for other families.
pub(crate) fn moe_from_hf_config(config: &Value, family: Family) -> Result<Option<MoeSpec>, CoreError> {
    if !matches!(family, Family::Qwen3Moe | Family::Mixtral) {
        return Ok(None);
    }
    let experts = match opt_usize(config, "num_experts")? {
        Some(n) => n,
        None => req_usize(config, "num_local_experts")?,
    };
    let experts_per_token = req_usize(config, "num_experts_per_tok")?;
    let num_layers = req_usize(config, "num_hidden_layers")?.min(limits::LAYERS + 1);
    let (expert_intermediate_size, norm_topk_prob, dense_layers) = match family {
        Family::Qwen3Moe => {
            let step = opt_usize(config, "decoder_sparse_step")?.unwrap_or(1);
            if step == 0 {
                return Err(invalid("decoder_sparse_step", "must be greater than zero"));
            }
            let only: Vec<usize> = match config.get("mlp_only_layers") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_u64().map(|n| n as usize))
                    .collect::<Option<_>>()
                    .ok_or_else(|| invalid("mlp_only_layers", "expected a list of layer indices"))?,
                Some(other) => return Err(invalid("mlp_only_layers", format!("expected a list, found {other}"))),
            };
            if let Some(&layer) = only.iter().find(|&&l| l >= num_layers) {
                return Err(invalid("mlp_only_layers", format!("layer {layer} is not one of the {num_layers} layers")));
            }
            // transformers: layer `i` is sparse when it is not in `mlp_only_layers` and
            // `(i + 1) % decoder_sparse_step == 0`.
            let dense = (0..num_layers).filter(|i| only.contains(i) || (i + 1) % step != 0).collect();
            let norm = config.get("norm_topk_prob").and_then(Value::as_bool).unwrap_or(false);
            (req_usize(config, "moe_intermediate_size")?, norm, dense)
        }
        _ => (req_usize(config, "intermediate_size")?, true, Vec::new()),
    };
    Ok(Some(MoeSpec { experts, experts_per_token, expert_intermediate_size, norm_topk_prob, dense_layers }))
}
