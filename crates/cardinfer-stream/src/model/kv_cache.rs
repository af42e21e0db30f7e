//! The KV cache, owned by the executor and handed to each block: blocks hold no state,
//! so the same block code runs whether its weights are resident or streamed.
//!
//! A slot either grows by concatenation (the default: it holds exactly the positions
//! seen, and moves between devices in hybrid runs) or is given a fixed capacity up front
//! ([`KvCache::with_capacity`]): then its buffers are allocated once, new positions are
//! written in place, and their device addresses stay the same for the whole
//! conversation — which the fused decode path needs (its kernels write the next
//! position straight into the buffers, and a recorded CUDA graph keeps their addresses).
//!
//! Values are stored as the slot's [`KvType`]: rounded to nearest (ties to even) when
//! written, read back exactly — the same on the CPU and in the CUDA kernels.

use crate::{Result, StreamError};
use candle_core::{DType, Device, Tensor};
use cardinfer_core::KvType;

/// The tensor element type a [`KvType`] is stored as (`q8_0`: its blocks' bytes).
pub(crate) fn storage_dtype(kv: KvType) -> DType {
    match kv {
        KvType::F32 => DType::F32,
        KvType::Q8_0 => DType::U8,
        _ => DType::F16,
    }
}

/// `x` (`[.., head_dim]` values) as `kv` stores it: rounded to f16, or in `q8_0` blocks
/// (`[.., row bytes]`; heads that are not whole blocks are an error of the op, and the
/// loader refuses such a model first, naming it).
pub(crate) fn stored(kv: KvType, x: &Tensor) -> Result<Tensor> {
    Ok(match kv {
        KvType::Q8_0 => x.to_dtype(DType::F32)?.contiguous()?.apply_op1_no_bwd(&crate::model::kv_q8::QuantizeQ8_0)?,
        _ => x.to_dtype(storage_dtype(kv))?,
    })
}

/// Stored keys or values `x` (as [`stored`] writes them) read back as f32, contiguous.
pub(crate) fn widened(kv: KvType, x: &Tensor) -> Result<Tensor> {
    Ok(match kv {
        KvType::Q8_0 => x.contiguous()?.apply_op1_no_bwd(&crate::model::kv_q8::DequantizeQ8_0)?,
        // One copy: a conversion writes a contiguous tensor, and so does `contiguous`.
        _ => x.to_dtype(DType::F32)?.contiguous()?,
    })
}

/// Keys and values of one layer, `[batch, kv_heads, seq, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct KvSlot {
    k: Option<Tensor>,
    v: Option<Tensor>,
    /// Positions held.
    len: usize,
    /// Positions the buffers hold when preallocated; 0 = grow by concatenation.
    capacity: usize,
    /// How the values are stored.
    kv_type: KvType,
    /// A preallocated slot's host buffers while it visits the device (see
    /// [`KvSlot::move_to`]).
    parked: Option<Parked>,
}

/// Host buffers left behind by a preallocated slot visiting the device, and the positions
/// in them that are still current.
#[derive(Debug, Clone)]
struct Parked {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvSlot {
    /// An empty slot storing its values as `kv_type`, growing by concatenation.
    pub fn new(kv_type: KvType) -> Self {
        Self { kv_type, ..Self::default() }
    }

    /// A slot whose buffers will hold `capacity` positions stored as `kv_type`, allocated
    /// at the first append.
    pub fn with_capacity(capacity: usize, kv_type: KvType) -> Self {
        Self { capacity, kv_type, ..Self::default() }
    }

    /// How the values are stored.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Appends `k`, `v` for new positions and returns the keys and values of all positions,
    /// in `k`'s element type (stored values read back exactly).
    /// The cache follows the computation: if the new keys are on another device (a layer
    /// computed on the host for decode after a prefill on the device, in hybrid runs),
    /// the held positions move there first.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let dtype = k.dtype();
        let (k, v) = self.append_views(k, v)?;
        let kv = self.kv_type;
        Ok((widened(kv, &k)?.to_dtype(dtype)?, widened(kv, &v)?.to_dtype(dtype)?))
    }

    /// [`KvSlot::append`] returning the keys and values as stored (contiguous).
    pub(crate) fn append_stored(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = self.append_views(k, v)?;
        Ok((k.contiguous()?, v.contiguous()?))
    }

    /// Appends and returns the positions held as stored, possibly as views of the buffers.
    fn append_views(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        self.move_to(k.device())?;
        let new = k.dim(2)?;
        let (k, v) = (stored(self.kv_type, k)?, stored(self.kv_type, v)?);
        if self.capacity > 0 {
            return self.append_in_place(&k, &v, new);
        }
        let (k, v) = match (&self.k, &self.v) {
            (Some(pk), Some(pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
            _ => (k.contiguous()?, v.contiguous()?),
        };
        // (Contiguous: a concatenation writes a new tensor, and so does a conversion.)
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
        Ok((kb.narrow(2, 0, self.len)?, vb.narrow(2, 0, self.len)?))
    }

    /// Moves the held keys and values to `device` (no copy if they are there already).
    ///
    /// A preallocated slot copies only the positions it holds, into buffers of its whole
    /// capacity made there. Leaving host memory, it keeps its host buffers, and coming
    /// back it copies only the positions written while away into them: a host layer's
    /// cache visiting the device for each prefill chunk moves what it holds up and the
    /// chunk's new positions down, not its whole capacity both ways.
    pub fn move_to(&mut self, device: &Device) -> Result<()> {
        let (Some(k), Some(v)) = (self.k.take(), self.v.take()) else { return Ok(()) };
        let (k, v) = match k.device().same_device(device) {
            true => (k, v),
            false if self.capacity == 0 => (k.to_device(device)?, v.to_device(device)?),
            false => self.relocate(k, v, device)?,
        };
        self.k = Some(k);
        self.v = Some(v);
        Ok(())
    }

    /// [`KvSlot::move_to`] for preallocated buffers `k`, `v` (not on `device`).
    fn relocate(&mut self, k: Tensor, v: Tensor, device: &Device) -> Result<(Tensor, Tensor)> {
        let held = self.len;
        let copy = |from: &Tensor, to: &Tensor, start: usize| -> Result<()> {
            if held > start {
                to.slice_set(&from.narrow(2, start, held - start)?.contiguous()?.to_device(device)?, 2, start)?;
            }
            Ok(())
        };
        match self.parked.take() {
            // Back where it was parked: only what was written while away travels.
            Some(home) if home.k.device().same_device(device) => {
                let start = home.len.min(held);
                copy(&k, &home.k, start)?;
                copy(&v, &home.v, start)?;
                Ok((home.k, home.v))
            }
            _ => {
                let (there_k, there_v) =
                    (Tensor::zeros(k.dims(), k.dtype(), device)?, Tensor::zeros(v.dims(), v.dtype(), device)?);
                copy(&k, &there_k, 0)?;
                copy(&v, &there_v, 0)?;
                // Host buffers wait for the slot's return; device ones are freed (the
                // budget counts one visiting layer's cache).
                if k.device().is_cpu() {
                    self.parked = Some(Parked { k, v, len: held });
                }
                Ok((there_k, there_v))
            }
        }
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
            // The buffers stay; positions past `len` are overwritten by later appends (and
            // copied back to parked buffers when the slot returns).
            self.len = len;
            if let Some(home) = &mut self.parked {
                home.len = home.len.min(len);
            }
        } else if len == 0 {
            *self = Self::new(self.kv_type);
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
    /// An empty cache for `num_layers` layers storing values as `kv_type`, growing by
    /// concatenation.
    pub fn new(num_layers: usize, kv_type: KvType) -> Self {
        Self { layers: vec![KvSlot::new(kv_type); num_layers] }
    }

    /// An empty cache whose layers hold up to `capacity` positions stored as `kv_type`, in
    /// buffers allocated once (at the first append) and written in place.
    pub fn with_capacity(num_layers: usize, capacity: usize, kv_type: KvType) -> Self {
        Self { layers: vec![KvSlot::with_capacity(capacity, kv_type); num_layers] }
    }

    /// How the values are stored.
    pub fn kv_type(&self) -> KvType {
        self.layers.first().map_or(KvType::default(), KvSlot::kv_type)
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
                *l = KvSlot::new(l.kv_type);
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
        let mut grown = KvSlot::new(KvType::F32);
        let mut fixed = KvSlot::with_capacity(16, KvType::F32);
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
        let mut slot = KvSlot::with_capacity(1024, KvType::F16);
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
        let mut slot = KvSlot::with_capacity(4, KvType::F16);
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
        let mut slot = KvSlot::with_capacity(8, KvType::F32);
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

    #[test]
    fn f16_slots_hold_half_the_bytes_and_round_to_nearest_even() {
        // 1 + 2^-11 is halfway between two f16 values: ties go to the even one (1.0);
        // 1 + 3·2^-11 rounds up to 1 + 2^-9; 0.1 to f16's nearest.
        let values = [1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 0.1, -65504.0];
        let k = Tensor::new(&values, &Device::Cpu).unwrap().reshape((1, 1, 1, 4)).unwrap();
        for mut slot in [KvSlot::new(KvType::F16), KvSlot::with_capacity(8, KvType::F16)] {
            let (kk, vv) = slot.append(&k, &k).unwrap();
            assert_eq!(kk.dtype(), DType::F32, "returned in the caller's type");
            let got = kk.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let want: Vec<f32> = values.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
            assert_eq!(got, want);
            assert_eq!(got[0], 1.0);
            assert_eq!(got[1], 1.0 + 2f32.powi(-9));
            assert_eq!(vv.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
            let (stored, _) = slot.append_stored(&k, &k).unwrap();
            assert_eq!(stored.dtype(), DType::F16);
        }
        let mut f32_slot = KvSlot::with_capacity(8, KvType::F32);
        let mut f16_slot = KvSlot::with_capacity(8, KvType::F16);
        f32_slot.append(&k, &k).unwrap();
        f16_slot.append(&k, &k).unwrap();
        assert_eq!(f32_slot.bytes(), 2 * f16_slot.bytes());
    }

    #[test]
    fn a_full_cache_holds_the_bytes_the_planner_reserves_for_each_type() {
        let spec = cardinfer_core::ModelSpec {
            family: cardinfer_core::Family::Qwen3,
            vocab_size: 16,
            hidden_size: 64,
            intermediate_size: 96,
            num_layers: 3,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 64,
            rms_norm_eps: 1e-6,
            rope_theta: 1e4,
            rope_scaling: None,
            rope_style: cardinfer_core::RopeStyle::Half,
            context_length: 40,
            tie_word_embeddings: false,
            qkv_bias: false,
            qk_norm: true,
            bos_token_id: None,
            eos_token_ids: vec![],
            moe: None,
            gemma: None,
        };
        let capacity = 40;
        for kv_type in [KvType::F32, KvType::F16, KvType::Q8_0] {
            let mut cache = KvCache::with_capacity(spec.num_layers, capacity, kv_type);
            let k = Tensor::ones((1, spec.num_kv_heads, 1, spec.head_dim), DType::F32, &Device::Cpu).unwrap();
            for layer in 0..spec.num_layers {
                cache.layer_mut(layer).append(&k, &k).unwrap();
            }
            assert_eq!(cache.kv_type(), kv_type);
            assert_eq!(cache.bytes(), spec.kv_bytes_per_token(kv_type) * capacity as u64, "{kv_type}");
        }
    }
}
