//! Recorded playlists: the archive of a live session (`actors::archive`) as a plain HLS media
//! playlist. `EXT-X-PLAYLIST-TYPE:EVENT` while the session records (segments are only ever
//! appended, RFC 8216bis §4.4.3.5), `VOD` with `EXT-X-ENDLIST` once it ended. No parts, no
//! blocking: players reload an EVENT playlist at the target duration and seek anywhere in it.
//!
//! The segments are the live output's own, so the live facts carry over: a segment starts on a
//! key frame (`EXT-X-INDEPENDENT-SEGMENTS`), a publisher's reconnect (or a stretch the archive
//! could not record) is an `EXT-X-DISCONTINUITY`, a ladder rung's missing segment is an
//! `EXT-X-GAP`, and every segment keeps its program date time.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::model::{RenderOptions, VERSION_DECIMAL_EXTINF, VERSION_GAP, VERSION_MAP};
use super::query::{encode_query, with_query};
use super::render::fmt_secs;

/// EVENT (still recording), VOD (finished), or a window of the newest segments (a DVR playlist
/// of a session longer than the window: no playlist type, since segments leave its start).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedKind {
    Event,
    Vod,
    Sliding,
}

/// One recorded segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedSegment {
    pub duration: Duration,
    pub uri: String,
    pub program_date_time: Option<SystemTime>,
    pub discontinuity: bool,
    /// `EXT-X-MAP` before this segment: the first segment and after an init change.
    pub map_uri: Option<String>,
    pub gap: bool,
}

/// A recorded media playlist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedPlaylist {
    pub kind: RecordedKind,
    /// Written rounded up to whole seconds; at least every segment's duration rounded.
    pub target_duration: Duration,
    /// `EXT-X-MEDIA-SEQUENCE`: segments that left the start of a sliding playlist (0 otherwise).
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`: discontinuities among them.
    pub discontinuity_sequence: u64,
    pub segments: Vec<RecordedSegment>,
}

/// Render a recorded media playlist. `EXT-X-VERSION` is the minimum the text needs (6 for
/// `EXT-X-MAP`, 8 for `EXT-X-GAP`); every URI carries `opts.uri_query`.
pub fn render_recorded(pl: &RecordedPlaylist, opts: &RenderOptions) -> String {
    let version = if pl.segments.iter().any(|s| s.gap) {
        VERSION_GAP
    } else if pl.segments.iter().any(|s| s.map_uri.is_some()) {
        VERSION_MAP
    } else {
        VERSION_DECIMAL_EXTINF
    };
    // §4.4.3.1: EXTINF rounded to the nearest integer must not exceed the target duration.
    let longest = pl.segments.iter().map(|s| s.duration.as_secs_f64().round() as u64).max().unwrap_or(0);
    let target = pl.target_duration.as_secs_f64().ceil() as u64;
    let target = target.max(longest).max(1);
    let query = encode_query(opts.uri_query);
    let uri = |u: &str| with_query(u, &query);
    let mut out = String::with_capacity(160 + 96 * pl.segments.len());
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{version}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    match pl.kind {
        RecordedKind::Event => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        RecordedKind::Vod => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
        RecordedKind::Sliding => {}
    }
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", pl.media_sequence);
    if pl.discontinuity_sequence > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", pl.discontinuity_sequence);
    }
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    for seg in &pl.segments {
        if let Some(m) = &seg.map_uri {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", uri(m));
        }
        if seg.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(t) = seg.program_date_time {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", humantime::format_rfc3339_millis(t));
        }
        if seg.gap {
            out.push_str("#EXT-X-GAP\n");
        }
        let _ = writeln!(out, "#EXTINF:{},", fmt_secs(seg.duration));
        let _ = writeln!(out, "{}", uri(&seg.uri));
    }
    if pl.kind == RecordedKind::Vod {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(ms: u64, uri: &str) -> RecordedSegment {
        RecordedSegment {
            duration: Duration::from_millis(ms),
            uri: uri.into(),
            program_date_time: None,
            discontinuity: false,
            map_uri: None,
            gap: false,
        }
    }

    #[test]
    fn a_finished_recording_is_a_vod_playlist_with_every_uri_tokened() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut first = seg(2_000, "seg-0.m4s");
        first.map_uri = Some("init-0.mp4".into());
        first.program_date_time = Some(t0);
        let mut after_reconnect = seg(2_600, "seg-5.m4s");
        after_reconnect.discontinuity = true;
        after_reconnect.map_uri = Some("init-1.mp4".into());
        let pl = RecordedPlaylist {
            kind: RecordedKind::Vod,
            target_duration: Duration::from_secs(2),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: vec![first, seg(1_999, "seg-1.m4s"), after_reconnect],
        };
        let text = render_recorded(&pl, &RenderOptions { uri_query: "token=a b", ..Default::default() });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"init-0.mp4?token=a%20b\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n\
             #EXTINF:2.000,\nseg-0.m4s?token=a%20b\n#EXTINF:1.999,\nseg-1.m4s?token=a%20b\n\
             #EXT-X-MAP:URI=\"init-1.mp4?token=a%20b\"\n#EXT-X-DISCONTINUITY\n#EXTINF:2.600,\n\
             seg-5.m4s?token=a%20b\n#EXT-X-ENDLIST\n",
            "the target covers the longest segment rounded (2.6 s -> 3)"
        );
    }

    #[test]
    fn a_recording_in_progress_is_an_event_playlist_without_endlist_and_gaps_need_version_8() {
        let mut gap = seg(2_000, "seg-1.m4s");
        gap.gap = true;
        let pl = RecordedPlaylist {
            kind: RecordedKind::Event,
            target_duration: Duration::from_millis(1_500),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: vec![seg(2_000, "seg-0.m4s"), gap],
        };
        let text = render_recorded(&pl, &RenderOptions::default());
        assert!(
            text.contains("#EXT-X-VERSION:8\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            "{text}"
        );
        assert!(text.contains("#EXT-X-GAP\n#EXTINF:2.000,\nseg-1.m4s\n"), "{text}");
        assert!(!text.contains("ENDLIST"), "{text}");
        // A DVR window that slid: no type, the sequences of what left it.
        let pl = RecordedPlaylist {
            kind: RecordedKind::Sliding,
            media_sequence: 40,
            discontinuity_sequence: 2,
            ..pl
        };
        let text = render_recorded(&pl, &RenderOptions::default());
        assert!(!text.contains("PLAYLIST-TYPE"), "{text}");
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"), "{text}");
    }
}
