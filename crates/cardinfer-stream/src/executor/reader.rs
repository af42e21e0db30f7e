//! Reading a block's weights onto a device: the host → device leg of the pipeline.

use crate::device::PinnedBuffer;
use crate::weights::BlockWeights;
use crate::Result;
use candle_core::Device;
use cardinfer_core::ModelLayout;
use cardinfer_core::{BlockId, ModelSpec};
use cardinfer_quant::Checkpoint;
use std::collections::HashMap;
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
        BlockWeights::load_head_rows(&self.ckpt, &self.spec, rows, device, &|info| self.ckpt.tensor_bytes(info))
    }
}

/// Reads streamed blocks from a page-locked host copy (the host tier): copies to a CUDA
/// device run by DMA at link speed instead of through pageable memory.
pub struct PinnedReader {
    ckpt: Arc<Checkpoint>,
    spec: ModelSpec,
    buffer: PinnedBuffer,
    offsets: HashMap<String, usize>,
}

impl PinnedReader {
    /// Copies the tensors of `blocks` into one page-locked buffer for `device`. `None`
    /// where the device has no page-locked memory (CPU) or the driver refuses.
    pub fn new(
        ckpt: Arc<Checkpoint>,
        spec: ModelSpec,
        layout: &ModelLayout,
        blocks: &[BlockId],
        device: &Device,
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
            dst[at..at + bytes.len()].copy_from_slice(bytes);
            offsets.insert(t.name.clone(), at);
            at += bytes.len();
        }
        Some(Self { ckpt, spec, buffer, offsets })
    }

    /// Bytes held in page-locked memory.
    pub fn pinned_bytes(&self) -> u64 {
        self.buffer.as_slice().len() as u64
    }
}

impl PinnedReader {
    /// The bytes of `info`: from the page-locked copy where it holds them.
    fn bytes(&self, info: &cardinfer_core::TensorInfo) -> &[u8] {
        match self.offsets.get(&info.name) {
            Some(&at) => &self.buffer.as_slice()[at..at + info.len as usize],
            None => self.ckpt.tensor_bytes(info),
        }
    }
}

impl BlockReader for PinnedReader {
    fn read(&self, block: BlockId, device: &Device) -> Result<BlockWeights> {
        BlockWeights::load_with(&self.ckpt, &self.spec, block, device, &|info| self.bytes(info))
    }

    fn read_head_rows(&self, rows: std::ops::Range<usize>, device: &Device) -> Result<BlockWeights> {
        BlockWeights::load_head_rows(&self.ckpt, &self.spec, rows, device, &|info| self.bytes(info))
    }
}
