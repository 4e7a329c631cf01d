//! Durable logouts: a revoked access token stays refused after a restart of the server, or of
//! Redis (which may run without persistence).
//!
//! Design choice: revocations are stored in the database (`revoked_tokens`) and the in-process
//! set and Redis are caches of that table. The alternative, short-lived access tokens plus
//! refresh tokens whose revocation is durable, would change the API contract (a refresh
//! endpoint, every client renewing every few minutes) to protect a rare event; whereas a
//! logout table only ever holds the tokens revoked within one `auth.access_token_ttl` (rows of
//! expired tokens are purged), and checking it costs nothing on the request path:
//! - `logout` writes memory and Redis (instant, cluster-wide while Redis is up) and the store.
//!   If the store is unreachable the write is queued here and retried on every sync, so the
//!   logout still answers 204 and becomes durable when the database is back (a crash before
//!   then loses it, as it would have lost every logout before).
//! - At start every unexpired revocation is loaded into memory; every
//!   `database.revocation_sync_interval` the ones stored since the last sync (by any node) are.
//!   So a token revoked on another node is refused here within that interval even when Redis
//!   lost it, and the request path checks memory (then Redis, as before), never the database.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::shared_state::SharedState;
use crate::store::{now_ms, Store};

/// Revocations stored this long before the last sync are read again, so a row written by a
/// node whose clock is behind ours, or committed late, is not missed.
const SYNC_OVERLAP_MS: i64 = 60_000;
/// Syncs between two purges of expired rows.
const PURGE_EVERY: u32 = 60;

/// One logout not yet written to the store: (jti, token expiry in unix ms).
type Pending = (String, i64);

/// See the module doc. Shared through an `Arc`.
pub struct Revocations {
    store: Store,
    shared: SharedState,
    pending: Mutex<Vec<Pending>>,
    /// Start (unix ms) of the last sync that read the store; `None` until one succeeded.
    last_sync_ms: Mutex<Option<i64>>,
}

impl Revocations {
    /// Loads every unexpired revocation (best effort: if the store does not answer, the
    /// background sync retries) and starts the sync task, which ends when the returned `Arc`
    /// is dropped. Must run inside a tokio runtime.
    pub async fn start(store: Store, shared: SharedState, interval: Duration) -> Arc<Revocations> {
        let me = Arc::new(Revocations {
            store,
            shared,
            pending: Mutex::new(Vec::new()),
            last_sync_ms: Mutex::new(None),
        });
        if let Err(e) = me.sync().await {
            tracing::warn!(error = %e, "could not load token revocations; retrying in the background");
        }
        let weak = Arc::downgrade(&me);
        tokio::spawn(sync_loop(weak, interval));
        me
    }

    /// Revokes the access token `jti` that expires at `exp` (unix seconds): at once in memory
    /// and Redis, and durably in the store (queued if the store does not answer).
    pub async fn revoke(&self, jti: &str, exp: u64) {
        let now = now_ms();
        let expires_at_ms = i64::try_from(exp.saturating_mul(1000)).unwrap_or(i64::MAX);
        let ttl = Duration::from_millis(u64::try_from(expires_at_ms.saturating_sub(now)).unwrap_or(0) + 1000);
        self.shared.revoke(jti, ttl).await;
        if let Err(e) = self.store.revoke_token(jti, expires_at_ms, now).await {
            tracing::warn!(error = %e, "storing a logout failed; it is kept in memory and retried");
            self.lock_pending().push((jti.to_owned(), expires_at_ms));
        }
    }

    /// Logouts waiting for the store (tests and metrics).
    pub fn pending(&self) -> usize {
        self.lock_pending().len()
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        // A panic while holding this lock cannot leave the vector inconsistent: keep using it.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes queued logouts, then reads the revocations stored since the last sync into
    /// memory.
    async fn sync(&self) -> crate::Result<()> {
        let queued = std::mem::take(&mut *self.lock_pending());
        let mut failed = Vec::new();
        let mut result = Ok(());
        for (jti, expires_at_ms) in queued {
            if result.is_ok() {
                if let Err(e) = self.store.revoke_token(&jti, expires_at_ms, now_ms()).await {
                    result = Err(e);
                } else {
                    continue;
                }
            }
            failed.push((jti, expires_at_ms));
        }
        self.lock_pending().extend(failed);
        result?;

        let started = now_ms();
        let since = self
            .last_sync_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(0, |last| last - SYNC_OVERLAP_MS);
        for r in self.store.revocations_since(since, started).await? {
            let ttl = u64::try_from(r.expires_at_ms - started).unwrap_or(0);
            self.shared.remember_revoked(&r.jti, Duration::from_millis(ttl + 1000));
        }
        *self.last_sync_ms.lock().unwrap_or_else(|p| p.into_inner()) = Some(started);
        Ok(())
    }
}

async fn sync_loop(me: Weak<Revocations>, interval: Duration) {
    let mut syncs: u32 = 0;
    loop {
        tokio::time::sleep(interval).await;
        let Some(me) = me.upgrade() else { return };
        if let Err(e) = me.sync().await {
            tracing::debug!(error = %e, "token revocation sync failed; retrying");
            continue;
        }
        syncs = syncs.wrapping_add(1);
        if syncs.is_multiple_of(PURGE_EVERY) {
            match me.store.purge_expired_revocations(now_ms()).await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired token revocations"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "purging token revocations failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDb;

    /// A logout stored by one node (or before a restart) is refused by a fresh one, which has
    /// nothing in memory and no Redis.
    #[tokio::test]
    async fn a_fresh_node_loads_stored_logouts() {
        let db = TestDb::sqlite().await;
        let exp = u64::try_from(now_ms() / 1000).unwrap() + 3600;
        let first = Revocations::start(db.store.clone(), SharedState::local(), Duration::from_secs(60)).await;
        first.revoke("gone", exp).await;
        assert_eq!(first.pending(), 0);
        drop(first);

        let shared = SharedState::local();
        assert!(!shared.is_revoked("gone").await);
        let _second = Revocations::start(db.store.clone(), shared.clone(), Duration::from_secs(60)).await;
        assert!(shared.is_revoked("gone").await);
        assert!(!shared.is_revoked("other").await);
    }

    /// Another node's logout reaches this one through the store within the sync interval.
    #[tokio::test]
    async fn other_nodes_logouts_arrive_by_sync() {
        let db = TestDb::sqlite().await;
        let exp = u64::try_from(now_ms() / 1000).unwrap() + 3600;
        let shared = SharedState::local();
        let _here = Revocations::start(db.store.clone(), shared.clone(), Duration::from_millis(50)).await;
        let there = Revocations::start(db.store.clone(), SharedState::local(), Duration::from_secs(60)).await;
        there.revoke("elsewhere", exp).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !shared.is_revoked("elsewhere").await {
            assert!(std::time::Instant::now() < deadline, "not synced within 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
