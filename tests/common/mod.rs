//! Shared helpers for the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The cached model `file` (`scripts/fetch-model.sh`), or `None` with a SKIP message when
/// it is not cached; a `required` one must be there in CI (`.ci/run` fetches it).
pub fn cached_model(file: &str, required: bool) -> Option<PathBuf> {
    let path = model_cache_dir().join(file);
    if path.is_file() {
        return Some(path);
    }
    assert!(!required || std::env::var("CI").is_err(), "{file} must be fetched in CI (scripts/fetch-model.sh)");
    eprintln!("SKIP: {} not cached; run scripts/fetch-model.sh to fetch it", path.display());
    None
}

/// `tests/fixtures`: everything the tests read (see its `README.md`).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `tests/fixtures/reference`: copies of other implementations' outputs (transformers,
/// llama.cpp), with where they came from in its `SOURCE.md`.
pub fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

/// Where `scripts/fetch-model.sh` caches models: `$CARDINFER_CACHE/models`, else
/// `~/.cache/cardinfer/models`.
pub fn model_cache_dir() -> PathBuf {
    match std::env::var_os("CARDINFER_CACHE") {
        Some(dir) => PathBuf::from(dir).join("models"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cardinfer/models"),
    }
}

/// A tiny model of `family` whose rows suit every quant type (256 wide): 4 heads of 64,
/// 2 KV heads, vocabulary 300; Qwen3-MoE with 8 experts (top 2, layer 1 dense), Mixtral
/// with 4 (top 2).
pub fn tiny_spec(
    family: cardinfer_core::Family,
    tied: bool,
    num_layers: usize,
    context: usize,
) -> cardinfer_core::ModelSpec {
    use cardinfer_core::Family;
    cardinfer_core::ModelSpec {
        family,
        vocab_size: 300,
        hidden_size: 256,
        intermediate_size: 512,
        num_layers,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: None,
        rope_style: cardinfer_core::RopeStyle::Half,
        context_length: context,
        tie_word_embeddings: tied,
        qkv_bias: family == Family::Qwen2,
        qk_norm: family.has_qk_norm(),
        bos_token_id: None,
        eos_token_ids: vec![],
        moe: match family {
            Family::Qwen3Moe => Some(cardinfer_core::MoeSpec {
                experts: 8,
                experts_per_token: 2,
                expert_intermediate_size: 256,
                norm_topk_prob: true,
                dense_layers: vec![1],
            }),
            Family::Mixtral => Some(cardinfer_core::MoeSpec {
                experts: 4,
                experts_per_token: 2,
                expert_intermediate_size: 512,
                norm_topk_prob: true,
                dense_layers: vec![],
            }),
            _ => None,
        },
        gemma: None,
    }
}

/// A tiny transformers reference (`tests/fixtures/reference/hf/NAME`): its directory, the
/// 24 input ids and the logits transformers computed for them.
pub fn hf_reference(name: &str) -> (PathBuf, Vec<u32>, Vec<Vec<f32>>) {
    let dir = reference_dir().join("hf").join(name);
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let ids = v["input_ids"].as_array().expect("input_ids").iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let logits = v["logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    (dir, ids, logits)
}

/// `model` against transformers on the reference checkpoint `name` (`tests/fixtures/reference/hf`),
/// with each KV cache type: the logits at every position of `input_ids` within 1e-4 with
/// an f32 cache, and with an f16 cache within 2e-3 of the largest |logit| of the reference
/// (transformers keeps f32; measured up to 1.7e-3 of it, mixtral-tiny: 8.1e-3 of 4.8 —
/// already at position 0 of llama-tiny, where attention returns the one value row as
/// stored, so it is the rounding of the stored values itself), and with both
/// the greedy tokens after `greedy_prefix` (decoded one by one through the KV cache) equal
/// to `greedy_new_tokens`.
pub fn check_against_transformers(name: &str, model: &dyn cardinfer_stream::TextModel) {
    use cardinfer_core::KvType;
    use cardinfer_stream::{KvCache, Logits};
    let (dir, input_ids, expected) = hf_reference(name);
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("reference.json is JSON");
    let ids = |key: &str| -> Vec<u32> {
        v[key].as_array().expect(key).iter().map(|x| x.as_u64().expect("an id") as u32).collect()
    };
    let layers = model.spec().num_layers;
    let scale = expected.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    for (kv_type, tolerance) in [(KvType::F32, 1e-4f32), (KvType::F16, 2e-3 * scale)] {
        let mut kv = KvCache::new(layers, kv_type);
        let ours: Vec<Vec<f32>> = model.forward(&input_ids, &mut kv, Logits::All).unwrap().to_vec2().unwrap();
        assert_eq!(ours.len(), expected.len(), "{name}: positions");
        for (pos, (a, b)) in ours.iter().zip(&expected).enumerate() {
            assert_eq!(a.len(), b.len(), "{name}: vocabulary");
            let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(diff < tolerance, "{name}, {kv_type} KV: position {pos}: max |Δlogit| = {diff}");
        }
        let mut kv = KvCache::new(layers, kv_type);
        let mut logits = model.forward(&ids("greedy_prefix"), &mut kv, Logits::Last).unwrap();
        let mut generated = Vec::new();
        for _ in 0..ids("greedy_new_tokens").len() {
            let next = logits.squeeze(0).unwrap().argmax(0).unwrap().to_scalar::<u32>().unwrap();
            generated.push(next);
            logits = model.forward(&[next], &mut kv, Logits::Last).unwrap();
        }
        assert_eq!(generated, ids("greedy_new_tokens"), "{name}, {kv_type} KV: greedy tokens");
    }
}

/// A GGUF slice (f32, `cardinfer slice --quant keep`) of the reference checkpoint `name`,
/// written into `dir`.
pub fn gguf_slice(name: &str, dir: &std::path::Path) -> PathBuf {
    use cardinfer_quant::slice::{slice, SliceOptions};
    let ckpt = cardinfer_quant::Checkpoint::open(reference_dir().join("hf").join(name)).expect("open checkpoint");
    let out = dir.join(format!("{name}.gguf"));
    slice(&ckpt, &out, &SliceOptions { scheme: None, threads: 2, tokenizer: false }, &mut |_| {}).expect("slice");
    out
}
