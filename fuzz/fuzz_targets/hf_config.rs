//! A Hugging Face `config.json` on arbitrary text: a spec within the limits, or an error
//! naming the key.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinfer_fuzz::hf_config(data));
