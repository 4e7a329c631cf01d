//! SRT ingest, end to end: the real `tidecast` binary with ffmpeg 5.1 (libsrt) publishing
//! MPEG-TS over SRT with `pkt_size=1316` in each stream-id form (PRODUCT.md "Publishing"); the
//! channel then plays over RTMP and LL-HLS, judged by ffprobe. A wrong key is refused at the
//! handshake and counted; random datagrams to the SRT port do not hurt the server.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;

const SESSIONS: &str = r#"tidecast_ingest_sessions{protocol="srt"}"#;
const BYTES: &str = r#"tidecast_ingest_bytes_total{protocol="srt"}"#;
const AUTH_FAILURES: &str = r#"tidecast_auth_failures_total{protocol="srt"}"#;
const LIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// One SRT live-mode payload: seven transport packets.
const SRT_PAYLOAD: usize = 7 * 188;

/// ffmpeg publishing `seconds` of testsrc2 H.264 + AAC as MPEG-TS to `stream_id` over SRT. The
/// `#` goes in raw: ffmpeg 5.1 does not decode `%23` (INTEROP-NOTES).
fn srt_publish(server: &TestServer, stream_id: &str, seconds: u32) -> Proc {
    srt_publish_with(server, stream_id, seconds, "")
}

/// `srt_publish` with more SRT URL options (`&passphrase=...`).
fn srt_publish_with(server: &TestServer, stream_id: &str, seconds: u32, options: &str) -> Proc {
    let url = format!("srt://{}?streamid={stream_id}&pkt_size=1316&latency=200000{options}", server.srt);
    let video = strings(&["-c:v", "libx264", "-preset", "veryfast", "-g", "30"]);
    ffmpeg_test_source(&url, seconds, "640x360", &video, "mpegts")
}

/// ffmpeg reading `seconds` of SRT play with `stream_id` into the TS file `out` (no
/// re-encoding); its exit status (`None`: still running after 20 s) and stderr.
fn srt_read(
    server: &TestServer,
    stream_id: &str,
    seconds: &str,
    out: &std::path::Path,
) -> (Option<std::process::ExitStatus>, String) {
    let url = format!("srt://{}?streamid={stream_id}&latency=200000", server.srt);
    let mut args =
        strings(&["-hide_banner", "-nostdin", "-loglevel", "warning", "-y", "-i", &url, "-t", seconds]);
    args.extend(strings(&["-c", "copy", "-f", "mpegts", out.to_str().unwrap()]));
    let mut p = Proc::spawn("ffmpeg", &args);
    let status = p.wait_timeout(Duration::from_secs(20));
    (status, p.stderr())
}

fn wait_srt_live(server: &TestServer) {
    server.wait_metric(SESSIONS, LIVE_TIMEOUT, |v| v >= 1.0);
    let base = server.metric(BYTES);
    server.wait_metric(BYTES, LIVE_TIMEOUT, |v| v > base + 100_000.0);
}

/// Each stream-id form publishes; the first one is also read back over RTMP play and LL-HLS.
#[test]
fn srt_publish_in_each_stream_id_form_plays_over_rtmp_and_hls() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let forms = [
        format!("#!::r=live/{},m=publish,u=obs", server.key),
        format!("publish:live/{}", server.key),
        server.key.clone(),
    ];
    for (i, form) in forms.iter().enumerate() {
        let mut publisher = srt_publish(&server, form, if i == 0 { 12 } else { 4 });
        wait_srt_live(&server);
        if i == 0 {
            let out = server.data_dir().join("srt-rtmp-play.flv");
            let mut r = ffmpeg_read(&server.play_url("main"), 2.0, &out);
            let status = r.wait_timeout(Duration::from_secs(20));
            assert!(
                status.is_some_and(|s| s.success()),
                "rtmp play: {}\nserver:\n{}",
                r.stderr(),
                server.logs()
            );
            let probe = ffprobe(&out);
            assert!(probe.video().count() >= 30, "{} video packets over RTMP play", probe.video().count());
            assert!(probe.streams.iter().any(|s| s.codec_name == "h264" && s.width == Some(640)));
            assert!(probe.streams.iter().any(|s| s.codec_name == "aac"));

            // LL-HLS: ffmpeg decodes frames from the media playlist.
            let url = format!("http://{}/live/main/index.m3u8", server.http);
            let mut hls = Proc::spawn(
                "ffmpeg",
                &["-hide_banner", "-nostdin", "-loglevel", "error", "-i", &url, "-t", "1", "-f", "null", "-"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
            let status = hls.wait_timeout(Duration::from_secs(20));
            assert!(
                status.is_some_and(|s| s.success()),
                "hls decode: {}\nserver:\n{}",
                hls.stderr(),
                server.logs()
            );
        }
        let status = publisher.wait_timeout(Duration::from_secs(20));
        assert!(status.is_some_and(|s| s.success()), "publisher {i}: {}", publisher.stderr());
        server.wait_metric(SESSIONS, LIVE_TIMEOUT, |v| v == 0.0);
    }
    assert!(!server.logs().contains(&server.key), "the stream key reached the log");
}

/// A wrong key is refused at the handshake (ffmpeg fails) and counted; so is a malformed id.
#[test]
fn srt_wrong_key_is_refused_and_counted() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let wrong = format!("live_{}", "deadbeef".repeat(8));
    let mut p = srt_publish(&server, &format!("#!::r=live/{wrong},m=publish"), 5);
    let status = p.wait_timeout(Duration::from_secs(15));
    assert!(status.is_some_and(|s| !s.success()), "wrong key not refused: {status:?}\n{}", p.stderr());
    server.wait_metric(AUTH_FAILURES, LIVE_TIMEOUT, |v| v >= 1.0);
    assert_eq!(server.metric(SESSIONS), 0.0);
    assert!(!server.logs().contains(&wrong), "the wrong key reached the log");
}

/// With `[srt] passphrase` set, a publisher without it or with another one is refused in the
/// SRT handshake (libsrt's "Password required" / "Incorrect passphrase"); one with it (AES-256
/// here) publishes, and the channel plays over LL-HLS. The passphrase never reaches the log.
#[test]
fn srt_passphrase_is_required_and_checked() {
    if !require_ffmpeg() {
        return;
    }
    const PASS: &str = "correct-horse-battery";
    let server = TestServer::start(&[("TIDECAST__SRT__PASSPHRASE", PASS), ("TIDECAST__SRT__PBKEYLEN", "32")]);
    let id = format!("publish:live/{}", server.key);
    for (what, options, says) in [
        ("no passphrase", "", "Password required"),
        ("a wrong passphrase", "&passphrase=wrong-horse-battery&pbkeylen=32", "Incorrect passphrase"),
    ] {
        let mut p = srt_publish_with(&server, &id, 3, options);
        let status = p.wait_timeout(Duration::from_secs(20));
        assert!(status.is_some_and(|s| !s.success()), "{what}: not refused: {status:?}\n{}", p.stderr());
        assert!(p.stderr().contains(says), "{what}: ffmpeg did not say {says:?}:\n{}", p.stderr());
        assert_eq!(server.metric(SESSIONS), 0.0, "{what}: a session was opened");
    }
    let mut p = srt_publish_with(&server, &id, 10, &format!("&passphrase={PASS}&pbkeylen=32"));
    wait_srt_live(&server);
    let playlist = wait_until(LIVE_TIMEOUT, || server.get("/live/main/index.m3u8").status == 200);
    assert!(playlist, "no LL-HLS playlist from the encrypted publisher\n{}", server.logs());
    let status = p.wait_timeout(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "encrypted publisher: {}", p.stderr());
    assert!(!server.logs().contains(PASS), "the passphrase reached the log");
}

/// `[srt] max_connections`: with one SRT connection open (a publisher), the next caller (a
/// player) is refused in the handshake and counted; RTMP play of the same channel is unaffected.
#[test]
fn srt_connection_limit_refuses_the_next_caller() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__SRT__MAX_CONNECTIONS", "1")]);
    let mut publisher = srt_publish(&server, &format!("publish:live/{}", server.key), 20);
    wait_srt_live(&server);
    let url = format!("srt://{}?streamid=read:main&latency=200000", server.srt);
    let args: Vec<String> =
        ["-hide_banner", "-nostdin", "-v", "error", "-i", &url, "-t", "1", "-f", "null", "-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let mut player = Proc::spawn("ffmpeg", &args);
    let status = player.wait_timeout(Duration::from_secs(15));
    assert!(status.is_some_and(|s| !s.success()), "the caller past the limit got in: {status:?}");
    let rejected = r#"tidecast_connections_rejected_total{protocol="srt",reason="max_connections"}"#;
    assert!(server.metric(rejected) >= 1.0, "not counted\n{}", server.metrics_text());
    assert_eq!(server.metric(SESSIONS), 1.0, "the publisher was disturbed");
    let out = server.data_dir().join("limit-rtmp-play.flv");
    let mut r = ffmpeg_read(&server.play_url("main"), 1.0, &out);
    assert!(
        r.wait_timeout(Duration::from_secs(20)).is_some_and(|s| s.success()),
        "RTMP play: {}",
        r.stderr()
    );
    publisher.kill();
}

/// Random datagrams to the SRT port are ignored; a real publisher still gets in afterwards.
#[test]
fn srt_random_bytes_do_not_hurt() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u32 = 0x1234_5678;
    for i in 0..2000usize {
        let len = 1 + i % 1500;
        let mut buf = vec![0u8; len];
        for b in &mut buf {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        // Some look like SRT control packets (high bit set): handshakes with junk inside.
        if i % 3 == 0 {
            buf[0] |= 0x80;
        }
        let _ = sock.send_to(&buf, server.srt);
    }
    let mut p = srt_publish(&server, &format!("publish:live/{}", server.key), 3);
    wait_srt_live(&server);
    let status = p.wait_timeout(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "publisher after garbage: {}", p.stderr());
}

/// SRT play: ffmpeg reads the channel as MPEG-TS over SRT in both request forms, and what it
/// gets has H.264 and AAC with frames that decode; an unknown channel is refused.
///
/// SRT play in both stream-id forms, one viewer after the other on one server: each gets the
/// channel as decodable MPEG-TS (H.264 + AAC) from its first GOP. The second viewer is the
/// regression check for srt-tokio's burst stall: a viewer's first batch (the ring's GOP) fed at
/// once made srt-tokio 0.4.4 send one packet and drop the rest, so players after the first
/// (sometimes the first too) got nothing; `viewer/srt.rs` paces it.
#[test]
fn srt_play_serves_the_channel_as_ts() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let mut publisher = ffmpeg_publish(&server.publish_url(&server.key), 30);
    server.wait_live(LIVE_TIMEOUT);
    for (i, id) in ["#!::r=main,m=request", "read:main"].iter().enumerate() {
        let out = server.data_dir().join(format!("srt-play-{i}.ts"));
        let (status, stderr) = srt_read(&server, id, "3", &out);
        assert!(
            status.is_some_and(|s| s.success()),
            "srt play {id}: {status:?} {stderr}\nserver:\n{}",
            server.logs()
        );
        let probe = ffprobe(&out);
        assert!(probe.video().count() >= 30, "{} video packets over SRT play", probe.video().count());
        assert!(probe.streams.iter().any(|s| s.codec_name == "h264"));
        assert!(probe.streams.iter().any(|s| s.codec_name == "aac"));
        let dec = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-v", "error", "-i"])
            .arg(&out)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(dec.status.success(), "decode: {}", String::from_utf8_lossy(&dec.stderr));
        if i == 0 {
            let url = format!("srt://{}?streamid=read:nosuch", server.srt);
            let mut r = Proc::spawn(
                "ffmpeg",
                &["-hide_banner", "-nostdin", "-v", "error", "-i", &url, "-t", "1", "-f", "null", "-"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            );
            let status = r.wait_timeout(Duration::from_secs(15));
            assert!(status.is_some_and(|s| !s.success()), "unknown channel not refused: {status:?}");
        }
    }
    assert_eq!(
        server.metric(r#"tidecast_srt_packets_dropped_total{direction="out"}"#),
        0.0,
        "sender drops on loopback"
    );
    publisher.kill();
}

/// libsrt's own sender, `srt-live-transmit` (apt `srt-tools`), pushes a TS file (paced by ffmpeg
/// `-re -c copy` on its stdin, as a playout server would) with the `publish:` stream id; the
/// channel then plays over LL-HLS.
#[test]
fn srt_live_transmit_pushes_a_ts_file() {
    if !require_ffmpeg() || !require_tool("srt-live-transmit") {
        return;
    }
    let server = TestServer::start(&[]);
    let file = server.data_dir().join("playout.ts");
    let made = run_tool(
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "30",
            "-c:a",
            "aac",
            "-t",
            "15",
            "-f",
            "mpegts",
            file.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(made.status.success(), "making the TS file: {}", made.stderr);
    // ffmpeg paces the file onto a pipe; srt-live-transmit reads it. Both are children of this
    // test, ended by the guard (a shell in between would leave them running when killed).
    let mut pacer = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-re", "-i"])
        .arg(&file)
        .args(["-c", "copy", "-f", "mpegts", "-"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning ffmpeg");
    let pipe = pacer.stdout.take().expect("ffmpeg stdout");
    let target = format!("srt://{}?streamid=publish:live/{}&latency=200", server.srt, server.key);
    let transmit = std::process::Command::new("srt-live-transmit")
        .args(["-q", "file://con", &target])
        .stdin(std::process::Stdio::from(pipe))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning srt-live-transmit");
    struct Ends(Vec<std::process::Child>);
    impl Drop for Ends {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let pusher = Ends(vec![transmit, pacer]);
    wait_srt_live(&server);
    let mv = decode_ll_hls(&server, "main", 3);
    assert!(mv.contains("avc1.") && mv.contains("mp4a.40.2"), "multivariant playlist:\n{mv}");
    drop(pusher);
}

/// HEVC over SRT (ffmpeg libx265 in MPEG-TS): the channel's LL-HLS is HEVC (`hvc1` in CODECS)
/// and decodes.
#[test]
fn srt_hevc_plays_over_ll_hls() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let url =
        format!("srt://{}?streamid=publish:live/{}&pkt_size=1316&latency=200000", server.srt, server.key);
    let video =
        strings(&["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:log-level=error"]);
    let mut publisher = ffmpeg_test_source(&url, 20, "640x360", &video, "mpegts");
    wait_srt_live(&server);
    let mv = decode_ll_hls(&server, "main", 3);
    assert!(mv.contains("hvc1."), "not HEVC in the multivariant playlist:\n{mv}");
    publisher.kill();
}

/// Opus audio in the TS (ffmpeg libopus): the channel's LL-HLS carries it (`opus` in CODECS,
/// an `Opus`/`dOps` sample entry) and decodes; SRT play sends it on as Opus in TS.
#[test]
fn srt_opus_audio_plays_over_ll_hls() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let url =
        format!("srt://{}?streamid=publish:live/{}&pkt_size=1316&latency=200000", server.srt, server.key);
    let options =
        strings(&["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-c:a", "libopus", "-ac", "2"]);
    let mut publisher = ffmpeg_test_source(&url, 20, "640x360", &options, "mpegts");
    wait_srt_live(&server);
    let mv = decode_ll_hls(&server, "main", 3);
    assert!(mv.contains("opus") && mv.contains("avc1."), "no Opus in the multivariant playlist:\n{mv}");
    // SRT play carries it on, as Opus in TS.
    let out = server.data_dir().join("opus-play.ts");
    let (status, stderr) = srt_read(&server, "read:main", "3", &out);
    assert!(status.is_some_and(|s| s.success()), "srt play: {stderr}");
    let probe = ffprobe(&out);
    assert!(probe.streams.iter().any(|s| s.codec_name == "opus"), "{:?}", probe.streams);
    assert!(probe.streams.iter().any(|s| s.codec_name == "h264"));
    publisher.kill();
}

/// SRT play follows LL-HLS's entitlement rule: a `subscribers` channel needs a playback token
/// for it in the stream id (`token=` in the access-control syntax); without one, or with a
/// forged one, the handshake is refused (`Forbidden`) and counted; the owner's token (from
/// `GET /api/v1/channels/{name}`) plays it. The token never reaches the log.
#[test]
fn srt_play_of_a_subscribers_channel_needs_its_playback_token() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let owner = signed_in(&server, "owner@example.com");
    let (s, v) = http_json(
        server.http,
        "POST",
        "/api/v1/channels",
        Some(&owner),
        Some(serde_json::json!({"name": "premium", "visibility": "subscribers"})),
    );
    assert_eq!(s, 201, "{v}");
    let key = v["stream_key"].as_str().unwrap().to_owned();
    let mut publisher = ffmpeg_publish(&server.publish_url(&key), 30);
    server.wait_live(LIVE_TIMEOUT);
    let (s, v) = http_json(server.http, "GET", "/api/v1/channels/premium", Some(&owner), None);
    assert_eq!(s, 200, "{v}");
    let token = v["playback_token"].as_str().expect("the owner gets a playback token").to_owned();

    let scratch = server.data_dir().join("refused.ts");
    let forged = format!("{}x", &token[..token.len() - 1]);
    for (what, id) in [
        ("no token", "#!::r=premium,m=request".to_string()),
        ("a forged token", format!("#!::r=premium,m=request,token={forged}")),
    ] {
        let (status, stderr) = srt_read(&server, &id, "1", &scratch);
        assert!(status.is_some_and(|s| !s.success()), "{what}: not refused: {status:?} {stderr}");
    }
    assert!(server.metric(AUTH_FAILURES) >= 2.0, "refusals not counted");

    let out = server.data_dir().join("premium.ts");
    let (status, stderr) = srt_read(&server, &format!("#!::r=premium,m=request,token={token}"), "3", &out);
    assert!(status.is_some_and(|s| s.success()), "with the token: {status:?} {stderr}\n{}", server.logs());
    let probe = ffprobe(&out);
    assert!(probe.video().count() >= 30, "{} video packets over SRT play", probe.video().count());
    assert!(!server.logs().contains(&token), "the playback token reached the log");
    publisher.kill();
}

/// A UDP relay between an SRT caller and the server: drops `loss_percent` of the datagrams in
/// each direction (a fixed-seed xorshift, so runs are comparable) and delays the rest by `delay`.
struct LossyRelay {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LossyRelay {
    fn start(server: std::net::SocketAddr, loss_percent: u32, delay: Duration) -> LossyRelay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{mpsc, Arc, Mutex};
        use std::time::Instant;
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(server).unwrap();
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let caller: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
        let mut threads = Vec::new();
        // Each direction: a reader that drops or stamps, and a writer that sends when due (the
        // delay is constant, so a FIFO keeps the order).
        for to_server in [true, false] {
            let (rx_sock, tx_sock) = if to_server {
                (front.try_clone().unwrap(), back.try_clone().unwrap())
            } else {
                (back.try_clone().unwrap(), front.try_clone().unwrap())
            };
            rx_sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
            let (stop_r, caller_r) = (stop.clone(), caller.clone());
            threads.push(std::thread::spawn(move || {
                let mut seed = if to_server { 0x2545_f491u32 } else { 0x9e37_79b9 };
                let mut buf = [0u8; 2048];
                while !stop_r.load(Ordering::Relaxed) {
                    let Ok((n, from)) = rx_sock.recv_from(&mut buf) else { continue };
                    if to_server {
                        *caller_r.lock().unwrap() = Some(from);
                    }
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    if seed % 100 < loss_percent {
                        continue;
                    }
                    let _ = tx.send((Instant::now() + delay, buf[..n].to_vec()));
                }
            }));
            let (stop_w, caller_w) = (stop.clone(), caller.clone());
            threads.push(std::thread::spawn(move || {
                while !stop_w.load(Ordering::Relaxed) {
                    let Ok((due, data)) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    if to_server {
                        let _ = tx_sock.send(&data);
                    } else if let Some(to) = *caller_w.lock().unwrap() {
                        let _ = tx_sock.send_to(&data, to);
                    }
                }
            }));
        }
        LossyRelay { addr, stop, threads }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// SRT over an impaired link (5 % of datagrams lost each way, 50 ms delay each way) at 200 ms
/// SRT latency: SRT repairs the losses (retransmissions are counted) and the LL-HLS output
/// decodes without a single error. (With `srt.drop_too_late` on, about a third of such runs
/// passed a damaged frame: see its documentation.)
#[test]
fn srt_over_a_lossy_link_decodes_cleanly() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let relay = LossyRelay::start(server.srt, 5, Duration::from_millis(50));
    let url =
        format!("srt://{}?streamid=publish:live/{}&pkt_size=1316&latency=200000", relay.addr, server.key);
    let video = strings(&["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-b:v", "1M"]);
    let mut publisher = ffmpeg_test_source(&url, 40, "640x360", &video, "mpegts");
    wait_srt_live(&server);
    decode_ll_hls(&server, "main", 10);
    let metric = |name: &str| server.metric(name);
    let retransmitted = metric(r#"tidecast_srt_packets_retransmitted_total{direction="in"}"#);
    let lost = metric(r#"tidecast_srt_packets_lost_total{direction="in"}"#);
    let dropped = metric(r#"tidecast_srt_packets_dropped_total{direction="in"}"#);
    let gaps = metric("tidecast_srt_ts_gaps_total");
    eprintln!("lossy link: lost {lost}, retransmitted {retransmitted}, dropped {dropped}, TS gaps {gaps}");
    assert!(retransmitted > 0.0, "the relay lost packets and SRT repaired them");
    publisher.kill();
    drop(relay);
}

/// Inside an accepted SRT session, a publisher's TS turns to garbage for a while: payloads cut
/// mid-packet (sync lost), random bytes, and packets with a sync byte but random headers. The
/// session survives, the damage is dropped (counted), and the LL-HLS output decodes without a
/// single error before, during and after.
#[test]
fn garbage_and_truncated_ts_inside_an_srt_session_never_reach_viewers() {
    use futures_util::SinkExt;
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let file = server.data_dir().join("source.ts");
    let video = strings(&["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-b:v", "800k"]);
    let mut make = ffmpeg_test_source(file.to_str().unwrap(), 12, "640x360", &video, "mpegts");
    // ffmpeg_test_source paces with -re: 12 s to write.
    assert!(make.wait_timeout(Duration::from_secs(40)).is_some_and(|s| s.success()), "{}", make.stderr());
    let ts = std::fs::read(&file).unwrap();
    let chunks: Vec<Vec<u8>> = ts.chunks(SRT_PAYLOAD).map(<[u8]>::to_vec).collect();
    let pace = Duration::from_secs(12).div_f64(chunks.len() as f64);
    let (srt, key) = (server.srt, server.key.clone());
    let dropped_before = server.metric("tidecast_srt_dropped_units_total");
    let sender = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let stream_id = format!("publish:live/{key}");
            let mut sock = srt_tokio::SrtSocket::builder()
                .latency(Duration::from_millis(200))
                .call(srt, Some(stream_id.as_str()))
                .await
                .expect("SRT connect");
            let mut x: u32 = 0x5eed_1234;
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x
            };
            for (i, chunk) in chunks.iter().enumerate() {
                // Between 4 s and 6 s: one bad payload after every good one.
                let t = pace.mul_f64(i as f64);
                if t > Duration::from_secs(4) && t < Duration::from_secs(6) {
                    let bad: Vec<u8> = match i % 3 {
                        0 => chunk[chunk.len().min(100)..].to_vec(), // cut mid-packet
                        1 => (0..SRT_PAYLOAD).map(|_| rand() as u8).collect(),
                        _ => (0..7)
                            .flat_map(|_| {
                                let mut p = vec![0x47u8];
                                p.extend((1..188).map(|_| rand() as u8));
                                p
                            })
                            .collect(),
                    };
                    sock.send((std::time::Instant::now(), bytes::Bytes::from(bad))).await.expect("send");
                }
                sock.send((std::time::Instant::now(), bytes::Bytes::copy_from_slice(chunk)))
                    .await
                    .expect("send");
                tokio::time::sleep(pace).await;
            }
            sock.close().await.ok();
        });
    });
    wait_srt_live(&server);
    // Decodes across the bad stretch (the sender is at about 1.5 s when this starts).
    decode_ll_hls(&server, "main", 8);
    sender.join().expect("the sender finished");
    assert!(server.metric("tidecast_srt_dropped_units_total") > dropped_before, "the damage was counted");
    assert_eq!(server.get("/healthz").status, 200);
    assert!(!server.logs().contains("publisher session failed"), "{}", server.logs());
}
