//! RTMP live path, end to end: the real `tidecast` binary with ffmpeg publishing and reading,
//! ffprobe judging what came out, and a small rml_rtmp client where ffmpeg cannot measure.
//!
//! Covers PRODUCT.md "Publishing" and "Playback" for RTMP: key auth (wrong keys refused and
//! never logged), one publisher per channel, the reconnect grace (README), slow-viewer cut-off
//! without hurting other viewers (rtmp.write_timeout), malformed input, admission control,
//! restarts, the channel CLI and the operational endpoints. Each test runs its own server on
//! port 0, so they run in parallel.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rml_rtmp::handshake::{Handshake, PeerType};

const INGEST_SESSIONS: &str = r#"tidecast_ingest_sessions{protocol="rtmp"}"#;
const INGEST_BYTES: &str = r#"tidecast_ingest_bytes_total{protocol="rtmp"}"#;
const AUTH_FAILURES: &str = r#"tidecast_auth_failures_total{protocol="rtmp"}"#;
const PROTOCOL_ERRORS: &str = r#"tidecast_protocol_errors_total{protocol="rtmp"}"#;
const REJECTED: &str = r#"tidecast_connections_rejected_total{protocol="rtmp",reason="max_connections"}"#;
const CUT_STALLED: &str = r#"tidecast_viewers_disconnected_total{protocol="rtmp",reason="stalled"}"#;
const CUT_SLOW: &str = r#"tidecast_viewers_disconnected_total{protocol="rtmp",reason="slow"}"#;

const LIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// A stream key of the right shape that no channel has.
fn wrong_key() -> String {
    format!("live_{}", "deadbeef".repeat(8))
}

/// ffmpeg publishing with `key` must fail within 10 s; returns its stderr.
fn assert_publish_refused(server: &TestServer, key: &str) -> String {
    let mut p = ffmpeg_publish(&server.publish_url(key), 10);
    let status = p.wait_timeout(Duration::from_secs(10));
    let stderr = p.stderr();
    match status {
        None => panic!("publish was not refused within 10 s; ffmpeg:\n{stderr}\nserver:\n{}", server.logs()),
        Some(s) => assert!(!s.success(), "publish unexpectedly succeeded; ffmpeg:\n{stderr}"),
    }
    stderr
}

/// Read `seconds` of channel `main` into `name` under the test's temp dir; panics unless ffmpeg
/// exits 0 within `timeout`. Returns the probe.
fn read_and_probe(server: &TestServer, seconds: f64, timeout: Duration, name: &str) -> Probe {
    let out = server.data_dir().join(name);
    let mut r = ffmpeg_read(&server.play_url("main"), seconds, &out);
    let status = r.wait_timeout(timeout);
    assert!(
        status.is_some_and(|s| s.success()),
        "viewer ffmpeg: {status:?}\n{}\nserver:\n{}",
        r.stderr(),
        server.logs()
    );
    ffprobe(&out)
}

#[test]
fn publish_then_play_roundtrip() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let _publisher = ffmpeg_publish(&server.publish_url(&server.key), 20);
    server.wait_live(LIVE_TIMEOUT);
    assert!(server.metric(INGEST_BYTES) > 0.0);
    assert_eq!(server.metric("tidecast_channels_live"), 1.0);

    let probe = read_and_probe(&server, 4.0, Duration::from_secs(15), "roundtrip.flv");

    let video = probe.streams.iter().find(|s| s.codec_type == "video").expect("a video stream");
    assert_eq!(video.codec_name, "h264");
    assert_eq!((video.width, video.height), (Some(640), Some(360)));
    let audio = probe.streams.iter().find(|s| s.codec_type == "audio").expect("an audio stream");
    assert_eq!(audio.codec_name, "aac");

    let first_video = probe.video().next().expect("video packets");
    assert!(first_video.keyframe, "the first video packet is not a key frame");
    assert!(probe.video_span() >= 3.0, "only {:.2}s of video", probe.video_span());
    for s in &probe.streams {
        let dts: Vec<f64> =
            probe.packets.iter().filter(|p| p.stream_index == s.index).map(|p| p.dts).collect();
        assert!(dts.len() > 10, "stream {} has {} packets", s.index, dts.len());
        for w in dts.windows(2) {
            assert!(w[1] >= w[0], "{} dts goes backwards: {} -> {}", s.codec_type, w[0], w[1]);
        }
    }
    assert!(!server.logs().contains(&server.key), "the stream key appears in the server log");
}

#[test]
fn first_frame_is_fast() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let _publisher = ffmpeg_publish(&server.publish_url(&server.key), 20);
    server.wait_live(LIVE_TIMEOUT);

    let mut player = RtmpPlayer::play(server.rtmp, "main", false, Duration::from_secs(5));
    assert!(player.read_video(2, Duration::from_secs(5)), "fewer than 2 video messages in 5 s");
    let (_, first, first_at) = &player.video[0];
    let (_, second, _) = &player.video[1];
    let elapsed = first_at.duration_since(player.connected_at);
    eprintln!("first video message {} ms after TCP connect", elapsed.as_millis());
    assert!(elapsed < Duration::from_millis(500), "first video message after {elapsed:?}");
    assert!(
        is_avc_sequence_header(first),
        "first video message is not the AVC sequence header: {:02x?}",
        &first[..2]
    );
    assert!(is_avc_keyframe(second), "second video message is not a key frame: {:02x?}", &second[..2]);
}

#[test]
fn wrong_key_is_rejected() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let before = server.metric(AUTH_FAILURES);
    let key = wrong_key();
    assert_publish_refused(&server, &key);
    server.wait_metric(AUTH_FAILURES, Duration::from_secs(5), |v| v >= before + 1.0);
    assert_eq!(server.metric(INGEST_SESSIONS), 0.0);
    let logs = server.logs();
    assert!(!logs.contains(&key) && !logs.contains("deadbeef"), "the wrong key appears in the log:\n{logs}");
}

#[test]
fn second_publisher_is_refused() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let mut first = ffmpeg_publish(&server.publish_url(&server.key), 25);
    server.wait_live(LIVE_TIMEOUT);

    assert_publish_refused(&server, &server.key);
    assert!(first.is_running(), "the first publisher died: {}", first.stderr());
    assert_eq!(server.metric(INGEST_SESSIONS), 1.0);

    let probe = read_and_probe(&server, 2.0, Duration::from_secs(15), "after-second.flv");
    assert!(probe.video().count() > 30, "viewer got {} video packets", probe.video().count());
    assert!(first.is_running(), "the first publisher died: {}", first.stderr());
}

#[test]
fn publisher_reconnect_within_grace_keeps_viewer() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "5s")]);
    let url = server.publish_url(&server.key);
    let mut a = ffmpeg_publish(&url, 5);
    server.wait_live(LIVE_TIMEOUT);

    let out = server.data_dir().join("reconnect.flv");
    let mut viewer = ffmpeg_read(&server.play_url("main"), 9.0, &out);
    let status = a.wait_timeout(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "publisher A: {status:?} {}", a.stderr());
    thread::sleep(Duration::from_secs(1));
    assert!(viewer.is_running(), "viewer ended when A left: {}\nserver:\n{}", viewer.stderr(), server.logs());
    let _b = ffmpeg_publish(&url, 12);

    let status = viewer.wait_timeout(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "viewer: {status:?}\n{}\nserver:\n{}",
        viewer.stderr(),
        server.logs()
    );
    let probe = ffprobe(&out);
    eprintln!(
        "reconnect: viewer got {:.2}s of video, largest gap {:.3}s",
        probe.video_span(),
        probe.max_video_gap()
    );
    // A lasted 5 s and the viewer joined after A had been live for a while, so anything beyond
    // ~5 s of video came from B.
    assert!(
        probe.video_span() > 6.5,
        "viewer got only {:.2}s of video: B's frames did not reach it\nserver:\n{}",
        probe.video_span(),
        server.logs()
    );
    let logs = server.logs();
    assert!(logs.contains("resumed=true"), "no resumed publisher in the log:\n{logs}");
}

#[test]
fn stalled_viewer_is_cut_off_others_unaffected() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__RTMP__WRITE_TIMEOUT", "2s")]);
    let _publisher = ffmpeg_publish_with(
        &server.publish_url(&server.key),
        30,
        &["-b:v", "4M", "-minrate", "4M", "-maxrate", "4M", "-bufsize", "1M", "-x264-params", "nal-hrd=cbr"],
    );
    server.wait_live(LIVE_TIMEOUT);

    let mut stalled = RtmpPlayer::play(server.rtmp, "main", true, Duration::from_secs(5));
    let out = server.data_dir().join("healthy.flv");
    let mut healthy = ffmpeg_read(&server.play_url("main"), 12.0, &out);

    let started = Instant::now();
    let bytes_at_start = server.metric(INGEST_BYTES);
    let ok =
        wait_until(Duration::from_secs(20), || server.metric(CUT_STALLED) + server.metric(CUT_SLOW) >= 1.0);
    assert!(ok, "the stalled viewer was not disconnected within 20 s; log:\n{}", server.logs());
    eprintln!(
        "stalled viewer cut after {:.1}s (stalled: {}, slow: {}, ingest {:.1} Mbit/s)",
        started.elapsed().as_secs_f64(),
        server.metric(CUT_STALLED),
        server.metric(CUT_SLOW),
        (server.metric(INGEST_BYTES) - bytes_at_start) * 8.0 / 1e6 / started.elapsed().as_secs_f64(),
    );
    assert!(stalled.closed_within(Duration::from_secs(5)), "the stalled viewer's socket is still open");

    let status = healthy.wait_timeout(Duration::from_secs(25));
    assert!(
        status.is_some_and(|s| s.success()),
        "healthy viewer: {status:?}\n{}\nserver:\n{}",
        healthy.stderr(),
        server.logs()
    );
    let probe = ffprobe(&out);
    assert!(probe.video_span() > 10.0, "healthy viewer got {:.2}s", probe.video_span());
    let gap = probe.max_video_gap();
    assert!(gap < 0.5, "healthy viewer saw a {gap:.3}s gap between video packets");
}

#[test]
fn restart_keeps_the_channel() {
    if !require_ffmpeg() {
        return;
    }
    let mut server = TestServer::start(&[]);
    server.restart();
    thread::sleep(Duration::from_millis(300));
    assert!(!server.stdout().contains("Stream Key"), "a new banner after restart:\n{}", server.stdout());

    let _publisher = ffmpeg_publish(&server.publish_url(&server.key), 15);
    server.wait_live(LIVE_TIMEOUT);
    assert_eq!(server.metric(AUTH_FAILURES), 0.0);
}

/// Open a connection, send `bytes`, and report whether the server closed it within `timeout`.
fn closed_after_sending(
    addr: std::net::SocketAddr,
    handshake: bool,
    bytes: Vec<u8>,
    timeout: Duration,
) -> bool {
    let mut s = tcp_connect(addr, false);
    if handshake {
        rtmp_handshake(&mut s);
    }
    // The server may close mid-write; that is a close too.
    if s.write_all(&bytes).is_err() {
        return true;
    }
    socket_closed_within(&mut s, timeout)
}

/// A chunk on the protocol control stream (csid 2, fmt 0) carrying SetChunkSize(size).
fn set_chunk_size_chunk(size: u32) -> Vec<u8> {
    let mut b = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    b.extend_from_slice(&size.to_be_bytes());
    b
}

#[test]
fn malformed_input_does_not_take_the_server_down() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__RTMP__HANDSHAKE_TIMEOUT", "3s")]);
    let _publisher = ffmpeg_publish(&server.publish_url(&server.key), 30);
    server.wait_live(LIVE_TIMEOUT);
    let errors_before = server.metric(PROTOCOL_ERRORS);
    let out = server.data_dir().join("during-garbage.flv");
    let mut viewer = ffmpeg_read(&server.play_url("main"), 8.0, &out);
    thread::sleep(Duration::from_millis(500));

    let addr = server.rtmp;
    // A silent peer can only be closed by the handshake timeout (3 s here).
    let close_within = Duration::from_secs(7);
    let mut random: Vec<u8> = (0..8192).map(|_| rand::random::<u8>()).collect();
    random[0] = 0x42; // not RTMP version 3
    let mut c0c1_then_garbage = Handshake::new(PeerType::Client).generate_outbound_p0_and_p1().unwrap();
    c0c1_then_garbage.extend((0..8192).map(|_| rand::random::<u8>()));
    // fmt 0, csid 4, length 0xFFFFFF (16 MiB - 1), video, stream 1, then nothing.
    let huge_header = vec![0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0, 0x17, 0x01];
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("random bytes", false, random),
        ("C0/C1 then garbage", false, c0c1_then_garbage),
        ("SetChunkSize 0x7fffffff", true, set_chunk_size_chunk(0x7fff_ffff)),
        ("16 MiB message header then silence", true, huge_header),
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(name, hs, bytes)| {
            thread::spawn(move || {
                let t = Instant::now();
                (name, closed_after_sending(addr, hs, bytes, close_within), t.elapsed())
            })
        })
        .collect();
    for h in handles {
        let (name, closed, took) = h.join().unwrap();
        eprintln!("malformed: {name}: closed={closed} after {} ms", took.as_millis());
        assert!(closed, "{name}: the server did not close the connection within {close_within:?}");
    }

    assert_eq!(server.get("/healthz").status, 200);
    server.wait_metric(PROTOCOL_ERRORS, Duration::from_secs(5), |v| v >= errors_before + 1.0);
    let status = viewer.wait_timeout(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "viewer: {status:?}\n{}", viewer.stderr());
    let probe = ffprobe(&out);
    assert!(probe.video_span() > 7.0, "viewer got {:.2}s", probe.video_span());
    assert!(probe.max_video_gap() < 0.5, "viewer saw a {:.3}s gap", probe.max_video_gap());
    assert_eq!(server.metric(INGEST_SESSIONS), 1.0, "the publisher was dropped");
}

/// `rtmp.max_chunk_size` (default 64 KiB) promises that "larger requests close the connection".
/// 0x7fffffff is the largest size rml_rtmp's deserializer accepts, so only our own limit can
/// refuse it; the refusal should be immediate and counted, not left to the handshake timeout.
#[test]
fn set_chunk_size_above_the_limit_closes_at_once() {
    let server = TestServer::start(&[]);
    let before = server.metric(PROTOCOL_ERRORS);
    let started = Instant::now();
    let closed =
        closed_after_sending(server.rtmp, true, set_chunk_size_chunk(0x7fff_ffff), Duration::from_secs(2));
    assert!(
        closed,
        "a SetChunkSize of 0x7fffffff (limit 64 KiB) did not close the connection within 2 s \
         (handshake_timeout is 10 s); log:\n{}",
        server.logs()
    );
    eprintln!("closed after {} ms", started.elapsed().as_millis());
    server.wait_metric(PROTOCOL_ERRORS, Duration::from_secs(2), |v| v >= before + 1.0);
}

#[test]
fn cli_channel_create_and_rotate() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[]);
    let out = server.cli(&["channel", "create", "studio"]);
    assert!(out.status.success(), "channel create: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().expect("a key line").trim().to_string();
    assert!(key.starts_with("live_") && key.len() == 69, "last stdout line is not a key: {stdout:?}");
    assert_ne!(key, server.key);

    let mut p = ffmpeg_publish(&server.publish_url(&key), 15);
    server.wait_live(LIVE_TIMEOUT);
    p.kill();
    server.wait_metric(INGEST_SESSIONS, Duration::from_secs(10), |v| v == 0.0);

    let out = server.cli(&["channel", "rotate-key", "studio"]);
    assert!(out.status.success(), "rotate-key: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let new_key = stdout.lines().last().expect("a key line").trim().to_string();
    assert!(new_key.starts_with("live_") && new_key.len() == 69, "not a key: {stdout:?}");
    assert_ne!(new_key, key);

    let failures = server.metric(AUTH_FAILURES);
    assert_publish_refused(&server, &key);
    server.wait_metric(AUTH_FAILURES, Duration::from_secs(5), |v| v >= failures + 1.0);

    let _p = ffmpeg_publish(&server.publish_url(&new_key), 15);
    server.wait_live(LIVE_TIMEOUT);
    let logs = server.logs();
    assert!(!logs.contains(&key) && !logs.contains(&new_key), "a stream key appears in the log");
}

#[test]
fn connection_limit_rejects_politely() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__RTMP__MAX_CONNECTIONS", "2")]);
    let mut idle: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = tcp_connect(server.rtmp, false);
            rtmp_handshake(&mut s);
            s
        })
        .collect();
    let before = server.metric(REJECTED);
    let stderr = assert_publish_refused(&server, &server.key);
    server.wait_metric(REJECTED, Duration::from_secs(5), |v| v >= before + 1.0);
    eprintln!("ffmpeg said: {}", stderr.trim());
    assert_eq!(server.metric(AUTH_FAILURES), 0.0, "the refusal was not about the key");

    // The held connections still work: the server did not drop them to make room.
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => panic!("an admitted connection was closed"),
            Ok(_) => {}
            Err(e) => {
                assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
            }
        }
    }
    // Freeing the slots lets a publisher in.
    drop(idle);
    thread::sleep(Duration::from_millis(300));
    let _p = ffmpeg_publish(&server.publish_url(&server.key), 15);
    server.wait_live(LIVE_TIMEOUT);
}

#[test]
fn health_and_ready() {
    let server = TestServer::start(&[]);
    for path in ["/healthz", "/readyz"] {
        let r = server.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let v: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.body));
        assert!(v.is_object(), "{path}: {}", r.body);
    }
    let text = server.metrics_text();
    // Families without labels exist from the start; labelled ones appear on first use.
    for family in [
        "tidecast_channels_live",
        "tidecast_channel_restarts_total",
        "tidecast_http_request_duration_seconds",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "/metrics lacks {family}:\n{text}");
    }
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("tidecast_") || name.starts_with("process_"), "unprefixed family {name}");
    }
    let r = server.get("/no/such/route");
    assert_eq!(r.status, 404);
    assert!(r.headers.to_ascii_lowercase().contains("application/json"), "{}", r.headers);
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("404 body is JSON");
    assert_eq!(v["error"]["code"], "not_found", "{}", r.body);
    assert!(v["error"]["message"].is_string(), "{}", r.body);
}

/// A control-stream chunk (csid 2, fmt 0) carrying WindowAcknowledgementSize(size).
fn window_ack_size_chunk(size: u32) -> Vec<u8> {
    let mut b = vec![0x02, 0, 0, 0, 0, 0, 4, 5, 0, 0, 0, 0];
    b.extend_from_slice(&size.to_be_bytes());
    b
}

/// One video message announcing 16 MiB - 1 bytes on csid 4, of which `send` bytes follow in
/// 128-byte chunks (the default chunk size).
fn oversized_video_message(send: usize) -> Vec<u8> {
    let mut b = vec![0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0];
    let mut sent = 0;
    while sent < send {
        if sent > 0 {
            b.push(0xc4); // fmt 3, csid 4: continuation
        }
        let n = 128.min(send - sent);
        b.extend(std::iter::repeat_n(0x5a, n));
        sent += n;
    }
    b
}

/// Send 9 MiB of one message (limit: rtmp.max_message_size = 8 MiB), optionally after asking the
/// server to acknowledge every byte; the server must close the connection and count it.
fn oversized_message_is_refused(tiny_ack_window: bool) {
    // Long handshake timeout: only the message-size limit may close this connection.
    let server = TestServer::start(&[("TIDECAST__RTMP__HANDSHAKE_TIMEOUT", "60s")]);
    let before = server.metric(PROTOCOL_ERRORS);
    let mut bytes = Vec::new();
    if tiny_ack_window {
        bytes.extend(window_ack_size_chunk(1));
    }
    bytes.extend(oversized_video_message(9 * 1024 * 1024));
    let closed = closed_after_sending(server.rtmp, true, bytes, Duration::from_secs(5));
    assert!(
        closed,
        "9 MiB of one message (limit 8 MiB, tiny ack window: {tiny_ack_window}) did not close the \
         connection; log:\n{}",
        server.logs()
    );
    server.wait_metric(PROTOCOL_ERRORS, Duration::from_secs(2), |v| v >= before + 1.0);
}

#[test]
fn message_above_max_size_is_refused() {
    oversized_message_is_refused(false);
}

/// rml_rtmp's ServerSession answers every input with an Acknowledgement once the peer sets a
/// window of 1 byte; the size limit must not depend on the session staying quiet.
#[test]
fn message_above_max_size_is_refused_with_a_one_byte_ack_window() {
    oversized_message_is_refused(true);
}
