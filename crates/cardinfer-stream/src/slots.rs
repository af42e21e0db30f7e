//! Slot buffers: the device memory of the pool, allocated once. A streamed block's
//! matrices are copied into the slot it was given and used in place — quantized ones by
//! Candle's kernels launched on the raw pointer (`slot_kernels`, `cuda` feature), float ones as
//! Candle tensors viewing the slot's memory — so a pass allocates no device memory for
//! weight matrices and what the device holds for them is exactly `slots × slot bytes`.
//!
//! Slots are handed out round-robin: the pool lets at most `slots` blocks be in flight
//! and gives them back in order, so the slot a block gets was last used by the block
//! `slots` places earlier, whose kernels were queued before this block's copy — and the
//! copy stream waits for them ([`crate::copy_stream`]).

use crate::weights::Weight;
use candle_core::quantized::GgmlDType;
use cardinfer_core::{StorageType, TensorInfo};

pub(crate) const MATRIX_ROW_PADDING: usize = 512;
pub(crate) const QK8_1: usize = 32;
pub(crate) const Q8_1_TYPE_SIZE: usize = 36;
pub(crate) const BLOCK_Q8_1_MMQ_SIZE: usize = 4 * QK8_1 + 4 * 4;
pub(crate) const MMVQ_MAX_BATCH: usize = 8;
pub(crate) const MMQ_FIXUP_BYTES: usize = 256 * 128 * 128 * 4;

/// Alignment of each tensor inside a slot.
pub const SLOT_ALIGN: u64 = 256;

/// Most tensors one block places in a slot (alignment slack is reserved for this many).
pub const MAX_TENSORS_PER_SLOT: u64 = 16;

pub(crate) fn pad(p: usize, q: usize) -> usize {
    p.div_ceil(q) * q
}

/// Whether the in-place kernels handle a `[rows, cols]` matrix of `dtype`: a type they
/// have a kernel for, rows of whole blocks.
pub fn supports_ggml(dtype: GgmlDType, cols: usize) -> bool {
    use GgmlDType::*;
    matches!(dtype, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K)
        && cols.is_multiple_of(dtype.block_size())
}

/// Whether a tensor stored as `info` is placed in a slot: a float matrix, or a quantized
/// one the in-place kernels handle. Other tensors of a streamed block (norms, biases)
/// get small allocations of their own.
pub fn in_slot(info: &TensorInfo) -> bool {
    info.shape.len() == 2
        && match info.storage {
            StorageType::F32 | StorageType::F16 | StorageType::BF16 => true,
            s => supports_ggml(ggml(s), info.shape[1]),
        }
}

fn ggml(storage: StorageType) -> GgmlDType {
    cardinfer_quant::candle::ggml_dtype(storage)
}

/// Bytes a matrix stored as `info` takes in a slot: what it takes on an accelerator
/// anyway ([`crate::weights::device_bytes_for`]) — float matrices as stored, quantized ones
/// plus the zeroed row padding the kernels read.
pub fn slot_tensor_bytes(info: &TensorInfo) -> u64 {
    crate::weights::device_bytes_for(info, true)
}

/// Scratch bytes MMVQ needs for `rows` (at most 8) activation rows of `cols` columns,
/// quantized to Q8_1.
pub(crate) fn mmvq_scratch_bytes(rows: usize, cols: usize) -> usize {
    rows * (pad(cols, MATRIX_ROW_PADDING) / QK8_1) * Q8_1_TYPE_SIZE
}

/// Scratch bytes MMQ needs for `rows` activation rows of `cols` columns, in its Q8_1
/// layout (with the kernel's padding), as Candle sizes it.
pub(crate) fn mmq_scratch_bytes(rows: usize, cols: usize) -> usize {
    let k_mmq = pad(pad(cols, MATRIX_ROW_PADDING), 4 * QK8_1);
    rows * (k_mmq / (4 * QK8_1)) * BLOCK_Q8_1_MMQ_SIZE + 128 * BLOCK_Q8_1_MMQ_SIZE
}

/// Scratch bytes the kernels need for inputs of up to `max_cols` columns and `max_rows`
/// activation rows: the quantized activations (MMVQ or MMQ layout) and MMQ's stream-k
/// fixup buffer, sized as Candle sizes them.
pub fn kernel_workspace_bytes(max_cols: usize, max_rows: usize) -> u64 {
    let mmvq = mmvq_scratch_bytes(MMVQ_MAX_BATCH, max_cols);
    let mmq = mmq_scratch_bytes(max_rows.max(1), max_cols);
    (mmvq.max(mmq) + MMQ_FIXUP_BYTES) as u64
}

/// Device bytes an arena adds beyond `slots × slot_bytes`: alignment slack per slot and
/// the kernels' scratch.
pub fn arena_overhead_bytes(slots: usize, max_cols: usize, max_rows: usize) -> u64 {
    slots as u64 * SLOT_ALIGN * MAX_TENSORS_PER_SLOT + kernel_workspace_bytes(max_cols, max_rows)
}

/// Where a tensor of `bytes` goes in a slot of `capacity` whose first `used` bytes are
/// taken: the next [`SLOT_ALIGN`]ed offset, or `None` if it does not fit.
pub fn place_at(used: u64, bytes: u64, capacity: u64) -> Option<u64> {
    let offset = used.div_ceil(SLOT_ALIGN).checked_mul(SLOT_ALIGN)?;
    (offset.checked_add(bytes)? <= capacity).then_some(offset)
}

/// The slot buffers of one device, with the kernels' scratch.
pub struct SlotArena(imp::Arena);

impl std::fmt::Debug for SlotArena {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotArena")
    }
}

/// A quantized matrix living in a slot, multiplied in place.
#[derive(Clone)]
pub struct SlotTensor {
    slot: std::sync::Arc<imp::Slot>,
    offset: u64,
    /// Quantization of the matrix.
    pub dtype: GgmlDType,
    /// `[rows, cols]`.
    pub shape: (usize, usize),
    bytes: u64,
}

impl std::fmt::Debug for SlotTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotTensor({:?} {:?} at +{})", self.dtype, self.shape, self.offset)
    }
}

impl SlotTensor {
    /// Device bytes the matrix occupies in its slot (with padding).
    pub fn device_bytes(&self) -> u64 {
        self.bytes
    }

    /// Device address of the matrix.
    pub fn address(&self) -> u64 {
        self.slot.base() + self.offset
    }

    /// `x @ Wᵀ`, `x` f32 and contiguous.
    pub fn matmul_t(&self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        imp::matmul_t(self, x)
    }
}

impl SlotArena {
    /// `slots` buffers of `slot_bytes` (plus alignment slack) and scratch for inputs of up
    /// to `max_cols` columns and `max_rows` rows, on `device`. `None` on a device without
    /// the in-place kernels (CPU) or when the allocation fails.
    pub fn new(
        device: &candle_core::Device,
        slots: usize,
        slot_bytes: u64,
        max_cols: usize,
        max_rows: usize,
    ) -> Option<Self> {
        let capacity = slot_bytes + SLOT_ALIGN * MAX_TENSORS_PER_SLOT;
        imp::Arena::new(device, slots.max(1), capacity, max_cols, max_rows).map(Self)
    }

    /// The next slot, round-robin.
    pub fn next_slot(&self) -> SlotCursor {
        SlotCursor { slot: self.0.next(), used: 0 }
    }

    /// Device bytes the arena holds.
    pub fn device_bytes(&self) -> u64 {
        self.0.bytes()
    }
}

/// A slot being filled with one block's matrices.
pub struct SlotCursor {
    slot: std::sync::Arc<imp::Slot>,
    used: u64,
}

impl SlotCursor {
    /// Places `info` in the slot: the weight, its device address and the bytes of row
    /// padding after it (to be zeroed). `None` when it does not fit or is not handled.
    pub fn place(&mut self, info: &TensorInfo) -> Option<(Weight, u64, usize)> {
        if !in_slot(info) {
            return None;
        }
        let bytes = slot_tensor_bytes(info);
        let offset = place_at(self.used, bytes, self.slot.capacity())?;
        self.used = offset + bytes;
        let address = self.slot.base() + offset;
        let shape = (info.shape[0], info.shape[1]);
        let weight = match info.storage {
            StorageType::F32 | StorageType::F16 | StorageType::BF16 => {
                Weight::Dense(self.slot.view(offset, crate::weights::float_dtype(info.storage), shape)?)
            }
            storage => {
                Weight::InSlot(SlotTensor { slot: self.slot.clone(), offset, dtype: ggml(storage), shape, bytes })
            }
        };
        Some((weight, address, (bytes - info.len) as usize))
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use crate::slot_kernels::{SlotMatMul, Workspace};
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DevicePtr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, DType, Device, Storage, Tensor};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    pub struct Slot {
        buffer: CudaSlice<u8>,
        base: u64,
        capacity: u64,
        workspace: Arc<Workspace>,
        device: CudaDevice,
        /// Float tensors viewing this slot's memory, made once per (offset, type, shape):
        /// every block of a uniform model lays its matrices out the same way.
        views: Mutex<HashMap<ViewKey, Tensor>>,
    }

    /// Offset in the slot, element type, `[rows, cols]`.
    type ViewKey = (u64, DType, (usize, usize));

    impl Slot {
        pub fn base(&self) -> u64 {
            self.base
        }
        pub fn capacity(&self) -> u64 {
            self.capacity
        }

        /// A `shape` tensor of `dtype` over this slot's bytes at `offset`.
        pub fn view(&self, offset: u64, dtype: DType, shape: (usize, usize)) -> Option<Tensor> {
            let mut views = self.views.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = views.get(&(offset, dtype, shape)) {
                return Some(t.clone());
            }
            let (address, len, stream) = (self.base + offset, shape.0 * shape.1, self.device.cuda_stream());
            // SAFETY: the range lies inside this slot's allocation (placed by `place_at`
            // within its capacity). The view does not own it: views are never dropped
            // while the slot lives, and are forgotten when it goes (see `Drop`).
            let storage = unsafe {
                match dtype {
                    DType::F16 => CudaStorage::wrap_cuda_slice(
                        stream.upgrade_device_ptr::<half::f16>(address, len),
                        self.device.clone(),
                    ),
                    DType::BF16 => CudaStorage::wrap_cuda_slice(
                        stream.upgrade_device_ptr::<half::bf16>(address, len),
                        self.device.clone(),
                    ),
                    DType::F32 => CudaStorage::wrap_cuda_slice(
                        stream.upgrade_device_ptr::<f32>(address, len),
                        self.device.clone(),
                    ),
                    _ => return None,
                }
            };
            let tensor = Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false);
            views.insert((offset, dtype, shape), tensor.clone());
            Some(tensor)
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            // The views' slices do not own their memory: freeing them would free inside
            // the slot's allocation. Leak their small host-side handles instead.
            let views = std::mem::take(self.views.get_mut().unwrap_or_else(|e| e.into_inner()));
            for (_, view) in views {
                std::mem::forget(view);
            }
        }
    }

    pub struct Arena {
        slots: Vec<Arc<Slot>>,
        next: AtomicUsize,
        workspace_bytes: u64,
    }

    impl Arena {
        pub fn new(device: &Device, slots: usize, capacity: u64, max_cols: usize, max_rows: usize) -> Option<Self> {
            let Device::Cuda(cuda) = device else { return None };
            let workspace = Arc::new(Workspace::new(cuda, max_cols, max_rows).ok()?);
            let stream = cuda.cuda_stream();
            let slots = (0..slots)
                .map(|_| {
                    // SAFETY: every tensor placed in a slot is copied in before use.
                    let buffer = unsafe { cuda.alloc::<u8>(capacity as usize) }.ok()?;
                    let base = buffer.device_ptr(&stream).0;
                    Some(Arc::new(Slot {
                        buffer,
                        base,
                        capacity,
                        workspace: workspace.clone(),
                        device: cuda.clone(),
                        views: Mutex::new(HashMap::new()),
                    }))
                })
                .collect::<Option<Vec<_>>>()?;
            let workspace_bytes = crate::slots::kernel_workspace_bytes(max_cols, max_rows);
            Some(Self { slots, next: AtomicUsize::new(0), workspace_bytes })
        }

        pub fn next(&self) -> Arc<Slot> {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
            self.slots[i].clone()
        }

        pub fn bytes(&self) -> u64 {
            self.slots.iter().map(|s| s.buffer.len() as u64).sum::<u64>() + self.workspace_bytes
        }
    }

    pub fn matmul_t(t: &super::SlotTensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let op = SlotMatMul {
            weight: t.address(),
            dtype: t.dtype,
            rows: t.shape.0,
            cols: t.shape.1,
            workspace: &t.slot.workspace,
        };
        x.contiguous()?.apply_op1_no_bwd(&op)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::{Device, Tensor};

    pub enum Slot {}

    impl Slot {
        pub fn base(&self) -> u64 {
            match *self {}
        }
        pub fn capacity(&self) -> u64 {
            match *self {}
        }
        pub fn view(&self, _offset: u64, _dtype: candle_core::DType, _shape: (usize, usize)) -> Option<Tensor> {
            match *self {}
        }
    }

    pub enum Arena {}

    impl Arena {
        pub fn new(_device: &Device, _slots: usize, _capacity: u64, _cols: usize, _rows: usize) -> Option<Self> {
            None
        }
        pub fn next(&self) -> std::sync::Arc<Slot> {
            match *self {}
        }
        pub fn bytes(&self) -> u64 {
            match *self {}
        }
    }

    pub fn matmul_t(_t: &super::SlotTensor, _x: &Tensor) -> candle_core::Result<Tensor> {
        candle_core::bail!("slot tensors exist on CUDA devices only")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(storage: StorageType, shape: [usize; 2]) -> TensorInfo {
        let elems = shape[0] * shape[1];
        TensorInfo {
            name: "t".into(),
            shape: shape.to_vec(),
            storage,
            file: 0,
            offset: 0,
            len: (elems / storage.block_elems() * storage.block_bytes()) as u64,
        }
    }

    #[test]
    fn slot_bytes_match_the_planners_device_bytes() {
        for (storage, shape) in
            [(StorageType::Q4_K, [1024, 2560]), (StorageType::Q8_0, [896, 4864]), (StorageType::BF16, [896, 4864])]
        {
            let t = info(storage, shape);
            assert_eq!(slot_tensor_bytes(&t), crate::weights::device_bytes_for(&t, true));
        }
    }

    #[test]
    fn placement_aligns_every_tensor_and_respects_capacity() {
        assert_eq!(place_at(0, 100, 100), Some(0));
        assert_eq!(place_at(1, 100, 1000), Some(SLOT_ALIGN));
        assert_eq!(place_at(SLOT_ALIGN, 100, SLOT_ALIGN + 100), Some(SLOT_ALIGN));
        assert_eq!(place_at(SLOT_ALIGN + 1, 100, 2 * SLOT_ALIGN + 99), None);
        assert_eq!(place_at(u64::MAX - 10, 100, u64::MAX), None);
    }

    #[test]
    fn matrices_go_in_slots_where_the_kernels_take_them() {
        assert!(in_slot(&info(StorageType::Q4_K, [8, 512])));
        assert!(!in_slot(&info(StorageType::Q4_K, [8, 544])), "row not a multiple of 256");
        assert!(in_slot(&info(StorageType::BF16, [8, 544])));
        assert!(!in_slot(&info(StorageType::Q8_K, [8, 512])), "no in-place kernel");
        assert!(!in_slot(&TensorInfo { shape: vec![512], ..info(StorageType::Q8_0, [1, 512]) }));
    }

    #[test]
    fn workspace_covers_decode_and_prefill_shapes() {
        let small = kernel_workspace_bytes(2560, 8);
        let large = kernel_workspace_bytes(9728, 512);
        assert!(large > small && small > MMQ_FIXUP_BYTES as u64);
        assert!(arena_overhead_bytes(2, 2560, 8) > small);
    }
}
