//! The mapping from a Hugging Face checkpoint to llama.cpp's GGUF conventions: tensor
//! names, the q/k row permutation of Llama-style models, and architecture metadata.

use crate::gguf::{GgufValue, GgufWriter};
use cardinfer_core::{Family, ModelSpec, RopeScaling};

/// llama.cpp's name for a Hugging Face tensor of a `family` model, or `None` for tensors
/// GGUF files do not carry (e.g. `rotary_emb.inv_freq`) and names this mapping does not
/// know. (Gemma 3's `post_attention_layernorm` is the attention output's norm, Llama's the
/// norm before the MLP.)
pub fn gguf_tensor_name(hf: &str, family: Family) -> Option<String> {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, role) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let gemma = family == Family::Gemma3;
    let role = match role {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" if gemma => "post_attention_norm.weight",
        "pre_feedforward_layernorm.weight" if gemma => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" if gemma => "post_ffw_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.q_norm.weight" => "attn_q_norm.weight",
        "self_attn.k_norm.weight" => "attn_k_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "mlp.gate.weight" | "block_sparse_moe.gate.weight" => "ffn_gate_inp.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{role}"))
}

/// One routed expert's projection in a Hugging Face checkpoint (`…mlp.experts.3.up_proj.weight`,
/// Mixtral's `…block_sparse_moe.experts.3.w3.weight`): the layer, the GGUF name of the
/// 3-D tensor that holds every expert's (`blk.0.ffn_up_exps.weight`) and the expert's
/// index in it. `None` for any other name.
pub fn gguf_expert_tensor(hf: &str) -> Option<(usize, String, usize)> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, role) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let role = role.strip_prefix("mlp.experts.").or_else(|| role.strip_prefix("block_sparse_moe.experts."))?;
    let (expert, proj) = role.split_once('.')?;
    let expert: usize = expert.parse().ok()?;
    let merged = match proj {
        "gate_proj.weight" | "w1.weight" => "ffn_gate_exps.weight",
        "up_proj.weight" | "w3.weight" => "ffn_up_exps.weight",
        "down_proj.weight" | "w2.weight" => "ffn_down_exps.weight",
        _ => return None,
    };
    Some((layer, format!("blk.{layer}.{merged}"), expert))
}

/// How a Hugging Face checkpoint of `family` names, within a layer, its router, its
/// experts' prefix (expert `e`'s tensors are `<prefix>.<e>.<projection>`) and their gate,
/// up and down projections (Mixtral: `w1`, `w3`, `w2`).
pub fn hf_expert_names(family: Family) -> (&'static str, &'static str, [&'static str; 3]) {
    match family {
        Family::Mixtral => {
            ("block_sparse_moe.gate.weight", "block_sparse_moe.experts", ["w1.weight", "w3.weight", "w2.weight"])
        }
        _ => ("mlp.gate.weight", "mlp.experts", ["gate_proj.weight", "up_proj.weight", "down_proj.weight"]),
    }
}

/// How many heads' rows a Hugging Face tensor must be permuted by for GGUF (llama.cpp
/// converts Llama/Mistral q/k projections to interleaved RoPE pairs), or `None`.
pub fn qk_permutation_heads(spec: &ModelSpec, hf: &str) -> Option<usize> {
    if !matches!(spec.family, Family::Llama | Family::Mistral | Family::Mixtral) {
        return None;
    }
    if hf.ends_with("q_proj.weight") || hf.ends_with("q_proj.bias") {
        Some(spec.num_heads)
    } else if hf.ends_with("k_proj.weight") || hf.ends_with("k_proj.bias") {
        Some(spec.num_kv_heads)
    } else {
        None
    }
}

/// llama.cpp's row permutation of q/k for interleaved RoPE (`convert_hf_to_gguf.py`):
/// within each head, row `(pair, i)` moves to `(i, pair)`. `cols` is 1 for a bias.
pub fn permute_qk_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for pair in 0..2 {
            for i in 0..half {
                let src = (h * 2 + pair) * half + i;
                let dst = (h * half + i) * 2 + pair;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&values[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The hyper-parameters llama.cpp reads from `<arch>.*` metadata keys.
#[derive(Debug, Clone, Copy)]
pub struct ArchMetadata<'a> {
    /// GGUF architecture name (`qwen3`, `llama`, …).
    pub arch: &'a str,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// Model width.
    pub hidden: usize,
    /// Feed-forward width.
    pub ffn: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
}

impl ArchMetadata<'_> {
    /// Writes `general.architecture`, `general.name` and the `<arch>.*` keys into `w`.
    pub fn write(&self, w: &mut GgufWriter<'_>, name: &str) {
        let arch = self.arch;
        let u32_of = |v: usize| GgufValue::U32(v as u32);
        w.metadata("general.architecture", GgufValue::String(arch.into()));
        w.metadata("general.name", GgufValue::String(name.into()));
        w.metadata(format!("{arch}.context_length"), u32_of(self.context_length));
        w.metadata(format!("{arch}.embedding_length"), u32_of(self.hidden));
        w.metadata(format!("{arch}.feed_forward_length"), u32_of(self.ffn));
        w.metadata(format!("{arch}.block_count"), u32_of(self.layers));
        w.metadata(format!("{arch}.attention.head_count"), u32_of(self.heads));
        w.metadata(format!("{arch}.attention.head_count_kv"), u32_of(self.kv_heads));
        w.metadata(format!("{arch}.attention.key_length"), u32_of(self.head_dim));
        w.metadata(format!("{arch}.attention.value_length"), u32_of(self.head_dim));
        w.metadata(format!("{arch}.rope.dimension_count"), u32_of(self.head_dim));
        w.metadata(format!("{arch}.attention.layer_norm_rms_epsilon"), GgufValue::F32(self.rms_eps));
        w.metadata(format!("{arch}.rope.freq_base"), GgufValue::F32(self.rope_theta));
    }
}

/// Writes the architecture metadata llama.cpp reads for `spec` (see [`ArchMetadata`]),
/// the vocabulary size and the BOS/EOS ids into `w`.
pub fn write_model_metadata(w: &mut GgufWriter<'_>, spec: &ModelSpec, name: &str) {
    let arch = spec.family.gguf_name();
    ArchMetadata {
        arch,
        context_length: spec.context_length,
        hidden: spec.hidden_size,
        ffn: spec.intermediate_size,
        layers: spec.num_layers,
        heads: spec.num_heads,
        kv_heads: spec.num_kv_heads,
        head_dim: spec.head_dim,
        rms_eps: spec.rms_norm_eps as f32,
        rope_theta: spec.rope_theta as f32,
    }
    .write(w, name);
    w.metadata(format!("{arch}.vocab_size"), GgufValue::U32(spec.vocab_size as u32));
    if let Some(moe) = &spec.moe {
        w.metadata(format!("{arch}.expert_count"), GgufValue::U32(moe.experts as u32));
        w.metadata(format!("{arch}.expert_used_count"), GgufValue::U32(moe.experts_per_token as u32));
        w.metadata(format!("{arch}.expert_feed_forward_length"), GgufValue::U32(moe.expert_intermediate_size as u32));
        w.metadata(format!("{arch}.expert_weights_norm"), GgufValue::Bool(moe.norm_topk_prob));
    }
    if let Some(g) = &spec.gemma {
        w.metadata(format!("{arch}.attention.sliding_window"), GgufValue::U32(g.sliding_window as u32));
        w.metadata(format!("{arch}.attention.query_pre_attn_scalar"), GgufValue::F32(g.query_pre_attn_scalar as f32));
        w.metadata(format!("{arch}.rope.local_freq_base"), GgufValue::F32(g.local_rope_theta as f32));
        if g.global_rope_factor != 1.0 {
            w.metadata(format!("{arch}.rope.scaling.type"), GgufValue::String("linear".into()));
            w.metadata(format!("{arch}.rope.scaling.factor"), GgufValue::F32(g.global_rope_factor as f32));
        }
        let kinds = g.global_layers.iter().map(|&global| GgufValue::Bool(global)).collect();
        w.metadata(crate::gguf::GLOBAL_LAYERS_KEY, GgufValue::Array(kinds));
    }
    if let Some(&eos) = spec.eos_token_ids.first() {
        w.metadata("tokenizer.ggml.eos_token_id", GgufValue::U32(eos));
    }
    if let Some(bos) = spec.bos_token_id {
        w.metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(bos));
    }
}

/// The per-frequency divisors llama.cpp stores as `rope_freqs.weight` for Llama 3.1-style
/// RoPE scaling (as `convert_hf_to_gguf.py` computes them), or `None` without scaling.
pub fn rope_freq_divisors(spec: &ModelSpec) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } =
        spec.rope_scaling?;
    let original = original_max_position_embeddings as f64;
    let (low_wavelen, high_wavelen) = (original / low_freq_factor, original / high_freq_factor);
    let dim = spec.head_dim;
    let divisors = (0..dim)
        .step_by(2)
        .map(|i| {
            let freq = 1.0 / spec.rope_theta.powf(i as f64 / dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor as f32
            } else {
                let smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 / ((1.0 - smooth) / factor + smooth)) as f32
            }
        })
        .collect();
    Some(divisors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp_and_unknown_names_are_none() {
        assert_eq!(
            gguf_tensor_name("model.layers.3.mlp.down_proj.weight", Family::Llama).as_deref(),
            Some("blk.3.ffn_down.weight")
        );
        assert_eq!(gguf_tensor_name("lm_head.weight", Family::Llama).as_deref(), Some("output.weight"));
        assert_eq!(gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq", Family::Llama), None);
        assert_eq!(gguf_tensor_name("model.layers.x.mlp.up_proj.weight", Family::Llama), None);
        assert_eq!(
            gguf_tensor_name("model.layers.2.mlp.gate.weight", Family::Llama).as_deref(),
            Some("blk.2.ffn_gate_inp.weight")
        );
        // Gemma 3's norm after attention is not Llama's norm before the MLP.
        let gemma = |n: &str| gguf_tensor_name(n, Family::Gemma3);
        assert_eq!(
            gemma("model.layers.1.post_attention_layernorm.weight").as_deref(),
            Some("blk.1.post_attention_norm.weight")
        );
        assert_eq!(gemma("model.layers.1.pre_feedforward_layernorm.weight").as_deref(), Some("blk.1.ffn_norm.weight"));
        assert_eq!(
            gemma("model.layers.1.post_feedforward_layernorm.weight").as_deref(),
            Some("blk.1.post_ffw_norm.weight")
        );
        assert_eq!(gguf_tensor_name("model.layers.1.pre_feedforward_layernorm.weight", Family::Llama), None);
        assert_eq!(
            gguf_expert_tensor("model.layers.1.mlp.experts.7.down_proj.weight"),
            Some((1, "blk.1.ffn_down_exps.weight".into(), 7))
        );
        assert_eq!(
            gguf_expert_tensor("model.layers.0.block_sparse_moe.experts.3.w3.weight"),
            Some((0, "blk.0.ffn_up_exps.weight".into(), 3))
        );
        assert_eq!(gguf_expert_tensor("model.layers.0.mlp.up_proj.weight"), None);
    }

    #[test]
    fn permutation_interleaves_the_two_halves_of_each_head() {
        // 2 heads × 4 rows, 1 column: head rows [a0 a1 b0 b1] become [a0 b0 a1 b1].
        let rows: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(permute_qk_rows(&rows, 8, 1, 2), vec![0., 2., 1., 3., 4., 6., 5., 7.]);
    }
}
