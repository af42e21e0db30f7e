//! The `LayerStream` trait: a model as a sequence of blocks whose weights are handed in
//! from outside, with the KV state owned by the caller.
//!
//! Candle's own model structs (`candle_transformers::models::quantized_qwen3` and
//! friends) cannot be streamed as they are: their layers are private fields loaded once
//! from a `VarBuilder`/GGUF reader, and each attention layer owns its KV cache. A
//! streaming executor needs the opposite: the same block code applied to weights that
//! live in a pool slot this step and elsewhere the next, with KV state that outlives the
//! weights. Implementors of this trait provide exactly that.

use crate::model::kv_cache::KvSlot;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::Tensor;
use cardinfer_core::ModelSpec;

/// A model whose blocks can be computed with weights supplied per call.
pub trait LayerStream {
    /// The model's hyper-parameters.
    fn spec(&self) -> &ModelSpec;

    /// Token ids `[batch, seq]` (u32) → hidden states `[batch, seq, hidden]` (f32).
    fn embed(&self, weights: &BlockWeights, tokens: &Tensor) -> Result<Tensor>;

    /// Applies transformer block `layer` to hidden states `x` at positions
    /// `pos..pos + seq`, appending to and reading from `kv`.
    fn block(&self, layer: usize, weights: &BlockWeights, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor>;

    /// Final norm and output projection: `[batch, seq, hidden]` → logits `[batch, seq, vocab]`.
    fn head(&self, weights: &BlockWeights, x: &Tensor) -> Result<Tensor>;
}

impl<T: LayerStream + ?Sized> LayerStream for Box<T> {
    fn spec(&self) -> &ModelSpec {
        (**self).spec()
    }

    fn embed(&self, weights: &BlockWeights, tokens: &Tensor) -> Result<Tensor> {
        (**self).embed(weights, tokens)
    }

    fn block(&self, layer: usize, weights: &BlockWeights, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor> {
        (**self).block(layer, weights, x, kv, pos)
    }

    fn head(&self, weights: &BlockWeights, x: &Tensor) -> Result<Tensor> {
        (**self).head(weights, x)
    }
}
