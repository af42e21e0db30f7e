//! Shared helpers for the end-to-end tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/reference` relative to the repository root.
pub fn reference_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference")
}

/// Where `scripts/fetch-model.sh` caches models.
pub fn model_cache() -> PathBuf {
    match std::env::var_os("CARDINFER_CACHE") {
        Some(dir) => PathBuf::from(dir).join("models"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cardinfer/models"),
    }
}
