//! Mixture-of-experts models against Hugging Face transformers: the tiny Qwen3-MoE and
//! Mixtral checkpoints of `tests/fixtures/reference/hf` (float32, CPU), loaded from their
//! safetensors (one tensor per expert) and from a GGUF slice of them (experts stacked per
//! projection, as llama.cpp stores them); then streamed = resident, and bad input.

mod common;

use candle_core::Device;
use cardinfer_core::{Family, StorageType};
use cardinfer_quant::Checkpoint;
use cardinfer_stream::{Logits, ResidentModel, TextModel};
use std::path::{Path, PathBuf};

fn reference_dir(name: &str) -> PathBuf {
    common::reference_dir().join("hf").join(name)
}

fn load(path: &Path) -> ResidentModel {
    let ckpt = Checkpoint::open(path).expect("open checkpoint");
    ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).expect("load model")
}

#[test]
fn qwen3moe_tiny_matches_transformers_from_safetensors() {
    let model = load(&reference_dir("qwen3moe-tiny"));
    assert_eq!(model.spec().family, Family::Qwen3Moe);
    common::check_against_transformers("qwen3moe-tiny", &model);
}

#[test]
fn mixtral_tiny_matches_transformers_from_safetensors() {
    let model = load(&reference_dir("mixtral-tiny"));
    assert_eq!(model.spec().family, Family::Mixtral);
    common::check_against_transformers("mixtral-tiny", &model);
}

#[test]
fn moe_gguf_slices_stack_experts_and_match_transformers() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["qwen3moe-tiny", "mixtral-tiny"] {
        let path = common::gguf_slice(name, dir.path());
        let ckpt = Checkpoint::open(&path).expect("open slice");
        let Checkpoint::Gguf(gguf) = &ckpt else { panic!("a GGUF") };
        let spec = gguf.model_spec().expect("spec");
        let moe = spec.moe.clone().expect("experts");
        // One 3-D tensor per projection: [experts, rows, columns], as llama.cpp loads them.
        let gate = gguf.tensor("blk.0.ffn_gate_exps.weight").expect("stacked gate");
        assert_eq!(gate.shape, vec![moe.experts, moe.expert_intermediate_size, spec.hidden_size]);
        assert_eq!(gate.storage, StorageType::F32);
        assert!(gguf.tensor("blk.0.ffn_gate_inp.weight").is_some(), "router");
        assert_eq!(moe.experts_per_token, 2);
        common::check_against_transformers(name, &load(&path));
    }
}

fn tiny_moe_spec() -> cardinfer_core::ModelSpec {
    common::tiny_spec(Family::Qwen3Moe, false, 2, 64)
}

fn load_error(path: &Path) -> String {
    match Checkpoint::open(path).and_then(|c| c.spec().map(|_| c)) {
        Err(e) => e.to_string(),
        Ok(ckpt) => ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).expect_err("an error").to_string(),
    }
}

#[test]
fn bad_expert_configurations_are_clear_errors() {
    use cardinfer_quant::synth::SyntheticModel;
    let dir = tempfile::tempdir().expect("tempdir");

    // More experts per token than a layer has.
    let config = std::fs::read_to_string(reference_dir("qwen3moe-tiny").join("config.json")).unwrap();
    let too_many = config.replace("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9");
    assert_ne!(config, too_many);
    let err = cardinfer_core::ModelSpec::from_hf_config_str(&too_many).unwrap_err().to_string();
    assert!(err.contains("num_experts_per_tok") && err.contains("only 8"), "{err}");

    // A missing expert tensor is named.
    let mut synth = SyntheticModel::random(&tiny_moe_spec(), 3);
    let gone = "model.layers.0.mlp.experts.5.up_proj.weight";
    assert!(synth.tensors.remove(gone).is_some());
    synth.write_hf(&dir.path().join("missing")).unwrap();
    let err = load_error(&dir.path().join("missing"));
    assert!(err.contains(gone), "{err}");

    // The configuration counts 8 experts, the router and expert tensors hold 4.
    let spec = tiny_moe_spec();
    let four = cardinfer_core::ModelSpec {
        moe: spec.moe.clone().map(|m| cardinfer_core::MoeSpec { experts: 4, ..m }),
        ..spec.clone()
    };
    let mut synth = SyntheticModel::random(&four, 3);
    synth.write_hf(&dir.path().join("router")).unwrap();
    let path = dir.path().join("router/config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"num_experts\":4", "\"num_experts\":8");
    std::fs::write(&path, text).unwrap();
    let err = load_error(&dir.path().join("router"));
    assert!(err.contains("model.layers.0.mlp.gate.weight") && err.contains("declares 8 experts"), "{err}");

    // The same in GGUF: metadata says 8 experts, the stacked tensors hold 4.
    synth.spec = spec;
    synth.write_gguf(&dir.path().join("router.gguf"), StorageType::F32, StorageType::F32).unwrap();
    let err = load_error(&dir.path().join("router.gguf"));
    assert!(err.contains("blk.0.ffn_gate_inp.weight") && err.contains("declares 8 experts"), "{err}");
}

/// Logits of `PROMPT` fed 4 tokens at a time, then 24 greedy tokens.
fn run(model: &dyn TextModel) -> (Vec<Vec<f32>>, Vec<u32>) {
    const PROMPT: [u32; 13] = [5, 17, 250, 3, 99, 42, 7, 7, 128, 64, 1, 200, 31];
    let mut kv = model.new_cache();
    let mut rows = Vec::new();
    for piece in PROMPT.chunks(4) {
        rows.extend(model.forward(piece, &mut kv, Logits::All).unwrap().to_vec2::<f32>().unwrap());
    }
    let options = cardinfer_stream::GenerateOptions { max_tokens: 24, ..Default::default() };
    let generated = cardinfer_stream::Session::new(model, None).generate(&PROMPT, &options, |_| {}).unwrap();
    (rows, generated.generated_ids)
}

/// A mixture-of-experts model whose whole does not fit the budget but whose parts besides
/// the routed experts do: in `auto` mode those are resident and the experts stay in host
/// memory, computed by the CPU; the output equals the resident run's.
#[test]
fn moe_experts_in_host_memory_equal_resident() {
    use cardinfer_core::BlockId;
    use cardinfer_plan::Budget;
    use cardinfer_stream::executor::Mode;
    use cardinfer_stream::load::{LoadOptions, Runner};
    for family in [Family::Qwen3Moe, Family::Mixtral] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.gguf");
        let spec = common::tiny_spec(family, family == Family::Qwen3Moe, 4, 320);
        cardinfer_quant::synth::SyntheticModel::random(&spec, 11)
            .write_gguf(&path, StorageType::Q4_K, StorageType::Q8_0)
            .unwrap();
        let resident = load(&path);
        let expected = run(&resident);
        let ckpt = Checkpoint::open(&path).unwrap();
        let spec = ckpt.spec().unwrap();
        let bytes = |layout: &cardinfer_core::ModelLayout| -> u64 {
            let blocks = std::iter::once(BlockId::Embed)
                .chain((0..spec.num_layers).map(BlockId::Layer))
                .chain(std::iter::once(BlockId::Head));
            blocks.flat_map(|b| layout.tensors(b).to_vec()).map(|t| t.len).sum()
        };
        let all = bytes(&cardinfer_stream::model::names::model_layout(&ckpt, &spec).unwrap());
        let dense = bytes(&cardinfer_stream::model::names::layout_without_experts(&ckpt, &spec).unwrap());
        // Short of the whole model by a quarter of its experts: the rest fits with room.
        let budget = all - (all - dense) / 4;
        let options = LoadOptions {
            budget: Budget::Bytes(cardinfer_core::ByteSize(budget)),
            mode: Mode::Auto,
            prefill_chunk: 4,
            ..Default::default()
        };
        let loaded = cardinfer_stream::LoadedModel::load_with(&path, &Device::Cpu, &options, |_, _| {}).unwrap();
        match &loaded.model {
            Runner::Resident(m) => assert!(m.experts_on_host(), "{family:?}: experts on the host"),
            Runner::Streamed(m) => panic!("{family:?}: streamed {}", m.plan()),
        }
        assert_eq!(run(&loaded.model), expected, "{family:?}");
    }
}
