//! The store: durable state (users, channels) in SQLite or PostgreSQL behind one API.
//!
//! Where it sits: the registry authorizes publishers through [`Store::authorize_stream_key`], the
//! HTTP API creates users and channels, `/readyz` calls [`Store::ping`]. It is never on the frame
//! path. This module and its children are the only place SQL lives (ARCHITECTURE.md, "Store and
//! shared state").
//!
//! Two backends, one API: [`Store`] wraps `enum Pool { Sqlite, Postgres }` and the private
//! `with_pool!` macro expands the same query code once per backend, so each query is written once
//! with `$1, $2` placeholders (sqlx's SQLite driver binds `$N` by number, like PostgreSQL). SQL is
//! forked per backend only where the dialects truly differ: today only the migrations
//! (`migrations/sqlite`, `migrations/postgres`), for `AUTOINCREMENT` vs `BIGSERIAL` and
//! `BLOB` vs `BYTEA`.
//!
//! Invariants:
//! - Every integer column decodes as `i64` on both backends (PostgreSQL uses BIGINT throughout).
//! - Timestamps are unix milliseconds (`*_at_ms`).
//! - Stream keys are stored only as SHA-256 hashes; passwords only as Argon2id PHC strings
//!   (hashed by `crate::auth`, never here). No error message or `Debug` output carries either.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Error, ErrorKind};

/// Runs the same query code on whichever pool the store holds. `$pool` is bound to
/// `&SqlitePool` in one arm and `&PgPool` in the other, so the body is type-checked against both
/// backends: a query that only compiles for one of them is a compile error, not a runtime one.
///
/// Every call passes the circuit breaker (`breaker`): while it is open the body does not run
/// and the result is `sqlx::Error::PoolTimedOut` (so `Unavailable`) at once.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {{
        let store: &$crate::store::Store = &$store;
        if store.breaker.admit() {
            let result = match &store.pool {
                $crate::store::Pool::Sqlite($pool) => $body,
                $crate::store::Pool::Postgres($pool) => $body,
            };
            store.breaker.record(&result);
            result
        } else {
            Err(sqlx::Error::PoolTimedOut.into())
        }
    }};
}

mod breaker;
pub mod cache;
mod channels;
mod comments;
mod history;
mod ladders;
mod recordings;
mod restream;
mod revocations;
mod search;
mod sources;
mod subscriptions;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod users;
mod videos;

pub use breaker::BreakerSettings;
pub use channels::{
    hash_stream_key, validate_channel_name, ChannelRecord, NewChannel, StreamKey, Visibility,
    MAX_CHANNEL_TITLE_LEN,
};
pub use comments::Comment;
pub use history::{HistoryEntry, WatchUpdate};
pub use recordings::{NewRecording, Recording, RecordingProgress, RecordingSettings, RecordingState};
pub use restream::{DestinationRecord, DestinationUpdate};
pub use revocations::Revocation;
pub use search::search_terms;
pub use sources::SourceRecord;
pub use subscriptions::{BillingAction, Subscription, SubscriptionStatus};
pub use users::{NewUser, User};
pub use videos::{normalize_tags, NewVideo, Video, VideoSource, VideoStatus};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for the file lock before `SQLITE_BUSY` (WAL allows one writer).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for its `SELECT 1`: it must answer within a second either way, and
/// a database that takes longer than this for `SELECT 1` is not one to send traffic to.
const PING_TIMEOUT: Duration = Duration::from_millis(500);

/// How a [`Store`] behaves when the database does not answer, from `[database]`.
#[derive(Debug, Clone, Copy)]
pub struct StoreSettings {
    pub max_connections: u32,
    /// How long a call waits for a pooled connection before it fails with `Unavailable`.
    /// Short, because API and LL-HLS requests wait on it: while the database is down sqlx
    /// keeps retrying the connection until this passes.
    pub acquire_timeout: Duration,
    pub breaker: BreakerSettings,
}

impl StoreSettings {
    /// Defaults (those of `[database]`) with `max_connections`.
    pub fn with_max_connections(max_connections: u32) -> StoreSettings {
        StoreSettings {
            max_connections,
            acquire_timeout: Duration::from_secs(1),
            breaker: BreakerSettings::default(),
        }
    }
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The pool behind a [`Store`]. Cloning a sqlx pool is cheap (an `Arc`), and so is `Store`.
#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The durable store: users and channels, in SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// Shared by every clone: one view of whether the database answers.
    breaker: Arc<breaker::Breaker>,
}

impl Store {
    /// Opens a pool for `url`: `sqlite://path` (the file and its parent directory are created if
    /// missing; WAL, foreign keys on, busy timeout 5 s) or `postgres://` / `postgresql://`.
    /// Does not migrate; call [`Store::migrate`].
    ///
    /// Error messages name the SQLite path or the PostgreSQL host/port/database, never the URL,
    /// which may carry a password.
    pub async fn connect(url: &str, max_connections: u32) -> crate::Result<Store> {
        Self::connect_with(url, StoreSettings::with_max_connections(max_connections)).await
    }

    /// [`Store::connect`] with explicit outage behaviour.
    pub async fn connect_with(url: &str, settings: StoreSettings) -> crate::Result<Store> {
        let settings = StoreSettings { max_connections: settings.max_connections.max(1), ..settings };
        let pool = if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, &settings).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, &settings).await?
        } else {
            return Err(Error::invalid(
                "unsupported database URL scheme: expected sqlite://, postgres:// or postgresql://",
            ));
        };
        Ok(Store { pool, breaker: Arc::new(breaker::Breaker::new(settings.breaker)) })
    }

    async fn connect_sqlite(url: &str, settings: &StoreSettings) -> crate::Result<Pool> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "bad SQLite URL", e))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is the documented pairing for WAL: durable across application crashes, and
            // a power loss can only lose the last transactions, never corrupt the file.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let path = opts.get_filename().to_path_buf();
        if !in_memory {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                tokio::fs::create_dir_all(dir).await.map_err(|e| {
                    Error::with_source(
                        ErrorKind::Unavailable,
                        format!("creating database directory {}", dir.display()),
                        e,
                    )
                })?;
            }
        }
        let mut pool_opts = SqlitePoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout);
        if in_memory {
            // An in-memory database lives only as long as one connection to it does: keep one
            // open forever so the pool reaping idle connections does not wipe the data.
            pool_opts = pool_opts.min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        let pool = pool_opts.connect_with(opts).await.map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                format!("opening SQLite database {}", path.display()),
                e,
            )
        })?;
        Ok(Pool::Sqlite(pool))
    }

    async fn connect_postgres(url: &str, settings: &StoreSettings) -> crate::Result<Pool> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "bad PostgreSQL URL", e))?;
        let target =
            format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default)"));
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(|e| {
                Error::with_source(ErrorKind::Unavailable, format!("connecting to PostgreSQL at {target}"), e)
            })?;
        Ok(Pool::Postgres(pool))
    }

    /// Applies the embedded migrations for this backend. Idempotent: already-applied migrations
    /// are skipped (sqlx records them, with checksums, in `_sqlx_migrations`). On PostgreSQL,
    /// sqlx takes an advisory lock, so nodes starting together do not race.
    pub async fn migrate(&self) -> crate::Result<()> {
        let result = match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
            Pool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
        };
        result.map_err(|e| Error::with_source(ErrorKind::Internal, "running database migrations", e))
    }

    /// `SELECT 1`: the database answers. Used by `/readyz`, so it answers within a second
    /// either way: at once while the circuit is open (except when it is this call's turn to
    /// probe), else within [`PING_TIMEOUT`], which counts as a failure for the breaker.
    pub async fn ping(&self) -> crate::Result<()> {
        let ping = async { with_pool!(self, |pool| sqlx::query_scalar("SELECT 1").fetch_one(pool).await) };
        let one: i32 = match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(result) => {
                result.map_err(|e| Error::with_source(ErrorKind::Unavailable, "database ping failed", e))?
            }
            Err(_) => {
                self.breaker.failure();
                return Err(Error::unavailable("database ping timed out"));
            }
        };
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Whether the circuit breaker is open: the database failed repeatedly and calls fail fast.
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool, waiting for checked-out connections to be returned. For SQLite this also
    /// checkpoints the WAL into the main file when the last connection closes.
    pub async fn close(&self) {
        // Not through `with_pool!`: closing is not a query and must not wait for the breaker.
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).expect("system clock is after 1970");
    i64::try_from(since_epoch.as_millis()).expect("unix milliseconds fit in i64 until year 292M")
}

/// If `e` is a unique-constraint violation, which column it was on, as far as the driver tells:
/// PostgreSQL names the constraint (`channels_name_key`), SQLite puts `table.column` in the
/// message (`UNIQUE constraint failed: channels.name`). Returns `Some("")` for a violation whose
/// column cannot be told.
fn unique_violation_column<'a>(e: &sqlx::Error, columns: &[&'a str]) -> Option<&'a str> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if !db.is_unique_violation() {
        return None;
    }
    let haystack = format!("{} {}", db.constraint().unwrap_or(""), db.message());
    Some(columns.iter().copied().find(|c| haystack.contains(c)).unwrap_or(""))
}
