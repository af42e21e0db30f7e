//! Model families. One generic decoder block covers Llama, Mistral, Qwen2 and Qwen3, and
//! with routed experts in place of the MLP, Qwen3-MoE and Mixtral.

mod decoder;
mod gemma;
mod moe;
mod moe_host;
mod moe_one_token;
mod tiled_attention;

pub use decoder::{causal_mask, Decoder};
