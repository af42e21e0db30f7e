//! One mixture-of-experts layer's routed experts in host memory: every expert's gate, up
//! and down matrices copied out of the file into one buffer — page-locked on CUDA, so the
//! copy engine can upload an expert into the device's expert cache
//! ([`crate::executor::expert_cache`]) while the CPU computes others from the same bytes.
//! Used where every expert matrix is block-quantized (the CPU's kernels read the blocks
//! as stored); float experts stay Candle tensors in host memory.

use crate::cpu::matvec::HostMatrix;
use crate::device::PinnedBuffer;
use crate::executor::expert_cache::ExpertCache;
use crate::model::names::{ExpertProj, Role};
use crate::{Result, StreamError};
use candle_core::Device;
use cardinfer_core::{BlockId, TensorInfo};
use cardinfer_quant::candle::ggml_dtype;
use std::sync::Arc;

/// Alignment of each matrix in the buffer: a block type's alignment, and the copy engine's
/// preferred one.
const ALIGN: usize = 256;

/// The buffer: page-locked where the driver gives it, else plain memory (8-byte aligned).
enum Buffer {
    Pinned(PinnedBuffer),
    Plain(Vec<u64>),
}

impl Buffer {
    fn alloc(device: &Device, len: usize) -> Self {
        match PinnedBuffer::alloc(device, len) {
            Some(p) => Buffer::Pinned(p),
            None => Buffer::Plain(vec![0u64; len.div_ceil(8)]),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Pinned(p) => p.as_slice(),
            // SAFETY: a `u64` slice viewed as its bytes.
            Buffer::Plain(v) => unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 8) },
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Buffer::Pinned(p) => p.as_mut_slice(),
            // SAFETY: as above, exclusively borrowed.
            Buffer::Plain(v) => unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, v.len() * 8) },
        }
    }
}

/// The routed experts of one layer, in host memory.
pub(crate) struct HostExperts {
    block: BlockId,
    buffer: Buffer,
    /// Per expert, per projection (gate, up, down): the matrix's offset in the buffer and
    /// its tensor (name, storage, shape, length; the offset is the file's).
    matrices: Vec<[(usize, TensorInfo); 3]>,
    /// Set once: at load, or once the loader has measured what the device has left.
    cache: std::sync::OnceLock<Arc<ExpertCache>>,
}

impl std::fmt::Debug for HostExperts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostExperts({}, {} experts)", self.block, self.matrices.len())
    }
}

impl HostExperts {
    /// Copies the expert matrices `infos` (per expert: gate, up, down) of `block` out of
    /// the file (`bytes_of`) into one buffer, page-locked for `device` where it can be.
    /// `None` when a matrix is not block-quantized.
    pub fn load<'a>(
        block: BlockId,
        infos: Vec<[TensorInfo; 3]>,
        bytes_of: &dyn Fn(&TensorInfo) -> &'a [u8],
        device: &Device,
        cache: Option<Arc<ExpertCache>>,
    ) -> Result<Option<Self>> {
        if infos.iter().flatten().any(|t| !t.storage.is_quantized() || t.shape.len() != 2) {
            return Ok(None);
        }
        let mut len = 0usize;
        let mut matrices = Vec::with_capacity(infos.len());
        for expert in infos {
            let placed = expert.map(|info| {
                let offset = len;
                len = (len + info.len as usize).next_multiple_of(ALIGN);
                (offset, info)
            });
            matrices.push(placed);
        }
        let mut buffer = Buffer::alloc(device, len.max(ALIGN));
        let out = buffer.bytes_mut();
        for (offset, info) in matrices.iter().flatten() {
            let src = bytes_of(info);
            let dst = out.get_mut(*offset..offset + src.len()).filter(|_| src.len() as u64 == info.len);
            let Some(dst) = dst else {
                return Err(StreamError::InvalidParameter {
                    name: "expert tensor",
                    reason: format!("`{}`: {} bytes read, {} expected", info.name, src.len(), info.len),
                });
            };
            dst.copy_from_slice(src);
        }
        let slot = std::sync::OnceLock::new();
        if let Some(cache) = cache {
            let _ = slot.set(cache);
        }
        Ok(Some(Self { block, buffer, matrices, cache: slot }))
    }

    /// The device cache these experts are uploaded into, if there is one.
    pub fn cache(&self) -> Option<&Arc<ExpertCache>> {
        self.cache.get()
    }

    /// Gives these experts the device cache `cache` (made after the layers were loaded);
    /// `false` when they have one already.
    pub fn attach_cache(&self, cache: Arc<ExpertCache>) -> bool {
        self.cache.set(cache).is_ok()
    }

    /// Bytes of expert `expert`'s three matrices.
    pub fn expert_bytes(&self, expert: usize) -> u64 {
        self.matrices.get(expert).map_or(0, |m| m.iter().map(|(_, t)| t.len).sum())
    }

    /// The tensor of `proj` of expert `expert`.
    pub fn info(&self, expert: usize, proj: ExpertProj) -> Result<&TensorInfo> {
        Ok(&self.entry(expert, proj)?.1)
    }

    /// The stored bytes of `proj` of expert `expert`.
    pub fn bytes(&self, expert: usize, proj: ExpertProj) -> Result<&[u8]> {
        let (offset, info) = self.entry(expert, proj)?;
        Ok(&self.buffer.bytes()[*offset..*offset + info.len as usize])
    }

    /// `proj` of expert `expert` as a matrix for the CPU's kernels.
    pub fn matrix(&self, expert: usize, proj: ExpertProj) -> Result<HostMatrix<'_>> {
        let info = self.info(expert, proj)?;
        Ok(HostMatrix {
            dtype: ggml_dtype(info.storage),
            bytes: self.bytes(expert, proj)?,
            rows: info.shape[0],
            cols: info.shape[1],
        })
    }

    fn entry(&self, expert: usize, proj: ExpertProj) -> Result<&(usize, TensorInfo)> {
        let index = ExpertProj::ALL.iter().position(|p| *p == proj).unwrap_or(0);
        self.matrices.get(expert).map(|m| &m[index]).ok_or_else(|| StreamError::InvalidParameter {
            name: "expert",
            reason: format!("{} has no {:?}", self.block, Role::Expert(proj, expert as u16)),
        })
    }
}
