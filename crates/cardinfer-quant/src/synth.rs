//! Synthetic models of a given [`ModelSpec`]: random but valid weights, written as a
//! Hugging Face checkpoint directory and as GGUF in any storage type. Deterministic for
//! a seed. For tests (tiny sizes) and benchmarks (speed does not depend on values).

use crate::candle::quantize;
use crate::gguf::GgufWriter;
use crate::hf_to_gguf::{
    gguf_expert_tensor, gguf_tensor_name, hf_expert_names, permute_qk_rows, qk_permutation_heads, write_model_metadata,
};
use crate::synth_preset::SplitMix;
use crate::QuantError;
use cardinfer_core::{Family, ModelSpec, RopeStyle, StorageType};
use std::collections::BTreeMap;
use std::path::Path;

/// A synthetic model: f32 weights by Hugging Face name, row-major.
#[derive(Debug, Clone)]
pub struct SyntheticModel {
    /// The hyper-parameters the weights follow (HF conventions: `RopeStyle::Half`).
    pub spec: ModelSpec,
    /// Weights by Hugging Face tensor name: (shape, values).
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl SyntheticModel {
    /// Random weights for `spec` (matrices uniform with std ≈ 0.15·√3/√3, norms near 1).
    pub fn random(spec: &ModelSpec, seed: u64) -> Self {
        let mut rng = SplitMix(seed);
        let mut unit = move || (rng.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        let mut tensors = BTreeMap::new();
        let mut add = |name: String, shape: Vec<usize>, norm: bool| {
            let n: usize = shape.iter().product();
            let values = (0..n).map(|_| if norm { 1.0 + 0.1 * unit() } else { 0.25 * unit() }).collect();
            tensors.insert(name, (shape, values));
        };
        let (h, hd, ff) = (spec.hidden_size, spec.head_dim, spec.intermediate_size);
        let (q, kv) = (spec.num_heads * hd, spec.num_kv_heads * hd);
        add("model.embed_tokens.weight".into(), vec![spec.vocab_size, h], false);
        for i in 0..spec.num_layers {
            let p = format!("model.layers.{i}.");
            add(format!("{p}input_layernorm.weight"), vec![h], true);
            add(format!("{p}post_attention_layernorm.weight"), vec![h], true);
            add(format!("{p}self_attn.q_proj.weight"), vec![q, h], false);
            add(format!("{p}self_attn.k_proj.weight"), vec![kv, h], false);
            add(format!("{p}self_attn.v_proj.weight"), vec![kv, h], false);
            add(format!("{p}self_attn.o_proj.weight"), vec![h, q], false);
            if spec.qkv_bias {
                add(format!("{p}self_attn.q_proj.bias"), vec![q], false);
                add(format!("{p}self_attn.k_proj.bias"), vec![kv], false);
                add(format!("{p}self_attn.v_proj.bias"), vec![kv], false);
            }
            if spec.qk_norm {
                add(format!("{p}self_attn.q_norm.weight"), vec![hd], true);
                add(format!("{p}self_attn.k_norm.weight"), vec![hd], true);
            }
            match &spec.moe {
                Some(moe) if spec.is_moe_layer(i) => {
                    let eff = moe.expert_intermediate_size;
                    let (router, experts, [gate, up, down]) = hf_expert_names(spec.family);
                    add(format!("{p}{router}"), vec![moe.experts, h], false);
                    for e in 0..moe.experts {
                        add(format!("{p}{experts}.{e}.{gate}"), vec![eff, h], false);
                        add(format!("{p}{experts}.{e}.{up}"), vec![eff, h], false);
                        add(format!("{p}{experts}.{e}.{down}"), vec![h, eff], false);
                    }
                }
                _ => {
                    add(format!("{p}mlp.gate_proj.weight"), vec![ff, h], false);
                    add(format!("{p}mlp.up_proj.weight"), vec![ff, h], false);
                    add(format!("{p}mlp.down_proj.weight"), vec![h, ff], false);
                }
            }
        }
        add("model.norm.weight".into(), vec![h], true);
        if !spec.tie_word_embeddings {
            add("lm_head.weight".into(), vec![spec.vocab_size, h], false);
        }
        Self { spec: spec.clone(), tensors }
    }

    /// Writes `config.json` and `model.safetensors` (F32) into `dir`.
    pub fn write_hf(&self, dir: &Path) -> Result<(), QuantError> {
        std::fs::create_dir_all(dir).map_err(|e| QuantError::io(dir, e))?;
        let s = &self.spec;
        let model_type = match s.family {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Qwen3Moe => "qwen3_moe",
            Family::Mixtral => "mixtral",
            Family::Gemma3 => return Err(gemma_unsupported()),
        };
        let mut config = serde_json::json!({
            "model_type": model_type, "vocab_size": s.vocab_size, "hidden_size": s.hidden_size,
            "intermediate_size": s.intermediate_size, "num_hidden_layers": s.num_layers,
            "num_attention_heads": s.num_heads, "num_key_value_heads": s.num_kv_heads,
            "head_dim": s.head_dim, "rms_norm_eps": s.rms_norm_eps, "rope_theta": s.rope_theta,
            "max_position_embeddings": s.context_length, "tie_word_embeddings": s.tie_word_embeddings,
            "attention_bias": s.qkv_bias, "eos_token_id": s.eos_token_ids, "bos_token_id": s.bos_token_id,
        });
        if let (Some(moe), Some(object)) = (&s.moe, config.as_object_mut()) {
            let moe_keys = serde_json::json!({
                "num_experts": moe.experts, "num_local_experts": moe.experts,
                "num_experts_per_tok": moe.experts_per_token, "moe_intermediate_size": moe.expert_intermediate_size,
                "norm_topk_prob": moe.norm_topk_prob, "decoder_sparse_step": 1, "mlp_only_layers": moe.dense_layers,
            });
            object.extend(moe_keys.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
        }
        let config_path = dir.join("config.json");
        std::fs::write(&config_path, config.to_string()).map_err(|e| QuantError::io(&config_path, e))?;
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                (name.clone(), values.iter().flat_map(|v| v.to_le_bytes()).collect(), shape.clone())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, data, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .map(|view| (name.clone(), view))
                    .map_err(|source| QuantError::Safetensors { path: dir.join("model.safetensors"), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let path = dir.join("model.safetensors");
        safetensors::serialize_to_file(views, None, &path).map_err(|source| QuantError::Safetensors { path, source })
    }

    /// Writes a GGUF with llama.cpp names: matrices in `matrix_type` (the embedding and
    /// output head in `embed_type`), norms and biases in F32. For Llama/Mistral the q/k
    /// rows are permuted as llama.cpp's converter does, so the file uses interleaved RoPE.
    pub fn write_gguf(&self, path: &Path, matrix_type: StorageType, embed_type: StorageType) -> Result<(), QuantError> {
        if self.spec.family == Family::Gemma3 {
            return Err(gemma_unsupported());
        }
        let mut w = GgufWriter::new();
        write_model_metadata(&mut w, &self.spec, "cardinfer synthetic");
        let matrix_storage = |name: &str| {
            if name == "token_embd.weight" || name == "output.weight" {
                embed_type
            } else {
                matrix_type
            }
        };
        // Each projection of a layer's experts, stacked in expert order as llama.cpp stores them.
        let mut stacked: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        for (hf_name, (shape, _)) in &self.tensors {
            if let Some((_, name, _)) = gguf_expert_tensor(hf_name) {
                let entry = stacked.entry(name).or_insert_with(|| (vec![0, shape[0], shape[1]], Vec::new()));
                entry.0[0] += 1;
            }
        }
        for (name, (shape, values)) in stacked.iter_mut() {
            let layer_prefix = name.split(".ffn_").next().unwrap_or("").replace("blk.", "model.layers.");
            let (_, experts, projs) = hf_expert_names(self.spec.family);
            let proj = match name.rsplit('.').nth(1) {
                Some("ffn_gate_exps") => projs[0],
                Some("ffn_up_exps") => projs[1],
                _ => projs[2],
            };
            // By index: `tensors` is ordered by name, where expert 10 precedes expert 2.
            for e in 0..shape[0] {
                let hf_name = format!("{layer_prefix}.{experts}.{e}.{proj}");
                let (_, part) = self
                    .tensors
                    .get(&hf_name)
                    .ok_or_else(|| QuantError::MissingTensor { path: path.to_path_buf(), tensor: hf_name.clone() })?;
                values.extend_from_slice(part);
            }
            let data = quantize(name, values, &[shape[0] * shape[1], shape[2]], matrix_type)?;
            w.tensor(name.clone(), shape, matrix_type, data)?;
        }
        for (hf_name, (shape, values)) in &self.tensors {
            if gguf_expert_tensor(hf_name).is_some() {
                continue;
            }
            let name = gguf_tensor_name(hf_name, self.spec.family).ok_or_else(|| QuantError::Tensor {
                path: path.to_path_buf(),
                tensor: hf_name.clone(),
                reason: "no GGUF name for this tensor".into(),
            })?;
            let values = match qk_permutation_heads(&self.spec, hf_name) {
                Some(heads) => permute_qk_rows(values, shape[0], values.len() / shape[0], heads),
                None => values.clone(),
            };
            let storage = if shape.len() == 1 { StorageType::F32 } else { matrix_storage(&name) };
            let data = quantize(&name, &values, shape, storage)?;
            w.tensor(name, shape, storage, data)?;
        }
        w.write(path)
    }

    /// The spec a GGUF written by [`SyntheticModel::write_gguf`] reads back as.
    pub fn gguf_spec(&self) -> ModelSpec {
        let mut spec = self.spec.clone();
        if matches!(spec.family, Family::Llama | Family::Mistral | Family::Mixtral) {
            spec.rope_style = RopeStyle::Interleaved;
        }
        spec
    }
}

/// Synthetic models have the generic block's tensors, not Gemma 3's extra norms.
fn gemma_unsupported() -> QuantError {
    QuantError::Mismatch {
        what: "synthetic model".into(),
        reason: "Gemma 3 is not among the synthetic families (its extra norms are not written)".into(),
    }
}
