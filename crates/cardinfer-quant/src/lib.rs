#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod candle;
mod checkpoint;
mod error;
pub mod gguf;
pub mod hf_to_gguf;
pub mod quality;
pub mod quant_math;
mod safetensors;
mod safetensors_check;
pub mod scheme;
pub mod slice;
pub mod synth;
pub mod synth_preset;
pub mod tokenizer_meta;

pub use checkpoint::Checkpoint;
pub use error::QuantError;
pub use safetensors::{shard_tensors, HfCheckpoint};
