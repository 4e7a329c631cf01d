//! The server on PostgreSQL, end to end: `tidecast migrate`, the first-run channel, publish and
//! play over RTMP, the channel CLI, and a restart that still knows the channel — all with
//! `database.url = postgres://...` against the PostgreSQL on 127.0.0.1:5432 (admin URL from
//! `TIDECAST_TEST_PG_URL` when set). Each run creates its own database and drops it.

mod common;

use std::time::Duration;

use common::*;
use sqlx::{Connection, PgConnection};

fn admin_urls() -> Vec<String> {
    match std::env::var("TIDECAST_TEST_PG_URL") {
        Ok(u) => vec![u],
        Err(_) => vec![
            "postgres://postgres@127.0.0.1:5432/postgres".to_string(),
            "postgres://root@127.0.0.1:5432/postgres".to_string(),
        ],
    }
}

/// A fresh database, dropped when this value is.
struct PgDatabase {
    admin: String,
    name: String,
    rt: tokio::runtime::Runtime,
}

impl PgDatabase {
    fn create() -> PgDatabase {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let name = format!("tidecast_e2e_{}_{:08x}", std::process::id(), rand::random::<u32>());
        for admin in admin_urls() {
            let created = rt.block_on(async {
                let mut c = PgConnection::connect(&admin).await?;
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await?;
                Ok::<_, sqlx::Error>(())
            });
            if created.is_ok() {
                return PgDatabase { admin, name, rt };
            }
        }
        panic!(
            "PostgreSQL is required for this test (set TIDECAST_TEST_PG_URL); none of {:?} worked",
            admin_urls()
        );
    }

    fn url(&self) -> String {
        let base = self.admin.rsplit_once('/').map_or(self.admin.as_str(), |(b, _)| b);
        format!("{base}/{}", self.name)
    }

    fn channel_names(&self) -> Vec<String> {
        self.rt.block_on(async {
            let mut c = PgConnection::connect(&self.url()).await.unwrap();
            sqlx::query_scalar::<_, String>("SELECT name FROM channels ORDER BY name")
                .fetch_all(&mut c)
                .await
                .unwrap()
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = self.rt.block_on(async move {
            let mut c = PgConnection::connect(&admin).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut c).await
        });
    }
}

#[test]
fn server_runs_on_postgres() {
    if !require_ffmpeg() {
        return;
    }
    let db = PgDatabase::create();
    let url = db.url();
    let mut server = TestServer::start(&[("TIDECAST__DATABASE__URL", url.as_str())]);
    assert_eq!(db.channel_names(), vec!["main".to_string()], "the first-run channel is stored in PostgreSQL");
    assert!(!server.data_dir().join("tidecast.db").exists(), "no SQLite file when PostgreSQL is configured");

    // Migrations are idempotent, and the CLI talks to the same database.
    let out = server.cli(&["migrate"]);
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
    let out = server.cli(&["channel", "create", "studio"]);
    assert!(out.status.success(), "channel create: {}", String::from_utf8_lossy(&out.stderr));
    let studio_key = String::from_utf8(out.stdout).unwrap().lines().last().unwrap().trim().to_string();
    assert!(studio_key.starts_with("live_"));
    assert_eq!(db.channel_names(), vec!["main".to_string(), "studio".to_string()]);

    // Publish and play through the PostgreSQL-backed key check.
    let mut publisher = ffmpeg_publish(&server.publish_url(&studio_key), 20);
    server.wait_live(Duration::from_secs(15));
    let out = server.data_dir().join("pg.flv");
    let mut viewer = ffmpeg_read(&server.play_url("studio"), 3.0, &out);
    let status = viewer.wait_timeout(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "viewer: {}\n{}", viewer.stderr(), server.logs());
    let probe = ffprobe(&out);
    assert!(probe.video_span() >= 2.0, "only {:.2}s of video", probe.video_span());
    publisher.kill();

    // A restart on the same database prints no new banner and still accepts the key.
    server.restart();
    assert!(
        wait_until(Duration::from_secs(5), || server.logs().matches("tidecast is running").count() >= 2),
        "the server did not come back:\n{}",
        server.logs()
    );
    assert!(!server.stdout().contains("Stream Key:"), "a restart must not create another default channel");
    let _publisher = ffmpeg_publish(&server.publish_url(&studio_key), 20);
    server.wait_metric(r#"tidecast_ingest_sessions{protocol="rtmp"}"#, Duration::from_secs(15), |v| v >= 1.0);
    assert!(!server.logs().contains(&studio_key), "the stream key appears in the server log");
}
