//! Revoked access tokens: the durable copy of every logout, so that a revoked token stays
//! refused after a restart of the server (or of Redis, which may run without persistence).
//!
//! The request path never reads this table: each node keeps the unexpired revocations in memory
//! (`crate::shared_state`), loads them all at start and the ones other nodes added every
//! `auth.revocation_sync_interval` (by `revoked_at_ms`). A row is useless once its token has
//! expired, so [`Store::purge_expired_revocations`] keeps the table as small as the set of live
//! revoked tokens.

use super::Store;

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Revocation {
    pub jti: String,
    /// The token's own expiry, unix milliseconds: past it the token is refused anyway.
    pub expires_at_ms: i64,
    pub revoked_at_ms: i64,
}

impl Store {
    /// Records that `jti` is revoked until `expires_at_ms`. Revoking twice is not an error.
    pub async fn revoke_token(&self, jti: &str, expires_at_ms: i64, now_ms: i64) -> crate::Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_at_ms, revoked_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(expires_at_ms)
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
        })?;
        Ok(())
    }

    /// Unexpired revocations recorded at or after `since_ms` (0: all of them), oldest first.
    pub async fn revocations_since(&self, since_ms: i64, now_ms: i64) -> crate::Result<Vec<Revocation>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT jti, expires_at_ms, revoked_at_ms FROM revoked_tokens \
                 WHERE revoked_at_ms >= $1 AND expires_at_ms > $2 ORDER BY revoked_at_ms",
            )
            .bind(since_ms)
            .bind(now_ms)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows)
    }

    /// Deletes revocations of tokens that have expired; returns how many.
    pub async fn purge_expired_revocations(&self, now_ms: i64) -> crate::Result<u64> {
        let deleted = with_pool!(self, |pool| {
            sqlx::query("DELETE FROM revoked_tokens WHERE expires_at_ms <= $1")
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(deleted)
    }
}
