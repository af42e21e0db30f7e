//! The disk tier: when host memory cannot hold every streamed block page-locked, blocks
//! are read on demand from the mapped file (page cache or disk) into a bounded ring of
//! staging buffers by a background thread, and uploaded from there — on CUDA from
//! page-locked buffers on the copy stream, so the file read of the next block, the upload
//! of this one and the compute of the previous one all overlap.
//!
//! Protocol: at the start of a pass the executor announces the pieces it will read
//! ([`BlockReader::prepare`]); the staging thread fills free buffers in that order. A
//! read takes the staged buffer of its piece, queues the upload, and hands the buffer back
//! with the upload's end marker; the thread waits for that marker before writing the
//! buffer again. A pass that ends early (an error) leaves staged pieces behind: the next
//! announcement starts a new generation and older pieces are dropped unread.

use super::reader::{parallel_copy, BlockReader, Uploader};
use crate::device::{DeviceMarker, PinnedBuffer};
use crate::model::weights::{head_rows_parts, BlockWeights};
use crate::{Result, StreamError};
use candle_core::Device;
use cardinfer_core::{BlockId, ModelLayout, ModelSpec, TensorInfo};
use cardinfer_quant::Checkpoint;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

/// One slot load: a block, or rows of the head.
type PieceKey = (BlockId, Option<Range<usize>>);

/// A staging buffer: page-locked on CUDA, plain memory elsewhere.
enum Buffer {
    Pinned(PinnedBuffer),
    Plain(Vec<u8>),
}

/// The ring's memory. A buffer is written only by the staging thread while it holds it,
/// and read only by the reader between receiving it staged and handing it back (and by
/// the copy engine until the marker handed back with it), so accesses never overlap.
struct Ring {
    buffers: Vec<(usize, usize)>,
    _owners: Vec<Buffer>,
}

// SAFETY: see the access protocol above; the pointers stay valid while the ring lives.
unsafe impl Send for Ring {}
// SAFETY: the same protocol: a buffer is accessed by one side at a time.
unsafe impl Sync for Ring {}

impl Ring {
    fn new(device: &Device, count: usize, bytes: usize) -> Self {
        let mut owners: Vec<Buffer> = (0..count)
            .map(|_| match PinnedBuffer::alloc(device, bytes) {
                Some(p) => Buffer::Pinned(p),
                None => Buffer::Plain(vec![0u8; bytes]),
            })
            .collect();
        let buffers = owners
            .iter_mut()
            .map(|b| match b {
                Buffer::Pinned(p) => (p.as_mut_slice().as_mut_ptr() as usize, bytes),
                Buffer::Plain(v) => (v.as_mut_ptr() as usize, bytes),
            })
            .collect();
        Self { buffers, _owners: owners }
    }

    /// # Safety
    /// The caller holds buffer `i` under the protocol (module docs).
    unsafe fn slice(&self, i: usize) -> &[u8] {
        let (ptr, len) = self.buffers[i];
        std::slice::from_raw_parts(ptr as *const u8, len)
    }

    /// # Safety
    /// As [`Ring::slice`], and nothing else reads buffer `i` meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, i: usize) -> &mut [u8] {
        let (ptr, len) = self.buffers[i];
        std::slice::from_raw_parts_mut(ptr as *mut u8, len)
    }
}

/// A request to the staging thread.
struct Job {
    generation: u64,
    piece: PieceKey,
    tensors: Vec<TensorInfo>,
}

/// A staged piece: which buffer holds it, and where each tensor (or part) sits in it.
struct Staged {
    generation: u64,
    piece: PieceKey,
    buffer: usize,
    parts: std::result::Result<Vec<(TensorInfo, usize)>, String>,
}

/// Reads streamed blocks from the file through a bounded ring of staging buffers.
pub struct StagedReader {
    ckpt: Arc<Checkpoint>,
    spec: ModelSpec,
    layout: ModelLayout,
    streamed: std::collections::HashSet<BlockId>,
    ring: Arc<Ring>,
    uploads: Uploader,
    generation: Arc<AtomicU64>,
    pending: Mutex<VecDeque<PieceKey>>,
    jobs: Mutex<mpsc::Sender<Job>>,
    staged: Mutex<mpsc::Receiver<Staged>>,
    releases: Mutex<mpsc::Sender<(usize, Option<DeviceMarker>)>>,
    held: Arc<AtomicUsize>,
    peak_held: Arc<AtomicUsize>,
}

impl StagedReader {
    /// A reader for `blocks` of `ckpt` with a ring of `buffers` staging buffers, each large
    /// enough for the largest of them; its thread stages for `device`, and reads upload
    /// through `uploads`.
    pub fn new(
        ckpt: Arc<Checkpoint>,
        spec: ModelSpec,
        layout: &ModelLayout,
        blocks: &[BlockId],
        device: &Device,
        buffers: usize,
        uploads: Uploader,
    ) -> Self {
        let bytes = blocks
            .iter()
            .map(|b| layout.tensors(*b).iter().map(|t| align(t.len as usize)).sum::<usize>())
            .max()
            .unwrap_or(0)
            .max(1);
        let ring = Arc::new(Ring::new(device, buffers.max(1), bytes));
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (staged_tx, staged) = mpsc::channel::<Staged>();
        let (releases, release_rx) = mpsc::channel::<(usize, Option<DeviceMarker>)>();
        let generation = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicUsize::new(0));
        let peak_held = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            ckpt: ckpt.clone(),
            ring: ring.clone(),
            generation: generation.clone(),
            free: (0..buffers.max(1)).collect(),
            releases: release_rx,
            staged: staged_tx,
            held: held.clone(),
            peak_held: peak_held.clone(),
            device: device.clone(),
        };
        std::thread::spawn(move || worker.run(job_rx));
        Self {
            ckpt,
            spec,
            layout: layout.clone(),
            streamed: blocks.iter().copied().collect(),
            ring,
            uploads,
            generation,
            pending: Mutex::new(VecDeque::new()),
            jobs: Mutex::new(jobs),
            staged: Mutex::new(staged),
            releases: Mutex::new(releases),
            held,
            peak_held,
        }
    }

    /// Bytes of the staging ring (page-locked on CUDA).
    pub fn ring_bytes(&self) -> u64 {
        self.ring.buffers.iter().map(|(_, len)| *len as u64).sum()
    }

    /// Most staging buffers held by staged-but-unread pieces at once (never above the ring).
    pub fn peak_buffers_held(&self) -> usize {
        self.peak_held.load(Ordering::SeqCst)
    }

    /// The tensors (or parts) piece `piece` stages.
    fn tensors_of(&self, piece: &PieceKey) -> Vec<TensorInfo> {
        let tensors = self.layout.tensors(piece.0);
        match &piece.1 {
            None => tensors.to_vec(),
            Some(rows) => head_rows_parts(tensors, rows),
        }
    }

    fn request(&self, generation: u64, piece: PieceKey) -> Result<()> {
        let tensors = self.tensors_of(&piece);
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        jobs.send(Job { generation, piece, tensors }).map_err(|_| stopped())
    }

    fn release(&self, buffer: usize, after: Option<DeviceMarker>) {
        self.held.fetch_sub(1, Ordering::SeqCst);
        let releases = self.releases.lock().unwrap_or_else(|e| e.into_inner());
        let _ = releases.send((buffer, after));
    }

    /// Waits for `piece` to be staged (requesting it first if it was not announced) and
    /// returns its buffer and parts.
    fn take(&self, piece: &PieceKey) -> Result<(usize, Vec<(TensorInfo, usize)>)> {
        let announced = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if pending.front() == Some(piece) {
                pending.pop_front();
                true
            } else {
                pending.clear();
                false
            }
        };
        if !announced {
            let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
            self.request(generation, piece.clone())?;
        }
        let staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let item = staged.recv().map_err(|_| stopped())?;
            if item.generation != self.generation.load(Ordering::SeqCst) || &item.piece != piece {
                self.release(item.buffer, None);
                continue;
            }
            return match item.parts {
                Ok(parts) => Ok((item.buffer, parts)),
                Err(reason) => {
                    self.release(item.buffer, None);
                    Err(StreamError::InvalidParameter { name: "disk tier", reason })
                }
            };
        }
    }

    /// Reads `piece` through the ring onto `device`.
    fn load(&self, piece: PieceKey, device: &Device) -> Result<BlockWeights> {
        let (buffer, parts) = self.take(&piece)?;
        let index: HashMap<(&str, u64), usize> =
            parts.iter().map(|(t, at)| ((t.name.as_str(), t.offset), *at)).collect();
        // SAFETY: this thread holds `buffer` until `release` below.
        let bytes = unsafe { self.ring.slice(buffer) };
        let bytes_of = |info: &TensorInfo| -> &[u8] {
            match index.get(&(info.name.as_str(), info.offset)) {
                Some(&at) => &bytes[at..at + info.len as usize],
                None => self.ckpt.tensor_bytes(info),
            }
        };
        let mut upload = self.uploads.upload_for(device);
        let weights = match &piece.1 {
            None => BlockWeights::load_with(&self.ckpt, &self.spec, piece.0, device, &bytes_of, upload.as_mut()),
            Some(rows) => {
                BlockWeights::load_head_rows(&self.ckpt, &self.spec, rows.clone(), device, &bytes_of, upload.as_mut())
            }
        };
        // Uploads from the buffer may still be running: the thread waits for their end.
        let after = weights.as_ref().ok().and_then(BlockWeights::upload_span).map(|(_, end)| end);
        self.release(buffer, after);
        weights
    }
}

fn stopped() -> StreamError {
    StreamError::InvalidParameter { name: "disk tier", reason: "the staging thread stopped".into() }
}

fn align(bytes: usize) -> usize {
    bytes.div_ceil(256) * 256
}

impl BlockReader for StagedReader {
    fn read(&self, block: BlockId, device: &Device) -> Result<BlockWeights> {
        // Blocks loaded once (the embedding, resident blocks) come straight from the file.
        if !self.streamed.contains(&block) {
            return BlockWeights::load(&self.ckpt, &self.spec, block, device);
        }
        self.load((block, None), device)
    }

    fn read_head_rows(&self, rows: Range<usize>, device: &Device) -> Result<BlockWeights> {
        self.load((BlockId::Head, Some(rows)), device)
    }

    fn prepare(&self, pieces: &[(BlockId, Option<Range<usize>>)]) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = pieces.iter().cloned().collect();
        for piece in pieces {
            if self.request(generation, piece.clone()).is_err() {
                break;
            }
        }
    }

    fn overlaps_copies(&self) -> bool {
        self.uploads.overlaps()
    }
}

/// The staging thread's state.
struct Worker {
    ckpt: Arc<Checkpoint>,
    ring: Arc<Ring>,
    generation: Arc<AtomicU64>,
    free: VecDeque<usize>,
    releases: mpsc::Receiver<(usize, Option<DeviceMarker>)>,
    staged: mpsc::Sender<Staged>,
    held: Arc<AtomicUsize>,
    peak_held: Arc<AtomicUsize>,
    device: Device,
}

impl Worker {
    fn run(mut self, jobs: mpsc::Receiver<Job>) {
        crate::device::bind_thread(&self.device);
        for job in jobs {
            if job.generation < self.generation.load(Ordering::SeqCst) {
                continue;
            }
            let Some(buffer) = self.free_buffer() else { return };
            let parts = self.stage(buffer, &job.tensors);
            let now = self.held.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak_held.fetch_max(now, Ordering::SeqCst);
            let item = Staged { generation: job.generation, piece: job.piece, buffer, parts };
            if self.staged.send(item).is_err() {
                return;
            }
        }
    }

    /// A buffer no one uses: waits for the reader to hand one back, and for its upload.
    fn free_buffer(&mut self) -> Option<usize> {
        loop {
            while let Ok(released) = self.releases.try_recv() {
                self.reclaim(released);
            }
            if let Some(buffer) = self.free.pop_front() {
                return Some(buffer);
            }
            let released = self.releases.recv().ok()?;
            self.reclaim(released);
        }
    }

    fn reclaim(&mut self, (buffer, after): (usize, Option<DeviceMarker>)) {
        if let Some(marker) = after {
            marker.wait_host();
        }
        self.free.push_back(buffer);
    }

    /// Copies `tensors` from the file into `buffer`, each at a 256-byte aligned offset.
    fn stage(&self, buffer: usize, tensors: &[TensorInfo]) -> std::result::Result<Vec<(TensorInfo, usize)>, String> {
        // SAFETY: this thread holds `buffer` (taken from the free list).
        let dst = unsafe { self.ring.slice_mut(buffer) };
        let mut parts = Vec::with_capacity(tensors.len());
        let mut at = 0;
        for t in tensors {
            let src = self.ckpt.tensor_bytes(t);
            if at + src.len() > dst.len() {
                return Err(format!("`{}` does not fit a staging buffer of {} bytes", t.name, dst.len()));
            }
            parallel_copy(&mut dst[at..at + src.len()], src);
            parts.push((t.clone(), at));
            at = align(at + src.len());
        }
        Ok(parts)
    }
}
