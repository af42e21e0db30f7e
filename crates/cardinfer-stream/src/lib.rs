#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod device;
mod error;
pub mod family;
pub mod kv_cache;
pub mod layer_stream;
pub mod model;
pub mod names;
pub mod rope;
pub mod weights;

pub use error::{Result, StreamError};
pub use kv_cache::{KvCache, KvSlot};
pub use layer_stream::LayerStream;
pub use model::{Logits, ResidentModel};
pub mod tokenizer;
pub use tokenizer::{IncrementalDecoder, Tokenizer};
