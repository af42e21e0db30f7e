//! Quantization math for every supported storage type: quantize (in parallel over row
//! groups), dequantize, and the documented error bound of each type.
//!
//! The quantizers are Candle's, which follow ggml's reference implementations, so the
//! bytes are what llama.cpp's own quantizer writes without an importance matrix.

use crate::candle::{ggml_dtype, quantize};
use crate::QuantError;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QTensor};
use candle_core::Device;
use cardinfer_core::StorageType;

/// Dequantizes the stored bytes of a tensor of `shape` (outermost first) into f32.
pub fn dequantize(name: &str, bytes: &[u8], shape: &[usize], storage: StorageType) -> Result<Vec<f32>, QuantError> {
    let err = |source| QuantError::Candle { tensor: name.to_string(), source };
    let bad = |reason: String| QuantError::Tensor { path: "<memory>".into(), tensor: name.to_string(), reason };
    let row_len = shape.last().copied().unwrap_or(1);
    let rows = shape.iter().rev().skip(1).product();
    let expected_bytes = storage.tensor_bytes(name, row_len, rows).map_err(|e| bad(e.to_string()))?;
    if expected_bytes != bytes.len() as u64 {
        return Err(bad(format!("{} bytes given, {expected_bytes} expected for {shape:?} {storage:?}", bytes.len())));
    }
    let values = match storage {
        StorageType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StorageType::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StorageType::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => {
            let q: QTensor =
                qtensor_from_ggml(ggml_dtype(storage), bytes, shape.to_vec(), &Device::Cpu).map_err(err)?;
            q.dequantize(&Device::Cpu).map_err(err)?.flatten_all().map_err(err)?.to_vec1::<f32>().map_err(err)?
        }
    };
    Ok(values)
}

/// Quantizes row-major `data` of `shape` into `storage`, splitting the rows over
/// `threads` threads (quantization is independent per row, so the bytes are identical to
/// a single-threaded run).
pub fn quantize_parallel(
    name: &str,
    data: &[f32],
    shape: &[usize],
    storage: StorageType,
    threads: usize,
) -> Result<Vec<u8>, QuantError> {
    let row_len = shape.last().copied().unwrap_or(1).max(1);
    let rows = data.len() / row_len;
    let threads = threads.clamp(1, rows.max(1));
    if threads == 1 || !storage.is_quantized() {
        return quantize(name, data, shape, storage);
    }
    let rows_per = rows.div_ceil(threads);
    let parts: Vec<Result<Vec<u8>, QuantError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = data
            .chunks(rows_per * row_len)
            .map(|chunk| scope.spawn(move || quantize(name, chunk, &[chunk.len() / row_len, row_len], storage)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(QuantError::Mismatch {
                        what: name.to_string(),
                        reason: "a quantization thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(&part?);
    }
    Ok(out)
}

/// The worst error of a storage type, as a fraction of the largest magnitude in the
/// block the value belongs to (32 elements for the legacy types, 256 for the k-quants):
/// every dequantized value `y` of an input `x` satisfies `|y - x| ≤ bound · max|x|`
/// over its block. F16/BF16 are relative to the value itself (round to nearest).
///
/// Derivations for the legacy types: Q8_0 stores `d = amax/127` and rounds, so the error
/// is `d/2 = amax/254`; Q4_0 and Q5_0 use `d = amax/8` and `amax/16`, with error up to
/// `d` at the clipped extreme; Q4_1/Q5_1 span `max - min ≤ 2·amax` in 15 / 31 steps, so
/// the error is at most `amax/15` / `amax/31`. Each also stores its scale (and minimum)
/// in f16, which adds up to `2⁻¹¹·amax` per stored value: the bounds add `1/512`
/// (`1/1024` for the single-scale types). The k-quants also round their per-sub-block
/// scales (6 bits, 4 for Q2_K) and search for the best scale, so their bound is the
/// worst error measured over Gaussian, uniform and outlier-heavy data by this crate's
/// tests, with a margin of about 1.4×.
pub fn error_bound(storage: StorageType) -> f32 {
    match storage {
        StorageType::F32 => 0.0,
        StorageType::F16 => 1.0 / 2048.0,
        StorageType::BF16 => 1.0 / 256.0,
        StorageType::Q8_0 | StorageType::Q8_1 | StorageType::Q8_K => 1.0 / 254.0 + 1.0 / 1024.0,
        StorageType::Q5_0 => 1.0 / 16.0 + 1.0 / 1024.0,
        StorageType::Q5_1 => 1.0 / 31.0 + 1.0 / 512.0,
        StorageType::Q4_0 => 1.0 / 8.0 + 1.0 / 1024.0,
        StorageType::Q4_1 => 1.0 / 15.0 + 1.0 / 512.0,
        StorageType::Q6_K => 0.04,
        StorageType::Q5_K => 0.08,
        StorageType::Q4_K => 0.12,
        StorageType::Q3_K => 0.35,
        StorageType::Q2_K => 0.5,
    }
}

/// Root-mean-square error of `approx` against `exact`, divided by the RMS of `exact`.
pub fn relative_rms_error(exact: &[f32], approx: &[f32]) -> f32 {
    let (mut err, mut norm) = (0f64, 0f64);
    for (&x, &y) in exact.iter().zip(approx) {
        err += ((x - y) as f64).powi(2);
        norm += (x as f64).powi(2);
    }
    (err / norm.max(f64::MIN_POSITIVE)).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test data: Gaussian-like (sum of uniforms), uniform, and Gaussian
    /// with one large outlier per 64 values.
    fn datasets(n: usize) -> Vec<(&'static str, Vec<f32>)> {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let gaussian: Vec<f32> = (0..n).map(|_| (0..4).map(|_| uniform()).sum::<f32>() * 0.5).collect();
        let flat: Vec<f32> = (0..n).map(|_| uniform()).collect();
        let outliers: Vec<f32> =
            gaussian.iter().enumerate().map(|(i, &v)| if i % 64 == 7 { v * 12.0 } else { v }).collect();
        vec![("gaussian", gaussian), ("uniform", flat), ("outliers", outliers)]
    }

    const TYPES: [StorageType; 13] = [
        StorageType::F16,
        StorageType::BF16,
        StorageType::Q8_0,
        StorageType::Q6_K,
        StorageType::Q5_K,
        StorageType::Q5_1,
        StorageType::Q5_0,
        StorageType::Q4_K,
        StorageType::Q4_1,
        StorageType::Q4_0,
        StorageType::Q3_K,
        StorageType::Q2_K,
        StorageType::F32,
    ];

    /// Largest `|y - x| / max|x over the block|` (relative to `|x|` for float types).
    fn worst_ratio(storage: StorageType, x: &[f32], y: &[f32]) -> f32 {
        if matches!(storage, StorageType::F16 | StorageType::BF16 | StorageType::F32) {
            return x.iter().zip(y).map(|(a, b)| (a - b).abs() / a.abs().max(1e-30)).fold(0.0, f32::max);
        }
        let block = storage.block_elems();
        x.chunks(block)
            .zip(y.chunks(block))
            .map(|(xb, yb)| {
                let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
                xb.iter().zip(yb).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / amax
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn every_type_round_trips_within_its_documented_bound() {
        let (rows, cols) = (16, 512);
        let mut failures = Vec::new();
        for (data_name, data) in datasets(rows * cols) {
            for storage in TYPES {
                let bytes = quantize("t", &data, &[rows, cols], storage).unwrap();
                assert_eq!(bytes.len() as u64, storage.tensor_bytes("t", cols, rows).unwrap());
                let back = dequantize("t", &bytes, &[rows, cols], storage).unwrap();
                let worst = worst_ratio(storage, &data, &back);
                let rms = relative_rms_error(&data, &back);
                eprintln!(
                    "{data_name:9} {:5} worst {worst:.4} bound {:.4} rms {rms:.4}",
                    storage.name(),
                    error_bound(storage)
                );
                if worst > error_bound(storage) {
                    failures.push(format!("{storage:?} on {data_name}: {worst} > {}", error_bound(storage)));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn parallel_quantization_writes_the_same_bytes() {
        let (_, data) = datasets(64 * 256).remove(0);
        for storage in [StorageType::Q4_K, StorageType::Q8_0, StorageType::F16] {
            let one = quantize("t", &data, &[64, 256], storage).unwrap();
            let many = quantize_parallel("t", &data, &[64, 256], storage, 5).unwrap();
            assert_eq!(one, many, "{storage:?}");
        }
    }

    #[test]
    fn dequantize_rejects_bytes_of_the_wrong_size() {
        let err = dequantize("w", &[0u8; 30], &[1, 32], StorageType::Q8_0).unwrap_err();
        assert!(err.to_string().contains('w'), "{err}");
    }
}
