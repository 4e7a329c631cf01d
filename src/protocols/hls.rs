//! LL-HLS playlists: a sans-IO model, the renderer, delivery-directive parsing, the blocking-reload
//! decision, and a structural validator. Text and numbers in, text and decisions out: no clocks,
//! no sockets, no files.
//!
//! Data flow: the LL-HLS packager (segmenter -> parts -> segments) keeps a [`MediaPlaylist`] per
//! rendition. The HTTP layer parses the request query with [`parse_query`], asks
//! [`MediaPlaylist::block_decision`] whether to answer now, wait for the next part, or refuse, and
//! answers with [`render_media`] / [`render_multivariant`]. Tests everywhere in the crate check
//! what we serve with [`validate_media_playlist`] and [`validate_multivariant`]: a checker for
//! tests, never called on the serving path.
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
//! Layout: `model` (the playlist types), `render` (text out), `recorded` (an archived session's
//! EVENT/VOD playlist), `query` (delivery directives in,
//! URI queries out), `blocking` (the blocking-reload decision), `validate` (the checker used by
//! unit and integration tests). Everything public is re-exported here, so callers name
//! `protocols::hls::Item` whatever file it lives in.
//!
//! Invariants: every URI we write carries the caller's `uri_query` (players do not resend headers,
//! so an access token must ride on every URI); a query is percent-encoded before it is written, so
//! no request can inject a quote or a line into a playlist; `validate_media_playlist` accepts
//! everything `render_media` writes from a well-formed model (a property test holds us to it).

mod blocking;
mod model;
mod query;
mod recorded;
mod render;
#[cfg(test)]
mod test_playlists;
mod validate;

pub use blocking::{advance_part_limit, block_decision, BlockDecision};
pub use model::{
    MediaPlaylist, PartEntry, PreloadHint, RenderOptions, RenditionReport, SegmentEntry, SkipRequest,
    VariantStream,
};
pub use query::{parse_query, HlsQuery, HlsQueryError};
pub use recorded::{render_recorded, RecordedKind, RecordedPlaylist, RecordedSegment};
pub use render::{render_media, render_multivariant};
pub use validate::{
    check_reload_continuity, parse_media_playlist, validate_media_playlist, validate_multivariant,
    ParsedMediaPlaylist, ParsedPart, ParsedRenditionReport, ParsedSegment,
};
