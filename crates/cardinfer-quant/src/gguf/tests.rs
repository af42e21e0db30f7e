//! Round trips and corrupt-input tests for the GGUF reader and writer.

use super::*;
use crate::QuantError;
use cardinfer_core::StorageType;
use std::path::PathBuf;

/// A fresh directory for a test's files, removed when dropped.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("cardinfer-gguf-{tag}-")).tempdir().unwrap()
}

/// Name, shape, storage type and stored bytes of a written tensor.
type Written = (String, Vec<usize>, StorageType, Vec<u8>);

fn sample_file(dir: &std::path::Path) -> (PathBuf, Vec<Written>) {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("qwen3".into()));
    w.metadata("test.u32", GgufValue::U32(7));
    w.metadata("test.f32", GgufValue::F32(0.5));
    w.metadata("test.bool", GgufValue::Bool(true));
    w.metadata("test.i64", GgufValue::I64(-3));
    w.metadata("test.strings", GgufValue::Array(vec![GgufValue::String("a".into()), GgufValue::String("βγ".into())]));
    let values: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut tensors = Vec::new();
    for (name, storage, shape) in [
        ("f32", StorageType::F32, vec![2, 256]),
        ("q8", StorageType::Q8_0, vec![2, 256]),
        ("q4k", StorageType::Q4_K, vec![2, 256]),
        ("f16", StorageType::F16, vec![512]),
    ] {
        let data = crate::candle::quantize(name, &values, &shape, storage).unwrap();
        w.tensor(name, &shape, storage, data.clone()).unwrap();
        tensors.push((name.to_string(), shape, storage, data));
    }
    let path = dir.join("sample.gguf");
    w.write(&path).unwrap();
    (path, tensors)
}

#[test]
fn write_then_read_round_trips_metadata_and_bytes() {
    let dir = temp_dir("roundtrip");
    let (path, tensors) = sample_file(dir.path());
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.version(), 3);
    assert_eq!(file.get_u64("test.u32").unwrap(), Some(7));
    assert_eq!(file.get_f64("test.f32").unwrap(), Some(0.5));
    assert_eq!(file.metadata()["test.bool"], GgufValue::Bool(true));
    assert_eq!(file.metadata()["test.i64"], GgufValue::I64(-3));
    assert_eq!(file.metadata()["test.strings"].as_array().unwrap()[1].as_str(), Some("βγ"));
    assert_eq!(file.tensors().len(), tensors.len());
    for (name, shape, storage, data) in &tensors {
        let info = file.tensor(name).unwrap();
        assert_eq!(&info.shape, shape);
        assert_eq!(info.storage, *storage);
        assert_eq!(info.offset % file.alignment(), 0, "{name} is aligned");
        assert_eq!(file.tensor_bytes(info), data.as_slice());
    }
    // Writing what we read gives the same bytes.
    let mut again = GgufWriter::new();
    for (k, v) in file.metadata() {
        again.metadata(k.clone(), v.clone());
    }
    for info in file.tensors() {
        again.tensor(info.name.clone(), &info.shape, info.storage, file.tensor_bytes(info)).unwrap();
    }
    let path2 = dir.path().join("again.gguf");
    again.write(&path2).unwrap();
    let reread = GgufFile::open(&path2).unwrap();
    for info in file.tensors() {
        assert_eq!(reread.tensor_bytes(reread.tensor(&info.name).unwrap()), file.tensor_bytes(info));
    }
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let dir = temp_dir("truncate");
    let (path, _) = sample_file(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let cut_path = dir.path().join("cut.gguf");
    let step = (bytes.len() / 300).max(1);
    for len in (0..bytes.len()).step_by(step) {
        std::fs::write(&cut_path, &bytes[..len]).unwrap();
        let err = GgufFile::open(&cut_path).expect_err("a truncated file must not open");
        let text = err.to_string();
        assert!(text.contains("cut.gguf"), "error names the file: {text}");
    }
}

#[test]
fn corrupt_headers_give_clear_errors() {
    let dir = temp_dir("corrupt");
    let (path, _) = sample_file(dir.path());
    let good = std::fs::read(&path).unwrap();
    let bad_path = dir.path().join("bad.gguf");

    let mut bytes = good.clone();
    bytes[0] = b'X';
    std::fs::write(&bad_path, &bytes).unwrap();
    assert!(matches!(GgufFile::open(&bad_path), Err(QuantError::BadMagic { .. })));

    let mut bytes = good.clone();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&bad_path, &bytes).unwrap();
    assert!(matches!(GgufFile::open(&bad_path), Err(QuantError::UnsupportedVersion { version: 1, .. })));

    let mut bytes = good.clone();
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&bad_path, &bytes).unwrap();
    assert!(matches!(GgufFile::open(&bad_path), Err(QuantError::Truncated { .. })));

    // Flip bytes all over the header: any outcome but a panic is acceptable.
    let header_len = GgufFile::open(&path).unwrap().data_offset() as usize;
    let mut seed = 0x1234_5678u64;
    for _ in 0..400 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut bytes = good.clone();
        let at = (seed >> 33) as usize % header_len;
        bytes[at] ^= (seed >> 13) as u8 | 1;
        std::fs::write(&bad_path, &bytes).unwrap();
        let _ = GgufFile::open(&bad_path);
    }
}

#[test]
fn writer_rejects_wrong_sizes_and_leaves_no_partial_file() {
    let dir = temp_dir("writer");
    let mut w = GgufWriter::new();
    assert!(w.tensor("t", &[2, 32], StorageType::Q8_0, vec![0u8; 10]).is_err());
    assert!(w.tensor("t", &[2, 33], StorageType::Q8_0, vec![0u8; 68]).is_err());
    // A write into a missing directory fails without leaving `<name>.tmp` behind.
    let target = dir.path().join("missing-dir").join("x.gguf");
    w.tensor("ok", &[4], StorageType::F32, vec![0u8; 16]).unwrap();
    assert!(w.write(&target).is_err());
    assert!(!target.exists());
    let final_path = dir.path().join("x.gguf");
    w.write(&final_path).unwrap();
    assert!(final_path.exists());
    assert!(!dir.path().join("x.gguf.tmp").exists());
}

/// A one-layer qwen3 file whose metadata and tensors a test can spoil.
fn tiny_model(dir: &std::path::Path, name: &str, spoil: impl FnOnce(&mut GgufWriter<'_>)) -> PathBuf {
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("qwen3".into()));
    for (key, value) in [
        ("qwen3.embedding_length", 256u32),
        ("qwen3.feed_forward_length", 512),
        ("qwen3.block_count", 1),
        ("qwen3.attention.head_count", 4),
        ("qwen3.attention.head_count_kv", 2),
        ("qwen3.vocab_size", 300),
    ] {
        w.metadata(key, GgufValue::U32(value));
    }
    w.metadata("qwen3.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-6));
    spoil(&mut w);
    let data = vec![0u8; 256 * 4];
    w.tensor("output_norm.weight", &[256], StorageType::F32, data.clone()).unwrap();
    w.tensor("blk.0.attn_norm.weight", &[256], StorageType::F32, data).unwrap();
    let path = dir.join(name);
    w.write(&path).unwrap();
    path
}

#[test]
fn absurd_counts_and_values_in_metadata_name_their_key() {
    let dir = temp_dir("absurd");
    let ok = tiny_model(dir.path(), "ok.gguf", |_| {});
    assert_eq!(GgufFile::open(&ok).unwrap().model_spec().unwrap().num_layers, 1);
    let cases: [(&str, GgufValue, &str); 4] = [
        ("qwen3.block_count", GgufValue::U64(1 << 32), "qwen3.block_count"),
        ("qwen3.vocab_size", GgufValue::U64(u64::MAX), "qwen3.vocab_size"),
        ("qwen3.attention.layer_norm_rms_epsilon", GgufValue::F32(f32::NAN), "layer_norm_rms_epsilon"),
        ("qwen3.rope.freq_base", GgufValue::F32(f32::INFINITY), "rope.freq_base"),
    ];
    for (i, (key, value, named)) in cases.into_iter().enumerate() {
        let path = tiny_model(dir.path(), &format!("bad{i}.gguf"), |w| w.metadata(key, value));
        let err = GgufFile::open(&path).unwrap().model_spec().unwrap_err().to_string();
        assert!(err.contains(named) && err.contains(&format!("bad{i}.gguf")), "{key}: {err}");
    }
}

#[test]
fn overlapping_or_repeated_tensors_are_refused() {
    let dir = temp_dir("overlap");
    let path = tiny_model(dir.path(), "model.gguf", |_| {});
    let mut bytes = std::fs::read(&path).unwrap();
    // The second tensor's offset field follows its name, dimension count, one dimension
    // and its type: point it at the first tensor's bytes.
    let name = b"blk.0.attn_norm.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4 + 8 + 4;
    bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = GgufFile::open(&path).unwrap_err().to_string();
    assert!(err.contains("overlap") && err.contains("output_norm.weight"), "{err}");
    // The same name twice: two tensors `xa` and `xb`, the second renamed `xa`.
    let twice = tiny_model(dir.path(), "twice.gguf", |w| {
        w.tensor("xa", &[256], StorageType::F32, vec![0u8; 1024]).unwrap();
        w.tensor("xb", &[256], StorageType::F32, vec![0u8; 1024]).unwrap();
    });
    assert!(GgufFile::open(&twice).is_ok(), "distinct names load");
    let mut bytes = std::fs::read(&twice).unwrap();
    let at = bytes.windows(2).position(|w| w == b"xb").unwrap();
    bytes[at + 1] = b'a';
    std::fs::write(&twice, &bytes).unwrap();
    let err = GgufFile::open(&twice).unwrap_err().to_string();
    assert!(err.contains("`xa`") && err.contains("twice"), "{err}");
}

#[test]
fn control_characters_in_names_are_escaped_in_messages() {
    let dir = temp_dir("escape");
    let twice = tiny_model(dir.path(), "esc.gguf", |w| {
        w.tensor("x\u{1b}[2Ja", &[256], StorageType::F32, vec![0u8; 1024]).unwrap();
        w.tensor("x\u{1b}[2Jb", &[256], StorageType::F32, vec![0u8; 1024]).unwrap();
    });
    let mut bytes = std::fs::read(&twice).unwrap();
    let at = bytes.windows(6).position(|w| w == b"x\x1b[2Jb").unwrap();
    bytes[at + 5] = b'a';
    std::fs::write(&twice, &bytes).unwrap();
    let err = GgufFile::open(&twice).unwrap_err().to_string();
    assert!(err.contains("x\\u{1b}[2Ja") && !err.contains('\u{1b}'), "{err:?}");
}
