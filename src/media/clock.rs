//! `Clock`: where the media path reads time, handed in rather than read from the OS in place.
//!
//! Two readings: the wall clock ([`Clock::wall`]) for `EXT-X-PROGRAM-DATE-TIME` and latency
//! figures, and the monotonic clock ([`Clock::now`], tokio's `Instant`) for timers, pacing,
//! window expiry and skip budgets. The ring writer stamps every frame's arrival with
//! `wall()`, the HLS packager paces and expires parts with `now()`, and the viewer session
//! counts skips with `now()`.
//!
//! [`Clock::system`] reads the OS clocks. [`Clock::simulated`] derives the wall clock from
//! tokio's monotonic clock, so under `tokio::time::pause()` both readings advance together with
//! the test's simulated time (`tokio::time::advance`, or auto-advance while every task is idle)
//! and tests of pacing, expiry and budgets run without sleeping.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// A cheap, copyable handle to the time source.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    System,
    /// Wall time = `wall_origin` + (tokio's now - `origin`).
    Simulated {
        wall_origin: SystemTime,
        origin: Instant,
    },
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The operating system's clocks (production).
    pub const fn system() -> Self {
        Clock { kind: Kind::System }
    }

    /// A clock whose wall time follows tokio's (pausable) monotonic clock from `wall_origin`.
    pub fn simulated(wall_origin: SystemTime) -> Self {
        Clock { kind: Kind::Simulated { wall_origin, origin: Instant::now() } }
    }

    /// Wall-clock time: program date time, arrival stamps.
    pub fn wall(&self) -> SystemTime {
        match self.kind {
            Kind::System => SystemTime::now(),
            Kind::Simulated { wall_origin, origin } => wall_origin + Instant::now().duration_since(origin),
        }
    }

    /// Monotonic time for timers and intervals (tokio's, so paused tests control it).
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// Sleep until `deadline` on this clock.
    pub async fn sleep_until(&self, deadline: Instant) {
        tokio::time::sleep_until(deadline).await
    }

    /// Time since `earlier` on the monotonic clock.
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn simulated_wall_time_follows_paused_tokio_time() {
        let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let clock = Clock::simulated(origin);
        let t0 = clock.now();
        assert_eq!(clock.wall(), origin);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.wall(), origin + Duration::from_millis(1500));
        assert_eq!(clock.since(t0), Duration::from_millis(1500));
    }
}
