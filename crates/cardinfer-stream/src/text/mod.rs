//! Text in and out: the tokenizer, the chat template, sampling, the generation loop,
//! speculative decoding and scoring.

pub mod chat_prompt;
pub mod chat_template;
pub(crate) mod emission;
pub mod generator;
pub mod sampling;
pub mod scoring;
pub mod speculative;
pub mod tokenizer;
