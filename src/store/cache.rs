//! [`StaleCache`]: a read-through cache of store lookups that keeps answering while the database
//! does not, for the lookups behind playback (channel records, admin flags, active plans).
//!
//! An entry is *fresh* for `ttl` after it was read. After that it is *stale*: it is still
//! returned at once, and the first caller to see it stale starts one refresh in the background
//! (stale-while-revalidate), so no request ever waits for the database for a key it has seen
//! recently, and a change in the store is seen about `ttl` later as before. A refresh that fails
//! is retried at most once per [`RETRY_EVERY`], however many requests arrive, so an outage does
//! not turn the request rate into a stream of doomed queries. Past `max_stale` (the documented
//! bound, `database.cache_max_stale`) an entry is no longer trusted: the lookup goes to the store
//! and its error is the answer.
//!
//! A hit costs one `DashMap` shard read lock, an `Instant` comparison and a clone of the value
//! (keep values cheap to clone: `Arc`, `bool`), with no allocation when the key is borrowed.

use std::borrow::Borrow;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Least time between two background refreshes of one entry whose refresh failed.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Entries one cache may hold; past this it starts over, so memory stays bounded however many
/// users and channels pass through (a cleared cache only costs a database read per entry).
const MAX_ENTRIES: usize = 100_000;

/// See the module doc. Cheap to clone (an `Arc`).
pub struct StaleCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for StaleCache<K, V> {
    fn clone(&self) -> Self {
        StaleCache { inner: self.inner.clone() }
    }
}

struct Inner<K, V> {
    map: DashMap<K, Entry<V>>,
    ttl: Duration,
    max_stale: Duration,
    /// Time zero for `Entry::next_refresh_ms`.
    epoch: Instant,
}

struct Entry<V> {
    value: V,
    read_at: Instant,
    /// Milliseconds since `Inner::epoch` before which no refresh starts: a refresh in flight or
    /// one that just failed. Claimed with a compare-and-swap, so one request starts it.
    next_refresh_ms: AtomicU64,
}

impl<K, V> StaleCache<K, V>
where
    K: Eq + Hash + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(ttl: Duration, max_stale: Duration) -> Self {
        StaleCache {
            inner: Arc::new(Inner {
                map: DashMap::new(),
                ttl,
                max_stale: max_stale.max(ttl),
                epoch: Instant::now(),
            }),
        }
    }

    /// The value for `key`: cached if not older than `max_stale` (refreshing it in the
    /// background once it is older than `ttl`), else read with `load`. `load` answers
    /// `Ok(None)` for "no such thing", which is not cached. `load` is only called on a miss or
    /// to refresh; on a hit nothing is allocated.
    pub async fn get<Q, F, Fut>(&self, key: &Q, load: F) -> crate::Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = crate::Result<Option<V>>> + Send + 'static,
    {
        let inner = &self.inner;
        if let Some(e) = inner.map.get(key) {
            let age = e.read_at.elapsed();
            if age < inner.ttl {
                return Ok(Some(e.value.clone()));
            }
            if age < inner.max_stale {
                let value = e.value.clone();
                let claimed = self.claim_refresh(&e);
                drop(e);
                if claimed {
                    self.refresh_in_background(key.to_owned(), load());
                }
                return Ok(Some(value));
            }
        }
        let value = load().await?;
        self.put(key.to_owned(), value.clone());
        Ok(value)
    }

    /// Forgets `key` (after a change made on this node).
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.inner.map.remove(key);
    }

    pub fn clear(&self) {
        self.inner.map.clear();
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn claim_refresh(&self, e: &Entry<V>) -> bool {
        let now = self.now_ms();
        let next = e.next_refresh_ms.load(Ordering::Acquire);
        let hold = u64::try_from(RETRY_EVERY.as_millis()).unwrap_or(u64::MAX);
        now >= next
            && e.next_refresh_ms
                .compare_exchange(next, now + hold, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    fn refresh_in_background<Fut>(&self, key: K, load: Fut)
    where
        Fut: Future<Output = crate::Result<Option<V>>> + Send + 'static,
    {
        let cache = self.clone();
        tokio::spawn(async move {
            match load.await {
                Ok(value) => cache.put(key, value),
                // The entry keeps serving until `max_stale`; `next_refresh_ms` spaces the retries.
                Err(e) => tracing::debug!(error = %e, "cache refresh failed; serving the cached copy"),
            }
        });
    }

    fn put(&self, key: K, value: Option<V>) {
        let map = &self.inner.map;
        match value {
            Some(value) => {
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
                map.insert(key, Entry { value, read_at: Instant::now(), next_refresh_ms: AtomicU64::new(0) });
            }
            None => {
                map.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::error::Error;

    fn loader(
        calls: &Arc<AtomicUsize>,
        answer: crate::Result<Option<u32>>,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = crate::Result<Option<u32>>> + Send>> {
        let calls = calls.clone();
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn fresh_hits_do_not_load_and_misses_are_not_cached() {
        let cache: StaleCache<String, u32> =
            StaleCache::new(Duration::from_secs(60), Duration::from_secs(600));
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(cache.get("a", loader(&calls, Ok(Some(1)))).await.unwrap(), Some(1));
        assert_eq!(cache.get("a", loader(&calls, Ok(Some(2)))).await.unwrap(), Some(1));
        assert_eq!(cache.get("b", loader(&calls, Ok(None))).await.unwrap(), None);
        assert_eq!(cache.get("b", loader(&calls, Ok(Some(3)))).await.unwrap(), Some(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stale_entries_serve_at_once_and_refresh_once_in_the_background() {
        let cache: StaleCache<String, u32> =
            StaleCache::new(Duration::from_millis(20), Duration::from_secs(600));
        let calls = Arc::new(AtomicUsize::new(0));
        cache.get("a", loader(&calls, Ok(Some(1)))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        // The database is down: the stale copy answers, one refresh is tried, not one per call.
        for _ in 0..100 {
            let down = Err(Error::unavailable("down"));
            assert_eq!(cache.get("a", loader(&calls, down)).await.unwrap(), Some(1));
        }
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // After the retry delay a refresh that succeeds replaces the value.
        tokio::time::sleep(RETRY_EVERY + Duration::from_millis(50)).await;
        assert_eq!(cache.get("a", loader(&calls, Ok(Some(7)))).await.unwrap(), Some(1));
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(cache.get("a", loader(&calls, Ok(Some(8)))).await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn past_max_stale_the_store_answers() {
        let cache: StaleCache<String, u32> =
            StaleCache::new(Duration::from_millis(10), Duration::from_millis(40));
        let calls = Arc::new(AtomicUsize::new(0));
        cache.get("a", loader(&calls, Ok(Some(1)))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = cache.get("a", loader(&calls, Err(Error::unavailable("down")))).await.unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::Unavailable);
    }
}
