//! Tokenizers: from `tokenizer.json`, or built from GGUF metadata so that ids equal
//! llama.cpp's.

mod gguf_vocab;
mod incremental;

pub use incremental::IncrementalDecoder;

use crate::{Result, StreamError};
use cardinfer_quant::gguf::GgufFile;
use std::path::Path;

/// A text tokenizer with the model's special-token conventions.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same pipeline with special-token strings encoded as plain text.
    plain: tokenizers::Tokenizer,
    /// Prepend this BOS id when encoding a prompt (GGUF `add_bos_token`).
    bos_to_add: Option<u32>,
    /// Let the pipeline's own post-processor add special tokens (tokenizer.json).
    use_post_processor: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.vocab_size()).finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| StreamError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { plain: plain(&inner), inner, bos_to_add: None, use_post_processor: true })
    }

    /// Builds the tokenizer a GGUF file describes; `None` if it has none.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Option<Self>> {
        let Some(vocab) = gguf_vocab::from_gguf(gguf)? else {
            return Ok(None);
        };
        let bos = gguf.get_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32);
        Ok(Some(Self {
            plain: plain(&vocab.tokenizer),
            inner: vocab.tokenizer,
            bos_to_add: if vocab.add_bos { bos } else { None },
            use_post_processor: false,
        }))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) become
    /// their ids; BOS is added where the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding =
            self.inner.encode(text, self.use_post_processor).map_err(|e| StreamError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        ids.extend(self.bos_to_add);
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Token ids of `text` without BOS (continuing a conversation).
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(|e| StreamError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` read as plain text: a special token's string (`<|im_end|>`)
    /// is encoded as the characters it is made of, never as the control token. No BOS.
    /// For text from users (see [`crate::text::chat_prompt::encode_chat`]).
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.plain.encode(text, false).map_err(|e| StreamError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| StreamError::Tokenizer(e.to_string()))
    }

    /// The id of a token string (`<|im_end|>`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of token `id` (`None` outside the vocabulary).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// `inner` with special-token strings encoded as plain text.
fn plain(inner: &tokenizers::Tokenizer) -> tokenizers::Tokenizer {
    let mut plain = inner.clone();
    plain.set_encode_special_tokens(true);
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny `tokenizer.json`: byte-level BPE with a post-processor that adds `<s>`.
    const TOKENIZER_JSON: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                        "rstrip": false, "normalized": false, "special": true}],
      "normalizer": null,
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
      "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {"<s>": 0, "h": 1, "i": 2, "hi": 3, "Ġ": 4, "Ġhi": 5},
        "merges": ["h i", "Ġ hi"]}
    }"#;

    #[test]
    fn tokenizer_json_uses_its_post_processor_for_prompts_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, TOKENIZER_JSON).unwrap();
        let tok = Tokenizer::from_file(&path).unwrap();
        assert_eq!(tok.encode("hi hi").unwrap(), vec![0, 3, 5]);
        assert_eq!(tok.encode_continuation("hi hi").unwrap(), vec![3, 5]);
        assert_eq!(tok.decode(&[3, 5]).unwrap(), "hi hi");
        assert_eq!(tok.token_to_id("<s>"), Some(0));
        std::fs::write(&path, "{ not json").unwrap();
        let err = Tokenizer::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
