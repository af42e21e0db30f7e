#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

// The CPU and CUDA kernels, pools and copy machinery: internals, public only to the
// developer tools and tests (`dev` feature).
#[cfg(feature = "dev")]
pub mod cpu;
#[cfg(not(feature = "dev"))]
#[allow(dead_code)]
pub(crate) mod cpu;
#[cfg(feature = "dev")]
pub mod cuda;
#[cfg(not(feature = "dev"))]
#[allow(dead_code)]
pub(crate) mod cuda;

pub mod device;
pub mod diagnostics;
mod error;
pub mod executor;
pub mod load;
pub mod model;
#[cfg(test)]
mod test_util;
pub mod text;

/// Candle, as this crate uses it: tensors and devices without a second, version-matched
/// dependency.
pub use candle_core;
pub use cardinfer_core::KvType;
pub use cardinfer_plan::{Budget, Placement, Profile, StreamPlan};
pub use cpu::kernels::CpuKernels;
pub use error::{Result, StreamError};
pub use executor::expert_cache::ExpertStats;
pub use executor::{DecodePath, Mode, ResidentModel};
pub use load::{HostTier, LoadOptions, LoadedModel, ModelSource, Runner};
pub use model::{KvCache, KvSlot, LayerStream, Logits, TextModel};
pub use text::chat_prompt::encode_chat;
pub use text::chat_template::{ChatTemplate, Message};
pub use text::generator::{GenerateOptions, Generation, Session, StopReason};
pub use text::sampling::{Sampler, SamplingParams};
pub use text::scoring::{score, Score};
pub use text::speculative::{check_draft_vocabulary, SpeculationStats, SpeculativeOptions, SpeculativeSession};
pub use text::tokenizer::{IncrementalDecoder, Tokenizer};
