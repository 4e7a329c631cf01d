//! The transcode ladder end to end: the real `tidecast` binary with `[transcode]` on, ffmpeg
//! publishing over RTMP, the server's own ffmpeg making the rungs, and ffmpeg/ffprobe and the
//! playlist validator as the oracle.
//!
//! Checked: a 720p30 channel's multivariant playlist lists source + 480p + 360p with true
//! attributes; every rendition decodes; segments and parts of all renditions have the same MSNs,
//! boundaries and program date times, and each media playlist reports the others; killing (or
//! stopping) the server's ffmpeg leaves the source untouched while the rungs resume after a
//! discontinuity;
//! without ffmpeg on `PATH` channels run passthrough with one warning and a metric; over the
//! server's transcode cap a channel runs passthrough and the API says why.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use tidecast::protocols::hls::{parse_media_playlist, validate_multivariant, ParsedMediaPlaylist};

const LADDER_ON: (&str, &str) = ("TIDECAST__TRANSCODE__ENABLED", "true");

/// The multivariant playlist once it lists `n` renditions (within `timeout`).
fn multivariant_with(server: &TestServer, channel: &str, n: usize, timeout: Duration) -> String {
    let path = format!("/live/{channel}/index.m3u8");
    let mut body = String::new();
    let ok = wait_until(timeout, || {
        let r = server.get(&path);
        body = r.body;
        r.status == 200 && body.matches("#EXT-X-STREAM-INF").count() >= n
    });
    assert!(ok, "multivariant playlist never listed {n} renditions:\n{body}\nlog:\n{}", server.logs());
    body
}

/// Rendition name -> STREAM-INF attributes.
fn variants(multivariant: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let lines: Vec<&str> = multivariant.lines().collect();
    let mut out = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("#EXT-X-STREAM-INF:") {
            let uri = lines[i + 1];
            let name = uri.split('/').next().unwrap().to_string();
            out.insert(name, stream_inf_attrs(l).into_iter().collect());
        }
    }
    out
}

fn media_playlist(server: &TestServer, channel: &str, rendition: &str) -> (String, ParsedMediaPlaylist) {
    let r = server.get(&format!("/live/{channel}/{rendition}/index.m3u8"));
    assert_eq!(r.status, 200, "{rendition} playlist: {}", r.body);
    let parsed = parse_media_playlist(&r.body)
        .unwrap_or_else(|e| panic!("{rendition} playlist invalid: {e:?}\n{}", r.body));
    (r.body, parsed)
}

/// The ffmpeg child of the server (pid from the newest "transcoder started" line).
fn transcoder_pid(server: &TestServer) -> Option<u32> {
    let logs = server.logs();
    let line = logs.lines().rev().find(|l| l.contains("transcoder started"))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("pid="))?.parse().ok()
}

/// ffmpeg decodes `seconds` of one rendition's LL-HLS playlist without a decoder error.
fn decode_rendition(server: &TestServer, channel: &str, rendition: &str, seconds: u32) -> (u64, u64) {
    let url = format!("http://{}/live/{channel}/{rendition}/index.m3u8", server.http);
    let probe = run_tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
            &url,
        ],
        Duration::from_secs(30),
    );
    let (w, h) = probe.stdout.trim().lines().next().and_then(|l| l.split_once(',')).expect("ffprobe size");
    let out = run_tool(
        "ffmpeg",
        &[
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-i",
            &url,
            "-t",
            &seconds.to_string(),
            "-f",
            "null",
            "-",
        ],
        Duration::from_secs(40),
    );
    assert!(out.status.success(), "{rendition} decode failed: {}", out.stderr);
    assert!(out.stderr.trim().is_empty(), "decoder errors on {rendition}:\n{}", out.stderr);
    (w.parse().unwrap(), h.parse().unwrap())
}

#[test]
fn a_720p_channel_gets_an_aligned_ladder_that_survives_its_ffmpeg_dying() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[LADDER_ON]);
    let _publisher = ffmpeg_publish_pattern(
        &server.publish_url(&server.key),
        90,
        "1280x720",
        60,
        &["-tune", "zerolatency"],
    );
    let text = multivariant_with(&server, "main", 3, Duration::from_secs(40));
    validate_multivariant(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let v = variants(&text);
    assert_eq!(v.keys().collect::<Vec<_>>(), ["360p", "480p", "source"], "{text}");
    assert_eq!(v["source"]["RESOLUTION"], "1280x720");
    assert_eq!(v["480p"]["RESOLUTION"], "854x480");
    assert_eq!(v["360p"]["RESOLUTION"], "640x360");
    for (name, attrs) in &v {
        assert!(
            attrs["CODECS"].starts_with("avc1.") && attrs["CODECS"].ends_with(",mp4a.40.2"),
            "{name}: {attrs:?}"
        );
        // The rungs declare the source's rate (measured over its segments: ~30).
        assert_eq!(attrs["FRAME-RATE"], v["source"]["FRAME-RATE"], "{name}: {text}");
        let fps: f64 = attrs["FRAME-RATE"].parse().unwrap();
        assert!((29.5..30.5).contains(&fps), "{name}: {text}");
        let peak: u64 = attrs["BANDWIDTH"].parse().unwrap();
        let avg: u64 = attrs["AVERAGE-BANDWIDTH"].parse().unwrap();
        assert!(avg > 0 && peak >= avg, "{name}: {attrs:?}");
    }
    // The rungs' bitrates are their own (the default ladder's 1400k and 800k, within the
    // encoder's rate control), well under the source's.
    let avg = |n: &str| v[n]["AVERAGE-BANDWIDTH"].parse::<f64>().unwrap();
    assert!(avg("360p") < avg("480p") && avg("480p") < avg("source"), "{v:?}");
    assert!((300_000.0..1_600_000.0).contains(&avg("360p")), "360p at {} b/s", avg("360p"));

    // Every rendition decodes, at its own size.
    for (name, size) in [("source", (1280, 720)), ("480p", (854, 480)), ("360p", (640, 360))] {
        assert_eq!(decode_rendition(&server, "main", name, 3), size, "{name}");
    }

    // Aligned: for every MSN all three list, the same program date time, duration and parts.
    std::thread::sleep(Duration::from_secs(4));
    let names = ["source", "480p", "360p"];
    let pls: Vec<(String, ParsedMediaPlaylist)> =
        names.iter().map(|n| media_playlist(&server, "main", n)).collect();
    let mut common_msns = 0;
    for seg in &pls[2].1.segments {
        let others: Vec<_> =
            pls[..2].iter().filter_map(|(_, p)| p.segments.iter().find(|s| s.msn == seg.msn)).collect();
        if others.len() < 2 {
            continue;
        }
        common_msns += 1;
        for o in others {
            assert_eq!(o.program_date_time, seg.program_date_time, "PDT of segment {}", seg.msn);
            assert!(
                (o.duration - seg.duration).abs() < 0.002,
                "segment {}: {} vs {}",
                seg.msn,
                o.duration,
                seg.duration
            );
            if !o.parts.is_empty() && !seg.parts.is_empty() {
                assert_eq!(o.parts.len(), seg.parts.len(), "parts of segment {}", seg.msn);
                for (a, b) in o.parts.iter().zip(&seg.parts) {
                    assert!((a.duration - b.duration).abs() < 0.002, "segment {} part durations", seg.msn);
                    assert_eq!(a.independent, b.independent, "segment {} INDEPENDENT", seg.msn);
                }
            }
        }
    }
    assert!(common_msns >= 3, "too few segments in common:\n{}\n{}", pls[0].0, pls[2].0);
    // Rendition reports name the others, close to where they stand.
    for (i, (body, p)) in pls.iter().enumerate() {
        let mut reported: Vec<&str> = p.rendition_reports.iter().map(|r| r.uri.as_str()).collect();
        reported.sort();
        let mut want: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("../{n}/index.m3u8"))
            .collect();
        want.sort();
        assert_eq!(reported, want, "{body}");
        for r in &p.rendition_reports {
            let other = names.iter().position(|n| r.uri == format!("../{n}/index.m3u8")).unwrap();
            let theirs = pls[other].1.next_msn();
            let msn = r.last_msn.expect("LAST-MSN");
            assert!(msn + 2 >= theirs && msn <= theirs + 2, "{} reports {msn}, it is at {theirs}", r.uri);
            assert!(r.last_part.is_some(), "LAST-PART in {body}");
        }
    }
    assert_eq!(server.metric("tidecast_transcodes_running"), 1.0);
    assert!(server.logs().contains(r#"renditions=["480p", "360p", "opus"]"#), "the Opus track is made");
    let status = server.get("/api/v1/channels/main");
    assert!(
        status.body.contains(r#""ladder":{"state":"running","renditions":["480p","360p","opus"]"#),
        "{}",
        status.body
    );

    // Kill the server's ffmpeg: the source plays on untouched; the rungs resume after a
    // discontinuity.
    let pid = transcoder_pid(&server).expect("the transcoder's pid in the log");
    let source_before = media_playlist(&server, "main", "source").1;
    let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    let killed = Instant::now();
    server.wait_metric(r#"tidecast_transcode_restarts_total{reason="exit"}"#, Duration::from_secs(10), |v| {
        v >= 1.0
    });
    let mut resumed = None;
    let ok = wait_until(Duration::from_secs(30), || {
        let (body, p) = media_playlist(&server, "main", "360p");
        let after_break = p.segments.iter().position(|s| s.discontinuity || s.gap);
        match after_break {
            Some(i) if p.segments[i..].iter().any(|s| !s.gap) || !p.trailing_parts.is_empty() => {
                resumed = Some(body);
                true
            }
            _ => false,
        }
    });
    assert!(
        ok,
        "360p did not resume after a discontinuity:\n{}\nlog:\n{}",
        media_playlist(&server, "main", "360p").0,
        server.logs()
    );
    eprintln!("rungs resumed {:.1} s after the kill", killed.elapsed().as_secs_f64());
    let new_pid = transcoder_pid(&server).unwrap();
    assert_ne!(new_pid, pid, "a new ffmpeg");
    let source_after = media_playlist(&server, "main", "source").1;
    assert!(source_after.next_msn() > source_before.next_msn(), "the source went on");
    assert_eq!(
        source_after.discontinuity_sequence
            + source_after.segments.iter().filter(|s| s.discontinuity).count() as u64,
        source_before.discontinuity_sequence
            + source_before.segments.iter().filter(|s| s.discontinuity).count() as u64,
        "the source got no discontinuity"
    );
    decode_rendition(&server, "main", "360p", 2);

    // A stalled ffmpeg (stopped: it takes no input and gives no output) is noticed by the
    // watchdog within `stall_timeout` and replaced.
    let _ = std::process::Command::new("kill").args(["-STOP", &new_pid.to_string()]).status();
    server.wait_metric(
        r#"tidecast_transcode_restarts_total{reason="stall"}"#,
        Duration::from_secs(20),
        |v| v >= 1.0,
    );
    assert!(
        wait_until(Duration::from_secs(20), || transcoder_pid(&server).is_some_and(|p| p != new_pid)),
        "no ffmpeg after the stall:\n{}",
        server.logs()
    );
    // The stopped process was killed (SIGKILL works on a stopped process) and reaped.
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!("/proc/{new_pid}")).exists()),
        "the stalled ffmpeg {new_pid} is still there"
    );
    decode_rendition(&server, "main", "360p", 2);
}

#[test]
fn without_ffmpeg_on_path_channels_run_passthrough_with_one_warning() {
    if !require_ffmpeg() {
        return;
    }
    let empty = tempfile::tempdir().unwrap();
    let path = empty.path().to_str().unwrap().to_string();
    let server = TestServer::start(&[LADDER_ON, ("PATH", &path)]);
    let logs = server.logs();
    assert_eq!(logs.matches("ffmpeg not found").count(), 1, "{logs}");
    assert_eq!(server.metric("tidecast_transcode_ffmpeg_missing"), 1.0);
    let _publisher = ffmpeg_publish_pattern(&server.publish_url(&server.key), 30, "1280x720", 60, &[]);
    server.wait_live(Duration::from_secs(20));
    let text = multivariant_with(&server, "main", 1, Duration::from_secs(20));
    assert_eq!(variants(&text).keys().collect::<Vec<_>>(), ["source"], "{text}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(variants(&server.get("/live/main/index.m3u8").body).len(), 1);
    assert_eq!(server.metric("tidecast_transcodes_running"), 0.0);
    assert_eq!(server.logs().matches("ffmpeg not found").count(), 1, "warned once");
}

#[test]
fn over_the_transcode_cap_a_channel_runs_passthrough_and_says_why() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[LADDER_ON, ("TIDECAST__TRANSCODE__MAX_TRANSCODES", "1")]);
    let created = server.cli(&["channel", "create", "second"]);
    let second_key = String::from_utf8_lossy(&created.stdout).lines().last().unwrap().trim().to_string();
    // Small sources: one 360p rung each, so two ladders would fit the machine easily.
    let _a = ffmpeg_publish_pattern(
        &server.publish_url(&server.key),
        60,
        "854x480",
        60,
        &["-tune", "zerolatency"],
    );
    multivariant_with(&server, "main", 2, Duration::from_secs(40));
    let _b = ffmpeg_publish_pattern(
        &server.publish_url(&second_key),
        60,
        "854x480",
        60,
        &["-tune", "zerolatency"],
    );
    server.wait_metric(r#"tidecast_transcode_refused_total{reason="cap"}"#, Duration::from_secs(30), |v| {
        v >= 1.0
    });
    let text = multivariant_with(&server, "second", 1, Duration::from_secs(20));
    assert_eq!(variants(&text).keys().collect::<Vec<_>>(), ["source"], "{text}");
    let status = server.get("/api/v1/channels/second").body;
    assert!(
        status.contains(r#""state":"passthrough""#) && status.contains("at most 1 channels at once"),
        "{status}"
    );
    assert_eq!(server.metric("tidecast_transcodes_running"), 1.0);
    assert!(server.get("/api/v1/channels/main").body.contains(r#""state":"running""#));
}

#[test]
fn an_owner_sets_the_channels_ladder_through_the_api_and_its_next_session_uses_it() {
    use serde_json::json;
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[LADDER_ON]);
    let owner = signed_in(&server, "owner@example.com");
    let other = signed_in(&server, "other@example.com");
    let (s, v) =
        http_json(server.http, "POST", "/api/v1/channels", Some(&owner), Some(json!({"name": "studio"})));
    assert_eq!(s, 201, "{v}");
    let key = v["stream_key"].as_str().expect("stream_key").to_string();
    let path = "/api/v1/channels/studio/ladder";

    // The defaults, as the server's config says.
    let (s, v) = http_json(server.http, "GET", path, Some(&owner), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["available"], true);
    assert_eq!(v["custom"], false);
    assert_eq!(v["codec"], "h264");
    assert_eq!(v["preset"], "veryfast");
    let heights: Vec<u64> =
        v["rungs"].as_array().unwrap().iter().map(|r| r["height"].as_u64().unwrap()).collect();
    assert_eq!(heights, [1080, 720, 480, 360]);

    // Only the owner (or an admin) sees or changes it.
    let (s, _) = http_json(server.http, "GET", path, Some(&other), None);
    assert_eq!(s, 403);
    let (s, _) = http_json(server.http, "PUT", path, None, Some(json!({"enabled": false})));
    assert_eq!(s, 401);
    // Bad input is a 400 that names the field, and changes nothing.
    for bad in [
        json!({"rungs": [{"height": 361, "video_kbps": 500}]}),
        json!({"rungs": [{"height": 360, "video_kbps": 10}]}),
        json!({"rungs": []}),
        json!({"max_rungs": 0}),
        json!({"preset": "warp"}),
        json!({"codec": "vp8"}),
        json!({"surprise": 1}),
    ] {
        let (s, v) = http_json(server.http, "PUT", path, Some(&owner), Some(bad.clone()));
        assert_eq!(s, 400, "{bad} -> {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let (_, v) = http_json(server.http, "GET", path, Some(&owner), None);
    assert_eq!(v["custom"], false);

    // One 240p H.265 rung (two of one height count once), ultrafast: the next session makes
    // exactly that.
    let body = json!({"rungs": [{"height": 240, "video_kbps": 300}, {"height": 240, "video_kbps": 400}], "codec": "h265", "preset": "ultrafast", "tune": "zerolatency"});
    let (s, v) = http_json(server.http, "PUT", path, Some(&owner), Some(body));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["custom"], true);
    assert_eq!(v["rungs"], json!([{"name": "240p", "height": 240, "video_kbps": 300}]));
    assert_eq!(v["preset"], "ultrafast");
    let mut publisher =
        ffmpeg_publish_pattern(&server.publish_url(&key), 40, "854x480", 60, &["-tune", "zerolatency"]);
    let text = multivariant_with(&server, "studio", 2, Duration::from_secs(40));
    let vs = variants(&text);
    assert_eq!(vs.keys().collect::<Vec<_>>(), ["240p", "source"], "{text}");
    assert_eq!(vs["240p"]["RESOLUTION"], "428x240");
    assert!(vs["240p"]["CODECS"].starts_with("hvc1."), "{text}");
    assert_eq!(decode_rendition(&server, "studio", "240p", 2), (428, 240));
    let cmdline =
        std::fs::read(format!("/proc/{}/cmdline", transcoder_pid(&server).unwrap())).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains("-c:v libx265 -preset ultrafast") && cmdline.contains("-b:v 300k"), "{cmdline}");
    publisher.kill();

    // Survives a restart (stored), and `enabled: false` makes the next session passthrough.
    let (s, v) = http_json(server.http, "PUT", path, Some(&owner), Some(json!({"enabled": false})));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["enabled"], false);
    let mut server = server;
    server.restart();
    let login = json!({"email": "owner@example.com", "password": "correct horse battery"});
    let (s, v) = http_json(server.http, "POST", "/api/v1/auth/login", None, Some(login));
    assert_eq!(s, 200, "{v}");
    let owner = v["access_token"].as_str().unwrap().to_owned();
    let (_, v) = http_json(server.http, "GET", path, Some(&owner), None);
    assert_eq!((v["enabled"].clone(), v["custom"].clone()), (json!(false), json!(true)), "{v}");
    let _publisher = ffmpeg_publish_pattern(&server.publish_url(&key), 30, "854x480", 60, &[]);
    let text = multivariant_with(&server, "studio", 1, Duration::from_secs(30));
    assert_eq!(variants(&text).len(), 1, "{text}");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(variants(&server.get("/live/studio/index.m3u8").body).len(), 1);
    assert_eq!(server.metric("tidecast_transcodes_running"), 0.0);

    // DELETE: back to the defaults.
    let (s, v) = http_json(server.http, "DELETE", path, Some(&owner), None);
    assert_eq!(s, 200, "{v}");
    assert_eq!((v["enabled"].clone(), v["custom"].clone()), (json!(true), json!(false)), "{v}");
}

#[test]
fn an_opus_source_gets_aac_rungs() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[LADDER_ON]);
    let url = format!("srt://{}?streamid=#!::r=live/{},m=publish&pkt_size=1316", server.srt, server.key);
    let video = strings(&[
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        "60",
        "-c:a",
        "libopus",
        "-b:a",
        "96k",
    ]);
    let _publisher = ffmpeg_test_source(&url, 40, "1280x720", &video, "mpegts");
    let text = multivariant_with(&server, "main", 3, Duration::from_secs(40));
    let v = variants(&text);
    assert!(v["source"]["CODECS"].ends_with(",opus"), "{text}");
    for rung in ["480p", "360p"] {
        assert!(v[rung]["CODECS"].ends_with(",mp4a.40.2"), "{text}");
    }
    // An Opus source needs no Opus track made: only the two video rungs.
    assert!(server.logs().contains(r#"renditions=["480p", "360p"]"#), "{}", server.logs());
    let probe = run_tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            &format!("http://{}/live/main/360p/index.m3u8", server.http),
        ],
        Duration::from_secs(30),
    );
    assert!(probe.stdout.lines().any(|l| l.trim() == "aac"), "{}", probe.stdout);
    decode_rendition(&server, "main", "360p", 2);
}

#[test]
fn a_publisher_reconnecting_within_grace_keeps_the_ladder_aligned() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[LADDER_ON, ("TIDECAST__CHANNEL__RECONNECT_GRACE", "20s")]);
    let url = server.publish_url(&server.key);
    let mut first = ffmpeg_publish_pattern(&url, 60, "854x480", 60, &["-tune", "zerolatency"]);
    multivariant_with(&server, "main", 2, Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(4));
    let before = media_playlist(&server, "main", "360p").0;
    first.kill();
    // A pause longer than the stall timeout (5 s): no input is no stall.
    std::thread::sleep(Duration::from_secs(7));
    let _second = ffmpeg_publish_pattern(&url, 60, "854x480", 60, &["-tune", "zerolatency"]);
    server.wait_metric(
        r#"tidecast_transcode_restarts_total{reason="source"}"#,
        Duration::from_secs(20),
        |v| v >= 1.0,
    );
    let ok = wait_until(Duration::from_secs(30), || {
        let (_, p) = media_playlist(&server, "main", "360p");
        p.segments.iter().position(|s| s.discontinuity).is_some_and(|i| p.segments.len() > i + 2)
    });
    let (after, p) = media_playlist(&server, "main", "360p");
    assert!(ok, "360p did not go on after the reconnect:\n{after}\nlog:\n{}", server.logs());
    assert_eq!(
        server.metric(r#"tidecast_transcode_restarts_total{reason="stall"}"#),
        0.0,
        "{}",
        server.logs()
    );
    // The same window (session id in the URIs), MSNs on from before.
    let session = |text: &str| {
        text.lines().find(|l| l.ends_with(".m4s")).and_then(|l| l.split('/').next()).map(str::to_owned)
    };
    assert_eq!(session(&before), session(&after));
    // After the reconnect the rung is still cut as the source is.
    let (_, source) = media_playlist(&server, "main", "source");
    let first_after = p.segments.iter().position(|s| s.discontinuity).unwrap();
    let mut compared = 0;
    for seg in &p.segments[first_after..] {
        if let Some(s) = source.segments.iter().find(|s| s.msn == seg.msn) {
            if !seg.gap {
                assert_eq!(s.program_date_time, seg.program_date_time, "segment {}", seg.msn);
                assert!((s.duration - seg.duration).abs() < 0.002, "segment {}", seg.msn);
                compared += 1;
            }
        }
    }
    assert!(compared >= 2, "{after}");
    decode_rendition(&server, "main", "360p", 2);
}
