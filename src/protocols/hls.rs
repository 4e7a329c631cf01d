//! LL-HLS playlists: a sans-IO model, the renderer, delivery-directive parsing, the blocking-reload
//! decision, and a structural validator. Text and numbers in, text and decisions out: no clocks,
//! no sockets, no files.
//!
//! Data flow: the LL-HLS packager (segmenter -> parts -> segments) keeps a [`MediaPlaylist`] per
//! rendition. The HTTP layer parses the request query with [`parse_query`], asks
//! [`MediaPlaylist::block_decision`] whether to answer now, wait for the next part, or refuse, and
//! answers with [`render_media`] / [`render_multivariant`]. Tests everywhere in the crate check
//! what we serve with [`validate_media_playlist`] and [`validate_multivariant`].
//!
//! Spec: draft-pantos-hls-rfc8216bis ("HLS 2nd edition"): §4.4.3.7 EXT-X-PART-INF, §4.4.3.8
//! EXT-X-SERVER-CONTROL, §4.4.4.9 EXT-X-PART, §4.4.5.2 EXT-X-SKIP, §4.4.5.3 EXT-X-PRELOAD-HINT,
//! §4.4.5.4 EXT-X-RENDITION-REPORT, §6.2.2 (part removal), §6.2.5.1 Playlist Delta Updates,
//! §6.2.5.2 Blocking Playlist Reload, §8 protocol version compatibility.
//!
//! Decisions (each one is explained where it is implemented):
//! - `EXT-X-VERSION` is the minimum the rendered text needs (§8, and §6.2.1 "SHOULD NOT be greater
//!   than required"): 3 for decimal `EXTINF`, 6 once `EXT-X-MAP` appears, 9 when `EXT-X-SKIP`
//!   appears. The low-latency tags themselves carry no version requirement.
//! - Durations are written with five decimals, *truncated*, never rounded up, so a written
//!   duration never exceeds the true one: a part that fits its `PART-TARGET` still fits on paper.
//! - A delta update (`_HLS_skip=YES|v2`) replaces the segments whose *end* lies more than
//!   `CAN-SKIP-UNTIL` seconds before the end of the last complete segment. `v2` is treated as
//!   `YES`: we have no `EXT-X-DATERANGE` tags and do not advertise `CAN-SKIP-DATERANGES`.
//! - Blocking: `_HLS_msn=M` alone waits for segment M to be *complete* (listed with `EXTINF`);
//!   `_HLS_msn=M&_HLS_part=N` waits for part N (0-based) of segment M, where N past the last part
//!   of a complete segment means part 0 of M+1 (§6.2.5.2).
//!
//! Invariants: every URI we write carries the caller's `uri_query` (players do not resend headers,
//! so an access token must ride on every URI); a query is percent-encoded before it is written, so
//! no request can inject a quote or a line into a playlist; `validate_media_playlist` accepts
//! everything `render_media` writes from a well-formed model (a property test holds us to it).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// One partial segment (`EXT-X-PART`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartEntry {
    /// True duration; written truncated to 5 decimals. Must not exceed the part target.
    pub duration: Duration,
    /// Relative URI of the part resource.
    pub uri: String,
    /// The part starts with an independent (key) frame: `INDEPENDENT=YES`. Our segments start on
    /// key frames, so the first part of every segment has this set.
    pub independent: bool,
}

/// One media segment and the parts it is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    /// Media sequence number. Consecutive within a playlist (`media_sequence + index`).
    pub msn: u64,
    /// True duration of the complete segment (ignored while `complete` is false).
    pub duration: Duration,
    /// Relative URI of the whole segment (ignored while `complete` is false).
    pub uri: String,
    /// Wall-clock time of the segment's first sample: `EXT-X-PROGRAM-DATE-TIME`, ms precision, UTC.
    pub program_date_time: Option<SystemTime>,
    /// `EXT-X-DISCONTINUITY` before this segment (timestamps or encoding parameters changed).
    pub discontinuity: bool,
    /// `EXT-X-MAP:URI=...` before this segment: set on the first segment and after an init change.
    pub map_uri: Option<String>,
    /// The parts of this segment, in order. Listed only near the live edge (see [`render_media`]).
    pub parts: Vec<PartEntry>,
    /// False for the segment still being built: only its parts are listed, without `EXTINF`.
    pub complete: bool,
}

/// `EXT-X-PRELOAD-HINT:TYPE=PART,URI="..."`: the next part, which a client may request before it
/// exists (the server holds that request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreloadHint {
    pub uri: String,
}

/// `EXT-X-RENDITION-REPORT`: where another rendition of the same channel stands, so a player can
/// switch with a single blocking request. Build it with [`MediaPlaylist::rendition_report`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenditionReport {
    /// That rendition's media playlist, relative to this one (e.g. `../720p/index.m3u8`).
    pub uri: String,
    /// MSN of its last part (or last segment when it has no parts).
    pub last_msn: u64,
    /// Index of its last part within `last_msn`.
    pub last_part: u32,
}

/// A live (or ended) media playlist of one rendition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// Upper bound of every segment duration; written as whole seconds, rounded up (minimum 1).
    /// Must not change during the life of the playlist (§6.2.1).
    pub target_duration: Duration,
    /// Upper bound of every part duration (`EXT-X-PART-INF:PART-TARGET`).
    pub part_target: Duration,
    /// MSN of `segments[0]`.
    pub media_sequence: u64,
    /// Discontinuity sequence number of `segments[0]` (written when non-zero).
    pub discontinuity_sequence: u64,
    /// Oldest first; only the last one may be incomplete.
    pub segments: Vec<SegmentEntry>,
    /// The next part, when the playlist is live.
    pub preload_hint: Option<PreloadHint>,
    /// One report per other rendition of the channel.
    pub rendition_reports: Vec<RenditionReport>,
    /// The stream is over: `EXT-X-ENDLIST`, no preload hint, no blocking, no delta updates.
    pub ended: bool,
}

/// The `_HLS_skip` delivery directive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SkipRequest {
    /// A full playlist.
    #[default]
    No,
    /// `_HLS_skip=YES`: a delta update that skips old segments.
    Yes,
    /// `_HLS_skip=v2`: also skip old date ranges. We have none, so this behaves as `Yes`.
    V2,
}

/// How one response is rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderOptions<'a> {
    /// The delta-update request of this response.
    pub skip: SkipRequest,
    /// Query appended to every URI in the playlist (`token=abc`), after `?` or `&` as the URI
    /// needs; `""` for none. Characters outside RFC 3986 query syntax are percent-encoded.
    pub uri_query: &'a str,
}

/// One `EXT-X-STREAM-INF` entry of the multivariant playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantStream {
    /// The media playlist, relative to the multivariant one (e.g. `720p/index.m3u8`).
    pub uri: String,
    /// Peak bit rate in bits per second.
    pub bandwidth: u64,
    /// Average bit rate in bits per second, when known.
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codec list, e.g. `avc1.64001f,mp4a.40.2`.
    pub codecs: String,
    /// Width and height in pixels (video renditions).
    pub resolution: Option<(u32, u32)>,
    /// Frames per second (written with three decimals).
    pub frame_rate: Option<f64>,
}

/// Minimum `EXT-X-VERSION` for a playlist with decimal `EXTINF` durations (§8).
const VERSION_DECIMAL_EXTINF: u32 = 3;
/// Minimum `EXT-X-VERSION` for `EXT-X-MAP` in a playlist without `EXT-X-I-FRAMES-ONLY` (§8).
const VERSION_MAP: u32 = 6;
/// Minimum `EXT-X-VERSION` for `EXT-X-SKIP` (§8).
const VERSION_SKIP: u32 = 9;
/// `CAN-SKIP-UNTIL` in target durations: the spec's minimum (§4.4.3.8 "at least six times").
const SKIP_BOUNDARY_TARGET_DURATIONS: u32 = 6;
/// `PART-HOLD-BACK` in part targets: the spec's recommendation (§4.4.3.8 "SHOULD be at least
/// three times"; the hard minimum is two).
const PART_HOLD_BACK_PART_TARGETS: u32 = 3;
/// Parts stay listed for segments ending within this many target durations of the playlist end
/// (§6.2.2 "SHOULD be removed ... greater than three Target Durations from the end").
const PART_WINDOW_TARGET_DURATIONS: u32 = 3;
/// Written durations have this many decimals (10 µs resolution).
const DURATION_DECIMALS: u32 = 5;

impl MediaPlaylist {
    /// `EXT-X-TARGETDURATION` as written: whole seconds, rounded up, at least 1.
    pub fn target_duration_secs(&self) -> u64 {
        ceil_secs(self.target_duration).max(1)
    }

    /// The skip boundary we advertise as `CAN-SKIP-UNTIL`: six written target durations.
    pub fn skip_boundary(&self) -> Duration {
        Duration::from_secs(self.target_duration_secs() * u64::from(SKIP_BOUNDARY_TARGET_DURATIONS))
    }

    /// The live edge as the blocking rules and rendition reports count it: the newest segment that
    /// is complete or has at least one completed part, and the index of its newest part.
    ///
    /// Returns `(last_msn, last_part, last_segment_complete)`; `None` while nothing has been
    /// published. An in-progress segment without parts yet is not the edge: its predecessor is.
    pub fn edge(&self) -> Option<(u64, Option<u32>, bool)> {
        let last_part = |seg: &SegmentEntry| seg.parts.len().checked_sub(1).map(saturate_u32);
        self.segments
            .iter()
            .rev()
            .find(|seg| seg.complete || !seg.parts.is_empty())
            .map(|seg| (seg.msn, last_part(seg), seg.complete))
    }

    /// This playlist's state as another rendition reports it (§4.4.5.4: LAST-MSN and LAST-PART
    /// name the last part). `None` while nothing has been published.
    pub fn rendition_report(&self, uri: impl Into<String>) -> Option<RenditionReport> {
        let (last_msn, last_part, _) = self.edge()?;
        Some(RenditionReport { uri: uri.into(), last_msn, last_part: last_part.unwrap_or(0) })
    }

    /// [`block_decision`] against this playlist, plus the two rules that need it: an ended
    /// playlist never blocks (§6.2.5.2 "MUST ignore _HLS_msn and _HLS_part" after ENDLIST), and a
    /// part index more than the Advance Part Limit beyond the last part is refused.
    pub fn block_decision(&self, req_msn: u64, req_part: Option<u32>) -> BlockDecision {
        if self.ended {
            return BlockDecision::Ready;
        }
        let Some((last_msn, last_part, complete)) = self.edge() else {
            // Nothing published yet: only the first segments are worth waiting for.
            return if req_msn > self.media_sequence.saturating_add(1) {
                BlockDecision::TooFarAhead
            } else {
                BlockDecision::Wait
            };
        };
        block_decision(req_msn, req_part, last_msn, last_part, complete, advance_part_limit(self.part_target))
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

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

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn saturate_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Seconds with five decimals, truncated (never above the true value), trailing zeros trimmed to
/// three decimals: `2s` -> `2.000`, `200ms` -> `0.200`, `1/3 s` -> `0.33333`.
fn fmt_secs(d: Duration) -> String {
    let scale = 10u32.pow(9 - DURATION_DECIMALS);
    let mut frac = format!("{:05}", d.subsec_nanos() / scale);
    while frac.len() > 3 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{}.{}", d.as_secs(), frac)
}

/// Percent-encode every byte that may not appear literally in a URI query (RFC 3986 §3.4), so a
/// client-supplied query cannot break out of a quoted attribute or a URI line. `%` is kept: the
/// query is expected to be encoded already, and re-encoding would change its meaning.
fn encode_query(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for b in q.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Append an (already encoded) query to a URI, with `?` or `&` as needed, before any fragment.
fn with_query(uri: &str, query: &str) -> String {
    if query.is_empty() {
        return uri.to_owned();
    }
    let (base, fragment) = match uri.find('#') {
        Some(i) => uri.split_at(i),
        None => (uri, ""),
    };
    let sep = match base.find('?') {
        None => "?",
        Some(i) if i + 1 == base.len() || base.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{base}{sep}{query}{fragment}")
}

// ---------------------------------------------------------------------------------------------
// Delivery directives
// ---------------------------------------------------------------------------------------------

/// The query of a media playlist request, split into delivery directives and everything else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HlsQuery {
    /// `_HLS_msn`: block until this segment (or, with `part`, this part of it) is listed.
    pub msn: Option<u64>,
    /// `_HLS_part`: 0-based part index within `msn`.
    pub part: Option<u32>,
    /// `_HLS_skip`: delta update requested.
    pub skip: SkipRequest,
    /// Every other parameter (e.g. `token`), decoded, in request order. Unknown `_HLS_` parameters
    /// (reserved by §6.2.5, e.g. the withdrawn `_HLS_push`) are dropped, not passed on.
    pub other: Vec<(String, String)>,
}

impl HlsQuery {
    /// `other` re-encoded as a query string, ready for [`RenderOptions::uri_query`], so the
    /// playlist's URIs carry the same token as the request.
    pub fn passthrough_query(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.other {
            if !out.is_empty() {
                out.push('&');
            }
            percent_encode_component(&mut out, k);
            out.push('=');
            percent_encode_component(&mut out, v);
        }
        out
    }
}

/// Why a playlist query was refused; every variant maps to HTTP 400. Messages never repeat the
/// value of a non-directive parameter, which may be an access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HlsQueryError {
    #[error("_HLS_part requires _HLS_msn (RFC 8216bis 6.2.5.2)")]
    PartWithoutMsn,
    #[error("{key} must be a decimal integer, got {value:?}")]
    NotANumber { key: &'static str, value: String },
    #[error("_HLS_skip must be YES or v2, got {value:?}")]
    BadSkip { value: String },
    #[error("{key} appears more than once")]
    Repeated { key: &'static str },
    #[error("malformed percent-encoding in query parameter #{index}")]
    BadEncoding { index: usize },
}

/// Longest directive value quoted back in an error message.
const MAX_ECHO: usize = 32;

/// Parse a playlist request query (without the leading `?`): `&`-separated, percent-decoded
/// (`+` is a space) `key=value` pairs. Directive values must be decimal integers (`_HLS_msn`,
/// `_HLS_part`) or exactly `YES`/`v2` (`_HLS_skip`); a repeated directive or `_HLS_part` without
/// `_HLS_msn` is an error. Empty pairs are ignored; a key without `=` has the value `""`.
pub fn parse_query(query: &str) -> Result<HlsQuery, HlsQueryError> {
    let mut q = HlsQuery::default();
    let mut skip_seen = false;
    for (index, pair) in query.split('&').enumerate().filter(|(_, p)| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(raw_key).ok_or(HlsQueryError::BadEncoding { index })?;
        let value = percent_decode(raw_value).ok_or(HlsQueryError::BadEncoding { index })?;
        match key.as_str() {
            "_HLS_msn" => {
                if q.msn.is_some() {
                    return Err(HlsQueryError::Repeated { key: "_HLS_msn" });
                }
                q.msn = Some(parse_decimal(&value, "_HLS_msn")?);
            }
            "_HLS_part" => {
                if q.part.is_some() {
                    return Err(HlsQueryError::Repeated { key: "_HLS_part" });
                }
                q.part = Some(parse_decimal(&value, "_HLS_part")?);
            }
            "_HLS_skip" => {
                if skip_seen {
                    return Err(HlsQueryError::Repeated { key: "_HLS_skip" });
                }
                skip_seen = true;
                q.skip = match value.as_str() {
                    "YES" => SkipRequest::Yes,
                    "v2" => SkipRequest::V2,
                    _ => return Err(HlsQueryError::BadSkip { value: echo(&value) }),
                };
            }
            k if k.starts_with("_HLS_") => {}
            _ => q.other.push((key, value)),
        }
    }
    if q.part.is_some() && q.msn.is_none() {
        return Err(HlsQueryError::PartWithoutMsn);
    }
    Ok(q)
}

fn echo(value: &str) -> String {
    value.chars().take(MAX_ECHO).collect()
}

/// A decimal-integer (§4.2: digits only, no sign, no spaces).
fn parse_decimal<T: std::str::FromStr>(value: &str, key: &'static str) -> Result<T, HlsQueryError> {
    let bad = || HlsQueryError::NotANumber { key, value: echo(value) };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode_component(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Blocking playlist reload
// ---------------------------------------------------------------------------------------------

/// What to do with a playlist request that carries `_HLS_msn` (§6.2.5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockDecision {
    /// Answer now: the playlist already lists what was asked for (or more).
    Ready,
    /// Hold the request until the playlist changes, then decide again (answer 503 after three
    /// target durations, §6.2.5.2).
    Wait,
    /// Answer 400 at once: the request is too far ahead of the live edge to be legitimate.
    TooFarAhead,
}

/// Decide a blocking playlist request. Pure; the caller re-evaluates on every playlist change.
///
/// The live edge (what [`MediaPlaylist::edge`] returns):
/// - `last_msn`: the newest segment that is complete or has at least one completed part. A
///   segment that has just been opened and has no part yet is *not* the edge; its predecessor is.
/// - `last_part`: index (from 0) of the newest completed part of `last_msn`; for a complete
///   segment, the index of its final part; `None` if it has no parts.
/// - `last_segment_complete`: `last_msn` is listed with its `EXTINF`.
///
/// Semantics:
/// - `_HLS_msn=M` alone: ready once segment M is complete (`M < last_msn`, or `M == last_msn` and
///   it is complete). A segment whose parts are listed but whose `EXTINF` is not is not yet "a
///   Media Segment" of the playlist.
/// - `_HLS_msn=M&_HLS_part=N`: ready once part N of segment M is listed. Segments before
///   `last_msn` are complete, and a part index past the end of a complete segment means part 0 of
///   the next one (§6.2.5.2), which exists because the edge segment has a part or is complete;
///   so every `M < last_msn` is ready. For `M == last_msn`, ready iff `N <= last_part`.
/// - Too far ahead: `M` greater than the last *complete* segment's MSN plus two (§6.2.5.2 SHOULD
///   return 400), or a part more than `part_limit` (the Advance Part Limit,
///   [`advance_part_limit`]) past the last one. Parts of the segment after the edge count from
///   0, so `N` beyond the limit there is at least that far ahead too.
/// - A segment already gone from the playlist is ready: the whole playlist is served (§6.2.5.2).
///
/// The caller handles `EXT-X-ENDLIST` (blocking is ignored once the playlist has ended).
pub fn block_decision(
    req_msn: u64,
    req_part: Option<u32>,
    last_msn: u64,
    last_part: Option<u32>,
    last_segment_complete: bool,
    part_limit: u32,
) -> BlockDecision {
    // MSN of the last complete segment plus two, without underflow when segment 0 is in progress.
    let limit = if last_segment_complete { last_msn.saturating_add(2) } else { last_msn.saturating_add(1) };
    if req_msn > limit {
        return BlockDecision::TooFarAhead;
    }
    let ready = match req_part {
        _ if req_msn < last_msn => true,
        _ if req_msn > last_msn => false,
        None => last_segment_complete,
        Some(n) => last_part.is_some_and(|last| n <= last),
    };
    if ready {
        return BlockDecision::Ready;
    }
    if let Some(part) = req_part {
        let beyond = if req_msn == last_msn {
            i64::from(part) - last_part.map_or(-1, i64::from)
        } else {
            i64::from(part) + 1
        };
        if beyond > i64::from(part_limit) {
            return BlockDecision::TooFarAhead;
        }
    }
    BlockDecision::Wait
}

/// The Advance Part Limit (§6.2.5.2): 3 / part target when it is under a second, else 3.
pub fn advance_part_limit(part_target: Duration) -> u32 {
    if part_target >= Duration::from_secs(1) || part_target.is_zero() {
        3
    } else {
        saturate_u32((3.0 / part_target.as_secs_f64()).floor() as usize)
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// A media playlist as the validator read it. Sequence numbers are computed, not read: `msn` of a
/// segment is `EXT-X-MEDIA-SEQUENCE + SKIPPED-SEGMENTS + index`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedMediaPlaylist {
    pub version: Option<u32>,
    pub target_duration: Option<u64>,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub part_target: Option<f64>,
    pub can_block_reload: bool,
    pub part_hold_back: Option<f64>,
    pub can_skip_until: Option<f64>,
    pub skipped_segments: u64,
    /// Complete segments, in order.
    pub segments: Vec<ParsedSegment>,
    /// Parts after the last `EXTINF`: the segment in progress, MSN `next_msn()`.
    pub trailing_parts: Vec<ParsedPart>,
    pub preload_hints: Vec<String>,
    pub rendition_reports: Vec<ParsedRenditionReport>,
    pub ended: bool,
}

impl ParsedMediaPlaylist {
    /// MSN of the segment after the last complete one (the one the trailing parts belong to).
    pub fn next_msn(&self) -> u64 {
        self.media_sequence + self.skipped_segments + self.segments.len() as u64
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedSegment {
    pub msn: u64,
    pub duration: f64,
    pub uri: String,
    pub discontinuity: bool,
    pub map_uri: Option<String>,
    pub program_date_time: Option<SystemTime>,
    pub parts: Vec<ParsedPart>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedPart {
    pub duration: f64,
    pub uri: String,
    pub independent: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedRenditionReport {
    pub uri: String,
    pub last_msn: Option<u64>,
    pub last_part: Option<u64>,
}

/// Slack for comparing durations written with five truncated decimals.
const PART_TOLERANCE_SECS: f64 = 1e-6;
/// Slack for a segment's `EXTINF` against the sum of its parts, plus 10 µs per part (truncation).
const SUM_TOLERANCE_SECS: f64 = 1e-3;
/// §6.2.1 MAY: "small (sub-second) overlaps" between successive program date-times.
const PDT_OVERLAP_SECS: f64 = 1.0;

/// Structural LL-HLS checks on a rendered media playlist; returns every violation found.
///
/// Each message starts with a rule tag in brackets (`[part-duration]`, `[skip]`, ...) followed by
/// the line number, so tests can assert on the rule without matching prose. Rules: `extm3u`,
/// `syntax`, `version`, `target-duration`, `extinf-over-target`, `part-inf`, `part-duration`,
/// `server-control`, `part-hold-back`, `can-skip-until`, `part-sum`, `preload-hint`, `skip`,
/// `msn`, `independent`, `pdt`, `rendition-report`, `map`, `discontinuity-sequence`, `endlist`.
pub fn validate_media_playlist(text: &str) -> Result<(), Vec<String>> {
    parse_media_playlist(text).map(|_| ())
}

/// [`validate_media_playlist`], returning what was read when the playlist is valid.
pub fn parse_media_playlist(text: &str) -> Result<ParsedMediaPlaylist, Vec<String>> {
    let mut v = MediaValidator::default();
    v.run(text);
    if v.errors.is_empty() {
        Ok(v.pl)
    } else {
        Err(v.errors)
    }
}

/// Checks between two successive versions of one media playlist (e.g. two reloads): MSNs and
/// discontinuity sequence numbers never go back, the target duration never changes, and a segment
/// present in both has the same URI and duration (§6.2.1, §6.2.2).
pub fn check_reload_continuity(
    prev: &ParsedMediaPlaylist,
    next: &ParsedMediaPlaylist,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if next.media_sequence < prev.media_sequence {
        errors.push(format!(
            "[msn] EXT-X-MEDIA-SEQUENCE went back from {} to {}",
            prev.media_sequence, next.media_sequence
        ));
    }
    if next.discontinuity_sequence < prev.discontinuity_sequence {
        errors.push(format!(
            "[discontinuity-sequence] went back from {} to {}",
            prev.discontinuity_sequence, next.discontinuity_sequence
        ));
    }
    if prev.target_duration != next.target_duration {
        errors.push(format!(
            "[target-duration] changed from {:?} to {:?}",
            prev.target_duration, next.target_duration
        ));
    }
    if next.next_msn() < prev.next_msn() {
        errors.push(format!("[msn] live edge went back from {} to {}", prev.next_msn(), next.next_msn()));
    }
    for seg in &next.segments {
        if let Some(old) = prev.segments.iter().find(|s| s.msn == seg.msn) {
            if old.uri != seg.uri || (old.duration - seg.duration).abs() > PART_TOLERANCE_SECS {
                errors.push(format!(
                    "[msn] segment {} changed: {} ({}) became {} ({})",
                    seg.msn, old.uri, old.duration, seg.uri, seg.duration
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Validate a multivariant playlist: `#EXTM3U` first, at least one `EXT-X-STREAM-INF`, each with
/// a decimal-integer `BANDWIDTH` and a quoted `CODECS`, well-formed `RESOLUTION`/`FRAME-RATE`
/// when present, and followed by a URI line; no media playlist tags.
pub fn validate_multivariant(text: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.first().map(|l| l.trim_end()) != Some("#EXTM3U") {
        errors.push("[extm3u] line 1: playlist must start with #EXTM3U".to_owned());
    }
    let mut variants = 0;
    let mut i = 1;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let n = i + 1;
        i += 1;
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            variants += 1;
            match parse_attributes(attrs) {
                Err(e) => errors.push(format!("[syntax] line {n}: {e}")),
                Ok(a) => {
                    match attr(&a, "BANDWIDTH") {
                        Some(v) if !v.quoted && is_decimal_integer(&v.value) => {}
                        Some(_) => errors.push(format!("[stream-inf] line {n}: BANDWIDTH is not an integer")),
                        None => errors.push(format!("[stream-inf] line {n}: BANDWIDTH missing")),
                    }
                    if let Some(v) = attr(&a, "AVERAGE-BANDWIDTH") {
                        if v.quoted || !is_decimal_integer(&v.value) {
                            errors
                                .push(format!("[stream-inf] line {n}: AVERAGE-BANDWIDTH is not an integer"));
                        }
                    }
                    match attr(&a, "CODECS") {
                        Some(v) if v.quoted && !v.value.is_empty() => {}
                        _ => errors.push(format!("[stream-inf] line {n}: CODECS missing or not quoted")),
                    }
                    if let Some(v) = attr(&a, "RESOLUTION") {
                        let ok = v
                            .value
                            .split_once('x')
                            .is_some_and(|(w, h)| is_decimal_integer(w) && is_decimal_integer(h));
                        if !ok || v.quoted {
                            errors.push(format!("[stream-inf] line {n}: RESOLUTION is not WxH"));
                        }
                    }
                    if let Some(v) = attr(&a, "FRAME-RATE") {
                        if v.quoted || parse_decimal_float(&v.value).is_none() {
                            errors.push(format!("[stream-inf] line {n}: FRAME-RATE is not a number"));
                        }
                    }
                }
            }
            // The URI is the next line that is neither blank nor a comment/tag.
            match lines[i..].iter().position(|l| !l.trim().is_empty()) {
                Some(off) if !lines[i + off].starts_with('#') => i += off + 1,
                _ => errors.push(format!("[stream-inf] line {n}: no URI line follows")),
            }
        } else if line.starts_with("#EXTINF")
            || line.starts_with("#EXT-X-TARGETDURATION")
            || line.starts_with("#EXT-X-PART")
            || line.starts_with("#EXT-X-MEDIA-SEQUENCE")
        {
            errors.push(format!("[syntax] line {n}: media playlist tag in a multivariant playlist"));
        } else if !line.is_empty() && !line.starts_with('#') {
            errors.push(format!("[syntax] line {n}: URI line without EXT-X-STREAM-INF"));
        }
    }
    if variants == 0 {
        errors.push("[stream-inf] no EXT-X-STREAM-INF".to_owned());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Tags that apply to the next segment, collected until its `EXTINF` (or first part) arrives.
#[derive(Default)]
struct Pending {
    discontinuity: bool,
    map_uri: Option<String>,
    pdt: Option<SystemTime>,
    parts: Vec<ParsedPart>,
    extinf: Option<(f64, usize)>,
    /// A tag of this segment has been seen (tags must not dangle before the preload hint).
    any_tag: bool,
}

#[derive(Default)]
struct MediaValidator {
    pl: ParsedMediaPlaylist,
    errors: Vec<String>,
    pending: Pending,
    /// A segment tag, part or URI has been seen (header tags must come before).
    in_body: bool,
    /// A PRELOAD-HINT has been seen (no part or segment may follow).
    hint_line: Option<usize>,
    saw_media_sequence: bool,
    saw_target_duration: bool,
    saw_part_inf: bool,
    saw_server_control: bool,
    saw_skip_line: Option<usize>,
    any_part: bool,
    any_map: bool,
    decimal_extinf: bool,
    /// Last program date-time and the media time elapsed since it.
    last_pdt: Option<(SystemTime, f64)>,
    /// Uris seen, to catch a segment or part listed twice.
    uris: std::collections::HashSet<String>,
    /// `(line, DURATION)` of every part, checked against PART-TARGET at the end.
    part_lines: Vec<(usize, f64)>,
    /// `EXTINF` line of every complete segment, parallel to `pl.segments`.
    segment_lines: Vec<usize>,
}

impl MediaValidator {
    fn err(&mut self, rule: &str, line: usize, msg: impl std::fmt::Display) {
        self.errors.push(format!("[{rule}] line {line}: {msg}"));
    }

    fn run(&mut self, text: &str) {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
        match lines.next() {
            Some((_, "#EXTM3U")) => {}
            _ => self.err("extm3u", 1, "playlist must start with #EXTM3U"),
        }
        for (n, line) in lines {
            if line.is_empty() {
                continue;
            }
            if self.pl.ended {
                self.err("endlist", n, "content after EXT-X-ENDLIST");
            }
            if !line.starts_with('#') {
                self.uri_line(n, line);
                continue;
            }
            let (tag, value) = line.split_once(':').unwrap_or((line, ""));
            match tag {
                "#EXT-X-VERSION" => match value.parse() {
                    Ok(v) if self.pl.version.is_none() => self.pl.version = Some(v),
                    Ok(_) => self.err("version", n, "EXT-X-VERSION repeated"),
                    Err(_) => self.err("version", n, "EXT-X-VERSION is not an integer"),
                },
                "#EXT-X-TARGETDURATION" => {
                    self.header_tag(n, tag);
                    if std::mem::replace(&mut self.saw_target_duration, true) {
                        self.err("target-duration", n, "EXT-X-TARGETDURATION repeated");
                    }
                    match value.parse() {
                        Ok(v) if is_decimal_integer(value) => self.pl.target_duration = Some(v),
                        _ => self.err("target-duration", n, "EXT-X-TARGETDURATION is not an integer"),
                    }
                }
                "#EXT-X-MEDIA-SEQUENCE" => {
                    self.header_tag(n, tag);
                    if std::mem::replace(&mut self.saw_media_sequence, true) {
                        self.err("msn", n, "EXT-X-MEDIA-SEQUENCE repeated");
                    }
                    match value.parse() {
                        Ok(v) if is_decimal_integer(value) => self.pl.media_sequence = v,
                        _ => self.err("msn", n, "EXT-X-MEDIA-SEQUENCE is not an integer"),
                    }
                }
                "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                    if self.in_body {
                        self.err("discontinuity-sequence", n, "must appear before the first segment");
                    }
                    match value.parse() {
                        Ok(v) if is_decimal_integer(value) => self.pl.discontinuity_sequence = v,
                        _ => self.err("discontinuity-sequence", n, "not an integer"),
                    }
                }
                "#EXT-X-PART-INF" => {
                    self.header_tag(n, tag);
                    self.saw_part_inf = true;
                    let a = self.attrs(n, value);
                    match attr(&a, "PART-TARGET").and_then(|v| parse_decimal_float(&v.value)) {
                        Some(t) if t > 0.0 => self.pl.part_target = Some(t),
                        _ => self.err("part-inf", n, "PART-TARGET missing or not a positive number"),
                    }
                }
                "#EXT-X-SERVER-CONTROL" => {
                    self.header_tag(n, tag);
                    self.saw_server_control = true;
                    let a = self.attrs(n, value);
                    self.pl.can_block_reload =
                        attr(&a, "CAN-BLOCK-RELOAD").is_some_and(|v| v.value == "YES" && !v.quoted);
                    self.pl.part_hold_back = self.float_attr(n, &a, "PART-HOLD-BACK", "part-hold-back");
                    self.pl.can_skip_until = self.float_attr(n, &a, "CAN-SKIP-UNTIL", "can-skip-until");
                    if !self.pl.can_block_reload {
                        self.err("server-control", n, "CAN-BLOCK-RELOAD=YES missing");
                    }
                }
                "#EXT-X-SKIP" => {
                    if self.saw_skip_line.is_some() {
                        self.err("skip", n, "EXT-X-SKIP repeated");
                    }
                    if self.in_body {
                        self.err("skip", n, "EXT-X-SKIP must be the first media tag after the header");
                    }
                    self.saw_skip_line = Some(n);
                    let a = self.attrs(n, value);
                    match attr(&a, "SKIPPED-SEGMENTS") {
                        Some(v) if !v.quoted && is_decimal_integer(&v.value) => {
                            self.pl.skipped_segments = v.value.parse().unwrap_or(u64::MAX);
                        }
                        _ => self.err("skip", n, "SKIPPED-SEGMENTS missing or not an integer"),
                    }
                    self.in_body = true;
                }
                "#EXT-X-MAP" => {
                    self.body_tag();
                    self.any_map = true;
                    let a = self.attrs(n, value);
                    match attr(&a, "URI") {
                        Some(u) if u.quoted && !u.value.is_empty() => {
                            self.pending.map_uri = Some(u.value.clone())
                        }
                        _ => self.err("map", n, "EXT-X-MAP without a quoted URI"),
                    }
                    self.check_not_after_parts(n, "EXT-X-MAP");
                }
                "#EXT-X-DISCONTINUITY" => {
                    self.body_tag();
                    self.pending.discontinuity = true;
                    self.check_not_after_parts(n, "EXT-X-DISCONTINUITY");
                }
                "#EXT-X-PROGRAM-DATE-TIME" => {
                    self.body_tag();
                    self.check_not_after_parts(n, "EXT-X-PROGRAM-DATE-TIME");
                    match humantime::parse_rfc3339(value) {
                        Ok(t) => {
                            if let Some((prev, elapsed)) = self.last_pdt {
                                let expected = prev + Duration::from_secs_f64(elapsed);
                                let earliest = expected
                                    .checked_sub(Duration::from_secs_f64(PDT_OVERLAP_SECS))
                                    .unwrap_or(SystemTime::UNIX_EPOCH);
                                if t <= prev || t < earliest {
                                    self.err(
                                        "pdt",
                                        n,
                                        format!("PROGRAM-DATE-TIME {value} goes back in time"),
                                    );
                                }
                            }
                            self.last_pdt = Some((t, 0.0));
                            self.pending.pdt = Some(t);
                        }
                        Err(_) => self.err("pdt", n, format!("unparseable PROGRAM-DATE-TIME {value:?}")),
                    }
                }
                "#EXT-X-PART" => self.part(n, value),
                "#EXTINF" => {
                    self.body_tag();
                    let dur = value.split_once(',').map_or(value, |(d, _)| d);
                    match parse_decimal_float(dur) {
                        Some(d) => {
                            if dur.contains('.') {
                                self.decimal_extinf = true;
                            }
                            if self.pending.extinf.replace((d, n)).is_some() {
                                self.err("syntax", n, "two EXTINF tags for one segment");
                            }
                        }
                        None => self.err("syntax", n, format!("EXTINF duration {dur:?} is not a number")),
                    }
                    if let Some(h) = self.hint_line {
                        self.err("preload-hint", h, "EXT-X-PRELOAD-HINT is followed by a segment");
                    }
                }
                "#EXT-X-PRELOAD-HINT" => {
                    let a = self.attrs(n, value);
                    if !attr(&a, "TYPE").is_some_and(|t| t.value == "PART" || t.value == "MAP") {
                        self.err("preload-hint", n, "TYPE must be PART or MAP");
                    }
                    match attr(&a, "URI") {
                        Some(u) if u.quoted && !u.value.is_empty() => {
                            if self.uris.contains(&u.value) {
                                self.err("preload-hint", n, "hints a resource already listed");
                            }
                            self.pl.preload_hints.push(u.value.clone());
                        }
                        _ => self.err("preload-hint", n, "URI missing or not quoted"),
                    }
                    if self.pl.preload_hints.len() > 1 {
                        self.err("preload-hint", n, "more than one EXT-X-PRELOAD-HINT");
                    }
                    if self.pending.any_tag && self.pending.parts.is_empty() {
                        self.err("preload-hint", n, "segment tags are left dangling before the hint");
                    }
                    self.hint_line.get_or_insert(n);
                }
                "#EXT-X-RENDITION-REPORT" => {
                    let a = self.attrs(n, value);
                    let uri = attr(&a, "URI").filter(|u| u.quoted && !u.value.is_empty());
                    let int = |k: &str| {
                        attr(&a, k)
                            .filter(|v| is_decimal_integer(&v.value))
                            .and_then(|v| v.value.parse().ok())
                    };
                    let report = ParsedRenditionReport {
                        uri: uri.map(|u| u.value.clone()).unwrap_or_default(),
                        last_msn: int("LAST-MSN"),
                        last_part: int("LAST-PART"),
                    };
                    if uri.is_none() {
                        self.err("rendition-report", n, "URI missing or not quoted");
                    }
                    if report.last_msn.is_none() {
                        self.err("rendition-report", n, "LAST-MSN missing or not an integer");
                    }
                    if report.last_part.is_none() && self.saw_part_inf {
                        self.err("rendition-report", n, "LAST-PART missing or not an integer");
                    }
                    self.pl.rendition_reports.push(report);
                }
                "#EXT-X-ENDLIST" => self.pl.ended = true,
                "#EXT-X-INDEPENDENT-SEGMENTS"
                | "#EXT-X-PLAYLIST-TYPE"
                | "#EXT-X-START"
                | "#EXT-X-DEFINE"
                | "#EXT-X-DATERANGE"
                | "#EXT-X-GAP"
                | "#EXT-X-BITRATE"
                | "#EXT-X-KEY"
                | "#EXT-X-BYTERANGE" => {}
                "#EXT-X-STREAM-INF" | "#EXT-X-MEDIA" | "#EXT-X-I-FRAME-STREAM-INF" => {
                    self.err("syntax", n, format!("multivariant tag {tag} in a media playlist"))
                }
                _ => {} // Comments and tags we do not know are ignored, as clients do.
            }
        }
        self.finish();
    }

    fn header_tag(&mut self, n: usize, tag: &str) {
        if self.in_body {
            self.err("syntax", n, format!("{tag} after the first segment"));
        }
    }

    fn body_tag(&mut self) {
        self.in_body = true;
        self.pending.any_tag = true;
    }

    /// Segment-level tags must precede the segment's first part (§4.4.4.9).
    fn check_not_after_parts(&mut self, n: usize, tag: &str) {
        if !self.pending.parts.is_empty() {
            self.err("syntax", n, format!("{tag} after the first EXT-X-PART of its segment"));
        }
    }

    fn attrs(&mut self, n: usize, value: &str) -> Vec<(String, AttrValue)> {
        parse_attributes(value).unwrap_or_else(|e| {
            self.err("syntax", n, e);
            Vec::new()
        })
    }

    fn float_attr(&mut self, n: usize, a: &[(String, AttrValue)], key: &str, rule: &str) -> Option<f64> {
        let v = attr(a, key)?;
        let f = parse_decimal_float(&v.value).filter(|_| !v.quoted);
        if f.is_none() {
            self.err(rule, n, format!("{key} is not a number"));
        }
        f
    }

    fn part(&mut self, n: usize, value: &str) {
        self.body_tag();
        self.any_part = true;
        if let Some(h) = self.hint_line {
            self.err("preload-hint", h, "EXT-X-PRELOAD-HINT is not after the last part");
        }
        if self.pending.extinf.is_some() {
            self.err("syntax", n, "EXT-X-PART between EXTINF and its URI");
        }
        let a = self.attrs(n, value);
        let duration = attr(&a, "DURATION").filter(|v| !v.quoted).and_then(|v| parse_decimal_float(&v.value));
        let uri = attr(&a, "URI").filter(|v| v.quoted && !v.value.is_empty()).map(|v| v.value.clone());
        let independent = attr(&a, "INDEPENDENT").is_some_and(|v| v.value == "YES");
        if duration.is_none() {
            self.err("syntax", n, "EXT-X-PART DURATION missing or not a number");
        }
        let Some(uri) = uri else {
            self.err("syntax", n, "EXT-X-PART URI missing or not quoted");
            return;
        };
        if !self.uris.insert(uri.clone()) {
            self.err("msn", n, format!("{uri} is listed twice"));
        }
        if self.pending.parts.is_empty() && !independent {
            self.err("independent", n, "first part of a segment lacks INDEPENDENT=YES");
        }
        let duration = duration.unwrap_or(0.0);
        self.pending.parts.push(ParsedPart { duration, uri, independent });
        self.pending.any_tag = true;
        // Duration against PART-TARGET is checked at the end, when PART-INF is certainly known.
        self.part_lines.push((n, duration));
    }

    fn uri_line(&mut self, n: usize, uri: &str) {
        self.in_body = true;
        if let Some(h) = self.hint_line {
            self.err("preload-hint", h, "EXT-X-PRELOAD-HINT is followed by a segment");
        }
        let Some((duration, extinf_line)) = self.pending.extinf.take() else {
            self.err("syntax", n, "URI line without EXTINF");
            return;
        };
        if !self.uris.insert(uri.to_owned()) {
            self.err("msn", n, format!("{uri} is listed twice"));
        }
        let pending = std::mem::take(&mut self.pending);
        if let Some((_, elapsed)) = &mut self.last_pdt {
            *elapsed += duration;
        }
        let msn = self.pl.media_sequence + self.pl.skipped_segments + self.pl.segments.len() as u64;
        self.pl.segments.push(ParsedSegment {
            msn,
            duration,
            uri: uri.to_owned(),
            discontinuity: pending.discontinuity,
            map_uri: pending.map_uri,
            program_date_time: pending.pdt,
            parts: pending.parts,
        });
        self.segment_lines.push(extinf_line);
    }

    fn finish(&mut self) {
        if let Some((_, n)) = self.pending.extinf {
            self.err("syntax", n, "EXTINF without a URI line");
        }
        let trailing_has_map = self.pending.map_uri.is_some();
        self.pl.trailing_parts = std::mem::take(&mut self.pending.parts);

        let Some(td) = self.pl.target_duration else {
            self.errors.push("[target-duration] EXT-X-TARGETDURATION missing".to_owned());
            return;
        };
        if !self.saw_media_sequence && !self.pl.segments.is_empty() {
            // Absent means 0, which is legal, but a live LL-HLS playlist removes segments and so
            // MUST carry it (§6.2.2).
            self.errors.push("[msn] EXT-X-MEDIA-SEQUENCE missing".to_owned());
        }
        if self.pl.media_sequence.checked_add(self.pl.skipped_segments).is_none() {
            self.errors.push("[skip] SKIPPED-SEGMENTS overflows the media sequence".to_owned());
        }

        // Segment durations against the target (§4.4.3.1: rounded to the nearest integer).
        for (seg, &line) in self.pl.segments.iter().zip(&self.segment_lines) {
            if seg.duration.round() > td as f64 {
                self.errors.push(format!(
                    "[extinf-over-target] line {line}: EXTINF {} rounds above EXT-X-TARGETDURATION {td}",
                    seg.duration
                ));
            }
        }

        // Parts.
        if self.any_part && !self.saw_part_inf {
            self.errors.push("[part-inf] EXT-X-PART used without EXT-X-PART-INF".to_owned());
        }
        if let Some(pt) = self.pl.part_target {
            for &(line, d) in &self.part_lines {
                if d > pt + PART_TOLERANCE_SECS {
                    self.errors.push(format!(
                        "[part-duration] line {line}: EXT-X-PART DURATION {d} exceeds PART-TARGET {pt}"
                    ));
                }
            }
            match self.pl.part_hold_back {
                None => self.errors.push("[part-hold-back] PART-HOLD-BACK missing".to_owned()),
                Some(phb) if phb + PART_TOLERANCE_SECS < 2.0 * pt => self.errors.push(format!(
                    "[part-hold-back] PART-HOLD-BACK {phb} is less than twice PART-TARGET {pt}"
                )),
                Some(_) => {}
            }
        }
        for (seg, &line) in self.pl.segments.iter().zip(&self.segment_lines) {
            if seg.parts.is_empty() {
                continue;
            }
            let sum: f64 = seg.parts.iter().map(|p| p.duration).sum();
            let tolerance = SUM_TOLERANCE_SECS + 1e-5 * seg.parts.len() as f64;
            if (sum - seg.duration).abs() > tolerance {
                self.errors.push(format!(
                    "[part-sum] line {line}: parts add up to {sum:.5}, EXTINF says {}",
                    seg.duration
                ));
            }
        }

        // Server control.
        if !self.saw_server_control {
            self.errors.push("[server-control] EXT-X-SERVER-CONTROL missing".to_owned());
        }
        if let Some(csu) = self.pl.can_skip_until {
            if csu + PART_TOLERANCE_SECS < 6.0 * td as f64 {
                self.errors.push(format!(
                    "[can-skip-until] CAN-SKIP-UNTIL {csu} is less than six target durations ({})",
                    6 * td
                ));
            }
        }

        // Delta update consistency.
        if let Some(line) = self.saw_skip_line {
            match self.pl.can_skip_until {
                None => self.err("skip", line, "EXT-X-SKIP without CAN-SKIP-UNTIL"),
                Some(boundary) => {
                    let kept: f64 = self.pl.segments.iter().map(|s| s.duration).sum();
                    let first = self.pl.segments.first().map_or(0.0, |s| s.duration);
                    let slack = SUM_TOLERANCE_SECS + 1e-5 * self.pl.segments.len() as f64;
                    if self.pl.skipped_segments > 0 && kept + slack < boundary {
                        self.err(
                            "skip",
                            line,
                            format!("skipped segments are within CAN-SKIP-UNTIL: only {kept:.3}s kept"),
                        );
                    }
                    if kept - first > boundary + slack {
                        self.err(
                            "skip",
                            line,
                            format!("first kept segment lies beyond CAN-SKIP-UNTIL ({kept:.3}s kept)"),
                        );
                    }
                }
            }
            if self.pl.ended {
                self.err("skip", line, "delta update of an ended playlist");
            }
        }

        // Preload hint.
        if self.pl.ended && !self.pl.preload_hints.is_empty() {
            self.errors.push("[preload-hint] EXT-X-PRELOAD-HINT in an ended playlist".to_owned());
        }

        // Init section: if any EXT-X-MAP is used, the first listed media must have one in force.
        if self.any_map {
            let first_has_map = match self.pl.segments.first() {
                Some(seg) => seg.map_uri.is_some(),
                None => trailing_has_map,
            };
            if !first_has_map && (!self.pl.segments.is_empty() || !self.pl.trailing_parts.is_empty()) {
                self.errors.push("[map] first segment has no EXT-X-MAP in force".to_owned());
            }
        }

        // Version (§8).
        let mut required = 1;
        if self.decimal_extinf {
            required = VERSION_DECIMAL_EXTINF;
        }
        if self.any_map {
            required = VERSION_MAP;
        }
        if self.saw_skip_line.is_some() {
            required = VERSION_SKIP;
        }
        let declared = self.pl.version.unwrap_or(1);
        if declared < required {
            self.errors.push(format!("[version] EXT-X-VERSION {declared} is below the required {required}"));
        }
    }
}

/// One attribute value: its text, unquoted, and whether it was a quoted-string.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AttrValue {
    value: String,
    quoted: bool,
}

fn attr<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> Option<&'a AttrValue> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Parse an attribute-list (§4.2): `NAME=value` pairs separated by commas, where a value is either
/// a quoted-string (which may contain commas) or a run of characters without commas.
fn parse_attributes(s: &str) -> Result<Vec<(String, AttrValue)>, String> {
    let mut out: Vec<(String, AttrValue)> = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or_else(|| format!("attribute without '=' in {s:?}"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("bad attribute name {name:?}"));
        }
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').ok_or_else(|| format!("unterminated quoted-string for {name}"))?;
            (AttrValue { value: q[..end].to_owned(), quoted: true }, &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (AttrValue { value: after[..end].to_owned(), quoted: false }, &after[end..])
        };
        if out.iter().any(|(k, _)| k == name) {
            return Err(format!("attribute {name} repeated"));
        }
        out.push((name.to_owned(), value));
        rest = match tail.strip_prefix(',') {
            Some(t) if !t.is_empty() => t,
            Some(_) => return Err("trailing comma in attribute list".to_owned()),
            None if tail.is_empty() => "",
            None => return Err(format!("junk after attribute {name}")),
        };
    }
    Ok(out)
}

fn is_decimal_integer(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A decimal-floating-point (§4.2): digits, optionally a point and more digits; no sign, no
/// exponent (which `f64::from_str` would accept).
fn parse_decimal_float(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && digits(frac) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(secs_ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0) + ms(secs_ms)
    }

    fn part(msn: u64, i: usize, d: u64) -> PartEntry {
        PartEntry { duration: ms(d), uri: format!("p{msn}.{i}.m4s"), independent: i == 0 }
    }

    /// A complete segment of `parts` (durations in ms), starting at `start_ms` of wall clock.
    fn seg(msn: u64, parts: &[u64], start_ms: u64) -> SegmentEntry {
        SegmentEntry {
            msn,
            duration: ms(parts.iter().sum()),
            uri: format!("s{msn}.m4s"),
            program_date_time: Some(at(start_ms)),
            discontinuity: false,
            map_uri: None,
            parts: parts.iter().enumerate().map(|(i, &d)| part(msn, i, d)).collect(),
            complete: true,
        }
    }

    /// Two complete segments and one in progress; the golden playlist below.
    fn small() -> MediaPlaylist {
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

    const SMALL: &str = "#EXTM3U
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
    fn long(n: u64) -> MediaPlaylist {
        let mut segments: Vec<_> = (0..n).map(|i| seg(100 + i, &[1000, 1000], i * 2000)).collect();
        segments[0].map_uri = Some("init.mp4".into());
        MediaPlaylist {
            media_sequence: 100,
            segments,
            preload_hint: None,
            rendition_reports: vec![],
            ..small()
        }
    }

    fn full(pl: &MediaPlaylist) -> String {
        render_media(pl, &RenderOptions::default())
    }

    fn delta(pl: &MediaPlaylist) -> String {
        render_media(pl, &RenderOptions { skip: SkipRequest::Yes, uri_query: "" })
    }

    fn assert_valid(text: &str) {
        if let Err(errors) = validate_media_playlist(text) {
            panic!("rejected:\n{text}\n{errors:#?}");
        }
    }

    /// Expect the validator to reject `text` with the given rule.
    fn assert_rule(text: &str, rule: &str) {
        let errors = validate_media_playlist(text).expect_err(&format!("accepted:\n{text}"));
        let tag = format!("[{rule}]");
        assert!(errors.iter().any(|e| e.starts_with(&tag)), "no {tag} in {errors:#?}\n{text}");
    }

    #[test]
    fn renders_every_media_tag() {
        let text = full(&small());
        assert_eq!(text, SMALL);
        assert_valid(&text);
    }

    #[test]
    fn ended_playlist_drops_hint_and_unfinished_segment() {
        let mut pl = small();
        pl.ended = true;
        let text = full(&pl);
        assert!(text.ends_with("LAST-PART=0\n#EXT-X-ENDLIST\n"), "{text}");
        assert!(!text.contains("PRELOAD-HINT") && !text.contains("p12.0"), "{text}");
        assert_valid(&text);
    }

    #[test]
    fn durations_are_truncated_never_rounded_up() {
        assert_eq!(fmt_secs(Duration::from_nanos(333_333_333)), "0.33333");
        assert_eq!(fmt_secs(Duration::from_nanos(1_999_999_999)), "1.99999");
        assert_eq!(fmt_secs(ms(200)), "0.200");
        assert_eq!(fmt_secs(Duration::from_micros(4_000_080)), "4.00008");
        assert_eq!(fmt_secs(Duration::ZERO), "0.000");
    }

    #[test]
    fn target_duration_rounds_up() {
        let pl = MediaPlaylist { target_duration: ms(2001), ..small() };
        assert!(full(&pl).contains("#EXT-X-TARGETDURATION:3\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000,CAN-SKIP-UNTIL=18.000\n"));
    }

    #[test]
    fn uri_query_reaches_every_uri() {
        let mut pl = small();
        pl.segments[1].uri = "s11.m4s?v=1".into();
        let text = render_media(&pl, &RenderOptions { skip: SkipRequest::No, uri_query: "token=abc" });
        for needle in [
            "#EXT-X-MAP:URI=\"init.mp4?token=abc\"",
            "URI=\"p10.0.m4s?token=abc\",INDEPENDENT=YES",
            "URI=\"p11.1.m4s?token=abc\"",
            "\ns10.m4s?token=abc\n",
            "\ns11.m4s?v=1&token=abc\n",
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.1.m4s?token=abc\"",
            "#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8?token=abc\",LAST-MSN=12",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        // Every URI, counted: 5 parts, 2 segments, map, hint, report.
        assert_eq!(text.matches("token=abc").count(), 10, "{text}");
        assert_valid(&text);
    }

    #[test]
    fn uri_query_cannot_inject() {
        let text = render_media(
            &small(),
            &RenderOptions { skip: SkipRequest::No, uri_query: "t=\"x\n#EXT-X-ENDLIST" },
        );
        assert!(text.contains("init.mp4?t=%22x%0A%23EXT-X-ENDLIST\""), "{text}");
        assert!(!text.contains("\n#EXT-X-ENDLIST"));
        assert_valid(&text);
    }

    #[test]
    fn with_query_separators() {
        assert_eq!(with_query("a.m4s", "t=1"), "a.m4s?t=1");
        assert_eq!(with_query("a.m4s?x=2", "t=1"), "a.m4s?x=2&t=1");
        assert_eq!(with_query("a.m4s?", "t=1"), "a.m4s?t=1");
        assert_eq!(with_query("a.m4s?x=2&", "t=1"), "a.m4s?x=2&t=1");
        assert_eq!(with_query("a.m4s#f", "t=1"), "a.m4s?t=1#f");
        assert_eq!(with_query("a.m4s", ""), "a.m4s");
    }

    #[test]
    fn parts_listed_only_near_the_live_edge() {
        // Twelve 2 s segments: parts stay for segments ending within 6 s of the end.
        let text = full(&long(12));
        for msn in 100..108 {
            assert!(!text.contains(&format!("p{msn}.0")), "parts of {msn} listed\n{text}");
        }
        for msn in 108..112 {
            assert!(text.contains(&format!("p{msn}.0.m4s\",INDEPENDENT=YES")), "parts of {msn} missing");
        }
        assert_valid(&text);
    }

    #[test]
    fn delta_update_skips_beyond_the_boundary() {
        // Boundary 12 s, 24 s of segments: the five ending before 12 s go.
        let pl = long(12);
        let text = delta(&pl);
        assert!(
            text.starts_with(
                "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000,CAN-SKIP-UNTIL=12.000\n\
             #EXT-X-PART-INF:PART-TARGET=1.000\n#EXT-X-MEDIA-SEQUENCE:100\n\
             #EXT-X-SKIP:SKIPPED-SEGMENTS=5\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:10.000Z\n\
             #EXTINF:2.000,\ns105.m4s\n"
            ),
            "{text}"
        );
        let parsed = parse_media_playlist(&text).unwrap();
        assert_eq!(parsed.skipped_segments, 5);
        assert_eq!(parsed.segments.first().map(|s| s.msn), Some(105));
        assert_eq!(parsed.segments.last().map(|s| s.msn), Some(111));
        // v2 behaves as YES.
        assert_eq!(render_media(&pl, &RenderOptions { skip: SkipRequest::V2, uri_query: "" }), text);
    }

    #[test]
    fn delta_update_of_a_short_playlist_is_the_full_playlist() {
        let pl = long(6);
        assert_eq!(delta(&pl), full(&pl));
        assert!(!delta(&pl).contains("EXT-X-SKIP"));
        assert!(full(&long(12)).contains("#EXT-X-VERSION:6\n"));
    }

    #[test]
    fn delta_update_ignored_once_ended() {
        let mut pl = long(12);
        pl.ended = true;
        assert_eq!(delta(&pl), full(&pl));
    }

    #[test]
    fn delta_update_extrapolates_program_date_time() {
        let mut pl = long(12);
        for s in &mut pl.segments[1..] {
            s.program_date_time = None;
        }
        let text = delta(&pl);
        assert!(
            text.contains("#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:10.000Z\n#EXTINF:2.000,\ns105.m4s"),
            "{text}"
        );
        assert_eq!(text.matches("PROGRAM-DATE-TIME").count(), 1);
        assert_valid(&text);
        // Not across a discontinuity: the timeline may have jumped.
        pl.segments[3].discontinuity = true;
        assert!(!delta(&pl).contains("PROGRAM-DATE-TIME"));
    }

    #[test]
    fn delta_update_keeps_discontinuity_sequence() {
        let mut pl = long(12);
        pl.discontinuity_sequence = 4;
        pl.segments[2].discontinuity = true; // skipped: its tag goes with it
        pl.segments[8].discontinuity = true; // kept
        let text = delta(&pl);
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:4\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n"), "{text}");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        assert_valid(&text);
    }

    #[test]
    fn discontinuity_and_its_sequence() {
        let mut pl = small();
        pl.discontinuity_sequence = 3;
        pl.segments[1].discontinuity = true;
        pl.segments[1].map_uri = Some("init2.mp4".into());
        pl.segments[2].discontinuity = true;
        let text = full(&pl);
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-DISCONTINUITY-SEQUENCE:3\n#EXT-X-MAP"));
        assert!(
            text.contains(
                "s10.m4s\n#EXT-X-MAP:URI=\"init2.mp4\"\n#EXT-X-DISCONTINUITY\n\
             #EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:02.000Z\n#EXT-X-PART:DURATION=1.000,URI=\"p11.0.m4s\""
            ),
            "{text}"
        );
        // The segment in progress carries its tags before its first part.
        assert!(text.contains(
            "s11.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:03.980Z\n#EXT-X-PART"
        ));
        assert_valid(&text);
        assert!(full(&small()).lines().all(|l| !l.starts_with("#EXT-X-DISCONTINUITY")));
    }

    #[test]
    fn empty_segment_in_progress_lists_nothing() {
        let mut pl = small();
        pl.segments[2].parts.clear();
        pl.segments[2].discontinuity = true;
        pl.preload_hint = Some(PreloadHint { uri: "p12.0.m4s".into() });
        let text = full(&pl);
        assert!(text.contains("s11.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.0.m4s\"\n"), "{text}");
        assert_valid(&text);
    }

    #[test]
    fn multivariant() {
        let variants = [
            VariantStream {
                uri: "source/index.m3u8".into(),
                bandwidth: 6_000_000,
                average_bandwidth: Some(4_500_000),
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((1920, 1080)),
                frame_rate: Some(29.97),
            },
            VariantStream {
                uri: "audio/index.m3u8".into(),
                bandwidth: 128_000,
                average_bandwidth: None,
                codecs: "mp4a.40.2".into(),
                resolution: None,
                frame_rate: None,
            },
        ];
        let text =
            render_multivariant(&variants, &RenderOptions { skip: SkipRequest::Yes, uri_query: "token=abc" });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=6000000,AVERAGE-BANDWIDTH=4500000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1920x1080,FRAME-RATE=29.970\n\
             source/index.m3u8?token=abc\n\
             #EXT-X-STREAM-INF:BANDWIDTH=128000,CODECS=\"mp4a.40.2\"\n\
             audio/index.m3u8?token=abc\n"
        );
        validate_multivariant(&text).unwrap();
        let bad = |t: &str| validate_multivariant(t).expect_err(t);
        bad(&text.replace("BANDWIDTH=128000,", ""));
        bad(&text.replace(",CODECS=\"mp4a.40.2\"", ""));
        bad(&text.replace("audio/index.m3u8?token=abc\n", ""));
        bad(&text.replace("RESOLUTION=1920x1080", "RESOLUTION=1920"));
        bad(&text.replace("#EXTM3U\n", ""));
        bad("#EXTM3U\n");
    }

    // --- delivery directives -------------------------------------------------------------------

    #[test]
    fn parse_query_accepts_directives() {
        assert_eq!(parse_query("").unwrap(), HlsQuery::default());
        let q = parse_query("_HLS_msn=12&_HLS_part=3&token=abc").unwrap();
        assert_eq!((q.msn, q.part, q.skip), (Some(12), Some(3), SkipRequest::No));
        assert_eq!(q.other, vec![("token".to_owned(), "abc".to_owned())]);
        assert_eq!(parse_query("_HLS_skip=YES").unwrap().skip, SkipRequest::Yes);
        assert_eq!(parse_query("_HLS_msn=0&_HLS_skip=v2").unwrap().skip, SkipRequest::V2);
        assert_eq!(parse_query("_HLS_msn=7").unwrap().part, None);
        // Decoding, empty pairs, bare keys, reserved-but-unknown directives.
        let q = parse_query("token=a%2Bb%20c+d&&flag&_HLS_push=1&%5FHLS_msn=5").unwrap();
        assert_eq!(q.msn, Some(5));
        assert_eq!(q.other, vec![("token".into(), "a+b c d".into()), ("flag".into(), String::new())]);
    }

    #[test]
    fn parse_query_refuses_bad_directives() {
        use HlsQueryError::*;
        assert_eq!(parse_query("_HLS_part=1"), Err(PartWithoutMsn));
        assert_eq!(parse_query("_HLS_part=1&token=x"), Err(PartWithoutMsn));
        for bad in [
            "_HLS_msn=abc",
            "_HLS_msn=-1",
            "_HLS_msn=",
            "_HLS_msn=+1",
            "_HLS_msn=1.0",
            "_HLS_msn=99999999999999999999999",
        ] {
            assert!(matches!(parse_query(bad), Err(NotANumber { key: "_HLS_msn", .. })), "{bad}");
        }
        assert!(matches!(parse_query("_HLS_msn=1&_HLS_part=x"), Err(NotANumber { key: "_HLS_part", .. })));
        assert!(matches!(parse_query("_HLS_msn=1&_HLS_part=4294967296"), Err(NotANumber { .. })));
        assert_eq!(parse_query("_HLS_skip=yes"), Err(BadSkip { value: "yes".into() }));
        assert_eq!(parse_query("_HLS_skip=NO"), Err(BadSkip { value: "NO".into() }));
        assert_eq!(parse_query("_HLS_msn=1&_HLS_msn=2"), Err(Repeated { key: "_HLS_msn" }));
        assert_eq!(parse_query("_HLS_skip=YES&_HLS_skip=YES"), Err(Repeated { key: "_HLS_skip" }));
        let err = parse_query("token=secret%zz").unwrap_err();
        assert_eq!(err, BadEncoding { index: 0 });
        assert!(!err.to_string().contains("secret"));
        assert!(PartWithoutMsn.to_string().contains("_HLS_msn"));
    }

    #[test]
    fn passthrough_query_reencodes() {
        let q = parse_query("_HLS_msn=3&token=a%20b%26c&x=%C3%A9").unwrap();
        assert_eq!(q.passthrough_query(), "token=a%20b%26c&x=%C3%A9");
        assert_eq!(parse_query(&q.passthrough_query()).unwrap().other, q.other);
    }

    // --- blocking --------------------------------------------------------------------------------

    #[test]
    fn block_decision_table() {
        use BlockDecision::*;
        // (req_msn, req_part, last_msn, last_part, complete) -> decision
        let table = [
            // Edge: segment 5 in progress with parts 0..=2.
            (4, None, 5, Some(2), false, Ready),
            (5, None, 5, Some(2), false, Wait), // msn alone needs the whole segment
            (5, Some(0), 5, Some(2), false, Ready),
            (5, Some(2), 5, Some(2), false, Ready),
            (5, Some(3), 5, Some(2), false, Wait),
            (4, Some(9), 5, Some(2), false, Ready), // past 4's end = 5.0, listed
            (6, None, 5, Some(2), false, Wait),
            (6, Some(0), 5, Some(2), false, Wait),
            (7, None, 5, Some(2), false, TooFarAhead), // last complete is 4; 4 + 2 = 6
            // Edge: segment 5 complete with parts 0..=3.
            (5, None, 5, Some(3), true, Ready),
            (5, Some(3), 5, Some(3), true, Ready),
            (5, Some(4), 5, Some(3), true, Wait), // = part 0 of 6
            (6, None, 5, Some(3), true, Wait),
            (7, Some(0), 5, Some(3), true, Wait),
            (8, None, 5, Some(3), true, TooFarAhead),
            (0, None, 5, Some(3), true, Ready), // long gone: serve the playlist
            // Segments without parts.
            (5, None, 5, None, true, Ready),
            (5, Some(0), 5, None, true, Wait),
            // Nothing of segment 0 yet.
            (0, None, 0, None, false, Wait),
            (0, Some(0), 0, None, false, Wait),
            (1, None, 0, None, false, Wait),
            (2, None, 0, None, false, TooFarAhead),
        ];
        for (req_msn, req_part, last_msn, last_part, complete, want) in table {
            assert_eq!(
                block_decision(req_msn, req_part, last_msn, last_part, complete, 15),
                want,
                "req ({req_msn}, {req_part:?}) at ({last_msn}, {last_part:?}, complete={complete})"
            );
        }
        // The Advance Part Limit (here 3): at most 3 parts past the newest one.
        assert_eq!(block_decision(5, Some(5), 5, Some(2), false, 3), Wait);
        assert_eq!(block_decision(5, Some(6), 5, Some(2), false, 3), TooFarAhead);
        assert_eq!(block_decision(6, Some(2), 5, Some(2), false, 3), Wait);
        assert_eq!(block_decision(6, Some(3), 5, Some(2), false, 3), TooFarAhead);
        assert_eq!(block_decision(5, Some(50), 5, Some(2), true, 3), TooFarAhead);
        // Parts of a listed segment are ready whatever their index.
        assert_eq!(block_decision(4, Some(50), 5, Some(2), false, 3), Ready);
    }

    #[test]
    fn playlist_block_decision() {
        use BlockDecision::*;
        let mut pl = small(); // 12 in progress with part 0; part target 1 s -> limit 3
        assert_eq!(pl.edge(), Some((12, Some(0), false)));
        assert_eq!(pl.block_decision(12, Some(0)), Ready);
        assert_eq!(pl.block_decision(12, Some(1)), Wait);
        assert_eq!(pl.block_decision(12, Some(3)), Wait);
        assert_eq!(pl.block_decision(12, Some(4)), TooFarAhead);
        assert_eq!(pl.block_decision(13, Some(2)), Wait);
        assert_eq!(pl.block_decision(13, Some(3)), TooFarAhead);
        assert_eq!(pl.block_decision(12, None), Wait);
        assert_eq!(pl.block_decision(11, None), Ready);
        // A segment just opened, no part yet: the edge is the previous one, and asking for the
        // part after its last means part 0 of the new one.
        pl.segments[2].parts.clear();
        assert_eq!(pl.edge(), Some((11, Some(1), true)));
        assert_eq!(pl.block_decision(11, Some(2)), Wait);
        assert_eq!(pl.block_decision(11, Some(1)), Ready);
        assert_eq!(pl.rendition_report("x.m3u8").map(|r| (r.last_msn, r.last_part)), Some((11, 1)));
        // Ended playlists never block.
        pl.ended = true;
        assert_eq!(pl.block_decision(99, Some(0)), Ready);
        // Nothing published.
        let empty = MediaPlaylist { segments: vec![], ..small() };
        assert_eq!(empty.edge(), None);
        assert_eq!(empty.block_decision(10, None), Wait);
        assert_eq!(empty.block_decision(12, None), TooFarAhead);
    }

    #[test]
    fn advance_part_limit_follows_the_spec() {
        assert_eq!(advance_part_limit(ms(200)), 15);
        assert_eq!(advance_part_limit(ms(500)), 6);
        assert_eq!(advance_part_limit(ms(1000)), 3);
        assert_eq!(advance_part_limit(ms(2000)), 3);
    }

    // --- validator: one test per rule ------------------------------------------------------------

    #[test]
    fn validator_extm3u() {
        assert_rule(&SMALL.replacen("#EXTM3U\n", "", 1), "extm3u");
    }

    #[test]
    fn validator_target_duration() {
        assert_rule(&SMALL.replace("#EXT-X-TARGETDURATION:2\n", ""), "target-duration");
        assert_rule(
            &SMALL.replace("#EXT-X-TARGETDURATION:2\n", "#EXT-X-TARGETDURATION:2.5\n"),
            "target-duration",
        );
    }

    #[test]
    fn validator_extinf_over_target() {
        assert_rule(&SMALL.replace("#EXTINF:1.980,", "#EXTINF:2.600,"), "extinf-over-target");
    }

    #[test]
    fn validator_part_inf() {
        assert_rule(&SMALL.replace("#EXT-X-PART-INF:PART-TARGET=1.000\n", ""), "part-inf");
    }

    #[test]
    fn validator_part_duration() {
        assert_rule(&SMALL.replace("DURATION=0.980", "DURATION=1.010"), "part-duration");
    }

    #[test]
    fn validator_server_control() {
        assert_rule(&SMALL.replace("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO"), "server-control");
        let without = SMALL.lines().filter(|l| !l.starts_with("#EXT-X-SERVER-CONTROL")).collect::<Vec<_>>();
        assert_rule(&without.join("\n"), "server-control");
    }

    #[test]
    fn validator_part_hold_back() {
        assert_rule(&SMALL.replace("PART-HOLD-BACK=3.000", "PART-HOLD-BACK=1.500"), "part-hold-back");
        assert_rule(&SMALL.replace("PART-HOLD-BACK=3.000,", ""), "part-hold-back");
    }

    #[test]
    fn validator_can_skip_until() {
        assert_rule(&SMALL.replace("CAN-SKIP-UNTIL=12.000", "CAN-SKIP-UNTIL=11.000"), "can-skip-until");
    }

    #[test]
    fn validator_part_sum() {
        assert_rule(&SMALL.replace("#EXTINF:2.000,", "#EXTINF:1.900,"), "part-sum");
    }

    #[test]
    fn validator_preload_hint() {
        let hint = "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.1.m4s\"\n";
        // Twice.
        assert_rule(
            &SMALL.replace(hint, &format!("{hint}{}", hint.replace("p12.1", "p12.2"))),
            "preload-hint",
        );
        // Before the last part.
        let moved = SMALL.replace(hint, "").replace(
            "#EXT-X-PART:DURATION=1.000,URI=\"p12.0.m4s\"",
            &format!("{hint}#EXT-X-PART:DURATION=1.000,URI=\"p12.0.m4s\""),
        );
        assert_rule(&moved, "preload-hint");
        // In an ended playlist.
        assert_rule(&format!("{SMALL}#EXT-X-ENDLIST\n"), "preload-hint");
        // Without TYPE.
        assert_rule(&SMALL.replace("TYPE=PART,", ""), "preload-hint");
    }

    #[test]
    fn validator_skip() {
        let good = delta(&long(12));
        assert_valid(&good);
        // Not first: after a segment.
        let late = good
            .replace("#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n", "")
            .replace("s105.m4s\n", "s105.m4s\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n");
        assert_rule(&late, "skip");
        // Skips more than the boundary allows: too little left.
        let too_many = good.replace("SKIPPED-SEGMENTS=5", "SKIPPED-SEGMENTS=7").replacen(
            "#EXTINF:2.000,\ns105.m4s\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:12.000Z\n#EXTINF:2.000,\ns106.m4s\n",
            "",
            1,
        );
        assert_rule(&too_many, "skip");
        // Skips too little: the first kept segment should have been skipped.
        let full_text = full(&long(12));
        let too_few = full_text
            .replace(
                "#EXT-X-MEDIA-SEQUENCE:100\n",
                "#EXT-X-MEDIA-SEQUENCE:100\n#EXT-X-SKIP:SKIPPED-SEGMENTS=0\n",
            )
            .replace("#EXT-X-VERSION:6", "#EXT-X-VERSION:9");
        assert_rule(&too_few, "skip");
        // Without CAN-SKIP-UNTIL.
        assert_rule(&good.replace(",CAN-SKIP-UNTIL=12.000", ""), "skip");
        // Twice.
        assert_rule(
            &good.replace("SKIPPED-SEGMENTS=5\n", "SKIPPED-SEGMENTS=5\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n"),
            "skip",
        );
    }

    #[test]
    fn validator_msn() {
        assert_rule(&SMALL.replace("\ns11.m4s\n", "\ns10.m4s\n"), "msn");
        assert_rule(&SMALL.replace("URI=\"p11.1.m4s\"", "URI=\"p11.0.m4s\""), "msn");
        assert_rule(
            &SMALL.replace(
                "#EXT-X-MEDIA-SEQUENCE:10\n",
                "#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-MEDIA-SEQUENCE:11\n",
            ),
            "msn",
        );
        assert_rule(&SMALL.replace("#EXT-X-MEDIA-SEQUENCE:10\n", ""), "msn");
    }

    #[test]
    fn validator_independent() {
        assert_rule(&SMALL.replace("URI=\"p11.0.m4s\",INDEPENDENT=YES", "URI=\"p11.0.m4s\""), "independent");
    }

    #[test]
    fn validator_pdt() {
        assert_rule(&SMALL.replace("00:00:03.980Z", "00:00:01.500Z"), "pdt");
        assert_rule(&SMALL.replace("00:00:02.000Z", "00:00:00.000Z"), "pdt");
        assert_rule(&SMALL.replace("2024-01-01T00:00:02.000Z", "yesterday"), "pdt");
        // A small overlap is allowed (§6.2.1), so is a jump forward.
        assert_valid(&SMALL.replace("00:00:02.000Z", "00:00:01.500Z"));
        assert_valid(&SMALL.replace("00:00:03.980Z", "00:01:00.000Z"));
    }

    #[test]
    fn validator_rendition_report() {
        assert_rule(&SMALL.replace(",LAST-MSN=12", ""), "rendition-report");
        assert_rule(&SMALL.replace(",LAST-PART=0", ""), "rendition-report");
        assert_rule(
            &SMALL.replace("RENDITION-REPORT:URI=\"../audio/index.m3u8\",", "RENDITION-REPORT:"),
            "rendition-report",
        );
    }

    #[test]
    fn validator_version() {
        assert_rule(&SMALL.replace("#EXT-X-VERSION:6", "#EXT-X-VERSION:5"), "version");
        assert_rule(&delta(&long(12)).replace("#EXT-X-VERSION:9", "#EXT-X-VERSION:8"), "version");
    }

    #[test]
    fn validator_map() {
        let moved = SMALL
            .replace("#EXT-X-MAP:URI=\"init.mp4\"\n", "")
            .replace("s10.m4s\n", "s10.m4s\n#EXT-X-MAP:URI=\"init.mp4\"\n");
        assert_rule(&moved, "map");
    }

    #[test]
    fn validator_tags_after_parts() {
        let late = SMALL.replace(
            "#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:02.000Z\n#EXT-X-PART:DURATION=1.000,URI=\"p11.0.m4s\",INDEPENDENT=YES\n",
            "#EXT-X-PART:DURATION=1.000,URI=\"p11.0.m4s\",INDEPENDENT=YES\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:02.000Z\n",
        );
        assert_rule(&late, "syntax");
        assert_rule(&SMALL.replace("#EXTINF:2.000,\n", ""), "syntax");
    }

    #[test]
    fn validator_discontinuity_sequence() {
        assert_rule(
            &SMALL.replace("s10.m4s\n", "s10.m4s\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"),
            "discontinuity-sequence",
        );
    }

    #[test]
    fn validator_reports_every_violation() {
        let broken = SMALL
            .replace("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO")
            .replace("DURATION=0.980", "DURATION=1.010");
        let errors = validate_media_playlist(&broken).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("[server-control]")));
        assert!(errors.iter().any(|e| e.starts_with("[part-duration]")));
        assert!(errors.iter().all(|e| e.starts_with('[')), "{errors:#?}");
    }

    #[test]
    fn reload_continuity() {
        let a = long(8);
        let mut b = long(9);
        b.segments.remove(0);
        b.media_sequence = 101;
        b.segments[0].map_uri = Some("init.mp4".into());
        let pa = parse_media_playlist(&full(&a)).unwrap();
        let pb = parse_media_playlist(&full(&b)).unwrap();
        check_reload_continuity(&pa, &pb).unwrap();
        let errors = check_reload_continuity(&pb, &pa).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("[msn]")), "{errors:#?}");
        let mut c = b.clone();
        c.segments[1].uri = "other.m4s".into();
        let pc = parse_media_playlist(&full(&c)).unwrap();
        assert!(check_reload_continuity(&pa, &pc).is_err());
    }

    // --- property: well-formed models render to valid playlists ---------------------------------

    #[derive(Debug, Clone)]
    struct SegSpec {
        parts_us: Vec<u64>,
        discontinuity: bool,
        new_map: bool,
        dated: bool,
        gap_ms: u64,
    }

    fn arb_case() -> impl Strategy<Value = (MediaPlaylist, SkipRequest, &'static str)> {
        (1_000u64..=6_000, 100u64..=1_000)
            .prop_flat_map(|(td_ms, pt_ms)| {
                let pt_ms = pt_ms.min(td_ms);
                let max_parts = usize::try_from(td_ms / pt_ms).unwrap();
                let seg =
                    (
                        prop::collection::vec(pt_ms * 500..=pt_ms * 1_000, 1..=max_parts),
                        prop::bool::weighted(0.1),
                        prop::bool::weighted(0.1),
                        prop::bool::weighted(0.8),
                        0u64..5_000,
                    )
                        .prop_map(|(parts_us, discontinuity, new_map, dated, gap_ms)| {
                            SegSpec { parts_us, discontinuity, new_map, dated, gap_ms }
                        });
                (
                    Just(td_ms),
                    Just(pt_ms),
                    prop::collection::vec(seg, 0..40),
                    prop::option::of(prop::collection::vec(pt_ms * 500..=pt_ms * 1_000, 0..=max_parts)),
                    any::<bool>(),
                    0usize..3,
                    prop_oneof![Just(SkipRequest::No), Just(SkipRequest::Yes), Just(SkipRequest::V2)],
                    prop_oneof![Just(""), Just("token=abc"), Just("a=b&c=d"), Just("x=\"y z\"")],
                    0u64..1_000_000_000_000,
                    0u64..100,
                )
            })
            .prop_map(|(td_ms, pt_ms, specs, in_progress, ended, reports, skip, query, ms0, dseq)| {
                let mut clock = at(0);
                let mut segments = Vec::new();
                for (i, spec) in specs.iter().enumerate() {
                    let msn = ms0 + i as u64;
                    if spec.discontinuity {
                        clock += ms(spec.gap_ms);
                    }
                    let parts: Vec<PartEntry> = spec
                        .parts_us
                        .iter()
                        .enumerate()
                        .map(|(j, &us)| PartEntry {
                            duration: Duration::from_micros(us),
                            uri: format!("p{msn}.{j}.m4s"),
                            independent: j == 0,
                        })
                        .collect();
                    let duration = parts.iter().map(|p| p.duration).sum();
                    segments.push(SegmentEntry {
                        msn,
                        duration,
                        uri: format!("s{msn}.m4s"),
                        program_date_time: (spec.dated || i == 0).then_some(clock),
                        discontinuity: spec.discontinuity && i > 0,
                        map_uri: (i == 0 || spec.new_map).then(|| format!("init{i}.mp4")),
                        parts,
                        complete: true,
                    });
                    clock += duration;
                }
                if let Some(parts_us) = in_progress {
                    let msn = ms0 + segments.len() as u64;
                    segments.push(SegmentEntry {
                        msn,
                        duration: Duration::ZERO,
                        uri: String::new(),
                        program_date_time: Some(clock),
                        discontinuity: false,
                        map_uri: segments.is_empty().then(|| "init.mp4".to_owned()),
                        parts: parts_us
                            .iter()
                            .enumerate()
                            .map(|(j, &us)| PartEntry {
                                duration: Duration::from_micros(us),
                                uri: format!("p{msn}.{j}.m4s"),
                                independent: j == 0,
                            })
                            .collect(),
                        complete: false,
                    });
                }
                let next = segments.last().map_or(ms0, |s: &SegmentEntry| s.msn + u64::from(s.complete));
                let pl = MediaPlaylist {
                    target_duration: ms(td_ms),
                    part_target: ms(pt_ms),
                    media_sequence: ms0,
                    discontinuity_sequence: dseq,
                    segments,
                    preload_hint: Some(PreloadHint { uri: format!("hint{next}.m4s") }),
                    rendition_reports: (0..reports)
                        .map(|r| RenditionReport {
                            uri: format!("../r{r}/index.m3u8"),
                            last_msn: next,
                            last_part: 0,
                        })
                        .collect(),
                    ended,
                };
                (pl, skip, query)
            })
    }

    proptest! {
        #[test]
        fn rendered_models_validate((pl, skip, query) in arb_case()) {
            let text = render_media(&pl, &RenderOptions { skip, uri_query: query });
            let parsed = match parse_media_playlist(&text) {
                Ok(p) => p,
                Err(errors) => return Err(TestCaseError::fail(format!("{errors:#?}\n{text}"))),
            };
            // MSNs survive the round trip, skipped or not.
            let complete: Vec<u64> = pl.segments.iter().filter(|s| s.complete).map(|s| s.msn).collect();
            let listed: Vec<u64> = parsed.segments.iter().map(|s| s.msn).collect();
            prop_assert_eq!(&complete[complete.len() - listed.len()..], &listed[..]);
            prop_assert_eq!(parsed.media_sequence, pl.media_sequence);
            prop_assert_eq!(parsed.ended, pl.ended);
            if skip == SkipRequest::No || pl.ended {
                prop_assert_eq!(parsed.skipped_segments, 0);
            }
            // The full playlist and the delta update agree on what they both list.
            let full_text = render_media(&pl, &RenderOptions { skip: SkipRequest::No, uri_query: query });
            let whole = parse_media_playlist(&full_text).expect("full playlist validates");
            prop_assert!(check_reload_continuity(&whole, &parsed).is_ok());
        }
    }
}
