//! How much device memory CardInfer may use.

use crate::PlanError;
use cardinfer_core::ByteSize;
use std::str::FromStr;

/// A device memory budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// An absolute number of bytes.
    Bytes(ByteSize),
    /// A share (0–100 %) of the device memory free at start.
    PercentOfFree(f64),
}

impl Default for Budget {
    /// 80 % of free device memory.
    fn default() -> Self {
        Self::PercentOfFree(80.0)
    }
}

impl Budget {
    /// Bytes allowed, given the device's free bytes (if known).
    pub fn resolve(&self, free_bytes: Option<u64>) -> Result<u64, PlanError> {
        match *self {
            Self::Bytes(size) => Ok(size.bytes()),
            Self::PercentOfFree(percent) => free_bytes
                .map(|free| (free as f64 * percent / 100.0) as u64)
                .ok_or(PlanError::UnknownFreeMemory { percent }),
        }
    }
}

impl FromStr for Budget {
    type Err = PlanError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| PlanError::InvalidBudget { text: text.to_string(), reason };
        if let Some(number) = text.trim().strip_suffix('%') {
            let percent: f64 = number.trim().parse().map_err(|_| invalid("not a percentage".into()))?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(invalid("a percentage must be in (0, 100]".into()));
            }
            return Ok(Self::PercentOfFree(percent));
        }
        let size: ByteSize = text.parse().map_err(|e: cardinfer_core::CoreError| invalid(e.to_string()))?;
        if size.bytes() == 0 {
            return Err(invalid("a budget must be more than 0 bytes".into()));
        }
        Ok(Self::Bytes(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_and_percentages() {
        assert_eq!("6GiB".parse::<Budget>().unwrap(), Budget::Bytes(ByteSize::gib(6)));
        assert_eq!("80%".parse::<Budget>().unwrap(), Budget::PercentOfFree(80.0));
        assert!("0%".parse::<Budget>().is_err());
        assert!("150%".parse::<Budget>().is_err());
        assert!("0".parse::<Budget>().is_err());
        assert!("lots".parse::<Budget>().is_err());
    }

    #[test]
    fn percent_needs_free_memory() {
        assert!(matches!(Budget::default().resolve(None), Err(PlanError::UnknownFreeMemory { .. })));
        assert_eq!(Budget::default().resolve(Some(1000)).unwrap(), 800);
    }
}
