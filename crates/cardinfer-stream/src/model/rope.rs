//! Rotary position embeddings: inverse frequencies (with Llama 3 scaling) and the
//! cos/sin tables for a range of positions; the causal mask.
//!
//! The tables of the whole context are built once per device (kept for every device used:
//! hybrid runs alternate between the CPU and the GPU layer by layer, and rebuilding them
//! at each switch cost more than the layers' own arithmetic) and sliced per call, and the
//! mask is computed on the device from a cached position vector: a pass makes no
//! host → device copies of its own. (On CUDA such small copies would queue behind the
//! copy engine's block uploads and stall every layer's compute until the upload ends —
//! measured with `CARDINFER_TIMELINE`, BENCHMARKS.md.) The values are exactly those the
//! host would compute.

use crate::Result;
use candle_core::{DType, Device, Tensor};
use cardinfer_core::{ModelSpec, RopeScaling, RopeStyle};
use std::sync::{Arc, Mutex};

/// RoPE for one model: its inverse frequencies and pairing style.
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    style: RopeStyle,
    context: usize,
    cached: Arc<Mutex<Vec<DeviceTables>>>,
}

/// The tables of positions `0..context` on one device.
#[derive(Debug)]
struct DeviceTables {
    device: Device,
    cos: Tensor,
    sin: Tensor,
    /// Positions `0..context` as f32, for masks.
    positions: Tensor,
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
        Self { inv_freq, style: spec.rope_style, context: spec.context_length, cached: Arc::default() }
    }

    /// The same RoPE with every frequency divided by `factor` (linear position scaling).
    pub fn scaled(mut self, factor: f64) -> Self {
        if factor != 1.0 {
            self.inv_freq.iter_mut().for_each(|f| *f /= factor as f32);
        }
        self
    }

    /// Additive mask `[group * seq, total]` of a sliding-window layer: query row `r` (position
    /// `q = pos + r % seq`) sees keys `q - window + 1 ..= q` (0), no others (−∞).
    pub fn window_mask(
        &self,
        group: usize,
        seq: usize,
        pos: usize,
        total: usize,
        window: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let mut mask = Vec::with_capacity(seq * total);
        for i in 0..seq {
            let q = pos + i;
            mask.extend((0..total).map(|k| if k <= q && q - k < window { 0f32 } else { f32::NEG_INFINITY }));
        }
        let mask = Tensor::from_vec(mask, (1, seq, total), device)?;
        Ok(mask.broadcast_as((group, seq, total))?.contiguous()?.reshape((group * seq, total))?)
    }

    /// Which elements are rotated together.
    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// The inverse frequencies (head_dim / 2 of them).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// cos and sin tables `[len, head_dim / 2]` for positions `start..start + len`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        if start + len > self.context {
            return self.host_tables(start, len, device);
        }
        self.with_tables(device, |t| Ok((t.cos.narrow(0, start, len)?, t.sin.narrow(0, start, len)?)))
    }

    /// Additive mask `[group * seq, total]`: query row `r` (position `pos + r % seq`) sees
    /// keys `0..=pos + r % seq` (0), not the later ones (−∞). `group` query heads share
    /// each KV head and are stacked as rows.
    pub fn causal_mask(&self, group: usize, seq: usize, pos: usize, total: usize, device: &Device) -> Result<Tensor> {
        if pos + seq > self.context || total > self.context {
            return crate::model::family::causal_mask(group, seq, pos, total, device);
        }
        self.with_tables(device, |t| {
            let keys = t.positions.narrow(0, 0, total)?.unsqueeze(0)?;
            let queries = t.positions.narrow(0, pos, seq)?.unsqueeze(1)?;
            let visible = keys.broadcast_le(&queries)?;
            let open = Tensor::zeros((seq, total), DType::F32, device)?;
            let closed = Tensor::full(f32::NEG_INFINITY, (seq, total), device)?;
            let mask = visible.where_cond(&open, &closed)?;
            Ok(mask.unsqueeze(0)?.broadcast_as((group, seq, total))?.contiguous()?.reshape((group * seq, total))?)
        })
    }

    /// Runs `f` on this device's tables, building them first if needed.
    fn with_tables<T>(&self, device: &Device, f: impl FnOnce(&DeviceTables) -> Result<T>) -> Result<T> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tables) = cached.iter().find(|t| t.device.same_device(device)) {
            return f(tables);
        }
        let (cos, sin) = self.host_tables(0, self.context, device)?;
        let positions: Vec<f32> = (0..self.context).map(|p| p as f32).collect();
        let positions = Tensor::from_vec(positions, self.context, device)?;
        let tables = DeviceTables { device: device.clone(), cos, sin, positions };
        let out = f(&tables);
        cached.push(tables);
        out
    }

    /// The tables computed on the host and copied to `device`.
    fn host_tables(&self, start: usize, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
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
            moe: None,
            gemma: None,
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

    #[test]
    fn cached_tables_and_device_mask_equal_the_host_ones() {
        let rope = Rope::new(&spec(None), None);
        let cpu = Device::Cpu;
        let vec2 = |t: Tensor| t.to_vec2::<f32>().unwrap();
        for (start, len) in [(0, 8), (3, 1), (7, 1), (2, 5)] {
            let (cos, sin) = rope.tables(start, len, &cpu).unwrap();
            let (hcos, hsin) = rope.host_tables(start, len, &cpu).unwrap();
            assert_eq!(vec2(cos), vec2(hcos), "cos {start}+{len}");
            assert_eq!(vec2(sin), vec2(hsin), "sin {start}+{len}");
        }
        // Beyond the context the host path still answers.
        assert_eq!(rope.tables(6, 4, &cpu).unwrap().0.dims(), &[4, 64]);
        for (group, seq, pos, total) in [(1, 4, 0, 4), (2, 3, 2, 5), (4, 1, 7, 8), (3, 8, 0, 8)] {
            let device = vec2(rope.causal_mask(group, seq, pos, total, &cpu).unwrap());
            let host = vec2(crate::model::family::causal_mask(group, seq, pos, total, &cpu).unwrap());
            assert_eq!(device, host, "group {group} seq {seq} pos {pos} total {total}");
        }
        // Built once per device, however many calls.
        assert_eq!(rope.cached.lock().unwrap().len(), 1);
    }
}
