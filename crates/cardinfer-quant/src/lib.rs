#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod candle;
mod checkpoint;
mod error;
pub mod gguf;
mod safetensors;
pub mod synth;

pub use checkpoint::Checkpoint;
pub use error::QuantError;
pub use safetensors::HfCheckpoint;
