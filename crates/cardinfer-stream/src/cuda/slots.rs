//! Slot buffers: the device memory of the pool, allocated once. A streamed block's
//! matrices are copied into the slot it was given and used in place — quantized ones by
//! Candle's kernels launched on the raw pointer (`slot_kernels`, `cuda` feature), float ones as
//! Candle tensors viewing the slot's memory — so a pass allocates no device memory for
//! weight matrices and what the device holds for them is exactly `slots × slot bytes`.
//!
//! Slots are handed out round-robin: the pool lets at most `slots` blocks be in flight
//! and gives them back in order, so the slot a block gets was last used by the block
//! `slots` places earlier, whose kernels were queued before this block's copy — and the
//! copy stream waits for them ([`crate::cuda::copy_stream`]).

use crate::cuda::sizes::{float_dtype, ggml, in_slot, place_at, slot_tensor_bytes, MAX_TENSORS_PER_SLOT, SLOT_ALIGN};
use candle_core::quantized::GgmlDType;
use candle_core::Tensor;
use cardinfer_core::{StorageType, TensorInfo};

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

    /// Slot `index` (modulo the slot count), to be filled from its start: for a cache
    /// that chooses which slot to reuse.
    pub fn slot(&self, index: usize) -> SlotCursor {
        SlotCursor { slot: self.0.get(index), used: 0 }
    }

    /// How many slots the arena holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the arena holds no slot (never: it is made with at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Device bytes the arena holds.
    pub fn device_bytes(&self) -> u64 {
        self.0.bytes()
    }

    /// The kernels' scratch the arena's slots share.
    #[cfg(feature = "cuda")]
    pub(crate) fn workspace(&self) -> Option<&crate::cuda::slot_kernels::Workspace> {
        Some(self.0.workspace())
    }
}

/// A matrix placed in a slot: float ones are Candle tensors viewing the slot's memory,
/// quantized ones are multiplied in place.
#[derive(Debug)]
pub enum Placed {
    /// A float matrix, a tensor over the slot's bytes.
    Dense(Tensor),
    /// A quantized matrix.
    InSlot(SlotTensor),
}

/// A slot being filled with one block's matrices.
pub struct SlotCursor {
    slot: std::sync::Arc<imp::Slot>,
    used: u64,
}

impl SlotCursor {
    /// Places `info` in the slot: the weight, its device address and the bytes of row
    /// padding after it (to be zeroed). `None` when it does not fit or is not handled.
    pub fn place(&mut self, info: &TensorInfo) -> Option<(Placed, u64, usize)> {
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
                Placed::Dense(self.slot.view(offset, float_dtype(info.storage), shape)?)
            }
            storage => {
                Placed::InSlot(SlotTensor { slot: self.slot.clone(), offset, dtype: ggml(storage), shape, bytes })
            }
        };
        Some((weight, address, (bytes - info.len) as usize))
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use crate::cuda::slot_kernels::{SlotMatMul, Workspace};
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
        workspace: Arc<Workspace>,
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
            let workspace_bytes = crate::cuda::sizes::kernel_workspace_bytes(max_cols, max_rows);
            Some(Self { slots, next: AtomicUsize::new(0), workspace, workspace_bytes })
        }

        pub fn workspace(&self) -> &Workspace {
            &self.workspace
        }

        pub fn next(&self) -> Arc<Slot> {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
            self.slots[i].clone()
        }

        pub fn get(&self, index: usize) -> Arc<Slot> {
            self.slots[index % self.slots.len()].clone()
        }

        pub fn len(&self) -> usize {
            self.slots.len()
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
        pub fn get(&self, _index: usize) -> std::sync::Arc<Slot> {
            match *self {}
        }
        pub fn len(&self) -> usize {
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
