//! A circuit breaker in front of the database, so that while it is unreachable the store
//! answers "unavailable" at once instead of every caller waiting out the pool's acquire timeout.
//!
//! States, kept in two atomics (no lock: every store call passes through here):
//! - closed: fewer than `failures` consecutive infrastructure failures; calls go through.
//! - open: that many failures in a row; calls fail at once until `cooldown` has passed.
//! - half-open: after the cool-down, exactly one call (the probe) goes through; the others keep
//!   failing fast. A probe that succeeds closes the circuit; one that fails opens it for
//!   another cool-down. A probe that never reports (its caller was cancelled) is replaced after
//!   one more cool-down, so the breaker cannot stick open.
//!
//! Only failures that say the database is unreachable count (pool timeouts, I/O, a closed
//! pool); a constraint violation or a missing row is an answer, and resets the count.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Tuning, from `[database]`.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive failures that open the circuit.
    pub failures: u32,
    /// How long the circuit stays open before one probe is let through.
    pub cooldown: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings { failures: 3, cooldown: Duration::from_secs(2) }
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    settings: BreakerSettings,
    /// Time zero for `open_until_ms`.
    epoch: Instant,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` before which calls fail fast (meaningful only while
    /// `consecutive_failures >= settings.failures`).
    open_until_ms: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(settings: BreakerSettings) -> Breaker {
        Breaker {
            settings: BreakerSettings { failures: settings.failures.max(1), ..settings },
            epoch: Instant::now(),
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn cooldown_ms(&self) -> u64 {
        u64::try_from(self.settings.cooldown.as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether a call may go to the database now. While half-open, only the first caller
    /// after the cool-down gets `true` (it claims the probe by pushing the deadline forward).
    pub(crate) fn admit(&self) -> bool {
        if self.consecutive_failures.load(Ordering::Acquire) < self.settings.failures {
            return true;
        }
        let now = self.now_ms();
        let until = self.open_until_ms.load(Ordering::Acquire);
        now >= until
            && self
                .open_until_ms
                .compare_exchange(until, now + self.cooldown_ms(), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// Whether the circuit is open right now (calls fail fast).
    pub(crate) fn is_open(&self) -> bool {
        self.consecutive_failures.load(Ordering::Acquire) >= self.settings.failures
    }

    pub(crate) fn record<T, E: Outage>(&self, result: &Result<T, E>) {
        match result {
            Err(e) if e.is_outage() => self.failure(),
            _ => self.success(),
        }
    }

    pub(crate) fn success(&self) {
        if self.consecutive_failures.swap(0, Ordering::AcqRel) >= self.settings.failures {
            tracing::info!("database answers again; circuit closed");
        }
    }

    pub(crate) fn failure(&self) {
        let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if n >= self.settings.failures {
            self.open_until_ms.store(self.now_ms() + self.cooldown_ms(), Ordering::Release);
            if n == self.settings.failures {
                tracing::warn!(failures = n, "database unreachable; circuit open");
            }
        }
    }
}

/// Whether an error says the database cannot be reached (as opposed to an answer we did not
/// like).
pub(crate) trait Outage {
    fn is_outage(&self) -> bool;
}

impl Outage for sqlx::Error {
    fn is_outage(&self) -> bool {
        matches!(
            self,
            sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        )
    }
}

impl Outage for crate::Error {
    fn is_outage(&self) -> bool {
        self.kind == crate::error::ErrorKind::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(cooldown_ms: u64) -> Breaker {
        Breaker::new(BreakerSettings { failures: 3, cooldown: Duration::from_millis(cooldown_ms) })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(60_000);
        b.failure();
        b.failure();
        b.record::<(), _>(&Err(sqlx::Error::RowNotFound));
        b.failure();
        b.failure();
        assert!(b.admit(), "a non-outage answer resets the count");
        b.failure();
        assert!(b.is_open());
        assert!(!b.admit());
    }

    #[test]
    fn half_opens_one_probe_then_closes_or_reopens() {
        let b = breaker(30);
        for _ in 0..3 {
            b.failure();
        }
        assert!(!b.admit());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit(), "the probe");
        assert!(!b.admit(), "only one probe at a time");
        b.failure();
        assert!(!b.admit(), "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
        b.record::<(), sqlx::Error>(&Ok(()));
        assert!(!b.is_open());
        assert!(b.admit() && b.admit());
    }

    #[test]
    fn an_abandoned_probe_is_replaced_after_a_cooldown() {
        let b = breaker(30);
        for _ in 0..3 {
            b.failure();
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit());
    }
}
