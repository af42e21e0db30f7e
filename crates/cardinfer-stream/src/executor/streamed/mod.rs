//! The streaming executor: resident blocks stay on the device, streamed blocks pass
//! through the bounded pool, filled ahead of use by a prefetch thread.

mod host;
mod pass;

use super::hidden::FusedLayers;
use super::host_head::HostHead;
use super::host_split::HostSplit;
use super::plan::{block_device_bytes, Placement, StreamPlan};
use super::pool::{PoolStats, SlotPool, SlotTicket};
use super::reader::BlockReader;
use crate::cuda::sizes::device_bytes_of;
use crate::device::DeviceMarker;
use crate::model::kv_cache::KvCache;
use crate::model::layer_stream::LayerStream;
use crate::model::text_model::{check_tokens, forward_in_chunks, Logits, TextModel};
use crate::model::weights::head_rows_parts;
use crate::model::weights::BlockWeights;
use crate::{Result, StreamError};
use candle_core::{Device, Tensor};
use cardinfer_core::{BlockId, ModelLayout, ModelSpec};
use host::{host_layers_of, OnCpu};
use pass::Pass;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time split of the streamed run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamTimings {
    /// Seconds the prefetch thread spent reading blocks into slots.
    pub copy_secs: f64,
    /// Seconds the compute thread spent computing.
    pub compute_secs: f64,
    /// Seconds the compute thread waited for a slot to be filled.
    pub stall_secs: f64,
    /// Seconds the CPU spent computing host-placed layers (hybrid decode).
    pub host_secs: f64,
    /// Seconds the host waited, before each host-placed layer, for the hidden state: the
    /// device's queued work up to that layer (earlier blocks' uploads and compute).
    pub hop_wait_secs: f64,
    /// Weight passes run (one per decoded token or prefill chunk).
    pub passes: u64,
}

/// Passes of at most this many tokens compute host-placed layers on the CPU; wider
/// passes (prefill chunks) stream them, since the device is far faster at many tokens.
pub const HOST_COMPUTE_MAX_TOKENS: usize = 4;

/// Where the compute loop gets its streamed blocks from.
enum Source<'a> {
    /// Filled by the prefetch thread.
    Thread(&'a mpsc::Receiver<Filled>),
    /// Read on demand by the compute thread.
    Inline(&'a dyn Fn() -> Option<Filled>),
}

impl Source<'_> {
    fn next(&self) -> Option<Filled> {
        match self {
            Source::Thread(rx) => rx.recv().ok(),
            Source::Inline(read) => read(),
        }
    }
}

/// One streamed block handed from the prefetcher to the compute loop.
struct Filled {
    piece: Piece,
    weights: Result<BlockWeights>,
    ticket: SlotTicket,
    read_time: Duration,
    /// Device-side start and end of the copy, where the device can time it.
    markers: Option<(DeviceMarker, DeviceMarker)>,
}

/// What one slot receives: a whole block, or a row range of the head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    block: BlockId,
    rows: Option<Range<usize>>,
}

/// Reads `piece` into a slot, timing it on the host and, where possible, the device.
fn read_piece(model: &StreamedModel, piece: Piece) -> Filled {
    let bytes = match &piece.rows {
        None => block_device_bytes(&model.layout, piece.block, &model.device),
        Some(rows) => head_rows_bytes(&model.layout, rows, &model.device),
    };
    let ticket = model.pool.acquire(bytes);
    let start = Instant::now();
    let before = DeviceMarker::now(&model.device);
    let weights = match &piece.rows {
        None => model.reader.read(piece.block, &model.device),
        Some(rows) => model.reader.read_head_rows(rows.clone(), &model.device),
    };
    // A copy-stream upload is timed by its own events; an inline one by markers around it.
    let markers = match weights.as_ref().ok().and_then(BlockWeights::upload_span) {
        Some(span) => Some(span),
        None => before.zip(DeviceMarker::now(&model.device)),
    };
    if trace() {
        tracing::trace!(target: crate::diagnostics::BLOCKS, "[read] {piece:?} queued in {:?}", start.elapsed());
    }
    Filled { piece, weights, ticket, read_time: start.elapsed(), markers }
}

/// Device bytes of the head's norm plus output rows `rows`.
fn head_rows_bytes(layout: &ModelLayout, rows: &Range<usize>, device: &Device) -> u64 {
    head_rows_parts(layout.tensors(BlockId::Head), rows).iter().map(|t| device_bytes_of(t, device)).sum()
}

/// A model whose blocks are placed by a [`StreamPlan`]: resident, streamed, or (the
/// embedding) looked up in host memory. Output equals the resident model's: the same
/// block code runs on the same weights, only where the bytes sit changes.
pub struct StreamedModel {
    pinned_bytes: u64,
    host_tier: &'static str,
    prefetch_thread: bool,
    family: Box<dyn LayerStream + Send + Sync>,
    layout: ModelLayout,
    plan: StreamPlan,
    device: Device,
    reader: Arc<dyn BlockReader>,
    host_embed: BlockWeights,
    resident: HashMap<BlockId, BlockWeights>,
    /// Layers placed on the host: their weights in host memory, computed by the CPU
    /// during decode (hybrid); prefill chunks stream them through the pool instead.
    host: HashMap<BlockId, BlockWeights>,
    /// The head's last row chunks, computed by the CPU in decode steps (hybrid plans
    /// with `head_host_chunks`).
    host_head: Option<HostHead>,
    /// Which host layers the CPU computes now (all, or the count the tuner measured
    /// fastest); the others stream like device layers, their caches visiting.
    host_split: Mutex<HostSplit>,
    pool: SlotPool,
    timings: Mutex<StreamTimings>,
    /// The fused decode kernels for the device layers, where they apply.
    fused: FusedLayers,
    /// The decoder whose fused kernels host layers reproduce with the device's bits
    /// (`cpu/exact/`: each layer's RoPE, window, score scale and norms); set while the
    /// fused kernels decode.
    exact_twin: Option<crate::model::family::Decoder>,
}

impl std::fmt::Debug for StreamedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedModel").field("plan", &self.plan).field("device", &self.device).finish()
    }
}

impl StreamedModel {
    /// Builds the model: loads the embedding into host memory and resident blocks onto
    /// `device` (reporting `progress(done, total)`); streamed blocks are read per pass.
    /// `family` computes the blocks: the built-in [`crate::model::family::Decoder`], or a block
    /// type of your own through [`crate::model::block_adapter::BlockAdapter`].
    pub fn new(
        family: impl LayerStream + Send + Sync + 'static,
        layout: ModelLayout,
        plan: StreamPlan,
        device: &Device,
        reader: Arc<dyn BlockReader>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let total = plan.blocks.len();
        let host_embed = reader.read(BlockId::Embed, &Device::Cpu)?;
        progress(1, total);
        let mut resident = HashMap::new();
        let mut host = HashMap::new();
        for (i, (block, placement)) in plan.blocks.iter().enumerate() {
            match placement {
                Placement::Resident => {
                    let weights = reader.read(*block, device)?;
                    weights.wait_ready()?;
                    resident.insert(*block, weights);
                }
                Placement::Host if *block != BlockId::Embed => {
                    host.insert(*block, reader.read(*block, &Device::Cpu)?);
                }
                _ => {}
            }
            progress(i + 1, total);
        }
        let host_head = match plan.head_host_rows() {
            Some(rows) => Some(HostHead::load(reader.as_ref(), rows, family.spec(), device)?),
            None => None,
        };
        let pool = SlotPool::new(plan.slots, plan.slot_bytes);
        let host_split = Mutex::new(HostSplit::new(host_layers_of(&plan, &host), family.spec().num_layers, None));
        Ok(Self {
            pinned_bytes: 0,
            host_tier: "file",
            // See `prefetch_thread`.
            prefetch_thread: device.is_cpu(),
            family: Box::new(family),
            layout,
            plan,
            device: device.clone(),
            reader,
            host_embed,
            resident,
            host,
            host_head,
            host_split,
            pool,
            timings: Mutex::new(StreamTimings::default()),
            fused: FusedLayers::off("not prepared: a custom block family"),
            exact_twin: None,
        })
    }

    /// Chooses how single tokens are decoded for a model of the built-in `decoder`: the
    /// fused kernels layer by layer on the device where `path` asks for them
    /// and the model suits them, the plain blocks otherwise. Layers on the CPU (hybrid)
    /// then compute decode steps with the device's bits (`cpu/exact/`) where the
    /// weights' types allow, the plain block otherwise.
    pub fn prepare_decode_path(
        &mut self,
        path: crate::executor::fused::DecodePath,
        decoder: &crate::model::family::Decoder,
    ) {
        self.fused = FusedLayers::new(path, decoder, &self.device, self.plan.kv_on_host);
        self.exact_twin = self.fused.capacity().map(|_| decoder.clone());
    }

    /// How single tokens are decoded on the device: `fused (layer by layer)` or
    /// `plain (reason)`.
    pub fn decode_path(&self) -> &str {
        self.fused.status()
    }

    /// Records where the reader keeps streamed blocks (`pinned`, `disk`, `file`) and how
    /// many bytes it holds page-locked (metrics).
    pub fn set_host_tier(&mut self, tier: &'static str, pinned_bytes: u64) {
        self.host_tier = tier;
        self.pinned_bytes = pinned_bytes;
    }

    /// Where the reader keeps streamed blocks (see [`StreamedModel::set_host_tier`]).
    pub fn host_tier(&self) -> &'static str {
        self.host_tier
    }

    /// Bytes of host memory page-locked for copies.
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned_bytes
    }

    /// The placement this model runs with.
    pub fn plan(&self) -> &StreamPlan {
        &self.plan
    }

    /// Blocks and their tensors' byte ranges.
    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    /// Pool counters (slots in use, bytes, peaks, totals).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Copy / compute / stall time so far.
    pub fn timings(&self) -> StreamTimings {
        *self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Device bytes by this executor's own accounting: resident blocks, the pool's peak,
    /// the KV cache's reservation, the workspace and the measured runtime overhead.
    pub fn accounted_peak_bytes(&self) -> u64 {
        self.plan.resident_bytes
            + self.pool.stats().peak_bytes
            + self.plan.kv_bytes
            + self.plan.workspace_bytes
            + self.plan.runtime_bytes
    }

    /// Bytes streamed per weight pass (per decoded token).
    pub fn bytes_streamed_per_pass(&self) -> u64 {
        self.plan.streamed_bytes_per_pass()
    }

    /// One weight pass over `tokens` (one chunk); the head runs only if `which` is set.
    fn pass(&self, tokens: &[u32], kv: &mut KvCache, which: Option<Logits>) -> Result<Option<Tensor>> {
        super::timeline::pass_entered();
        let pos = kv.len();
        let on_cpu = self.lock_split().begin_pass(tokens.len(), pos, Instant::now());
        let ids = Tensor::new(tokens, &Device::Cpu)?.unsqueeze(0)?;
        let x = self.family.embed(&self.host_embed, &ids)?.to_device(&self.device)?;
        // The fused kernels hold the caches of the layers planned on the device; a host
        // layer streamed here (its cache in host memory) visits the device.
        let on_device = |i: usize| !self.host.contains_key(&BlockId::Layer(i));
        let hidden = self.fused.start(x, tokens.len(), kv, &on_device)?;
        // Where the device decodes with the fused kernels, the CPU computes host layers
        // only in their decode steps, with the device's bits (`cpu/exact/`); a pass
        // the device runs with plain blocks (a prompt chunk, a cache without buffers yet)
        // streams them, as the CPU's Candle ops would round differently.
        let allowed = self.exact_twin.is_none() || hidden.is_fused();
        let head_rows = match which {
            Some(Logits::All) => tokens.len(),
            _ => 1,
        };
        let on_cpu = OnCpu { layers: &on_cpu, tokens: tokens.len(), allowed, head_rows };
        let order: Vec<BlockId> = self
            .plan
            .blocks
            .iter()
            .map(|(b, _)| *b)
            .filter(|b| *b != BlockId::Embed && (which.is_some() || *b != BlockId::Head))
            .collect();
        let streamed: Vec<Piece> = order
            .iter()
            .copied()
            .filter(|b| !self.resident.contains_key(b) && self.cpu_weights(*b, on_cpu).is_none())
            .flat_map(|block| self.pieces(block, on_cpu))
            .collect();
        self.reader.prepare(&streamed.iter().map(|p| (p.block, p.rows.clone())).collect::<Vec<_>>());
        if !self.prefetch_thread() {
            // Inline reads: each streamed block is read into its slot just before use.
            let reads = std::cell::RefCell::new(streamed.into_iter());
            let next = || -> Option<Filled> {
                let piece = reads.borrow_mut().next()?;
                Some(read_piece(self, piece))
            };
            let source = Source::Inline(&next);
            return self.compute(&order, Pass::new(self, &source, kv, pos, on_cpu, which), hidden);
        }
        let abort = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<Filled>();
        std::thread::scope(|scope| {
            let abort = &abort;
            scope.spawn(move || {
                crate::device::bind_thread(&self.device);
                for piece in streamed {
                    if abort.load(Ordering::Acquire) {
                        break;
                    }
                    // "slot free": `read_piece` waits for one before reading into it.
                    if tx.send(read_piece(self, piece)).is_err() {
                        break;
                    }
                }
            });
            let source = Source::Thread(&rx);
            let result = self.compute(&order, Pass::new(self, &source, kv, pos, on_cpu, which), hidden);
            if result.is_err() {
                abort.store(true, Ordering::Release);
            }
            // Give back whatever the prefetcher still filled, so it can finish.
            for filled in rx.iter() {
                self.pool.release(filled.ticket);
            }
            result
        })
    }

    /// The slot loads that make up streamed `block`: the block whole, or the head in the
    /// plan's row chunks, less those the CPU computes in this pass.
    fn pieces(&self, block: BlockId, on_cpu: OnCpu<'_>) -> Vec<Piece> {
        if block == BlockId::Head && !self.plan.head_chunks.is_empty() {
            let cpu_rows = self.host_head(on_cpu).map(|h| h.rows.clone());
            let streamed = |r: &&Range<usize>| cpu_rows.as_ref().is_none_or(|c| r.start < c.start);
            self.plan.head_chunks.iter().filter(streamed).map(|r| Piece { block, rows: Some(r.clone()) }).collect()
        } else {
            vec![Piece { block, rows: None }]
        }
    }

    /// Takes the next filled slot, which must hold `piece`; returns its weights and ticket.
    fn receive(
        &self,
        source: &Source<'_>,
        ahead: &mut VecDeque<Filled>,
        piece: &Piece,
        timings: &mut StreamTimings,
        markers: &mut Vec<(DeviceMarker, DeviceMarker)>,
    ) -> Result<(BlockWeights, SlotTicket)> {
        // "slot ready": the weights arrive only once fully read (or, on a copy stream,
        // the compute stream waits for the copy's event before using them).
        let wait = Instant::now();
        let filled = ahead.pop_front().or_else(|| source.next()).ok_or_else(|| StreamError::InvalidParameter {
            name: "prefetch",
            reason: format!("the prefetcher stopped before {}", piece.block),
        })?;
        if self.reader.overlaps_copies() {
            self.read_ahead(source, ahead, 1);
        }
        timings.stall_secs += wait.elapsed().as_secs_f64();
        match filled.markers {
            Some(m) => markers.push(m),
            None => timings.copy_secs += filled.read_time.as_secs_f64(),
        }
        debug_assert_eq!(&filled.piece, piece);
        match filled.weights.and_then(|w| w.wait_ready().map(|_| w)) {
            Ok(w) => Ok((w, filled.ticket)),
            Err(e) => {
                self.pool.release(filled.ticket);
                Err(e)
            }
        }
    }

    /// Inline reads only: reads the next streamed blocks into free slots, so that at most
    /// `slots` are held counting the `held` one(s) in use. With a copy stream (or while the
    /// CPU computes a host layer) those copies run in the background; `acquire` never waits
    /// here, since this thread holds every ticket taken.
    fn read_ahead(&self, source: &Source<'_>, ahead: &mut VecDeque<Filled>, held: usize) {
        if let Source::Inline(_) = source {
            while ahead.len() + held < self.plan.slots {
                match source.next() {
                    Some(next) => ahead.push_back(next),
                    None => break,
                }
            }
        }
    }

    /// Whether streamed blocks are read on a background thread. On the CPU a thread
    /// overlaps file reads with compute. On CUDA, reads only queue asynchronous copies
    /// (on the copy stream), and all device work is issued from the compute thread:
    /// Candle's device stream is the per-thread default stream, so work queued from
    /// another thread would land on a different stream.
    fn prefetch_thread(&self) -> bool {
        self.prefetch_thread
    }

    /// Forces reads on a background thread (`true`) or inline (`false`).
    pub fn set_prefetch_thread(&mut self, on: bool) {
        self.prefetch_thread = on;
    }
}

impl TextModel for StreamedModel {
    fn spec(&self) -> &ModelSpec {
        self.family.spec()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    /// A cache with buffers preallocated for the whole context when the fused kernels
    /// decode (they write keys and values in place).
    fn new_cache(&self) -> KvCache {
        match self.fused.capacity() {
            Some(capacity) => KvCache::with_capacity(self.spec().num_layers, capacity, self.plan.kv_type),
            None => KvCache::new(self.spec().num_layers, self.plan.kv_type),
        }
    }

    /// Runs the prompt in chunks of `plan.prefill_chunk` tokens, one weight pass each.
    fn forward(&self, tokens: &[u32], kv: &mut KvCache, which: Logits) -> Result<Tensor> {
        check_tokens(self.spec(), tokens, kv.len())?;
        forward_in_chunks(tokens, self.plan.prefill_chunk, which, |piece, need| self.pass(piece, kv, need))
    }
}

/// Whether every block read and computed is reported (for diagnosing stalls).
fn trace() -> bool {
    tracing::enabled!(target: crate::diagnostics::BLOCKS, tracing::Level::TRACE)
}
