//! Every input of the fuzz corpus (`fuzz/corpus/<target>/`), replayed through the fuzz
//! targets' own bodies: the inputs coverage-guided fuzzing found interesting (and any
//! crash it found, once fixed, is added there) stay checked in CI, where building the
//! sanitized fuzzers would take too long. Fuzzing itself: `fuzz/README.md`.

#[path = "../fuzz/src/lib.rs"]
mod bodies;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        body(&std::fs::read(&path).expect("corpus input"));
        inputs += 1;
    }
    assert!(inputs > 0, "{target}: the corpus is empty");
}

#[test]
fn gguf_corpus() {
    replay("gguf", bodies::gguf);
}

#[test]
fn hf_config_corpus() {
    replay("hf_config", bodies::hf_config);
}

#[test]
fn safetensors_corpus() {
    replay("safetensors", bodies::safetensors);
}

#[test]
fn gguf_tokenizer_corpus() {
    replay("gguf_tokenizer", bodies::gguf_tokenizer);
}

#[test]
fn chat_template_corpus() {
    replay("chat_template", bodies::chat_template);
}
