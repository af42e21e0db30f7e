//! Which tensors, and so which bytes, make each block of a model.

use crate::StorageType;
use std::fmt;

/// One unit of placement: the embedding, a transformer layer, or the output head
/// (with the final norm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockId {
    /// Token embedding table.
    Embed,
    /// Transformer layer `i`.
    Layer(usize),
    /// Final norm and output projection.
    Head,
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embed => write!(f, "embed"),
            Self::Layer(i) => write!(f, "layer {i}"),
            Self::Head => write!(f, "head"),
        }
    }
}

/// A tensor stored in a weight file: its name, shape and exact byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Name as the file spells it.
    pub name: String,
    /// Shape, outermost dimension first (row-major, as Candle uses it).
    pub shape: Vec<usize>,
    /// Storage type of the elements.
    pub storage: StorageType,
    /// Index of the file holding it (shards of one checkpoint; 0 for single files).
    pub file: usize,
    /// Offset of the first byte in that file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The tensors of every block of a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelLayout {
    /// Blocks in execution order, each with its tensors.
    pub blocks: Vec<(BlockId, Vec<TensorInfo>)>,
}

impl ModelLayout {
    /// Bytes of one block's tensors as stored.
    pub fn block_bytes(&self, id: BlockId) -> u64 {
        self.tensors(id).iter().map(|t| t.len).sum()
    }

    /// The tensors of block `id` (empty if there is no such block).
    pub fn tensors(&self, id: BlockId) -> &[TensorInfo] {
        self.blocks.iter().find(|(b, _)| *b == id).map(|(_, t)| t.as_slice()).unwrap_or(&[])
    }

    /// Bytes of the whole model.
    pub fn total_bytes(&self) -> u64 {
        self.blocks.iter().flat_map(|(_, t)| t).map(|t| t.len).sum()
    }
}
