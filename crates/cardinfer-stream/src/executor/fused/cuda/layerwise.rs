//! The fused kernels layer by layer, for models whose blocks move: resident layers, layers
//! in a slot of the pool (streamed) and layers the CPU computes (hybrid) alternate within
//! one token, so no graph can hold the whole token. Each device layer is launched with the
//! addresses of its weights where they are at that moment, through the same launch
//! sequence as the resident path's graph — so a streamed model's device layers give the
//! same bits as the resident model's.
//!
//! A token: [`FusedDecoder::begin_token`], then for each layer either
//! [`FusedDecoder::layer`] (device) or [`FusedDecoder::hidden`] → the CPU's block →
//! [`FusedDecoder::set_hidden`], and [`FusedDecoder::hidden`] for the head.

use super::{cuda_err, unsupported, FusedDecoder, LayerAddresses};
use crate::model::kv_cache::KvCache;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::cuda_backend::cudarc::driver::result;
use candle_core::Tensor;

impl FusedDecoder {
    /// Starts a token whose embedding is `x` (`[1, 1, hidden]` f32 on the device) at
    /// position `kv.len()`. `on_device(i)`: whether layer `i` runs on the device this
    /// token (its keys and values must then sit in preallocated device buffers).
    /// `Ok(false)` when they do not (a cache without them): the caller runs the token
    /// through the plain path.
    pub fn begin_token(&mut self, x: &Tensor, kv: &KvCache, on_device: &dyn Fn(usize) -> bool) -> Result<bool> {
        if kv.num_layers() != self.dims.layers {
            return Err(unsupported(format!("KV cache of {} layers for {}", kv.num_layers(), self.dims.layers)));
        }
        let Some(kv_table) = self.kv_addresses(kv, on_device)? else { return Ok(false) };
        self.load_token(x, kv.len(), kv_table)?;
        Ok(true)
    }

    /// Queues layer `i` with `weights` (resident or in a slot) on the residual stream and
    /// appends the token's keys and values to `kv`'s layer `i`.
    pub fn layer(&mut self, i: usize, weights: &BlockWeights, kv: &mut KvCache) -> Result<()> {
        let (addresses, experts) = LayerAddresses::of(&self.spec, weights)?;
        if !experts.is_empty() {
            return Err(unsupported(format!("layer {i} routes to experts (fused only for resident models)")));
        }
        self.enqueue_layer(i, &addresses, self.residual_pending, None)?;
        self.residual_pending = true;
        kv.layer_mut(i).commit(1)
    }

    /// Queues layer `i` as [`FusedDecoder::layer`] does, for a layer whose keys and
    /// values live elsewhere and visit the device for this token (a host layer the CPU
    /// does not compute now): `kv`'s layer `i` must hold preallocated device buffers of
    /// this decoder's capacity; the kernels are pointed at them first.
    pub fn visiting_layer(&mut self, i: usize, weights: &BlockWeights, kv: &mut KvCache) -> Result<()> {
        let Some(addresses) = self.slot_addresses(kv.layer(i)) else {
            return Err(unsupported(format!(
                "layer {i}'s visiting cache is not preallocated {} buffers of {} positions on the device",
                self.kv_type, self.dims.capacity
            )));
        };
        self.kv_table_host[2 * i..2 * i + 2].copy_from_slice(&addresses);
        // SAFETY: the table holds 2 × layers u64 on the device; the copy from pageable host
        // memory is staged before the call returns, and ordered before the layer's kernels.
        unsafe {
            result::memcpy_htod_async(
                self.buffers.kv_table_address + (16 * i) as u64,
                &self.kv_table_host[2 * i..2 * i + 2],
                self.stream.cu_stream(),
            )
        }
        .map_err(cuda_err)?;
        self.layer(i, weights, kv)
    }

    /// The residual stream after the layers queued so far, as a `[1, 1, hidden]` tensor
    /// on the device (for a layer on the CPU, or the head).
    pub fn hidden(&mut self) -> Result<Tensor> {
        let shape = (1, 1, self.dims.hidden);
        let x = self.copy_out(self.buffers.x, shape)?;
        if !self.residual_pending {
            return Ok(x);
        }
        // The same single f32 addition the plain block's residual add makes.
        let x = (x + self.copy_out(self.buffers.down, shape)?)?;
        self.set_hidden(&x)?;
        Ok(x)
    }

    /// Replaces the residual stream with `x` (`[1, 1, hidden]` f32 on the device): the
    /// output of a layer computed elsewhere.
    pub fn set_hidden(&mut self, x: &Tensor) -> Result<()> {
        let x = x.contiguous()?;
        let address = self.checked_hidden(&x)?;
        // SAFETY: both hold `hidden` f32 on this device; the copy is ordered on the stream.
        unsafe { result::memcpy_dtod_async(self.buffers.x, address, self.dims.hidden * 4, self.stream.cu_stream()) }
            .map_err(cuda_err)?;
        self.residual_pending = false;
        Ok(())
    }
}
