//! Text in and out: the tokenizer, the chat template, sampling, the generation loop and
//! scoring.

pub mod chat_prompt;
pub mod chat_template;
pub mod generator;
pub mod sampling;
pub mod scoring;
pub mod tokenizer;
