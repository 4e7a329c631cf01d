//! Ephemeral state shared by every node: login rate-limit buckets, revoked access tokens and
//! viewer counts, each with a TTL. In Redis when `[redis] url` is set, else in this process.
//!
//! Redis is never the source of truth (ARCHITECTURE.md, "Store and shared state") and never a
//! single point of failure: every operation has a short timeout, and when Redis does not
//! answer the same operation runs on the in-process state instead, counted in
//! `tidecast_shared_state_fallbacks_total`. So with Redis down the API keeps working, degraded:
//! rate limits and viewer counts become per node, and a token revoked on another node while
//! Redis is unreachable is known here only once this node reads it from the store (every
//! `database.revocation_sync_interval`, `crate::auth::revocations`). Revocations are written to
//! both, so this node always remembers its own; the store's copy is what survives restarts.
//!
//! If Redis is unreachable at start, the server starts anyway and keeps retrying in the
//! background; once connected, redis-rs's `ConnectionManager` reconnects by itself.
//!
//! Keys (all under `redis.key_prefix`): `rl:<bucket>` (fixed-window counters), `revoked:<jti>`,
//! `viewers:<channel>`.

pub mod local;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::RedisConfig;
use crate::metrics::metrics;
use local::LocalState;

/// How long one Redis operation may take before we fall back to in-process state.
const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// Time between connection attempts while Redis is unreachable.
const RETRY_EVERY: Duration = Duration::from_secs(2);
/// How long a viewer count lives without being touched (a crashed node's viewers age out).
const VIEWERS_TTL: Duration = Duration::from_secs(120);

/// The shared state handle; cheap to clone.
#[derive(Clone)]
pub struct SharedState {
    local: Arc<LocalState>,
    redis: Option<Arc<RedisLink>>,
}

struct RedisLink {
    prefix: String,
    /// `None` until the first connection succeeds. Cloned out before any `.await`.
    conn: RwLock<Option<ConnectionManager>>,
}

impl SharedState {
    /// In-process only.
    pub fn local() -> SharedState {
        SharedState { local: Arc::new(LocalState::default()), redis: None }
    }

    /// Connects to Redis if configured. Never fails because Redis is down: the connection is
    /// retried in the background. Only a malformed URL is an error.
    pub async fn connect(cfg: &RedisConfig) -> crate::Result<SharedState> {
        if cfg.url.is_empty() {
            return Ok(Self::local());
        }
        let client = redis::Client::open(cfg.url.as_str()).map_err(|e| {
            crate::Error::with_source(crate::ErrorKind::InvalidArgument, "redis.url is not valid", e)
        })?;
        let link = Arc::new(RedisLink { prefix: cfg.key_prefix.clone(), conn: RwLock::new(None) });
        let state = SharedState { local: Arc::new(LocalState::default()), redis: Some(link.clone()) };
        if !try_connect(&client, &link).await {
            tracing::warn!("redis is unreachable; using in-process state until it answers");
            let weak = Arc::downgrade(&link);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(RETRY_EVERY).await;
                    let Some(link) = weak.upgrade() else { return };
                    if try_connect(&client, &link).await {
                        tracing::info!("redis connected");
                        return;
                    }
                }
            });
        }
        Ok(state)
    }

    /// Whether a Redis connection is established (false when not configured).
    pub fn redis_connected(&self) -> bool {
        self.redis.as_ref().is_some_and(|l| l.conn.read().map(|c| c.is_some()).unwrap_or(false))
    }

    fn conn(&self) -> Option<(ConnectionManager, &str)> {
        let link = self.redis.as_ref()?;
        let conn = link.conn.read().ok()?.clone()?;
        Some((conn, &link.prefix))
    }

    /// Counts one hit in the fixed window `bucket` (which starts at its first hit and lasts
    /// `window`) and returns the count so far, this hit included.
    pub async fn hit(&self, bucket: &str, window: Duration) -> u64 {
        if let Some((mut conn, prefix)) = self.conn() {
            let key = format!("{prefix}rl:{bucket}");
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SET")
                .arg(&key)
                .arg(0)
                .arg("NX")
                .arg("PX")
                .arg(window.as_millis() as u64)
                .ignore()
                .cmd("INCR")
                .arg(&key);
            if let Some((n,)) = guard(pipe.query_async::<(u64,)>(&mut conn)).await {
                return n;
            }
        }
        self.local.hit(bucket, window)
    }

    /// The count of `bucket` without adding a hit.
    pub async fn count(&self, bucket: &str) -> u64 {
        if let Some((mut conn, prefix)) = self.conn() {
            let key = format!("{prefix}rl:{bucket}");
            let cmd = redis::cmd("GET").arg(&key).to_owned();
            if let Some(n) = guard(cmd.query_async::<Option<u64>>(&mut conn)).await {
                return n.unwrap_or(0).max(self.local.count(bucket));
            }
        }
        self.local.count(bucket)
    }

    /// Forgets `bucket` (a successful login clears its failures).
    pub async fn reset(&self, bucket: &str) {
        self.local.reset(bucket);
        if let Some((mut conn, prefix)) = self.conn() {
            let cmd = redis::cmd("DEL").arg(format!("{prefix}rl:{bucket}")).to_owned();
            let _ = guard(cmd.query_async::<()>(&mut conn)).await;
        }
    }

    /// Revokes the access token `jti` until `ttl` from now (its remaining lifetime).
    pub async fn revoke(&self, jti: &str, ttl: Duration) {
        let ttl = ttl.max(Duration::from_millis(1));
        self.local.revoke(jti, ttl);
        if let Some((mut conn, prefix)) = self.conn() {
            let cmd = redis::cmd("SET")
                .arg(format!("{prefix}revoked:{jti}"))
                .arg(1)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .to_owned();
            let _ = guard(cmd.query_async::<()>(&mut conn)).await;
        }
    }

    /// Remembers in this process only that `jti` is revoked for `ttl` (a revocation read from
    /// the store: Redis may have lost it, but writing it back from every node is not needed
    /// since every node loads it the same way).
    pub fn remember_revoked(&self, jti: &str, ttl: Duration) {
        self.local.revoke(jti, ttl.max(Duration::from_millis(1)));
    }

    /// Whether the access token `jti` was revoked.
    pub async fn is_revoked(&self, jti: &str) -> bool {
        if self.local.is_revoked(jti) {
            return true;
        }
        if let Some((mut conn, prefix)) = self.conn() {
            let cmd = redis::cmd("EXISTS").arg(format!("{prefix}revoked:{jti}")).to_owned();
            if let Some(n) = guard(cmd.query_async::<u64>(&mut conn)).await {
                return n > 0;
            }
        }
        false
    }

    /// Adds `delta` (+1 join, -1 leave) to the viewer count of `channel`; returns the count.
    pub async fn add_viewers(&self, channel: &str, delta: i64) -> i64 {
        if let Some((mut conn, prefix)) = self.conn() {
            let key = format!("{prefix}viewers:{channel}");
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("INCRBY")
                .arg(&key)
                .arg(delta)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(VIEWERS_TTL.as_millis() as u64)
                .ignore();
            if let Some((n,)) = guard(pipe.query_async::<(i64,)>(&mut conn)).await {
                return n.max(0);
            }
        }
        self.local.add_viewers(channel, delta)
    }

    /// Viewer counts of several channels in one round trip (`MGET`).
    pub async fn viewers_many(&self, channels: &[&str]) -> Vec<i64> {
        if channels.is_empty() {
            return Vec::new();
        }
        if let Some((mut conn, prefix)) = self.conn() {
            let mut cmd = redis::cmd("MGET");
            for c in channels {
                cmd.arg(format!("{prefix}viewers:{c}"));
            }
            if let Some(v) = guard(cmd.query_async::<Vec<Option<i64>>>(&mut conn)).await {
                return v.into_iter().map(|n| n.unwrap_or(0).max(0)).collect();
            }
        }
        channels.iter().map(|c| self.local.viewers(c)).collect()
    }

    /// The viewer count of `channel` across nodes.
    pub async fn viewers(&self, channel: &str) -> i64 {
        if let Some((mut conn, prefix)) = self.conn() {
            let cmd = redis::cmd("GET").arg(format!("{prefix}viewers:{channel}")).to_owned();
            if let Some(n) = guard(cmd.query_async::<Option<i64>>(&mut conn)).await {
                return n.unwrap_or(0).max(0);
            }
        }
        self.local.viewers(channel)
    }
}

async fn try_connect(client: &redis::Client, link: &RedisLink) -> bool {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(OP_TIMEOUT)
        .set_number_of_retries(1);
    match tokio::time::timeout(
        Duration::from_secs(2),
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    {
        Ok(Ok(conn)) => {
            if let Ok(mut slot) = link.conn.write() {
                *slot = Some(conn);
            }
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "redis connection failed");
            false
        }
        Err(_) => false,
    }
}

/// Runs one Redis operation with a timeout; `None` (and a counted fallback) on any failure.
async fn guard<T>(fut: impl std::future::Future<Output = redis::RedisResult<T>>) -> Option<T> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "redis operation failed; using in-process state");
            metrics().shared_state_fallbacks.inc();
            None
        }
        Err(_) => {
            tracing::debug!("redis operation timed out; using in-process state");
            metrics().shared_state_fallbacks.inc();
            None
        }
    }
}
