//! What a model is: the [`LayerStream`] trait, the decoder families, tensor names and
//! roles, RoPE, the KV cache, a block's weights, the adapter for user-defined blocks, and
//! the fully resident model that every streamed run is checked against.

pub mod block_adapter;
pub mod family;
pub mod kv_cache;
pub mod layer_stream;
pub mod names;
pub mod resident;
pub mod rope;
pub mod weights;

pub use kv_cache::{KvCache, KvSlot};
pub use layer_stream::LayerStream;
pub use resident::{Logits, ResidentModel, TextModel};
