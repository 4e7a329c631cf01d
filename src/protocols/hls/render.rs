//! The LL-HLS renderer: a [`MediaPlaylist`] (or a list of [`VariantStream`]s) in, playlist text
//! out. Called by the HTTP layer for every playlist response, full or delta.
//!
//! Spec: draft-pantos-hls-rfc8216bis §4.4.3.7 EXT-X-PART-INF, §4.4.3.8 EXT-X-SERVER-CONTROL,
//! §4.4.4.9 EXT-X-PART, §4.4.5.2 EXT-X-SKIP, §4.4.5.3 EXT-X-PRELOAD-HINT, §4.4.5.4
//! EXT-X-RENDITION-REPORT, §6.2.2 (part removal), §6.2.5.1 Playlist Delta Updates, §8 versions.
//!
//! Invariants: durations are written truncated, never rounded up; `EXT-X-VERSION` is the minimum
//! the text needs; every URI carries the caller's (percent-encoded) `uri_query`; and the
//! validator accepts whatever is rendered from a well-formed model (a property test in
//! `render/tests.rs` holds us to it).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use super::model::{
    MediaPlaylist, RenderOptions, SegmentEntry, SkipRequest, VariantStream, VERSION_DECIMAL_EXTINF,
    VERSION_GAP, VERSION_MAP, VERSION_SKIP,
};
use super::query::{encode_query, with_query};

/// `PART-HOLD-BACK` in part targets: the spec's recommendation (§4.4.3.8 "SHOULD be at least
/// three times"; the hard minimum is two).
const PART_HOLD_BACK_PART_TARGETS: u32 = 3;
/// Parts stay listed for segments ending within this many target durations of the playlist end
/// (§6.2.2 "SHOULD be removed ... greater than three Target Durations from the end").
const PART_WINDOW_TARGET_DURATIONS: u32 = 3;
/// Written durations have this many decimals (10 µs resolution).
const DURATION_DECIMALS: u32 = 5;

/// Render a media playlist.
///
/// Layout: header (`EXTM3U`, `VERSION`, `TARGETDURATION`, `SERVER-CONTROL`, `PART-INF`,
/// `MEDIA-SEQUENCE`, `DISCONTINUITY-SEQUENCE` when non-zero), then the segments (`EXT-X-MAP`,
/// `EXT-X-DISCONTINUITY`, `EXT-X-PROGRAM-DATE-TIME`, its `EXT-X-PART`s when near the live edge,
/// `EXTINF` + URI when complete), then `EXT-X-PRELOAD-HINT`, the rendition reports, and
/// `EXT-X-ENDLIST`.
///
/// - Parts of a complete segment are listed while the segment ends within three target durations
///   of the playlist end; the segment in progress always lists its parts. Parts are listed or
///   dropped per segment, never half a segment.
/// - Delta update (`opts.skip` is `Yes`/`V2`, playlist not ended): segments whose end is more than
///   `CAN-SKIP-UNTIL` before the end of the last complete segment become one
///   `EXT-X-SKIP:SKIPPED-SEGMENTS=N`; nothing is skipped (and no tag written) when none qualifies.
///   `EXT-X-MEDIA-SEQUENCE` and `EXT-X-DISCONTINUITY-SEQUENCE` keep their full-playlist values
///   (§4.4.5.2). Tags of skipped segments go with them (§4.4.5.2), but the first kept segment
///   gets the context a client needs if it reads the delta on its own: the `EXT-X-MAP` in force
///   and, when it has none and no discontinuity intervenes, a `PROGRAM-DATE-TIME` extrapolated
///   from the last skipped one.
/// - An ended playlist drops a trailing incomplete segment (its parts would have no parent) and
///   the preload hint (§4.4.5.3 "MUST NOT").
pub fn render_media(pl: &MediaPlaylist, opts: &RenderOptions) -> String {
    let td_secs = pl.target_duration_secs();
    let segments: &[SegmentEntry] = match pl.segments.split_last() {
        Some((last, rest)) if pl.ended && !last.complete => rest,
        _ => &pl.segments,
    };

    let skipped = if opts.skip != SkipRequest::No && !pl.ended {
        count_skippable(segments, pl.skip_boundary())
    } else {
        0
    };
    let kept = &segments[skipped..];

    // Playlist end for the part window: end of the last complete segment plus listed parts of the
    // segment in progress.
    let ends = segment_ends(segments);
    let playlist_end = match segments.last() {
        Some(seg) if !seg.complete => {
            ends.last().copied().unwrap_or_default() + seg.parts.iter().map(|p| p.duration).sum::<Duration>()
        }
        _ => ends.last().copied().unwrap_or_default(),
    };
    let part_window = Duration::from_secs(td_secs * u64::from(PART_WINDOW_TARGET_DURATIONS));

    let uses_map = kept.iter().any(|s| s.map_uri.is_some())
        || (skipped > 0 && segments[..skipped].iter().any(|s| s.map_uri.is_some()));
    let version = if skipped > 0 {
        VERSION_SKIP
    } else if kept.iter().any(|s| s.gap) {
        VERSION_GAP
    } else if uses_map {
        VERSION_MAP
    } else {
        VERSION_DECIMAL_EXTINF
    };

    let query = encode_query(opts.uri_query);
    let uri = |u: &str| with_query(u, &query);

    let mut out = String::with_capacity(256 + 64 * kept.len());
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{version}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{td_secs}");
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={}",
        fmt_secs(pl.part_target * PART_HOLD_BACK_PART_TARGETS),
        fmt_secs(pl.skip_boundary()),
    );
    let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", fmt_secs(pl.part_target));
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", pl.media_sequence);
    if pl.discontinuity_sequence != 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", pl.discontinuity_sequence);
    }
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }

    for (i, seg) in kept.iter().enumerate() {
        let index = skipped + i;
        if !seg.complete && seg.parts.is_empty() {
            // Nothing of it to list yet; its tags will precede its first part.
            continue;
        }
        let map = match (&seg.map_uri, i == 0 && skipped > 0) {
            (Some(m), _) => Some(m.as_str()),
            (None, true) => segments[..skipped].iter().rev().find_map(|s| s.map_uri.as_deref()),
            (None, false) => None,
        };
        if let Some(m) = map {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", uri(m));
        }
        if seg.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let pdt = match seg.program_date_time {
            Some(t) => Some(t),
            None if i == 0 && skipped > 0 => extrapolate_pdt(segments, index),
            None => None,
        };
        if let Some(t) = pdt {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", humantime::format_rfc3339_millis(t));
        }
        let seg_end = if seg.complete { ends[index] } else { playlist_end };
        if !seg.complete || playlist_end.saturating_sub(seg_end) <= part_window {
            for part in &seg.parts {
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={},URI=\"{}\"",
                    fmt_secs(part.duration),
                    uri(&part.uri)
                );
                out.push_str(if part.independent { ",INDEPENDENT=YES\n" } else { "\n" });
            }
        }
        if seg.complete {
            if seg.gap {
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(out, "#EXTINF:{},", fmt_secs(seg.duration));
            let _ = writeln!(out, "{}", uri(&seg.uri));
        }
    }

    if !pl.ended {
        if let Some(hint) = &pl.preload_hint {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"", uri(&hint.uri));
        }
    }
    for report in &pl.rendition_reports {
        let _ = writeln!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
            uri(&report.uri),
            report.last_msn,
            report.last_part
        );
    }
    if pl.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// Render the multivariant playlist: `EXT-X-INDEPENDENT-SEGMENTS` (every segment starts on a key
/// frame) and one `EXT-X-STREAM-INF` per variant, each URI carrying `opts.uri_query`.
/// `opts.skip` is meaningless here and ignored. No `EXT-X-VERSION`: nothing here needs more than 1.
pub fn render_multivariant(variants: &[VariantStream], opts: &RenderOptions) -> String {
    let query = encode_query(opts.uri_query);
    let mut out = String::from("#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for v in variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if let Some(avg) = v.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
        }
        let _ = write!(out, ",CODECS=\"{}\"", v.codecs);
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(fps) = v.frame_rate {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        out.push('\n');
        let _ = writeln!(out, "{}", with_query(&v.uri, &query));
    }
    out
}

/// End of each segment counted from the start of `segments[0]` (incomplete segments add nothing).
fn segment_ends(segments: &[SegmentEntry]) -> Vec<Duration> {
    let mut acc = Duration::ZERO;
    segments
        .iter()
        .map(|s| {
            if s.complete {
                acc += s.duration;
            }
            acc
        })
        .collect()
}

/// How many leading segments a delta update replaces: those whose end is more than `boundary`
/// before the end of the last complete segment (§6.2.5.1 "further from the end of the last
/// (Parent) Media Segment ... than the Skip Boundary"). Measuring from the segment's end, not its
/// start, means a segment is skipped only when all of it lies beyond the boundary.
fn count_skippable(segments: &[SegmentEntry], boundary: Duration) -> usize {
    let ends = segment_ends(segments);
    let Some(&total) = ends.last() else { return 0 };
    segments.iter().zip(&ends).take_while(|(seg, &end)| seg.complete && total - end > boundary).count()
}

/// The date of `segments[index]` extrapolated from the latest earlier dated segment, unless a
/// discontinuity (at or before `index`) breaks the timeline in between.
fn extrapolate_pdt(segments: &[SegmentEntry], index: usize) -> Option<SystemTime> {
    if segments[index].discontinuity {
        return None;
    }
    let mut elapsed = Duration::ZERO;
    for seg in segments[..index].iter().rev() {
        elapsed += seg.duration;
        if let Some(t) = seg.program_date_time {
            return Some(t + elapsed);
        }
        if seg.discontinuity {
            return None;
        }
    }
    None
}

/// Seconds with five decimals, truncated (never above the true value), trailing zeros trimmed to
/// three decimals: `2s` -> `2.000`, `200ms` -> `0.200`, `1/3 s` -> `0.33333`.
pub(super) fn fmt_secs(d: Duration) -> String {
    let scale = 10u32.pow(9 - DURATION_DECIMALS);
    let mut frac = format!("{:05}", d.subsec_nanos() / scale);
    while frac.len() > 3 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{}.{}", d.as_secs(), frac)
}

#[cfg(test)]
mod tests;
