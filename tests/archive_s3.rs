//! Recordings in S3-compatible object storage, against moto's standalone S3 server (PyPI
//! `moto[server]`, installed by tests/run.sh into its virtualenv): a finished recording moves to
//! the bucket and plays from it (proxied with byte ranges, or redirected to presigned URLs);
//! a store that stops in the middle of a recording costs nothing (the recording plays from the
//! local disk and moves once the store is back); deleting the video deletes its objects.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const BUCKET: &str = "tidecast-test";

fn moto_server() -> Option<PathBuf> {
    let venv = std::env::var_os("TIDECAST_VENV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tidecast-venv")
    });
    let bin = venv.join("bin/moto_server");
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!("moto_server is required in CI ({}; tests/run.sh installs it)", bin.display());
    }
    eprintln!("\n*** SKIP: moto_server not found at {}; this test did NOT run. ***\n", bin.display());
    None
}

/// A moto S3 server on a free loopback port, with our bucket.
struct Moto {
    bin: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl Moto {
    fn start(bin: PathBuf) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut m = Moto { bin, port, proc: None };
        m.up();
        m
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (Re)start it on the same port and create the bucket (moto keeps nothing across a restart).
    fn up(&mut self) {
        let args = strings(&["-H", "127.0.0.1", "-p", &self.port.to_string()]);
        self.proc = Some(Proc::spawn(self.bin.to_str().unwrap(), &args));
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
        assert!(up, "moto did not start: {}", self.proc.as_ref().unwrap().stderr());
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .arg(format!("{}/{BUCKET}", self.endpoint()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "creating the bucket");
    }

    fn down(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Object names under `prefix`.
    fn keys(&self, prefix: &str) -> Vec<String> {
        let out = Command::new("curl")
            .arg("-s")
            .arg(format!("{}/{BUCKET}?list-type=2&prefix={prefix}", self.endpoint()))
            .output()
            .unwrap();
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        xml.split("<Key>").skip(1).map(|s| s.split("</Key>").next().unwrap().to_owned()).collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.down();
    }
}

fn server_with(moto: &Moto, delivery: &str) -> TestServer {
    let endpoint = moto.endpoint();
    TestServer::start(&[
        ("TIDECAST__CHANNEL__RECONNECT_GRACE", "1s"),
        ("TIDECAST__ARCHIVE__S3__BUCKET", BUCKET),
        ("TIDECAST__ARCHIVE__S3__ENDPOINT", &endpoint),
        ("TIDECAST__ARCHIVE__S3__ACCESS_KEY_ID", "testing"),
        ("TIDECAST__ARCHIVE__S3__SECRET_ACCESS_KEY", "testing-secret"),
        ("TIDECAST__ARCHIVE__S3__DELIVERY", delivery),
        ("TIDECAST__ARCHIVE__S3__MOVE_RETRY", "1s"),
        ("TIDECAST_PASSWORD", "admin password 1"),
    ])
}

fn video(server: &TestServer, id: i64) -> serde_json::Value {
    let (s, v) = http_json(server.http, "GET", &format!("/api/v1/videos/{id}"), None, None);
    if s == 200 {
        v
    } else {
        json!(null)
    }
}

fn wait_for(
    server: &TestServer,
    id: i64,
    what: &str,
    cond: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = json!(null);
    let ok = wait_until(Duration::from_secs(40), || {
        last = video(server, id);
        cond(&last)
    });
    let log = server.logs();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    assert!(ok, "video {id}: {what}: {last}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    last
}

/// ffmpeg decodes every frame of `url`; returns (its error output, ffprobe's duration).
fn decode(url: &str) -> (String, f64) {
    // `-http_persistent 0`: ffmpeg's HLS reader keeps one connection per playlist and refuses
    // to reuse it for a redirect to another host ("Cannot reuse HTTP connection for different
    // host"), which is what presigned redirects are; browsers have no such limit.
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-http_persistent",
            "0",
            "-i",
            url,
            "-f",
            "null",
            "-",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg could not decode {url}: {}", String::from_utf8_lossy(&out.stderr));
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url])
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap_or(0.0),
    )
}

fn curl_head(url: &str, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_finished_recording_moves_to_the_bucket_and_plays_from_it_through_an_outage() {
    let Some(bin) = moto_server() else { return };
    if !require_ffmpeg() || !require_tool_with("curl", "--version") {
        return;
    }
    let mut moto = Moto::start(bin);
    let server = server_with(&moto, "proxy");
    let base = format!("http://{}", server.http);

    let mut ffmpeg = ffmpeg_publish_pattern(&server.publish_url(&server.key), 6, "640x360", 30, &[]);
    assert!(ffmpeg.wait_timeout(Duration::from_secs(30)).is_some());
    let v = wait_for(&server, 1, "moved to s3", |v| v["recording"]["backend"] == "s3");
    assert_eq!(v["status"], "ready");
    // The row says `s3` first, then the local copy goes (a crash in between leaves a copy).
    let gone = |id: u32| {
        wait_until(Duration::from_secs(10), || !server.data_dir().join(format!("archive/{id}")).exists())
    };
    assert!(gone(1), "the local copy is removed once moved");
    let keys = moto.keys("recordings/1/");
    assert!(keys.iter().any(|k| k == "recordings/1/source/journal"), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("recordings/1/source/seg-")), "{keys:?}");
    assert!(keys.iter().any(|k| k == "recordings/1/poster.jpg"), "{keys:?}");

    // It plays from the bucket: every frame, with the duration published, byte ranges proxied.
    let (errors, probed) = decode(&format!("{base}/vod/1/index.m3u8"));
    assert!(errors.trim().is_empty(), "{errors}");
    assert!((probed - 6.0).abs() <= 0.5, "{probed} s");
    let seg = server
        .get("/vod/1/source/index.m3u8")
        .body
        .lines()
        .find(|l| l.starts_with("seg-"))
        .unwrap()
        .to_owned();
    let head = curl_head(&format!("{base}/vod/1/source/{seg}"), &["-H", "Range: bytes=10-109"]);
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-length: 100"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-range: bytes 10-109/"), "{head}");
    let head = curl_head(&format!("{base}/vod/1/source/{seg}"), &["-H", "Range: bytes=99999999-"]);
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    let poster = server.get(v["poster_url"].as_str().expect("the poster moved too"));
    assert_eq!(poster.status, 200);
    assert!(server.get("/vod/1/manifest.mpd").body.contains("<MPD"));

    // The store goes away in the middle of the next recording: recording and playback go on
    // from the local disk, the move fails (counted) and is retried...
    let mut ffmpeg = ffmpeg_publish_pattern(&server.publish_url(&server.key), 8, "640x360", 30, &[]);
    wait_for(&server, 2, "recording", |v| v["status"] == "live");
    moto.down();
    assert!(ffmpeg.wait_timeout(Duration::from_secs(30)).is_some());
    let v2 = wait_for(&server, 2, "ready", |v| v["status"] == "ready");
    assert_eq!(v2["recording"]["backend"], "local", "not moved while the store is away");
    assert_eq!(v2["recording"]["gaps"], 0, "a store outage costs the recording nothing");
    server.wait_metric(r#"tidecast_archive_moves_total{result="error"}"#, Duration::from_secs(20), |n| {
        n >= 1.0
    });
    let (errors, probed) = decode(&format!("{base}/vod/2/index.m3u8"));
    assert!(errors.trim().is_empty() && (probed - 8.0).abs() <= 0.5, "{errors} {probed}");
    // ... until it is back.
    moto.up();
    wait_for(&server, 2, "moved after the outage", |v| v["recording"]["backend"] == "s3");
    assert!(gone(2), "the local copy is removed once moved");
    let (errors, probed) = decode(&format!("{base}/vod/2/index.m3u8"));
    assert!(errors.trim().is_empty() && (probed - 8.0).abs() <= 0.5, "{errors} {probed}");

    // Deleting the video deletes its objects. (Video 1's went with moto's restart.)
    let owner = {
        let out = server.cli(&["user", "create", "admin@example.com", "--admin"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let (s, v) = http_json(
            server.http,
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "admin@example.com", "password": "admin password 1"})),
        );
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().unwrap().to_owned()
    };
    assert!(!moto.keys("recordings/2/").is_empty());
    let (s, v) = http_json(server.http, "DELETE", "/api/v1/videos/2", Some(&owner), None);
    assert_eq!(s, 204, "{v}");
    assert!(moto.keys("recordings/2/").is_empty(), "{:?}", moto.keys("recordings/2/"));
    assert!(!server.logs().contains("testing-secret"), "the secret never reaches the log");
}

#[test]
fn redirect_delivery_sends_players_to_presigned_urls() {
    let Some(bin) = moto_server() else { return };
    if !require_ffmpeg() || !require_tool_with("curl", "--version") {
        return;
    }
    let moto = Moto::start(bin);
    let server = server_with(&moto, "redirect");
    let mut ffmpeg = ffmpeg_publish_pattern(&server.publish_url(&server.key), 5, "640x360", 30, &[]);
    assert!(ffmpeg.wait_timeout(Duration::from_secs(30)).is_some());
    wait_for(&server, 1, "moved to s3", |v| v["recording"]["backend"] == "s3");
    let base = format!("http://{}", server.http);
    let seg = server
        .get("/vod/1/source/index.m3u8")
        .body
        .lines()
        .find(|l| l.starts_with("seg-"))
        .unwrap()
        .to_owned();
    let head = curl_head(&format!("{base}/vod/1/source/{seg}"), &[]);
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: ")))
        .expect("a Location")
        .trim()
        .to_owned();
    assert!(location.starts_with(&moto.endpoint()) && location.contains("X-Amz-Signature="), "{location}");
    assert!(!location.contains("testing-secret"));
    // Players follow the redirect: ffmpeg plays the whole recording from the bucket.
    let (errors, probed) = decode(&format!("{base}/vod/1/index.m3u8"));
    assert!(errors.trim().is_empty(), "{errors}");
    assert!((probed - 5.0).abs() <= 0.5, "{probed} s");
}
