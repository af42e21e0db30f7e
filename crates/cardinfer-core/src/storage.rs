//! How a tensor's elements are stored, with exact byte math.

use crate::CoreError;

/// Storage type of a tensor: plain floats or one of GGUF's block-quantized types.
///
/// Quantized types store elements in fixed-size blocks (32 or 256 elements); a row's
/// length must be a multiple of the block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types)]
pub enum StorageType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 4-bit, one f16 scale per 32 elements.
    Q4_0,
    /// 4-bit, f16 scale and minimum per 32 elements.
    Q4_1,
    /// 5-bit, one f16 scale per 32 elements.
    Q5_0,
    /// 5-bit, f16 scale and minimum per 32 elements.
    Q5_1,
    /// 8-bit, one f16 scale per 32 elements.
    Q8_0,
    /// 8-bit with a sum term (used for activations).
    Q8_1,
    /// 2-bit k-quant, super-blocks of 256.
    Q2_K,
    /// 3-bit k-quant.
    Q3_K,
    /// 4-bit k-quant.
    Q4_K,
    /// 5-bit k-quant.
    Q5_K,
    /// 6-bit k-quant.
    Q6_K,
    /// 8-bit k-quant (activations).
    Q8_K,
}

impl StorageType {
    /// Every type, in GGUF id order.
    pub const ALL: [StorageType; 15] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q8_1,
        Self::Q2_K,
        Self::Q3_K,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::Q8_K,
        Self::BF16,
    ];

    /// The GGUF / ggml type id.
    pub fn gguf_id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q8_1 => 9,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::BF16 => 30,
        }
    }

    /// The type with GGUF id `id`.
    pub fn from_gguf_id(id: u32) -> Result<Self, CoreError> {
        Self::ALL.into_iter().find(|t| t.gguf_id() == id).ok_or(CoreError::UnknownStorageType { id })
    }

    /// Elements per block (1 for plain floats).
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 | Self::Q8_1 => 32,
            _ => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q8_1 => 36,
            Self::Q2_K => 84,
            Self::Q3_K => 110,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
            Self::Q8_K => 292,
        }
    }

    /// True for the block-quantized types.
    pub fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// Exact bytes of a tensor with `shape` (GGUF order does not matter: the innermost
    /// dimension is `row_len`, the product of the others is the row count).
    ///
    /// Fails when the row is not a whole number of blocks.
    pub fn tensor_bytes(self, name: &str, row_len: usize, rows: usize) -> Result<u64, CoreError> {
        let block = self.block_elems();
        if !row_len.is_multiple_of(block) {
            return Err(CoreError::RowNotBlockAligned { name: name.to_string(), row_len, storage: self, block });
        }
        Ok((row_len / block) as u64 * self.block_bytes() as u64 * rows as u64)
    }

    /// Lower-case name as GGUF tools print it (`q4_k`, `f16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::Q4_0 => "q4_0",
            Self::Q4_1 => "q4_1",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q8_0 => "q8_0",
            Self::Q8_1 => "q8_1",
            Self::Q2_K => "q2_k",
            Self::Q3_K => "q3_k",
            Self::Q4_K => "q4_k",
            Self::Q5_K => "q5_k",
            Self::Q6_K => "q6_k",
            Self::Q8_K => "q8_k",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_ids_round_trip() {
        for t in StorageType::ALL {
            assert_eq!(StorageType::from_gguf_id(t.gguf_id()).unwrap(), t);
        }
        assert!(StorageType::from_gguf_id(4).is_err());
    }

    #[test]
    fn bytes_per_row_match_ggml() {
        // 4096-wide rows: Q4_K = 16 super-blocks of 144 bytes.
        assert_eq!(StorageType::Q4_K.tensor_bytes("w", 4096, 1).unwrap(), 2304);
        assert_eq!(StorageType::Q8_0.tensor_bytes("w", 64, 3).unwrap(), 2 * 34 * 3);
        assert_eq!(StorageType::F16.tensor_bytes("w", 7, 2).unwrap(), 28);
        assert!(StorageType::Q6_K.tensor_bytes("w", 576, 1).is_err());
    }
}
