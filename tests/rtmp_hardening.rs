//! RTMP hardening, end to end against the real `tidecast` binary: hostile but tiny inputs from an
//! unauthenticated peer must cost that peer its connection and nothing else.
//!
//! Covers the hardening issue's remote crash (a `connect` whose AMF0 command object is nested
//! thousands of levels deep overflowed a thread's stack in rml_rtmp's recursive decoder and
//! aborted the process) and its resource bounds (a declared message length over
//! `rtmp.max_message_size` and a SetChunkSize of 0 are refused at once, not at the handshake
//! timeout). Each test runs its own server on port 0.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

const PROTOCOL_ERRORS: &str = r#"tidecast_protocol_errors_total{protocol="rtmp"}"#;

use tidecast::protocols::rtmp::amf0::nested_connect as deep_connect;

/// One command message (type 20) on message stream 0, in 128-byte chunks as a fresh client sends.
fn command_chunks(body: Vec<u8>) -> Vec<u8> {
    let payload = MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id: 20,
        message_stream_id: 0,
        data: body.into(),
    };
    ChunkSerializer::new().serialize(&payload, true, false).unwrap().bytes
}

/// Handshake, send `bytes`, and report whether the server closed the connection within `timeout`.
fn closed_after(server: &TestServer, bytes: &[u8], timeout: Duration) -> bool {
    let mut s = tcp_connect(server.rtmp, false);
    rtmp_handshake(&mut s);
    // The server may close mid-write; that is a close too.
    if s.write_all(bytes).is_err() {
        return true;
    }
    socket_closed_within(&mut s, timeout)
}

/// The server is up and serving: /healthz answers and a new RTMP handshake completes.
fn assert_still_serving(server: &TestServer, after: &str) {
    assert_eq!(server.get("/healthz").status, 200, "after {after}; log:\n{}", server.logs());
    let mut s = tcp_connect(server.rtmp, false);
    rtmp_handshake(&mut s);
}

#[test]
fn deeply_nested_connect_costs_only_its_connection() {
    let server = TestServer::start(&[]);
    // Strict arrays first: the cheapest per level (5 bytes), so the deepest per byte. Each stays
    // under the 64 KiB a message may have before a publish is accepted (a bigger one is refused
    // at its chunk header, before the AMF0 walk this test is about).
    for (kind, name, depth) in
        [(0x0A, "strict array", 11_000), (0x08, "ECMA array", 4_200), (0x03, "object", 6_000)]
    {
        let before = server.metric(PROTOCOL_ERRORS);
        let body = deep_connect(kind, depth);
        assert!(body.len() < 64 * 1024, "{name}: {} bytes", body.len());
        let bytes = command_chunks(body);
        let started = Instant::now();
        assert!(
            closed_after(&server, &bytes, Duration::from_secs(5)),
            "{name}: the connection was not closed within 5 s; log:\n{}",
            server.logs()
        );
        eprintln!("{name}: {} bytes, closed after {} ms", bytes.len(), started.elapsed().as_millis());
        assert_still_serving(&server, name);
        server.wait_metric(PROTOCOL_ERRORS, Duration::from_secs(2), |v| v >= before + 1.0);
    }
    let logs = server.logs();
    assert!(logs.contains("nested deeper than"), "no refusal logged:\n{logs}");
    assert!(!logs.contains("overflowed its stack"), "{logs}");
}

/// Default `rtmp.handshake_timeout` is 10 s, so a close within 2 s is the limit's own doing.
#[test]
fn oversized_declaration_and_chunk_size_zero_close_at_once() {
    let server = TestServer::start(&[]);
    let cases: [(&str, Vec<u8>); 3] = [
        // fmt 0, csid 4, length 0xFFFFFF (16 MiB - 1; limit 8 MiB), video, stream 1: header only.
        ("16 MiB declared length", vec![0x04, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0]),
        // fmt 0, csid 2, length 4, SetChunkSize, stream 0, then the size.
        ("SetChunkSize 0", vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("SetChunkSize 0x80000000", vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x80, 0, 0, 0]),
    ];
    for (name, bytes) in cases {
        let before = server.metric(PROTOCOL_ERRORS);
        assert!(
            closed_after(&server, &bytes, Duration::from_secs(2)),
            "{name}: not closed within 2 s; log:\n{}",
            server.logs()
        );
        server.wait_metric(PROTOCOL_ERRORS, Duration::from_secs(2), |v| v >= before + 1.0);
        assert_still_serving(&server, name);
    }
}
