//! Reading a block's weights onto a device: the host → device leg of the pipeline.

use crate::cuda::copy_stream::CopyStream;
use crate::cuda::slots::SlotArena;
use crate::device::PinnedBuffer;
use crate::model::weights::BlockWeights;
use crate::model::weights::Upload;
use crate::Result;
use candle_core::Device;
use cardinfer_core::ModelLayout;
use cardinfer_core::{BlockId, ModelSpec};
use cardinfer_quant::Checkpoint;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Produces the weights of a block on a device. Runs on the prefetch thread.
pub trait BlockReader: Send + Sync {
    /// Loads `block` onto `device`.
    fn read(&self, block: BlockId, device: &Device) -> Result<BlockWeights>;

    /// Loads the final norm and output rows `rows` of the head (a chunk of a head larger
    /// than a slot). Readers that cannot split the head return an error.
    fn read_head_rows(&self, rows: std::ops::Range<usize>, device: &Device) -> Result<BlockWeights> {
        let _ = device;
        Err(crate::StreamError::InvalidParameter { name: "reader", reason: format!("cannot read head rows {rows:?}") })
    }

    /// Announces the pieces (a block, or rows of the head) the next pass will read, in
    /// order; readers that stage ahead (the disk tier) start on them.
    fn prepare(&self, pieces: &[(BlockId, Option<std::ops::Range<usize>>)]) {
        let _ = pieces;
    }

    /// Whether reads return before their copies finish (a copy stream), so reading the
    /// next blocks ahead overlaps them with compute. Readers that copy on the compute
    /// stream gain nothing from reading ahead, and would only hold more memory.
    fn overlaps_copies(&self) -> bool {
        false
    }
}

/// Reads blocks from a mapped checkpoint file (the file/host tier).
#[derive(Debug, Clone)]
pub struct CheckpointReader {
    ckpt: Arc<Checkpoint>,
    spec: ModelSpec,
}

impl CheckpointReader {
    /// A reader over `ckpt`, whose blocks follow `spec`.
    pub fn new(ckpt: Arc<Checkpoint>, spec: ModelSpec) -> Self {
        Self { ckpt, spec }
    }
}

impl BlockReader for CheckpointReader {
    fn read(&self, block: BlockId, device: &Device) -> Result<BlockWeights> {
        BlockWeights::load(&self.ckpt, &self.spec, block, device)
    }

    fn read_head_rows(&self, rows: std::ops::Range<usize>, device: &Device) -> Result<BlockWeights> {
        BlockWeights::load_head_rows(&self.ckpt, &self.spec, rows, device, &|info| self.ckpt.tensor_bytes(info), None)
    }
}

/// Reads streamed blocks from a page-locked host copy (the host tier): copies to a CUDA
/// device run by DMA at link speed instead of through pageable memory, on a copy stream
/// of their own where the device has one, so they overlap compute.
pub struct PinnedReader {
    ckpt: Arc<Checkpoint>,
    spec: ModelSpec,
    buffer: PinnedBuffer,
    /// Tensor name → (offset in the buffer, offset in the file).
    offsets: HashMap<String, (usize, u64)>,
    pinned_blocks: HashSet<BlockId>,
    uploads: Uploader,
}

/// How a reader's uploads reach an accelerator: on a copy stream (where enabled and the
/// device has one), into slot buffers used in place (where allocated).
pub struct Uploader {
    copy: Option<CopyStream>,
    arena: Option<SlotArena>,
}

impl Uploader {
    /// A copy stream for `device` when `copy_stream` (else uploads are issued on the
    /// compute stream, to compare); no slot buffers yet.
    pub fn new(device: &Device, copy_stream: bool) -> Self {
        Self { copy: if copy_stream { CopyStream::new(device) } else { None }, arena: None }
    }

    /// Slot buffers allocated once (`slots` of `slot_bytes`, kernels' scratch for inputs
    /// up to `max_cols` × `max_rows`); the device bytes allocated, or `None` where there
    /// is no copy stream or the device has no in-place kernels.
    pub fn allocate_slots(
        &mut self,
        device: &Device,
        slots: usize,
        slot_bytes: u64,
        max_cols: usize,
        max_rows: usize,
    ) -> Option<u64> {
        self.copy.as_ref()?;
        let arena = SlotArena::new(device, slots, slot_bytes, max_cols, max_rows)?;
        let bytes = arena.device_bytes();
        self.arena = Some(arena);
        Some(bytes)
    }

    /// The upload of one block to `device`, with the next slot; `None` on a CPU device
    /// or without a copy stream (weights are then loaded on the compute stream).
    pub fn upload_for(&self, device: &Device) -> Option<Upload<'_>> {
        let copy = self.copy.as_ref().filter(|_| !device.is_cpu())?;
        Some(Upload { copy, slot: self.arena.as_ref().map(SlotArena::next_slot) })
    }

    /// Whether uploads overlap compute (a copy stream).
    pub fn overlaps(&self) -> bool {
        self.copy.is_some()
    }
}

impl PinnedReader {
    /// Copies the tensors of `blocks` into one page-locked buffer for `device`, to be
    /// uploaded through `uploads`. `None` where the device has no page-locked memory (CPU)
    /// or the driver refuses.
    pub fn new(
        ckpt: Arc<Checkpoint>,
        spec: ModelSpec,
        layout: &ModelLayout,
        blocks: &[BlockId],
        device: &Device,
        uploads: Uploader,
    ) -> Option<Self> {
        let tensors: Vec<_> = blocks.iter().flat_map(|b| layout.tensors(*b)).collect();
        let total: u64 = tensors.iter().map(|t| t.len).sum();
        let mut buffer = PinnedBuffer::alloc(device, usize::try_from(total).ok()?)?;
        let mut offsets = HashMap::new();
        let mut at = 0usize;
        let dst = buffer.as_mut_slice();
        for t in tensors {
            if offsets.contains_key(&t.name) {
                continue;
            }
            let bytes = ckpt.tensor_bytes(t);
            parallel_copy(&mut dst[at..at + bytes.len()], bytes);
            offsets.insert(t.name.clone(), (at, t.offset));
            at += bytes.len();
        }
        let pinned_blocks = blocks.iter().copied().collect();
        Some(Self { ckpt, spec, buffer, offsets, pinned_blocks, uploads })
    }

    /// The upload of `block` to `device`: through the copy stream only for page-locked
    /// blocks going to the accelerator (host-computed layers are read onto the CPU).
    fn upload_for(&self, block: BlockId, device: &Device) -> Option<Upload<'_>> {
        self.uploads.upload_for(device).filter(|_| self.pinned_blocks.contains(&block))
    }

    /// Bytes held in page-locked memory.
    pub fn pinned_bytes(&self) -> u64 {
        self.buffer.as_slice().len() as u64
    }
}

impl PinnedReader {
    /// The bytes of `info` (a tensor, or a part of one such as head rows): from the
    /// page-locked copy where it holds them.
    fn bytes(&self, info: &cardinfer_core::TensorInfo) -> &[u8] {
        match self.offsets.get(&info.name) {
            Some(&(at, file_offset)) => {
                let start = at + (info.offset - file_offset) as usize;
                &self.buffer.as_slice()[start..start + info.len as usize]
            }
            None => self.ckpt.tensor_bytes(info),
        }
    }
}

impl BlockReader for PinnedReader {
    fn overlaps_copies(&self) -> bool {
        self.uploads.overlaps()
    }

    fn read(&self, block: BlockId, device: &Device) -> Result<BlockWeights> {
        let mut upload = self.upload_for(block, device);
        BlockWeights::load_with(&self.ckpt, &self.spec, block, device, &|info| self.bytes(info), upload.as_mut())
    }

    fn read_head_rows(&self, rows: std::ops::Range<usize>, device: &Device) -> Result<BlockWeights> {
        let mut upload = self.upload_for(BlockId::Head, device);
        BlockWeights::load_head_rows(&self.ckpt, &self.spec, rows, device, &|info| self.bytes(info), upload.as_mut())
    }
}

/// `dst.copy_from_slice(src)`, split over threads for large copies: one thread reads a
/// file's pages from the page cache at a fraction of the link's speed.
pub(crate) fn parallel_copy(dst: &mut [u8], src: &[u8]) {
    const PIECE: usize = 8 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if src.len() < 2 * PIECE || threads < 2 {
        dst.copy_from_slice(src);
        return;
    }
    let chunk = src.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
            scope.spawn(move || d.copy_from_slice(s));
        }
    });
}
