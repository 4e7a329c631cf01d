//! WebRTC end to end: headless Chromium publishes over WHIP (fake camera and microphone, H.264 +
//! Opus as the server picks them from Chromium's offer) and the channel is then played over
//! LL-HLS (ffmpeg decodes it), RTMP (ffmpeg reads it) and WHEP (a second Chromium decodes it);
//! an RTMP channel plays over WHEP too. Then the refusals and the reaping, with offers of our
//! own over plain HTTP: wrong type, no or wrong key, no H.264, malformed, too big, a taken
//! channel, B-frames, DELETE, and 50 sessions that never complete ICE. The channel's roster
//! (`GET /api/v1/channels/{name}/sessions`) lists the WebRTC publisher and viewers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::browser::{require_browser_player, run_node_report};
use common::*;

/// A minimal offer as a WebRTC client makes it (ICE credentials, DTLS fingerprint, BUNDLE,
/// rtcp-mux); `direction` is the client's (`sendonly` to publish, `recvonly` to play).
/// An admin's access token (the CLI creates the admin; the server was started with
/// `TIDECAST_PASSWORD` = `ADMIN_PASSWORD`).
fn admin_token(server: &TestServer) -> String {
    let out = server.cli(&["user", "create", "admin@example.com", "--admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let creds = serde_json::json!({"email": "admin@example.com", "password": ADMIN_PASSWORD});
    let (s, v) = http_json(server.http, "POST", "/api/v1/auth/login", None, Some(creds));
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().unwrap().to_owned()
}

const ADMIN_PASSWORD: &str = "admin password 1";

/// The channel's roster, once `ready` holds for it (10 s at most).
fn sessions_when(
    server: &TestServer,
    token: &str,
    channel: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let path = format!("/api/v1/channels/{channel}/sessions");
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(10), || {
        let (s, v) = http_json(server.http, "GET", &path, Some(token), None);
        assert_eq!(s, 200, "{v}");
        last = v;
        ready(&last)
    });
    assert!(ok, "roster of {channel}: {last}");
    last
}

fn offer(direction: &str, video_codec: &str) -> String {
    let fp = (0..32).map(|i| format!("{:02X}", i * 7 % 256)).collect::<Vec<_>>().join(":");
    format!(
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=msid-semantic: WMS\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:tEsT\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 {fp}\r\n\
         a=setup:actpass\r\na=mid:0\r\na={direction}\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
         a=fmtp:111 minptime=10;useinbandfec=1\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:tEsT\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 {fp}\r\n\
         a=setup:actpass\r\na=mid:1\r\na={direction}\r\na=rtcp-mux\r\na=rtpmap:96 {video_codec}/90000\r\n\
         a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
         a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n"
    )
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// One HTTP/1.1 request with a body (Connection: close).
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("HTTP connect");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Answer { status, head: head.to_owned(), body: body.to_owned() }
}

fn post_sdp(addr: SocketAddr, path: &str, key: Option<&str>, sdp: &str) -> Answer {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = vec![("Content-Type", "application/sdp")];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    request(addr, "POST", path, &h, sdp)
}

#[test]
fn chromium_publishes_over_whip_and_every_output_plays_it() {
    if !require_browser_player() || !require_ffmpeg() {
        return;
    }
    let static_dir = common::browser::hlsjs_dist_dir();
    let server = TestServer::start(&[
        ("TIDECAST__HTTP__STATIC_DIR", static_dir.to_str().unwrap()),
        ("TIDECAST__HTTP__HLSJS_URL", "/static/hls.min.js"),
        ("TIDECAST_PASSWORD", ADMIN_PASSWORD),
    ]);
    assert!(server.webrtc.is_some(), "WebRTC listening line\n{}", server.logs());
    // The first-run banner names the WHIP and WHEP URLs.
    let banner = server.stdout();
    let port = server.http.port();
    assert!(banner.contains(&format!("http://localhost:{port}/whip/main")), "{banner}");
    assert!(banner.contains(&format!("http://localhost:{port}/whep/main")), "{banner}");
    let admin = admin_token(&server);
    let whip_url = format!("http://{}/whip/main", server.http);
    let key = server.key.clone();
    let publisher = std::thread::spawn(move || {
        run_node_report("webrtc.mjs", &["whip", &whip_url, &key, "34"], Duration::from_secs(90))
    });
    server
        .wait_metric(r#"tidecast_ingest_sessions{protocol="webrtc"}"#, Duration::from_secs(20), |v| v >= 1.0);
    // The roster names the WHIP publisher; no token, no roster.
    let roster = sessions_when(&server, &admin, "main", |r| r["publisher"]["protocol"] == "webrtc");
    assert_eq!(roster["publisher"]["role"], "publisher", "{roster}");
    let (s, v) = http_json(server.http, "GET", "/api/v1/channels/main/sessions", None, None);
    assert_eq!(s, 401, "{v}");
    // Two whole segments in the window before a player starts.
    // (The first request is held until the first segment exists: more than `server.get`'s 5 s
    // on a busy machine.)
    let playlist = || http_get_within(server.http, "/live/main/source/index.m3u8", Duration::from_secs(15));
    let segments = || playlist().body.matches("#EXTINF").count();
    assert!(wait_until(Duration::from_secs(20), || segments() >= 2), "no segments\n{}", server.logs());

    // LL-HLS: H.264 and Opus in CMAF, listed in CODECS, decoding without an error line.
    let multivariant = decode_ll_hls(&server, "main", 3);
    assert!(multivariant.contains("avc1.") && multivariant.contains("opus"), "{multivariant}");
    // hls.js plays it (H.264 + Opus in CMAF) in Chromium's watch page.
    let watch = format!("http://{}/watch/main", server.http);
    let (hlsjs, stderr) = run_node_report("play.mjs", &[&watch, "4"], Duration::from_secs(60));
    eprintln!("hls.js on the WHIP channel: {hlsjs}");
    assert!(hlsjs["error"].is_null(), "{hlsjs}\n{stderr}");
    assert_eq!(hlsjs["errors_fatal"], 0, "{hlsjs}");
    assert!(hlsjs["total_frames"].as_u64().unwrap_or(0) > 30, "{hlsjs}");

    // WHEP: a second Chromium decodes the WHIP publisher's H.264 and Opus.
    let whep_url = format!("http://{}/whep/main", server.http);
    let (viewer, stderr) = run_node_report("webrtc.mjs", &["whep", &whep_url, "3"], Duration::from_secs(50));
    eprintln!("whep viewer: {viewer}");
    assert_eq!(viewer["status"], 201, "{viewer}\n{stderr}\n{}", server.logs());
    assert_eq!(viewer["connected"], true, "{viewer}");
    assert_eq!(viewer["codec"], "video/H264", "{viewer}");
    assert_eq!(viewer["audioCodec"], "audio/opus", "{viewer}");
    assert!(viewer["framesDecoded"].as_u64().unwrap_or(0) >= 30, "{viewer}");
    assert!(viewer["audioPacketsReceived"].as_u64().unwrap_or(0) >= 50, "{viewer}");
    assert_eq!(viewer["deleteStatus"], 200, "{viewer}");

    // RTMP play: ffmpeg reads the channel's video (ffmpeg 5.1 does not know Opus in enhanced
    // RTMP and keeps probing for it, so its read ends when the publisher leaves).
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("play.flv");
    let url = server.play_url("main");
    let out = run_tool(
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-i",
            &url,
            "-t",
            "3",
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-f",
            "flv",
            flv.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "RTMP read: {}", out.stderr);
    let probe = ffprobe(&flv);
    assert!(probe.video().count() >= 30, "RTMP play got {} video packets", probe.video().count());

    let (report, stderr) = publisher.join().unwrap();
    eprintln!("whip publisher: {report}");
    assert_eq!(report["status"], 201, "{report}\n{stderr}");
    assert_eq!(report["connected"], true, "{report}");
    assert_eq!(report["codec"], "video/H264", "{report}");
    assert_eq!(report["audioCodec"], "audio/opus", "{report}");
    assert_eq!(report["deleteStatus"], 200, "DELETE ends the session: {report}");
    assert!(report["location"].as_str().unwrap().starts_with("/whip/main/"), "{report}");

    // The sessions are gone, and timing came from the sender reports, not the fallback.
    server.wait_metric(r#"tidecast_webrtc_sessions{kind="whip"}"#, Duration::from_secs(5), |v| v == 0.0);
    server.wait_metric(r#"tidecast_webrtc_sessions{kind="whep"}"#, Duration::from_secs(5), |v| v == 0.0);
    assert!(!server.logs().contains("timing from RTP-Info"), "{}", server.logs());
    assert!(
        server.metric("tidecast_webrtc_plis_sent_total") >= 1.0,
        "a key frame was asked for at the start"
    );
}

#[test]
fn an_rtmp_channel_plays_over_whep_and_b_frames_are_refused() {
    if !require_browser_player() || !require_ffmpeg() {
        return;
    }
    let server =
        TestServer::start(&[("TIDECAST__WEBRTC__IDLE_TIMEOUT", "3s"), ("TIDECAST_PASSWORD", ADMIN_PASSWORD)]);
    let admin = admin_token(&server);
    // x264 with -tune zerolatency: no B-frames; AAC audio, which WebRTC cannot carry.
    let mut publisher = ffmpeg_publish_with(&server.publish_url(&server.key), 60, &["-tune", "zerolatency"]);
    server.wait_live(Duration::from_secs(20));
    let whep_url = format!("http://{}/whep/main", server.http);
    let url = whep_url.clone();
    let viewing = std::thread::spawn(move || {
        run_node_report("webrtc.mjs", &["whep", &url, "3"], Duration::from_secs(50))
    });
    // While it plays, the roster lists it beside the RTMP publisher, and the channel counts it.
    let roster = sessions_when(&server, &admin, "main", |r| r["viewers_by_protocol"]["webrtc"] == 1);
    assert_eq!(roster["publisher"]["protocol"], "rtmp", "{roster}");
    assert_eq!(roster["viewers"][0]["protocol"], "webrtc", "{roster}");
    let (_, channel) = http_json(server.http, "GET", "/api/v1/channels/main", None, None);
    assert!(channel["viewers"].as_i64().unwrap_or(0) >= 1, "{channel}");
    let (viewer, stderr) = viewing.join().unwrap();
    eprintln!("whep viewer of an RTMP channel: {viewer}");
    assert_eq!(viewer["status"], 201, "{viewer}\n{stderr}\n{}", server.logs());
    assert_eq!(viewer["codec"], "video/H264", "{viewer}");
    assert!(viewer["framesDecoded"].as_u64().unwrap_or(0) >= 30, "{viewer}");
    assert!(
        viewer["audioNote"].as_str().unwrap_or("").contains("AAC"),
        "the answer says audio is absent: {viewer}"
    );
    assert!(server.logs().contains("audio absent"), "and the log says so");
    // The resource id is the capability DELETE needs: it never reaches the log.
    let resource = viewer["location"].as_str().and_then(|l| l.rsplit('/').next()).unwrap_or("");
    assert!(resource.len() >= 32, "{viewer}");
    assert!(!server.logs().contains(resource), "the session's resource id is in the log");
    // Gone from the roster once it ended.
    sessions_when(&server, &admin, "main", |r| r["viewers"].as_array().is_some_and(Vec::is_empty));
    // The watch page's "Real-time" toggle plays it over WHEP.
    let watch = format!("http://{}/watch/main", server.http);
    let (page, stderr) = run_node_report("webrtc.mjs", &["watch", &watch, "4"], Duration::from_secs(50));
    eprintln!("watch page, real-time: {page}");
    assert_eq!(page["playerMode"], "webrtc", "{page}\n{stderr}");
    assert!(page["webrtc"] == true && page["width"] == 640, "{page}");
    assert!(page["status"].as_str().unwrap_or("").starts_with("real-time"), "{page}");
    // A viewer whose browser dies (no DELETE, no DTLS close) is reaped at the idle timeout.
    let (gone, stderr) = run_node_report("webrtc.mjs", &["vanish", &whep_url], Duration::from_secs(40));
    assert!(gone["killed"] == true && gone["width"] == 640, "{gone}\n{stderr}\n{}", server.logs());
    server.wait_metric(r#"tidecast_webrtc_sessions{kind="whep"}"#, Duration::from_secs(8), |v| v == 0.0);
    assert!(server.logs().contains("nothing heard from the viewer"), "{}", server.logs());

    publisher.kill();

    // x264's defaults have B-frames: refused before negotiation, with the reason.
    server.wait_metric(r#"tidecast_ingest_sessions{protocol="rtmp"}"#, Duration::from_secs(15), |v| v == 0.0);
    let mut publisher = ffmpeg_publish_with(&server.publish_url(&server.key), 30, &["-bf", "2"]);
    server.wait_live(Duration::from_secs(20));
    let a = post_sdp(server.http, "/whep/main", None, &offer("recvonly", "H264"));
    assert_eq!(a.status, 406, "{}", a.body);
    assert!(a.body.contains("B-frames"), "{}", a.body);
    // The watch page says so and falls back to LL-HLS.
    let (page, stderr) = run_node_report("webrtc.mjs", &["watch", &watch, "4"], Duration::from_secs(50));
    eprintln!("watch page, real-time refused: {page}");
    assert_eq!(page["playerMode"], "live", "{page}\n{stderr}");
    assert!(page["status"].as_str().unwrap_or("").contains("B-frames"), "{page}");
    publisher.kill();
}

#[test]
fn bad_offers_keys_and_abandoned_sessions_are_refused_or_reaped() {
    let server = TestServer::start(&[("TIDECAST__WEBRTC__CONNECT_TIMEOUT", "2s")]);
    let addr = server.http;
    let key = server.key.clone();
    let good = offer("sendonly", "H264");

    let a = request(
        addr,
        "POST",
        "/whip/main",
        &[("Content-Type", "text/plain"), ("Authorization", &format!("Bearer {key}"))],
        &good,
    );
    assert_eq!(a.status, 415, "{}", a.body);
    let fails = server.metric(r#"tidecast_auth_failures_total{protocol="webrtc"}"#);
    assert_eq!(post_sdp(addr, "/whip/main", None, &good).status, 401);
    let a = post_sdp(addr, "/whip/main", Some("live_wrong"), &good);
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(!a.body.contains("live_wrong"), "the key is not echoed: {}", a.body);
    assert_eq!(server.metric(r#"tidecast_auth_failures_total{protocol="webrtc"}"#), fails + 2.0);
    let a = post_sdp(addr, "/whip/main", Some(&key), &offer("sendonly", "VP8"));
    assert_eq!(a.status, 406, "{}", a.body);
    assert!(a.body.contains("H.264"), "{}", a.body);
    assert_eq!(post_sdp(addr, "/whip/main", Some(&key), "v=0\r\nthis is not sdp").status, 400);
    let big = format!("{good}{}", "a=x-padding:0123456789abcdef\r\n".repeat(2000));
    assert_eq!(post_sdp(addr, "/whip/main", Some(&key), &big).status, 413);
    assert_eq!(server.metric(r#"tidecast_webrtc_sessions{kind="whip"}"#), 0.0, "nothing was negotiated");

    // A good offer: 201 with the answer and RFC 9725's headers; the channel is then taken.
    let a = post_sdp(addr, "/whip/main", Some(&key), &good);
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.header("Content-Type"), Some("application/sdp"));
    let location = a.header("Location").unwrap().to_owned();
    assert!(location.starts_with("/whip/main/"), "{location}");
    assert!(a.header("ETag").is_some());
    assert!(a.body.contains("a=ice-lite") && a.body.contains("H264"), "{}", a.body);
    assert!(
        a.body.contains("typ host") && a.body.contains("tcptype passive"),
        "UDP and ICE-TCP candidates: {}",
        a.body
    );
    let b = post_sdp(addr, "/whip/main", Some(&key), &good);
    assert_eq!(b.status, 409, "{}", b.body);
    // Trickle ICE is taken (ICE-lite learns addresses from the checks); a restart is not.
    let frag = "a=ice-ufrag:tEsT\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n";
    let trickle = [("Content-Type", "application/trickle-ice-sdpfrag")];
    assert_eq!(request(addr, "PATCH", &location, &trickle, frag).status, 204);
    let restart = [("Content-Type", "application/trickle-ice-sdpfrag"), ("If-Match", "*")];
    assert_eq!(request(addr, "PATCH", &location, &restart, frag).status, 422);
    assert_eq!(request(addr, "DELETE", &location, &[], "").status, 200);
    assert!(wait_until(Duration::from_secs(5), || request(addr, "DELETE", &location, &[], "").status == 404));
    // The channel is free again (within the reconnect grace, a new publisher resumes it).
    let c = post_sdp(addr, "/whip/main", Some(&key), &good);
    assert_eq!(c.status, 201, "{}", c.body);

    // A publisher that never completes ICE is reaped at the connect timeout.
    server.wait_metric(r#"tidecast_webrtc_sessions{kind="whip"}"#, Duration::from_secs(8), |v| v == 0.0);
    assert!(server.logs().contains("did not complete within"), "{}", server.logs());

    // 50 WHEP sessions that never connect: all answered, all reaped, nothing left over.
    let mut publisher = ffmpeg_publish_with(&server.publish_url(&server.key), 30, &["-tune", "zerolatency"]);
    server.wait_live(Duration::from_secs(20));
    for _ in 0..50 {
        let a = post_sdp(addr, "/whep/main", None, &offer("recvonly", "H264"));
        assert_eq!(a.status, 201, "{}", a.body);
    }
    assert_eq!(server.metric(r#"tidecast_webrtc_sessions{kind="whep"}"#), 50.0);
    server.wait_metric(r#"tidecast_webrtc_sessions{kind="whep"}"#, Duration::from_secs(10), |v| v == 0.0);
    server.wait_metric(r#"tidecast_viewers{protocol="webrtc"}"#, Duration::from_secs(5), |v| v == 0.0);
    // The channel kept flowing for everyone else.
    assert_eq!(server.get("/live/main/index.m3u8").status, 200);
    publisher.kill();
}

/// At `webrtc.max_sessions`, WHIP and WHEP are refused with 503 before anything starts: the
/// refused publisher's channel never goes live (no live session, no archive, no ladder).
#[test]
fn at_capacity_sessions_are_refused_before_anything_starts() {
    let server = TestServer::start(&[("TIDECAST__WEBRTC__MAX_SESSIONS", "1")]);
    let created = server.cli(&["channel", "create", "second"]);
    let second_key = String::from_utf8_lossy(&created.stdout).lines().last().unwrap_or("").trim().to_owned();
    assert!(second_key.starts_with("live_"), "{created:?}");
    let good = offer("sendonly", "H264");
    let a = post_sdp(server.http, "/whip/main", Some(&server.key), &good);
    assert_eq!(a.status, 201, "{}", a.body);
    let b = post_sdp(server.http, "/whip/second", Some(&second_key), &good);
    assert_eq!(b.status, 503, "{}", b.body);
    let c = post_sdp(server.http, "/whep/main", None, &offer("recvonly", "H264"));
    assert_eq!(c.status, 503, "{}", c.body);
    // The log is read from the server's stderr as it comes: wait for main's line, then give a
    // second one (it would have been written before the 503) time to arrive too.
    assert!(wait_until(Duration::from_secs(5), || server.logs().contains("publisher attached")));
    std::thread::sleep(Duration::from_millis(500));
    let logs = server.logs();
    let attached: Vec<&str> = logs.lines().filter(|l| l.contains("publisher attached")).collect();
    assert!(attached.len() == 1 && attached[0].contains("channel=main"), "only main went live:\n{logs}");
}

/// ICE-TCP (RFC 6544): the answer's passive TCP candidate takes a connectivity check framed
/// as RFC 4571 says, on the one shared TCP port, and answers it with a STUN success signed with
/// the session's ICE password: the fallback path for viewers whose network blocks UDP.
#[test]
fn ice_tcp_candidate_answers_connectivity_checks() {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, CLASS_SUCCESS_RESPONSE};
    use rtc::stun::textattrs::TextAttribute;

    let server = TestServer::start(&[
        ("TIDECAST__WEBRTC__CONNECT_TIMEOUT", "2s"),
        ("TIDECAST__WEBRTC__TCP_MAX_CONNECTIONS_PER_ADDRESS", "2"),
    ]);
    let a = post_sdp(server.http, "/whip/main", Some(&server.key), &offer("sendonly", "H264"));
    assert_eq!(a.status, 201, "{}", a.body);
    let attr = |name: &str| {
        a.body.lines().find_map(|l| l.strip_prefix(&format!("a={name}:"))).unwrap().trim().to_owned()
    };
    let (ufrag, pwd) = (attr("ice-ufrag"), attr("ice-pwd"));
    let candidate = a.body.lines().find(|l| l.contains("tcptype passive")).expect("a passive TCP candidate");
    let parts: Vec<&str> = candidate.split_whitespace().collect();
    let port: u16 = parts[5].parse().unwrap();
    assert_eq!(parts[4], "127.0.0.1", "{candidate}");

    let provider = rtc::crypto::default_provider().unwrap();
    let mut m = Message::new();
    let username = TextAttribute::new(ATTR_USERNAME, format!("{ufrag}:tEsT"));
    let integrity = MessageIntegrity::new_short_term_integrity_with_provider(pwd, provider.crypto());
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(username),
        Box::new(rtc::ice::attributes::control::AttrControlling(7)),
        Box::new(rtc::ice::attributes::priority::PriorityAttr(1_853_817_087)),
        Box::new(integrity),
        Box::new(FINGERPRINT),
    ];
    m.build(&setters).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (m.raw.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&m.raw);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("a framed STUN answer over ICE-TCP");
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body).unwrap();
    let mut answer = Message::new();
    answer.unmarshal_binary(&body).unwrap();
    assert_eq!(answer.typ.class, CLASS_SUCCESS_RESPONSE, "{answer:?}");
    assert_eq!(answer.transaction_id, m.transaction_id);

    // webrtc.tcp_max_connections_per_address: a second connection is taken, a third is closed.
    let _second = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(closed_within(&mut third, Duration::from_secs(5)), "the third connection is refused");
    // The connection ends with its session: this one never completes DTLS and is reaped at
    // the connect timeout (2 s), and its connection is closed with it.
    assert!(closed_within(&mut s, Duration::from_secs(10)), "the ICE-TCP connection outlived its session");
    server.wait_metric(
        r#"tidecast_connections_rejected_total{protocol="webrtc",reason="per_address"}"#,
        Duration::from_secs(1),
        |v| v == 1.0,
    );
}

/// Whether the server closes `s` within `timeout` (whatever it sends before).
fn closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let until = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 512];
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true, // reset
        }
    }
    false
}

/// An AAC channel's WHEP viewer gets audio once the transcode ladder makes its Opus track: the
/// answer says audio is absent at first, and the session adds it when the `opus` rendition
/// appears.
#[test]
fn an_aac_channel_gets_the_ladders_opus_over_whep() {
    if !require_browser_player() || !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__TRANSCODE__ENABLED", "true")]);
    // A small source: one rung and the Opus track keep ffmpeg light.
    let mut publisher = ffmpeg_publish_pattern(
        &server.publish_url(&server.key),
        40,
        "640x360",
        30,
        &["-tune", "zerolatency"],
    );
    server.wait_live(Duration::from_secs(20));
    let whep_url = format!("http://{}/whep/main", server.http);
    let (viewer, stderr) = run_node_report("webrtc.mjs", &["whep", &whep_url, "10"], Duration::from_secs(60));
    eprintln!("whep viewer of an AAC channel with the ladder on: {viewer}");
    assert_eq!(viewer["status"], 201, "{viewer}\n{stderr}\n{}", server.logs());
    assert!(viewer["audioNote"].as_str().unwrap_or("").contains("AAC"), "{viewer}");
    assert!(viewer["framesDecoded"].as_u64().unwrap_or(0) >= 100, "{viewer}");
    assert_eq!(viewer["audioCodec"], "audio/opus", "{viewer}\n{}", server.logs());
    assert!(viewer["audioPacketsReceived"].as_u64().unwrap_or(0) >= 100, "{viewer}\n{}", server.logs());
    assert!(server.logs().contains("audio added"), "{}", server.logs());
    publisher.kill();
}
