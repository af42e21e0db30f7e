//! The error type of `cardinfer-quant`.

use cardinfer_core::Printable;
use std::path::PathBuf;

/// Everything that can go wrong reading or writing weight files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// The file could not be opened, read, mapped or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file ends before a structure it declares. Likely cause: a partial download.
    #[error("{path}: truncated: {what} at byte {offset} needs {needed} bytes, but the file has {file_len}")]
    Truncated {
        /// The file concerned.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file's length.
        file_len: u64,
    },
    /// Not a GGUF file (wrong magic number).
    #[error("{path}: not a GGUF file (magic {found:?}, expected \"GGUF\")")]
    BadMagic {
        /// The file concerned.
        path: PathBuf,
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A GGUF version this reader does not handle (v1 had 32-bit lengths).
    #[error("{path}: GGUF version {version} is not supported (2 and 3 are)")]
    UnsupportedVersion {
        /// The file concerned.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
    /// A metadata entry is malformed, missing or has an unexpected type.
    #[error("{path}: metadata `{}`: {reason}", Printable(.key))]
    Metadata {
        /// The file concerned.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor entry is malformed (bad shape, type, offset or range).
    #[error("{path}: tensor `{}`: {reason}", Printable(.tensor))]
    Tensor {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("{path}: tensor `{}` is missing", Printable(.tensor))]
    MissingTensor {
        /// The checkpoint concerned.
        path: PathBuf,
        /// The tensor looked for.
        tensor: String,
    },
    /// A checkpoint directory lacks a file it needs.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The directory or file concerned.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The safetensors header is invalid.
    #[error("{path}: invalid safetensors file: {source}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// The parser's error.
        source: safetensors::SafeTensorError,
    },
    /// Model hyper-parameters are missing or inconsistent.
    #[error("{path}: {source}")]
    Spec {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: cardinfer_core::CoreError,
    },
    /// A quantization scheme name that is not known.
    #[error("unknown quantization scheme `{}` (known: {known})", Printable(.name))]
    UnknownScheme {
        /// The name given.
        name: String,
        /// The schemes that exist.
        known: String,
    },
    /// A model preset name that is not known.
    #[error("unknown model preset `{}` (known: {known})", Printable(.name))]
    UnknownPreset {
        /// The name given.
        name: String,
        /// The presets that exist.
        known: String,
    },
    /// Two inputs that must agree do not (e.g. logits of different vocabularies).
    #[error("{what}: {reason}")]
    Mismatch {
        /// What was compared.
        what: String,
        /// How they differ.
        reason: String,
    },
    /// Candle failed to build or quantize a tensor.
    #[error("tensor `{}`: {source}", Printable(.tensor))]
    Candle {
        /// The tensor concerned.
        tensor: String,
        /// Candle's error.
        source: candle_core::Error,
    },
}

impl QuantError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
