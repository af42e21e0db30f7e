//! How the KV cache stores its keys and values.

use crate::CoreError;

/// Storage type of the KV cache's keys and values. Attention always computes in f32: a
/// value is rounded (to nearest, ties to even) to this type when it is written into the
/// cache and read back exactly, the same on the CPU and on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum KvType {
    /// 16-bit IEEE floats: half the memory of f32 (llama.cpp's default too).
    #[default]
    F16,
    /// 32-bit floats: the values as computed.
    F32,
    /// llama.cpp's `q8_0` blocks: per 32 values an f16 scale `d = max|x| / 127` and 32
    /// signed bytes `round(x / d)`, 34 bytes in all (about a quarter of f32). Needs a head
    /// size that is a multiple of 32.
    Q8_0,
}

/// Values per `q8_0` block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per `q8_0` block: an f16 scale and 32 signed bytes.
pub const Q8_0_BLOCK_BYTES: usize = 34;

impl KvType {
    /// Bytes one head's row of `head_dim` values takes (for `q8_0`, `head_dim` is a
    /// multiple of 32: see [`KvType::supports`]).
    pub fn row_bytes(self, head_dim: usize) -> u64 {
        match self {
            Self::F16 => 2 * head_dim as u64,
            Self::F32 => 4 * head_dim as u64,
            Self::Q8_0 => (head_dim.div_ceil(Q8_0_BLOCK) * Q8_0_BLOCK_BYTES) as u64,
        }
    }

    /// Whether heads of `head_dim` values can be stored this way (`q8_0`: whole blocks).
    pub fn supports(self, head_dim: usize) -> bool {
        self != Self::Q8_0 || head_dim.is_multiple_of(Q8_0_BLOCK)
    }

    /// The name the command line and the plan print (`f16`, `f32`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
            Self::Q8_0 => "q8_0",
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KvType {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            _ => Err(CoreError::UnknownKvType { text: s.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KvType;

    #[test]
    fn parses_names_and_refuses_others() {
        assert_eq!("F16".parse::<KvType>().unwrap(), KvType::F16);
        assert_eq!(" f32 ".parse::<KvType>().unwrap(), KvType::F32);
        let err = "q4_k".parse::<KvType>().unwrap_err().to_string();
        assert!(err.contains("q4_k") && err.contains("f16"), "{err}");
        assert_eq!("Q8_0".parse::<KvType>().unwrap(), KvType::Q8_0);
        assert_eq!(KvType::default(), KvType::F16);
        assert_eq!(KvType::F16.row_bytes(128) * 2, KvType::F32.row_bytes(128));
        assert_eq!(KvType::Q8_0.row_bytes(128), 4 * 34);
        assert!(KvType::Q8_0.supports(64) && !KvType::Q8_0.supports(80) && KvType::F16.supports(80));
    }
}
