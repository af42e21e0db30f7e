//! Where a model comes from: a local path (GGUF file or Hugging Face directory) or
//! `hf:org/repo[:file]`, fetched through hf-hub's cache only when asked.

use crate::{Result, StreamError};
use std::path::{Path, PathBuf};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A GGUF file or a checkpoint directory on disk.
    Path(PathBuf),
    /// A Hugging Face hub repository, optionally one GGUF file in it.
    Hub {
        /// `org/repo`.
        repo: String,
        /// A file in the repository (a GGUF), or `None` for a safetensors checkpoint.
        file: Option<String>,
    },
}

impl ModelSource {
    /// Parses `hf:org/repo[:file]` or a path.
    pub fn parse(text: &str) -> Result<Self> {
        let Some(rest) = text.strip_prefix("hf:") else {
            return Ok(Self::Path(PathBuf::from(text)));
        };
        let (repo, file) = match rest.split_once(':') {
            Some((repo, file)) => (repo, Some(file.to_string())),
            None => (rest, None),
        };
        if repo.split('/').count() != 2 || repo.split('/').any(str::is_empty) {
            return Err(StreamError::Hub { repo: repo.to_string(), reason: "expected hf:org/repo[:file]".into() });
        }
        Ok(Self::Hub { repo: repo.to_string(), file })
    }

    /// A local path for the model, downloading into hf-hub's cache if needed.
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            Self::Path(p) => Ok(p.clone()),
            Self::Hub { repo, file } => download(repo, file.as_deref()),
        }
    }
}

fn download(repo: &str, file: Option<&str>) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    let err = |reason: String| StreamError::Hub {
        repo: repo.to_string(),
        reason: format!("{reason} (is the network reachable? local paths work offline)"),
    };
    let api = ApiBuilder::from_env().with_progress(true).build().map_err(|e| err(e.to_string()))?;
    let hub = api.model(repo.to_string());
    if let Some(file) = file {
        return hub.get(file).map_err(|e| err(format!("{file}: {e}")));
    }
    let config = hub.get("config.json").map_err(|e| err(format!("config.json: {e}")))?;
    for optional in ["tokenizer.json", "tokenizer_config.json"] {
        let _ = hub.get(optional);
    }
    if hub.get("model.safetensors").is_err() {
        let index = hub
            .get("model.safetensors.index.json")
            .map_err(|e| err(format!("neither model.safetensors nor an index: {e}")))?;
        let text = std::fs::read_to_string(&index).map_err(|e| err(e.to_string()))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let mut shards: Vec<&str> = value["weight_map"]
            .as_object()
            .map(|m| m.values().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        shards.sort();
        shards.dedup();
        for shard in shards {
            hub.get(shard).map_err(|e| err(format!("{shard}: {e}")))?;
        }
    }
    config.parent().map(Path::to_path_buf).ok_or_else(|| err("bad cache path".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(ModelSource::parse("m.gguf").unwrap(), ModelSource::Path("m.gguf".into()));
        assert_eq!(
            ModelSource::parse("hf:Qwen/Qwen3-0.6B").unwrap(),
            ModelSource::Hub { repo: "Qwen/Qwen3-0.6B".into(), file: None }
        );
        assert_eq!(
            ModelSource::parse("hf:org/repo:model-q4.gguf").unwrap(),
            ModelSource::Hub { repo: "org/repo".into(), file: Some("model-q4.gguf".into()) }
        );
        assert!(ModelSource::parse("hf:justone").is_err());
    }
}
