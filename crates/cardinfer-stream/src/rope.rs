//! Rotary position embeddings: inverse frequencies (with Llama 3 scaling) and the
//! cos/sin tables for a range of positions.

use crate::Result;
use candle_core::{Device, Tensor};
use cardinfer_core::{ModelSpec, RopeScaling, RopeStyle};

/// RoPE for one model: its inverse frequencies and pairing style.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    style: RopeStyle,
}

impl Rope {
    /// Frequencies for `spec`; `freq_factors` (GGUF `rope_freqs.weight`, one divisor per
    /// frequency) override `spec.rope_scaling` when present.
    pub fn new(spec: &ModelSpec, freq_factors: Option<Vec<f32>>) -> Self {
        let dim = spec.head_dim;
        // As transformers computes them: exponent in f32, then 1 / base^x.
        let mut inv_freq: Vec<f32> =
            (0..dim).step_by(2).map(|i| 1.0 / (spec.rope_theta as f32).powf(i as f32 / dim as f32)).collect();
        if let Some(factors) = freq_factors {
            for (f, d) in inv_freq.iter_mut().zip(factors) {
                *f /= d;
            }
        } else if let Some(scaling) = spec.rope_scaling {
            inv_freq = scale(inv_freq, scaling);
        }
        Self { inv_freq, style: spec.rope_style }
    }

    /// The inverse frequencies (head_dim / 2 of them).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// cos and sin tables `[len, head_dim / 2]` for positions `start..start + len`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(len * half);
        let mut sin = Vec::with_capacity(len * half);
        for p in start..start + len {
            for &f in &self.inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok((Tensor::from_vec(cos, (len, half), device)?, Tensor::from_vec(sin, (len, half), device)?))
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]` (contiguous) with tables from
    /// [`Rope::tables`].
    pub fn apply(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let out = match self.style {
            RopeStyle::Half => candle_nn::rotary_emb::rope(&x, cos, sin)?,
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
        };
        Ok(out)
    }
}

fn scale(inv_freq: Vec<f32>, scaling: RopeScaling) -> Vec<f32> {
    match scaling {
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let (factor, low, high) = (factor as f32, low_freq_factor as f32, high_freq_factor as f32);
            let original = original_max_position_embeddings as f32;
            let low_freq_wavelen = original / low;
            let high_freq_wavelen = original / high;
            inv_freq
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (original / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardinfer_core::Family;

    fn spec(scaling: Option<RopeScaling>) -> ModelSpec {
        ModelSpec {
            family: Family::Llama,
            vocab_size: 8,
            hidden_size: 128,
            intermediate_size: 8,
            num_layers: 1,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: scaling,
            rope_style: RopeStyle::Half,
            context_length: 8,
            tie_word_embeddings: false,
            qkv_bias: false,
            qk_norm: false,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let plain = Rope::new(&spec(None), None);
        let scaled = Rope::new(&spec(Some(scaling)), None);
        // Highest frequency (wavelength 2π) is untouched.
        assert_eq!(plain.inv_freq()[0], scaled.inv_freq()[0]);
        // Lowest frequency (wavelength ≫ 8192) is divided by the factor.
        let last = plain.inv_freq().len() - 1;
        assert!((plain.inv_freq()[last] / 8.0 - scaled.inv_freq()[last]).abs() < 1e-12);
        // In between, the result lies between f/8 and f.
        for (p, s) in plain.inv_freq().iter().zip(scaled.inv_freq()) {
            assert!(*s <= *p && *s >= *p / 8.0 - 1e-12);
        }
    }

    #[test]
    fn gguf_freq_factors_divide() {
        let factors: Vec<f32> = (0..64).map(|i| 1.0 + i as f32).collect();
        let plain = Rope::new(&spec(None), None);
        let scaled = Rope::new(&spec(None), Some(factors.clone()));
        for ((p, s), d) in plain.inv_freq().iter().zip(scaled.inv_freq()).zip(factors) {
            assert_eq!(*s, *p / d);
        }
    }
}
