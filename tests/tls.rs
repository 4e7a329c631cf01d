//! RTMPS and HTTPS with real clients: ffmpeg publishes over `rtmps://` to a self-signed
//! certificate made by the openssl CLI at test time, ffmpeg plays it back over RTMPS, curl (with
//! `--cacert`, so verification is on) and ffprobe read LL-HLS over HTTPS, and `openssl s_client`
//! is the oracle for which certificate a new handshake gets after the files are replaced
//! (reloaded without a restart) or broken (the old one stays, with a WARN).

mod common;

use std::path::Path;
use std::time::Duration;

use common::certs::make_cert;
use common::*;

/// The subject common name of the certificate a fresh TLS handshake with `addr` gets.
fn served_cn(addr: std::net::SocketAddr) -> String {
    let connect = addr.to_string();
    let ran = run_tool(
        "openssl",
        &["s_client", "-connect", &connect, "-servername", "localhost", "-showcerts"],
        Duration::from_secs(10),
    );
    let subject = ran
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("subject="))
        .unwrap_or_else(|| panic!("no certificate from {addr}: {}\n{}", ran.stdout, ran.stderr))
        .to_string();
    subject.rsplit("CN = ").next().unwrap_or(&subject).trim().to_string()
}

fn curl(cacert: &Path, url: &str) -> Ran {
    run_tool(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            cacert.to_str().unwrap(),
            url,
        ],
        Duration::from_secs(15),
    )
}

fn tls_server(certs: &Path, extra: &[(&str, &str)]) -> TestServer {
    let cert = certs.join("cert.pem");
    let key = certs.join("key.pem");
    let mut env = vec![
        ("TIDECAST__TLS__CERT", cert.to_str().unwrap()),
        ("TIDECAST__TLS__KEY", key.to_str().unwrap()),
        ("TIDECAST__TLS__RELOAD_INTERVAL", "200ms"),
        ("TIDECAST__RTMP__TLS_LISTEN", "127.0.0.1:0"),
        ("TIDECAST__HTTP__TLS_LISTEN", "127.0.0.1:0"),
    ];
    env.extend_from_slice(extra);
    // `TestServer::start` copies the strings.
    TestServer::start(&env)
}

#[test]
fn rtmps_publish_plays_over_rtmps_and_https_and_the_certificate_reloads() {
    if !require_ffmpeg()
        || !require_tool_with("openssl", "version")
        || !require_tool_with("curl", "--version")
    {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_cert(certs.path(), "tidecast-test-one");
    let cacert = certs.path().join("ca-one.pem");
    std::fs::copy(certs.path().join("cert.pem"), &cacert).unwrap();
    let server = tls_server(certs.path(), &[]);
    let rtmps = server.rtmps.expect("an rtmps listening line");
    let https = server.https.expect("an https listening line");
    let out = server.stdout();
    assert!(out.contains(&format!("rtmps://localhost:{}/live", rtmps.port())), "banner: {out}");
    assert!(out.contains(&format!("https://localhost:{}/watch/main", https.port())), "banner: {out}");

    // ffmpeg publishes over RTMPS (ffmpeg does not verify certificates unless told to).
    let mut publisher = ffmpeg_publish(&format!("rtmps://{rtmps}/live/{}", server.key), 30);
    server
        .wait_metric(r#"tidecast_ingest_sessions{protocol="rtmps"}"#, Duration::from_secs(15), |v| v >= 1.0);
    let base = server.metric(r#"tidecast_ingest_bytes_total{protocol="rtmps"}"#);
    server.wait_metric(r#"tidecast_ingest_bytes_total{protocol="rtmps"}"#, Duration::from_secs(15), |v| {
        v > base + 100_000.0
    });
    assert_eq!(server.metric(r#"tidecast_ingest_sessions{protocol="rtmp"}"#), 0.0);

    // RTMP play over RTMPS: decodes cleanly.
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("play.flv");
    let mut reader = ffmpeg_read(&format!("rtmps://{rtmps}/live/main"), 4.0, &flv);
    let status = reader.wait_timeout(Duration::from_secs(20)).expect("ffmpeg read finished");
    assert!(
        status.success(),
        "ffmpeg rtmps read failed: {}\nserver log:\n{}",
        reader.stderr(),
        server.logs()
    );
    let frames = decode_clean(&flv);
    assert!(frames >= 60, "only {frames} frames played over RTMPS");

    // LL-HLS over HTTPS: curl verifies against the self-signed certificate.
    let base_url = format!("https://localhost:{}", https.port());
    let ok = wait_until(Duration::from_secs(15), || {
        let r = curl(&cacert, &format!("{base_url}/live/main/source/index.m3u8"));
        r.status.success() && r.stdout.contains("#EXT-X-PART:")
    });
    assert!(ok, "no LL-HLS media playlist over HTTPS; server log:\n{}", server.logs());
    let multivariant = curl(&cacert, &format!("{base_url}/live/main/index.m3u8"));
    assert!(multivariant.status.success() && multivariant.stdout.starts_with("#EXTM3U"), "{multivariant:?}");
    // ffprobe reads the stream through the HTTPS playlist.
    let probe = run_tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            &format!("{base_url}/live/main/index.m3u8"),
        ],
        Duration::from_secs(30),
    );
    assert!(probe.status.success() && probe.stdout.contains("h264"), "ffprobe over HTTPS: {probe:?}");
    // The HTTPS listener counts connections like plain HTTP (and is not refused).
    let metrics = curl(&cacert, &format!("{base_url}/metrics"));
    assert!(metrics.stdout.contains("tidecast_ingest_bytes_total{protocol=\"rtmps\"}"), "{metrics:?}");

    // A new certificate: new handshakes on both listeners get it, without a restart, while the
    // publisher keeps going.
    assert_eq!(served_cn(rtmps), "tidecast-test-one");
    assert_eq!(served_cn(https), "tidecast-test-one");
    make_cert(certs.path(), "tidecast-test-two");
    let ok = wait_until(Duration::from_secs(10), || served_cn(https) == "tidecast-test-two");
    assert!(ok, "HTTPS still serves the old certificate; server log:\n{}", server.logs());
    assert_eq!(served_cn(rtmps), "tidecast-test-two");
    assert!(server.logs().contains("TLS certificate reloaded"), "{}", server.logs());
    assert!(server.metric(r#"tidecast_tls_certificate_reloads_total{result="ok"}"#) >= 1.0);
    let fresh_ca = certs.path().join("cert.pem");
    assert!(curl(&fresh_ca, &format!("{base_url}/healthz")).status.success());
    assert!(!curl(&cacert, &format!("{base_url}/healthz")).status.success(), "the old CA still verifies");

    // A broken certificate file: WARN, and the previous certificate stays.
    std::fs::write(certs.path().join("cert.pem"), "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let ok = wait_until(Duration::from_secs(10), || server.logs().contains("TLS certificate not reloaded"));
    assert!(ok, "no warning about the broken certificate; server log:\n{}", server.logs());
    assert!(server.logs().lines().any(|l| l.contains("WARN") && l.contains("TLS certificate not reloaded")));
    assert_eq!(served_cn(https), "tidecast-test-two");
    assert_eq!(served_cn(rtmps), "tidecast-test-two");
    assert!(server.metric(r#"tidecast_tls_certificate_reloads_total{result="error"}"#) >= 1.0);

    assert!(publisher.is_running(), "the publisher was dropped: {}", publisher.stderr());
    assert_eq!(server.metric(r#"tidecast_ingest_sessions{protocol="rtmps"}"#), 1.0);
    publisher.kill();
}

/// Plain RTMP and HTTP turned off: only the TLS listeners run, plain RTMP spoken to the RTMPS
/// port is refused at the TLS handshake and counted, and the server still works.
#[test]
fn tls_only_listeners() {
    if !require_ffmpeg()
        || !require_tool_with("openssl", "version")
        || !require_tool_with("curl", "--version")
    {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_cert(certs.path(), "tidecast-tls-only");
    let server = tls_server(certs.path(), &[("TIDECAST__RTMP__LISTEN", ""), ("TIDECAST__HTTP__LISTEN", "")]);
    assert!(!server.logs().contains("listening protocol=\"rtmp\""), "{}", server.logs());
    assert!(!server.logs().contains("listening protocol=\"http\""), "{}", server.logs());
    let (rtmps, https) = (server.rtmps.unwrap(), server.https.unwrap());
    let out = server.stdout();
    assert!(out.contains(&format!("Server:     rtmps://localhost:{}/live", rtmps.port())), "banner: {out}");

    // Plain RTMP against the TLS port: no session, a counted protocol error.
    let mut plain = ffmpeg_publish(&format!("rtmp://{rtmps}/live/{}", server.key), 5);
    let status = plain.wait_timeout(Duration::from_secs(20)).expect("plain ffmpeg gave up");
    assert!(!status.success(), "plain RTMP to the RTMPS port succeeded");
    let cacert = certs.path().join("cert.pem");
    let metrics = curl(&cacert, &format!("https://localhost:{}/metrics", https.port()));
    assert!(metrics.status.success(), "{metrics:?}");
    let errors = metric_value(&metrics.stdout, r#"tidecast_protocol_errors_total{protocol="rtmps"}"#);
    assert!(errors.is_some_and(|v| v >= 1.0), "{}", metrics.stdout);
    assert!(
        metric_value(&metrics.stdout, r#"tidecast_ingest_sessions{protocol="rtmps"}"#).unwrap_or(0.0) == 0.0
    );

    // RTMPS works.
    let mut publisher = ffmpeg_publish(&format!("rtmps://{rtmps}/live/{}", server.key), 20);
    let ok = wait_until(Duration::from_secs(15), || {
        let m = curl(&cacert, &format!("https://localhost:{}/metrics", https.port()));
        metric_value(&m.stdout, r#"tidecast_ingest_sessions{protocol="rtmps"}"#).is_some_and(|v| v >= 1.0)
    });
    assert!(ok, "no RTMPS publisher; server log:\n{}", server.logs());
    publisher.kill();
}

/// RTMPS shares RTMP's per-address limit: a connection held on the plain port uses the
/// address's only slot, so ffmpeg over RTMPS is refused (and counted as `rtmps`) until it closes.
#[test]
fn rtmps_shares_the_per_address_limit() {
    if !require_ffmpeg()
        || !require_tool_with("openssl", "version")
        || !require_tool_with("curl", "--version")
    {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_cert(certs.path(), "tidecast-limits");
    let config = certs.path().join("limits.toml");
    std::fs::write(&config, "[rtmp]\nmax_connections_per_address = 1\nper_address_exempt = []\n").unwrap();
    let server = tls_server(certs.path(), &[("TIDECAST_CONFIG", config.to_str().unwrap())]);
    let rtmps = server.rtmps.unwrap();
    const REFUSED: &str = r#"tidecast_connections_rejected_total{protocol="rtmps",reason="per_address"}"#;
    assert_eq!(server.metric(REFUSED), 0.0);

    let held = tcp_connect(server.rtmp, false);
    let mut refused = ffmpeg_publish(&format!("rtmps://{rtmps}/live/{}", server.key), 5);
    let status = refused.wait_timeout(Duration::from_secs(20)).expect("refused ffmpeg gave up");
    assert!(!status.success(), "RTMPS publish accepted over the per-address limit");
    assert!(server.metric(REFUSED) >= 1.0, "{}", server.metrics_text());

    drop(held);
    let mut publisher = ffmpeg_publish(&format!("rtmps://{rtmps}/live/{}", server.key), 20);
    server
        .wait_metric(r#"tidecast_ingest_sessions{protocol="rtmps"}"#, Duration::from_secs(15), |v| v >= 1.0);
    publisher.kill();
}
