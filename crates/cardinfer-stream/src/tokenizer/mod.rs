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
        Ok(Self { inner, bos_to_add: None, use_post_processor: true })
    }

    /// Builds the tokenizer a GGUF file describes; `None` if it has none.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Option<Self>> {
        let Some(vocab) = gguf_vocab::from_gguf(gguf)? else {
            return Ok(None);
        };
        let bos = gguf.get_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32);
        Ok(Some(Self {
            inner: vocab.tokenizer,
            bos_to_add: if vocab.add_bos { bos } else { None },
            use_post_processor: false,
        }))
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) become
    /// their ids; BOS is added where the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, self.use_post_processor)
            .map_err(|e| StreamError::Tokenizer(e.to_string()))?;
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

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| StreamError::Tokenizer(e.to_string()))
    }

    /// The id of a token string (`<|im_end|>`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
