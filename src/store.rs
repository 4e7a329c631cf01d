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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Error, ErrorKind};

/// Runs the same query code on whichever pool the store holds. `$pool` is bound to
/// `&SqlitePool` in one arm and `&PgPool` in the other, so the body is type-checked against both
/// backends: a query that only compiles for one of them is a compile error, not a runtime one.
macro_rules! with_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}

mod channels;
mod comments;
mod history;
mod search;
mod subscriptions;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;
mod users;
mod videos;

pub use channels::{
    hash_stream_key, validate_channel_name, ChannelRecord, NewChannel, StreamKey, Visibility,
    MAX_CHANNEL_TITLE_LEN,
};
pub use comments::Comment;
pub use history::{HistoryEntry, WatchUpdate};
pub use search::search_terms;
pub use subscriptions::{BillingAction, Subscription, SubscriptionStatus};
pub use users::{NewUser, User};
pub use videos::{normalize_tags, NewVideo, Video, VideoSource, VideoStatus};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite writer waits for the file lock before `SQLITE_BUSY` (WAL allows one writer).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection before the store reports `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

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
}

impl Store {
    /// Opens a pool for `url`: `sqlite://path` (the file and its parent directory are created if
    /// missing; WAL, foreign keys on, busy timeout 5 s) or `postgres://` / `postgresql://`.
    /// Does not migrate; call [`Store::migrate`].
    ///
    /// Error messages name the SQLite path or the PostgreSQL host/port/database, never the URL,
    /// which may carry a password.
    pub async fn connect(url: &str, max_connections: u32) -> crate::Result<Store> {
        let max_connections = max_connections.max(1);
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, max_connections).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, max_connections).await
        } else {
            Err(Error::invalid(
                "unsupported database URL scheme: expected sqlite://, postgres:// or postgresql://",
            ))
        }
    }

    async fn connect_sqlite(url: &str, max_connections: u32) -> crate::Result<Store> {
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
        let mut pool_opts =
            SqlitePoolOptions::new().max_connections(max_connections).acquire_timeout(ACQUIRE_TIMEOUT);
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
        Ok(Store { pool: Pool::Sqlite(pool) })
    }

    async fn connect_postgres(url: &str, max_connections: u32) -> crate::Result<Store> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| Error::with_source(ErrorKind::InvalidArgument, "bad PostgreSQL URL", e))?;
        let target =
            format!("{}:{}/{}", opts.get_host(), opts.get_port(), opts.get_database().unwrap_or("(default)"));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(|e| {
                Error::with_source(ErrorKind::Unavailable, format!("connecting to PostgreSQL at {target}"), e)
            })?;
        Ok(Store { pool: Pool::Postgres(pool) })
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

    /// `SELECT 1`: the database answers. Used by `/readyz`.
    pub async fn ping(&self) -> crate::Result<()> {
        let one: i32 = with_pool!(self, |pool| sqlx::query_scalar("SELECT 1").fetch_one(pool).await)
            .map_err(|e| Error::with_source(ErrorKind::Unavailable, "database ping failed", e))?;
        debug_assert_eq!(one, 1);
        Ok(())
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
        with_pool!(self, |pool| pool.close().await)
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
