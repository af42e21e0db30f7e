//! Byte sizes that people type and read: `500MiB`, `6GiB`, `1.5GB`, `123456`.

use crate::CoreError;
use std::fmt;
use std::str::FromStr;

/// A number of bytes, parsed from and printed as human-readable text.
///
/// Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024; decimal units (`KB`,
/// `MB`, `GB`, `TB`) powers of 1000; a bare number or `B` is bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// A size of `n` mebibytes.
    pub fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    /// A size of `n` gibibytes.
    pub fn gib(n: u64) -> Self {
        Self(n << 30)
    }
}

impl FromStr for ByteSize {
    type Err = CoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| CoreError::InvalidSize { text: text.to_string(), reason };
        let trimmed = text.trim();
        let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        if number.is_empty() {
            return Err(invalid("expected a number, e.g. 500MiB"));
        }
        let value: f64 = number.parse().map_err(|_| invalid("not a number"))?;
        let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => return Err(invalid("unknown unit (use B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
        };
        let bytes = value * multiplier;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(invalid("too large"));
        }
        Ok(Self(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    /// Prints with the largest binary unit that keeps the number ≥ 1, two decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{value:.2} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!("500MiB".parse::<ByteSize>().unwrap().bytes(), 500 << 20);
        assert_eq!("6GiB".parse::<ByteSize>().unwrap().bytes(), 6 << 30);
        assert_eq!("1.5GB".parse::<ByteSize>().unwrap().bytes(), 1_500_000_000);
        assert_eq!("123".parse::<ByteSize>().unwrap().bytes(), 123);
        assert_eq!(" 2 kib ".parse::<ByteSize>().unwrap().bytes(), 2048);
    }

    #[test]
    fn rejects_garbage() {
        assert!("".parse::<ByteSize>().is_err());
        assert!("GiB".parse::<ByteSize>().is_err());
        assert!("5 parsecs".parse::<ByteSize>().is_err());
        assert!("1.2.3MB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn display_round_trips_within_rounding() {
        for text in ["500MiB", "6GiB", "17B", "3KiB"] {
            let size: ByteSize = text.parse().unwrap();
            let printed = size.to_string().replace(' ', "");
            let again: ByteSize = printed.parse().unwrap();
            assert_eq!(size, again, "{text} printed as {printed}");
        }
    }
}
