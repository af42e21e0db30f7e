//! Streaming a transformer block type of your own.
//!
//! Candle's model structs cannot be streamed as they are (see [`crate::model::layer_stream`]):
//! their layers are private fields loaded once, and each attention layer owns its KV
//! cache. A block written against this module instead is *built per call* from the
//! weights that sit in a pool slot right now — a [`candle_nn::VarBuilder`] over the
//! block's float tensors plus [`StreamedLinear`] layers for its matrices, quantized or
//! not — and gets its KV state handed in by the executor. Building is cheap (handles,
//! no copies), so the executor does it for every block of every pass.
//!
//! ```no_run
//! use candle_core::{Module, Tensor};
//! use cardinfer_stream::model::block_adapter::{BlockVars, StreamableBlock, StreamedLinear};
//! use cardinfer_stream::KvSlot;
//!
//! /// A block that only applies its MLP (a toy).
//! struct MlpOnly { gate: StreamedLinear, up: StreamedLinear, down: StreamedLinear }
//!
//! impl StreamableBlock for MlpOnly {
//!     fn load(vars: &BlockVars<'_>) -> cardinfer_stream::Result<Self> {
//!         Ok(Self { gate: vars.linear("ffn_gate.weight")?, up: vars.linear("ffn_up.weight")?, down: vars.linear("ffn_down.weight")? })
//!     }
//!     fn forward(&self, x: &Tensor, _kv: &mut KvSlot, _pos: usize) -> cardinfer_stream::Result<Tensor> {
//!         let h = (candle_nn::ops::silu(&self.gate.forward(x)?)? * self.up.forward(x)?)?;
//!         Ok((x + self.down.forward(&h)?)?)
//!     }
//! }
//! ```
//!
//! Load a model with it through
//! [`LoadedModel::load_with_block::<MlpOnly>`](crate::LoadedModel::load_with_block) (the
//! same planning, budget and slots as the built-in family), or wrap it yourself as
//! `BlockAdapter::<MlpOnly>::new(spec, None)` for [`crate::executor::StreamedModel::new`].
//! The embedding and the head stay the built-in decoder's. `examples/custom_block`
//! streams a full attention block defined in the example this way.

use crate::model::family::Decoder;
use crate::model::kv_cache::KvSlot;
use crate::model::layer_stream::LayerStream;
use crate::model::rope::Rope;
use crate::model::weights::{BlockWeights, Weight};
use crate::{Result, StreamError};
use candle_core::{DType, Device, Module, Tensor};
use cardinfer_core::ModelSpec;
use std::collections::HashMap;
use std::marker::PhantomData;

/// A transformer block built from the weights of one pass.
pub trait StreamableBlock: Sized {
    /// Builds the block from the weights in its slot (cheap: handles, no copies).
    fn load(vars: &BlockVars<'_>) -> Result<Self>;

    /// Applies the block to hidden states `x` (`[batch, seq, hidden]`, f32) at positions
    /// `pos..pos + seq`; `kv` is this layer's cache, owned by the executor.
    fn forward(&self, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor>;
}

/// The weights of one block, by their names within the block as llama.cpp spells them
/// (`attn_norm.weight`, `attn_q.weight`, `ffn_down.weight`, … — also for Hugging Face
/// checkpoints).
#[derive(Debug)]
pub struct BlockVars<'a> {
    spec: &'a ModelSpec,
    rope: &'a Rope,
    layer: usize,
    weights: HashMap<std::borrow::Cow<'static, str>, &'a Weight>,
    device: Device,
}

impl<'a> BlockVars<'a> {
    /// The variables of `weights`, layer `layer` of a model with `spec` and `rope`.
    pub fn new(spec: &'a ModelSpec, rope: &'a Rope, layer: usize, weights: &'a BlockWeights, device: &Device) -> Self {
        let weights = weights.iter().map(|(role, w)| (role.short_name(), w)).collect();
        Self { spec, rope, layer, weights, device: device.clone() }
    }

    /// The model's hyper-parameters.
    pub fn spec(&self) -> &ModelSpec {
        self.spec
    }

    /// The model's rotary embeddings (with the file's frequency divisors) and causal
    /// mask, their tables cached on the device across blocks and passes.
    pub fn rope(&self) -> &'a Rope {
        self.rope
    }

    /// Which layer this is.
    pub fn layer(&self) -> usize {
        self.layer
    }

    /// Whether the block has a tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.weights.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<&'a Weight> {
        self.weights.get(name).copied().ok_or_else(|| StreamError::InvalidParameter {
            name: "block vars",
            reason: format!("layer {} has no tensor `{name}` (it has {:?})", self.layer, self.names()),
        })
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.weights.keys().map(|k| k.as_ref()).collect();
        names.sort_unstable();
        names
    }

    /// A linear layer `x @ Wᵀ` over matrix `name`, whatever its storage: quantized
    /// matrices are used in place (in their slot on CUDA), float ones as stored.
    pub fn linear(&self, name: &str) -> Result<StreamedLinear> {
        Ok(StreamedLinear(self.get(name)?.clone()))
    }

    /// A [`candle_nn::VarBuilder`] over the block's float tensors (norm weights, biases,
    /// and the matrices of float checkpoints), converted to `dtype` when read. Quantized
    /// matrices are not in it: take them with [`BlockVars::linear`].
    pub fn var_builder(&self, dtype: DType) -> candle_nn::VarBuilder<'static> {
        let tensors = self
            .weights
            .iter()
            .filter_map(|(name, w)| match w {
                Weight::Dense(t) => Some((name.to_string(), t.clone())),
                _ => None,
            })
            .collect();
        candle_nn::VarBuilder::from_tensors(tensors, dtype, &self.device)
    }
}

/// A linear layer over a streamed matrix; a [`Module`].
#[derive(Debug, Clone)]
pub struct StreamedLinear(Weight);

impl Module for StreamedLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.matmul_t(x).map_err(candle_core::Error::wrap)
    }
}

/// Streams blocks of type `B`; the embedding and head are the built-in decoder's.
#[derive(Debug, Clone)]
pub struct BlockAdapter<B> {
    base: Decoder,
    _block: PhantomData<fn() -> B>,
}

impl<B: StreamableBlock> BlockAdapter<B> {
    /// An adapter for a model with `spec` (RoPE frequency divisors from the file if it
    /// has them, for the built-in parts).
    pub fn new(spec: ModelSpec, rope_freq_factors: Option<Vec<f32>>) -> Self {
        Self { base: Decoder::new(spec, rope_freq_factors), _block: PhantomData }
    }
}

impl<B: StreamableBlock> LayerStream for BlockAdapter<B> {
    fn spec(&self) -> &ModelSpec {
        self.base.spec()
    }

    fn embed(&self, weights: &BlockWeights, tokens: &Tensor) -> Result<Tensor> {
        self.base.embed(weights, tokens)
    }

    fn block(&self, layer: usize, weights: &BlockWeights, x: &Tensor, kv: &mut KvSlot, pos: usize) -> Result<Tensor> {
        let vars = BlockVars::new(self.base.spec(), self.base.rope(), layer, weights, x.device());
        B::load(&vars)?.forward(x, kv, pos)
    }

    fn head(&self, weights: &BlockWeights, x: &Tensor) -> Result<Tensor> {
        self.base.head(weights, x)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::names::Role;

    #[test]
    fn every_role_has_a_distinct_short_name() {
        let mut names: Vec<_> = Role::ALL.iter().map(|r| r.short_name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Role::ALL.len());
    }
}
