//! The error type of `cardinfer-stream`.

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// Reading the weight file failed (truncated, corrupt, missing tensor...).
    #[error(transparent)]
    Weights(#[from] cardinfer_quant::QuantError),
    /// The model's hyper-parameters are unusable.
    #[error(transparent)]
    Spec(#[from] cardinfer_core::CoreError),
    /// A Candle operation failed.
    #[error("compute error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The prompt (plus what is already in the KV cache) does not fit the context.
    #[error(
        "prompt of {tokens} tokens (with {cached} already in context) exceeds the model's context of {context} tokens"
    )]
    ContextOverflow {
        /// Tokens to add.
        tokens: usize,
        /// Tokens already in the KV cache.
        cached: usize,
        /// The context length.
        context: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// The vocabulary size.
        vocab: usize,
    },
    /// The tokenizer could not be built or failed on input.
    #[error("tokenizer: {}", cardinfer_core::Printable(.0))]
    Tokenizer(String),
    /// Text was given but the model has no tokenizer.
    #[error("{model} has no tokenizer (no tokenizer.json, no GGUF vocabulary): pass token ids instead")]
    NoTokenizer {
        /// The model path.
        model: String,
    },
    /// A chat template failed to render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A device string or device that cannot be used.
    #[error("device `{device}`: {reason}")]
    Device {
        /// The device asked for.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Downloading from the Hugging Face hub failed.
    #[error("hub model `{repo}`: {reason}")]
    Hub {
        /// The repository.
        repo: String,
        /// What failed.
        reason: String,
    },
    /// A parameter is out of range (temperature, top-p...).
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The planner rejected the request (a budget too small, an unknown mode…).
    #[error(transparent)]
    Plan(#[from] cardinfer_plan::PlanError),
    /// A weight has a shape the model family does not expect.
    #[error("tensor `{}`: expected shape {expected:?}, found {found:?}", cardinfer_core::Printable(.tensor))]
    ShapeMismatch {
        /// The tensor.
        tensor: String,
        /// The shape the spec implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A draft model whose token ids do not mean what the target's mean.
    #[error("the draft model {draft} cannot draft for {target}: {reason}")]
    VocabularyMismatch {
        /// The target model.
        target: String,
        /// The draft model.
        draft: String,
        /// Where the vocabularies differ.
        reason: String,
    },
    /// A fault inside CardInfer, not in the input: a worker thread panicked, a device
    /// call that cannot fail for valid input failed. Worth a bug report.
    #[error("internal error: {0} (a fault in CardInfer, not in your input; please report it)")]
    Internal(String),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, StreamError>;
