//! The transcode ladder with a real player: the `tidecast` binary runs with the ladder on
//! (`[transcode] enabled`), ffmpeg publishes 1280x720 30 fps over RTMP, and
//! `tests/browser/ladder.mjs` plays the `/watch/main` page (hls.js in low-latency mode on the
//! multivariant `/live/main/index.m3u8`) in Debian's headless Chromium. Once hls.js plays the
//! top rendition (the 720p source), the page's bandwidth is capped with Chromium's network
//! emulation (CDP `Network.emulateNetworkConditions`) so that only the lowest rung fits, and
//! raised somewhat once hls.js has switched down (see `caps_kbps`).
//!
//! Covers the ladder from a viewer's side (PRODUCT.md "Playback", RFC 8216bis §4.4.6.2 and
//! §4.4.5.4, EXT-X-RENDITION-REPORT): hls.js parses three levels (720, 480, 360 lines), switches
//! down after the cap, and keeps playing from the switch on without a stall (`waiting` on the
//! video element, hls.js's bufferStalledError), in low-latency mode, with its latency sane
//! before and after the switch (the program-date-time latency, wall clock minus
//! EXT-X-PROGRAM-DATE-TIME of the frame on screen, is printed beside it). The switch only works
//! without a stall when the rungs' parts line up with the source's (same MSNs, part indexes and
//! dates). Stalls between the cap and the switch (the buffer of a low-latency player is about a
//! second, and the part in flight still comes at the top rate) are reported, not failed; so is
//! one stall after the switch in which hls.js sat idle with media listed that it had not
//! requested (an hls.js 1.7.4 behaviour on a busy machine, see the test).
//!
//! The figures (which switch, how long after the cap, latency before and after) are printed on
//! every run: `cargo test --test hlsjs_ladder -- --nocapture`.
//!
//! Needs ffmpeg, node, /usr/bin/chromium and `npm ci` in tests/browser (`bash tests/run.sh`
//! installs them); without them it fails in CI and prints a loud SKIP elsewhere.

mod common;

use std::time::Duration;

use common::browser::*;
use common::*;

/// The publisher runs this long at most (it is stopped when the test ends): server start, the
/// ladder's start, browser start, hls.js settling on a rung, the cap, the switch and the sampling
/// after it all happen while it publishes.
const PUBLISH_SECONDS: u32 = 240;
/// How long the multivariant playlist has to list the three renditions once the channel is live.
const LADDER_TIMEOUT: Duration = Duration::from_secs(60);
/// ladder.mjs phases (seconds): at most `SETTLE_MAX` for hls.js to play a rung above the lowest
/// and stay on it `STABLE`; latency sampled `MEASURE` before the cap; at most `SWITCH_TIMEOUT`
/// after the cap for the switch down; `AFTER` of playback sampled after it.
const SETTLE_MAX: u32 = 60;
const STABLE: u32 = 4;
const MEASURE: u32 = 6;
const SWITCH_TIMEOUT: u32 = 40;
const AFTER: u32 = 15;
/// Upper bound for the whole ladder.mjs run.
const PLAYER_TIMEOUT: Duration =
    Duration::from_secs((SETTLE_MAX + MEASURE + SWITCH_TIMEOUT + AFTER) as u64 + 120);
/// The heights hls.js must list, highest first: the source and the two rungs below it.
const EXPECTED_HEIGHTS: [u64; 3] = [720, 480, 360];
/// Sanity bound for hls.js's median latency (`hls.latency`) before and after the switch. A
/// regression bound (a player fallen back to whole segments, or one left far behind by the
/// switch), not a target: targets are benchmarks (`loadtest/hls_latency.sh`).
const MAX_LATENCY_S: f64 = 10.0;
/// Seconds after the switch (LEVEL_SWITCHED: the playhead entered the lower rung) during which a
/// stall that begins counts as the tail of the cap, like the rebuffering before the switch: the
/// parts after the first one of the new rung were requested under the first cap, and on a busy
/// machine they can still run late. Reported, not failed; after it, no stall.
const SWITCH_GRACE_S: f64 = 2.0;
/// currentTime must advance at least this share of the wall time sampled after the switch (one
/// player-side stall of hls.js, ~5 s, is tolerated; see the test).
const MIN_ADVANCE_SHARE: f64 = 0.5;

/// `(BANDWIDTH, height)` of every `#EXT-X-STREAM-INF` of a multivariant playlist, in order.
fn variants(multivariant: &str) -> Vec<(u64, u64)> {
    multivariant
        .lines()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .map(|l| {
            let attrs = stream_inf_attrs(l);
            let get = |k: &str| attrs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
            let bandwidth = get("BANDWIDTH").and_then(|v| v.parse().ok()).unwrap_or(0);
            let height = get("RESOLUTION")
                .and_then(|r| r.split_once('x').and_then(|(_, h)| h.parse().ok()))
                .unwrap_or(0);
            (bandwidth, height)
        })
        .collect()
}

/// The caps, kbit/s. First two thirds of the way from the lowest rung's BANDWIDTH to the next
/// one's: only the lowest fits (hls.js takes a level below ~0.95 of its estimate), and the part
/// in flight on the source loads so slowly that hls.js abandons it and switches at once. Once it
/// has switched, 1.25 times the next rung's BANDWIDTH: room to spare for the lowest rung, and
/// still too little for hls.js to go up (it goes up only below ~0.7 of its estimate).
///
/// Why two steps: kept at the first cap, a low-latency player that rebuffered before the switch
/// refills its ~1 s of buffer at hardly more than real time while the watch page plays at up to
/// 1.25x to catch up, and rebuffers again for no fault of the ladder. With room for the next
/// rung, hls.js soon tries it, and an up-switch must load the new rung from the segment's key
/// frame (2 s back) through the cap: another rebuffer of hls.js's making. At ~60 % of the
/// source's BANDWIDTH alone, hls.js takes 10 s and more, rebuffering all along, to switch down.
fn caps_kbps(variants: &[(u64, u64)]) -> (u64, u64) {
    let mut bw: Vec<u64> = variants.iter().map(|(b, _)| *b).collect();
    bw.sort_unstable();
    let (lowest, next) = (bw[0], bw[1]);
    assert!(next > lowest * 3 / 2, "the two lowest rungs' BANDWIDTHs are too close to cap between: {bw:?}");
    let tight = lowest + (next - lowest) * 2 / 3;
    let relaxed = next * 5 / 4;
    (tight / 1000, relaxed / 1000)
}

/// How the bandwidth is capped (ladder.mjs `--cap-mode`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Cap {
    /// Chromium's network emulation caps the page's download rate: hls.js's ABR has to notice
    /// (it abandons the part in flight and switches down).
    /// (ladder.mjs also has `level`: `hls.autoLevelCapping`, the network untouched. Not tested:
    /// a player switching with the old rung still flowing is the easier case.)
    Throttle,
}

/// The browser tests of this file run one at a time: each drives a 720p x264 encoder, the
/// ladder's ffmpeg and a Chromium decoding it, and two at once on a 2-core machine stall both.
static ONE_PLAYER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What one run of ladder.mjs gave: its report (hls.js's log taken out) and the context for
/// failure messages (the report, hls.js's log around the cap, stderr of the player and ffmpeg,
/// the server log).
struct Played {
    report: serde_json::Value,
    context: String,
    cap_kbps: u64,
}

/// Start a server with the ladder on, publish 720p30, wait for the three renditions, play them
/// with ladder.mjs capping as `cap` says, print the figures, and check what every run must
/// show: no fatal error, the three levels, a rung above the lowest before the cap, a switch
/// down after it, and from the switch on no stall, playback moving, frames decoded and sane
/// latency before and after.
fn play_ladder(cap: Cap) -> Played {
    let _one = ONE_PLAYER.lock().unwrap_or_else(|p| p.into_inner());
    let static_dir = hlsjs_dist_dir();
    let server = TestServer::start(&[
        ("TIDECAST__HTTP__STATIC_DIR", static_dir.to_str().expect("UTF-8 repository path")),
        ("TIDECAST__HTTP__HLSJS_URL", "/static/hls.min.js"),
        ("TIDECAST__TRANSCODE__ENABLED", "true"),
    ]);
    let mut publisher = ffmpeg_publish_pattern(
        &server.publish_url(&server.key),
        PUBLISH_SECONDS,
        "1280x720",
        60,
        &["-tune", "zerolatency"],
    );
    server.wait_live(Duration::from_secs(30));
    let mut multivariant = String::new();
    let ladder_up = wait_until(LADDER_TIMEOUT, || {
        let r = server.get("/live/main/index.m3u8");
        if r.status == 200 {
            multivariant = r.body;
        }
        variants(&multivariant).len() >= 3
    });
    assert!(
        ladder_up,
        "the multivariant playlist did not list 3 renditions {LADDER_TIMEOUT:?} after going live; last:\n{multivariant}\nffmpeg:\n{}\nserver log (tail):\n{}",
        publisher.stderr(),
        log_tail(&server, 60)
    );
    let (cap_kbps, relax_kbps) = caps_kbps(&variants(&multivariant));
    eprintln!(
        "multivariant playlist:\n{multivariant}\nbandwidth cap ({cap:?}): {cap_kbps} kbit/s{}",
        if cap == Cap::Throttle { format!(", {relax_kbps} kbit/s once switched") } else { String::new() }
    );

    let url = format!("http://{}/watch/main", server.http);
    let (cap_arg, relax_arg) = (cap_kbps.to_string(), relax_kbps.to_string());
    let (settle, stable, measure) = (SETTLE_MAX.to_string(), STABLE.to_string(), MEASURE.to_string());
    let (switch_timeout, after) = (SWITCH_TIMEOUT.to_string(), AFTER.to_string());
    let mode = match cap {
        Cap::Throttle => "throttle",
    };
    let args = [
        url.as_str(),
        "--cap-mode",
        mode,
        "--cap-kbps",
        &cap_arg,
        "--relax-kbps",
        &relax_arg,
        "--settle-max",
        &settle,
        "--stable",
        &stable,
        "--measure",
        &measure,
        "--switch-timeout",
        &switch_timeout,
        "--after",
        &after,
    ];
    let (mut report, player_log) = run_node_report("ladder.mjs", &args, PLAYER_TIMEOUT);
    let publisher_alive = publisher.is_running();
    // hls.js's log is long: only in failure messages, not in the summary.
    let hls_log = report.as_object_mut().and_then(|o| o.remove("hls_log")).unwrap_or_default();
    let context = format!(
        "report: {report:#}\nhls.js log from 2 s before the cap (ms from the cap):\n{}\nladder.mjs stderr:\n{player_log}\npublisher running at the end: {publisher_alive}\nffmpeg:\n{}\nserver log (tail):\n{}",
        hls_log.as_array().into_iter().flatten().filter_map(|l| l.as_str()).collect::<Vec<_>>().join("\n"),
        publisher.stderr(),
        log_tail(&server, 60)
    );

    let summary = serde_json::json!({
        "hls_version": report["hls_version"],
        "browser": report["browser"],
        "cap": report["cap"],
        "levels": report["levels"].as_array().map(|ls| ls.iter().map(|l| serde_json::json!([l["height"], l["bitrate"]])).collect::<Vec<_>>()),
        "height_at_cap": report["height_at_cap"],
        "switch_down": report["switch_down"],
        "level_switches": report["level_switches"],
        "pdt_latency_before_s": report["pdt_latency_before_s"],
        "pdt_latency_after_s": report["pdt_latency_after_s"],
        "hls_latency_before_s": report["latency_before_s"],
        "hls_latency_after_s": report["latency_after_s"],
        "current_time_advanced_after_switch_s": report["current_time_advanced_after_switch_s"],
        "wall_after_switch_s": report["wall_after_switch_s"],
        "frames_after_switch": report["frames_after_switch"],
        "stalled_errors_rel_cap_s": report["stalled_errors_rel_cap_s"],
        "stall_episodes_rel_cap_s": report["stall_episodes_rel_cap_s"],
        "stalled_between_cap_and_switch_s": report["stalled_between_cap_and_switch_s"],
        "stalls_from_switch": report["stalls_from_switch"],
        "bw_estimate_at_cap": report["bw_estimate_at_cap"],
        "bw_estimate_end": report["bw_estimate_end"],
        "errors_total": report["errors_total"],
        "errors_fatal": report["errors_fatal"],
        "time_to_play_s": report["time_to_play_s"],
        "settle_s": report["settle_s"],
    });
    eprintln!("ladder switch ({mode}): {summary}");
    if report["errors_total"].as_u64().unwrap_or(0) > 0 {
        eprintln!("hls.js errors: {}", report["errors"]);
    }
    eprintln!(
        "trace (phase, s from the cap, playing level, loading level, hls.latency, PDT latency, buffer ahead, currentTime, frames, bandwidth estimate):\n  {}",
        report["trace"].as_array().into_iter().flatten().filter_map(|l| l.as_str()).collect::<Vec<_>>().join("\n  ")
    );

    // Stalls outside the window from the cap to the switch (start-up, settling, after the
    // switch): what led to them.
    let switch_at = f64_at(&report, "/switch_down/after_cap_s");
    for ctx in report["stall_context"].as_array().into_iter().flatten() {
        let at = ctx["rel_cap_s"].as_f64().unwrap_or(f64::NAN);
        // NaN switch_at (no switch): every stall from the cap on is printed.
        let before_switch = switch_at.is_finite() && at < switch_at;
        if at >= 0.0 && before_switch {
            continue;
        }
        eprintln!("--- `waiting` at {at} s from the cap: /live/ requests (ms from the event), then hls.js's log ---");
        for line in ctx["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(ctx["hls_log"].as_array().into_iter().flatten())
        {
            eprintln!("  {}", line.as_str().unwrap_or_default());
        }
    }

    assert!(report.get("error").is_none(), "the player did not run to the end\n{context}");
    assert!(publisher_alive, "the publisher stopped before the player finished\n{context}");
    assert_eq!(report["errors_fatal"].as_u64(), Some(0), "fatal hls.js errors\n{context}");

    // The ladder as hls.js sees it.
    let mut heights: Vec<u64> = report["levels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["height"].as_u64().unwrap_or(0))
        .collect();
    heights.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(heights, EXPECTED_HEIGHTS, "hls.js's levels (heights)\n{context}");

    // Before the cap: settled on the top rung, in low-latency mode.
    // Not settled (on a saturated machine hls.js can wander between rungs and rebuffer for a
    // minute) is reported; the cap still needs it on the top rung.
    if report["settled"].as_bool() != Some(true) {
        eprintln!("\n*** hls.js did not settle within {SETTLE_MAX} s (top rung, caught up, {STABLE} s without a stall); capped anyway ***\n");
    }
    let height_at_cap = report["height_at_cap"].as_u64().unwrap_or(0);
    assert_eq!(
        height_at_cap, EXPECTED_HEIGHTS[0],
        "hls.js was not on the top rung when the cap came; nothing to switch down from\n{context}"
    );
    assert_eq!(
        report["low_latency_mode_all_samples"].as_bool(),
        Some(true),
        "hls.js left low-latency mode\n{context}"
    );

    // The switch down.
    let switch = &report["switch_down"];
    assert!(
        !switch.is_null(),
        "no LEVEL_SWITCHED to a lower rung within {SWITCH_TIMEOUT} s of capping at {cap_kbps} kbit/s ({cap:?})\n{context}"
    );
    let to_height = switch["to_height"].as_u64().unwrap_or(0);
    assert!(
        to_height < height_at_cap,
        "the switch went from {height_at_cap} to {to_height} lines\n{context}"
    );

    // From the switch on (after SWITCH_GRACE_S): no stall waiting on media, playback moves on,
    // frames keep coming.
    // A stall counts unless hls.js sat idle (nothing loading) for >= 400 ms while the playing
    // rung's playlist listed media it had not requested: hls.js 1.7.4 does that after an append
    // that took long on a busy machine (its fragment tracker; see tests/hlsjs_play.rs), on
    // any rendition and long after a switch. One such stall is tolerated and reported; a
    // stall waiting on a part that was not there, or still loading, fails the test.
    let Some(stalls) = report["stalls_from_switch"].as_array() else {
        panic!("no stalls_from_switch in the report\n{context}");
    };
    let (tail, stalls): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        stalls.iter().partition(|s| s["at_s"].as_f64().is_some_and(|t| t < SWITCH_GRACE_S));
    if !tail.is_empty() {
        eprintln!("\n*** stalls within {SWITCH_GRACE_S} s of the switch (the cap's tail): {tail:?} ***\n");
    }
    let (player_idle, on_media): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        stalls.into_iter().partition(|s| s["player_idle"].as_bool() == Some(true));
    if !player_idle.is_empty() {
        eprintln!(
            "\n*** hls.js stalled after the switch with media listed but not requested (player-side): {player_idle:?} ***\n"
        );
    }
    assert!(on_media.is_empty(), "stalls after the switch: {on_media:?}\n{context}");
    assert!(
        player_idle.len() <= 1,
        "more than one player-side stall after the switch: {player_idle:?}\n{context}"
    );
    let advanced = f64_at(&report, "/current_time_advanced_after_switch_s");
    let wall = f64_at(&report, "/wall_after_switch_s");
    assert!(
        wall >= AFTER as f64 - 1.0 && advanced >= wall * MIN_ADVANCE_SHARE,
        "currentTime advanced {advanced} s over the {wall} s sampled after the switch\n{context}"
    );
    let frames = report["frames_after_switch"].as_i64().unwrap_or(0);
    assert!(
        frames as f64 >= advanced * 30.0 * 0.5,
        "only {frames} frames decoded in the {advanced} s played after the switch\n{context}"
    );

    // Latency, before and after: present and sane. The bound is on hls.js's own latency (to the
    // live edge of the playlist it plays): the program-date-time one also holds how far the
    // publisher's encoder fell behind the wall clock on a busy machine, so it is printed, and
    // only has to be there. After the switch a live player still carries what it spent
    // rebuffering between the cap and the switch (it catches up only slowly): allowed on top.
    for key in ["pdt_latency_before_s", "pdt_latency_after_s"] {
        let p50 = f64_at(&report, &format!("/{key}/p50"));
        assert!(p50.is_finite() && p50 > 0.0, "{key}: p50 {p50}\n{context}");
    }
    let before = f64_at(&report, "/latency_before_s/p50");
    assert!(
        before.is_finite() && before > 0.0 && before < MAX_LATENCY_S,
        "hls.js latency before the cap: p50 {before} s (want 0 < p50 < {MAX_LATENCY_S} s)\n{context}"
    );
    let rebuffered = f64_at(&report, "/stalled_between_cap_and_switch_s");
    let after = f64_at(&report, "/latency_after_s/p50");
    let max_after = MAX_LATENCY_S + if rebuffered.is_finite() { rebuffered } else { 0.0 };
    assert!(
        after.is_finite() && after > 0.0 && after < max_after,
        "hls.js latency after the switch: p50 {after} s (want 0 < p50 < {MAX_LATENCY_S} s + {rebuffered} s rebuffered before the switch)\n{context}"
    );
    drop(publisher);
    Played { report, context, cap_kbps }
}

/// The test: the bandwidth drops under a player on the top rung. hls.js must switch
/// down and play on from the switch without a stall. Between the cap and the switch a
/// rebuffer is expected and only reported: a low-latency player holds about half a second to a
/// second of media, and the part in flight when the network drops still comes at the top rate.
#[test]
fn hlsjs_switches_ladder_rendition_down_when_its_bandwidth_is_throttled() {
    if !require_ffmpeg() || !require_browser_player() {
        return;
    }
    let played = play_ladder(Cap::Throttle);
    // Throttled, hls.js must stay below the source: it no longer fits.
    let (end, at_cap) = (
        played.report["playing_height_end"].as_u64().unwrap_or(0),
        played.report["height_at_cap"].as_u64().unwrap_or(0),
    );
    assert!(
        end < at_cap,
        "at {} kbit/s hls.js ended on the {end}-line rung, not below the {at_cap}-line one it played before\n{}",
        played.cap_kbps, played.context
    );
}
