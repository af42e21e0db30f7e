#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod cpu;
pub mod cuda;
pub mod device;
pub mod diagnostics;
mod error;
pub mod executor;
pub mod load;
pub mod model;
#[cfg(test)]
mod test_util;
pub mod text;

pub use error::{Result, StreamError};
pub use load::{LoadOptions, LoadedModel, ModelSource, Runner};
pub use model::{KvCache, KvSlot, LayerStream, Logits, ResidentModel, TextModel};
pub use text::chat_template::{ChatTemplate, Message};
pub use text::generator::{GenerateOptions, Generation, Session, StopReason};
pub use text::sampling::{Sampler, SamplingParams};
pub use text::scoring::{score, Score};
pub use text::tokenizer::{IncrementalDecoder, Tokenizer};
