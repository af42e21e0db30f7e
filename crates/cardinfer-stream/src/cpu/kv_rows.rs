//! Keys or values of a KV cache read in place on the CPU, in the cache's storage type
//! ([`cardinfer_core::KvType`]): f32 rows are used as they are, f16 rows are widened into
//! a caller's buffer one row at a time (exactly: every f16 is an f32), so the attention
//! arithmetic after the read is the same for every storage type.

use crate::{Result, StreamError};
use candle_core::{DType, Storage, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Rows of keys or values as stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KvRows<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// f16 values.
    F16(&'a [f16]),
}

impl<'a> KvRows<'a> {
    /// Values `range` of these rows.
    pub(crate) fn slice(&self, range: std::ops::Range<usize>) -> KvRows<'a> {
        match *self {
            Self::F32(s) => Self::F32(&s[range]),
            Self::F16(s) => Self::F16(&s[range]),
        }
    }

    /// Row `t` of `d` values as f32: a view of f32 rows, or f16 rows widened into `buf`
    /// (at least `d` long).
    #[inline(always)]
    pub(crate) fn row<'s>(&'s self, t: usize, d: usize, buf: &'s mut [f32]) -> &'s [f32] {
        match self {
            Self::F32(s) => &s[t * d..(t + 1) * d],
            Self::F16(s) => {
                let out = &mut buf[..d];
                s[t * d..(t + 1) * d].convert_to_f32_slice(out);
                out
            }
        }
    }
}

/// Runs `f` on the values of a contiguous CPU tensor of keys or values `[batch, heads,
/// capacity, d]` (from its first element, in place, f32 or f16) and its `capacity`.
pub(crate) fn with_host_kv<R>(t: &Tensor, f: impl FnOnce(KvRows<'_>, usize) -> R) -> Result<R> {
    let capacity = t.dim(2)?;
    let not_host = || StreamError::InvalidParameter {
        name: "kv",
        reason: format!("the KV cache is not f32 or f16 in host memory ({:?} on {:?})", t.dtype(), t.device()),
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
        let mut buf = [0f32; 4];
        with_host_kv(&halves, |rows, capacity| {
            assert_eq!(capacity, 2);
            let want: Vec<f32> = values[2..4].iter().map(|&x| f16::from_f32(x).to_f32()).collect();
            assert_eq!(rows.row(1, 2, &mut buf), want.as_slice());
        })
        .unwrap();
        with_host_kv(&t, |rows, _| assert_eq!(rows.slice(2..4).row(0, 2, &mut buf), &values[2..4])).unwrap();
        let ints = t.to_dtype(DType::U32).unwrap();
        let err = with_host_kv(&ints, |_, _| ()).unwrap_err().to_string();
        assert!(err.contains("not f32 or f16"), "{err}");
    }
}
