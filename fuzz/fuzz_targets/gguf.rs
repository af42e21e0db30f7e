//! The GGUF reader on arbitrary bytes: header, metadata, tensor table, and the model
//! spec read from the metadata. Any input must give a value or an error, never a panic,
//! an abort or an allocation beyond what the input can hold.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinfer_fuzz::gguf(data));
