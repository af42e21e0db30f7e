//! The KV cache, owned by the executor and handed to each block: blocks hold no state,
//! so the same block code runs whether its weights are resident or streamed.
//!
//! A slot either grows by concatenation (the default: it holds exactly the positions
//! seen, and moves between devices in hybrid runs) or is given a fixed capacity up front
//! ([`KvCache::with_capacity`]): then its buffers are allocated once, new positions are
//! written in place, and their device addresses stay the same for the whole
//! conversation — which the fused decode path needs (its kernels write the next
//! position straight into the buffers, and a recorded CUDA graph keeps their addresses).

use crate::{Result, StreamError};
use candle_core::{Device, Tensor};

/// Keys and values of one layer, `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvSlot {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Positions held.
    len: usize,
    /// Positions the buffers hold when preallocated; 0 = grow by concatenation.
    capacity: usize,
}

impl KvSlot {
    /// A slot whose buffers will hold `capacity` positions, allocated at the first append.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { capacity, ..Self::default() }
    }

    /// Appends `k`, `v` for new positions and returns the keys and values of all positions.
    /// The cache follows the computation: if the new keys are on another device (a layer
    /// computed on the host for decode after a prefill on the device, in hybrid runs),
    /// the held positions move there first.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.move_to(k.device())?;
        let new = k.dim(2)?;
        if self.capacity > 0 {
            return self.append_in_place(k, v, new);
        }
        let (k, v) = match (&self.k, &self.v) {
            (Some(pk), Some(pv)) => (Tensor::cat(&[pk, k], 2)?, Tensor::cat(&[pv, v], 2)?),
            _ => (k.contiguous()?, v.contiguous()?),
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        self.len += new;
        Ok((k, v))
    }

    fn append_in_place(&mut self, k: &Tensor, v: &Tensor, new: usize) -> Result<(Tensor, Tensor)> {
        if self.len + new > self.capacity {
            return Err(StreamError::ContextOverflow { tokens: new, cached: self.len, context: self.capacity });
        }
        if self.k.is_none() {
            let (b, heads, _, d) = k.dims4()?;
            let zeros = || Tensor::zeros((b, heads, self.capacity, d), k.dtype(), k.device());
            self.k = Some(zeros()?);
            self.v = Some(zeros()?);
        }
        let (Some(kb), Some(vb)) = (&self.k, &self.v) else { unreachable!("allocated above") };
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += new;
        // Attention reads a contiguous copy of the positions held, as after a concatenation.
        Ok((kb.narrow(2, 0, self.len)?.contiguous()?, vb.narrow(2, 0, self.len)?.contiguous()?))
    }

    /// Moves the held keys and values to `device` (no copy if they are there already).
    pub fn move_to(&mut self, device: &Device) -> Result<()> {
        for t in [&mut self.k, &mut self.v].into_iter().flatten() {
            if !t.device().same_device(device) {
                *t = t.to_device(device)?;
            }
        }
        Ok(())
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the preallocated buffers hold (0 when the slot grows by concatenation).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The preallocated key and value buffers `[batch, kv_heads, capacity, head_dim]`,
    /// once allocated (by the first append). Writing position `len()` into them and then
    /// calling [`KvSlot::commit`] is an append.
    pub fn buffers(&self) -> Option<(&Tensor, &Tensor)> {
        match (&self.k, &self.v) {
            (Some(k), Some(v)) if self.capacity > 0 => Some((k, v)),
            _ => None,
        }
    }

    /// Records that `n` positions were written into [`KvSlot::buffers`] after the held ones.
    pub fn commit(&mut self, n: usize) -> Result<()> {
        if self.buffers().is_none() || self.len + n > self.capacity {
            return Err(StreamError::ContextOverflow { tokens: n, cached: self.len, context: self.capacity });
        }
        self.len += n;
        Ok(())
    }

    /// Keeps only the first `len` positions (rewinding a conversation).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        if self.capacity > 0 {
            // The buffers stay; positions past `len` are overwritten by later appends.
            self.len = len;
        } else if len == 0 {
            *self = Self::default();
        } else if let (Some(k), Some(v)) = (&self.k, &self.v) {
            self.k = Some(k.narrow(2, 0, len)?.contiguous()?);
            self.v = Some(v.narrow(2, 0, len)?.contiguous()?);
            self.len = len;
        }
        Ok(())
    }

    /// Bytes held (the whole buffers when preallocated).
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
    /// An empty cache for `num_layers` layers, growing by concatenation.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![KvSlot::default(); num_layers] }
    }

    /// An empty cache whose layers hold up to `capacity` positions in buffers allocated
    /// once (at the first append) and written in place.
    pub fn with_capacity(num_layers: usize, capacity: usize) -> Self {
        Self { layers: vec![KvSlot::with_capacity(capacity); num_layers] }
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

    /// The slot of layer `i`, read only.
    pub fn layer(&self, i: usize) -> &KvSlot {
        &self.layers[i]
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Forgets everything (preallocated buffers are kept).
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            if l.capacity > 0 {
                l.len = 0;
            } else {
                *l = KvSlot::default();
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, IndexOp};

    fn step(i: usize, seq: usize) -> (Tensor, Tensor) {
        let k = Tensor::arange((i * 100) as f32, (i * 100 + 2 * seq * 4) as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, seq, 4))
            .unwrap();
        let v = (&k * -1.0).unwrap();
        (k, v)
    }

    #[test]
    fn preallocated_slot_returns_what_concatenation_returns() {
        let mut grown = KvSlot::default();
        let mut fixed = KvSlot::with_capacity(16);
        for (i, seq) in [3, 1, 1, 4, 1].into_iter().enumerate() {
            let (k, v) = step(i, seq);
            let (gk, gv) = grown.append(&k, &v).unwrap();
            let (fk, fv) = fixed.append(&k, &v).unwrap();
            assert_eq!(gk.i(0).unwrap().to_vec3::<f32>().unwrap(), fk.i(0).unwrap().to_vec3::<f32>().unwrap());
            assert_eq!(gv.i(0).unwrap().to_vec3::<f32>().unwrap(), fv.i(0).unwrap().to_vec3::<f32>().unwrap());
            assert_eq!(grown.len(), fixed.len());
        }
        assert_eq!(fixed.bytes(), 2 * 2 * 16 * 4 * 4);
    }

    #[test]
    fn preallocated_buffers_do_not_grow_over_1000_tokens() {
        let mut slot = KvSlot::with_capacity(1024);
        let (k, v) = step(0, 1);
        slot.append(&k, &v).unwrap();
        let (k0, v0) = slot.buffers().map(|(k, v)| (k.id(), v.id())).unwrap();
        let bytes = slot.bytes();
        for _ in 0..1000 {
            slot.append(&k, &v).unwrap();
            let (kb, vb) = slot.buffers().unwrap();
            assert_eq!((kb.id(), vb.id()), (k0, v0), "buffers were replaced");
            assert_eq!(slot.bytes(), bytes, "buffers grew");
        }
        assert_eq!(slot.len(), 1001);
    }

    #[test]
    fn full_slot_is_a_context_error_and_truncate_reuses_buffers() {
        let mut slot = KvSlot::with_capacity(4);
        let (k, v) = step(0, 3);
        slot.append(&k, &v).unwrap();
        let err = slot.append(&k, &v).unwrap_err();
        assert!(matches!(err, StreamError::ContextOverflow { tokens: 3, cached: 3, context: 4 }), "{err}");
        let id = slot.buffers().unwrap().0.id();
        slot.truncate(1).unwrap();
        slot.append(&k, &v).unwrap();
        assert_eq!(slot.len(), 4);
        assert_eq!(slot.buffers().unwrap().0.id(), id);
        assert!(slot.commit(1).is_err(), "commit past capacity");
    }

    #[test]
    fn commit_counts_positions_written_into_the_buffers() {
        let mut slot = KvSlot::with_capacity(8);
        assert!(slot.commit(1).is_err(), "nothing allocated yet");
        let (k, v) = step(0, 2);
        slot.append(&k, &v).unwrap();
        let (kb, _) = slot.buffers().unwrap();
        kb.slice_set(&Tensor::ones((1, 2, 1, 4), DType::F32, &Device::Cpu).unwrap(), 2, 2).unwrap();
        slot.commit(1).unwrap();
        let (k2, _) = slot.append(&k, &v).unwrap();
        assert_eq!(k2.dim(2).unwrap(), 5);
        assert_eq!(k2.i((0, 1, 2)).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 4]);
    }
}
