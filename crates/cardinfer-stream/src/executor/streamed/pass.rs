//! One weight pass of the streaming executor: every block in order, each computed where
//! the plan and the host split put it — resident on the device, on the CPU from host
//! memory, or streamed through the pool (the head in row chunks, with the CPU's rows
//! beside them).

use super::host::OnCpu;
use super::{trace, Filled, Source, StreamTimings, StreamedModel};
use crate::device::DeviceMarker;
use crate::executor::hidden::HiddenState;
use crate::executor::host_layer::host_decode_step;
use crate::executor::timeline::Timeline;
use crate::model::kv_cache::KvCache;
use crate::model::layer_stream::LayerStream;
use crate::model::text_model::Logits;
use crate::model::weights::BlockWeights;
use crate::{Result, StreamError};
use candle_core::{Device, IndexOp, Tensor, D};
use cardinfer_core::BlockId;
use std::collections::VecDeque;
use std::time::Instant;

/// What a pass reads from and accumulates into as it goes through the blocks.
pub(super) struct Pass<'p, 's> {
    pub(super) source: &'p Source<'s>,
    /// Blocks read ahead into free slots.
    pub(super) ahead: VecDeque<Filled>,
    pub(super) kv: &'p mut KvCache,
    pub(super) pos: usize,
    pub(super) on_cpu: OnCpu<'p>,
    /// The logits asked for (`None`: no head this pass).
    pub(super) which: Option<Logits>,
    timings: StreamTimings,
    copy_markers: Vec<(DeviceMarker, DeviceMarker)>,
    timeline: Timeline,
}

impl<'p, 's> Pass<'p, 's> {
    pub(super) fn new(
        model: &StreamedModel,
        source: &'p Source<'s>,
        kv: &'p mut KvCache,
        pos: usize,
        on_cpu: OnCpu<'p>,
        which: Option<Logits>,
    ) -> Self {
        let timeline = Timeline::start(&model.device);
        let (timings, copy_markers) = (StreamTimings::default(), Vec::new());
        Self { source, ahead: VecDeque::new(), kv, pos, on_cpu, which, timings, copy_markers, timeline }
    }

    /// The rows of the hidden state the head computes: the last token's, or every token's.
    fn head_input(&self, hidden: &mut HiddenState<'_>) -> Result<Tensor> {
        let x = hidden.get()?;
        let len = self.on_cpu.tokens;
        Ok(match self.which {
            Some(Logits::All) => x,
            _ => x.i((.., len - 1..len, ..))?,
        })
    }
}

impl StreamedModel {
    /// Runs `order` through `pass`, giving back the slots read ahead of an error.
    pub(super) fn compute(
        &self,
        order: &[BlockId],
        mut pass: Pass<'_, '_>,
        hidden: HiddenState<'_>,
    ) -> Result<Option<Tensor>> {
        let result = self.compute_blocks(order, &mut pass, hidden);
        for filled in pass.ahead.drain(..) {
            self.pool.release(filled.ticket);
        }
        result
    }

    fn compute_blocks(
        &self,
        order: &[BlockId],
        pass: &mut Pass<'_, '_>,
        mut hidden: HiddenState<'_>,
    ) -> Result<Option<Tensor>> {
        let mut logits = None;
        for &block in order {
            let out = if let Some(weights) = self.resident.get(&block) {
                self.resident_block(block, weights, pass, &mut hidden)?
            } else if let (Some(weights), BlockId::Layer(i)) = (self.cpu_weights(block, pass.on_cpu), block) {
                self.host_layer(i, weights, pass, &mut hidden)?;
                None
            } else {
                self.streamed_block(block, pass, &mut hidden)?
            };
            if block == BlockId::Head {
                logits = out;
            }
        }
        pass.timeline.print(pass.on_cpu.tokens);
        // Device-timed copies: read the events once the pass is queued (waits for them).
        for (start, end) in &pass.copy_markers {
            pass.timings.copy_secs += start.secs_until(end).unwrap_or(0.0);
        }
        let timings = pass.timings;
        let mut total = self.timings.lock().unwrap_or_else(|e| e.into_inner());
        total.copy_secs += timings.copy_secs;
        total.compute_secs += timings.compute_secs;
        total.stall_secs += timings.stall_secs;
        total.host_secs += timings.host_secs;
        total.hop_wait_secs += timings.hop_wait_secs;
        total.passes += 1;
        logits.map(|l: Tensor| l.squeeze(0)).transpose().map_err(StreamError::from)
    }

    /// A resident block; the head's logits for the head.
    fn resident_block(
        &self,
        block: BlockId,
        weights: &BlockWeights,
        pass: &mut Pass<'_, '_>,
        hidden: &mut HiddenState<'_>,
    ) -> Result<Option<Tensor>> {
        if self.reader.overlaps_copies() {
            // The next streamed blocks copy while this resident one computes.
            self.read_ahead(pass.source, &mut pass.ahead, 0);
        }
        let start = Instant::now();
        pass.timeline.begin();
        let pos = pass.pos;
        let mut logits = None;
        match block {
            BlockId::Layer(i) => {
                hidden.device_layer(i, weights, pass.kv, |x, kv| self.device_block(i, weights, x, kv, pos))?
            }
            BlockId::Head => logits = Some(self.family.head(weights, &pass.head_input(hidden)?)?),
            BlockId::Embed => {}
        }
        pass.timeline.end(block, None);
        pass.timings.compute_secs += start.elapsed().as_secs_f64();
        Ok(logits)
    }

    /// A host layer the CPU computes this pass, from host memory.
    fn host_layer(
        &self,
        i: usize,
        weights: &BlockWeights,
        pass: &mut Pass<'_, '_>,
        hidden: &mut HiddenState<'_>,
    ) -> Result<()> {
        // Bring the hidden state to the host first (a copy on the device's stream would
        // otherwise wait behind queued uploads), then queue the uploads of the next
        // streamed blocks (asynchronous copies from page-locked memory): the link works
        // while the CPU computes this layer.
        let hop = Instant::now();
        pass.timeline.begin();
        let x_host = hidden.get()?.to_device(&Device::Cpu)?;
        pass.timings.hop_wait_secs += hop.elapsed().as_secs_f64();
        self.read_ahead(pass.source, &mut pass.ahead, 0);
        let start = Instant::now();
        // A decode step on the fused path: the device's bits ([`crate::cpu::exact`]).
        let exact = self.exact_twin.as_ref().filter(|_| hidden.is_fused());
        let family: &(dyn LayerStream + Sync) = self.family.as_ref();
        let y = host_decode_step(family, exact, i, weights, &x_host, pass.kv.layer_mut(i), pass.pos)?;
        let computed = Instant::now();
        hidden.set(y.to_device(&self.device)?)?;
        pass.timeline.end_host(BlockId::Layer(i), [start - hop, computed - start, computed.elapsed()]);
        pass.timings.host_secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// A block streamed through the pool, piece by piece (the head in row chunks); the
    /// CPU computes its rows of the head meanwhile where the split gives it some. The
    /// head's logits for the head.
    fn streamed_block(
        &self,
        block: BlockId,
        pass: &mut Pass<'_, '_>,
        hidden: &mut HiddenState<'_>,
    ) -> Result<Option<Tensor>> {
        let mut parts = Vec::new();
        // The CPU's rows of the head start as soon as the final hidden state is here,
        // beside the device's chunks.
        let host_head = match (block, self.host_head(pass.on_cpu)) {
            (BlockId::Head, Some(head)) => {
                let exact = self.exact_twin.is_some() && hidden.is_fused();
                Some((head, head.input(&pass.head_input(hidden)?, exact)?))
            }
            _ => None,
        };
        match host_head {
            None => self.stream_pieces(block, pass, hidden, &mut parts)?,
            Some((head, input)) => {
                let host_start = Instant::now();
                let cpu_rows = std::thread::scope(|scope| -> Result<Tensor> {
                    let family = &self.family;
                    let cpu = scope.spawn(move || head.logits(family.as_ref(), input));
                    self.stream_pieces(block, pass, hidden, &mut parts)?;
                    cpu.join()
                        .unwrap_or_else(|_| Err(StreamError::Internal("the CPU's rows of the head panicked".into())))
                })?;
                pass.timings.host_secs += host_start.elapsed().as_secs_f64();
                parts.push(cpu_rows.to_device(&self.device)?);
            }
        }
        Ok((block == BlockId::Head).then(|| Tensor::cat(&parts, D::Minus1)).transpose()?)
    }

    /// Receives and computes each streamed piece of `block`, giving its slot back after;
    /// the head's row chunks go to `parts`.
    fn stream_pieces(
        &self,
        block: BlockId,
        pass: &mut Pass<'_, '_>,
        hidden: &mut HiddenState<'_>,
        parts: &mut Vec<Tensor>,
    ) -> Result<()> {
        let pos = pass.pos;
        for piece in self.pieces(block, pass.on_cpu) {
            let (weights, ticket) =
                self.receive(pass.source, &mut pass.ahead, &piece, &mut pass.timings, &mut pass.copy_markers)?;
            let start = Instant::now();
            if trace() {
                tracing::trace!(target: crate::diagnostics::BLOCKS, "[compute] {piece:?}");
            }
            pass.timeline.begin();
            let out = match block {
                BlockId::Layer(i) if self.host.contains_key(&block) => {
                    hidden.visiting_layer(i, &weights, pass.kv, &self.device, |x, kv| {
                        self.device_block(i, &weights, x, kv, pos)
                    })
                }
                BlockId::Layer(i) => {
                    hidden.device_layer(i, &weights, pass.kv, |x, kv| self.device_block(i, &weights, x, kv, pos))
                }
                BlockId::Head => {
                    pass.head_input(hidden).and_then(|h| self.family.head(&weights, &h)).map(|l| parts.push(l))
                }
                BlockId::Embed => Ok(()),
            };
            pass.timeline.end(block, pass.copy_markers.last().cloned());
            pass.timings.compute_secs += start.elapsed().as_secs_f64();
            // "slot free": nothing to wait for here. A slot buffer is refilled only by a
            // copy that waits for the compute stream's work queued before it (this block's
            // kernels included); memory of a block's own allocations is freed
            // stream-ordered.
            drop(weights);
            self.pool.release(ticket);
            out?;
        }
        Ok(())
    }
}
