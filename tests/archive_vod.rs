//! Live-to-VOD with real clients: ffmpeg publishes over RTMP, the server records the session as
//! it streams, and ffprobe/ffmpeg play the recording over HTTP (`/vod/<id>/...`): while it
//! records (an EVENT playlist), after it ends (VOD), across a publisher's reconnect, and after
//! the server was killed with SIGKILL in the middle of a recording.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// (segments, total EXTINF seconds, discontinuities) of a media playlist.
fn playlist_facts(text: &str) -> (usize, f64, usize) {
    let durations: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse::<f64>().unwrap())
        .collect();
    (durations.len(), durations.iter().sum(), text.matches("#EXT-X-DISCONTINUITY\n").count())
}

/// ffmpeg decodes every frame of `url`; returns its error output (empty when clean) and the
/// duration ffprobe reports.
fn decode(url: &str) -> (String, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", url, "-f", "null", "-"])
        .output()
        .expect("running ffmpeg");
    assert!(out.status.success(), "ffmpeg could not decode {url}: {}", String::from_utf8_lossy(&out.stderr));
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url])
        .output()
        .expect("running ffprobe");
    let duration = String::from_utf8_lossy(&probe.stdout).trim().parse().unwrap_or(0.0);
    (String::from_utf8_lossy(&out.stderr).into_owned(), duration)
}

/// `curl` with a header, returning (status, body length, headers).
fn curl_range(url: &str, range: &str) -> (u16, usize, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "-H",
            &format!("Range: {range}"),
            url,
        ])
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = text.lines().last().unwrap_or_default().to_owned();
    let mut it = last.rsplit(' ');
    let size = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let status =
        it.next().and_then(|s| s.rsplit('\n').next()).and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    (status, size, text)
}

/// One response read off a raw connection: status, lower-cased headers, body.
fn read_response(conn: &mut std::io::BufReader<std::net::TcpStream>) -> (u16, String, Vec<u8>) {
    use std::io::{BufRead, Read};
    let mut headers = String::new();
    loop {
        let mut raw = Vec::new();
        conn.read_until(b'\n', &mut raw).expect("reading a response head");
        let line = String::from_utf8_lossy(&raw).into_owned();
        assert!(!line.is_empty(), "the connection closed mid-way; so far:\n{headers}");
        if line == "\r\n" {
            break;
        }
        headers.push_str(&line.to_ascii_lowercase());
    }
    let status = headers.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status =
        status.unwrap_or_else(|| panic!("not a response head: {:?}", &headers[..headers.len().min(300)]));
    let length: usize = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    // A 304 has no body whatever its Content-Length says (RFC 9110 §15.4.5).
    let mut body = vec![0; if status == 304 { 0 } else { length }];
    conn.read_exact(&mut body).expect("reading a response body");
    (status, headers, body)
}

/// Media bodies leave by `sendfile`: on one keep-alive connection, requests sent all at once
/// (pipelined) and read only after a pause (so the socket fills and sendfile must wait) get
/// their own answers in order, byte for byte the files on disk, with the other answers (ranges,
/// 416, a playlist, a 304) between them.
fn pipelined_media_requests(server: &TestServer, dir: &std::path::Path, segs: &[&str], playlist: &str) {
    use std::io::Write;
    assert!(segs.len() >= 3, "{segs:?}");
    let file = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let (a, b, c) = (file(segs[0]), file(segs[1]), file(segs[2]));
    // HEAD apart: actix-http reads HEAD-ness off the last request it parsed, so a HEAD
    // pipelined behind a GET takes that GET's body away (or gives the HEAD one), whatever the
    // handler.
    let etag = {
        let res = Command::new("curl")
            .args(["-s", "-I", &format!("{}/vod/1/source/{}", base(server), segs[2])])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&res.stdout).to_ascii_lowercase();
        assert!(
            head.starts_with("http/1.1 200") && head.contains(&format!("content-length: {}", c.len())),
            "{head}"
        );
        head.lines().find_map(|l| l.strip_prefix("etag:")).expect("an ETag").trim().to_owned()
    };
    let get =
        |path: &str, extra: &str| format!("GET /vod/1/source/{path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
    let requests = [
        get(segs[0], ""),
        get(segs[1], "Range: bytes=100-1099\r\n"),
        get("index.m3u8", ""),
        get(segs[0], "Range: bytes=999999999-\r\n"),
        get(segs[2], &format!("If-None-Match: {etag}\r\n")),
        get(segs[1], ""),
        get(segs[2], "Range: bytes=-500\r\n"),
    ]
    .concat();
    let stream = std::net::TcpStream::connect(server.http).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    (&stream).write_all(requests.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = std::io::BufReader::new(stream);

    let (status, headers, body) = read_response(&mut conn);
    assert_eq!((status, body.len()), (200, a.len()), "{headers}");
    assert!(body == a, "a whole segment is the file");
    let (status, headers, body) = read_response(&mut conn);
    assert_eq!(status, 206, "{headers}");
    assert!(headers.contains(&format!("content-range: bytes 100-1099/{}", b.len())), "{headers}");
    assert!(body == b[100..1100], "a range is the file's bytes");
    let (status, _, body) = read_response(&mut conn);
    assert_eq!((status, String::from_utf8(body).unwrap().as_str()), (200, playlist));
    let (status, headers, _) = read_response(&mut conn);
    assert_eq!(status, 416, "{headers}");
    let (status, headers, body) = read_response(&mut conn);
    assert!(status == 304 && body.is_empty(), "{headers}");
    let (status, _, body) = read_response(&mut conn);
    assert!(status == 200 && body == b, "the second whole segment");
    let (status, _, body) = read_response(&mut conn);
    assert!(status == 206 && body == c[c.len() - 500..], "a suffix range");
}

fn base(server: &TestServer) -> String {
    format!("http://{}", server.http)
}

#[test]
fn a_live_session_is_recorded_as_it_streams_and_plays_as_vod_after() {
    if !require_ffmpeg() || !require_tool_with("curl", "--version") {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "1s")]);
    let published = 20.0;
    let mut ffmpeg =
        ffmpeg_publish_pattern(&server.publish_url(&server.key), published as u32, "640x360", 60, &[]);

    // While it streams: the video exists (status live), its playlist is an EVENT playlist that
    // grows, and what it lists already plays.
    let v = wait_status(&server, 1, "live", Duration::from_secs(15));
    assert_eq!(v["source"], "live");
    assert_eq!(v["channel_name"], "main");
    let mut event = String::new();
    let grew = wait_until(Duration::from_secs(15), || {
        event = server.get("/vod/1/source/index.m3u8").body;
        playlist_facts(&event).0 >= 2
    });
    assert!(grew, "the EVENT playlist lists segments while recording:\n{event}");
    assert!(event.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !event.contains("#EXT-X-ENDLIST"), "{event}");
    let seg = event.lines().find(|l| l.starts_with("seg-")).unwrap().to_owned();
    let (status, size, headers) = curl_range(&format!("{}/vod/1/source/{seg}", base(&server)), "bytes=0-99");
    assert_eq!((status, size), (206, 100), "byte ranges on recorded segments:\n{headers}");
    assert!(
        headers.to_ascii_lowercase().contains("cache-control: public, max-age=31536000, immutable"),
        "{headers}"
    );
    let in_progress = server.get("/vod/1/source/seg-999999.m4s");
    assert_eq!(in_progress.status, 404, "a segment the journal does not list is not served");

    assert!(ffmpeg.wait_timeout(Duration::from_secs(30)).is_some(), "ffmpeg finished publishing");
    let v = wait_status(&server, 1, "ready", Duration::from_secs(20));
    let duration_ms = v["duration_ms"].as_i64().unwrap() as f64 / 1000.0;
    assert!((duration_ms - published).abs() <= 0.5, "the video lasts what was published: {duration_ms} s");
    assert_eq!(v["playback_url"], "/vod/1/index.m3u8", "a public video plays without a token");

    let multivariant = server.get("/vod/1/index.m3u8");
    assert_eq!(multivariant.status, 200);
    assert!(
        multivariant.body.contains("RESOLUTION=640x360") && multivariant.body.contains("source/index.m3u8"),
        "{}",
        multivariant.body
    );
    let vod = server.get("/vod/1/source/index.m3u8").body;
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
    let (segments, listed, discontinuities) = playlist_facts(&vod);
    assert!(segments >= 4 && discontinuities == 0, "{vod}");
    assert!((listed - published).abs() <= 0.5, "the VOD playlist lists {listed} s of {published} s:\n{vod}");
    assert!(vod.contains("#EXT-X-PROGRAM-DATE-TIME:"), "segments keep their dates");

    // ffprobe and ffmpeg play it over HTTP: the whole duration, every frame decoded cleanly.
    let (errors, probed) = decode(&format!("{}/vod/1/index.m3u8", base(&server)));
    assert!(errors.trim().is_empty(), "decoding the recording reported errors:\n{errors}");
    assert!((probed - published).abs() <= 0.5, "ffprobe's duration {probed} s, published {published} s");

    // The directory plays on its own too: the playlists were written beside the media.
    let dir = server.data_dir().join("archive/1");
    let on_disk = std::fs::read_to_string(dir.join("source/index.m3u8")).expect("the VOD playlist on disk");
    assert_eq!(on_disk, vod, "the file and the route say the same (public video: no token)");
    let (errors, _) = decode(dir.join("index.m3u8").to_str().unwrap());
    assert!(errors.trim().is_empty(), "{errors}");

    let segs: Vec<&str> = vod.lines().filter(|l| l.starts_with("seg-")).collect();
    pipelined_media_requests(&server, &dir.join("source"), &segs, &vod);

    let metrics = server.metrics_text();
    assert!(
        metric_value(&metrics, "tidecast_archive_bytes_total{backend=\"local\"}").unwrap_or(0.0) > 100_000.0
    );
    assert_eq!(metric_value(&metrics, "tidecast_archive_recordings_active"), Some(0.0));
    assert_eq!(metric_value(&metrics, "tidecast_archive_gaps_total"), Some(0.0));
}

#[test]
fn a_publisher_back_within_grace_continues_the_recording_and_one_after_grace_starts_a_new_one() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "4s")]);
    let url = server.publish_url(&server.key);
    let mut first = ffmpeg_publish_pattern(&url, 5, "640x360", 30, &[]);
    wait_status(&server, 1, "live", Duration::from_secs(15));
    // A viewer that stays connected across the reconnect: 200 video frames need both publishes
    // (the first has 150 at most).
    let rtmp = server.rtmp;
    let viewer = std::thread::spawn(move || {
        let mut p = RtmpPlayer::play(rtmp, "main", false, Duration::from_secs(10));
        p.read_video(200, Duration::from_secs(30))
    });
    assert!(first.wait_timeout(Duration::from_secs(20)).is_some());
    std::thread::sleep(Duration::from_millis(1000));
    let mut again = ffmpeg_publish_pattern(&url, 5, "640x360", 30, &[]);
    assert!(again.wait_timeout(Duration::from_secs(20)).is_some());
    let v = wait_status(&server, 1, "ready", Duration::from_secs(20));
    let vod = server.get("/vod/1/source/index.m3u8").body;
    let (_, listed, discontinuities) = playlist_facts(&vod);
    assert_eq!(discontinuities, 1, "one recording with one discontinuity at the reconnect:\n{vod}");
    assert!((9.0..=10.5).contains(&listed), "both publishes are in it: {listed} s\n{vod}");
    assert!(v["duration_ms"].as_i64().unwrap() >= 9_000, "{v}");
    let (errors, _) = decode(&format!("{}/vod/1/index.m3u8", base(&server)));
    assert!(errors.trim().is_empty(), "{errors}");
    assert!(video(&server, 2).is_none(), "no second video within grace");
    assert!(viewer.join().unwrap(), "the RTMP viewer stayed connected across the reconnect");

    // After the grace period a new publish is a new live session and a new video.
    let mut third = ffmpeg_publish_pattern(&url, 3, "640x360", 30, &[]);
    assert!(third.wait_timeout(Duration::from_secs(20)).is_some());
    let v2 = wait_status(&server, 2, "ready", Duration::from_secs(20));
    assert!(v2["duration_ms"].as_i64().unwrap() >= 2_500, "{v2}");
}

#[test]
fn a_recording_killed_mid_stream_stays_playable_and_is_finished_on_the_next_start() {
    if !require_ffmpeg() {
        return;
    }
    let mut server = TestServer::start(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "1s")]);
    // Several crashes at different points of a segment: 2 s segments, killed 0.0 to 1.8 s
    // after the EVENT playlist grew.
    for (round, extra_ms) in [0u64, 700, 1_800].into_iter().enumerate() {
        let id = round as i64 + 1;
        let mut ffmpeg = ffmpeg_publish_pattern(&server.publish_url(&server.key), 30, "640x360", 30, &[]);
        let path = format!("/vod/{id}/source/index.m3u8");
        let mut before = String::new();
        let grew = wait_until(Duration::from_secs(20), || {
            before = server.get(&path).body;
            playlist_facts(&before).0 >= 3
        });
        assert!(grew, "round {round}: recording\n{}", log_tail(&server, 40));
        std::thread::sleep(Duration::from_millis(extra_ms));
        let killed_at = Instant::now();
        server.kill9();
        ffmpeg.kill();
        let (_, listed_before, _) = playlist_facts(&before);

        server.start_again();
        let v = wait_status(&server, id, "ready", Duration::from_secs(20));
        let vod = server.get(&path).body;
        let (_, listed_after, _) = playlist_facts(&vod);
        assert!(vod.ends_with("#EXT-X-ENDLIST\n"), "round {round}: finished:\n{vod}");
        assert!(
            listed_after >= listed_before - 0.001,
            "round {round}: nothing listed before the crash is lost ({listed_before} s -> {listed_after} s)"
        );
        let (errors, probed) = decode(&format!("{}/vod/{id}/index.m3u8", base(&server)));
        assert!(errors.trim().is_empty(), "round {round}: decoding the recovered recording:\n{errors}");
        assert!(
            (probed - listed_after).abs() <= 0.5,
            "round {round}: {probed} s probed, {listed_after} s listed"
        );
        assert!(v["duration_ms"].as_i64().unwrap() as f64 / 1000.0 >= listed_before - 0.001, "{v}");
        assert!(killed_at.elapsed() < Duration::from_secs(60));
        assert!(
            server.metric("tidecast_archive_recoveries_total") >= 1.0,
            "round {round}: the recovery is counted"
        );
    }
}
