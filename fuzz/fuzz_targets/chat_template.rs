//! A chat template (code from a model file) on arbitrary source: it renders, or gives an
//! error — within its fuel, so no template hangs — and a conversation through it becomes
//! token-free text with the content placeholders intact.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardinfer_fuzz::chat_template(data));
