//! Builds a Hugging Face `tokenizers` pipeline from GGUF tokenizer metadata, matching
//! llama.cpp's tokenization: GPT-2 style byte-level BPE (with the pre-tokenizer named by
//! `tokenizer.ggml.pre`) and SentencePiece (`tokenizer.ggml.model = llama`).

use crate::{Result, StreamError};
use cardinfer_quant::gguf::{GgufFile, GgufValue};
use serde_json::{json, Map, Value};

/// llama.cpp token type of control tokens (`<|im_start|>`).
const TOKEN_TYPE_CONTROL: u64 = 3;
/// llama.cpp token type of user-defined tokens.
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// Pre-tokenizer regex of Qwen2 (llama.cpp `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Pre-tokenizer regex of Llama 3 (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What a GGUF vocabulary says beyond the pipeline itself.
pub struct GgufVocab {
    /// The `tokenizers` pipeline.
    pub tokenizer: tokenizers::Tokenizer,
    /// Prepend BOS when encoding a prompt.
    pub add_bos: bool,
}

/// Reads the vocabulary of `gguf`; `None` when the file carries no tokenizer.
pub fn from_gguf(gguf: &GgufFile) -> Result<Option<GgufVocab>> {
    let meta = gguf.metadata();
    let Some(model) = meta.get("tokenizer.ggml.model").and_then(GgufValue::as_str) else {
        return Ok(None);
    };
    let bad = |what: &str| StreamError::Tokenizer(format!("{}: {what}", gguf.path().display()));
    let tokens: Vec<&str> = meta
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array)
        .ok_or_else(|| bad("tokenizer.ggml.tokens is missing"))?
        .iter()
        .map(|t| t.as_str().ok_or_else(|| bad("tokenizer.ggml.tokens holds a non-string")))
        .collect::<Result<_>>()?;
    let types: Vec<u64> = meta
        .get("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|t| t.as_u64().unwrap_or(1)).collect())
        .unwrap_or_else(|| vec![1; tokens.len()]);
    let added_tokens: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_USER_DEFINED)
        .map(|(id, (content, &ty))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": ty == TOKEN_TYPE_CONTROL})
        })
        .collect();
    let flag = |key: &str| meta.get(key).and_then(GgufValue::as_bool);

    let (pipeline, default_bos) = match model {
        "gpt2" => {
            let merges: Vec<&str> = meta
                .get("tokenizer.ggml.merges")
                .and_then(GgufValue::as_array)
                .ok_or_else(|| bad("tokenizer.ggml.merges is missing"))?
                .iter()
                .filter_map(GgufValue::as_str)
                .collect();
            check_merges(&tokens, &merges).map_err(|reason| bad(&reason))?;
            let pre = meta.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
            (byte_level_bpe(&tokens, &merges, pre), false)
        }
        "llama" => {
            let scores: Vec<f32> = meta
                .get("tokenizer.ggml.scores")
                .and_then(GgufValue::as_array)
                .ok_or_else(|| bad("tokenizer.ggml.scores is missing"))?
                .iter()
                .map(|s| s.as_f64().unwrap_or(0.0) as f32)
                .collect();
            let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
            (sentencepiece(&tokens, &scores, add_space_prefix), true)
        }
        other => return Err(bad(&format!("tokenizer model `{other}` is not supported (gpt2, llama are)"))),
    };
    let mut pipeline = pipeline;
    pipeline.insert("version".into(), json!("1.0"));
    pipeline.insert("truncation".into(), Value::Null);
    pipeline.insert("padding".into(), Value::Null);
    pipeline.insert("added_tokens".into(), Value::Array(added_tokens));
    pipeline.insert("post_processor".into(), Value::Null);
    let text = Value::Object(pipeline).to_string();
    let tokenizer = text
        .parse::<tokenizers::Tokenizer>()
        .map_err(|e| bad(&format!("the vocabulary does not make a tokenizer: {}", without_position(&e.to_string()))))?;
    let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(default_bos);
    Ok(Some(GgufVocab { tokenizer, add_bos }))
}

/// The `tokenizers` crate's message without the ` at line L column C` it appends: the
/// position is in the document built here from the GGUF metadata, not in any file the
/// user has.
fn without_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at)
            if message[at + 9..].split_once(" column ").is_some_and(|(line, column)| {
                !line.is_empty()
                    && line.bytes().all(|b| b.is_ascii_digit())
                    && column.bytes().all(|b| b.is_ascii_digit())
            }) =>
        {
            &message[..at]
        }
        _ => message,
    }
}

/// Every merge is two tokens of the vocabulary whose concatenation is one too, as in any
/// vocabulary a BPE was trained into. (The `tokenizers` crate indexes a buffer sized by the
/// longest token with the merge's length before it checks the vocabulary, so a merge
/// longer than every token panics there; found by the `gguf_tokenizer` fuzz target.)
fn check_merges(tokens: &[&str], merges: &[&str]) -> std::result::Result<(), String> {
    let known: std::collections::HashSet<&str> = tokens.iter().copied().collect();
    for (i, merge) in merges.iter().enumerate() {
        let parts = merge.split_once(' ').filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains(' '));
        let Some((a, b)) = parts else {
            return Err(format!("tokenizer.ggml.merges[{i}] `{}` is not two tokens", merge.escape_debug()));
        };
        if let Some(missing) = [a, b].into_iter().find(|t| !known.contains(t)) {
            return Err(format!("tokenizer.ggml.merges[{i}] names `{}`, which is not a token", missing.escape_debug()));
        }
        if !known.contains(format!("{a}{b}").as_str()) {
            return Err(format!(
                "tokenizer.ggml.merges[{i}] makes `{}{}`, which is not a token",
                a.escape_debug(),
                b.escape_debug()
            ));
        }
    }
    Ok(())
}

fn vocab_map(tokens: &[&str]) -> Map<String, Value> {
    tokens.iter().enumerate().map(|(id, t)| (t.to_string(), json!(id))).collect()
}

fn byte_level_bpe(tokens: &[&str], merges: &[&str], pre: &str) -> Map<String, Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": use_regex});
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false)]})
    };
    let pre_tokenizer = match pre {
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_REGEX),
        "llama-bpe" | "llama3" | "smaug-bpe" => split(LLAMA3_REGEX),
        "smollm" | "starcoder" | "refact" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        _ => byte_level(true),
    };
    let ignore_merges = matches!(pre, "llama-bpe" | "llama3");
    let mut m = Map::new();
    m.insert("normalizer".into(), Value::Null);
    m.insert("pre_tokenizer".into(), pre_tokenizer);
    m.insert(
        "decoder".into(),
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
    );
    m.insert(
        "model".into(),
        json!({"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
               "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
               "ignore_merges": ignore_merges, "vocab": vocab_map(tokens), "merges": merges}),
    );
    m
}

/// SentencePiece BPE as a `tokenizers` BPE: a merge `a b` exists for every vocabulary
/// piece that splits into two pieces, ranked by the merged piece's score (highest first),
/// which is the order llama.cpp's SPM tokenizer merges in.
fn sentencepiece(tokens: &[&str], scores: &[f32], add_space_prefix: bool) -> Map<String, Value> {
    let ids: std::collections::HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f32, usize, &str, &str)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (split, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(split);
            if ids.contains_key(a) && ids.contains_key(b) {
                merges.push((scores.get(id).copied().unwrap_or(0.0), id, a, b));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges: Vec<Value> = merges.into_iter().map(|(_, _, a, b)| json!([a, b])).collect();
    let mut normalizers = vec![json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"})];
    if add_space_prefix {
        normalizers.insert(0, json!({"type": "Prepend", "prepend": "\u{2581}"}));
    }
    let unk = tokens.iter().position(|t| *t == "<unk>").map(|i| tokens[i]);
    let mut m = Map::new();
    m.insert("normalizer".into(), json!({"type": "Sequence", "normalizers": normalizers}));
    m.insert("pre_tokenizer".into(), Value::Null);
    m.insert(
        "decoder".into(),
        json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": if add_space_prefix { 1 } else { 0 }, "stop": 0}]}),
    );
    m.insert(
        "model".into(),
        json!({"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
               "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
               "ignore_merges": false, "vocab": vocab_map(tokens), "merges": merges}),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::without_position;
    use crate::text::tokenizer::Tokenizer;
    use cardinfer_quant::gguf::{GgufFile, GgufValue, GgufWriter};

    fn strings(items: &[&str]) -> GgufValue {
        GgufValue::Array(items.iter().map(|s| GgufValue::String(s.to_string())).collect())
    }

    /// A tiny SentencePiece vocabulary: specials, byte fallback pieces, and a chain of
    /// merges that builds `▁hello`.
    #[test]
    fn sentencepiece_vocabulary_merges_by_score_and_falls_back_to_bytes() {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        let pieces = ["▁", "h", "e", "l", "o", "w", "▁h", "▁he", "▁hel", "▁hell", "▁hello", "ll", "lo", "▁w", "wo"];
        tokens.extend(pieces.iter().map(|p| p.to_string()));
        let n = tokens.len();
        // Longer pieces score higher, so they win merges (as SentencePiece scores do).
        let scores: Vec<GgufValue> = tokens.iter().map(|t| GgufValue::F32(t.chars().count() as f32)).collect();
        let mut types = vec![GgufValue::I32(2), GgufValue::I32(3), GgufValue::I32(3)];
        types.extend((0..256).map(|_| GgufValue::I32(6)));
        types.extend((0..pieces.len()).map(|_| GgufValue::I32(1)));
        assert_eq!(types.len(), n);

        let mut w = GgufWriter::new();
        w.metadata("tokenizer.ggml.model", GgufValue::String("llama".into()));
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        w.metadata("tokenizer.ggml.tokens", strings(&token_refs));
        w.metadata("tokenizer.ggml.scores", GgufValue::Array(scores));
        w.metadata("tokenizer.ggml.token_type", GgufValue::Array(types));
        w.metadata("tokenizer.ggml.bos_token_id", GgufValue::U32(1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spm.gguf");
        w.write(&path).unwrap();
        let gguf = GgufFile::open(&path).unwrap();
        let tok = Tokenizer::from_gguf(&gguf).unwrap().unwrap();

        let id = |piece: &str| token_refs.iter().position(|t| *t == piece).unwrap() as u32;
        // BOS first (SentencePiece models add it by default), then the merged word.
        assert_eq!(tok.encode("hello").unwrap(), vec![1, id("▁hello")]);
        // "é" is not in the vocabulary: it falls back to its UTF-8 bytes.
        let ids = tok.encode("hello é").unwrap();
        assert_eq!(&ids[..2], &[1, id("▁hello")]);
        assert_eq!(&ids[ids.len() - 2..], &[3 + 0xC3, 3 + 0xA9]);
        assert_eq!(tok.decode(&ids[1..]).unwrap(), "hello é");
    }

    #[test]
    fn a_position_in_the_built_document_is_not_reported() {
        assert_eq!(
            without_position("Token `x` out of vocabulary at line 1 column 4077"),
            "Token `x` out of vocabulary"
        );
        assert_eq!(without_position("merges at line one"), "merges at line one");
        assert_eq!(without_position("no position"), "no position");
    }
}
