//! What a model is: the [`LayerStream`] trait, the decoder families, tensor names and
//! roles, RoPE, the KV cache, a block's weights, the adapter for user-defined blocks, and
//! [`TextModel`], what every placement of a model (resident or streamed) offers the text
//! layer.

pub mod block_adapter;
pub mod family;
pub(crate) mod host_experts;
pub mod kv_cache;
pub(crate) mod kv_q8;
pub mod layer_stream;
pub mod names;
pub mod rope;
pub mod text_model;
pub mod weights;

pub use kv_cache::{KvCache, KvSlot};
pub use layer_stream::LayerStream;
pub use text_model::{Logits, TextModel};
