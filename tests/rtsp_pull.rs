//! RTSP pull, end to end: a camera of our own making (GStreamer's RTSP server,
//! `tests/rtsp/camera.py`, H.264 + AAC behind Digest auth) is set as a channel's source through
//! the API; the channel then plays over LL-HLS and RTMP like any published one. Pulled over TCP
//! and UDP; the camera is killed and started again and the channel resumes with a
//! discontinuity; an on-demand source starts on its first viewer and stops after the linger;
//! cameras that answer garbage (`tests/rtsp/fake_camera.py`) fail one pull each, never the
//! server. The camera's password never appears in API answers, logs or metrics.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";
const CAM_USER: &str = "operator";
const CAM_PASSWORD: &str = "cam-secret-pw-42";
const LIVE_TIMEOUT: Duration = Duration::from_secs(25);
const SESSIONS: &str = r#"tidecast_ingest_sessions{protocol="rtsp"}"#;
const RECONNECTS: &str = r#"tidecast_pull_reconnects_total{protocol="rtsp"}"#;

/// GStreamer's RTSP server from Python (apt `gir1.2-gst-rtsp-server-1.0`, `python3-gi`).
fn require_gst_rtsp() -> bool {
    let ok = Command::new(PYTHON)
        .args([
            "-c",
            "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("GStreamer's RTSP server for Python is required in CI (tests/run.sh installs it)");
        }
        eprintln!("\n*** SKIP: no GStreamer RTSP server for {PYTHON}; this test did NOT run. `bash tests/run.sh` installs it. ***\n");
    }
    ok && require_ffmpeg()
}

/// A camera script child, killed when dropped.
struct Camera {
    child: Child,
    port: u16,
}

impl Camera {
    /// `script` is `camera.py` or `fake_camera.py`; waits for its `READY <port>` line.
    fn start(script: &str, args: &[&str]) -> Camera {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rtsp/");
        let mut child = Command::new(PYTHON)
            .arg(format!("{path}{script}"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {script}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the camera never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{script} {args:?}: no READY line"));
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{script}: {line}"));
        Camera { child, port }
    }

    /// The real camera with Digest auth, on `port` (0: any).
    fn real(port: u16, extra: &[&str]) -> Camera {
        let port = port.to_string();
        let mut args = vec!["--port", &port, "--user", CAM_USER, "--password", CAM_PASSWORD];
        args.extend_from_slice(extra);
        Camera::start("camera.py", &args)
    }

    fn url(&self) -> String {
        format!("rtsp://{CAM_USER}:{CAM_PASSWORD}@127.0.0.1:{}/cam", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server with channel `cam` owned by a fresh user; returns (server, owner token).
fn server_with(extra: &[(&str, &str)]) -> (TestServer, String) {
    let mut env = vec![("TIDECAST__RTSP__RETRY_MAX", "1s")];
    env.extend_from_slice(extra);
    let server = TestServer::start(&env);
    let owner = signed_in(&server, "owner@example.com");
    let (s, v) =
        http_json(server.http, "POST", "/api/v1/channels", Some(&owner), Some(json!({"name": "cam"})));
    assert_eq!(s, 201, "{v}");
    (server, owner)
}

fn set_source(server: &TestServer, owner: &str, body: Value) -> Value {
    let (s, v) = http_json(server.http, "PUT", "/api/v1/channels/cam/source", Some(owner), Some(body));
    assert_eq!(s, 200, "{v}");
    v
}

fn source(server: &TestServer, owner: &str) -> Value {
    let (s, v) = http_json(server.http, "GET", "/api/v1/channels/cam/source", Some(owner), None);
    assert_eq!(s, 200, "{v}");
    v
}

fn wait_state(server: &TestServer, owner: &str, state: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(timeout, || {
        last = source(server, owner);
        last["state"] == state
    });
    assert!(ok, "source never reached {state}: {last}\n{}", server.logs());
    last
}

fn assert_no_password(what: &str, text: &str) {
    assert!(!text.contains(CAM_PASSWORD), "the camera password reached {what}");
}

#[test]
fn pulled_camera_plays_over_ll_hls_and_rtmp_over_tcp_and_udp() {
    if !require_gst_rtsp() {
        return;
    }
    let camera = Camera::real(0, &[]);
    let (server, owner) = server_with(&[]);
    let v = set_source(&server, &owner, json!({"url": camera.url()}));
    assert_eq!(v["url"], format!("rtsp://127.0.0.1:{}/cam", camera.port), "{v}");
    assert_eq!((v["credentials_set"].as_bool(), v["transport"].as_str()), (Some(true), Some("tcp")));
    assert_no_password("the API answer", &v.to_string());

    let v = wait_state(&server, &owner, "live", LIVE_TIMEOUT);
    assert_no_password("the API answer", &v.to_string());
    assert_eq!(server.metric(SESSIONS), 1.0);
    decode_ll_hls(&server, "cam", 3);
    let master = server.get("/live/cam/index.m3u8").body;
    assert!(master.contains("avc1.") && master.contains("mp4a.40.2"), "{master}");
    assert!(master.contains("RESOLUTION=640x360"), "{master}");

    // RTMP play of the pulled channel.
    let out = server.data_dir().join("rtsp-rtmp-play.flv");
    let mut r = ffmpeg_read(&server.play_url("cam"), 2.0, &out);
    assert!(
        r.wait_timeout(Duration::from_secs(20)).is_some_and(|s| s.success()),
        "rtmp play: {}",
        r.stderr()
    );
    let probe = ffprobe(&out);
    assert!(probe.video().count() >= 25, "{} video packets over RTMP play", probe.video().count());
    assert!(probe.streams.iter().any(|s| s.codec_name == "aac"));

    // The same camera over UDP: the source restarts on the new transport.
    let v = set_source(&server, &owner, json!({"url": camera.url(), "transport": "udp"}));
    assert_eq!(v["transport"], "udp");
    let started = Instant::now();
    assert!(
        wait_until(LIVE_TIMEOUT, || server.logs().matches("pulling").count() >= 2
            && source(&server, &owner)["state"] == "live"),
        "no UDP pull\n{}",
        server.logs()
    );
    eprintln!("UDP pull live after {:?}", started.elapsed());
    decode_ll_hls(&server, "cam", 3);

    assert_no_password("the log", &server.logs());
    assert_no_password("/metrics", &server.metrics_text());
}

#[test]
fn a_wrong_password_is_retried_and_reported_without_the_password() {
    if !require_gst_rtsp() {
        return;
    }
    let camera = Camera::real(0, &[]);
    let (server, owner) = server_with(&[]);
    let wrong = format!("rtsp://{CAM_USER}:not-{CAM_PASSWORD}@127.0.0.1:{}/cam", camera.port);
    set_source(&server, &owner, json!({"url": wrong}));
    let before = server.metric(RECONNECTS);
    server.wait_metric(RECONNECTS, LIVE_TIMEOUT, |v| v >= before + 2.0);
    let v = source(&server, &owner);
    assert_ne!(v["state"], "live", "{v}");
    let err = v["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(err.contains("401") || err.to_lowercase().contains("unauthorized"), "{v}");
    assert_eq!(server.metric(SESSIONS), 0.0, "a refused pull never took the channel");
    assert_no_password("the log", &server.logs());
    assert!(!server.logs().contains(&format!("not-{CAM_PASSWORD}")));

    // Fixing the password through the API (apart from the URL) brings it live.
    let bare = format!("rtsp://127.0.0.1:{}/cam", camera.port);
    set_source(&server, &owner, json!({"url": bare, "username": CAM_USER, "password": CAM_PASSWORD}));
    wait_state(&server, &owner, "live", LIVE_TIMEOUT);

    // Bad input is a 400 that does not echo the URL; deleting stops the pull.
    let (s, v) = http_json(
        server.http,
        "PUT",
        "/api/v1/channels/cam/source",
        Some(&owner),
        Some(json!({"url": "http://u:leaky-secret@example.com/"})),
    );
    assert_eq!(s, 400, "{v}");
    assert!(!v.to_string().contains("leaky-secret"), "{v}");
    let (s, _) = http_json(server.http, "DELETE", "/api/v1/channels/cam/source", Some(&owner), None);
    assert_eq!(s, 204);
    server.wait_metric(SESSIONS, LIVE_TIMEOUT, |v| v == 0.0);
    let (s, _) = http_json(server.http, "GET", "/api/v1/channels/cam/source", Some(&owner), None);
    assert_eq!(s, 404);
    // Someone else's channel: not theirs to set.
    let other = signed_in(&server, "other@example.com");
    let (s, _) = http_json(
        server.http,
        "PUT",
        "/api/v1/channels/cam/source",
        Some(&other),
        Some(json!({"url": bare})),
    );
    assert_eq!(s, 403);
}

/// A loopback TCP port free right now (the camera must come back on the same port).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_camera_that_restarts_resumes_the_channel_with_a_discontinuity() {
    if !require_gst_rtsp() {
        return;
    }
    let port = free_port();
    let mut camera = Camera::real(port, &[]);
    let (server, owner) = server_with(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "30s")]);
    set_source(&server, &owner, json!({"url": camera.url()}));
    wait_state(&server, &owner, "live", LIVE_TIMEOUT);
    decode_ll_hls(&server, "cam", 2);
    // An RTMP viewer watches across the camera's restart.
    let mut viewer = RtmpPlayer::play(server.rtmp, "cam", false, Duration::from_secs(10));
    assert!(viewer.read_video(10, Duration::from_secs(10)), "the RTMP viewer got video");

    camera.kill();
    let reconnects = server.metric(RECONNECTS);
    wait_state(&server, &owner, "retrying", Duration::from_secs(20));
    let camera = Camera::real(port, &[]);
    wait_state(&server, &owner, "live", LIVE_TIMEOUT);
    assert!(server.metric(RECONNECTS) > reconnects);
    assert!(server.logs().contains("resumed=true"), "the pull continued the live session\n{}", server.logs());
    let seen = viewer.video.len();
    assert!(
        viewer.read_video(seen + 50, Duration::from_secs(15)),
        "the RTMP viewer kept playing after the restart"
    );
    // The media playlist marks the break.
    let ok = wait_until(Duration::from_secs(15), || {
        server.get("/live/cam/source/index.m3u8").body.contains("#EXT-X-DISCONTINUITY\n")
    });
    assert!(ok, "no discontinuity in:\n{}", server.get("/live/cam/source/index.m3u8").body);
    decode_ll_hls(&server, "cam", 2);
    drop(camera);
}

#[test]
fn on_demand_pull_starts_on_the_first_viewer_and_stops_after_the_linger() {
    if !require_gst_rtsp() {
        return;
    }
    let camera = Camera::real(0, &[]);
    let (server, owner) =
        server_with(&[("TIDECAST__RTSP__LINGER", "3s"), ("TIDECAST__RTSP__START_TIMEOUT", "25s")]);
    set_source(&server, &owner, json!({"url": camera.url(), "on_demand": true}));
    assert_eq!(source(&server, &owner)["state"], "waiting");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.metric(SESSIONS), 0.0, "nobody watches: nothing pulled");

    // The first LL-HLS request starts the camera and waits for it (its first sender report can
    // take a few seconds, more on a loaded machine).
    let started = Instant::now();
    let master = http_get_within(server.http, "/live/cam/index.m3u8", Duration::from_secs(30));
    assert_eq!(master.status, 200, "{}\n{}", master.body, server.logs());
    eprintln!("first on-demand playlist after {:?}", started.elapsed());
    decode_ll_hls(&server, "cam", 2);
    // Nobody asks any more: stopped after the linger.
    let stopped = Instant::now();
    wait_state(&server, &owner, "waiting", Duration::from_secs(15));
    server.wait_metric(SESSIONS, Duration::from_secs(5), |v| v == 0.0);
    eprintln!("on-demand pull stopped {:?} after the last request", stopped.elapsed());

    // An RTMP viewer starts it too, and holds it while connected, past the linger.
    let mut viewer = RtmpPlayer::play(server.rtmp, "cam", false, Duration::from_secs(30));
    assert!(viewer.read_video(10, Duration::from_secs(30)), "the RTMP viewer got video\n{}", server.logs());
    // 25 fps: 150 frames is 6 s, twice the linger.
    assert!(viewer.read_video(150, Duration::from_secs(15)), "still playing past the linger");
    assert_eq!(source(&server, &owner)["state"], "live");
    drop(viewer);
    wait_state(&server, &owner, "waiting", Duration::from_secs(15));
    assert_no_password("the log", &server.logs());
}

#[test]
fn misbehaving_cameras_fail_their_pull_not_the_server() {
    if !require_gst_rtsp() {
        return;
    }
    let (server, owner) = server_with(&[("TIDECAST__RTSP__CONNECT_TIMEOUT", "3s")]);
    // A publisher on the default channel keeps playing throughout.
    let mut publisher = ffmpeg_publish(&server.publish_url(&server.key), 60);
    server.wait_live(LIVE_TIMEOUT);
    for mode in ["garbage", "bad-status", "bad-sdp", "huge-header", "bad-interleaved", "hang", "close"] {
        let fake = Camera::start("fake_camera.py", &["--port", "0", "--mode", mode]);
        let before = server.metric(RECONNECTS);
        set_source(
            &server,
            &owner,
            json!({"url": format!("rtsp://u:{CAM_PASSWORD}@127.0.0.1:{}/cam", fake.port)}),
        );
        server.wait_metric(RECONNECTS, Duration::from_secs(30), |v| v >= before + 1.0);
        let v = source(&server, &owner);
        assert_ne!(v["state"], "live", "{mode}: {v}");
        assert!(v["last_error"].is_string(), "{mode}: a reason is shown: {v}");
        assert_no_password("the API answer", &v.to_string());
        assert_eq!(server.get("/healthz").status, 200, "{mode}: the server is fine");
        eprintln!("{mode}: {}", v["last_error"]);
    }
    assert!(publisher.is_running(), "the other channel's publisher was not disturbed");
    assert_eq!(server.get("/live/main/index.m3u8").status, 200);
    assert_no_password("the log", &server.logs());
}

/// An H.265 camera whose audio is Opus (which a pull does not carry): the video plays over
/// LL-HLS as `hvc1`, the audio is dropped with one log line.
#[test]
fn hevc_camera_plays_and_other_audio_is_dropped() {
    if !require_gst_rtsp() {
        return;
    }
    let camera = Camera::real(0, &["--video", "h265", "--audio", "opus"]);
    let (server, owner) = server_with(&[]);
    set_source(&server, &owner, json!({"url": camera.url()}));
    wait_state(&server, &owner, "live", LIVE_TIMEOUT);
    decode_ll_hls(&server, "cam", 3);
    let master = server.get("/live/cam/index.m3u8").body;
    assert!(master.contains("hvc1.") || master.contains("hev1."), "{master}");
    assert!(!master.contains("mp4a") && !master.contains("opus"), "{master}");
    assert_eq!(server.logs().matches("camera audio is not AAC: dropped").count(), 1, "{}", server.logs());
}

/// The server's own database, opened beside it (SQLite allows it).
fn with_store<T>(server: &TestServer, f: impl AsyncFnOnce(&tidecast::store::Store, i64) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}/tidecast.db", server.data_dir().display());
        let store = tidecast::store::Store::connect(&url, 1).await.unwrap();
        let channel = store.channel_by_name("cam").await.unwrap().expect("channel cam");
        let out = f(&store, channel.id).await;
        store.close().await;
        out
    })
}

/// Camera credentials are sealed at rest (`auth.storage_secret`): the database holds no
/// password; a row written in clear before sealing existed is sealed at the next start and
/// still pulls.
#[test]
fn camera_credentials_are_sealed_at_rest() {
    if !require_gst_rtsp() {
        return;
    }
    let camera = Camera::real(0, &[]);
    let (mut server, owner) = server_with(&[]);
    set_source(&server, &owner, json!({"url": camera.url()}));
    wait_state(&server, &owner, "live", LIVE_TIMEOUT);
    let stored = with_store(&server, async |store, id| store.source(id).await.unwrap().unwrap());
    assert!(
        stored.password.starts_with("sealed:v1:") && stored.username.starts_with("sealed:v1:"),
        "{stored:?}"
    );
    assert!(!format!("{}{}", stored.username, stored.password).contains(CAM_PASSWORD));

    // An old row in clear: sealed on the next start, and the camera is pulled with it.
    server.stop();
    with_store(&server, async |store, id| {
        let mut plain = store.source(id).await.unwrap().unwrap();
        (plain.username, plain.password) = (CAM_USER.to_owned(), CAM_PASSWORD.to_owned());
        store.set_source(&plain).await.unwrap();
    });
    server.start_again();
    wait_state(&server, &owner, "live", LIVE_TIMEOUT);
    let stored = with_store(&server, async |store, id| store.source(id).await.unwrap().unwrap());
    assert!(stored.password.starts_with("sealed:v1:"), "sealed at start: {stored:?}");
    assert!(server.logs().contains("pull source credentials sealed at rest"));
    assert_no_password("the log", &server.logs());
}
