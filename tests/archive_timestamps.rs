//! Publisher timestamps that lie: a jump of an hour forward, ten seconds back, the RTMP 32-bit
//! timestamp wrap, and repeated or non-monotonic decode times. None of them may corrupt the live
//! playlist or the recording (the archive issue's "crafted FLV fixtures").
//!
//! The fixture is an FLV that ffmpeg makes (H.264 without B-frames + AAC test pattern). A small
//! RTMP publisher over rml_rtmp's `ClientSession` sends its tags paced in real time by their
//! original timestamps, each tag's timestamp rewritten by the scenario. While it publishes, every
//! reload of the live media playlist must validate (and follow the previous one); after it, the
//! recording must become `ready` with sane segment durations (no hour-long segment, nothing zero
//! or negative, the listed total close to what was really published) and decode cleanly in
//! ffmpeg over HTTP.
//!
//! The server folds a jump into an offset (`protocols::rtmp::media`): the timeline goes on one
//! frame after the last, without a discontinuity, so the recording lists what was published.
//! Left alone: a *key frame* stamped 100 ms early can land before the segment target and miss
//! its cut, making one segment a GOP longer than the target (the segmenter cuts at the first
//! key frame at or after the target, `media::segmenter`), which the validator refuses as
//! `extinf-over-target`; the scenarios move non-key frames.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tidecast::protocols::hls::{check_reload_continuity, parse_media_playlist, ParsedMediaPlaylist};

/// Seconds of media in the fixture.
const FIXTURE_SECS: u32 = 12;
/// Where the scenarios put their jumps (original timeline, ms): mid-GOP (key frames every 1 s).
const JUMP_AT_MS: u32 = 6_500;
/// The VOD's listed total may differ from the published media by this much (a GOP dropped at a
/// jump, the last frame's duration, rounding).
const TOTAL_SLACK_SECS: f64 = 1.5;

// ---------------------------------------------------------------------------------------------
// FLV file reader (Adobe FLV file format spec v10.1, annex E)

const TAG_AUDIO: u8 = 8;
const TAG_VIDEO: u8 = 9;

/// One FLV tag: its type (8 audio, 9 video, 18 script data), timestamp and body.
#[derive(Clone, Debug)]
struct FlvTag {
    kind: u8,
    timestamp_ms: u32,
    body: Bytes,
}

/// The tags of an FLV file: a 9-byte (or longer, `DataOffset`) header, `PreviousTagSize0`, then
/// tags of an 11-byte header (type with the filter bit, 24-bit size, 24-bit timestamp plus an
/// 8-bit extension holding bits 24..31, 24-bit stream id), the body and a 4-byte previous tag
/// size.
fn read_flv(file: &[u8]) -> Vec<FlvTag> {
    assert!(file.len() >= 13 && &file[..3] == b"FLV", "not an FLV file");
    let data_offset = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize;
    let mut at = data_offset + 4;
    let mut tags = Vec::new();
    while at + 11 <= file.len() {
        let h = &file[at..at + 11];
        let kind = h[0] & 0x1f;
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let timestamp_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body_at = at + 11;
        assert!(body_at + size + 4 <= file.len(), "truncated tag at byte {at}");
        let prev = u32::from_be_bytes(file[body_at + size..body_at + size + 4].try_into().unwrap());
        assert_eq!(prev as usize, size + 11, "PreviousTagSize after the tag at byte {at}");
        tags.push(FlvTag {
            kind,
            timestamp_ms,
            body: Bytes::copy_from_slice(&file[body_at..body_at + size]),
        });
        at = body_at + size + 4;
    }
    tags
}

/// The fixture, made once per test binary: 640x360 30 fps H.264 (a key frame a second, no
/// B-frames) and 48 kHz AAC, `FIXTURE_SECS` long.
fn fixture() -> &'static [FlvTag] {
    static TAGS: OnceLock<Vec<FlvTag>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fixture.flv");
        let secs = FIXTURE_SECS.to_string();
        let ran = run_tool(
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
                "-t",
                &secs,
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-pix_fmt",
                "yuv420p",
                "-g",
                "30",
                "-bf",
                "0",
                "-c:a",
                "aac",
                "-b:a",
                "96k",
                "-f",
                "flv",
                path.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        assert!(ran.status.success(), "ffmpeg could not make the FLV fixture: {}", ran.stderr);
        let tags = read_flv(&std::fs::read(&path).unwrap());
        assert!(tags.iter().filter(|t| t.kind == TAG_VIDEO).count() >= (FIXTURE_SECS * 30) as usize);
        tags
    })
}

// ---------------------------------------------------------------------------------------------
// Scenarios

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// +1 h on every track from `JUMP_AT_MS`.
    ForwardHour,
    /// Starts at 20 s; -10 s on every track from `JUMP_AT_MS`.
    BackTenSeconds,
    /// Starts 5 s before 2^32 ms and crosses the wrap, audio 40 ms behind video.
    Wrap32,
    /// A few frames of each track repeat their predecessor's timestamp, a few come 100 ms before
    /// it.
    RepeatedAndNonMonotonic,
}

/// Rewrites a tag stream's timestamps for a scenario. `nth` counts media frames per track
/// (sequence headers excluded); `prev` is the last rewritten timestamp of the track.
struct Rewriter {
    scenario: Scenario,
    nth: [u32; 2],
    prev: [Option<u32>; 2],
}

impl Rewriter {
    fn new(scenario: Scenario) -> Self {
        Rewriter { scenario, nth: [0; 2], prev: [None; 2] }
    }

    fn rewrite(&mut self, tag: &FlvTag) -> u32 {
        let track = usize::from(tag.kind == TAG_VIDEO);
        // Sequence headers: AVCPacketType / AACPacketType 0.
        let is_config = tag.body.len() >= 2 && tag.body[1] == 0;
        let n = self.nth[track];
        if !is_config {
            self.nth[track] += 1;
        }
        let t = tag.timestamp_ms;
        let out = match self.scenario {
            Scenario::ForwardHour if t >= JUMP_AT_MS => t + 3_600_000,
            Scenario::ForwardHour => t,
            Scenario::BackTenSeconds if t >= JUMP_AT_MS => t + 10_000,
            Scenario::BackTenSeconds => t + 20_000,
            // Audio stamped 40 ms behind video, as encoders with their own audio clock send it:
            // the first audio tags after video crossed the wrap are still before it.
            Scenario::Wrap32 if track == 0 => t.wrapping_add(u32::MAX - 5_000 + 1 - 40),
            Scenario::Wrap32 => t.wrapping_add(u32::MAX - 5_000 + 1),
            Scenario::RepeatedAndNonMonotonic => {
                let prev = self.prev[track];
                // Video: 30 fps, frames 90..302 are 3..10 s, none of the early ones a key frame
                // (a key frame 100 ms early can miss its segment cut: see the module docs);
                // audio: ~47 frames a second.
                let (repeat, earlier): (&[u32], &[u32]) = if track == 1 {
                    (&[90, 181, 272], &[125, 211, 302])
                } else {
                    (&[100, 200, 300], &[150, 250, 350])
                };
                match prev {
                    Some(p) if !is_config && repeat.contains(&n) => p,
                    Some(p) if !is_config && earlier.contains(&n) => p - 100,
                    _ => t,
                }
            }
        };
        self.prev[track] = Some(out);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// An RTMP publisher over rml_rtmp

struct Publisher {
    stream: TcpStream,
    session: ClientSession,
}

impl Publisher {
    /// Handshake, `connect` to app `live`, `publish` `key`; returns once publishing is accepted.
    fn start(server: &TestServer, key: &str) -> Publisher {
        let mut stream = tcp_connect(server.rtmp, false);
        let mut pending = rtmp_handshake(&mut stream);
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://{}/live", server.rtmp));
        let (session, initial) = ClientSession::new(config).unwrap();
        let mut p = Publisher { stream, session };
        p.send(initial);
        let r = p.session.request_connection("live".to_string()).unwrap();
        p.send(vec![r]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if !pending.is_empty() {
                let results = p.session.handle_input(&pending).expect("valid RTMP from the server");
                pending.clear();
                for r in results {
                    match r {
                        ClientSessionResult::OutboundResponse(packet) => {
                            p.stream.write_all(&packet.bytes).unwrap()
                        }
                        ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                            let r = p.session.request_publishing(key.to_string(), PublishRequestType::Live);
                            p.send(vec![r.unwrap()]);
                        }
                        ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                            return p;
                        }
                        ClientSessionResult::RaisedEvent(ev) => {
                            if let ClientSessionEvent::ConnectionRequestRejected { description } = ev {
                                panic!("connect rejected: {description}");
                            }
                        }
                        ClientSessionResult::UnhandleableMessageReceived(_) => {}
                    }
                }
            }
            assert!(Instant::now() < deadline, "publish not accepted within 10 s:\n{}", server.logs());
            let n = p.stream.read(&mut buf).expect("read from the server");
            assert!(n > 0, "server closed before accepting the publish:\n{}", server.logs());
            pending.extend_from_slice(&buf[..n]);
        }
    }

    fn send(&mut self, results: Vec<ClientSessionResult>) {
        for r in results {
            if let ClientSessionResult::OutboundResponse(packet) = r {
                self.stream.write_all(&packet.bytes).expect("write to the server");
            }
        }
    }

    /// Send `tags` paced in real time by their original timestamps, each stamped by `rewriter`;
    /// then stop publishing and close. Returns the wall time it took.
    fn publish(mut self, tags: &[FlvTag], mut rewriter: Rewriter) -> Duration {
        // Nothing the server sends matters after the publish was accepted (acknowledgements,
        // pings); drain it so its writes never stall.
        let mut drain = self.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
        });
        let started = Instant::now();
        let first = tags.first().map_or(0, |t| t.timestamp_ms);
        for tag in tags {
            if tag.kind != TAG_AUDIO && tag.kind != TAG_VIDEO {
                continue;
            }
            let due = started + Duration::from_millis(u64::from(tag.timestamp_ms - first));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let ts = RtmpTimestamp::new(rewriter.rewrite(tag));
            let r = if tag.kind == TAG_VIDEO {
                self.session.publish_video_data(tag.body.clone(), ts, false)
            } else {
                self.session.publish_audio_data(tag.body.clone(), ts, false)
            };
            self.send(vec![r.unwrap()]);
        }
        let elapsed = started.elapsed();
        if let Ok(r) = self.session.stop_publishing() {
            self.send(r);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        elapsed
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

/// What the live playlist looked like over the publish.
#[derive(Debug, Default)]
struct LiveFacts {
    reloads: usize,
    max_segment: f64,
    discontinuities: u64,
    target: u64,
}

/// Reload the live media playlist every 400 ms until `done`; each reload must validate and
/// follow the previous one (RFC 8216bis §6.2.1/§6.2.2 as `tidecast::protocols::hls` checks them).
fn watch_live(server: &TestServer, done: &std::sync::atomic::AtomicBool) -> LiveFacts {
    let mut facts = LiveFacts::default();
    let mut prev: Option<ParsedMediaPlaylist> = None;
    while !done.load(std::sync::atomic::Ordering::SeqCst) {
        let r = server.get("/live/main/source/index.m3u8");
        if r.status == 200 {
            let pl = parse_media_playlist(&r.body)
                .unwrap_or_else(|e| panic!("the live playlist is invalid: {e:#?}\n{}", r.body));
            if let Some(p) = &prev {
                check_reload_continuity(p, &pl)
                    .unwrap_or_else(|e| panic!("reload broke continuity: {e:#?}\n{}", r.body));
            }
            facts.reloads += 1;
            facts.target = pl.target_duration.unwrap_or(0);
            for s in &pl.segments {
                facts.max_segment = facts.max_segment.max(s.duration);
            }
            let discontinuities =
                pl.discontinuity_sequence + pl.segments.iter().filter(|s| s.discontinuity).count() as u64;
            facts.discontinuities = facts.discontinuities.max(discontinuities);
            prev = Some(pl);
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    facts
}

/// Publish the fixture under `scenario` and check the live playlist and the recording.
fn run(scenario: Scenario) {
    if !require_ffmpeg() {
        return;
    }
    let tags = fixture();
    let server = TestServer::start(&[("TIDECAST__CHANNEL__RECONNECT_GRACE", "1s")]);
    let publisher = Publisher::start(&server, &server.key);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (wall, live) = std::thread::scope(|s| {
        let publishing = s.spawn(|| {
            let wall = publisher.publish(tags, Rewriter::new(scenario));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            wall
        });
        let live = watch_live(&server, &done);
        (publishing.join().expect("the publisher"), live)
    });
    eprintln!("{scenario:?}: published for {:.2} s; live playlist: {live:?}", wall.as_secs_f64());
    for line in server.logs().lines().filter(|l| {
        (l.contains("WARN") || l.contains("ERROR") || l.contains("jumped")) && !l.contains("auth::keys")
    }) {
        eprintln!("{scenario:?}: server: {line}");
    }
    let jumped = server.logs().contains("publisher timestamps jumped");
    let jumps_expected = matches!(scenario, Scenario::ForwardHour | Scenario::BackTenSeconds);
    assert_eq!(jumped, jumps_expected, "{scenario:?}: the jump was (not) folded:\n{}", log_tail(&server, 60));
    assert!(live.reloads >= 10, "{scenario:?}: the live playlist was served {} times", live.reloads);
    assert!(
        live.max_segment <= 2.0 * live.target as f64,
        "{scenario:?}: a live segment of {} s (target {} s)",
        live.max_segment,
        live.target
    );

    // The recording finishes.
    let mut last = None;
    let ready = wait_until(Duration::from_secs(30), || {
        last = video(&server, 1);
        last.as_ref().is_some_and(|v| v["status"] == "ready")
    });
    assert!(ready, "{scenario:?}: video 1 not ready: {last:?}\n{}", log_tail(&server, 60));
    assert!(video(&server, 2).is_none(), "{scenario:?}: one publish is one video");
    let v = last.unwrap();

    // Its VOD playlist: every segment positive and within twice the target, the total what was
    // published.
    let vod = server.get("/vod/1/source/index.m3u8").body;
    assert!(vod.contains("#EXT-X-PLAYLIST-TYPE:VOD") && vod.ends_with("#EXT-X-ENDLIST\n"), "{vod}");
    let target: f64 = vod
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-TARGETDURATION:"))
        .expect("a target duration")
        .parse()
        .unwrap();
    let durations: Vec<f64> = vod
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|d| d.trim_end_matches(',').parse::<f64>().unwrap())
        .collect();
    let total: f64 = durations.iter().sum();
    let discontinuities = vod.matches("#EXT-X-DISCONTINUITY\n").count();
    let published = f64::from(FIXTURE_SECS);
    eprintln!(
        "{scenario:?}: VOD target {target} s, {} segments, total {total:.3} s, {discontinuities} \
         discontinuities, durations {durations:?}; duration_ms {}",
        durations.len(),
        v["duration_ms"]
    );
    assert!(durations.len() >= 4, "{scenario:?}:\n{vod}");
    for d in &durations {
        assert!(
            *d > 0.0 && *d <= 2.0 * target,
            "{scenario:?}: a segment of {d} s (target {target} s):\n{vod}"
        );
    }
    assert!(
        (total - published).abs() <= TOTAL_SLACK_SECS,
        "{scenario:?}: the VOD lists {total} s of {published} s published:\n{vod}"
    );
    let duration_ms = v["duration_ms"].as_i64().unwrap_or(-1) as f64 / 1000.0;
    assert!(
        (duration_ms - published).abs() <= TOTAL_SLACK_SECS,
        "{scenario:?}: the video says it lasts {duration_ms} s of {published} s: {v}"
    );

    // ffmpeg decodes all of it over HTTP.
    let url = format!("http://{}/vod/1/index.m3u8", server.http);
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", &url, "-f", "null", "-"])
        .output()
        .expect("running ffmpeg");
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && errors.trim().is_empty(), "{scenario:?}: decoding {url}:\n{errors}");

    // The channel survived: no panic in the log.
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "{scenario:?}: a panic:\n{}", log_tail(&server, 60));
}

#[test]
fn a_forward_jump_of_an_hour_does_not_make_an_hour_of_recording() {
    run(Scenario::ForwardHour);
}

#[test]
fn a_backward_jump_of_ten_seconds_keeps_the_timeline_going() {
    run(Scenario::BackTenSeconds);
}

#[test]
fn the_rtmp_32_bit_timestamp_wrap_is_crossed_cleanly() {
    run(Scenario::Wrap32);
}

#[test]
fn repeated_and_non_monotonic_timestamps_are_tolerated() {
    run(Scenario::RepeatedAndNonMonotonic);
}
