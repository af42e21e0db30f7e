#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod block_adapter;
pub mod chat_template;
pub mod copy_stream;
pub mod cpu_matvec;
pub mod device;
mod error;
pub mod exact;
pub mod executor;
pub mod family;
pub mod fused;
pub mod generator;
pub mod host_pool;
pub mod kv_cache;
pub mod layer_stream;
pub mod loader;
pub mod model;
pub mod names;
pub mod rope;
pub mod sampling;
pub mod scoring;
#[cfg(feature = "cuda")]
pub mod slot_kernels;
pub mod slots;
#[cfg(test)]
mod test_util;
pub mod tokenizer;
pub mod vnni_dot;
pub mod weights;

pub use chat_template::{ChatTemplate, Message};
pub use error::{Result, StreamError};
pub use generator::{GenerateOptions, Generation, Session, StopReason};
pub use kv_cache::{KvCache, KvSlot};
pub use layer_stream::LayerStream;
pub use loader::{LoadOptions, LoadedModel, ModelSource, Runner};
pub use model::{Logits, ResidentModel, TextModel};
pub use sampling::{Sampler, SamplingParams};
pub use scoring::{score, Score};
pub use tokenizer::{IncrementalDecoder, Tokenizer};
