//! Which blocks the CPU computes in a pass (host layers, the head's host rows) and the
//! host-split search that decides how many.

use super::{head_rows_bytes, StreamedModel, HOST_COMPUTE_MAX_TOKENS};
use crate::executor::host_head::HostHead;
use crate::executor::host_split::HostSplit;
use crate::executor::plan::{Placement, StreamPlan};
use crate::model::kv_cache::KvCache;
use crate::model::layer_stream::LayerStream;
use crate::model::weights::BlockWeights;
use crate::Result;
use candle_core::{Device, Tensor};
use cardinfer_core::BlockId;
use cardinfer_plan::TuningReport;
use std::collections::HashMap;

/// The layers of `plan` with weights in `host` (its host layers), in pass order.
pub(super) fn host_layers_of(plan: &StreamPlan, host: &HashMap<BlockId, BlockWeights>) -> Vec<usize> {
    let host_layer = |(block, _): &(BlockId, Placement)| match block {
        BlockId::Layer(i) if host.contains_key(block) => Some(*i),
        _ => None,
    };
    plan.blocks.iter().filter_map(host_layer).collect()
}

/// The layers a pass computes on the CPU: per layer, whether the split in use has it
/// there, and the pass's width.
#[derive(Debug, Clone, Copy)]
pub(super) struct OnCpu<'a> {
    pub(super) layers: &'a [bool],
    pub(super) tokens: usize,
    /// False where the CPU computes no layer this pass (see `StreamedModel::pass`).
    pub(super) allowed: bool,
    /// Rows the head computes this pass (1, or every token's for `Logits::All`).
    pub(super) head_rows: usize,
}

impl OnCpu<'_> {
    /// Whether the CPU computes anything this pass: decode steps of at most
    /// [`HOST_COMPUTE_MAX_TOKENS`] tokens where allowed (wider passes stream every block).
    fn computes(&self) -> bool {
        self.allowed && self.tokens <= HOST_COMPUTE_MAX_TOKENS
    }
}

impl StreamedModel {
    /// The host weights of `block` when the pass `on_cpu` computes it on the CPU: host
    /// layers the split has there, in passes of at most [`HOST_COMPUTE_MAX_TOKENS`] tokens
    /// (wider passes, and host layers the tuner moved off the CPU, stream them like any
    /// other block).
    pub(super) fn cpu_weights(&self, block: BlockId, on_cpu: OnCpu<'_>) -> Option<&BlockWeights> {
        let BlockId::Layer(i) = block else { return None };
        let active = on_cpu.computes() && on_cpu.layers.get(i).copied().unwrap_or(false);
        self.host.get(&block).filter(|_| active)
    }

    /// The CPU's rows of the head when the pass `on_cpu` computes them there: decode
    /// steps (one row of logits) of passes whose host layers run on the CPU.
    pub(super) fn host_head(&self, on_cpu: OnCpu<'_>) -> Option<&HostHead> {
        let active = on_cpu.computes() && on_cpu.head_rows == 1;
        self.host_head.as_ref().filter(|_| active)
    }

    pub(super) fn lock_split(&self) -> std::sync::MutexGuard<'_, HostSplit> {
        self.host_split.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets the first decode steps choose how many of the plan's host layers the CPU
    /// computes (see [`cardinfer_plan::tuning`]): from all of them down, each count
    /// measured over a few steps, the fastest kept; then how many CPU threads compute
    /// them, from the host pool's count down (the host pool, `cpu/host_pool.rs`); then it keeps
    /// comparing the split with stream-only, both measured again, and uses the faster
    /// ([`cardinfer_plan::split_watch`]). Off by default; the loader turns it on for
    /// hybrid plans whose host-layer count the planner chose. Restarts the search.
    pub fn set_host_tuning(&mut self, on: bool) {
        let planned = host_layers_of(&self.plan, &self.host);
        // Without host layers there is nothing to search (and no pool to start). A search
        // starts from the pool's own count, not from what an earlier one left.
        let search = (on && !planned.is_empty()).then(crate::cpu::host_pool::default_threads);
        *self.lock_split() = HostSplit::new(planned, self.family.spec().num_layers, search);
    }

    /// The host-layer search so far (`None` when the plan has no host layers).
    pub fn host_tuning(&self) -> Option<TuningReport> {
        let report = self.lock_split().report();
        (report.planned > 0).then_some(report)
    }

    /// Weight bytes the CPU reads per decoded token with the split in use: its layers,
    /// and the head's rows it computes beside the link.
    pub fn host_bytes_per_pass(&self) -> u64 {
        let on_cpu = self.lock_split().on_cpu();
        let layers: u64 = (0..on_cpu.len()).filter(|&i| on_cpu[i]).map(|i| self.plan.bytes_of(BlockId::Layer(i))).sum();
        let head = self.host_head.as_ref().map_or(0, |head| head_rows_bytes(&self.layout, &head.rows, &Device::Cpu));
        layers + head
    }

    /// Layer `i` on the device; with the KV cache in host memory (the whole cache, or a
    /// host-placed layer's in a hybrid plan, streamed here by a prefill chunk), its part
    /// visits the device for the block and goes back after.
    pub(super) fn device_block(
        &self,
        i: usize,
        weights: &BlockWeights,
        x: &Tensor,
        kv: &mut KvCache,
        pos: usize,
    ) -> Result<Tensor> {
        let cache_on_host = self.plan.kv_on_host || self.host.contains_key(&BlockId::Layer(i));
        if !cache_on_host {
            return self.family.block(i, weights, x, kv.layer_mut(i), pos);
        }
        let slot = kv.layer_mut(i);
        slot.move_to(&self.device)?;
        let y = self.family.block(i, weights, x, slot, pos)?;
        slot.move_to(&Device::Cpu)?;
        Ok(y)
    }
}
