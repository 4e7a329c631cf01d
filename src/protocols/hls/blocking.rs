//! Blocking playlist reload (§6.2.5.2): whether a request carrying `_HLS_msn` / `_HLS_part` is
//! answered now, held until the playlist changes, or refused as too far ahead. Pure decisions;
//! the HTTP layer holds the request and re-asks on every playlist change.
//!
//! Spec: draft-pantos-hls-rfc8216bis §6.2.5.2 (blocking, the Advance Part Limit, ENDLIST).
//!
//! Invariant: the decision depends only on the request and the live edge, so it can be
//! re-evaluated any number of times with the same answer.

use std::time::Duration;

use super::model::{saturate_u32, MediaPlaylist};

impl MediaPlaylist {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::hls::test_playlists::{ms, small};

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
}
