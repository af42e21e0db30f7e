#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod budget;
pub mod catalog;
pub mod cost;
mod error;
mod hybrid;
pub mod moe_cost;
pub mod placement;
pub mod plan;
pub mod profile;
pub mod schedule;
pub mod split_watch;
mod stats;
pub mod table;
pub mod tuning;

pub use budget::Budget;
pub use cost::{predict, predict_batch, predict_decode_at, Bound, Prediction};
pub use error::PlanError;
pub use hybrid::PLAIN_PATH_MS_PER_LAYER;
pub use moe_cost::{predict_moe, MoePlacement, MoePrediction, MoeShape};
pub use plan::{KvPosition, Mode, Placement, PlanRequest, StreamPlan, Workload, ATTENTION_KEY_TILE};
pub use profile::Profile;
pub use schedule::{simulate_decode, simulate_decode_at, DecodeRates, TokenSchedule};
pub use split_watch::{Recheck, SplitWatch};
pub use tuning::{HostSplitTuner, TuningReport};
