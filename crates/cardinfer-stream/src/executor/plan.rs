//! Where each block lives for a run: resident on the device or streamed through the
//! pool, how many pool slots, and the prefill chunk. A minimal, deterministic policy
//! until the cost-model planner (`cardinfer-plan`) takes over.

use crate::weights::device_bytes_of;
use crate::{Result, StreamError};
use candle_core::Device;
use cardinfer_core::{BlockId, ByteSize, ModelLayout, ModelSpec};
use std::fmt;
use std::str::FromStr;

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
    type Err = StreamError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "resident" => Ok(Self::Resident),
            "stream" => Ok(Self::Stream),
            _ => Err(StreamError::InvalidParameter {
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
    /// Pool slots wanted (default 2).
    pub slots: Option<usize>,
    /// Tokens per prefill chunk.
    pub prefill_chunk: usize,
    /// Device bytes the runtime takes besides the model (see
    /// [`super::measure_runtime_bytes`]); 0 on the CPU.
    pub runtime_bytes: u64,
}

/// The placement of every block and the pool's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPlan {
    /// Every block with its placement, in execution order.
    pub blocks: Vec<(BlockId, Placement)>,
    /// Pool slots (0 when nothing streams).
    pub slots: usize,
    /// Bytes of one slot: the largest streamed block on this device.
    pub slot_bytes: u64,
    /// Bytes of resident blocks on the device.
    pub resident_bytes: u64,
    /// Bytes reserved for the KV cache at the full context.
    pub kv_bytes: u64,
    /// Bytes reserved for activations of one prefill chunk.
    pub workspace_bytes: u64,
    /// The budget the plan was made for.
    pub budget_bytes: u64,
    /// Tokens per prefill chunk (one weight pass per chunk).
    pub prefill_chunk: usize,
    /// Device bytes the runtime itself holds (measured by [`super::measure_runtime_bytes`]).
    pub runtime_bytes: u64,
    /// Row ranges of the output head streamed one slot at a time (empty when the head
    /// is resident or fits one slot whole).
    pub head_chunks: Vec<std::ops::Range<usize>>,
}

impl StreamPlan {
    /// Device bytes the plan holds at most: resident + pool + KV + workspace.
    pub fn device_bytes(&self) -> u64 {
        self.resident_bytes
            + self.slots as u64 * self.slot_bytes
            + self.kv_bytes
            + self.workspace_bytes
            + self.runtime_bytes
    }

    /// Bytes copied into the pool per weight pass (per decoded token).
    pub fn streamed_bytes_per_pass(&self, layout: &ModelLayout, device: &Device) -> u64 {
        self.blocks
            .iter()
            .filter(|(_, p)| *p == Placement::Streamed)
            .map(|(b, _)| block_device_bytes(layout, *b, device))
            .sum()
    }

    /// The placement of `block`.
    pub fn placement(&self, block: BlockId) -> Placement {
        self.blocks.iter().find(|(b, _)| *b == block).map_or(Placement::Resident, |(_, p)| *p)
    }

    /// Plans `layout` for `budget_bytes` on `device`.
    ///
    /// The embedding stays in host memory (a lookup needs a few KB per token). Resident
    /// mode needs everything to fit. Otherwise the pool gets `slots` slots (2 by default:
    /// one computing, one filling) and as many blocks as still fit become resident,
    /// layers first, then the head.
    pub fn new(spec: &ModelSpec, layout: &ModelLayout, device: &Device, request: &PlanRequest) -> Result<Self> {
        let PlanRequest { budget_bytes, mode, slots, prefill_chunk, runtime_bytes } = *request;
        let prefill_chunk = prefill_chunk.max(1);
        let kv_bytes = spec.kv_bytes_per_token(4) * spec.context_length as u64;
        let workspace_bytes = workspace_bytes(spec, prefill_chunk);
        let fixed = kv_bytes + workspace_bytes + runtime_bytes;
        let candidates: Vec<BlockId> = layout.blocks.iter().map(|(b, _)| *b).filter(|b| *b != BlockId::Embed).collect();
        let bytes = |b: BlockId| block_device_bytes(layout, b, device);
        let all_resident: u64 = candidates.iter().map(|&b| bytes(b)).sum();
        let largest = candidates.iter().map(|&b| bytes(b)).max().unwrap_or(0);
        let mut plan = Self {
            blocks: vec![(BlockId::Embed, Placement::Host)],
            slots: 0,
            slot_bytes: 0,
            resident_bytes: 0,
            kv_bytes,
            workspace_bytes,
            budget_bytes,
            prefill_chunk,
            head_chunks: Vec::new(),
            runtime_bytes,
        };
        let infeasible = |needed: u64, pool: u64, what: &str| StreamError::InfeasibleBudget {
            budget: ByteSize(budget_bytes),
            needed: ByteSize(needed),
            pool: ByteSize(pool),
            kv: ByteSize(kv_bytes),
            workspace: ByteSize(workspace_bytes),
            hint: what.to_string(),
        };
        let stream_all = match mode {
            Mode::Resident => {
                if all_resident + fixed > budget_bytes {
                    return Err(infeasible(
                        all_resident + fixed,
                        0,
                        "use --mode auto or stream to stream blocks through a pool",
                    ));
                }
                false
            }
            Mode::Auto => all_resident + fixed > budget_bytes,
            Mode::Stream => true,
        };
        if !stream_all {
            plan.blocks.extend(candidates.iter().map(|&b| (b, Placement::Resident)));
            plan.resident_bytes = all_resident;
            return Ok(plan);
        }
        let wanted_slots = slots.unwrap_or(2).max(1);
        // Keep the head resident when that still leaves room for the layer pool: the
        // head is often the largest block (a 150k vocabulary), and the slot size is set
        // by the largest streamed block.
        let head = bytes(BlockId::Head);
        let largest_layer = candidates.iter().filter(|b| **b != BlockId::Head).map(|&b| bytes(b)).max().unwrap_or(0);
        let head_resident = mode == Mode::Auto && fixed + head + largest_layer <= budget_bytes;
        // A streamed head larger than a layer goes through the slots in row chunks.
        let chunk_head = !head_resident && head > largest_layer && largest_layer > 0;
        let slot = if head_resident || chunk_head { largest_layer } else { largest };
        if chunk_head {
            let vocab = spec.vocab_size;
            let pieces = head.div_ceil(largest_layer) as usize + 1;
            let rows = vocab.div_ceil(pieces);
            plan.head_chunks = (0..vocab).step_by(rows.max(1)).map(|r| r..(r + rows).min(vocab)).collect();
        }
        let reserved = fixed + if head_resident { head } else { 0 };
        if slot + reserved > budget_bytes {
            return Err(infeasible(
                slot + reserved,
                slot,
                "a shorter context (smaller KV cache), a smaller prefill chunk, or a smaller quant",
            ));
        }
        // As many slots as asked for that fit, at least one.
        let fitting_slots = ((budget_bytes - reserved) / slot.max(1)) as usize;
        plan.slots = wanted_slots.min(fitting_slots).max(1);
        plan.slot_bytes = slot;
        let mut free = budget_bytes - reserved - plan.slots as u64 * slot;
        if head_resident {
            plan.resident_bytes += head;
        }
        for &b in &candidates {
            let placement = if b == BlockId::Head && head_resident {
                Placement::Resident
            } else if mode == Mode::Auto && b != BlockId::Head && bytes(b) <= free {
                free -= bytes(b);
                plan.resident_bytes += bytes(b);
                Placement::Resident
            } else {
                Placement::Streamed
            };
            plan.blocks.push((b, placement));
        }
        if !plan.blocks.iter().any(|(_, p)| *p == Placement::Streamed) {
            plan.slots = 0;
            plan.slot_bytes = 0;
        }
        Ok(plan)
    }
}

/// Device bytes of `block` once loaded on `device` (quant-aware, with Candle's CUDA row
/// padding).
pub fn block_device_bytes(layout: &ModelLayout, block: BlockId, device: &Device) -> u64 {
    layout.tensors(block).iter().map(|t| device_bytes_of(t, device)).sum()
}

/// Activations of one chunk: hidden states, q/k/v, MLP intermediates and attention
/// scores over the full context, in f32, with a 2× margin for temporaries.
fn workspace_bytes(spec: &ModelSpec, chunk: usize) -> u64 {
    let per_token = spec.hidden_size * 4
        + (spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        + 3 * spec.intermediate_size
        + 2 * spec.num_heads * spec.context_length;
    // Logits of the last position only (scoring every position needs more).
    2 * 4 * (chunk * per_token + spec.vocab_size) as u64
}

impl fmt::Display for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |p: Placement| self.blocks.iter().filter(|(_, q)| *q == p).count();
        write!(
            f,
            "{} resident, {} streamed through {} slot(s) of {}; KV {}, workspace {}, runtime {}; {} of {} budget",
            count(Placement::Resident),
            count(Placement::Streamed),
            self.slots,
            ByteSize(self.slot_bytes),
            ByteSize(self.kv_bytes),
            ByteSize(self.workspace_bytes),
            ByteSize(self.runtime_bytes),
            ByteSize(self.device_bytes()),
            ByteSize(self.budget_bytes),
        )
    }
}
