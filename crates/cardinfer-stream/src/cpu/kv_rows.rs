//! Keys or values of a KV cache read in place on the CPU, in the cache's storage type
//! ([`cardinfer_core::KvType`]): f32 rows are used as they are, f16 and `q8_0` rows are
//! widened to f32 (f16 exactly, `q8_0` as `q · d`, as the kernels read them), so the
//! attention arithmetic after the read is the same for every storage type.

use crate::{Result, StreamError};
use candle_core::{DType, Storage, Tensor};
use cardinfer_core::{Q8_0_BLOCK as BLOCK, Q8_0_BLOCK_BYTES as BLOCK_BYTES};
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::borrow::Cow;

/// Rows of keys or values as stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KvRows<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
    /// `q8_0` blocks (34 bytes per 32 values).
    Q8_0(&'a [u8]),
}

impl<'a> KvRows<'a> {
    /// Values `range` of these rows (for `q8_0`, whole blocks: `range` starts and ends on
    /// a multiple of 32, as rows of heads do).
    pub(crate) fn slice(&self, range: std::ops::Range<usize>) -> KvRows<'a> {
        match *self {
            Self::F32(s) => Self::F32(&s[range]),
            Self::F16(s) => Self::F16(&s[range]),
            Self::Q8_0(s) => Self::Q8_0(&s[range.start / BLOCK * BLOCK_BYTES..range.end / BLOCK * BLOCK_BYTES]),
        }
    }

    /// Every value as f32: f32 rows as they are, f16 and `q8_0` rows widened once here
    /// (f16 exactly, `q8_0` as `q · d`, as the kernels read them) for a caller that reads
    /// each row many times (the rows of a prompt, the query heads of a group).
    pub(crate) fn to_f32(self) -> Cow<'a, [f32]> {
        match self {
            Self::F32(s) => Cow::Borrowed(s),
            Self::F16(s) => {
                let mut out = vec![0f32; s.len()];
                s.convert_to_f32_slice(&mut out);
                Cow::Owned(out)
            }
            Self::Q8_0(s) => {
                let mut out = vec![0f32; s.len() / BLOCK_BYTES * BLOCK];
                for (block, o) in s.chunks_exact(BLOCK_BYTES).zip(out.chunks_exact_mut(BLOCK)) {
                    crate::model::kv_q8::dequantize_block(block, o);
                }
                Cow::Owned(out)
            }
        }
    }
}

/// Runs `f` on the values of a contiguous CPU tensor of keys or values `[batch, heads,
/// capacity, d]` (from its first element, in place: f32, f16, or `q8_0` bytes `[batch,
/// heads, capacity, d / 32 · 34]`) and its `capacity`.
pub(crate) fn with_host_kv<R>(t: &Tensor, f: impl FnOnce(KvRows<'_>, usize) -> R) -> Result<R> {
    let capacity = t.dim(2)?;
    let not_host = || StreamError::InvalidParameter {
        name: "kv",
        reason: format!("the KV cache is not f32, f16 or q8_0 in host memory ({:?} on {:?})", t.dtype(), t.device()),
    };
    let (storage, layout) = t.storage_and_layout();
    if !layout.is_contiguous() {
        return Err(StreamError::InvalidParameter { name: "kv", reason: "the KV cache is not contiguous".into() });
    }
    let Storage::Cpu(cpu) = &*storage else { return Err(not_host()) };
    let range = layout.start_offset()..layout.start_offset() + t.elem_count();
    let rows = match t.dtype() {
        DType::F32 => KvRows::F32(cpu.as_slice::<f32>().map_err(|_| not_host())?.get(range).ok_or_else(not_host)?),
        DType::F16 => KvRows::F16(cpu.as_slice::<f16>().map_err(|_| not_host())?.get(range).ok_or_else(not_host)?),
        DType::U8 => KvRows::Q8_0(cpu.as_slice::<u8>().map_err(|_| not_host())?.get(range).ok_or_else(not_host)?),
        _ => return Err(not_host()),
    };
    Ok(f(rows, capacity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn f16_rows_widen_to_the_stored_values() {
        let values: Vec<f32> = (0..8).map(|i| i as f32 * 0.1 - 0.3).collect();
        let t = Tensor::from_vec(values.clone(), (1, 2, 2, 2), &Device::Cpu).unwrap();
        let halves = t.to_dtype(DType::F16).unwrap();
        with_host_kv(&halves, |rows, capacity| {
            assert_eq!(capacity, 2);
            let want: Vec<f32> = values[2..4].iter().map(|&x| f16::from_f32(x).to_f32()).collect();
            assert_eq!(&rows.to_f32()[2..4], want.as_slice());
            assert_eq!(&*rows.slice(2..4).to_f32(), want.as_slice());
        })
        .unwrap();
        with_host_kv(&t, |rows, _| {
            assert!(matches!(rows.to_f32(), Cow::Borrowed(_)), "f32 rows are not copied");
            assert_eq!(&*rows.slice(2..4).to_f32(), &values[2..4]);
        })
        .unwrap();
        let ints = t.to_dtype(DType::U32).unwrap();
        let err = with_host_kv(&ints, |_, _| ()).unwrap_err().to_string();
        assert!(err.contains("not f32, f16 or q8_0"), "{err}");
        // q8_0: two heads of one 32-value row each; row 0 of the second head.
        let values: Vec<f32> = (0..64).map(|i| i as f32 * 0.25 - 8.0).collect();
        let t = Tensor::from_vec(values, (1, 2, 1, 32), &Device::Cpu).unwrap();
        let q = crate::model::kv_cache::stored(cardinfer_core::KvType::Q8_0, &t).unwrap();
        let want = crate::model::kv_cache::widened(cardinfer_core::KvType::Q8_0, &q).unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        with_host_kv(&q, |rows, capacity| {
            assert_eq!(capacity, 1);
            assert_eq!(&*rows.slice(32..64).to_f32(), &want[32..]);
            assert_eq!(&*rows.to_f32(), want.as_slice());
        })
        .unwrap();
    }
}
