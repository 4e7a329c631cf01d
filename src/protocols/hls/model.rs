//! The LL-HLS playlist model: what the packager keeps per rendition and what the renderer,
//! the blocking rules and the rendition reports read. Plain data plus the few facts derived from
//! it (the written target duration, the skip boundary, the live edge).
//!
//! Spec: draft-pantos-hls-rfc8216bis §4.4.3.8 (CAN-SKIP-UNTIL), §4.4.5.4 (rendition reports),
//! §8 (the version constants, shared with the renderer and the validator).
//!
//! Invariants the model's users rely on: segments are oldest first with consecutive MSNs starting
//! at `media_sequence`, and only the last one may be incomplete.

use std::time::{Duration, SystemTime};

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
    /// The parts of this segment, in order. Listed only near the live edge (see
    /// [`render_media`](super::render_media)).
    pub parts: Vec<PartEntry>,
    /// False for the segment still being built: only its parts are listed, without `EXTINF`.
    pub complete: bool,
    /// `EXT-X-GAP`: this rendition has no media for the segment (a transcoder restarting); a
    /// player takes it from another rendition. Complete, without parts; its URI is never loaded.
    pub gap: bool,
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
pub(super) const VERSION_DECIMAL_EXTINF: u32 = 3;
/// Minimum `EXT-X-VERSION` for `EXT-X-MAP` in a playlist without `EXT-X-I-FRAMES-ONLY` (§8).
pub(super) const VERSION_MAP: u32 = 6;
/// Minimum `EXT-X-VERSION` for `EXT-X-GAP` (§8).
pub(super) const VERSION_GAP: u32 = 8;
/// Minimum `EXT-X-VERSION` for `EXT-X-SKIP` (§8).
pub(super) const VERSION_SKIP: u32 = 9;
/// `CAN-SKIP-UNTIL` in target durations: the spec's minimum (§4.4.3.8 "at least six times").
const SKIP_BOUNDARY_TARGET_DURATIONS: u32 = 6;

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
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(super) fn saturate_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
