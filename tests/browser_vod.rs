//! Recordings and DVR with real players: the `tidecast` binary records what ffmpeg publishes over
//! RTMP, and real players in Debian's headless Chromium (playwright-core, players from
//! `tests/browser/node_modules`) play it:
//!
//! - dash.js plays a finished recording's MPD (`/vod/<id>/manifest.mpd`, `tests/browser/dash.mjs`)
//!   to the end, also across the two periods of a recording whose publisher reconnected within
//!   the grace period;
//! - hls.js plays the same recording start to end on its watch page (`/watch/v/<id>`,
//!   `tests/browser/vod.mjs`);
//! - the live watch page (`/watch/main`, `tests/browser/dvr.mjs`) rewinds into the DVR playlist
//!   (the recording so far) and comes back to low-latency live.
//!
//! Needs ffmpeg, node, /usr/bin/chromium and `npm ci` in tests/browser (`bash tests/run.sh`
//! installs them); without them each test fails in CI and prints a loud SKIP elsewhere.

mod common;

use std::time::{Duration, Instant};

use common::browser::*;
use common::*;

/// Seconds of the single-session recording.
const PUBLISH_SECONDS: u32 = 12;
/// ffmpeg's test pattern rate (`ffmpeg_publish_pattern`).
const FPS: f64 = 30.0;
/// Players must decode at least this share of the frames the duration holds.
const MIN_FRAME_SHARE: f64 = 0.9;
/// How close currentTime must come to the duration, and the duration to what was published.
const TIME_TOLERANCE_S: f64 = 0.5;
/// Upper bound for a whole dash.mjs/vod.mjs run that plays ~12 s (browser start, start-up,
/// playback, shutdown).
const PLAYER_TIMEOUT: Duration = Duration::from_secs(75);

/// A server whose watch pages load hls.js from `tests/browser/node_modules` (at `/static/`), with
/// the given reconnect grace (how long after the publisher leaves a recording becomes `ready`).
fn start_server(grace: &str) -> TestServer {
    let static_dir = hlsjs_dist_dir();
    let static_dir = static_dir.to_str().expect("UTF-8 repository path");
    let server = TestServer::start(&[
        ("TIDECAST__HTTP__STATIC_DIR", static_dir),
        ("TIDECAST__HTTP__HLSJS_URL", "/static/hls.min.js"),
        ("TIDECAST__CHANNEL__RECONNECT_GRACE", grace),
    ]);
    assert_eq!(server.get("/static/hls.min.js").status, 200, "hls.js is not served from /static/");
    server
}

/// The video's duration in seconds from the API.
fn api_duration_s(v: &serde_json::Value) -> f64 {
    v["duration_ms"].as_f64().unwrap_or_else(|| panic!("no duration_ms: {v}")) / 1000.0
}

/// Failed checks, collected so one run reports every player's problems at once.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    /// What a player must have done with a finished recording of `expected_s` seconds: started,
    /// ended, reached the end, decoded nearly every frame and some audio, without errors.
    /// `who` names the player; the report's field names are dash.mjs's and vod.mjs's (shared).
    fn played_to_the_end(&mut self, who: &str, report: &serde_json::Value, expected_s: f64) {
        let reached = f64_at(report, "/current_time_reached");
        let duration = f64_at(report, "/duration");
        let frames = f64_at(report, "/video_frames_decoded");
        let audio = f64_at(report, "/audio_bytes_decoded");
        self.check(report.get("error").is_none(), format!("{who}: error {}", report["error"]));
        self.check(report["started"] == true, format!("{who}: never started"));
        self.check(report["ended"] == true, format!("{who}: no `ended` event"));
        self.check(
            (duration - expected_s).abs() <= TIME_TOLERANCE_S,
            format!("{who}: duration {duration} s, expected {expected_s} ± {TIME_TOLERANCE_S} s"),
        );
        self.check(
            reached >= duration - TIME_TOLERANCE_S,
            format!("{who}: currentTime reached {reached} s of {duration} s"),
        );
        let min_frames = MIN_FRAME_SHARE * FPS * expected_s;
        self.check(
            frames >= min_frames,
            format!("{who}: decoded {frames} video frames, expected >= {min_frames:.0}"),
        );
        // Chromium counts the bytes handed to its audio decoder; AAC at ffmpeg's default
        // ~128 kb/s is ~16 kB a second. A fraction of that catches an MPD/playlist whose audio is
        // missing or undecodable (0) without judging the encoder's bitrate.
        let min_audio = 2_000.0 * expected_s;
        self.check(
            audio >= min_audio,
            format!("{who}: decoded {audio} audio bytes, expected >= {min_audio:.0}"),
        );
        self.check(
            report["errors"].as_array().is_some_and(|e| e.is_empty()),
            format!("{who}: player errors {}", report["errors"]),
        );
        self.check(
            f64_at(report, "/requests_not_ok") == 0.0,
            format!("{who}: HTTP errors in {}", report["requests"]),
        );
    }

    fn assert_ok(&self, context: impl FnOnce() -> String) {
        assert!(self.0.is_empty(), "{}\n\n{}", self.0.join("\n"), context());
    }
}

/// Run `node tests/browser/<script> <url>`, returning its JSON report and stderr.
fn play(script: &str, url: &str) -> (serde_json::Value, String) {
    run_node_report(script, &[url], PLAYER_TIMEOUT)
}

/// One-line summary of a dash.mjs / vod.mjs report, printed for the run's record.
fn summary(who: &str, r: &serde_json::Value) -> String {
    format!(
        "{who}: ended {} reached {} of {} s; frames {} (dropped {}); audio {} B; started in {} ms; \
         waiting {}; period switches {}; discontinuities crossed {}; errors {}",
        r["ended"],
        r["current_time_reached"],
        r["duration"],
        r["video_frames_decoded"],
        r["video_frames_dropped"],
        r["audio_bytes_decoded"],
        r["startup_ms"],
        r["waiting_events"],
        r["period_switches"],
        r["discontinuities_crossed"],
        r["errors"],
    )
}

/// Strip a report's long per-request lists for failure messages.
fn brief(r: &serde_json::Value) -> serde_json::Value {
    let mut r = r.clone();
    if let Some(o) = r.as_object_mut() {
        for long in ["requests", "fragments"] {
            if let Some(list) = o.get_mut(long).and_then(|v| v.as_array_mut()) {
                let n = list.len();
                if n > 12 {
                    list.drain(6..n - 6);
                    list.insert(6, format!("... {} more", n - 12).into());
                }
            }
        }
    }
    r
}

#[test]
fn a_finished_recording_plays_to_the_end_in_dash_js_and_hls_js() {
    if !require_ffmpeg() || !require_browser_player() {
        return;
    }
    let server = start_server("1s");
    let mut publisher =
        ffmpeg_publish_pattern(&server.publish_url(&server.key), PUBLISH_SECONDS, "640x360", 60, &[]);
    wait_status(&server, 1, "live", Duration::from_secs(20));
    let exit = publisher.wait_timeout(Duration::from_secs(PUBLISH_SECONDS as u64 + 20));
    assert!(exit.is_some_and(|s| s.success()), "ffmpeg: {exit:?}\n{}", publisher.stderr());
    let v = wait_status(&server, 1, "ready", Duration::from_secs(20));
    let api_s = api_duration_s(&v);
    let dash_url = v["dash_url"].as_str().unwrap_or_else(|| panic!("no dash_url: {v}"));
    let mpd = server.get(dash_url);
    assert_eq!(mpd.status, 200, "{dash_url}: {}", mpd.body);
    assert!(mpd.body.contains("mp4a"), "the MPD names no AAC audio:\n{}", mpd.body);

    let (dash, dash_log) = play("dash.mjs", &format!("http://{}{dash_url}", server.http));
    eprintln!("{}", summary("dash.js", &dash));
    let (hls, hls_log) = play("vod.mjs", &format!("http://{}/watch/v/1", server.http));
    eprintln!("{}", summary("hls.js", &hls));
    eprintln!("published {PUBLISH_SECONDS} s; API duration {api_s} s");

    let mut checks = Checks::default();
    checks.check(
        (api_s - PUBLISH_SECONDS as f64).abs() <= TIME_TOLERANCE_S,
        format!("API duration {api_s} s for {PUBLISH_SECONDS} s published"),
    );
    checks.played_to_the_end("dash.js", &dash, PUBLISH_SECONDS as f64);
    // dash.js reports PERIOD_SWITCH_COMPLETED for the first period too: one entry, one period.
    checks.check(
        dash["period_switches"].as_array().is_some_and(|p| p.len() == 1),
        format!("dash.js: a single-session recording played as periods {}", dash["period_switches"]),
    );
    checks.played_to_the_end("hls.js", &hls, PUBLISH_SECONDS as f64);
    checks.check(hls["mode"] == "vod", format!("hls.js: the page's mode is {}", hls["mode"]));
    checks.check(
        hls["level"]["type"] == "VOD" && hls["level"]["live"] == false,
        format!("hls.js: a finished recording's media playlist is not VOD: {}", hls["level"]),
    );
    checks.assert_ok(|| {
        format!(
            "video: {v}\n\ndash.mjs: {:#}\ndash.mjs stderr:\n{dash_log}\n\nvod.mjs: {:#}\nvod.mjs stderr:\n{hls_log}\n\nMPD:\n{}\n\nserver log (tail):\n{}",
            brief(&dash),
            brief(&hls),
            mpd.body,
            log_tail(&server, 40)
        )
    });
}

#[test]
fn dash_js_plays_a_reconnected_recording_across_its_two_periods() {
    if !require_ffmpeg() || !require_browser_player() {
        return;
    }
    const EACH_SECONDS: u32 = 6;
    let server = start_server("4s");
    let url = server.publish_url(&server.key);
    let mut first = ffmpeg_publish_pattern(&url, EACH_SECONDS, "640x360", 60, &[]);
    wait_status(&server, 1, "live", Duration::from_secs(20));
    let exit = first.wait_timeout(Duration::from_secs(EACH_SECONDS as u64 + 20));
    assert!(exit.is_some_and(|s| s.success()), "first ffmpeg: {exit:?}\n{}", first.stderr());
    std::thread::sleep(Duration::from_secs(1));
    let mut again = ffmpeg_publish_pattern(&url, EACH_SECONDS, "640x360", 60, &[]);
    let exit = again.wait_timeout(Duration::from_secs(EACH_SECONDS as u64 + 20));
    assert!(exit.is_some_and(|s| s.success()), "second ffmpeg: {exit:?}\n{}", again.stderr());
    let v = wait_status(&server, 1, "ready", Duration::from_secs(20));
    assert!(video(&server, 2).is_none(), "a reconnect within grace started a second video");
    let api_s = api_duration_s(&v);
    let dash_url = v["dash_url"].as_str().unwrap_or_else(|| panic!("no dash_url: {v}"));
    let mpd = server.get(dash_url);
    assert_eq!(mpd.status, 200, "{dash_url}: {}", mpd.body);
    let periods = mpd.body.matches("<Period").count();
    assert_eq!(periods, 2, "one period per publish, split at the discontinuity:\n{}", mpd.body);

    let (dash, dash_log) = play("dash.mjs", &format!("http://{}{dash_url}", server.http));
    eprintln!("{}", summary("dash.js (2 periods)", &dash));
    eprintln!("published 2 x {EACH_SECONDS} s; API duration {api_s} s");

    let mut checks = Checks::default();
    // Both publishes are in it; a reconnect costs at most the frames before the second
    // publisher's first key frame and the first one's unfinished tail.
    let published = 2.0 * EACH_SECONDS as f64;
    checks.check(
        api_s >= published - 2.0 && api_s <= published + TIME_TOLERANCE_S,
        format!("API duration {api_s} s for 2 x {EACH_SECONDS} s published"),
    );
    // The player's duration is the recording's (the API's), which the check above ties to
    // what was published.
    checks.played_to_the_end("dash.js", &dash, api_s);
    // PERIOD_SWITCH_COMPLETED fires for the first period too: both periods, in order.
    checks.check(
        dash["period_switches"].as_array().is_some_and(|p| p.len() == 2 && p[0] != p[1]),
        format!("dash.js: expected to play two periods, played {}", dash["period_switches"]),
    );
    checks.assert_ok(|| {
        format!(
            "video: {v}\n\ndash.mjs: {:#}\ndash.mjs stderr:\n{dash_log}\n\nMPD:\n{}\n\nserver log (tail):\n{}",
            brief(&dash),
            mpd.body,
            log_tail(&server, 40)
        )
    });
}

#[test]
fn the_watch_page_rewinds_into_the_dvr_and_comes_back_to_live() {
    if !require_ffmpeg() || !require_browser_player() {
        return;
    }
    /// Live seconds before the page opens: the DVR then holds more than the 30 s Rewind goes back.
    const LIVE_BEFORE_S: u64 = 25;
    const DVR_SECONDS: u32 = 8;
    /// Rewind must put the viewer at least this far behind live.
    const MIN_BEHIND_S: f64 = 20.0;
    /// Back to live: hls.js's latency must fall below this within BACK_SECONDS.
    const MAX_LIVE_LATENCY_S: f64 = 3.0;
    const BACK_SECONDS: u32 = 15;
    let server = start_server("1s");
    // Long enough for the whole run; the publisher is killed when the test ends.
    let mut publisher = ffmpeg_publish_pattern(&server.publish_url(&server.key), 120, "640x360", 60, &[]);
    server.wait_live(Duration::from_secs(20));
    let live_at = Instant::now();
    wait_status(&server, 1, "live", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(LIVE_BEFORE_S).saturating_sub(live_at.elapsed()));
    let dvr = server.get("/live/main/dvr.m3u8");
    assert_eq!(dvr.status, 200, "/live/main/dvr.m3u8: {}", dvr.body);

    let (report, player_log) = run_node_report(
        "dvr.mjs",
        &[
            &format!("http://{}/watch/main", server.http),
            "--dvr-seconds",
            &DVR_SECONDS.to_string(),
            "--back-seconds",
            &BACK_SECONDS.to_string(),
            "--live-latency",
            &MAX_LIVE_LATENCY_S.to_string(),
        ],
        Duration::from_secs(120),
    );
    let publisher_alive = publisher.is_running();
    let (d, p, b) = (&report["dvr"], &report["dvr"]["playing"], &report["back"]);
    eprintln!(
        "DVR: live before rewind: latency {} s; rewind playing after {} s; in DVR: modes {} playlists {} \
         advanced {} s, seekable span {} s, behind live (seekable) {} s, (PDT) {} s; back to live: \
         latency < {MAX_LIVE_LATENCY_S} s after {} s, latency {}; errors {} (fatal {})",
        report["live"]["latency_s"],
        d["playing_after_s"],
        d["modes"],
        d["playlists"],
        p["current_time_advanced_s"],
        p["seekable_span_max_s"],
        p["seekable_behind_s"],
        p["pdt_behind_s"],
        b["latency_below_bound_after_s"],
        b["latency_s"],
        report["errors_total"],
        report["errors_fatal"],
    );

    let mut checks = Checks::default();
    checks.check(report.get("error").is_none(), format!("dvr.mjs: error {}", report["error"]));
    checks.check(publisher_alive, "the publisher ended before the player did".to_string());
    checks.check(
        report["live"]["modes"] == serde_json::json!(["live"]),
        format!("before Rewind the page was not (only) live: {}", report["live"]["modes"]),
    );
    // Rewind: DVR mode for good (the page falls back to live when DVR fails), on the DVR
    // playlist, playing, with the seek bar reaching back.
    checks.check(!d["playing_after_s"].is_null(), "DVR playback never moved after Rewind".to_string());
    checks.check(
        p["modes"] == serde_json::json!(["dvr"]),
        format!("once playing after Rewind the page was not (only) in DVR mode: {}", p["modes"]),
    );
    checks.check(
        p["playlists"].as_array().is_some_and(|l| {
            !l.is_empty() && l.iter().all(|u| u.as_str().is_some_and(|u| u.ends_with("/dvr.m3u8")))
        }),
        format!("the DVR player did not play the DVR playlist: {}", p["playlists"]),
    );
    checks.check(
        f64_at(p, "/current_time_advanced_s") >= DVR_SECONDS as f64 * 0.7,
        format!("DVR playback advanced {} s in {} s", p["current_time_advanced_s"], p["wall_s"]),
    );
    checks.check(
        f64_at(p, "/seekable_span_max_s") >= MIN_BEHIND_S,
        format!("the DVR seekable range spans {} s, expected >= {MIN_BEHIND_S}", p["seekable_span_max_s"]),
    );
    // How far behind live the viewer is: the program date time on screen against the wall
    // clock when hls.js knows it, else the seekable range's end (the DVR playlist's newest
    // complete segment, itself behind live: a lower bound).
    // Judged at the end of the DVR phase: the page may seek back after hls.js started.
    let pdt = f64_at(p, "/pdt_behind_s/last");
    let behind = if pdt.is_finite() { pdt } else { f64_at(p, "/seekable_behind_s/last") };
    checks.check(
        behind >= MIN_BEHIND_S,
        format!(
            "in DVR the viewer was only {behind} s behind live (PDT {}, seekable {}), expected >= {MIN_BEHIND_S}",
            p["pdt_behind_s"], p["seekable_behind_s"]
        ),
    );
    checks.check(
        report["errors_after_rewind"].as_array().is_some_and(|e| e.iter().all(|e| e["fatal"] == false)),
        format!("fatal hls.js errors after Rewind: {}", report["errors_after_rewind"]),
    );
    // Back to live.
    checks.check(report.get("golive_missing").is_none(), "no visible #golive in DVR mode".to_string());
    checks.check(
        !b["latency_below_bound_after_s"].is_null(),
        format!(
            "after Back to live, hls.js latency never fell below {MAX_LIVE_LATENCY_S} s within {BACK_SECONDS} s: {}",
            b["latency_s"]
        ),
    );
    checks.check(
        b["trace"]
            .as_array()
            .and_then(|t| t.last())
            .and_then(|s| s.as_str())
            .is_some_and(|s| s.starts_with("live ")),
        format!("after Back to live the page is not live: {}", b["modes"]),
    );
    checks
        .check(f64_at(&report, "/errors_fatal") == 0.0, format!("fatal hls.js errors: {}", report["errors"]));
    checks.assert_ok(|| {
        format!(
            "dvr.mjs: {report:#}\ndvr.mjs stderr:\n{player_log}\nffmpeg:\n{}\nserver log (tail):\n{}",
            publisher.stderr(),
            log_tail(&server, 40)
        )
    });
}
