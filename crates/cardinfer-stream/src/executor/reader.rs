//! Reading a block's weights onto a device: the host → device leg of the pipeline.

use crate::weights::BlockWeights;
use crate::Result;
use cardinfer_core::{BlockId, ModelSpec};
use cardinfer_quant::Checkpoint;
use candle_core::Device;
use std::sync::Arc;

/// Produces the weights of a block on a device. Runs on the prefetch thread.
pub trait BlockReader: Send + Sync {
    /// Loads `block` onto `device`.
    fn read(&self, block: BlockId, device: &Device) -> Result<BlockWeights>;
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
}
