//! Device byte sizes: what a tensor takes once loaded or placed in a slot, the row padding
//! and scratch the quantized kernels need, and where a tensor goes in a slot. Pure
//! arithmetic, the same with or without the `cuda` feature, so the planner's figures and
//! the allocations agree.

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device};
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

pub(crate) fn ggml(storage: StorageType) -> GgmlDType {
    cardinfer_quant::candle::ggml_dtype(storage)
}

/// Bytes a matrix stored as `info` takes in a slot: what it takes on an accelerator
/// anyway ([`device_bytes_for`]) — float matrices as stored, quantized ones
/// plus the zeroed row padding the kernels read.
pub fn slot_tensor_bytes(info: &TensorInfo) -> u64 {
    device_bytes_for(info, true)
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

/// The Candle type a float matrix keeps on an accelerator: f16 and bf16 as stored, f32
/// for everything else.
pub(crate) fn float_dtype(storage: StorageType) -> DType {
    match storage {
        StorageType::F16 => DType::F16,
        StorageType::BF16 => DType::BF16,
        _ => DType::F32,
    }
}

/// Bytes `info` occupies once loaded on `device` by `BlockWeights::load`: quantized
/// storage as stored (plus Candle's 512-element row padding on CUDA), float matrices in
/// f32 on the CPU and in their stored type on accelerators, vectors in f32.
pub fn device_bytes_of(info: &TensorInfo, device: &Device) -> u64 {
    device_bytes_for(info, !device.is_cpu())
}

/// [`device_bytes_of`] for a CPU (`accel = false`) or an accelerator (`true`), for
/// planning on a device that is not present.
pub fn device_bytes_for(info: &TensorInfo, accel: bool) -> u64 {
    let is_matrix = info.shape.len() == 2;
    if is_matrix && info.storage.is_quantized() {
        let padding = match accel {
            true => (MATRIX_ROW_PADDING / info.storage.block_elems() * info.storage.block_bytes()) as u64,
            false => 0,
        };
        info.len + padding
    } else if is_matrix && accel && matches!(info.storage, StorageType::F16 | StorageType::BF16) {
        info.len
    } else {
        info.elem_count() as u64 * 4
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
            assert_eq!(slot_tensor_bytes(&t), device_bytes_for(&t, true));
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
