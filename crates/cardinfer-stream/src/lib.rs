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
pub use model::{Logits, ResidentModel, TextModel};
pub mod tokenizer;
pub use tokenizer::{IncrementalDecoder, Tokenizer};
pub mod chat_template;
pub mod generator;
pub mod loader;
pub mod sampling;
pub mod scoring;

pub use chat_template::{ChatTemplate, Message};
pub use generator::{GenerateOptions, Generation, Session, StopReason};
pub use loader::{LoadedModel, ModelSource};
pub use sampling::{Sampler, SamplingParams};
pub use scoring::{score, Score};
pub mod executor;
