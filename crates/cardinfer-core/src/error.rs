//! The error type of `cardinfer-core`.

/// Everything that can go wrong while reading specs, layouts or sizes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// A model's configuration names an architecture CardInfer does not run.
    /// Likely cause: a model family other than Llama / Mistral / Qwen2 / Qwen3 /
    /// Qwen3-MoE / Mixtral.
    #[error("unsupported architecture `{}` (supported: llama, mistral, qwen2, qwen3, qwen3moe, mixtral, gemma3)", crate::Printable(.arch))]
    UnsupportedArchitecture {
        /// The architecture name as the file spells it.
        arch: String,
    },
    /// A required hyper-parameter is missing from the configuration.
    #[error("model configuration is missing `{}`", crate::Printable(.key))]
    MissingField {
        /// The key that was looked for.
        key: String,
    },
    /// A hyper-parameter is present but unusable (wrong type, zero, inconsistent).
    #[error("model configuration field `{}` is invalid: {reason}", crate::Printable(.key))]
    InvalidField {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `config.json` is not valid JSON.
    #[error("configuration is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A size such as `6GiB` could not be parsed.
    #[error("cannot parse size `{}`: {reason}", crate::Printable(.text))]
    InvalidSize {
        /// The text given.
        text: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A KV cache type name that is not one of [`crate::KvType`]'s.
    #[error("unknown KV cache type `{}` (expected f16, f32 or q8_0)", crate::Printable(.text))]
    UnknownKvType {
        /// The name given.
        text: String,
    },
    /// A GGUF storage type id that this build does not know.
    #[error("unknown GGUF tensor type id {id}")]
    UnknownStorageType {
        /// The numeric type id read from the file.
        id: u32,
    },
    /// A tensor's element count does not fit its storage type's block size.
    #[error("tensor `{}`: row of {row_len} elements is not a multiple of the {storage:?} block size {block}", crate::Printable(.name))]
    RowNotBlockAligned {
        /// Tensor name.
        name: String,
        /// Elements per row.
        row_len: usize,
        /// The storage type.
        storage: StorageType,
        /// Its block size.
        block: usize,
    },
}

use crate::StorageType;
