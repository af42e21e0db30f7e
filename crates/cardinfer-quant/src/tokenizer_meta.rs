//! A Hugging Face `tokenizer.json` (byte-level BPE) turned into the `tokenizer.ggml.*`
//! metadata llama.cpp reads, so a sliced GGUF carries its own tokenizer.

use crate::gguf::GgufValue;
use crate::QuantError;
use serde_json::Value;
use std::path::Path;

/// llama.cpp's token types.
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

/// The `tokenizer.ggml.*` entries for the tokenizer in `tokenizer_json`, padded with
/// unused `[PADn]` tokens to `vocab_size` rows (the embedding's row count).
/// `tokenizer_config` (`tokenizer_config.json`, optional) supplies `add_bos_token`,
/// the BOS token and the chat template.
pub fn tokenizer_metadata(
    tokenizer_json: &Path,
    tokenizer_config: Option<&Path>,
    vocab_size: usize,
) -> Result<Vec<(String, GgufValue)>, QuantError> {
    let bad = |reason: String| QuantError::Checkpoint { path: tokenizer_json.to_path_buf(), reason };
    let text = std::fs::read_to_string(tokenizer_json).map_err(|e| QuantError::io(tokenizer_json, e))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let model = json.get("model").ok_or_else(|| bad("no `model` object".into()))?;
    if model.get("type").and_then(Value::as_str) != Some("BPE") {
        return Err(bad(format!("tokenizer model {:?} is not supported (BPE is)", model.get("type"))));
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        return Err(bad(
            "SentencePiece-style BPE (byte_fallback) is not supported yet; slice without the tokenizer".into()
        ));
    }
    let vocab = model.get("vocab").and_then(Value::as_object).ok_or_else(|| bad("no `model.vocab` object".into()))?;

    let mut tokens: Vec<Option<(String, i32)>> = Vec::new();
    let mut put = |id: u64, token: &str, kind: i32| -> Result<(), QuantError> {
        let id = usize::try_from(id)
            .ok()
            .filter(|&id| id < 10_000_000)
            .ok_or_else(|| bad(format!("token id {id} is too large")))?;
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
        }
        tokens[id] = Some((token.to_string(), kind));
        Ok(())
    };
    for (token, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad(format!("vocab entry `{token}` has no integer id")))?;
        put(id, token, TYPE_NORMAL)?;
    }
    for added in json.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let (Some(id), Some(content)) =
            (added.get("id").and_then(Value::as_u64), added.get("content").and_then(Value::as_str))
        else {
            return Err(bad(format!("added token {added} lacks `id` or `content`")));
        };
        let special = added.get("special").and_then(Value::as_bool).unwrap_or(false);
        put(id, content, if special { TYPE_CONTROL } else { TYPE_USER_DEFINED })?;
    }
    if tokens.len() > vocab_size {
        return Err(bad(format!(
            "the tokenizer has {} tokens, more than the model's {vocab_size} embedding rows",
            tokens.len()
        )));
    }
    tokens.resize(vocab_size, None);
    let (names, types): (Vec<GgufValue>, Vec<GgufValue>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            let (name, kind) = t.unwrap_or_else(|| (format!("[PAD{id}]"), TYPE_UNUSED));
            (GgufValue::String(name), GgufValue::I32(kind))
        })
        .unzip();

    let merges = model.get("merges").and_then(Value::as_array).ok_or_else(|| bad("no `model.merges` array".into()))?;
    let merges = merges
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(GgufValue::String(s.clone())),
            Value::Array(pair) => match (pair.first().and_then(Value::as_str), pair.get(1).and_then(Value::as_str)) {
                (Some(a), Some(b)) => Ok(GgufValue::String(format!("{a} {b}"))),
                _ => Err(bad(format!("merge {m} is not a pair of strings"))),
            },
            other => Err(bad(format!("merge {other} is neither \"a b\" nor [a, b]"))),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let pre = pre_tokenizer_name(json.get("pre_tokenizer")).ok_or_else(|| {
        bad("its pre-tokenizer is not one llama.cpp names (qwen2, llama-bpe, smollm, gpt-2 are recognized)".into())
    })?;
    let mut meta = vec![
        ("tokenizer.ggml.model".to_string(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), GgufValue::String(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), GgufValue::Array(names)),
        ("tokenizer.ggml.token_type".to_string(), GgufValue::Array(types)),
        ("tokenizer.ggml.merges".to_string(), GgufValue::Array(merges)),
    ];
    if let Some(config_path) = tokenizer_config {
        let text = std::fs::read_to_string(config_path).map_err(|e| QuantError::io(config_path, e))?;
        let config: Value = serde_json::from_str(&text).map_err(|e| QuantError::Checkpoint {
            path: config_path.to_path_buf(),
            reason: format!("invalid JSON: {e}"),
        })?;
        let add_bos = config.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        meta.push(("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(add_bos)));
        if let Some(template) = config.get("chat_template").and_then(Value::as_str) {
            meta.push(("tokenizer.chat_template".into(), GgufValue::String(template.into())));
        }
    }
    Ok(meta)
}

/// The name llama.cpp gives the pre-tokenizer (`tokenizer.ggml.pre`), recognized from
/// its regex: Qwen2 splits digits one by one, Llama 3 in groups of up to three; SmolLM
/// and StarCoder put a `Digits` splitter before a byte-level one; GPT-2 is byte-level alone.
pub fn pre_tokenizer_name(pre: Option<&Value>) -> Option<&'static str> {
    let pre = pre?;
    let kind = pre.get("type").and_then(Value::as_str)?;
    match kind {
        "ByteLevel" => Some("gpt-2"),
        "Sequence" => {
            let parts = pre.get("pretokenizers").and_then(Value::as_array)?;
            let regex = parts.iter().find_map(|p| p.get("pattern")?.get("Regex")?.as_str());
            let has_digits = parts.iter().any(|p| p.get("type").and_then(Value::as_str) == Some("Digits"));
            match regex {
                Some(r) if r.contains(r"\p{N}{1,3}") => Some("llama-bpe"),
                Some(r) if r.contains(r"\p{N}|") => Some("qwen2"),
                None if has_digits => Some("smollm"),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write(dir: &Path, name: &str, value: Value) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }

    fn tiny(pre: Value) -> Value {
        json!({
            "added_tokens": [{"id": 4, "content": "<|end|>", "special": true}],
            "pre_tokenizer": pre,
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3}, "merges": [["a", "b"]]}
        })
    }

    #[test]
    fn vocab_added_tokens_merges_and_padding_become_gguf_metadata() {
        let dir = tempdir("meta");
        let json_path = write(dir.path(), "tokenizer.json", tiny(json!({"type": "ByteLevel"})));
        let config =
            write(dir.path(), "tokenizer_config.json", json!({"add_bos_token": false, "chat_template": "{{x}}"}));
        let meta = tokenizer_metadata(&json_path, Some(&config), 8).unwrap();
        let get = |k: &str| meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        let tokens = get("tokenizer.ggml.tokens");
        let tokens = tokens.as_array().unwrap();
        assert_eq!(tokens.len(), 8);
        assert_eq!(tokens[2].as_str(), Some("ab"));
        assert_eq!(tokens[4].as_str(), Some("<|end|>"));
        assert_eq!(tokens[7].as_str(), Some("[PAD7]"));
        let types = get("tokenizer.ggml.token_type");
        let types: Vec<u64> = types.as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
        assert_eq!(types, vec![1, 1, 1, 1, 3, 5, 5, 5]);
        assert_eq!(get("tokenizer.ggml.merges"), GgufValue::Array(vec![GgufValue::String("a b".into())]));
        assert_eq!(get("tokenizer.ggml.pre").as_str(), Some("gpt-2"));
        assert_eq!(get("tokenizer.chat_template").as_str(), Some("{{x}}"));
    }

    #[test]
    fn more_tokens_than_embedding_rows_is_an_error() {
        let dir = tempdir("rows");
        let path = write(dir.path(), "tokenizer.json", tiny(json!({"type": "ByteLevel"})));
        let err = tokenizer_metadata(&path, None, 3).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("embedding rows"), "{err}");
    }

    #[test]
    fn pre_tokenizers_are_recognized_by_their_digit_rule() {
        let split = |regex: &str| {
            json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}}, {"type": "ByteLevel"}]})
        };
        let qwen = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        let llama3 = qwen.replace(r"\p{N}|", r"\p{N}{1,3}|");
        assert_eq!(pre_tokenizer_name(Some(&split(qwen))), Some("qwen2"));
        assert_eq!(pre_tokenizer_name(Some(&split(&llama3))), Some("llama-bpe"));
        let smollm = json!({"type": "Sequence", "pretokenizers": [{"type": "Digits"}, {"type": "ByteLevel"}]});
        assert_eq!(pre_tokenizer_name(Some(&smollm)), Some("smollm"));
        assert_eq!(pre_tokenizer_name(Some(&json!({"type": "Metaspace"}))), None);
    }

    /// A fresh directory for a test's files, removed when dropped.
    fn tempdir(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("cardinfer-tok-{tag}-")).tempdir().unwrap()
    }
}
