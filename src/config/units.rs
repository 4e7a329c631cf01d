//! Value types of the configuration that are not plain numbers or strings: durations written as
//! humantime strings (`"200ms"`, `"10s"`) and byte sizes written with a unit (`"64KiB"`), with
//! their parsing, display and serde glue.
//!
//! Invariant: both kinds round-trip through their string form, so a configuration serialized
//! to TOML reads back to the same value (tested in `config/tests.rs`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A duration the way messages about configuration write it (`"1m 30s"`).
pub(super) fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde helper: a `Duration` as a humantime string (`"200ms"`, `"10s"`, `"1m 30s"`).
pub(super) mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?}: {e} (expected e.g. \"200ms\", \"10s\", \"2m\")"
            ))
        })
    }
}

/// A byte size that (de)serializes as a human string like `"64KiB"`, `"8MiB"` or `"4096"`
/// (a plain integer, as a string or a TOML integer, is bytes).
///
/// Units are case-insensitive: `B`; binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024); decimal
/// `KB`, `MB`, `GB`, `TB` (powers of 1000). A fraction is allowed (`"1.5MiB"`) and rounded down
/// to whole bytes. [`fmt::Display`] writes the largest binary unit that divides the size exactly,
/// else bytes (`"64KiB"`, `"1000B"`), so display and parse round-trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    /// `n` bytes.
    pub const fn b(n: u64) -> Size {
        Size(n)
    }

    /// `n` KiB (1024 bytes each).
    pub const fn kib(n: u64) -> Size {
        Size(n * 1024)
    }

    /// `n` MiB (1024 KiB each).
    pub const fn mib(n: u64) -> Size {
        Size(n * 1024 * 1024)
    }

    /// `n` GiB (1024 MiB each).
    pub const fn gib(n: u64) -> Size {
        Size(n * 1024 * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in bytes as a `usize`, saturating on 32-bit targets (for buffer sizes).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// Units accepted by [`Size::from_str`], lowercase, with their multipliers.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason} (expected e.g. \"4096\", \"64KiB\", \"8MiB\")")]
pub struct ParseSizeError {
    input: String,
    reason: &'static str,
}

impl FromStr for Size {
    type Err = ParseSizeError;

    fn from_str(input: &str) -> Result<Size, ParseSizeError> {
        let err = |reason| ParseSizeError { input: input.to_owned(), reason };
        let s = input.trim();
        let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = (&s[..num_end], s[num_end..].trim_start());
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() || (num.contains('.') && frac.is_empty()) {
            return Err(err("expected a number followed by an optional unit"));
        }
        let unit = unit.to_ascii_lowercase();
        let mult = SIZE_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, m)| m)
            .ok_or_else(|| err("unknown unit (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"))?;
        let too_big = || err("too large");
        let int: u128 = int.parse().map_err(|_| too_big())?;
        let mut total = int.checked_mul(u128::from(mult)).ok_or_else(too_big)?;
        if !frac.is_empty() {
            // Digits beyond 19 cannot change the result by a whole byte for any unit up to TiB.
            let frac = &frac[..frac.len().min(19)];
            let digits: u128 = frac.parse().map_err(|_| err("bad fraction"))?;
            total += digits * u128::from(mult) / 10u128.pow(frac.len() as u32);
        }
        u64::try_from(total).map(Size).map_err(|_| too_big())
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const BINARY: [(&str, u64); 4] =
            [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        if self.0 != 0 {
            for (name, mult) in BINARY {
                if self.0.is_multiple_of(mult) {
                    return write!(f, "{}{name}", self.0 / mult);
                }
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct SizeVisitor;

        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"64KiB\", \"8MiB\" or a number of bytes")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Size, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {v}: must not be negative")))
            }
        }

        d.deserialize_any(SizeVisitor)
    }
}
