//! The bodies of the fuzz targets (`fuzz_targets/`), shared with the corpus replay test
//! that runs in CI (`tests/fuzz_corpus.rs`): each takes one input and must return, never
//! panic or abort.

use cardinfer_core::ModelSpec;
use cardinfer_quant::gguf::{GgufFile, GgufValue, GgufWriter};
use cardinfer_stream::{ChatTemplate, Message, Tokenizer};

/// The GGUF reader on arbitrary bytes: header, metadata, tensor table, and the model
/// spec read from the metadata. Any input must give a value or an error, never a panic,
/// an abort or an allocation beyond what the input can hold.
pub fn gguf(data: &[u8]) {
    if let Ok(file) = GgufFile::from_bytes("fuzz.gguf", data) {
        let _ = file.model_spec();
        for info in file.tensors() {
            let _ = file.tensor_bytes(info).len();
        }
    }
}

/// A Hugging Face `config.json` on arbitrary text: a spec within the limits, or an error
/// naming the key.
pub fn hf_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = ModelSpec::from_hf_config_str(text) {
            let _ = spec.kv_bytes_per_token(cardinfer_core::KvType::F32);
        }
    }
}

/// One safetensors file's header on arbitrary bytes: its tensors with byte ranges inside
/// the file, or an error naming the file.
pub fn safetensors(data: &[u8]) {
    if let Ok(tensors) = cardinfer_quant::shard_tensors("fuzz.safetensors".as_ref(), 0, data) {
        for t in tensors {
            assert!(t.offset + t.len <= data.len() as u64, "{} lies outside the file", t.name);
        }
    }
}

/// The tokenizer built from GGUF metadata, on arbitrary vocabularies: the input's lines
/// are tokens (the first line picks the model, `gpt2` or `llama`, and the BOS/EOS ids),
/// a line starting with `m ` is a merge; then the input encodes and decodes itself. Any
/// vocabulary gives a tokenizer or an error; no text panics it.
pub fn gguf_tokenizer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.split('\n');
    let head = lines.next().unwrap_or("");
    let model = if head.starts_with('l') { "llama" } else { "gpt2" };
    let (mut tokens, mut merges, mut types, mut scores) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for line in lines.take(512) {
        match line.strip_prefix("m ") {
            Some(merge) => merges.push(GgufValue::String(merge.into())),
            None => {
                types.push(GgufValue::I32(1 + (line.len() % 6) as i32));
                scores.push(GgufValue::F32(-(tokens.len() as f32)));
                tokens.push(GgufValue::String(line.into()));
            }
        }
    }
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", GgufValue::String("llama".into()));
    w.metadata("tokenizer.ggml.model", GgufValue::String(model.into()));
    w.metadata("tokenizer.ggml.tokens", GgufValue::Array(tokens));
    w.metadata("tokenizer.ggml.token_type", GgufValue::Array(types));
    w.metadata("tokenizer.ggml.scores", GgufValue::Array(scores));
    if !merges.is_empty() {
        w.metadata("tokenizer.ggml.merges", GgufValue::Array(merges));
    }
    let ids = head.bytes().map(u32::from).collect::<Vec<_>>();
    if let Some(&bos) = ids.first() {
        w.metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(bos));
    }
    let bytes = w.to_bytes().expect("the writer takes any metadata");
    let Ok(file) = GgufFile::from_bytes("vocab.gguf", &bytes) else { return };
    if let Ok(Some(tokenizer)) = Tokenizer::from_gguf(&file) {
        if let Ok(ids) = tokenizer.encode(text) {
            let _ = tokenizer.decode(&ids);
        }
        let _ = tokenizer.encode_text(text);
    }
}

/// A chat template (code from a model file) on arbitrary source: it renders, or gives an
/// error — within its fuel, so no template hangs — and a conversation through it becomes
/// token-free text with the content placeholders intact.
pub fn chat_template(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else { return };
    let template = ChatTemplate::Jinja { source: source.into(), bos_token: "<s>".into(), eos_token: "</s>".into() };
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi <|im_end|> there"),
        Message::new("assistant", "Hello."),
    ];
    let _ = template.render(&messages, true);
    let (_, _) = ChatTemplate::select_explained(Some(source.into()), None, None, None);
}
