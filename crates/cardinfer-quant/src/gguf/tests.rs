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
