//! One decode step of a layer on the CPU, as hybrid decode computes a host layer: with
//! the device's bits ([`exact`]: the CPU twins of the fused CUDA kernels, composed in
//! their launch order) where they cover the layer, else the family's block.

pub mod exact;
pub mod stages;
#[cfg(test)]
mod tests;

use crate::model::family::Decoder;
use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::Tensor;

/// Layer `i` of `family` for one token `x` (on the CPU, at position `pos`), computed the
/// way hybrid decode computes a host layer: with the device's bits (the exact twins of
/// the fused CUDA kernels of `exact`, the built-in decoder) when `exact` is given and they
/// cover the layer, else the family's block with its small ops on one thread (the matrix
/// products use the host pool either way). The executor passes `exact` where the device
/// decodes with the fused kernels; `probe` times host layers through this.
pub fn host_decode_step(
    family: &(dyn LayerStream + Sync),
    exact: Option<&Decoder>,
    i: usize,
    weights: &BlockWeights,
    x: &Tensor,
    slot: &mut KvSlot,
    pos: usize,
) -> Result<Tensor> {
    if let Some(decoder) = exact {
        if let Some(y) = exact::decode_layer(decoder, i, weights, x, slot)? {
            return Ok(y);
        }
    }
    crate::cpu::matvec::with_serial_small_ops(|| family.block(i, weights, x, slot, pos))
}
