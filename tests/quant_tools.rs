//! The quantization tools end to end: slicing Hugging Face checkpoints and GGUF files
//! into block-ordered GGUF, the quality of the result, synthetic presets, and failures.

mod common;

use candle_core::Device;
use cardinfer_core::{BlockId, Family, StorageType};
use cardinfer_quant::gguf::{GgufFile, GgufWriter};
use cardinfer_quant::quality::QualityStats;
use cardinfer_quant::scheme::QuantScheme;
use cardinfer_quant::slice::{block_ranges, slice, SliceOptions};
use cardinfer_quant::synth::SyntheticModel;
use cardinfer_quant::synth_preset::{preset, ArchPreset, SynthGguf};
use cardinfer_quant::{Checkpoint, QuantError};
use cardinfer_stream::{score, Logits, ResidentModel, TextModel, Tokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A preset shrunk to test size: width 256 (every k-quant fits), 2 heads sharing 1 KV
/// head, a vocabulary of 300 (byte tokens included).
fn shrunk(name: &str, layers: usize) -> ArchPreset {
    ArchPreset {
        key: "tiny",
        hidden: 256,
        layers,
        heads: 2,
        kv_heads: 1,
        ffn: 256,
        vocab: 300,
        ..preset(name).unwrap()
    }
}

fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("cardinfer-{tag}-")).tempdir().expect("tempdir")
}

fn options(scheme: Option<QuantScheme>) -> SliceOptions {
    SliceOptions { scheme, threads: 2, tokenizer: true }
}

fn slice_to(input: &Path, output: &Path, scheme: Option<QuantScheme>) -> Result<(), QuantError> {
    let ckpt = Checkpoint::open(input)?;
    slice(&ckpt, output, &options(scheme), &mut |_| {}).map(|_| ())
}

/// Every position's logits, with an f32 KV cache (the values as computed, as transformers).
fn all_logits(path: &Path, ids: &[u32]) -> Vec<Vec<f32>> {
    let ckpt = Checkpoint::open(path).expect("open");
    let model = ResidentModel::load(&ckpt, &Device::Cpu, |_, _| {}).expect("load");
    let mut kv = cardinfer_stream::KvCache::new(model.spec().num_layers, cardinfer_core::KvType::F32);
    model.forward(ids, &mut kv, Logits::All).expect("forward").to_vec2::<f32>().expect("logits")
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
}

/// Sliced without requantizing, each reference checkpoint gives the transformers logits
/// (for Llama this checks the q/k permutation to interleaved RoPE, with GQA).
#[test]
fn hf_checkpoints_sliced_as_stored_match_transformers() {
    for name in ["qwen3-tiny", "qwen2-tiny", "llama-tiny"] {
        let (dir, ids, expected) = common::hf_reference(name);
        let tmp = tempdir("slice-keep");
        let out = tmp.path().join(format!("{name}.gguf"));
        slice_to(&dir, &out, None).unwrap();
        let diff = max_abs_diff(&all_logits(&out, &ids), &expected);
        assert!(diff < 1e-4, "{name}: max |Δlogit| {diff}");
        let gguf = GgufFile::open(&out).unwrap();
        assert!(gguf.tensors().iter().all(|t| t.storage == StorageType::F32), "{name}: types changed");
    }
}

/// The issue's check: qwen3-tiny sliced to q8_0 then scored. Tolerance: every token's
/// log-probability within 0.25 nats of the f32 checkpoint's, the mean within 0.05, and
/// the KL divergence of the next-token distributions below 0.01 nats on average.
#[test]
fn qwen3_tiny_in_q8_0_scores_within_tolerance_of_f32() {
    let (dir, ids, reference_logits) = common::hf_reference("qwen3-tiny");
    let tmp = tempdir("slice-q8");
    let out = tmp.path().join("qwen3-tiny-q8_0.gguf");
    slice_to(&dir, &out, Some(QuantScheme::Q8_0)).unwrap();

    let load = |p: &Path| ResidentModel::load(&Checkpoint::open(p).unwrap(), &Device::Cpu, |_, _| {}).unwrap();
    let (f32_score, q8_score) = (score(&load(&dir), &ids).unwrap(), score(&load(&out), &ids).unwrap());
    let deltas: Vec<f32> = f32_score.logprobs.iter().zip(&q8_score.logprobs).map(|(a, b)| (a - b).abs()).collect();
    let worst = deltas.iter().copied().fold(0.0, f32::max);
    let mean = deltas.iter().sum::<f32>() / deltas.len() as f32;
    assert!(worst < 0.25 && mean < 0.05, "q8_0 log-prob deltas: worst {worst}, mean {mean}");

    let mut stats = QualityStats::new();
    for (p, (q8, f32_row)) in all_logits(&out, &ids).iter().zip(&reference_logits).enumerate() {
        stats.add(q8, f32_row, ids.get(p + 1).copied()).unwrap();
    }
    let report = stats.report();
    assert!(report.kl_mean < 0.01, "{report:?}");
    let gguf = GgufFile::open(&out).unwrap();
    let q8 = gguf.tensors().iter().filter(|t| t.storage == StorageType::Q8_0).count();
    assert_eq!(q8, 1 + 3 * 7, "embedding + 7 matrices per layer in Q8_0");
}

/// Lower-bit schemes cost more quality: the KL divergence grows as bits shrink.
#[test]
fn kl_divergence_grows_as_the_scheme_loses_bits() {
    let spec = common::tiny_spec(Family::Qwen3, false, 4, 128);
    let tmp = tempdir("schemes");
    let hf = tmp.path().join("hf");
    SyntheticModel::random(&spec, 7).write_hf(&hf).unwrap();
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 300) as u32).collect();
    let reference = all_logits(&hf, &ids);
    let mut kls = Vec::new();
    for scheme in [QuantScheme::F16, QuantScheme::Q8_0, QuantScheme::Q6K, QuantScheme::Q4KM, QuantScheme::Q2K] {
        let out = tmp.path().join(format!("{scheme}.gguf"));
        slice_to(&hf, &out, Some(scheme)).unwrap();
        let mut stats = QualityStats::new();
        for (m, r) in all_logits(&out, &ids).iter().zip(&reference) {
            stats.add(m, r, None).unwrap();
        }
        kls.push((scheme, stats.report().kl_mean));
    }
    assert!(kls.windows(2).all(|w| w[0].1 < w[1].1), "KL must grow as bits shrink: {kls:?}");
}

/// A GGUF whose tensors are out of streaming order is re-packed without requantizing:
/// every tensor keeps its bytes, each block becomes one contiguous range in order, and
/// the model computes the same logits.
#[test]
fn repacking_a_gguf_keeps_every_tensor_and_makes_blocks_contiguous() {
    let spec = common::tiny_spec(Family::Llama, false, 12, 128);
    let tmp = tempdir("repack");
    let scrambled = tmp.path().join("scrambled.gguf");
    // Tensors go in by Hugging Face name: blk.1, blk.10, blk.11, blk.2, …, the head split.
    SyntheticModel::random(&spec, 3).write_gguf(&scrambled, StorageType::Q4_K, StorageType::Q8_0).unwrap();
    let input = GgufFile::open(&scrambled).unwrap();
    assert!(block_ranges(&input).is_err(), "the input's head block should be split");

    let out = tmp.path().join("repacked.gguf");
    slice_to(&scrambled, &out, None).unwrap();
    let output = GgufFile::open(&out).unwrap();
    assert_eq!(output.tensors().len(), input.tensors().len());
    for t in input.tensors() {
        let u = output.tensor(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((u.storage, &u.shape), (t.storage, &t.shape), "{}", t.name);
        assert!(output.tensor_bytes(u) == input.tensor_bytes(t), "{} bytes changed", t.name);
    }
    let blocks: Vec<BlockId> = block_ranges(&output).unwrap().into_iter().map(|(b, _, _)| b).collect();
    let mut expected = vec![BlockId::Embed];
    expected.extend((0..12).map(BlockId::Layer));
    expected.push(BlockId::Head);
    assert_eq!(blocks, expected);
    for (key, value) in input.metadata() {
        assert_eq!(output.metadata().get(key), Some(value), "metadata {key}");
    }
    let ids = [5u32, 17, 200, 3, 99];
    assert_eq!(all_logits(&scrambled, &ids), all_logits(&out, &ids));
}

/// The tokenizer of a Hugging Face checkpoint travels into the GGUF: the tokenizer built
/// from the GGUF metadata gives the ids `tokenizer.json` gives.
#[test]
fn embedded_tokenizer_encodes_like_tokenizer_json() {
    let spec = common::tiny_spec(Family::Qwen3, true, 1, 128);
    let tmp = tempdir("tokenizer");
    let hf = tmp.path().join("hf");
    SyntheticModel::random(&spec, 1).write_hf(&hf).unwrap();
    std::fs::write(hf.join("tokenizer.json"), byte_level_tokenizer_json().to_string()).unwrap();
    std::fs::write(hf.join("tokenizer_config.json"), r#"{"add_bos_token": false, "chat_template": "{{ messages }}"}"#)
        .unwrap();
    let out = tmp.path().join("with-tokenizer.gguf");
    slice_to(&hf, &out, Some(QuantScheme::Q8_0)).unwrap();

    let from_json = Tokenizer::from_file(hf.join("tokenizer.json")).unwrap();
    let gguf = GgufFile::open(&out).unwrap();
    let from_gguf = Tokenizer::from_gguf(&gguf).unwrap().expect("a tokenizer in the GGUF");
    for text in ["the cat", "hello there, the 2024 cats!", "  spaces\nand lines", "üñí çødé"] {
        assert_eq!(from_gguf.encode(text).unwrap(), from_json.encode(text).unwrap(), "{text:?}");
    }
    assert_eq!(gguf.get_str("tokenizer.chat_template").unwrap(), "{{ messages }}");
}

/// GPT-2's byte-to-character table, for a byte-level BPE vocabulary.
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut extra = 0;
    for b in 0..=255u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + extra);
            extra += 1;
        }
    }
    let mut table = vec!['?'; 256];
    for (b, c) in printable.iter().zip(chars) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

/// A byte-level BPE with Qwen2's pre-tokenizer, 256 byte tokens and a few merges.
fn byte_level_tokenizer_json() -> Value {
    let chars = byte_chars();
    let mut vocab = serde_json::Map::new();
    for (id, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), id.into());
    }
    let merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("c", "a"), ("ca", "t"), ("Ġ", "cat")];
    for (a, b) in merges {
        let id = vocab.len();
        vocab.insert(format!("{a}{b}"), id.into());
    }
    let qwen2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    serde_json::json!({
        "version": "1.0",
        "added_tokens": [{"id": 262, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": qwen2}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges.iter().map(|(a, b)| vec![*a, *b]).collect::<Vec<_>>()}
    })
}

/// A preset at a tiny size loads and runs in CardInfer, with the scheme's quant mix and
/// a vocabulary that tokenizes any text through its byte tokens.
#[test]
fn synthetic_preset_files_load_and_run() {
    let tiny = shrunk("qwen3-4b", 2);
    let tmp = tempdir("synth");
    let path = tmp.path().join("tiny.gguf");
    let mut last = (0, 0);
    tiny.write_gguf(&path, 0, &mut |done, total| last = (done, total)).unwrap();
    assert_eq!(last.0, last.1, "progress ends at the total");
    assert_eq!(last.1, tiny.file_bytes());
    let gguf = GgufFile::open(&path).unwrap();
    assert_eq!(gguf.tensor("blk.1.ffn_down.weight").unwrap().storage, StorageType::Q6_K);
    assert_eq!(gguf.tensor("blk.1.ffn_up.weight").unwrap().storage, StorageType::Q4_K);
    let tokenizer = Tokenizer::from_gguf(&gguf).unwrap().unwrap();
    let ids = tokenizer.encode("hi").unwrap();
    assert!(ids.contains(&(3 + b'h' as u32)) && ids.contains(&(3 + b'i' as u32)), "byte tokens: {ids:?}");
    let logits = all_logits(&path, &ids);
    assert!(logits.iter().flatten().all(|v| v.is_finite()));
}

/// Same seed, same bytes; different seed, different bytes.
#[test]
fn synthetic_files_are_deterministic() {
    let tiny = shrunk("qwen3-8b", 1);
    let tmp = tempdir("synth-seed");
    let write = |name: &str, seed| {
        let p = tmp.path().join(name);
        tiny.write_gguf(&p, seed, &mut |_, _| {}).unwrap();
        std::fs::read(p).unwrap()
    };
    assert_eq!(write("a.gguf", 1), write("b.gguf", 1));
    assert_ne!(write("c.gguf", 1), write("d.gguf", 2));
}

/// A producer that fails half-way leaves neither the output nor its temporary file.
#[test]
fn an_interrupted_write_leaves_no_file() {
    let tmp = tempdir("interrupted");
    let out = tmp.path().join("partial.gguf");
    let mut w = GgufWriter::new();
    for i in 0..4 {
        w.declare(format!("t{i}"), &[64], StorageType::F32).unwrap();
    }
    let err = w
        .write_with(&out, |index| {
            if index == 2 {
                return Err(QuantError::Mismatch { what: "t2".into(), reason: "interrupted".into() });
            }
            Ok(vec![0u8; 256])
        })
        .unwrap_err();
    assert!(err.to_string().contains("interrupted"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing may be left behind");

    // A producer returning the wrong size is caught the same way.
    let err = w.write_with(&out, |_| Ok(vec![0u8; 10])).unwrap_err().to_string();
    assert!(err.contains("t0") && err.contains("10 bytes"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

/// Bad inputs are errors naming what is wrong, and leave no output.
#[test]
fn corrupt_and_unsupported_inputs_are_clear_errors() {
    let tmp = tempdir("bad-input");
    let out = tmp.path().join("out.gguf");

    // A truncated GGUF.
    let spec = common::tiny_spec(Family::Qwen2, true, 1, 64);
    let good = tmp.path().join("good.gguf");
    SyntheticModel::random(&spec, 2).write_gguf(&good, StorageType::Q8_0, StorageType::Q8_0).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = tmp.path().join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let err = slice_to(&truncated, &out, None).unwrap_err().to_string();
    assert!(err.contains("truncated.gguf") && err.contains("truncated"), "{err}");

    // A checkpoint with a tensor the slicer does not know.
    let hf = tmp.path().join("odd-hf");
    let mut model = SyntheticModel::random(&spec, 2);
    model.tensors.insert("model.layers.0.mlp.experts.0.weight".into(), (vec![4, 4], vec![0.0; 16]));
    model.write_hf(&hf).unwrap();
    let err = slice_to(&hf, &out, Some(QuantScheme::Q8_0)).unwrap_err().to_string();
    assert!(err.contains("model.layers.0.mlp.experts.0.weight"), "{err}");

    // A mixture of experts slices (its experts stay stacked per projection) ...
    let moe = ArchPreset { experts: Some((2, 1)), ..shrunk("qwen3-30b-a3b", 1) };
    let moe_path = tmp.path().join("moe.gguf");
    moe.write_gguf(&moe_path, 0, &mut |_, _| {}).unwrap();
    let moe_out = tmp.path().join("moe-sliced.gguf");
    slice_to(&moe_path, &moe_out, None).unwrap();
    let sliced = GgufFile::open(&moe_out).unwrap();
    assert_eq!(sliced.tensor("blk.0.ffn_up_exps.weight").unwrap().shape[0], 2);
    // ... and an architecture CardInfer cannot run is named.
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", cardinfer_quant::gguf::GgufValue::String("rwkv6".into()));
    w.tensor("token_embd.weight", &[4, 4], StorageType::F32, vec![0u8; 64]).unwrap();
    let rwkv = tmp.path().join("rwkv.gguf");
    w.write(&rwkv).unwrap();
    let err = slice_to(&rwkv, &out, None).unwrap_err().to_string();
    assert!(err.contains("rwkv6"), "{err}");

    // An output directory that does not exist.
    let err = slice_to(&good, &tmp.path().join("no/such/dir/out.gguf"), None).unwrap_err().to_string();
    assert!(err.contains("no/such/dir"), "{err}");
    assert!(!out.exists(), "no output after failures");
}

/// Our schemes choose the type llama.cpp's `llama-quantize` chose for every tensor of
/// two models (26 layers with GQA 4 and an untied head; 24 layers of width 896, where
/// k-quants fall back, with a tied head): `tests/fixtures/llama_quantize_types.json`.
#[test]
fn scheme_types_equal_llama_quantize() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_quantize_types.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    for (model, entry) in fixture["models"].as_object().unwrap() {
        let ctx = cardinfer_quant::scheme::SchemeContext {
            num_layers: entry["num_layers"].as_u64().unwrap() as usize,
            gqa: entry["gqa"].as_u64().unwrap() as usize,
        };
        let tied = entry["tied"].as_bool().unwrap();
        for (scheme, types) in entry["schemes"].as_object().unwrap() {
            let scheme: QuantScheme = scheme.parse().unwrap();
            for (name, expected) in types.as_object().unwrap() {
                let shape: Vec<usize> =
                    entry["shapes"][name].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                let role = cardinfer_quant::scheme::TensorRole::of(name, &shape, tied);
                let ours = scheme.storage_for(role, *shape.last().unwrap(), ctx);
                assert_eq!(ours.name(), expected.as_str().unwrap().to_lowercase(), "model {model}, {scheme}, {name}");
                checked += 1;
            }
        }
    }
    assert!(checked > 2000, "only {checked} tensors checked");
}
