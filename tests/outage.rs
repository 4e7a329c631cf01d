//! Fault tests: the real binary while its PostgreSQL or its Redis goes away and comes back.
//!
//! - PostgreSQL: a database cluster of the test's own (`initdb` + `pg_ctl` on a temp data dir
//!   and a free port; the machine's shared server is never touched) under a server publishing
//!   a public channel. LL-HLS players (blocking playlist reloads and preload-hinted parts) keep
//!   playing while the cluster is stopped, without a request taking longer than a part interval
//!   plus a margin; watch updates acknowledged during the outage are written once it is back;
//!   `/readyz` says 503 within a second of the stop and 200 within seconds of the restart.
//! - Logouts survive a restart of the server (SQLite, no Redis), and of Redis without
//!   persistence (a `redis-server --save ''` of the test's own, on a free port).
//!
//! Every wait is bounded; only processes started here are stopped, by PID (or by `pg_ctl` on
//! the test's own data dir); temp dirs are removed when their guards drop.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tidecast::protocols::hls::parse_media_playlist;
use tidecast::store::{NewVideo, Store, VideoSource, VideoStatus, Visibility};

const PLAYLIST: &str = "/live/main/source/index.m3u8";
const MEDIA_BASE: &str = "/live/main/source/";
/// The default `hls.part_target`.
const PART_TARGET: Duration = Duration::from_millis(200);
/// What an LL-HLS request may take beyond a part interval on this shared, busy machine. Far
/// below the store's old 10 s pool timeout, and below its 1 s acquire timeout.
const MARGIN: Duration = Duration::from_millis(700);

/// Like `require_tool` for tools that answer `--version` (not `-version`).
fn require_versioned(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found && std::env::var_os("CI").is_some() {
        panic!("{tool} is required in CI (postgresql-15 and redis-server)");
    }
    if !found {
        eprintln!("\n*** SKIP: {tool} not found on PATH; this test did NOT run. ***\n");
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// A PostgreSQL cluster of our own

/// `initdb` + `pg_ctl` on a temp dir. PostgreSQL refuses to run as root, so as root the tools
/// run as the `postgres` user (`runuser`), which then owns the temp dir.
struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl PgCluster {
    fn tool(&self, program: &str) -> Command {
        as_postgres(program)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn init() -> PgCluster {
        let dir = tempfile::Builder::new().prefix("tidecast-pg").tempdir().unwrap();
        if is_root() {
            let ok = Command::new("chown").arg("postgres:").arg(dir.path()).status().unwrap().success();
            assert!(ok, "chown of the cluster dir to postgres failed");
        }
        let cluster = PgCluster { dir, port: free_port() };
        let out = cluster
            .tool("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(cluster.data())
            .output()
            .expect("initdb (postgresql-15) must be on PATH");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        cluster.start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .tool("pg_ctl")
            .args(["start", "-w", "-t", "30", "-o", &opts, "-l"])
            .arg(self.dir.path().join("server.log"))
            .arg("-D")
            .arg(self.data())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Fast shutdown: clients are disconnected at once, as in a crash of the database host.
    fn stop(&self) {
        let out = self
            .tool("pg_ctl")
            .args(["stop", "-w", "-t", "30", "-m", "fast", "-D"])
            .arg(self.data())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Our own data dir only; `immediate` since the test is over either way.
        let _ = self
            .tool("pg_ctl")
            .args(["stop", "-w", "-t", "30", "-m", "immediate", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn as_postgres(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP with JSON

fn login(server: &TestServer, email: &str) -> String {
    let body = json!({"email": email, "password": "correct horse battery"});
    let (s, v) = http_json(server.http, "POST", "/api/v1/auth/login", None, Some(body));
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

fn me_status(server: &TestServer, token: &str) -> u16 {
    http_json(server.http, "GET", "/api/v1/users/me", Some(token), None).0
}

// ---------------------------------------------------------------------------------------------
// An LL-HLS player

/// `(msn, part)` of a part URI `<session>/part-M-I.m4s`.
fn part_of_uri(uri: &str) -> (u64, u32) {
    let name = uri.rsplit('/').next().unwrap();
    let rest = name.strip_prefix("part-").and_then(|r| r.strip_suffix(".m4s")).unwrap();
    let (m, i) = rest.split_once('-').unwrap();
    (m.parse().unwrap(), i.parse().unwrap())
}

/// One request a player made: when it started, what, its status and how long it took.
#[derive(Clone)]
struct Sample {
    at: Instant,
    what: String,
    status: u16,
    took: Duration,
}

/// Plays like an LL-HLS client until `stop`: a blocking reload for the next part, then that
/// (preload-hinted) part itself, and so on.
fn play(http: SocketAddr, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Sample>>>) {
    let r = get_with(http, PLAYLIST, &[], Duration::from_secs(10));
    assert_eq!(r.status, 200);
    let pl = parse_media_playlist(&r.text()).unwrap();
    let mut hint = pl.preload_hints[0].clone();
    while !stop.load(Ordering::Relaxed) {
        let (msn, part) = part_of_uri(&hint);
        let path = format!("{PLAYLIST}?_HLS_msn={msn}&_HLS_part={part}");
        let at = Instant::now();
        let r = get_with(http, &path, &[], Duration::from_secs(15));
        log.lock().unwrap().push(Sample { at, what: path, status: r.status, took: r.elapsed });
        if r.status != 200 {
            thread::sleep(PART_TARGET);
            continue;
        }
        let pl = parse_media_playlist(&r.text()).unwrap();
        let Some(next) = pl.preload_hints.first() else { continue };
        hint = next.clone();
        let path = format!("{MEDIA_BASE}{hint}");
        let at = Instant::now();
        let r = get_with(http, &path, &[], Duration::from_secs(15));
        log.lock().unwrap().push(Sample { at, what: path, status: r.status, took: r.elapsed });
    }
}

fn quantile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
}

/// `/readyz` status and how long it took to answer.
fn readyz(server: &TestServer) -> (u16, Duration) {
    let r = get_with(server.http, "/readyz", &[], Duration::from_secs(15));
    (r.status, r.elapsed)
}

#[test]
fn llhls_and_readyz_ride_out_a_postgres_outage() {
    if !require_ffmpeg() || !require_versioned("pg_ctl") || !require_versioned("initdb") {
        return;
    }
    let pg = PgCluster::init();
    let url = pg.url();
    let server = TestServer::start(&[
        ("TIDECAST__DATABASE__URL", url.as_str()),
        ("TIDECAST__API__WATCH_FLUSH_INTERVAL", "200ms"),
    ]);

    // A public video to report progress on, and a viewer.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(Store::connect(&url, 1)).unwrap();
    let video = rt
        .block_on(store.create_video(NewVideo {
            channel_id: None,
            owner_id: None,
            title: "film".into(),
            description: String::new(),
            tags: vec![],
            visibility: Visibility::Public,
            source: VideoSource::Upload,
            duration_ms: 3_600_000,
            status: VideoStatus::Ready,
        }))
        .unwrap();
    let token = signed_in(&server, "watcher@example.com");
    let (_, me) = http_json(server.http, "GET", "/api/v1/users/me", Some(&token), None);
    let user_id = me["id"].as_i64().unwrap();
    let watch = |pos: u32| {
        let path = format!("/api/v1/videos/{}/watch", video.id);
        let started = Instant::now();
        let (s, v) =
            http_json(server.http, "POST", &path, Some(&token), Some(json!({"position_seconds": pos})));
        (s, v, started.elapsed())
    };
    assert_eq!(watch(1).0, 204);

    // The public channel `main`, played by two LL-HLS players.
    let _publisher = ffmpeg_publish(&server.publish_url(&server.key), 60);
    server.wait_live(Duration::from_secs(20));
    wait_media_playlist(&server, PLAYLIST, Duration::from_secs(20), "a preload hint", |pl| {
        !pl.preload_hints.is_empty() && !pl.segments.is_empty()
    });
    assert_eq!(readyz(&server).0, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let players: Vec<_> = (0..2)
        .map(|_| {
            let (stop, samples, http) = (stop.clone(), samples.clone(), server.http);
            thread::spawn(move || play(http, stop, samples))
        })
        .collect();
    thread::sleep(Duration::from_secs(2));

    // The database goes away.
    pg.stop();
    let down_at = Instant::now();
    let mut first_503 = None;
    let mut readyz_times = Vec::new();
    while down_at.elapsed() < Duration::from_secs(3) {
        let (status, took) = readyz(&server);
        readyz_times.push(took);
        if status == 503 && first_503.is_none() {
            first_503 = Some(down_at.elapsed());
        }
        if first_503.is_some() {
            assert_eq!(status, 503, "/readyz went back to {status} while the database is down");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let first_503 = first_503.expect("/readyz never said 503 while the database was down");
    assert!(first_503 <= Duration::from_secs(1), "/readyz said 503 only {first_503:?} after the stop");

    // Watch progress during the outage (past the caches' freshness, so their stale copies
    // answer): every acknowledged update must be written once the database is back.
    let mut acked = 0;
    let mut last_acked = 0;
    for pos in 100..=130 {
        let (s, v, took) = watch(pos);
        assert!(took < Duration::from_secs(2), "a watch update took {took:?} during the outage");
        match s {
            204 => {
                acked += 1;
                last_acked = pos;
            }
            503 => {}
            _ => panic!("watch update during the outage: {s} {v}"),
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(acked > 0, "no watch update was accepted during the outage");
    while down_at.elapsed() < Duration::from_secs(9) {
        let (status, took) = readyz(&server);
        assert_eq!(status, 503);
        readyz_times.push(took);
        thread::sleep(Duration::from_millis(200));
    }

    // The database comes back.
    pg.start();
    let up_at = Instant::now();
    let ok = wait_until(Duration::from_secs(10), || {
        let (status, took) = readyz(&server);
        readyz_times.push(took);
        status == 200
    });
    assert!(ok, "/readyz did not say 200 within 10 s of the restart:\n{}", server.logs());
    let recovered = up_at.elapsed();
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for p in players {
        p.join().expect("an LL-HLS player panicked");
    }

    let written = wait_until(Duration::from_secs(10), || {
        rt.block_on(store.watch_position(user_id, video.id)).ok().flatten()
            == Some(i64::from(last_acked) * 1000)
    });
    assert!(
        written,
        "acknowledged watch progress {last_acked}s was not written after the outage (stored: {:?})\n{}",
        rt.block_on(store.watch_position(user_id, video.id)),
        server.logs()
    );

    let samples = samples.lock().unwrap().clone();
    let during: Vec<&Sample> = samples.iter().filter(|s| s.at >= down_at && s.at <= up_at).collect();
    let bad: Vec<(&str, u16)> =
        during.iter().filter(|s| s.status != 200).map(|s| (s.what.as_str(), s.status)).collect();
    let mut took: Vec<Duration> = during.iter().map(|s| s.took).collect();
    let max = quantile(&mut took, 1.0);
    let p99 = quantile(&mut took, 0.99);
    let readyz_max = quantile(&mut readyz_times, 1.0);
    eprintln!(
        "outage: {} LL-HLS requests, p99 {p99:?}, max {max:?}; readyz 503 after {first_503:?}, max {readyz_max:?}; \
         200 again {recovered:?} after the restart; {acked} watch updates acknowledged",
        during.len()
    );
    assert!(during.len() >= 20, "the players barely played during the outage: {}", during.len());
    assert!(bad.is_empty(), "LL-HLS requests failed during the outage: {bad:#?}\n{}", server.logs());
    assert!(
        max <= PART_TARGET + MARGIN,
        "an LL-HLS request took {max:?} during the outage: {:#?}",
        during
            .iter()
            .filter(|s| s.took > PART_TARGET + MARGIN)
            .map(|s| (&s.what, s.took))
            .collect::<Vec<_>>()
    );
    assert!(readyz_max <= Duration::from_secs(1), "/readyz took {readyz_max:?}");
    drop(server);
    drop(pg);
}

// ---------------------------------------------------------------------------------------------
// Logouts across restarts, and Redis going away

#[test]
fn a_logout_survives_a_server_restart() {
    let mut server = TestServer::start(&[]);
    let token = signed_in(&server, "leaver@example.com");
    assert_eq!(me_status(&server, &token), 200);
    let (s, _) = http_json(server.http, "POST", "/api/v1/auth/logout", Some(&token), None);
    assert_eq!(s, 204);
    assert_eq!(me_status(&server, &token), 401);
    server.restart();
    assert_eq!(me_status(&server, &token), 401, "the logged-out token works again after a restart");
    let other = login(&server, "leaver@example.com");
    assert_eq!(me_status(&server, &other), 200, "a new login works");
}

/// A `redis-server` without persistence on a port of our own.
struct Redis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            dir: tempfile::Builder::new().prefix("tidecast-redis").tempdir().unwrap(),
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let up = wait_until(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok_and(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
            })
        });
        assert!(up, "redis-server did not start on port {}", self.port);
    }

    /// Kills our redis-server (by its PID) and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_child(&mut child, Duration::from_secs(10));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn logouts_hold_through_redis_and_server_restarts() {
    if !require_versioned("redis-server") {
        return;
    }
    let mut redis = Redis::start();
    let url = redis.url();
    // The server connects to Redis during start-up when it answers, as it does here.
    let mut server = TestServer::start(&[("TIDECAST__REDIS__URL", url.as_str())]);
    let token = signed_in(&server, "redis@example.com");
    let (s, _) = http_json(server.http, "POST", "/api/v1/auth/logout", Some(&token), None);
    assert_eq!(s, 204);
    assert_eq!(me_status(&server, &token), 401);

    // Redis goes away: nothing breaks, the logout holds.
    redis.stop();
    let while_down = login(&server, "redis@example.com");
    assert_eq!(me_status(&server, &while_down), 200);
    assert_eq!(me_status(&server, &token), 401);

    // Redis comes back empty (no persistence), then the server restarts too: the store still
    // knows the logout.
    redis.spawn();
    assert_eq!(me_status(&server, &token), 401);
    server.restart();
    assert_eq!(me_status(&server, &token), 401, "the logged-out token works again after both restarts");
    assert_eq!(me_status(&server, &while_down), 200);
    let (s, _) = http_json(server.http, "POST", "/api/v1/auth/logout", Some(&while_down), None);
    assert_eq!(s, 204);
    redis.stop();
    redis.spawn();
    server.restart();
    assert_eq!(me_status(&server, &while_down), 401);
}
