//! The input of a matrix product quantized as Candle's `mmvq_gguf_quantize_q8_1_f32`
//! kernel does it: blocks of 32 values, `d = amax / 127`, `q = round(x / d)` (ties away
//! from zero), `d` kept as f16 — every step IEEE, so the CPU gets the device's values.

use half::f16;

/// Values per Q8_1 block.
pub const BLOCK: usize = 32;

/// A vector in Q8_1: its values and one scale per block of [`BLOCK`].
#[derive(Debug, Clone, PartialEq)]
pub struct Q8_1 {
    /// The quantized values, `x.len()` of them.
    pub qs: Vec<i8>,
    /// Each block's scale as the kernels read it (the f16 widened to f32).
    pub d: Vec<f32>,
}

impl Q8_1 {
    /// Quantizes `x`; its length must be a multiple of [`BLOCK`] (the callers' widths
    /// are multiples of 256).
    pub fn quantize(x: &[f32]) -> Self {
        debug_assert!(x.len().is_multiple_of(BLOCK));
        let mut qs = Vec::with_capacity(x.len());
        let mut d = Vec::with_capacity(x.len() / BLOCK);
        for block in x.chunks_exact(BLOCK) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = amax / 127.0;
            qs.extend(block.iter().map(|v| if amax == 0.0 { 0 } else { (v / scale).round() as i8 }));
            d.push(f16::from_f32(scale).to_f32());
        }
        Self { qs, d }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.qs.len()
    }

    /// True for an empty vector.
    pub fn is_empty(&self) -> bool {
        self.qs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_as_the_kernel() {
        let mut x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        x[40..].iter_mut().for_each(|v| *v = 0.0);
        let q = Q8_1::quantize(&x);
        // Block 0: amax 20·0.37 → q = ±127 at the extreme, rounding half away from zero.
        let d0 = 20.0f32 * 0.37 / 127.0;
        assert_eq!(q.d[0], f16::from_f32(d0).to_f32());
        assert_eq!(q.qs[0], -127);
        for (i, (q, x)) in q.qs.iter().zip(&x).take(32).enumerate() {
            assert_eq!(*q, (x / d0).round() as i8, "value {i}");
        }
        // A block of zeros from 40 on: q = 0 there, no division by zero.
        assert!(q.qs[40..].iter().all(|&v| v == 0));
        assert_eq!(Q8_1::quantize(&[0f32; 32]).d, vec![0.0]);
    }
}
