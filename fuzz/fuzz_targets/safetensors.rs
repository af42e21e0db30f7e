//! One safetensors file's header on arbitrary bytes: its tensors with byte ranges inside
//! the file, or an error naming the file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinfer_fuzz::safetensors(data));
