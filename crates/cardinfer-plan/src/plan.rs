//! A plan as data: where each block lives for a run (resident on the device, streamed
//! through the pool, or computed on the host), the pool's shape, the KV cache's place and
//! the prefill chunk, with the reasons. The search that makes one is
//! [`crate::placement`]; the cost model and the decode simulation read it.

use crate::PlanError;
use cardinfer_core::{BlockId, ByteSize, KvType, ModelSpec};
use std::fmt;
use std::str::FromStr;

/// Device bytes kept free beside a cache of routed experts for a pass's own tensors
/// (routed activations and outputs, an expert copied for one pass).
pub const EXPERT_CACHE_MARGIN: u64 = 64 << 20;

/// Execution mode asked for by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Resident if everything fits, else stream what does not fit.
    #[default]
    Auto,
    /// Every block resident; an error if the budget is too small.
    Resident,
    /// Every transformer layer and the head streamed through the pool.
    Stream,
}

impl FromStr for Mode {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, PlanError> {
        match s {
            "auto" => Ok(Self::Auto),
            "resident" => Ok(Self::Resident),
            "stream" => Ok(Self::Stream),
            _ => Err(PlanError::InvalidParameter {
                name: "mode",
                reason: format!("`{s}`: expected auto, resident or stream"),
            }),
        }
    }
}

/// Where one block's weights live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Loaded once onto the device.
    Resident,
    /// Copied into a pool slot each time it runs.
    Streamed,
    /// Kept in host memory and computed there (the embedding lookup).
    Host,
}

/// What a plan is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanRequest {
    /// Device bytes the whole run may use.
    pub budget_bytes: u64,
    /// Resident, streamed, or chosen by the budget.
    pub mode: Mode,
    /// Pool slots wanted; `None` means 2 (fewer if only fewer fit).
    pub slots: Option<usize>,
    /// Tokens per prefill chunk.
    pub prefill_chunk: usize,
    /// Device bytes the runtime takes besides the model (measured by the executor); 0
    /// on the CPU.
    pub runtime_bytes: u64,
    /// Activation bytes measured on the device for `prefill_chunk` (see the executor's
    /// `measure_device_overheads`); `None` uses the estimate of [`workspace_bytes`].
    pub measured_workspace_bytes: Option<u64>,
    /// Whether the executor overlaps block copies with compute (then a second slot
    /// hides copy time; without overlap it only costs memory).
    pub overlapped_copies: bool,
    /// How the KV cache stores its values (bytes per value).
    pub kv_type: KvType,
}

impl PlanRequest {
    /// Auto mode within `budget_bytes`: default slots, 512-token chunks, no measured
    /// overheads, copies in line.
    pub fn auto(budget_bytes: u64) -> Self {
        Self {
            budget_bytes,
            mode: Mode::Auto,
            slots: None,
            prefill_chunk: 512,
            runtime_bytes: 0,
            measured_workspace_bytes: None,
            overlapped_copies: false,
            kv_type: KvType::default(),
        }
    }
}

/// One position of one layer's KV cache (keys and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvPosition {
    /// Values held (2 × KV heads × head size).
    pub values: u64,
    /// Bytes they are stored in.
    pub bytes: u64,
}

impl KvPosition {
    /// One position of one layer of `spec`'s cache stored as `kv_type`.
    pub fn of(spec: &ModelSpec, kv_type: KvType) -> Self {
        let layers = spec.num_layers.max(1) as u64;
        Self {
            values: 2 * (spec.num_kv_heads * spec.head_dim) as u64,
            bytes: spec.kv_bytes_per_token(kv_type) / layers,
        }
    }
}

/// The placement of every block and the pool's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    /// Every block with its placement, in execution order.
    pub blocks: Vec<(BlockId, Placement)>,
    /// Device bytes of every block, as given to the planner.
    pub block_bytes: Vec<(BlockId, u64)>,
    /// Pool slots (0 when nothing streams).
    pub slots: usize,
    /// Bytes of one slot: the largest streamed block (or head chunk).
    pub slot_bytes: u64,
    /// Bytes of resident blocks on the device.
    pub resident_bytes: u64,
    /// Device bytes reserved for the KV cache: the whole cache at the full context, or,
    /// with `kv_on_host`, room for one layer's cache (and its copy while appending).
    pub kv_bytes: u64,
    /// The KV cache lives in host memory; each layer's part visits the device for its
    /// block (chosen in auto mode when the cache would not fit beside one slot).
    pub kv_on_host: bool,
    /// How the KV cache stores its values.
    pub kv_type: KvType,
    /// Positions the KV cache is planned for (the context).
    pub context: usize,
    /// One position of one layer's cache: keys and values, as values and as stored bytes
    /// (by `kv_type`). Decode attention reads `depth ×` these per layer.
    pub kv_position: KvPosition,
    /// Bytes reserved for activations of one prefill chunk.
    pub workspace_bytes: u64,
    /// The budget the plan was made for.
    pub budget_bytes: u64,
    /// Tokens per prefill chunk (one weight pass per chunk).
    pub prefill_chunk: usize,
    /// Device bytes the runtime itself holds.
    pub runtime_bytes: u64,
    /// Row ranges of the output head streamed one slot at a time (empty when the head
    /// is resident or fits one slot whole).
    pub head_chunks: Vec<std::ops::Range<usize>>,
    /// Of `head_chunks`, how many at the end the CPU computes in decode steps (hybrid
    /// plans, [`StreamPlan::place_hybrid`]): once the last layer is done the CPU is idle
    /// while the link still streams the head, so it takes those rows from host memory.
    pub head_host_chunks: usize,
    /// Why the plan is what it is, one reason per line.
    pub reasons: Vec<String>,
}

impl StreamPlan {
    /// Device bytes the plan holds at most: resident + pool + KV + workspace + runtime.
    pub fn device_bytes(&self) -> u64 {
        self.resident_bytes
            + self.slots as u64 * self.slot_bytes
            + self.kv_bytes
            + self.workspace_bytes
            + self.runtime_bytes
    }

    /// What this plan leaves of its budget for a device cache of routed experts (a
    /// mixture of experts with everything but its experts placed): the budget less the
    /// plan's device bytes (KV in host memory not counted) and [`EXPERT_CACHE_MARGIN`].
    pub fn expert_cache_bytes(&self) -> u64 {
        let kv_on_device = if self.kv_on_host { 0 } else { self.kv_bytes };
        let used = self.resident_bytes
            + self.slots as u64 * self.slot_bytes
            + kv_on_device
            + self.workspace_bytes
            + self.runtime_bytes;
        self.budget_bytes.saturating_sub(used).saturating_sub(EXPERT_CACHE_MARGIN)
    }

    /// Device bytes of `block`.
    pub fn bytes_of(&self, block: BlockId) -> u64 {
        self.block_bytes.iter().find(|(b, _)| *b == block).map_or(0, |(_, n)| *n)
    }

    /// Bytes copied into the pool per weight pass (per decoded token).
    pub fn streamed_bytes_per_pass(&self) -> u64 {
        self.blocks.iter().filter(|(_, p)| *p == Placement::Streamed).map(|(b, _)| self.bytes_of(*b)).sum()
    }

    /// Bytes of layers computed on the host per weight pass.
    pub fn host_bytes_per_pass(&self) -> u64 {
        self.blocks
            .iter()
            .filter(|(b, p)| *p == Placement::Host && *b != BlockId::Embed)
            .map(|(b, _)| self.bytes_of(*b))
            .sum()
    }

    /// The placement of `block`.
    pub fn placement(&self, block: BlockId) -> Placement {
        self.blocks.iter().find(|(b, _)| *b == block).map_or(Placement::Resident, |(_, p)| *p)
    }
}

/// The work a plan is chosen for: a prompt and a number of decoded tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Prompt tokens (prefilled in chunks).
    pub prompt_tokens: usize,
    /// Tokens decoded one at a time.
    pub decode_tokens: usize,
}

impl Default for Workload {
    /// 512 prompt tokens and 128 decoded: llama-bench's pp512 / tg128.
    fn default() -> Self {
        Self { prompt_tokens: 512, decode_tokens: 128 }
    }
}

/// Keys per tile of the prefill attention over a long cache: a chunk's scores hold at most
/// this many keys per query row at a time once the cache holds twice as many (the
/// executor's tiled attention), so the workspace stops growing with the context there.
pub const ATTENTION_KEY_TILE: usize = 1024;

/// Activations of one chunk: hidden states, q/k/v, MLP intermediates and attention
/// scores (and their exponentials) over the context, or over two tiles' worth of keys
/// for a longer one ([`ATTENTION_KEY_TILE`]), in f32, with a 2× margin for temporaries,
/// plus the logits of the last position; and one layer's keys and values over the whole
/// context read back as f32 for the chunk's attention (whatever the cache's storage type:
/// measured on an H100, a 4B within 500 MiB with a q8_0 cache at depth 4096 held 518 MiB
/// without it).
pub fn workspace_bytes(spec: &ModelSpec, chunk: usize) -> u64 {
    let score_keys = spec.context_length.min(2 * ATTENTION_KEY_TILE);
    let per_token = spec.hidden_size * 4
        + (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        + 3 * spec.intermediate_size
        + 2 * spec.num_heads * score_keys;
    let widened_cache = 2 * spec.context_length * spec.num_kv_heads * spec.head_dim * 4;
    2 * 4 * (chunk * per_token + spec.vocab_size) as u64 + widened_cache as u64
}

impl fmt::Display for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |p: Placement| self.blocks.iter().filter(|(_, q)| *q == p).count();
        write!(
            f,
            "{} resident, {} streamed through {} slot(s) of {}; KV {} ({}), workspace {}, runtime {}; {} of {} budget",
            count(Placement::Resident),
            count(Placement::Streamed),
            self.slots,
            ByteSize(self.slot_bytes),
            ByteSize(self.kv_bytes),
            self.kv_type,
            ByteSize(self.workspace_bytes),
            ByteSize(self.runtime_bytes),
            ByteSize(self.device_bytes()),
            ByteSize(self.budget_bytes),
        )
    }
}
