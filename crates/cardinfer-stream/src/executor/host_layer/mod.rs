//! One decode step of a layer on the CPU, as hybrid decode computes a host layer: with
//! the device's bits ([`exact`]: the CPU twins of the fused CUDA kernels, composed in
//! their launch order) where they cover the layer, else the family's block.

pub mod exact;
pub mod stages;
#[cfg(test)]
mod tests;

use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::rope::Rope;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::Tensor;

/// Layer `i` of `family` for one token `x` (on the CPU, at position `pos`), computed the
/// way hybrid decode computes a host layer: with the device's bits (the exact twins of
/// the fused CUDA kernels) when `exact_rope` is given and they cover the layer, else the
/// family's block with its small ops on one thread (the matrix products use the host
/// pool either way). The executor passes `exact_rope` where the device decodes with the
/// fused kernels; `probe` times host layers through this.
pub fn host_decode_step(
    family: &(dyn LayerStream + Sync),
    exact_rope: Option<&Rope>,
    i: usize,
    weights: &BlockWeights,
    x: &Tensor,
    slot: &mut KvSlot,
    pos: usize,
) -> Result<Tensor> {
    if let Some(rope) = exact_rope {
        if let Some(y) = exact::decode_layer(family.spec(), rope, weights, x, slot)? {
            return Ok(y);
        }
    }
    crate::cpu::matvec::with_serial_small_ops(|| family.block(i, weights, x, slot, pos))
}
