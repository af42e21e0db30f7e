//! Gemma 3's decoder block: norms before and after attention and the MLP (each
//! multiplying by `1 + w`), a GeLU-tanh MLP, and attention within a sliding window on the
//! local layers (`Decoder::attention` takes the layer's window, RoPE base and score scale
//! from [`cardinfer_core::GemmaSpec`]).

use super::decoder::Decoder;
use crate::model::kv_cache::KvSlot;
use crate::model::names::Role;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::Tensor;

impl Decoder {
    /// Layer `layer` of a Gemma 3 model on `x` (`[batch, seq, hidden]`).
    pub(super) fn gemma_block(
        &self,
        layer: usize,
        w: &BlockWeights,
        x: &Tensor,
        kv: &mut KvSlot,
        pos: usize,
    ) -> Result<Tensor> {
        let h = self.norm(x, w, Role::AttnNorm)?;
        let attn = self.attention(w, &h, kv, pos, layer)?;
        let x = (x + self.norm(&attn, w, Role::PostAttnNorm)?)?;
        let h = self.norm(&x, w, Role::FfnNorm)?;
        let [gate, up] = self.project_many(&h, w, [(Role::FfnGate, None), (Role::FfnUp, None)])?;
        let act = (gate.gelu()? * up)?;
        let y = self.project(&act, w, Role::FfnDown, None)?;
        Ok((&x + self.norm(&y, w, Role::PostFfnNorm)?)?)
    }
}
