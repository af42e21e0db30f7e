//! A safetensors header the `safetensors` crate refused, checked tensor by tensor, so a
//! bad entry is reported with its tensor's name and the numbers that disagree (the crate
//! reports most of these without a name, or names the tensor after a gap rather than the
//! one that caused it). What this check does not recognise is left to the crate's error.

use crate::QuantError;
use serde_json::{Map, Value};
use std::path::Path;

/// Checks every tensor entry of the safetensors file `bytes` (named `path` in errors):
/// its byte length matches its shape and dtype, its range lies inside the data section,
/// no two ranges overlap, and the ranges cover the data section without gaps.
pub(crate) fn check_header(path: &Path, bytes: &[u8]) -> Result<(), QuantError> {
    let Some(header) = header(bytes) else { return Ok(()) };
    let Ok(entries) = serde_json::from_slice::<Map<String, Value>>(header) else { return Ok(()) };
    let data_len = (bytes.len() - 8 - header.len()) as u64;
    let tensor_err =
        |tensor: &str, reason: String| QuantError::Tensor { path: path.to_path_buf(), tensor: tensor.into(), reason };
    let mut ranges: Vec<(u64, u64, &str)> = Vec::new();
    for (name, entry) in entries.iter().filter(|(name, _)| *name != "__metadata__") {
        let dtype = entry.get("dtype").and_then(Value::as_str);
        let shape: Option<Vec<u64>> =
            entry.get("shape").and_then(Value::as_array).and_then(|dims| dims.iter().map(Value::as_u64).collect());
        let offsets: Option<Vec<u64>> = entry
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|o| o.iter().map(Value::as_u64).collect())
            .filter(|o: &Vec<u64>| o.len() == 2);
        let (Some(dtype), Some(shape), Some(offsets)) = (dtype, shape, offsets) else { continue };
        let Some(bits) = dtype_bits(dtype) else { continue };
        let (start, end) = (offsets[0], offsets[1]);
        if end < start {
            return Err(tensor_err(name, format!("data_offsets [{start}, {end}] end before they start")));
        }
        let needed = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(bits))
            .map(|b| b.div_ceil(8))
            .ok_or_else(|| tensor_err(name, format!("shape {shape:?} is too large to address")))?;
        if end - start != needed {
            let reason = format!(
                "shape {shape:?} of {dtype} needs {needed} bytes, but data_offsets [{start}, {end}] hold {}",
                end - start
            );
            return Err(tensor_err(name, reason));
        }
        if end > data_len {
            let reason = format!(
                "data_offsets [{start}, {end}] reach past the data section's {data_len} bytes (file truncated?)"
            );
            return Err(tensor_err(name, reason));
        }
        ranges.push((start, end, name));
    }
    ranges.sort_unstable();
    let mut covered = 0u64;
    let mut previous: Option<&str> = None;
    for &(start, end, name) in &ranges {
        if start < covered {
            let other = previous.unwrap_or("?");
            let reason = format!("data_offsets [{start}, {end}] overlap tensor `{other}`, which ends at {covered}");
            return Err(tensor_err(name, reason));
        }
        if start > covered {
            let after = previous.map_or("the start of the data".to_string(), |p| format!("tensor `{p}`"));
            let reason =
                format!("data_offsets start at {start}, leaving bytes {covered}..{start} after {after} unused");
            return Err(tensor_err(name, reason));
        }
        covered = end;
        previous = Some(name);
    }
    if covered < data_len && !ranges.is_empty() {
        let last = previous.unwrap_or("?");
        let reason = format!("{} bytes follow the last tensor `{last}`, which no tensor holds", data_len - covered);
        return Err(QuantError::Checkpoint { path: path.to_path_buf(), reason });
    }
    Ok(())
}

/// The JSON header of a safetensors file, if its declared length fits the file.
fn header(bytes: &[u8]) -> Option<&[u8]> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = usize::try_from(len).ok()?.checked_add(8)?;
    bytes.get(8..end)
}

/// Bits per element of a safetensors dtype name.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F64" | "I64" | "U64" | "C64" => 64,
        "F32" | "I32" | "U32" => 32,
        "F16" | "BF16" | "I16" | "U16" => 16,
        "F8_E4M3" | "F8_E5M2" | "F8_E8M0" | "I8" | "U8" | "BOOL" => 8,
        "F6_E2M3" | "F6_E3M2" => 6,
        "F4" => 4,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::check_header;
    use std::path::Path;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        bytes
    }

    fn error(header: &str, data_len: usize) -> String {
        check_header(Path::new("m.safetensors"), &file(header, data_len)).unwrap_err().to_string()
    }

    #[test]
    fn each_bad_range_names_its_tensor_and_numbers() {
        let good = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[4],"data_offsets":[8,16]}}"#;
        assert!(check_header(Path::new("m.safetensors"), &file(good, 16)).is_ok());
        let size = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let e = error(size, 8);
        assert!(e.contains("m.safetensors") && e.contains("`a`") && e.contains("needs 12 bytes"), "{e}");
        let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let e = error(overlap, 12);
        assert!(e.contains("`b`") && e.contains("overlap tensor `a`"), "{e}");
        let past = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let e = error(past, 4);
        assert!(e.contains("`a`") && e.contains("data section's 4 bytes"), "{e}");
        let gap = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        let e = error(gap, 12);
        assert!(e.contains("`b`") && e.contains("4..8 after tensor `a`"), "{e}");
        let e = error(past, 12);
        assert!(e.contains("4 bytes follow the last tensor `a`"), "{e}");
        let huge = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#;
        assert!(error(huge, 8).contains("too large"));
        // Through the reader: the file the crate refuses gets the named message.
        let e = crate::shard_tensors(Path::new("m.safetensors"), 0, &file(overlap, 12)).unwrap_err().to_string();
        assert!(e.contains("overlap tensor `a`"), "{e}");
        assert_eq!(crate::shard_tensors(Path::new("m.safetensors"), 0, &file(good, 16)).unwrap().len(), 2);
    }
}
