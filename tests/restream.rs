//! Restream (push), end to end: an origin `tidecast` with ffmpeg publishing pushes its channel
//! to a second `tidecast` (the destination) over RTMP and SRT; the destination is stopped and
//! started again and the push resumes, while the origin's viewer keeps playing; an unreachable
//! destination sits in `retrying` without touching the channel. Also the API's manners: the
//! stream key is write-only and never appears in responses, logs or metrics; bad URLs are 400.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);
const DEST_KEY_SECRET: &str = "dest-secret-key-0123456789";

/// A loopback TCP port free right now (for a destination that must come back on the same port).
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An origin with channel `studio` owned by a fresh user; returns (server, owner token, key).
fn origin() -> (TestServer, String, String) {
    origin_with(&[])
}

fn origin_with(extra: &[(&str, &str)]) -> (TestServer, String, String) {
    let mut env = vec![("TIDECAST__RESTREAM__RETRY_MAX", "1s")];
    env.extend_from_slice(extra);
    let server = TestServer::start(&env);
    let owner = signed_in(&server, "owner@example.com");
    let (s, v) =
        http_json(server.http, "POST", "/api/v1/channels", Some(&owner), Some(json!({"name": "studio"})));
    assert_eq!(s, 201, "{v}");
    let key = v["stream_key"].as_str().unwrap().to_owned();
    (server, owner, key)
}

fn add_destination(server: &TestServer, owner: &str, url: &str, key: &str) -> i64 {
    let (s, v) = http_json(
        server.http,
        "POST",
        "/api/v1/channels/studio/destinations",
        Some(owner),
        Some(json!({"url": url, "stream_key": key})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["stream_key_set"], true);
    assert!(!v.to_string().contains(key), "the stream key came back: {v}");
    v["id"].as_i64().unwrap()
}

fn destination(server: &TestServer, owner: &str, id: i64) -> Value {
    let (s, v) = http_json(
        server.http,
        "GET",
        &format!("/api/v1/channels/studio/destinations/{id}"),
        Some(owner),
        None,
    );
    assert_eq!(s, 200, "{v}");
    v
}

fn wait_state(server: &TestServer, owner: &str, id: i64, state: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(timeout, || {
        last = destination(server, owner, id);
        last["state"] == state
    });
    assert!(ok, "destination never reached {state}: {last}\norigin log:\n{}", server.logs());
    last
}

#[test]
fn rtmp_push_resumes_after_the_destination_restarts_and_viewers_never_notice() {
    if !require_ffmpeg() {
        return;
    }
    let port = free_tcp_port();
    let listen = format!("127.0.0.1:{port}");
    let mut dest = TestServer::start(&[("TIDECAST__RTMP__LISTEN", listen.as_str())]);
    let (origin, owner, key) = origin();
    let id = add_destination(&origin, &owner, &format!("rtmp://127.0.0.1:{port}/live"), &dest.key);
    let _publisher = ffmpeg_publish(&origin.publish_url(&key), 90);
    origin.wait_live(LIVE_TIMEOUT);
    dest.wait_live(LIVE_TIMEOUT);
    let v = wait_state(&origin, &owner, id, "live", LIVE_TIMEOUT);
    assert!(v["bytes"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(origin.metric(r#"tidecast_push_destinations{protocol="rtmp",state="live"}"#), 1.0);
    assert!(origin.metric(r#"tidecast_push_bytes_total{protocol="rtmp"}"#) > 0.0);

    // A viewer of the origin plays throughout.
    let mut viewer = RtmpPlayer::play(origin.rtmp, "studio", false, Duration::from_secs(10));
    assert!(viewer.read_video(10, Duration::from_secs(10)), "origin viewer got no video");

    // The destination goes away: the push retries; the channel and its viewer are unaffected.
    dest.stop();
    let v = wait_state(&origin, &owner, id, "retrying", LIVE_TIMEOUT);
    assert!(v["retries"].as_u64().unwrap() >= 1, "{v}");
    assert!(origin.metric(r#"tidecast_push_retries_total{protocol="rtmp"}"#) >= 1.0);
    assert!(
        viewer.read_video(20, Duration::from_secs(10)),
        "origin viewer stalled while the destination was down"
    );
    assert_eq!(origin.metric(r#"tidecast_ingest_sessions{protocol="rtmp"}"#), 1.0);

    // It comes back on the same port: the push resumes by itself.
    dest.start_again();
    dest.wait_live(LIVE_TIMEOUT);
    wait_state(&origin, &owner, id, "live", LIVE_TIMEOUT);
    assert!(
        viewer.read_video(20, Duration::from_secs(10)),
        "origin viewer stalled after the destination returned"
    );
    assert_eq!(
        origin.metric(r#"tidecast_viewers_disconnected_total{protocol="rtmp",reason="stalled"}"#),
        0.0
    );
    assert_eq!(origin.metric(r#"tidecast_viewers_disconnected_total{protocol="rtmp",reason="slow"}"#), 0.0);

    // Disabling it while live stops the push without touching the channel.
    let (s, v) = http_json(
        origin.http,
        "PATCH",
        &format!("/api/v1/channels/studio/destinations/{id}"),
        Some(&owner),
        Some(json!({"enabled": false})),
    );
    assert_eq!(s, 200, "{v}");
    origin.wait_metric(r#"tidecast_push_destinations{protocol="rtmp",state="live"}"#, LIVE_TIMEOUT, |v| {
        v == 0.0
    });
    dest.wait_metric(r#"tidecast_ingest_sessions{protocol="rtmp"}"#, LIVE_TIMEOUT, |v| v == 0.0);
    assert!(viewer.read_video(10, Duration::from_secs(10)));

    // The destination's key is in no log and no metric of the origin.
    assert!(!origin.logs().contains(&dest.key), "destination key logged");
    assert!(!origin.metrics_text().contains(&dest.key));
}

#[test]
fn srt_push_reaches_a_tidecast_srt_listener() {
    if !require_ffmpeg() {
        return;
    }
    let dest = TestServer::start(&[]);
    let (origin, owner, key) = origin();
    let id = add_destination(&origin, &owner, &format!("srt://{}", dest.srt), &dest.key);
    let _publisher = ffmpeg_publish(&origin.publish_url(&key), 60);
    origin.wait_live(LIVE_TIMEOUT);
    wait_state(&origin, &owner, id, "live", LIVE_TIMEOUT);
    dest.wait_metric(r#"tidecast_ingest_sessions{protocol="srt"}"#, LIVE_TIMEOUT, |v| v >= 1.0);
    dest.wait_metric(r#"tidecast_ingest_bytes_total{protocol="srt"}"#, LIVE_TIMEOUT, |v| v > 100_000.0);
    assert!(origin.metric(r#"tidecast_push_bytes_total{protocol="srt"}"#) > 100_000.0);
    // The key the push sends is sealed at rest (auth.storage_secret): not in the database.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stored = rt.block_on(async {
        let url = format!("sqlite://{}/tidecast.db", origin.data_dir().display());
        let store = tidecast::store::Store::connect(&url, 1).await.unwrap();
        let channel = store.channel_by_name("studio").await.unwrap().unwrap();
        store.destination(channel.id, id).await.unwrap().unwrap()
    });
    assert!(stored.stream_key.starts_with("sealed:v1:") && !stored.stream_key.contains(&dest.key));
}

#[test]
fn an_unreachable_destination_retries_without_affecting_the_channel() {
    if !require_ffmpeg() {
        return;
    }
    let (origin, owner, key) = origin();
    // Nothing listens on this port.
    let port = free_tcp_port();
    let id = add_destination(&origin, &owner, &format!("rtmp://127.0.0.1:{port}/live"), DEST_KEY_SECRET);
    let _publisher = ffmpeg_publish(&origin.publish_url(&key), 40);
    origin.wait_live(LIVE_TIMEOUT);
    let v = wait_state(&origin, &owner, id, "retrying", LIVE_TIMEOUT);
    assert!(v["last_error"].as_str().is_some_and(|e| !e.is_empty() && !e.contains(DEST_KEY_SECRET)), "{v}");
    let ok = wait_until(LIVE_TIMEOUT, || destination(&origin, &owner, id)["retries"].as_u64().unwrap() >= 3);
    assert!(ok, "backoff retries did not continue");
    origin.wait_metric(
        r#"tidecast_push_destinations{protocol="rtmp",state="retrying"}"#,
        LIVE_TIMEOUT,
        |v| v == 1.0,
    );
    let mut viewer = RtmpPlayer::play(origin.rtmp, "studio", false, Duration::from_secs(10));
    assert!(viewer.read_video(20, Duration::from_secs(10)), "the channel suffered from a dead destination");
    // Deleting it while live ends the retries.
    let (s, _) = http_json(
        origin.http,
        "DELETE",
        &format!("/api/v1/channels/studio/destinations/{id}"),
        Some(&owner),
        None,
    );
    assert_eq!(s, 204);
    origin.wait_metric(
        r#"tidecast_push_destinations{protocol="rtmp",state="retrying"}"#,
        LIVE_TIMEOUT,
        |v| v == 0.0,
    );
    assert!(!origin.logs().contains(DEST_KEY_SECRET), "destination key logged");
}

#[test]
fn the_destinations_api_validates_and_is_for_the_owner_only() {
    let (origin, owner, _key) = origin();
    let other = signed_in(&origin, "other@example.com");
    let path = "/api/v1/channels/studio/destinations";
    for bad in
        ["http://x/live", "rtmp://x", "srt://x", "rtmp://x:0/live", "rtmp://u:p@x/live", "rtmp://x/live?k=v"]
    {
        let (s, v) =
            http_json(origin.http, "POST", path, Some(&owner), Some(json!({"url": bad, "stream_key": "k"})));
        assert_eq!(s, 400, "{bad}: {v}");
        assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
    }
    let (s, v) = http_json(
        origin.http,
        "POST",
        path,
        Some(&owner),
        Some(json!({"url": "rtmp://x/live", "stream_key": ""})),
    );
    assert_eq!(s, 400, "{v}");
    let id = add_destination(&origin, &owner, "rtmp://a.example.com/live2", DEST_KEY_SECRET);
    let (s, v) = http_json(origin.http, "GET", path, Some(&owner), None);
    assert_eq!(s, 200);
    assert_eq!(v[0]["url"], "rtmp://a.example.com:1935/live2");
    assert_eq!(v[0]["state"], "idle");
    assert!(!v.to_string().contains(DEST_KEY_SECRET));
    let (s, _) = http_json(origin.http, "GET", path, Some(&other), None);
    assert_eq!(s, 403);
    let (s, _) = http_json(origin.http, "GET", path, None, None);
    assert_eq!(s, 401);
    let (s, _) = http_json(origin.http, "DELETE", &format!("{path}/{id}"), Some(&other), None);
    assert_eq!(s, 403);
    let (s, _) = http_json(origin.http, "GET", &format!("{path}/{}", id + 100), Some(&owner), None);
    assert_eq!(s, 404);
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`cert.pem`,
/// `key.pem`; CA:FALSE, as webpki wants for an end-entity certificate).
fn make_ca_and_cert(dir: &std::path::Path) {
    let p = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    let (ca_key, ca) = (p("ca.key"), p("ca.pem"));
    args.extend(["-days", "2", "-subj", "/CN=tidecast-test-ca", "-keyout", &ca_key, "-out", &ca]);
    let ran = run_tool("openssl", &args, Duration::from_secs(20));
    assert!(ran.status.success(), "{}", ran.stderr);
    let (key, csr) = (p("key.pem"), p("req.csr"));
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr]);
    let ran = run_tool("openssl", &args, Duration::from_secs(20));
    assert!(ran.status.success(), "{}", ran.stderr);
    let ext = p("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n")
        .unwrap();
    let cert = p("cert.pem");
    let args = [
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ];
    let ran = run_tool("openssl", &args, Duration::from_secs(20));
    assert!(ran.status.success(), "{}", ran.stderr);
}

#[test]
fn rtmps_push_verifies_the_destination_with_restream_ca_file() {
    if !require_ffmpeg() || !require_tool_with("openssl", "version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    make_ca_and_cert(dir.path());
    let (cert, key, ca) =
        (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("ca.pem"));
    let dest = TestServer::start(&[
        ("TIDECAST__TLS__CERT", cert.to_str().unwrap()),
        ("TIDECAST__TLS__KEY", key.to_str().unwrap()),
        ("TIDECAST__RTMP__TLS_LISTEN", "127.0.0.1:0"),
    ]);
    let rtmps = dest.rtmps.expect("the destination's RTMPS listener");
    let url = format!("rtmps://127.0.0.1:{}/live", rtmps.port());

    // Trusting the private CA: the push goes live over TLS.
    let (origin, owner, origin_key) = origin_with(&[("TIDECAST__RESTREAM__CA_FILE", ca.to_str().unwrap())]);
    let id = add_destination(&origin, &owner, &url, &dest.key);
    let _publisher = ffmpeg_publish(&origin.publish_url(&origin_key), 60);
    origin.wait_live(LIVE_TIMEOUT);
    wait_state(&origin, &owner, id, "live", LIVE_TIMEOUT);
    dest.wait_metric(r#"tidecast_ingest_sessions{protocol="rtmps"}"#, LIVE_TIMEOUT, |v| v >= 1.0);
    dest.wait_metric(r#"tidecast_ingest_bytes_total{protocol="rtmps"}"#, LIVE_TIMEOUT, |v| v > 100_000.0);
    assert!(origin.metric(r#"tidecast_push_bytes_total{protocol="rtmps"}"#) > 0.0);

    // Without it, the certificate is not trusted: retrying, with a TLS error, never connected.
    let (plain, owner2, key2) = origin_with(&[]);
    let id2 = add_destination(&plain, &owner2, &url, &dest.key);
    let _publisher2 = ffmpeg_publish(&plain.publish_url(&key2), 30);
    plain.wait_live(LIVE_TIMEOUT);
    let v = wait_state(&plain, &owner2, id2, "retrying", LIVE_TIMEOUT);
    assert!(v["last_error"].as_str().unwrap().contains("TLS"), "{v}");
}
