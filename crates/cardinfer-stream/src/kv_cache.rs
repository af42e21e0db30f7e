//! The KV cache, owned by the executor and handed to each block: blocks hold no state,
//! so the same block code runs whether its weights are resident or streamed.

use crate::Result;
use candle_core::Tensor;

/// Keys and values of one layer, `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvSlot {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl KvSlot {
    /// Appends `k`, `v` for new positions and returns the keys and values of all positions.
    /// The cache follows the computation: if the new keys are on another device (a layer
    /// computed on the host for decode after a prefill on the device, in hybrid runs),
    /// the held positions move there first.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.move_to(k.device())?;
        let (k, v) = match (&self.k, &self.v) {
            (Some(pk), Some(pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
            _ => (k.contiguous()?, v.contiguous()?),
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        Ok((k, v))
    }

    /// Moves the held keys and values to `device` (no copy if they are there already).
    pub fn move_to(&mut self, device: &candle_core::Device) -> Result<()> {
        for t in [&mut self.k, &mut self.v].into_iter().flatten() {
            if !t.device().same_device(device) {
                *t = t.to_device(device)?;
            }
        }
        Ok(())
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.k.as_ref().and_then(|k| k.dim(2).ok()).unwrap_or(0)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the first `len` positions (rewinding a conversation).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len == 0 {
            *self = Self::default();
        } else if len < self.len() {
            if let (Some(k), Some(v)) = (&self.k, &self.v) {
                self.k = Some(k.narrow(2, 0, len)?.contiguous()?);
                self.v = Some(v.narrow(2, 0, len)?.contiguous()?);
            }
        }
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        [&self.k, &self.v].into_iter().flatten().map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64).sum()
    }
}

/// One [`KvSlot`] per layer, and the number of positions seen.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<KvSlot>,
}

impl KvCache {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![KvSlot::default(); num_layers] }
    }

    /// Positions cached (the next token's position).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, KvSlot::len)
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot of layer `i`.
    pub fn layer_mut(&mut self, i: usize) -> &mut KvSlot {
        &mut self.layers[i]
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = KvSlot::default());
    }

    /// Keeps only the first `len` positions of every layer.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.truncate(len))
    }

    /// Bytes held across layers.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(KvSlot::bytes).sum()
    }
}
