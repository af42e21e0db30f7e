//! Model families. One generic decoder block covers Llama, Mistral, Qwen2 and Qwen3.

mod decoder;

pub use decoder::{causal_mask, Decoder};
