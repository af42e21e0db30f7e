//! One interface over both weight formats.

use crate::gguf::GgufFile;
use crate::safetensors::HfCheckpoint;
use crate::QuantError;
use cardinfer_core::{ModelSpec, TensorInfo};
use std::path::Path;

/// An opened weight source: a GGUF file or a Hugging Face checkpoint directory.
#[derive(Debug)]
pub enum Checkpoint {
    /// A single GGUF file (weights, metadata and usually the tokenizer).
    Gguf(GgufFile),
    /// A directory with `config.json` and safetensors shards.
    Hf(HfCheckpoint),
}

impl Checkpoint {
    /// Opens `path`: a directory is read as a Hugging Face checkpoint, a file as GGUF.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, QuantError> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| QuantError::io(path, e))?;
        if meta.is_dir() {
            Ok(Self::Hf(HfCheckpoint::open(path)?))
        } else {
            Ok(Self::Gguf(GgufFile::open(path)?))
        }
    }

    /// Where the weights come from.
    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf(g) => g.path(),
            Self::Hf(h) => h.dir(),
        }
    }

    /// The model's hyper-parameters.
    pub fn spec(&self) -> Result<ModelSpec, QuantError> {
        match self {
            Self::Gguf(g) => g.model_spec(),
            Self::Hf(h) => Ok(h.spec().clone()),
        }
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        match self {
            Self::Gguf(g) => g.tensor(name),
            Self::Hf(h) => h.tensor(name),
        }
    }

    /// The tensor called `name`, or an error naming it and the file.
    pub fn require(&self, name: &str) -> Result<&TensorInfo, QuantError> {
        self.tensor(name)
            .ok_or_else(|| QuantError::MissingTensor { path: self.path().to_path_buf(), tensor: name.to_string() })
    }

    /// The stored bytes of a tensor of this checkpoint.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        match self {
            Self::Gguf(g) => g.tensor_bytes(info),
            Self::Hf(h) => h.tensor_bytes(info),
        }
    }
}
