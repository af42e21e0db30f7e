#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod bytesize;
mod error;
mod family_config;
mod kv_type;
mod layout;
pub mod presets;
mod printable;
mod spec;
mod storage;

pub use bytesize::ByteSize;
pub use error::CoreError;
pub use kv_type::{KvType, Q8_0_BLOCK, Q8_0_BLOCK_BYTES};
pub use layout::{BlockId, ModelLayout, TensorInfo};
pub use printable::Printable;
pub use spec::{limits, Family, GemmaSpec, ModelSpec, MoeSpec, RopeScaling, RopeStyle};
pub use storage::StorageType;

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, CoreError>;
