//! The tokenizer built from GGUF metadata, on arbitrary vocabularies: the input's lines
//! are tokens (the first line picks the model, `gpt2` or `llama`, and the BOS/EOS ids),
//! a line starting with `m ` is a merge; then the input encodes and decodes itself. Any
//! vocabulary gives a tokenizer or an error; no text panics it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinfer_fuzz::gguf_tokenizer(data));
