//! Integration-test harness: runs the real `tidecast` binary as a child process and drives it with
//! real peers (ffmpeg publishes and reads, ffprobe judges) plus a small RTMP play client built on
//! rml_rtmp's `Handshake` + `ClientSession` for what ffmpeg cannot measure (time to first frame,
//! a viewer that stops reading).
//!
//! Invariants: every server binds port 0 on 127.0.0.1 with its own temp data dir, so tests run in
//! parallel; every wait has a timeout and fails with the server log attached; child processes
//! (server, ffmpeg) are ended when their guard drops, the server politely (SIGTERM) first.

#![allow(dead_code)]

pub mod browser;
pub mod certs;
mod videos;

// Not every test binary uses them.
#[allow(unused_imports)]
pub use videos::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult};

/// How long a server has to log its bound addresses and "tidecast is running".
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Poll `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `tool` is on PATH. Missing: a failure in CI (`CI` set), else a loud SKIP and `false`.
pub fn require_tool(tool: &str) -> bool {
    require_tool_with(tool, "-version")
}

/// As [`require_tool`], for tools whose version flag is another (`openssl version`,
/// `curl --version`).
pub fn require_tool_with(tool: &str, version_arg: &str) -> bool {
    let found = Command::new(tool)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is required in CI (tests/run.sh installs it)");
    }
    eprintln!(
        "\n*** SKIP: {tool} not found on PATH; this test did NOT run. `bash tests/run.sh` installs it. ***\n"
    );
    false
}

/// Both ffmpeg and ffprobe, which most tests need.
pub fn require_ffmpeg() -> bool {
    require_tool("ffmpeg") && require_tool("ffprobe")
}

/// Text appended to by a reader thread.
type SharedText = Arc<Mutex<String>>;

fn drain_into(src: impl Read + Send + 'static, buf: SharedText) {
    thread::spawn(move || {
        let mut r = BufReader::new(src);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => buf.lock().unwrap().push_str(&line),
            }
        }
    });
}

/// A `tidecast serve` child process on its own data dir.
pub struct TestServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Per-test overrides, `TIDECAST__...` variables.
    overrides: Vec<(String, String)>,
    /// Plain RTMP and HTTP; `0.0.0.0:0` when a test turned that listener off.
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    /// RTMPS and HTTPS, when a test configured a certificate.
    pub rtmps: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// The SRT listener (UDP).
    pub srt: SocketAddr,
    /// WebRTC's shared UDP port, when `[webrtc]` is on.
    pub webrtc: Option<SocketAddr>,
    /// Every stderr line of every run of this server (restarts append).
    log: SharedText,
    /// Standard output of the current run (the first-run banner goes here).
    stdout: SharedText,
    /// The stream key of channel `main`, from the first run's banner.
    pub key: String,
}

impl TestServer {
    /// Start a server with the base environment plus `overrides`, wait until it runs, and read
    /// the default channel's stream key from the banner.
    pub fn start(overrides: &[(&str, &str)]) -> TestServer {
        let dir = tempfile::Builder::new().prefix("tidecast-itest").tempdir().unwrap();
        let mut s = TestServer {
            child: None,
            dir,
            overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            rtmp: "0.0.0.0:0".parse().unwrap(),
            http: "0.0.0.0:0".parse().unwrap(),
            rtmps: None,
            https: None,
            srt: "0.0.0.0:0".parse().unwrap(),
            webrtc: None,
            log: Arc::default(),
            stdout: Arc::default(),
            key: String::new(),
        };
        s.spawn();
        let ok = wait_until(Duration::from_secs(5), || s.stdout().contains("Stream Key:"));
        assert!(ok, "no banner with a stream key on first start; stdout:\n{}", s.stdout());
        let out = s.stdout();
        let line = out.lines().find(|l| l.trim_start().starts_with("Stream Key:")).unwrap();
        s.key = line.trim_start().trim_start_matches("Stream Key:").trim().to_string();
        assert!(
            s.key.starts_with("live_") && s.key.len() == 5 + 64,
            "unexpected stream key shape: {} chars",
            s.key.len()
        );
        s
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The environment every invocation of the binary (server or CLI) gets.
    fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidecast"));
        let dir = self.dir.path();
        cmd.env("TIDECAST__SERVER__DATA_DIR", dir)
            .env("TIDECAST__DATABASE__URL", format!("sqlite://{}/tidecast.db", dir.display()))
            .env("TIDECAST__HTTP__LISTEN", "127.0.0.1:0")
            .env("TIDECAST__RTMP__LISTEN", "127.0.0.1:0")
            .env("TIDECAST__SRT__LISTEN", "127.0.0.1:0")
            .env("TIDECAST__WEBRTC__LISTEN_IP", "127.0.0.1")
            .env("TIDECAST__WEBRTC__UDP_PORT", "0")
            .env("TIDECAST__WEBRTC__TCP_PORT", "0")
            .env("TIDECAST__HTTP__WORKERS", "1")
            // The ladder (an ffmpeg per live channel) only where a test asks for it
            // (tests/transcode_ladder.rs): the others test passthrough serving.
            .env("TIDECAST__TRANSCODE__ENABLED", "false")
            .env_remove("RUST_LOG")
            .env_remove("TIDECAST_CONFIG");
        for (k, v) in &self.overrides {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn(&mut self) {
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the tidecast binary");
        let run_start = self.log.lock().unwrap().len();
        self.stdout = Arc::default();
        drain_into(child.stderr.take().unwrap(), self.log.clone());
        drain_into(child.stdout.take().unwrap(), self.stdout.clone());
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log.lock().unwrap()[run_start..].to_string();
            if log.contains("tidecast is running") {
                let off = |key: &str| self.overrides.iter().any(|(k, v)| k == key && v.is_empty());
                let unbound = "0.0.0.0:0".parse().unwrap();
                self.rtmp = bound_addr(&log, "rtmp")
                    .or(off("TIDECAST__RTMP__LISTEN").then_some(unbound))
                    .expect("rtmp listening line");
                self.http = bound_addr(&log, "http")
                    .or(off("TIDECAST__HTTP__LISTEN").then_some(unbound))
                    .expect("http listening line");
                self.rtmps = bound_addr(&log, "rtmps");
                self.https = bound_addr(&log, "https");
                self.srt = bound_addr(&log, "srt").expect("srt listening line");
                self.webrtc = bound_addr(&log, "webrtc");
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tidecast exited during start-up ({status}); log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "tidecast did not start within {START_TIMEOUT:?}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait (then SIGKILL). Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                eprintln!("tidecast did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
                let _ = child.kill();
                return child.wait().ok();
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would end it (nothing flushed, no shutdown), and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again after `stop` (same data dir and overrides; port-0 listeners get new ports).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again while running");
        self.spawn();
    }

    /// Stop and start again on the same data dir (new ports).
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(status.is_some_and(|s| s.success()), "graceful stop failed: {status:?}");
        self.spawn();
    }

    /// Run a CLI subcommand (`channel create ...`) with this server's environment.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the tidecast CLI");
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let status = wait_child(&mut child, Duration::from_secs(20)).expect("CLI finished in 20 s");
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        BufReader::new(out).read_to_end(&mut stdout).unwrap();
        BufReader::new(err).read_to_end(&mut stderr).unwrap();
        Output { status, stdout, stderr }
    }

    /// All server stderr so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Standard output of the current run.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn publish_url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.rtmp)
    }

    pub fn play_url(&self, channel: &str) -> String {
        format!("rtmp://{}/live/{channel}", self.rtmp)
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.http, path)
    }

    pub fn metrics_text(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "/metrics: {}", r.body);
        r.body
    }

    /// The value of one series, e.g. `tidecast_auth_failures_total{protocol="rtmp"}`; 0 when the
    /// series does not exist yet (labelled counters appear on first use).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics_text(), series).unwrap_or(0.0)
    }

    /// Wait until `series` satisfies `pred`, or fail with the log.
    pub fn wait_metric(&self, series: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let mut last = 0.0;
        let ok = wait_until(timeout, || {
            last = self.metric(series);
            pred(last)
        });
        assert!(
            ok,
            "{series} = {last} did not reach the expected value in {timeout:?}; log:\n{}",
            self.logs()
        );
        last
    }

    /// Wait until a publisher is live and has sent a few hundred kB (a GOP or more).
    pub fn wait_live(&self, timeout: Duration) {
        self.wait_metric(r#"tidecast_ingest_sessions{protocol="rtmp"}"#, timeout, |v| v >= 1.0);
        let base = self.metric(r#"tidecast_ingest_bytes_total{protocol="rtmp"}"#);
        self.wait_metric(r#"tidecast_ingest_bytes_total{protocol="rtmp"}"#, timeout, |v| {
            v > base + 100_000.0
        });
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `addr=` from the `listening protocol="<proto>"` log line.
fn bound_addr(log: &str, proto: &str) -> Option<SocketAddr> {
    let needle = format!("listening protocol=\"{proto}\"");
    let line = log.lines().find(|l| l.contains(&needle))?;
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr="))?;
    addr.parse().ok()
}

/// `Some(value)` of the first sample named exactly `series` (name plus labels as rendered).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("metric value is a number"))
}

/// Wait for a child up to `timeout`; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// A minimal HTTP/1.1 GET (Connection: close), with 5 s timeouts.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_get_within(addr, path, Duration::from_secs(5))
}

/// [`http_get`] for an answer that may take up to `timeout` (a request the server holds).
pub fn http_get_within(addr: SocketAddr, path: &str, timeout: Duration) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("HTTP connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("HTTP response read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP header terminator");
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("HTTP status code");
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked {
        String::from_utf8_lossy(&dechunk(body.as_bytes())).into_owned()
    } else {
        body.to_string()
    };
    HttpResponse { status, headers: head.to_string(), body }
}

// ---------------------------------------------------------------------------------------------
// ffmpeg and ffprobe

/// A child process (ffmpeg) whose stderr goes to a file; killed when dropped.
pub struct Proc {
    child: Child,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn spawn(program: &str, args: &[String]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr.txt");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        Proc { child, stderr_path, _dir: dir }
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// ffmpeg publishing a 640x360 30 fps test pattern with a 440 Hz tone for `seconds`, in real time.
pub fn ffmpeg_publish(url: &str, seconds: u32) -> Proc {
    ffmpeg_publish_with(url, seconds, &[])
}

/// As [`ffmpeg_publish`], with extra output options (e.g. `-b:v 4M`).
pub fn ffmpeg_publish_with(url: &str, seconds: u32, extra: &[&str]) -> Proc {
    ffmpeg_publish_pattern(url, seconds, "640x360", 30, extra)
}

/// ffmpeg publishing a `size` (e.g. "1280x720") 30 fps test pattern with a key frame every
/// `gop` frames and a 440 Hz tone for `seconds`, in real time, plus extra output options.
pub fn ffmpeg_publish_pattern(url: &str, seconds: u32, size: &str, gop: u32, extra: &[&str]) -> Proc {
    let gop = gop.to_string();
    let mut video = strings(&["-c:v", "libx264", "-preset", "veryfast", "-g", &gop]);
    video.extend(strings(extra));
    ffmpeg_test_source(url, seconds, size, &video, "flv")
}

/// ffmpeg sending `seconds` of a `size` 30 fps test pattern (encoded with the `video` options:
/// codec, GOP, ...) and a 440 Hz AAC tone (another codec when the options name one with
/// `-c:a`), in real time, to `url` as `format` (`flv` for RTMP, `mpegts` for SRT).
pub fn ffmpeg_test_source(url: &str, seconds: u32, size: &str, video: &[String], format: &str) -> Proc {
    let source = format!("testsrc2=size={size}:rate=30");
    let mut args = strings(&[
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "warning",
        "-re",
        "-f",
        "lavfi",
        "-i",
        &source,
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
    ]);
    args.extend_from_slice(video);
    if !video.iter().any(|a| a == "-c:a") {
        args.extend(strings(&["-c:a", "aac"]));
    }
    args.extend(strings(&["-t", &seconds.to_string(), "-f", format, url]));
    Proc::spawn("ffmpeg", &args)
}

/// ffmpeg reading `seconds` of `url` into `out` (an .flv) without re-encoding.
pub fn ffmpeg_read(url: &str, seconds: f64, out: &Path) -> Proc {
    Proc::spawn(
        "ffmpeg",
        &strings(&[
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "warning",
            "-y",
            "-i",
            url,
            "-t",
            &seconds.to_string(),
            "-c",
            "copy",
            "-f",
            "flv",
            out.to_str().unwrap(),
        ]),
    )
}

#[derive(Debug, Clone)]
pub struct ProbeStream {
    pub index: u64,
    pub codec_type: String,
    pub codec_name: String,
    pub width: Option<u64>,
    pub height: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ProbePacket {
    pub stream_index: u64,
    pub codec_type: String,
    pub dts: f64,
    pub keyframe: bool,
}

#[derive(Debug)]
pub struct Probe {
    pub streams: Vec<ProbeStream>,
    pub packets: Vec<ProbePacket>,
}

impl Probe {
    pub fn video(&self) -> impl Iterator<Item = &ProbePacket> {
        self.packets.iter().filter(|p| p.codec_type == "video")
    }

    /// Last dts minus first dts of the video packets, in seconds.
    pub fn video_span(&self) -> f64 {
        let v: Vec<f64> = self.video().map(|p| p.dts).collect();
        match (v.first(), v.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        }
    }

    /// The largest dts step between consecutive video packets, in seconds.
    pub fn max_video_gap(&self) -> f64 {
        let v: Vec<f64> = self.video().map(|p| p.dts).collect();
        v.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    }
}

/// ffprobe's streams and packets of a media file.
pub fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-show_packets", "-of", "json"])
        .arg(path)
        .output()
        .expect("running ffprobe");
    assert!(out.status.success(), "ffprobe failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let streams = v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| ProbeStream {
                    index: s["index"].as_u64().unwrap_or(0),
                    codec_type: s["codec_type"].as_str().unwrap_or("").to_string(),
                    codec_name: s["codec_name"].as_str().unwrap_or("").to_string(),
                    width: s["width"].as_u64(),
                    height: s["height"].as_u64(),
                })
                .collect()
        })
        .unwrap_or_default();
    let packets = v["packets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| ProbePacket {
                    stream_index: p["stream_index"].as_u64().unwrap_or(0),
                    codec_type: p["codec_type"].as_str().unwrap_or("").to_string(),
                    dts: p["dts_time"].as_str().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN),
                    keyframe: p["flags"].as_str().is_some_and(|f| f.starts_with('K')),
                })
                .collect()
        })
        .unwrap_or_default();
    Probe { streams, packets }
}

// ---------------------------------------------------------------------------------------------
// A minimal RTMP play client over rml_rtmp

/// Connect to `addr`; with `small_rcvbuf`, SO_RCVBUF is set to 4 KiB before connecting so that a
/// client that stops reading fills the window quickly.
pub fn tcp_connect(addr: SocketAddr, small_rcvbuf: bool) -> TcpStream {
    let stream = if small_rcvbuf {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            let s = tokio::time::timeout(Duration::from_secs(5), sock.connect(addr))
                .await
                .expect("connect within 5 s")
                .expect("connect");
            s.into_std().unwrap()
        })
    } else {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
    };
    stream.set_nonblocking(false).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
}

/// Complete the client side of the RTMP handshake; returns bytes received past it.
pub fn rtmp_handshake(s: &mut TcpStream) -> Vec<u8> {
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap()).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("handshake read");
        assert!(n > 0, "server closed during the handshake");
        match hs.process_bytes(&buf[..n]).expect("valid server handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => s.write_all(&response_bytes).unwrap(),
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                s.write_all(&response_bytes).unwrap();
                return remaining_bytes;
            }
        }
    }
}

/// An RTMP client session playing one channel.
pub struct RtmpPlayer {
    pub stream: TcpStream,
    session: ClientSession,
    /// Video messages received, in order (timestamp ms, FLV tag body), with arrival time.
    pub video: Vec<(u32, Bytes, Instant)>,
    pub audio_count: usize,
    pub playing: bool,
    pub connected_at: Instant,
}

impl RtmpPlayer {
    /// TCP connect, handshake, `connect` to app `live`, `play` `channel`; returns once the server
    /// accepted the play request (media may already have arrived).
    pub fn play(addr: SocketAddr, channel: &str, small_rcvbuf: bool, timeout: Duration) -> RtmpPlayer {
        let connected_at = Instant::now();
        let mut stream = tcp_connect(addr, small_rcvbuf);
        let rest = rtmp_handshake(&mut stream);
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://{addr}/live"));
        let (session, initial) = ClientSession::new(config).unwrap();
        let mut p =
            RtmpPlayer { stream, session, video: Vec::new(), audio_count: 0, playing: false, connected_at };
        p.send_results(initial);
        let r = p.session.request_connection("live".to_string()).unwrap();
        p.send_results(vec![r]);
        if !rest.is_empty() {
            p.feed(&rest, Some(channel));
        }
        let deadline = Instant::now() + timeout;
        while !p.playing {
            assert!(Instant::now() < deadline, "play not accepted within {timeout:?}");
            assert!(p.read_once(Some(channel)), "server closed before accepting play");
        }
        p
    }

    fn send_results(&mut self, results: Vec<ClientSessionResult>) {
        for r in results {
            if let ClientSessionResult::OutboundResponse(packet) = r {
                self.stream.write_all(&packet.bytes).expect("write to server");
            }
        }
    }

    /// Feed bytes; answers the session's responses and records media.
    fn feed(&mut self, bytes: &[u8], channel: Option<&str>) {
        let results = self.session.handle_input(bytes).expect("valid RTMP from the server");
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.stream.write_all(&packet.bytes).expect("write to server")
                }
                ClientSessionResult::RaisedEvent(ev) => match ev {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let name = channel.expect("connect accepted only once").to_string();
                        let r = self.session.request_playback(name).unwrap();
                        self.send_results(vec![r]);
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        panic!("connect rejected: {description}")
                    }
                    ClientSessionEvent::PlaybackRequestAccepted => self.playing = true,
                    ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                        self.video.push((timestamp.value, data, Instant::now()))
                    }
                    ClientSessionEvent::AudioDataReceived { .. } => self.audio_count += 1,
                    _ => {}
                },
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// One socket read; false on EOF or error.
    fn read_once(&mut self, channel: Option<&str>) -> bool {
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.feed(&buf[..n], channel);
                true
            }
        }
    }

    /// Read until `count` video messages arrived (or `timeout`); returns whether they did.
    pub fn read_video(&mut self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.video.len() < count {
            if Instant::now() >= deadline || !self.read_once(None) {
                return false;
            }
        }
        true
    }

    /// Read and discard until the server closes the connection; true if it did within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        socket_closed_within(&mut self.stream, timeout)
    }
}

/// Is this FLV video tag body an AVC sequence header (key frame, AVCPacketType 0)?
pub fn is_avc_sequence_header(tag: &[u8]) -> bool {
    tag.len() >= 2 && tag[0] == 0x17 && tag[1] == 0
}

/// Is this FLV video tag body an AVC key frame NALU packet (key frame, AVCPacketType 1)?
pub fn is_avc_keyframe(tag: &[u8]) -> bool {
    tag.len() >= 2 && tag[0] == 0x17 && tag[1] == 1
}

/// Read and discard until EOF or reset; true if that happened within `timeout`.
pub fn socket_closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 64 * 1024];
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tool runs and HTTP bodies shared by the LL-HLS tests

/// A finished tool run.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `program` to completion within `timeout` (killed and failed otherwise).
pub fn run_tool(program: &str, args: &[&str], timeout: Duration) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
    let status = wait_child(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let ran = Ran {
        status: status.unwrap_or_else(|| {
            panic!(
                "{program} {args:?} did not finish within {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            )
        }),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    };
    ran
}

/// ffmpeg decodes `seconds` of `channel`'s LL-HLS output (once its playlist answers, within
/// 20 s) without a decoder error; returns the multivariant playlist.
pub fn decode_ll_hls(server: &TestServer, channel: &str, seconds: u32) -> String {
    let path = format!("/live/{channel}/index.m3u8");
    assert!(
        wait_until(Duration::from_secs(20), || server.get(&path).status == 200),
        "no LL-HLS playlist\n{}",
        server.logs()
    );
    let url = format!("http://{}{path}", server.http);
    let t = seconds.to_string();
    let out = run_tool(
        "ffmpeg",
        &["-hide_banner", "-nostdin", "-v", "error", "-i", &url, "-t", &t, "-f", "null", "-"],
        Duration::from_secs(40),
    );
    assert!(out.status.success(), "LL-HLS decode failed: {}\nserver:\n{}", out.stderr, server.logs());
    assert!(out.stderr.trim().is_empty(), "decoder errors on the LL-HLS output:\n{}", out.stderr);
    server.get(&path).body
}

/// Decode all of `path` with ffmpeg at `-v error`: must exit 0 with nothing on stderr.
/// Returns the number of decoded video frames.
pub fn decode_clean(path: &Path) -> u64 {
    let progress = path.with_extension("progress");
    let ran = run_tool(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-i",
            path.to_str().unwrap(),
            "-progress",
            progress.to_str().unwrap(),
            "-f",
            "null",
            "-",
        ],
        Duration::from_secs(30),
    );
    assert!(
        ran.status.success() && ran.stderr.trim().is_empty(),
        "decoding {} failed or complained ({}):\n{}",
        path.display(),
        ran.status,
        ran.stderr
    );
    frames_from_progress(&progress)
}

/// The last `frame=N` of an ffmpeg `-progress` file.
pub fn frames_from_progress(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().rev().find_map(|l| l.strip_prefix("frame=")?.trim().parse().ok()).unwrap_or(0)
}

/// The attributes of an `#EXT-X-STREAM-INF:` line, quotes removed.
pub fn stream_inf_attrs(line: &str) -> Vec<(String, String)> {
    let attrs = line.strip_prefix("#EXT-X-STREAM-INF:").expect("a STREAM-INF line");
    let mut out = Vec::new();
    let (mut cur, mut quoted) = (String::new(), false);
    for c in attrs.chars().chain(std::iter::once(',')) {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                let (k, v) = cur.split_once('=').expect("KEY=VALUE");
                out.push((k.to_string(), v.to_string()));
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    out
}

/// The body of a `Transfer-Encoding: chunked` response, de-chunked (stops at the last chunk
/// or at a truncated one).
pub fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap_or("0").trim(), 16).unwrap_or(0);
        let rest = &b[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        b = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Poll the media playlist at `path` until `cond` holds (it must also parse and validate);
/// 404s (not live yet) are retried for up to `timeout`. Returns its text and parsed form.
pub fn wait_media_playlist(
    server: &TestServer,
    path: &str,
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut(&tidecast::protocols::hls::ParsedMediaPlaylist) -> bool,
) -> (String, tidecast::protocols::hls::ParsedMediaPlaylist) {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let r = server.get(path);
        if r.status == 200 {
            last = r.body;
            let pl = tidecast::protocols::hls::parse_media_playlist(&last)
                .unwrap_or_else(|errors| panic!("invalid media playlist: {errors:#?}\n{last}"));
            if cond(&pl) {
                return (last, pl);
            }
        }
        assert!(
            Instant::now() < deadline,
            "playlist never had {what} within {timeout:?}; last playlist:\n{last}\nserver:\n{}",
            server.logs()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP response with a binary body.
pub struct Resp {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
    /// Request written to response fully read.
    pub elapsed: Duration,
}

impl Resp {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", self.text()));
        v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error.code in {v}")).to_string()
    }
}

/// GET `path` over a fresh HTTP/1.1 connection (Connection: close) with extra headers; the
/// whole exchange must finish within `timeout`.
pub fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)], timeout: Duration) -> Resp {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("HTTP connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("GET {path}: reading the response: {e}"));
    let elapsed = started.elapsed();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP header terminator");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("HTTP status code");
    let mut body = raw[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Resp { status, head, body, elapsed }
}

/// A minimal HTTP/1.1 request with a JSON body (Connection: close).
pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("HTTP connect");
    // Generous: the outage tests call it while the database is being stopped.
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

/// Register `email` (password "correct horse battery") and sign in: its access token.
pub fn signed_in(server: &TestServer, email: &str) -> String {
    let body = serde_json::json!({"email": email, "password": "correct horse battery", "username": email.split('@').next().unwrap()});
    let (s, v) = http_json(server.http, "POST", "/api/v1/users/register", None, Some(body));
    assert_eq!(s, 201, "{v}");
    let body = serde_json::json!({"email": email, "password": "correct horse battery"});
    let (s, v) = http_json(server.http, "POST", "/api/v1/auth/login", None, Some(body));
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}
