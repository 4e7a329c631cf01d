//! `MediaTime`: a timestamp or duration with its timescale, so time never travels as a bare integer.
//!
//! FLV/RTMP timestamps are milliseconds (timescale 1000), MPEG-TS and RTP video are 90 kHz, Opus
//! is 48 kHz, and CMAF tracks pick their own timescale. Conversions round toward negative
//! infinity so a rescaled timeline stays monotonic.

use std::cmp::Ordering;
use std::time::Duration;

/// `ticks / timescale` seconds. `timescale` is never zero.
#[derive(Clone, Copy, Debug, Eq)]
pub struct MediaTime {
    pub ticks: i64,
    pub timescale: u32,
}

impl MediaTime {
    pub const MILLIS: u32 = 1000;

    pub fn new(ticks: i64, timescale: u32) -> Self {
        assert!(timescale > 0, "a MediaTime timescale is never zero");
        MediaTime { ticks, timescale }
    }

    pub fn from_millis(ms: i64) -> Self {
        MediaTime::new(ms, Self::MILLIS)
    }

    /// The same instant in another timescale (floor division, so order is preserved).
    pub fn rescale(self, timescale: u32) -> Self {
        if timescale == self.timescale {
            return self;
        }
        let t = (self.ticks as i128 * timescale as i128).div_euclid(self.timescale as i128);
        MediaTime::new(t as i64, timescale)
    }

    pub fn as_millis(self) -> i64 {
        self.rescale(Self::MILLIS).ticks
    }

    /// As a `Duration`; negative values clamp to zero.
    pub fn as_duration(self) -> Duration {
        if self.ticks <= 0 {
            return Duration::ZERO;
        }
        let nanos = self.ticks as i128 * 1_000_000_000 / self.timescale as i128;
        Duration::from_nanos(nanos.min(u64::MAX as i128) as u64)
    }

    /// `self - other`, expressed in `self`'s timescale.
    pub fn minus(self, other: MediaTime) -> MediaTime {
        MediaTime::new(self.ticks - other.rescale(self.timescale).ticks, self.timescale)
    }

    /// `self + other`, expressed in `self`'s timescale.
    pub fn plus(self, other: MediaTime) -> MediaTime {
        MediaTime::new(self.ticks + other.rescale(self.timescale).ticks, self.timescale)
    }
}

impl PartialEq for MediaTime {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl PartialOrd for MediaTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MediaTime {
    fn cmp(&self, other: &Self) -> Ordering {
        // Cross-multiply in i128: exact for any i64 ticks and u32 timescales.
        (self.ticks as i128 * other.timescale as i128).cmp(&(other.ticks as i128 * self.timescale as i128))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rescale_ms_to_90k_is_exact() {
        let t = MediaTime::from_millis(1234);
        assert_eq!(t.rescale(90_000).ticks, 1234 * 90);
        assert_eq!(t.rescale(90_000).as_millis(), 1234);
    }

    #[test]
    fn equality_across_timescales() {
        assert_eq!(MediaTime::new(90_000, 90_000), MediaTime::from_millis(1000));
        assert!(MediaTime::new(1, 48_000) > MediaTime::new(0, 1000));
    }

    proptest! {
        #[test]
        fn rescale_preserves_order(a in -1_000_000_000i64..1_000_000_000, b in -1_000_000_000i64..1_000_000_000, ts in 1u32..200_000) {
            let (x, y) = (MediaTime::from_millis(a), MediaTime::from_millis(b));
            if x <= y {
                prop_assert!(x.rescale(ts) <= y.rescale(ts));
            }
        }
    }
}
