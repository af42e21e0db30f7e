//! Hugging Face checkpoint directories: `config.json` + `model.safetensors` or shards.

use crate::QuantError;
use cardinfer_core::{ModelSpec, StorageType, TensorInfo};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A Hugging Face checkpoint directory, its shards mapped and their headers validated.
pub struct HfCheckpoint {
    dir: PathBuf,
    spec: ModelSpec,
    shards: Vec<(PathBuf, Mmap)>,
    tensors: BTreeMap<String, TensorInfo>,
}

impl std::fmt::Debug for HfCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfCheckpoint").field("dir", &self.dir).field("tensors", &self.tensors.len()).finish()
    }
}

impl HfCheckpoint {
    /// Opens `dir`: reads `config.json`, maps `model.safetensors` or the shards named by
    /// `model.safetensors.index.json`, and checks every tensor's byte range.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, QuantError> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        let config = std::fs::read_to_string(&config_path).map_err(|e| QuantError::Checkpoint {
            path: config_path.clone(),
            reason: format!("cannot read config.json ({e}); a Hugging Face checkpoint directory needs one"),
        })?;
        let spec = ModelSpec::from_hf_config_str(&config)
            .map_err(|source| QuantError::Spec { path: config_path.clone(), source })?;

        let shard_names = shard_files(&dir)?;
        let mut shards = Vec::new();
        let mut tensors = BTreeMap::new();
        for (index, name) in shard_names.into_iter().enumerate() {
            let path = dir.join(&name);
            let file = File::open(&path).map_err(|e| QuantError::io(&path, e))?;
            // SAFETY: read-only map of a file we do not modify.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| QuantError::io(&path, e))?;
            for mut info in shard_tensors(&path, index, &mmap)? {
                if spec.family == cardinfer_core::Family::Gemma3 {
                    // A multimodal Gemma 3's text model under its usual names; its vision
                    // tower and projector are not read.
                    match text_model_name(&info.name) {
                        Some(name) => info.name = name,
                        None => continue,
                    }
                }
                tensors.insert(info.name.clone(), info);
            }
            shards.push((path, mmap));
        }
        Ok(Self { dir, spec, shards, tensors })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Hyper-parameters from `config.json`.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Every tensor, by name.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.tensors.values()
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The stored bytes of `info` (validated at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.shards[info.file].1[info.offset as usize..info.end() as usize]
    }

    /// `tokenizer.json` beside the weights, if present.
    pub fn tokenizer_path(&self) -> Option<PathBuf> {
        Some(self.dir.join("tokenizer.json")).filter(|p| p.is_file())
    }

    /// The chat template from `tokenizer_config.json` or `chat_template.jinja`, if any.
    pub fn chat_template(&self) -> Option<String> {
        if let Ok(text) = std::fs::read_to_string(self.dir.join("chat_template.jinja")) {
            return Some(text);
        }
        let text = std::fs::read_to_string(self.dir.join("tokenizer_config.json")).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value.get("chat_template")?.as_str().map(str::to_string)
    }
}

/// The tensors of one safetensors file's `bytes` (shard `file` of its checkpoint, at
/// `path` in errors), each with its storage type and byte range in the file. The header's
/// offsets are checked to cover the data exactly.
pub fn shard_tensors(path: &Path, file: usize, bytes: &[u8]) -> Result<Vec<TensorInfo>, QuantError> {
    // `read_metadata` validates the header (offsets covering the data exactly); where it
    // refuses one, our check says which tensor and which numbers, when it can.
    let (header_len, metadata) = match SafeTensors::read_metadata(bytes) {
        Ok(header) => header,
        Err(source) => {
            crate::safetensors_check::check_header(path, bytes)?;
            return Err(QuantError::Safetensors { path: path.to_path_buf(), source });
        }
    };
    let data_start = 8 + header_len as u64;
    let mut tensors = Vec::new();
    for (tensor, info) in metadata.tensors() {
        let storage = match info.dtype {
            Dtype::F32 => StorageType::F32,
            Dtype::F16 => StorageType::F16,
            Dtype::BF16 => StorageType::BF16,
            other => {
                return Err(QuantError::Tensor {
                    path: path.to_path_buf(),
                    tensor,
                    reason: format!("dtype {other:?} is not supported (F32, F16, BF16 are)"),
                })
            }
        };
        let (start, end) = info.data_offsets;
        let len = (end - start) as u64;
        tensors.push(TensorInfo {
            name: tensor,
            shape: info.shape.clone(),
            storage,
            file,
            offset: data_start + start as u64,
            len,
        });
    }
    Ok(tensors)
}

fn shard_files(dir: &Path) -> Result<Vec<String>, QuantError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec!["model.safetensors".into()]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|_| QuantError::Checkpoint {
        path: dir.to_path_buf(),
        reason: "neither model.safetensors nor model.safetensors.index.json is present".into(),
    })?;
    let bad = |reason: &str| QuantError::Checkpoint { path: index_path.clone(), reason: reason.to_string() };
    let index: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&format!("invalid JSON: {e}")))?;
    let map = index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object"))?;
    let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(bad("`weight_map` names no files"));
    }
    if let Some(escape) = files.iter().find(|f| f.contains('/') || f.contains('\\') || f.contains("..")) {
        return Err(bad(&format!("shard name `{escape}` leaves the checkpoint directory")));
    }
    Ok(files)
}

/// The text model's name of a tensor of a Gemma 3 checkpoint: `model.layers.…` whether
/// it is stored so (text-only), as `language_model.model.…` (multimodal, transformers 4)
/// or as `model.language_model.…` (transformers 5); `None` for the vision tower and the
/// multimodal projector.
fn text_model_name(name: &str) -> Option<String> {
    if let Some(rest) =
        name.strip_prefix("language_model.model.").or_else(|| name.strip_prefix("model.language_model."))
    {
        return Some(format!("model.{rest}"));
    }
    if let Some(rest) = name.strip_prefix("language_model.") {
        return Some(rest.to_string());
    }
    let vision = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."];
    match vision.iter().any(|p| name.starts_with(p)) {
        true => None,
        false => Some(name.to_string()),
    }
}
