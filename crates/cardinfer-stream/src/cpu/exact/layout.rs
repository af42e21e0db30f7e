//! What the decode kernels, their CPU twins and the CPU reference share: the attention's
//! chunk and shapes, and one position's rotation.

use cardinfer_core::RopeStyle;

/// Keys handled by one attention block before the partial results are combined (the
/// split of "flash decoding"): the CUDA grid has `heads × ceil(capacity / ATTENTION_CHUNK)`
/// blocks, those past the current length return at once.
pub const ATTENTION_CHUNK: usize = 64;

/// The rotation of one position: `cos`/`sin` rows of the RoPE tables (`head_dim / 2`).
#[derive(Debug, Clone, Copy)]
pub struct Rotation<'a> {
    /// `cos(pos · inv_freq)`.
    pub cos: &'a [f32],
    /// `sin(pos · inv_freq)`.
    pub sin: &'a [f32],
    /// Which elements are paired.
    pub style: RopeStyle,
}

impl Rotation<'_> {
    /// The elements rotated together as pair `i` of a head of `head_dim`: `(i, i + half)`
    /// for [`RopeStyle::Half`], `(2i, 2i + 1)` for [`RopeStyle::Interleaved`].
    pub fn pair(&self, i: usize, head_dim: usize) -> (usize, usize) {
        match self.style {
            RopeStyle::Half => (i, i + head_dim / 2),
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        }
    }
}

/// Shapes of the decode attention: query heads, KV heads, head size, and the KV
/// buffers' capacity (positions; the buffers are `[kv_heads, capacity, head_dim]`).
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each shared by `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Positions the KV buffers hold.
    pub capacity: usize,
}
