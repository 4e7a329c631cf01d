//! Connection and request limits against the real `tidecast` binary (hardening issue, defects 4,
//! 5 and 7): per-address connection limits for RTMP and HTTP, the small message limit before a
//! publish is accepted, nginx-like header line caps, and client mistakes logged at WARN or
//! below, rate-limited.
//!
//! Every server here runs on 127.0.0.1, which the default config exempts from the per-address
//! limits; the tests that exercise them clear `per_address_exempt` in a config file.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult};

const RTMP_PER_ADDRESS: &str = r#"tidecast_connections_rejected_total{protocol="rtmp",reason="per_address"}"#;
const HTTP_PER_ADDRESS: &str = r#"tidecast_connections_rejected_total{protocol="http",reason="per_address"}"#;
const PROTOCOL_ERRORS: &str = r#"tidecast_protocol_errors_total{protocol="rtmp"}"#;

/// A server whose config file is `toml` (besides the harness's usual environment). The file
/// must outlive the server's restarts, so it is returned with it.
fn start_with_config(toml: &str) -> (TestServer, tempfile::NamedTempFile) {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(toml.as_bytes()).unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    (TestServer::start(&[("TIDECAST_CONFIG", &path)]), file)
}

/// Handshake and `connect` to app `live`: the open connection if the server accepted, else the
/// description of its `NetConnection.Connect.Rejected` (or why there was none).
fn rtmp_connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut s = tcp_connect(addr, false);
    let rest = rtmp_handshake(&mut s);
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let mut results = initial;
    results.push(session.request_connection("live".to_string()).unwrap());
    let mut input = rest;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if !input.is_empty() {
            results.extend(session.handle_input(&input).map_err(|e| format!("bad RTMP: {e:?}"))?);
        }
        for r in results.drain(..) {
            match r {
                ClientSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).unwrap(),
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    return Ok(s)
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestRejected {
                    description,
                }) => return Err(description),
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return Err("no answer to connect within 5 s".to_owned());
        }
        let mut buf = [0u8; 8192];
        input = match s.read(&mut buf) {
            Ok(0) => return Err("closed without an answer".to_owned()),
            Ok(n) => buf[..n].to_vec(),
            Err(e) => return Err(format!("read: {e}")),
        };
    }
}

#[test]
fn rtmp_per_address_limit_refuses_politely_and_frees_on_close() {
    let (server, _config) =
        start_with_config("[rtmp]\nmax_connections_per_address = 3\nper_address_exempt = []\n");
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| rtmp_connect(server.rtmp).unwrap_or_else(|e| panic!("connection {i} refused: {e}")))
        .collect();
    let before = server.metric(RTMP_PER_ADDRESS);
    let refused = rtmp_connect(server.rtmp).expect_err("a fourth connection from 127.0.0.1 was accepted");
    assert!(refused.contains("too many connections from your address"), "{refused}");
    server.wait_metric(RTMP_PER_ADDRESS, Duration::from_secs(2), |v| v >= before + 1.0);

    // Closing one gives its slot back.
    held.pop();
    let ok = wait_until(Duration::from_secs(3), || rtmp_connect(server.rtmp).is_ok());
    assert!(ok, "no slot came back after a connection closed; log:\n{}", server.logs());
    drop(held);
}

#[test]
fn rtmp_loopback_is_exempt_by_default() {
    let server = TestServer::start(&[("TIDECAST__RTMP__MAX_CONNECTIONS_PER_ADDRESS", "2")]);
    let held: Vec<TcpStream> = (0..6)
        .map(|i| rtmp_connect(server.rtmp).unwrap_or_else(|e| panic!("connection {i} refused: {e}")))
        .collect();
    assert_eq!(held.len(), 6);
    assert_eq!(server.metric(RTMP_PER_ADDRESS), 0.0);
}

/// An HTTP/1.1 keep-alive connection that has had one request answered.
fn http_keep_alive(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

#[test]
fn http_per_address_limit_answers_429_and_frees_on_close() {
    let (server, _config) =
        start_with_config("[http]\nmax_connections_per_address = 3\nper_address_exempt = []\n");
    let held: Vec<TcpStream> = (0..3).map(|_| http_keep_alive(server.http)).collect();
    let r = get_with(server.http, "/healthz", &[], Duration::from_secs(5));
    assert_eq!(r.status, 429, "{}", r.head);
    assert_eq!(r.header("retry-after").as_deref(), Some("5"), "{}", r.head);
    assert_eq!(r.error_code(), "resource_exhausted");
    drop(held);
    // The held slots come back once actix has seen the connections close.
    let ok = wait_until(Duration::from_secs(3), || {
        get_with(server.http, "/healthz", &[], Duration::from_secs(5)).status == 200
    });
    assert!(ok, "no slot came back after the connections closed");
    assert!(server.metric(HTTP_PER_ADDRESS) >= 1.0, "{}", server.metrics_text());
}

#[test]
fn http_header_lines_are_capped_like_nginx() {
    let server = TestServer::start(&[]);
    let get =
        |path: &str, headers: &[(&str, &str)]| get_with(server.http, path, headers, Duration::from_secs(5));
    let big = "a".repeat(100_000);
    let r = get("/healthz", &[("X-Big", &big)]);
    assert_eq!(r.status, 431, "a 100 KB header line: {}", r.head);
    assert_eq!(r.error_code(), "header_too_large");
    let over = "a".repeat(8 * 1024);
    assert_eq!(get("/healthz", &[("X-Over", &over)]).status, 431, "just over 8 KiB");
    let under = "a".repeat(7 * 1024);
    assert_eq!(get("/healthz", &[("X-Under", &under)]).status, 200, "7 KiB");
    // Five 7 KiB lines: each fine, together over the 32 KiB head.
    let many: Vec<(String, &str)> = (0..5).map(|i| (format!("X-Part-{i}"), under.as_str())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(get("/healthz", &many).status, 431, "a 35 KiB head");
    let long_path = format!("/healthz?{}", "q".repeat(9 * 1024));
    assert_eq!(get(&long_path, &[]).status, 414, "a 9 KiB request line");
}

/// Before a publish is accepted, a message may be at most 64 KiB (`rtmp.max_message_size`, 8 MiB,
/// applies to accepted publishers only): a declared 1 MiB message closes the connection at its
/// header, instead of letting rml_rtmp reserve it and waiting for the handshake timeout (10 s).
#[test]
fn large_message_before_publish_closes_at_its_header() {
    let server = TestServer::start(&[]);
    let before = server.metric(PROTOCOL_ERRORS);
    let mut s = tcp_connect(server.rtmp, false);
    rtmp_handshake(&mut s);
    // fmt 0, csid 4, timestamp 0, length 1 MiB, video, stream 1, then its first chunk.
    let mut bytes = vec![0x04, 0, 0, 0, 0x10, 0x00, 0x00, 9, 1, 0, 0, 0];
    bytes.extend([0u8; 128]);
    let started = Instant::now();
    let closed = s.write_all(&bytes).is_err() || socket_closed_within(&mut s, Duration::from_secs(3));
    assert!(closed, "not closed within 3 s; log:\n{}", server.logs());
    eprintln!("closed after {} ms", started.elapsed().as_millis());
    server.wait_metric(PROTOCOL_ERRORS, Duration::from_secs(2), |v| v >= before + 1.0);
}

/// Client mistakes are not logged at ERROR, and a burst of them costs a few lines, not one each.
#[test]
fn client_mistakes_are_logged_below_error_and_rate_limited() {
    let server = TestServer::start(&[]);
    const N: usize = 30;
    for _ in 0..N {
        let mut s = TcpStream::connect_timeout(&server.http, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        assert!(raw.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&raw));
    }
    let before = server.metric(PROTOCOL_ERRORS);
    for _ in 0..N {
        // Not RTMP: the version byte of "GET / ..." is 0x47.
        let mut s = tcp_connect(server.rtmp, false);
        let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
        assert!(socket_closed_within(&mut s, Duration::from_secs(3)));
    }
    server.wait_metric(PROTOCOL_ERRORS, Duration::from_secs(5), |v| v >= before + N as f64);
    thread::sleep(Duration::from_millis(200));
    let logs = server.logs();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "client mistakes logged at ERROR:\n{}", errors.join("\n"));
    let http = logs.lines().filter(|l| l.contains(" WARN ") && l.contains("HTTP client error")).count();
    let rtmp = logs.lines().filter(|l| l.contains("malformed RTMP")).count();
    assert!((1..=10).contains(&http), "{http} lines for {N} malformed HTTP requests:\n{logs}");
    assert!((1..=10).contains(&rtmp), "{rtmp} lines for {N} malformed RTMP connections:\n{logs}");
}
