//! The in-process implementation of the shared state: the whole state when Redis is not
//! configured, and the fallback when it does not answer. Expired entries are swept every few
//! thousand operations, so memory stays bounded by the live keys.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Operations between two sweeps of expired entries.
const SWEEP_EVERY: u64 = 4096;

#[derive(Default)]
pub struct LocalState {
    /// bucket -> (count, window end)
    counters: DashMap<String, (u64, Instant)>,
    /// jti -> revoked until
    revoked: DashMap<String, Instant>,
    viewers: DashMap<String, i64>,
    ops: AtomicU64,
}

impl LocalState {
    fn maybe_sweep(&self, now: Instant) {
        if self.ops.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.counters.retain(|_, (_, end)| *end > now);
            self.revoked.retain(|_, until| *until > now);
        }
    }

    pub fn hit(&self, bucket: &str, window: Duration) -> u64 {
        let now = Instant::now();
        self.maybe_sweep(now);
        let mut e = self.counters.entry(bucket.to_owned()).or_insert((0, now + window));
        if e.1 <= now {
            *e = (0, now + window);
        }
        e.0 += 1;
        e.0
    }

    pub fn count(&self, bucket: &str) -> u64 {
        let now = Instant::now();
        self.counters.get(bucket).filter(|e| e.1 > now).map_or(0, |e| e.0)
    }

    pub fn reset(&self, bucket: &str) {
        self.counters.remove(bucket);
    }

    pub fn revoke(&self, jti: &str, ttl: Duration) {
        let now = Instant::now();
        self.maybe_sweep(now);
        self.revoked.insert(jti.to_owned(), now + ttl);
    }

    pub fn is_revoked(&self, jti: &str) -> bool {
        self.revoked.get(jti).is_some_and(|until| *until > Instant::now())
    }

    pub fn add_viewers(&self, channel: &str, delta: i64) -> i64 {
        let mut e = self.viewers.entry(channel.to_owned()).or_insert(0);
        *e = (*e + delta).max(0);
        *e
    }

    pub fn viewers(&self, channel: &str) -> i64 {
        self.viewers.get(channel).map_or(0, |v| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_expire() {
        let s = LocalState::default();
        assert_eq!(s.hit("a", Duration::from_millis(30)), 1);
        assert_eq!(s.hit("a", Duration::from_millis(30)), 2);
        assert_eq!(s.count("a"), 2);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(s.count("a"), 0);
        assert_eq!(s.hit("a", Duration::from_millis(30)), 1);
        s.reset("a");
        assert_eq!(s.count("a"), 0);
        s.revoke("j", Duration::from_millis(20));
        assert!(s.is_revoked("j"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!s.is_revoked("j"));
        assert_eq!(s.add_viewers("c", 1), 1);
        assert_eq!(s.add_viewers("c", -5), 0);
    }
}
