//! The error type of `cardinfer-plan`.

use cardinfer_core::ByteSize;

/// Errors of the planner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The budget text is neither a size nor a percentage.
    #[error("invalid budget `{text}`: {reason}")]
    InvalidBudget {
        /// What was given.
        text: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The budget cannot hold what the run needs.
    #[error("budget {budget} is too small: at least {needed} is needed (pool {pool}, KV cache {kv}, workspace {workspace}); try {hint}")]
    InfeasibleBudget {
        /// The budget given.
        budget: ByteSize,
        /// The smallest budget that would work with these settings.
        needed: ByteSize,
        /// Bytes of the pool (largest streamed block × slots).
        pool: ByteSize,
        /// Bytes of the KV cache at full context.
        kv: ByteSize,
        /// Bytes of activations.
        workspace: ByteSize,
        /// The cheapest change that could make it fit.
        hint: String,
    },
    /// A parameter is out of range or unknown (mode, GPU name, preset…).
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// A profile file could not be read or written.
    #[error("profile {path}: {reason}")]
    Profile {
        /// The profile file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A percentage budget needs the device's free memory, which this device cannot report.
    #[error(
        "budget {percent}% needs the device's free memory, which is unknown here: give an absolute size such as 6GiB"
    )]
    UnknownFreeMemory {
        /// The percentage asked for.
        percent: f64,
    },
}
