//! Test support shared by the store's unit tests and the integration tests in `tests/`: a
//! migrated store on a fresh SQLite file and on a fresh PostgreSQL database, dropped afterwards.
//!
//! PostgreSQL is required, not optional: if it is unreachable the tests fail (CI runs it). The
//! admin URL is `TIDECAST_TEST_PG_URL`, or else `postgres://postgres@127.0.0.1:5432/postgres`,
//! then the same as user `root`. Not part of the server's API; public only so `tests/` can use it.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, Executor, PgConnection};

use super::{Backend, Store};

/// One backend under test. Dropping it drops the PostgreSQL database (even if the test panicked)
/// and deletes the SQLite temp dir.
pub struct TestDb {
    pub label: &'static str,
    pub store: Store,
    /// URL to reopen the same database with.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    _pg: Option<PgCleanup>,
}

impl TestDb {
    /// A migrated SQLite store and a migrated PostgreSQL store, each on a fresh database.
    pub async fn both() -> Vec<TestDb> {
        vec![Self::sqlite().await, Self::postgres().await]
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("create a temp dir");
        // A missing parent directory must be created by `connect`.
        let url = format!("sqlite://{}/nested/dir/tidecast.db", dir.path().display());
        let store = Store::connect(&url, 4).await.expect("test database setup");
        store.migrate().await.expect("test database setup");
        assert_eq!(store.backend(), Backend::Sqlite);
        TestDb { label: "sqlite", store, url, _dir: Some(dir), _pg: None }
    }

    pub async fn postgres() -> TestDb {
        let (admin_url, mut admin) = pg_admin().await;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tidecast_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            hex::encode(rand::random::<[u8; 4]>())
        );
        admin.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("test database setup");
        admin.close().await.expect("test database setup");
        let url = with_database(&admin_url, &name);
        let store = Store::connect(&url, 4).await.expect("test database setup");
        store.migrate().await.expect("test database setup");
        assert_eq!(store.backend(), Backend::Postgres);
        TestDb { label: "postgres", store, url, _dir: None, _pg: Some(PgCleanup { admin_url, name }) }
    }
}

/// Connects to the PostgreSQL admin database, trying the candidate URLs in order; panics (does
/// not skip) if none answers.
pub async fn pg_admin() -> (String, PgConnection) {
    let candidates = match std::env::var("TIDECAST_TEST_PG_URL") {
        Ok(url) => vec![url],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
            "postgres://root@127.0.0.1:5432/postgres".to_string(),
        ],
    };
    let mut errors = Vec::new();
    for url in candidates {
        match PgConnection::connect(&url).await {
            Ok(conn) => return (url, conn),
            Err(e) => errors.push(format!("{e}")),
        }
    }
    panic!(
        "PostgreSQL is required for store tests and was not reachable (set TIDECAST_TEST_PG_URL \
         to an admin URL): {errors:?}"
    );
}

/// `url` with its database path replaced by `db`, keeping any query string.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{db}?{query}"),
        None => format!("{base}/{db}"),
    }
}

struct PgCleanup {
    admin_url: String,
    name: String,
}

impl Drop for PgCleanup {
    fn drop(&mut self) {
        // Drop is synchronous and may run while the test's runtime is unwinding, so drop the
        // database from a thread with its own runtime. FORCE (PostgreSQL 13+) ends the store's
        // pooled connections that are still open.
        let admin_url = self.admin_url.clone();
        let sql = format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name);
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                admin.execute(sql.as_str()).await?;
                admin.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = result {
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}
