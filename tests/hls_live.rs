//! LL-HLS output, end to end: the real `tidecast` binary fed by ffmpeg over RTMP, read over HTTP
//! the way players read it (plain and blocking playlist reloads, delta updates, preload-hinted
//! parts), with ffmpeg/ffprobe as the oracle for the media and the crate's own playlist validator
//! (`validate_media_playlist`, `check_reload_continuity`, `validate_multivariant`) for the text.
//!
//! Covers PRODUCT.md "Playback" (LL-HLS multivariant and media playlist URLs, the watch page) and
//! the delivery rules of RFC 8216bis: §4.4.3.7/§4.4.3.8 (PART-INF, SERVER-CONTROL), §4.4.5.2
//! (EXT-X-SKIP), §6.2.5.1 (delta updates), §6.2.5.2 (blocking reload: 400 too far ahead, 503 on
//! timeout) and the HTTP contract of `src/http/hls.rs` (content types, Cache-Control, CORS).
//!
//! The publisher uses x264's defaults (B-frames on, no `-tune zerolatency`), so composition
//! offsets go through the fMP4 muxer. Every test starts its own server on port 0, so they run in
//! parallel; every HTTP call and child process has a timeout.

mod common;

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use tidecast::protocols::hls::{
    check_reload_continuity, parse_media_playlist, validate_multivariant, ParsedMediaPlaylist,
};

/// The media playlist of channel `main`'s passthrough rendition.
const PLAYLIST: &str = "/live/main/source/index.m3u8";
/// What relative media URIs in [`PLAYLIST`] resolve against.
const MEDIA_BASE: &str = "/live/main/source/";
const MULTIVARIANT: &str = "/live/main/index.m3u8";
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const LIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// The default `hls.part_target`.
const PART_TARGET: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Helpers

/// ffmpeg publishing the 640x360 30 fps test pattern and a 440 Hz tone to channel `main` for
/// `seconds`, with a key frame every `gop` frames and x264's default B-frames.
fn publish(server: &TestServer, seconds: u32, gop: u32) -> Proc {
    // A later `-g` overrides the helper's default; x264's default B-frames stay on.
    ffmpeg_publish_with(&server.publish_url(&server.key), seconds, &["-g", &gop.to_string()])
}

fn get(server: &TestServer, path: &str) -> Resp {
    get_with(server.http, path, &[], Duration::from_secs(10))
}

/// Parse and validate a media playlist, failing with every violation and the text.
fn parse_valid(text: &str) -> ParsedMediaPlaylist {
    parse_media_playlist(text).unwrap_or_else(|errors| panic!("invalid media playlist: {errors:#?}\n{text}"))
}

/// GET the media playlist with `query` (may be empty); asserts 200 and a valid playlist.
fn fetch_playlist(server: &TestServer, query: &str) -> (Resp, String, ParsedMediaPlaylist) {
    let path = if query.is_empty() { PLAYLIST.to_string() } else { format!("{PLAYLIST}?{query}") };
    let r = get(server, &path);
    assert_eq!(r.status, 200, "GET {path}: {}\nserver:\n{}", r.text(), server.logs());
    let text = r.text();
    let pl = parse_valid(&text);
    (r, text, pl)
}

/// Poll the plain media playlist until `cond` holds; 404s (not live yet) are retried.
fn wait_playlist(
    server: &TestServer,
    timeout: Duration,
    what: &str,
    cond: impl FnMut(&ParsedMediaPlaylist) -> bool,
) -> (String, ParsedMediaPlaylist) {
    wait_media_playlist(server, PLAYLIST, timeout, what, cond)
}

/// Live with at least `n` complete segments.
fn wait_segments(server: &TestServer, n: usize) -> (String, ParsedMediaPlaylist) {
    server.wait_live(LIVE_TIMEOUT);
    wait_playlist(server, Duration::from_secs(20), &format!("{n} complete segments"), |pl| {
        pl.segments.len() >= n
    })
}

/// `(msn, part)` of a part URI `<session>/part-M-I.m4s`.
fn part_of_uri(uri: &str) -> (u64, u32) {
    let name = uri.rsplit('/').next().unwrap();
    let rest = name.strip_prefix("part-").and_then(|r| r.strip_suffix(".m4s")).unwrap_or_else(|| {
        panic!("not a part URI: {uri}");
    });
    let (m, i) = rest.split_once('-').unwrap();
    (m.parse().unwrap(), i.parse().unwrap())
}

/// The session id of a relative media URI `<session>/<file>`.
fn session_of(uri: &str) -> &str {
    uri.split('/').next().unwrap()
}

/// The part a request for `(msn, part)` resolves to in `pl`: itself, or part 0 of the next
/// segment when `msn` completed with fewer parts (RFC 8216bis §6.2.5.2). `None` if not listed.
fn resolve_part(pl: &ParsedMediaPlaylist, msn: u64, part: u32) -> Option<(u64, u32, f64)> {
    let parts_of = |m: u64| -> Option<&[tidecast::protocols::hls::ParsedPart]> {
        if m == pl.next_msn() {
            return Some(&pl.trailing_parts);
        }
        pl.segments.iter().find(|s| s.msn == m).map(|s| s.parts.as_slice())
    };
    let parts = parts_of(msn)?;
    if let Some(p) = parts.get(part as usize) {
        return Some((msn, part, p.duration));
    }
    let complete = pl.segments.iter().any(|s| s.msn == msn);
    if complete && !parts.is_empty() && part as usize >= parts.len() {
        return parts_of(msn + 1)?.first().map(|p| (msn + 1, 0, p.duration));
    }
    None
}

/// Wall-clock end of part `(msn, part)` by the playlist's EXT-X-PROGRAM-DATE-TIME: the segment's
/// date-time (for the segment in progress, the end of the last complete one) plus its parts.
fn part_end_wall(pl: &ParsedMediaPlaylist, msn: u64, part: u32) -> SystemTime {
    let (start, parts) = if msn == pl.next_msn() {
        let last = pl.segments.last().expect("a complete segment before the one in progress");
        let pdt = last.program_date_time.expect("PROGRAM-DATE-TIME on every segment");
        (pdt + Duration::from_secs_f64(last.duration), &pl.trailing_parts)
    } else {
        let seg = pl.segments.iter().find(|s| s.msn == msn).expect("segment listed");
        (seg.program_date_time.expect("PROGRAM-DATE-TIME on every segment"), &seg.parts)
    };
    let media: f64 = parts.iter().take(part as usize + 1).map(|p| p.duration).sum();
    start + Duration::from_secs_f64(media)
}

/// `a - b` in seconds, signed.
fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() as f64 * q).ceil() as usize).clamp(1, s.len()) - 1]
}

/// Whether the tool set is there (loud SKIP otherwise, failure in CI).
fn tools() -> bool {
    require_ffmpeg()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn ffprobe_and_ffmpeg_decode_the_live_stream() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[]);
    let _publisher = publish(&server, 30, 60);
    server.wait_live(LIVE_TIMEOUT);
    wait_playlist(&server, Duration::from_secs(15), "3 s of media", |pl| {
        pl.segments.iter().map(|s| s.duration).sum::<f64>()
            + pl.trailing_parts.iter().map(|p| p.duration).sum::<f64>()
            >= 3.0
    });
    let url = format!("http://{}{MULTIVARIANT}", server.http);

    let probe =
        run_tool("ffprobe", &["-v", "error", "-show_streams", "-of", "json", &url], Duration::from_secs(20));
    assert!(probe.status.success(), "ffprobe {url}: {}\n{}", probe.status, probe.stderr);
    assert!(probe.stderr.trim().is_empty(), "ffprobe complained:\n{}", probe.stderr);
    let v: serde_json::Value = serde_json::from_str(&probe.stdout).expect("ffprobe JSON");
    let streams = v["streams"].as_array().expect("streams");
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("a video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)));
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").expect("an audio stream");
    assert_eq!(audio["codec_name"], "aac");

    let progress = server.data_dir().join("decode.progress");
    let started = Instant::now();
    let ran = run_tool(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-i",
            &url,
            "-t",
            "10",
            "-progress",
            progress.to_str().unwrap(),
            "-f",
            "null",
            "-",
        ],
        Duration::from_secs(30),
    );
    let frames = frames_from_progress(&progress);
    eprintln!("ffmpeg decoded {frames} frames of the live stream in {:.1}s", started.elapsed().as_secs_f64());
    assert!(
        ran.status.success() && ran.stderr.trim().is_empty(),
        "ffmpeg decoding {url}: {}\n{}\nserver:\n{}",
        ran.status,
        ran.stderr,
        server.logs()
    );
    assert!((285..=315).contains(&frames), "decoded {frames} frames in 10 s at 30 fps");
}

#[test]
fn playlists_validate() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[]);
    let _publisher = publish(&server, 30, 60);
    wait_segments(&server, 1);

    let mut prev: Option<ParsedMediaPlaylist> = None;
    let mut reloads = 0;
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        let (r, text, pl) = fetch_playlist(&server, "");
        let now = SystemTime::now();
        assert_eq!(r.header("content-type").as_deref(), Some(PLAYLIST_TYPE));
        assert_eq!(pl.part_target, Some(0.2), "PART-TARGET:\n{text}");
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"), "PART-INF as written:\n{text}");
        assert_eq!(pl.part_hold_back, Some(0.6), "PART-HOLD-BACK:\n{text}");
        let td = pl.target_duration.expect("TARGETDURATION");
        assert_eq!(pl.can_skip_until, Some(6.0 * td as f64), "CAN-SKIP-UNTIL:\n{text}");
        assert!(pl.can_block_reload);
        assert_eq!(pl.preload_hints.len(), 1, "one PRELOAD-HINT:\n{text}");
        assert!(!pl.ended);
        for s in &pl.segments {
            if let Some(first) = s.parts.first() {
                assert!(first.independent, "segment {} starts with a dependent part:\n{text}", s.msn);
            }
        }
        if let Some(first) = pl.trailing_parts.first() {
            assert!(first.independent, "segment {} starts with a dependent part:\n{text}", pl.next_msn());
        }
        let last = pl.segments.last().expect("a complete segment");
        let end = last.program_date_time.expect("PROGRAM-DATE-TIME") + Duration::from_secs_f64(last.duration);
        let lag = secs_between(now, end);
        assert!(
            (-1.0..=2.0 * td as f64 + 1.0).contains(&lag),
            "the last segment ended {lag:.3}s before now by its PROGRAM-DATE-TIME:\n{text}"
        );
        if let Some(p) = &prev {
            if let Err(errors) = check_reload_continuity(p, &pl) {
                panic!("reload discontinuity: {errors:#?}\n{text}");
            }
        }
        prev = Some(pl);
        reloads += 1;

        let r = get(&server, MULTIVARIANT);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("content-type").as_deref(), Some(PLAYLIST_TYPE));
        let mv = r.text();
        if let Err(errors) = validate_multivariant(&mv) {
            panic!("invalid multivariant playlist: {errors:#?}\n{mv}");
        }
        let inf: Vec<&str> = mv.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
        assert_eq!(inf.len(), 1, "one variant:\n{mv}");
        let attrs = stream_inf_attrs(inf[0]);
        let attr = |k: &str| {
            attrs
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("no {k}:\n{mv}"))
        };
        let bandwidth: u64 = attr("BANDWIDTH").parse().unwrap();
        let average: u64 = attr("AVERAGE-BANDWIDTH").parse().unwrap();
        assert!(average > 50_000 && average <= bandwidth, "BANDWIDTH {bandwidth}, AVERAGE {average}:\n{mv}");
        let codecs = attr("CODECS");
        assert!(codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"), "CODECS={codecs}");
        assert_eq!(attr("RESOLUTION"), "640x360");
        let fps: f64 = attr("FRAME-RATE").parse().unwrap();
        assert!((fps - 30.0).abs() < 0.5, "FRAME-RATE={fps}");
        assert!(mv.lines().any(|l| l == "source/index.m3u8"), "variant URI:\n{mv}");
        thread::sleep(Duration::from_millis(400));
    }
    assert!(reloads >= 5, "only {reloads} reloads");
}

#[test]
fn media_files_are_valid_fmp4() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[]);
    let _publisher = publish(&server, 30, 60);
    let (text, pl) = wait_segments(&server, 1);
    let seg = pl.segments.iter().find(|s| !s.parts.is_empty()).unwrap_or_else(|| {
        panic!("no complete segment with its parts listed:\n{text}");
    });
    let map = pl
        .segments
        .iter()
        .take_while(|s| s.msn <= seg.msn)
        .filter_map(|s| s.map_uri.clone())
        .last()
        .expect("an EXT-X-MAP before the segment");

    let init = get(&server, &format!("{MEDIA_BASE}{map}"));
    assert_eq!(init.status, 200, "init: {}", init.text());
    assert_eq!(init.header("content-type").as_deref(), Some("video/mp4"));
    let segment = get(&server, &format!("{MEDIA_BASE}{}", seg.uri));
    assert_eq!(segment.status, 200, "segment: {}", segment.text());
    assert_eq!(segment.header("content-type").as_deref(), Some("video/iso.segment"));
    for (what, r) in [("init", &init), ("segment", &segment)] {
        let cc = r.header("cache-control").unwrap_or_default();
        assert!(cc.contains("immutable") && cc.contains("max-age="), "{what} Cache-Control: {cc}");
    }

    // The segment is its parts, byte for byte.
    let mut parts = Vec::new();
    for p in &seg.parts {
        let r = get(&server, &format!("{MEDIA_BASE}{}", p.uri));
        assert_eq!(r.status, 200, "{}: {}", p.uri, r.text());
        assert_eq!(r.header("content-type").as_deref(), Some("video/iso.segment"));
        parts.push(r.body);
    }
    assert!(parts.concat() == segment.body, "segment {} is not the concatenation of its parts", seg.msn);

    let dir = server.data_dir();
    let whole = dir.join("init-and-segment.mp4");
    std::fs::write(&whole, [init.body.as_slice(), &segment.body].concat()).unwrap();
    let probe = ffprobe(&whole);
    let codecs: Vec<(&str, &str)> =
        probe.streams.iter().map(|s| (s.codec_type.as_str(), s.codec_name.as_str())).collect();
    assert!(codecs.contains(&("video", "h264")) && codecs.contains(&("audio", "aac")), "streams: {codecs:?}");
    let video = probe.streams.iter().find(|s| s.codec_type == "video").unwrap();
    assert_eq!((video.width, video.height), (Some(640), Some(360)));
    assert!(probe.video().next().is_some_and(|p| p.keyframe), "the segment does not start with a key frame");
    let expected = (seg.duration * 30.0).round() as u64;
    let frames = decode_clean(&whole);
    eprintln!("segment {}: {:.3}s, {frames} frames decoded", seg.msn, seg.duration);
    assert!(frames.abs_diff(expected) <= 1, "decoded {frames} frames from a {:.3}s segment", seg.duration);

    let part_file = dir.join("init-and-part.mp4");
    std::fs::write(&part_file, [init.body.as_slice(), &parts[0]].concat()).unwrap();
    let frames = decode_clean(&part_file);
    assert!(frames >= 1, "the first part of segment {} decoded to {frames} frames", seg.msn);

    // Playlists: types and caching.
    let plain = get(&server, PLAYLIST);
    assert_eq!(plain.header("content-type").as_deref(), Some(PLAYLIST_TYPE));
    assert_eq!(plain.header("cache-control").as_deref(), Some("public, max-age=1"));
    let blocking = get(&server, &format!("{PLAYLIST}?_HLS_msn={}", seg.msn));
    assert_eq!(blocking.status, 200, "{}", blocking.text());
    assert_eq!(blocking.header("content-type").as_deref(), Some(PLAYLIST_TYPE));
    let cc = blocking.header("cache-control").unwrap_or_default();
    assert!(cc.starts_with("public, max-age="), "blocking playlist Cache-Control: {cc:?}");
    let mv = get(&server, MULTIVARIANT);
    assert_eq!(mv.header("content-type").as_deref(), Some(PLAYLIST_TYPE));
    assert_eq!(mv.header("cache-control").as_deref(), Some("public, max-age=1"));

    // CORS for browser players on other origins.
    for path in [MULTIVARIANT.to_string(), PLAYLIST.to_string(), format!("{MEDIA_BASE}{}", seg.uri)] {
        let r = get_with(server.http, &path, &[("Origin", "http://example.com")], Duration::from_secs(10));
        assert_eq!(r.status, 200);
        let acao = r.header("access-control-allow-origin");
        assert!(
            matches!(acao.as_deref(), Some("*" | "http://example.com")),
            "{path}: access-control-allow-origin = {acao:?}"
        );
    }
}

/// `http.cors_origins` as an allowlist: a listed origin is granted, any other is not. Errors
/// are never cached. (The offline channel's 404 is enough: CORS applies to every answer.)
#[test]
fn cors_allowlist_and_uncached_errors() {
    let conf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(conf.path(), "[http]\ncors_origins = [\"https://player.example\"]\n").unwrap();
    let server = TestServer::start(&[("TIDECAST_CONFIG", conf.path().to_str().unwrap())]);
    for path in [MULTIVARIANT, PLAYLIST] {
        let ok =
            get_with(server.http, path, &[("Origin", "https://player.example")], Duration::from_secs(10));
        assert_eq!(ok.status, 404, "{path} (offline): {}", ok.text());
        assert_eq!(
            ok.header("access-control-allow-origin").as_deref(),
            Some("https://player.example"),
            "{path}"
        );
        assert_eq!(ok.header("cache-control").as_deref(), Some("no-store"), "{path}: errors are not cached");
        let other =
            get_with(server.http, path, &[("Origin", "https://elsewhere.example")], Duration::from_secs(10));
        let acao = other.header("access-control-allow-origin");
        assert!(
            !matches!(acao.as_deref(), Some("*" | "https://elsewhere.example")),
            "{path}: an unlisted origin got {} with access-control-allow-origin {acao:?}",
            other.status
        );
    }
}

#[test]
fn blocking_reload_returns_when_the_part_appears() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[]);
    let _publisher = publish(&server, 30, 60);
    let (_, pl) = wait_segments(&server, 1);

    let (mut msn, mut part) = part_of_uri(&pl.preload_hints[0]);
    // (wait, lateness by PROGRAM-DATE-TIME, part duration), seconds.
    let mut samples: Vec<(f64, f64, f64)> = Vec::new();
    for _ in 0..12 {
        let query = format!("_HLS_msn={msn}&_HLS_part={part}");
        let (r, text, pl) = fetch_playlist(&server, &query);
        let received = SystemTime::now();
        let (m, p, duration) = resolve_part(&pl, msn, part).unwrap_or_else(|| {
            panic!("?{query} returned before the part was listed:\n{text}");
        });
        let cc = r.header("cache-control").unwrap_or_default();
        assert!(cc.starts_with("public, max-age="), "Cache-Control {cc:?}");
        let lateness = secs_between(received, part_end_wall(&pl, m, p));
        samples.push((r.elapsed.as_secs_f64(), lateness, duration));
        (msn, part) = part_of_uri(pl.preload_hints.first().expect("a preload hint"));
    }
    let waits: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let min_late = samples.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    let jitter: Vec<f64> = samples.iter().map(|s| s.1 - min_late).collect();
    eprintln!("blocking reloads: (wait ms, lateness vs PROGRAM-DATE-TIME ms, part ms)");
    for (w, l, d) in &samples {
        eprintln!("  {:6.1} {:7.1} {:6.1}", w * 1e3, l * 1e3, d * 1e3);
    }
    eprintln!(
        "wait p50 {:.1} ms p90 {:.1} ms max {:.1} ms; lateness min {:.1} ms, above min p50 {:.1} ms p90 {:.1} ms",
        quantile(&waits, 0.5) * 1e3,
        quantile(&waits, 0.9) * 1e3,
        quantile(&waits, 1.0) * 1e3,
        min_late * 1e3,
        quantile(&jitter, 0.5) * 1e3,
        quantile(&jitter, 0.9) * 1e3,
    );
    let slack = 0.1;
    assert!(
        quantile(&waits, 0.9) < PART_TARGET.as_secs_f64() + slack,
        "blocking reloads took p90 {:.0} ms for {} ms parts",
        quantile(&waits, 0.9) * 1e3,
        PART_TARGET.as_millis()
    );
    assert!(
        quantile(&jitter, 0.9) < slack,
        "responses came p90 {:.0} ms later than the earliest one relative to the parts' production",
        quantile(&jitter, 0.9) * 1e3
    );

    // The preload-hinted part itself: held until complete, then served in full.
    let (_, _, pl) = fetch_playlist(&server, "");
    let hint = pl.preload_hints[0].clone();
    let r = get(&server, &format!("{MEDIA_BASE}{hint}"));
    eprintln!(
        "preload-hinted part {hint}: {} after {:.1} ms, {} bytes",
        r.status,
        r.elapsed.as_secs_f64() * 1e3,
        r.body.len()
    );
    assert_eq!(r.status, 200, "{hint}: {}", r.text());
    assert_eq!(r.header("content-type").as_deref(), Some("video/iso.segment"));
    assert!(!r.body.is_empty());
    assert!(r.elapsed < PART_TARGET + Duration::from_millis(300), "hinted part held {:?}", r.elapsed);
    let again = get(&server, &format!("{MEDIA_BASE}{hint}"));
    assert_eq!(again.status, 200);
    assert!(again.body == r.body, "{hint} changed between the held and a later request");
    let (hm, hp) = part_of_uri(&hint);
    let (_, text, pl) = fetch_playlist(&server, "");
    assert!(
        resolve_part(&pl, hm, hp).is_some_and(|(m, p, _)| (m, p) == (hm, hp)),
        "{hint} was served but is not listed:\n{text}"
    );
}

#[test]
fn delta_update() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__HLS__SEGMENT_TARGET", "1s")]);
    let _publisher = publish(&server, 30, 30);
    server.wait_live(LIVE_TIMEOUT);
    let (text, pl) =
        wait_playlist(&server, Duration::from_secs(25), "CAN-SKIP-UNTIL + 3 s of segments", |pl| {
            let total: f64 = pl.segments.iter().map(|s| s.duration).sum();
            total > pl.can_skip_until.unwrap_or(f64::INFINITY) + 3.0
        });
    assert_eq!(pl.target_duration, Some(1), "TARGETDURATION with 1 s segments:\n{text}");
    let skip_until = pl.can_skip_until.unwrap();
    assert_eq!(skip_until, 6.0);

    // Ask both at the same blocking point so they describe the same state (retry on a race).
    let mut compared = false;
    for _ in 0..5 {
        let (_, _, now) = fetch_playlist(&server, "");
        let (m, p) = part_of_uri(&now.preload_hints[0]);
        let (_, full_text, full) = fetch_playlist(&server, &format!("_HLS_msn={m}&_HLS_part={p}"));
        let (_, delta_text, delta) =
            fetch_playlist(&server, &format!("_HLS_msn={m}&_HLS_part={p}&_HLS_skip=YES"));
        if full.next_msn() != delta.next_msn() || full.trailing_parts.len() != delta.trailing_parts.len() {
            continue;
        }
        assert!(delta_text.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS="), "no EXT-X-SKIP:\n{delta_text}");
        assert!(delta.skipped_segments > 0, "nothing skipped:\n{delta_text}");
        assert_eq!(delta.version, Some(9), "EXT-X-VERSION of a delta update");
        assert_eq!(delta.media_sequence, full.media_sequence, "MEDIA-SEQUENCE must be the full playlist's");
        let kept = &full.segments[delta.skipped_segments as usize..];
        let same = |a: &tidecast::protocols::hls::ParsedSegment,
                    b: &tidecast::protocols::hls::ParsedSegment| {
            a.msn == b.msn && a.uri == b.uri && (a.duration - b.duration).abs() < 1e-6 && a.parts == b.parts
        };
        assert!(
            kept.len() == delta.segments.len() && kept.iter().zip(&delta.segments).all(|(a, b)| same(a, b)),
            "the delta's segments are not the full playlist's tail\nfull:\n{full_text}\ndelta:\n{delta_text}"
        );
        assert_eq!(full.trailing_parts, delta.trailing_parts);
        assert_eq!(full.preload_hints, delta.preload_hints);
        // Skipped: exactly the segments that end more than CAN-SKIP-UNTIL before the end of the
        // last complete one (§6.2.5.1).
        let kept_secs: f64 = kept.iter().map(|s| s.duration).sum();
        assert!(
            kept_secs >= skip_until - 1e-3 && kept_secs - kept[0].duration <= skip_until + 1e-3,
            "{kept_secs:.3}s kept (first {:.3}s) with CAN-SKIP-UNTIL={skip_until}:\n{delta_text}",
            kept[0].duration
        );
        if let Some(prev) = check_reload_continuity(&full, &delta).err() {
            panic!("delta update vs full playlist: {prev:#?}");
        }
        eprintln!(
            "delta update: skipped {} of {} segments, {} vs {} bytes",
            delta.skipped_segments,
            full.segments.len(),
            delta_text.len(),
            full_text.len()
        );
        compared = true;
        break;
    }
    assert!(compared, "full and delta playlists never described the same live edge");
}

#[test]
fn bad_requests() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[
        ("TIDECAST__HLS__SEGMENT_TARGET", "4s"),
        ("TIDECAST__HLS__WINDOW", "20s"),
        ("TIDECAST__HLS__BLOCK_TIMEOUT", "1s"),
    ]);
    // Nobody publishes yet: the channel is offline.
    for path in [PLAYLIST, MULTIVARIANT, "/live/nope/index.m3u8", "/live/nope/source/index.m3u8"] {
        let r = get(&server, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.error_code(), "not_found", "{path}");
        assert!(r.elapsed < Duration::from_millis(500), "{path}: 404 after {:?}", r.elapsed);
    }

    let _publisher = publish(&server, 30, 120);
    let (_, pl) = wait_segments(&server, 1);
    let last = pl.segments.last().unwrap().msn;
    let sid = session_of(&pl.segments[0].uri).to_string();

    let cases = [
        (format!("_HLS_msn={}", last + 10), "too far ahead"),
        (format!("_HLS_msn={}&_HLS_part=0", last + 10), "too far ahead, with a part"),
        // The Advance Part Limit: 3 / 0.2 s part target = 15 parts past the newest one (a 4 s
        // segment has 20 parts, so this stays too far ahead even if `last` completes meanwhile).
        (format!("_HLS_msn={}&_HLS_part=40", last + 1), "a part too far ahead"),
        ("_HLS_part=1".to_string(), "_HLS_part without _HLS_msn"),
        ("_HLS_msn=abc".to_string(), "non-numeric _HLS_msn"),
        (format!("_HLS_msn={last}&_HLS_part=x"), "non-numeric _HLS_part"),
        ("_HLS_msn=-1".to_string(), "negative _HLS_msn"),
        ("_HLS_skip=NO".to_string(), "bad _HLS_skip"),
        (format!("_HLS_msn={last}&_HLS_msn={last}"), "repeated _HLS_msn"),
    ];
    for (query, what) in &cases {
        let r = get(&server, &format!("{PLAYLIST}?{query}"));
        assert_eq!(r.status, 400, "{what} (?{query}): {}", r.text());
        assert_eq!(r.error_code(), "invalid_argument", "{what}");
        assert!(r.elapsed < Duration::from_millis(500), "{what}: 400 after {:?}", r.elapsed);
    }

    // Two segments ahead is legitimate but cannot complete within the 1 s block timeout.
    let r = get(&server, &format!("{PLAYLIST}?_HLS_msn={}", last + 2));
    eprintln!("_HLS_msn=last+2: {} after {} ms", r.status, r.elapsed.as_millis());
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.error_code(), "unavailable");
    assert!(
        r.elapsed >= Duration::from_millis(950) && r.elapsed < Duration::from_millis(1600),
        "503 after {:?} with a 1 s block timeout",
        r.elapsed
    );

    // Media URIs: wrong session, unknown files, parts far ahead.
    let other = if sid == "00000000" { "00000001" } else { "00000000" };
    for file in [
        format!("{other}/seg-{last}.m4s"),
        format!("{other}/init-1.mp4"),
        format!("{sid}/seg-{}.m4s", last + 100),
        format!("{sid}/part-{}-0.m4s", last + 100),
        format!("{sid}/nonsense.m4s"),
        format!("{sid}/init-99.mp4"),
    ] {
        let r = get(&server, &format!("{MEDIA_BASE}{file}"));
        assert_eq!(r.status, 404, "{file}: {}", r.text());
        assert_eq!(r.error_code(), "not_found", "{file}");
        assert!(r.elapsed < Duration::from_millis(500), "{file}: 404 after {:?}", r.elapsed);
    }
    let r = get(&server, "/live/main/other/index.m3u8");
    assert_eq!(r.status, 404, "unknown rendition: {}", r.text());
}

#[test]
fn discontinuity_after_publisher_reconnect() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "5s")]);
    let mut a = publish(&server, 5, 60);
    let (_, before) = wait_segments(&server, 1);
    let sid = session_of(&before.segments[0].uri).to_string();
    let status = a.wait_timeout(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "publisher A: {status:?}\n{}", a.stderr());
    let a_left = Instant::now();
    let _b = publish(&server, 20, 60);

    let (text, pl) =
        wait_playlist(&server, Duration::from_secs(20), "a complete segment after a discontinuity", |pl| {
            pl.segments.iter().any(|s| s.discontinuity)
        });
    eprintln!("discontinuity listed {:.1}s after A left", a_left.elapsed().as_secs_f64());
    let disc: Vec<_> = pl.segments.iter().filter(|s| s.discontinuity).collect();
    assert_eq!(disc.len(), 1, "one discontinuity expected:\n{text}");
    let first_b = disc[0];
    let uris = pl
        .segments
        .iter()
        .map(|s| s.uri.as_str())
        .chain(pl.segments.iter().flat_map(|s| &s.parts).map(|p| p.uri.as_str()));
    for uri in uris.chain(pl.trailing_parts.iter().map(|p| p.uri.as_str())) {
        assert_eq!(session_of(uri), sid, "the session id changed across the reconnect:\n{text}");
    }
    let from_a: Vec<_> = pl.segments.iter().take_while(|s| !s.discontinuity).collect();
    let a_secs: f64 = from_a.iter().map(|s| s.duration).sum();
    assert!(
        pl.media_sequence == 0 && (4.0..=5.6).contains(&a_secs),
        "segments before the discontinuity hold {a_secs:.3}s, A published 5 s:\n{text}"
    );
    // B's first segment starts after A's last one ended, by the reconnect gap.
    let a_last = from_a.last().unwrap();
    let a_end = a_last.program_date_time.unwrap() + Duration::from_secs_f64(a_last.duration);
    let gap =
        secs_between(first_b.program_date_time.expect("PROGRAM-DATE-TIME after a discontinuity"), a_end);
    eprintln!("A's media ends {:.3}s before B's begins (by PROGRAM-DATE-TIME)", gap);
    assert!(gap > 0.1, "B's first segment starts {gap:.3}s after A's last ends:\n{text}");
    assert!(first_b.parts.first().is_none_or(|p| p.independent));

    // B's first segment decodes on its own with the init segment in force.
    let map = pl
        .segments
        .iter()
        .take_while(|s| s.msn <= first_b.msn)
        .filter_map(|s| s.map_uri.clone())
        .last()
        .unwrap();
    let init = get(&server, &format!("{MEDIA_BASE}{map}"));
    let seg = get(&server, &format!("{MEDIA_BASE}{}", first_b.uri));
    assert_eq!((init.status, seg.status), (200, 200));
    let file = server.data_dir().join("after-reconnect.mp4");
    std::fs::write(&file, [init.body, seg.body].concat()).unwrap();
    let frames = decode_clean(&file);
    assert!(frames >= 25, "B's first segment decoded to {frames} frames");
}

#[test]
fn watch_page() {
    const HLSJS: &str = "https://cdn.example.com/hls.js@1.5.0/dist/hls.min.js";
    let server = TestServer::start(&[("TIDECAST__HTTP__HLSJS_URL", HLSJS)]);
    let r = get(&server, "/watch/main");
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "content-type {ct}");
    let html = r.text();
    assert!(html.contains(&format!("<script src=\"{HLSJS}\"></script>")), "hls.js script tag:\n{html}");
    assert!(html.contains("lowLatencyMode: next === \"live\""), "hls.js low-latency mode when live:\n{html}");
    assert!(html.contains("\"/live/main/index.m3u8\""), "the page does not point at the playlist:\n{html}");
    assert!(html.contains("\"/live/main/dvr.m3u8\"") && html.contains("id=\"rewind\""), "the DVR:\n{html}");
    for path in
        ["/watch/..%2f", "/watch/..%2F..%2Fetc", "/watch/%3Cscript%3E", "/watch/Main%20Room", "/watch/a%22b"]
    {
        let r = get(&server, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(!r.text().contains("<script"), "{path} reflected markup: {}", r.text());
    }
}

#[test]
fn ended_stream() {
    if !tools() {
        return;
    }
    let server =
        TestServer::start(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "1s"), ("TIDECAST__HLS__WINDOW", "6s")]);
    let mut publisher = publish(&server, 5, 60);
    wait_segments(&server, 1);
    let status = publisher.wait_timeout(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "publisher: {status:?}\n{}", publisher.stderr());
    let left = Instant::now();

    // After the grace the playlist ends: EXT-X-ENDLIST, or gone at once; say which.
    let mut ended: Option<String> = None;
    let ok = wait_until(Duration::from_secs(6), || {
        let r = get(&server, PLAYLIST);
        match r.status {
            200 if r.text().contains("#EXT-X-ENDLIST") => {
                ended = Some(r.text());
                true
            }
            200 => false,
            404 => true,
            s => panic!("playlist answered {s} after the publisher left: {}", r.text()),
        }
    });
    assert!(ok, "the playlist neither ended nor went away within 6 s; server:\n{}", server.logs());
    let ended_after = left.elapsed();
    let text = ended.unwrap_or_else(|| panic!("the playlist went 404 without ever showing EXT-X-ENDLIST"));
    eprintln!("EXT-X-ENDLIST {:.1}s after the publisher left (grace 1 s)", ended_after.as_secs_f64());
    assert!(ended_after >= Duration::from_millis(800), "ended before the grace expired");
    assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"), "ENDLIST is not last:\n{text}");
    assert!(!text.contains("#EXT-X-PRELOAD-HINT"), "a preload hint in an ended playlist:\n{text}");

    // Everything else is collected, so one run reports every deviation.
    let mut problems = Vec::new();
    let last = match parse_media_playlist(&text) {
        Ok(pl) => {
            assert!(pl.trailing_parts.is_empty(), "parts without a segment in an ended playlist:\n{text}");
            let total: f64 = pl.segments.iter().map(|s| s.duration).sum();
            if !(4.0..=5.2).contains(&total) {
                problems.push(format!("the ended playlist holds {total:.3}s of a 5 s stream"));
            }
            pl.segments.last().expect("segments").msn
        }
        Err(errors) => {
            problems.push(format!("the ended playlist does not validate: {errors:?}"));
            text.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64 - 1
        }
    };

    // A player's blocking reload for the next part, racing the end: RFC 8216bis §6.2.5.2 and our
    // own `MediaPlaylist::block_decision` say an ended playlist never blocks, so the answer should
    // be the final playlist at once rather than an error.
    let r = get(&server, &format!("{PLAYLIST}?_HLS_msn={}&_HLS_part=0", last + 1));
    if !(r.status == 200 && r.text().contains("#EXT-X-ENDLIST") && r.elapsed < Duration::from_millis(500)) {
        problems.push(format!(
            "blocking reload (_HLS_msn={}&_HLS_part=0) of an ended playlist: expected 200 with \
             EXT-X-ENDLIST at once, got {} after {:?}: {}",
            last + 1,
            r.status,
            r.elapsed,
            r.text()
        ));
    }

    // Then the channel is dropped after the linger (hls.window, here 6 s).
    let gone = wait_until(Duration::from_secs(10), || get(&server, PLAYLIST).status == 404);
    assert!(gone, "the ended playlist was still served {:?} after it ended", left.elapsed());
    eprintln!("playlist 404 {:.1}s after the publisher left", left.elapsed().as_secs_f64());
    assert_eq!(get(&server, PLAYLIST).error_code(), "not_found");

    assert!(problems.is_empty(), "ended stream:\n- {}\nplaylist:\n{text}", problems.join("\n- "));
}

#[test]
fn metrics() {
    if !tools() {
        return;
    }
    let server = TestServer::start(&[]);
    let _publisher = publish(&server, 30, 60);
    let (_, pl) = wait_segments(&server, 1);
    assert_eq!(get(&server, MULTIVARIANT).status, 200);
    let (m, p) = part_of_uri(&pl.preload_hints[0]);
    fetch_playlist(&server, &format!("_HLS_msn={m}&_HLS_part={p}"));
    let seg = pl.segments.last().unwrap();
    assert_eq!(get(&server, &format!("{MEDIA_BASE}{}", seg.uri)).status, 200);

    let text = server.metrics_text();
    let value =
        |series: &str| metric_value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert!(value("tidecast_hls_parts_total") > 0.0);
    assert!(value("tidecast_hls_segments_total") > 0.0);
    assert!(value(r#"tidecast_hls_requests_total{kind="playlist",status="200"}"#) > 0.0);
    assert!(value(r#"tidecast_hls_requests_total{kind="blocking_playlist",status="200"}"#) > 0.0);
    assert!(value(r#"tidecast_hls_requests_total{kind="multivariant",status="200"}"#) > 0.0);
    assert!(value(r#"tidecast_hls_requests_total{kind="segment",status="200"}"#) > 0.0);
    assert!(value("tidecast_hls_block_wait_seconds_count") > 0.0);
    let parts = value("tidecast_hls_parts_total");
    assert_eq!(value("tidecast_hls_part_duration_seconds_count"), parts, "one duration per part");
    assert_eq!(value(r#"tidecast_hls_part_duration_seconds_bucket{le="+Inf"}"#), parts);
    // Parts are cut at 200 ms (the last of a segment may be shorter, none longer).
    assert_eq!(value(r#"tidecast_hls_part_duration_seconds_bucket{le="0.25"}"#), parts, "parts over 250 ms");
    assert!(
        value(r#"tidecast_hls_part_duration_seconds_bucket{le="0.15"}"#) < parts,
        "most parts are ~200 ms"
    );
    // The segment fetched above (before `text` was read) and the playlists.
    let seg_bytes = get(&server, &format!("{MEDIA_BASE}{}", seg.uri)).body.len() as f64;
    let egress = value(r#"tidecast_egress_bytes_total{protocol="hls"}"#);
    assert!(egress > seg_bytes, "HLS egress {egress} bytes, the segment alone is {seg_bytes}");

    // Viewers: distinct clients (address and User-Agent) that asked for a media playlist in
    // the last 10 s. This test's requests so far are one client; two players join.
    for agent in ["player-a", "player-b"] {
        let r = get_with(server.http, PLAYLIST, &[("User-Agent", agent)], Duration::from_secs(10));
        assert_eq!(r.status, 200);
    }
    let hls_viewers = || metric_value(&server.metrics_text(), r#"tidecast_viewers{protocol="hls"}"#);
    let counted = wait_until(Duration::from_secs(6), || hls_viewers() == Some(3.0));
    assert!(counted, "tidecast_viewers{{protocol=\"hls\"}} = {:?}, want 3", hls_viewers());
    // Nobody asks any more: they drop out after the idle time (10 s) and a sweep (2 s).
    let gone = wait_until(Duration::from_secs(20), || hls_viewers() == Some(0.0));
    assert!(gone, "HLS viewers still counted after they stopped: {:?}", hls_viewers());
}
