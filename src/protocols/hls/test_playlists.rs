//! Shared unit-test playlists: a small golden playlist ([`small`] renders to [`SMALL`]), a long
//! one for delta updates and part windows ([`long`]), and helpers that render and validate them.
//! Used by the renderer, blocking and validator tests; compiled only for `cfg(test)`.

use std::time::{Duration, SystemTime};

use super::{
    render_media, validate_media_playlist, MediaPlaylist, PartEntry, PreloadHint, RenderOptions,
    RenditionReport, SegmentEntry, SkipRequest,
};

const T0: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn at(secs_ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0) + ms(secs_ms)
}

pub(super) fn part(msn: u64, i: usize, d: u64) -> PartEntry {
    PartEntry { duration: ms(d), uri: format!("p{msn}.{i}.m4s"), independent: i == 0 }
}

/// A complete segment of `parts` (durations in ms), starting at `start_ms` of wall clock.
pub(super) fn seg(msn: u64, parts: &[u64], start_ms: u64) -> SegmentEntry {
    SegmentEntry {
        msn,
        duration: ms(parts.iter().sum()),
        uri: format!("s{msn}.m4s"),
        program_date_time: Some(at(start_ms)),
        discontinuity: false,
        map_uri: None,
        parts: parts.iter().enumerate().map(|(i, &d)| part(msn, i, d)).collect(),
        complete: true,
        gap: false,
    }
}

/// Two complete segments and one in progress; the golden playlist below.
pub(super) fn small() -> MediaPlaylist {
    let mut s10 = seg(10, &[1000, 1000], 0);
    s10.map_uri = Some("init.mp4".into());
    let s11 = seg(11, &[1000, 980], 2000);
    let mut s12 = seg(12, &[1000], 3980);
    s12.complete = false;
    MediaPlaylist {
        target_duration: ms(2000),
        part_target: ms(1000),
        media_sequence: 10,
        discontinuity_sequence: 0,
        segments: vec![s10, s11, s12],
        preload_hint: Some(PreloadHint { uri: "p12.1.m4s".into() }),
        rendition_reports: vec![RenditionReport {
            uri: "../audio/index.m3u8".into(),
            last_msn: 12,
            last_part: 0,
        }],
        ended: false,
    }
}

pub(super) const SMALL: &str = "#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000,CAN-SKIP-UNTIL=12.000
#EXT-X-PART-INF:PART-TARGET=1.000
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00.000Z
#EXT-X-PART:DURATION=1.000,URI=\"p10.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.000,URI=\"p10.1.m4s\"
#EXTINF:2.000,
s10.m4s
#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:02.000Z
#EXT-X-PART:DURATION=1.000,URI=\"p11.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.980,URI=\"p11.1.m4s\"
#EXTINF:1.980,
s11.m4s
#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:03.980Z
#EXT-X-PART:DURATION=1.000,URI=\"p12.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=12,LAST-PART=0
";

/// `n` complete 2 s segments (two 1 s parts each) from MSN 100, init on the first.
pub(super) fn long(n: u64) -> MediaPlaylist {
    let mut segments: Vec<_> = (0..n).map(|i| seg(100 + i, &[1000, 1000], i * 2000)).collect();
    segments[0].map_uri = Some("init.mp4".into());
    MediaPlaylist { media_sequence: 100, segments, preload_hint: None, rendition_reports: vec![], ..small() }
}

pub(super) fn full(pl: &MediaPlaylist) -> String {
    render_media(pl, &RenderOptions::default())
}

pub(super) fn delta(pl: &MediaPlaylist) -> String {
    render_media(pl, &RenderOptions { skip: SkipRequest::Yes, uri_query: "" })
}

pub(super) fn assert_valid(text: &str) {
    if let Err(errors) = validate_media_playlist(text) {
        panic!("rejected:\n{text}\n{errors:#?}");
    }
}

/// Expect the validator to reject `text` with the given rule.
pub(super) fn assert_rule(text: &str, rule: &str) {
    let errors = validate_media_playlist(text).expect_err(&format!("accepted:\n{text}"));
    let tag = format!("[{rule}]");
    assert!(errors.iter().any(|e| e.starts_with(&tag)), "no {tag} in {errors:#?}\n{text}");
}
