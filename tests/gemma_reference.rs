//! Gemma 3 against Hugging Face transformers: the tiny `Gemma3ForCausalLM` checkpoint of
//! `tests/fixtures/reference/hf/gemma3-tiny` (float32, CPU; sliding-window layers with a
//! window of 8 and a global layer, 24 positions, so the window is exercised), loaded from its
//! safetensors and from a GGUF slice of it (norms written as llama.cpp stores them, `1 + w`);
//! then a streamed run = the resident one, and the configuration's bad values.

mod common;

use candle_core::Device;
use cardinfer_core::{Family, ModelSpec};
use cardinfer_quant::Checkpoint;
use cardinfer_stream::{Logits, ResidentModel, TextModel};
use serde_json::Value;
use std::path::{Path, PathBuf};

const NAME: &str = "gemma3-tiny";

fn reference_dir() -> PathBuf {
    common::reference_dir().join("hf").join(NAME)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(reference_dir().join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("json")
}

fn ids(v: &Value, key: &str) -> Vec<u32> {
    v[key].as_array().expect(key).iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn load(path: &Path) -> ResidentModel {
    let ckpt = Checkpoint::open(path).expect("open checkpoint");
    ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).expect("load model")
}

#[test]
fn gemma3_config_gives_layer_kinds_rope_bases_and_scales() {
    let spec = Checkpoint::open(reference_dir()).unwrap().spec().unwrap();
    assert_eq!(spec.family, Family::Gemma3);
    let g = spec.gemma.clone().expect("Gemma parameters");
    assert_eq!(g.global_layers, vec![false, false, false, true]);
    assert_eq!((g.sliding_window, g.local_rope_theta, spec.rope_theta), (8, 10_000.0, 1_000_000.0));
    assert_eq!(g.query_pre_attn_scalar, 32.0);
    assert!(g.norm_plus_one && spec.tie_word_embeddings && spec.qk_norm);
    assert_eq!((spec.sliding_window(0), spec.sliding_window(3)), (Some(8), None));
}

#[test]
fn gemma3_tiny_matches_transformers_from_safetensors() {
    common::check_against_transformers(NAME, &load(&reference_dir()));
}

#[test]
fn gemma3_gguf_slice_matches_transformers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::gguf_slice(NAME, dir.path());
    let gguf = Checkpoint::open(&out).expect("open slice");
    let Checkpoint::Gguf(file) = &gguf else { panic!("a GGUF") };
    assert!(
        file.tensor("blk.0.post_attention_norm.weight").is_some()
            && file.tensor("blk.0.post_ffw_norm.weight").is_some()
    );
    let spec = file.model_spec().expect("spec");
    let g = spec.gemma.clone().expect("Gemma parameters");
    assert!(!g.norm_plus_one, "the slice stores 1 + w");
    assert_eq!(g.global_layers, vec![false, false, false, true]);
    common::check_against_transformers(NAME, &load(&out));
}

/// The text part of a multimodal checkpoint (`Gemma3ForConditionalGeneration`: the text
/// model's parameters under `text_config`, its tensors under `model.language_model.`, a
/// vision tower beside them) loads as the text model.
#[test]
fn gemma3_text_part_of_a_multimodal_checkpoint_matches_transformers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text_config: Value =
        serde_json::from_str(&std::fs::read_to_string(reference_dir().join("config.json")).unwrap()).unwrap();
    let config = serde_json::json!({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": text_config, "vision_config": {"hidden_size": 8},
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(reference_dir().join("model.safetensors")).unwrap();
    let tiny = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let vision = vec![0u8; 16];
    let mut views = vec![(
        "model.vision_tower.patch_embedding.weight".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &vision).unwrap(),
    )];
    for (name, view) in tiny.tensors() {
        let renamed = name.replacen("model.", "model.language_model.", 1);
        views.push((
            renamed,
            safetensors::tensor::TensorView::new(view.dtype(), view.shape().to_vec(), view.data()).unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    let model = load(dir.path());
    assert_eq!(model.spec().family, Family::Gemma3);
    common::check_against_transformers(NAME, &model);
}

#[test]
fn gemma3_streamed_equals_resident() {
    use cardinfer_stream::executor::Mode;
    use cardinfer_stream::load::LoadOptions;
    let prompt = ids(&reference(), "input_ids");
    // The prompt in pieces of 5 (the streamed run's prefill chunk), then 8 greedy steps:
    // every logit of every piece and step, bit for bit.
    let run = |model: &dyn TextModel| -> Vec<Vec<f32>> {
        let mut kv = model.new_cache();
        let mut rows = Vec::new();
        for piece in prompt.chunks(5) {
            rows.extend(model.forward(piece, &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap());
        }
        for _ in 0..8 {
            let last = rows.last().unwrap();
            let next = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap() as u32;
            rows.extend(model.forward(&[next], &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap());
        }
        rows
    };
    let resident = run(&load(&reference_dir()));
    let options = LoadOptions { mode: Mode::Stream, slots: Some(1), prefill_chunk: 5, ..Default::default() };
    let streamed =
        cardinfer_stream::LoadedModel::load_with(&reference_dir(), &Device::Cpu, &options, |_, _| {}).unwrap();
    assert!(matches!(streamed.model, cardinfer_stream::Runner::Streamed(_)));
    assert_eq!(run(&streamed.model), resident);
    // Hybrid: two layers placed on the host (decode steps computed there, prompt pieces
    // streamed); Gemma's layers have no exact twin, so the host computes them with the block.
    let hybrid = LoadOptions { hybrid: true, host_layers: Some(2), slots: Some(2), ..options };
    let hybrid = cardinfer_stream::LoadedModel::load_with(&reference_dir(), &Device::Cpu, &hybrid, |_, _| {}).unwrap();
    let cardinfer_stream::Runner::Streamed(m) = &hybrid.model else { panic!("a streamed runner") };
    let host = m
        .plan()
        .blocks
        .iter()
        .filter(|(b, p)| *p == cardinfer_stream::Placement::Host && *b != cardinfer_core::BlockId::Embed)
        .count();
    assert_eq!(host, 2, "{}", m.plan());
    assert_eq!(run(&hybrid.model), resident);
}

#[test]
fn gemma3_bad_configurations_are_clear_errors() {
    let config = std::fs::read_to_string(reference_dir().join("config.json")).unwrap();
    let bad_kind = config.replace("\"full_attention\"\n  ]", "\"chunked_attention\"\n  ]");
    assert_ne!(config, bad_kind);
    let err = ModelSpec::from_hf_config_str(&bad_kind).unwrap_err().to_string();
    assert!(err.contains("layer_types") && err.contains("chunked_attention"), "{err}");
    let three_kinds = config.replace("\"sliding_attention\",\n    \"full_attention\"", "\"full_attention\"");
    let err = ModelSpec::from_hf_config_str(&three_kinds).unwrap_err().to_string();
    assert!(err.contains("layer_types") && err.contains("3 layer types for 4 layers"), "{err}");
    let no_window = config.replace("\"sliding_window\": 8", "\"sliding_window\": 0");
    let err = ModelSpec::from_hf_config_str(&no_window).unwrap_err().to_string();
    assert!(err.contains("sliding_window"), "{err}");
}
