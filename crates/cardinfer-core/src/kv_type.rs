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
}

impl KvType {
    /// Bytes one stored value takes.
    pub fn bytes_per_value(self) -> u64 {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }

    /// The name the command line and the plan print (`f16`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
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
            other => Err(CoreError::InvalidField {
                key: "kv-type".into(),
                reason: format!("`{}`: expected f16 or f32", crate::Printable(other)),
            }),
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
        assert_eq!(KvType::default(), KvType::F16);
        assert_eq!(KvType::F16.bytes_per_value() * 2, KvType::F32.bytes_per_value());
    }
}
