//! `Frame`: one access unit of one track, shared by every consumer as `Arc<Frame>`.
//!
//! The payload is a `Bytes` slice of what the ingest connection received, so fan-out copies no
//! media bytes. Video payloads are in "length-prefixed" form as in the configuration record
//! (AVCC/HVCC: 4-byte NAL unit lengths; AV1: low-overhead OBUs); AAC payloads are raw frames.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;

use super::codec::Tracks;
use super::time::MediaTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrackKind {
    Video,
    Audio,
}

/// One access unit.
#[derive(Debug)]
pub struct Frame {
    pub track: TrackKind,
    /// Decode timestamp on the channel's continuous timeline (publisher reconnects are rebased
    /// by the ring writer so it never goes backwards).
    pub dts: MediaTime,
    /// Presentation timestamp (`>= dts` for B-frames from x264 defaults).
    pub pts: MediaTime,
    /// A random access point: an IDR/IRAP video frame. Audio frames are all independent but are
    /// not marked key, so "resync to key frame" always means a video key frame when video exists.
    pub keyframe: bool,
    pub data: Bytes,
    /// The codec configuration in force for this frame. Readers compare it by pointer
    /// (`Arc::ptr_eq`) to notice a configuration change and resend sequence headers.
    pub tracks: Arc<Tracks>,
    /// Wall clock when it entered the ring (stamped by `RingWriter::push`): the source of
    /// `EXT-X-PROGRAM-DATE-TIME` and of publish-to-viewer latency figures.
    pub received_at: SystemTime,
    /// First frame after a publisher resumed within its reconnect grace period.
    pub discontinuity: bool,
    /// Serialized forms shared by all viewers of one output protocol, built once on first use.
    pub wire: WireCache,
}

/// One output encoding's slot in every frame's [`WireCache`]. Each output protocol that
/// serializes frames identically for all its viewers claims one slot as a constant next to its
/// serializer (RTMP play: `protocols::rtmp::RTMP_WIRE`; WHEP: `protocols::webrtc::RTP_WIRE`), so
/// the media model names none of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireSlot(usize);

impl WireSlot {
    /// Slot `index`; `index < WIRE_SLOTS`, checked at compile time where used in a `const`.
    pub const fn new(index: usize) -> Self {
        assert!(index < WIRE_SLOTS, "a wire slot index is below WIRE_SLOTS");
        WireSlot(index)
    }
}

/// Output encodings that can share a frame's cache (RTMP play, WHEP's RTP payloads).
pub const WIRE_SLOTS: usize = 2;

/// Per-frame caches of output encodings, built once on first use. Building an RTMP message once
/// per frame instead of once per viewer is what keeps the per-viewer cost of RTMP play near a
/// memcpy-free write; an empty `Bytes` records "this frame has no encoding in that output".
#[derive(Debug, Default)]
pub struct WireCache {
    slots: [OnceLock<Bytes>; WIRE_SLOTS],
}

impl WireCache {
    /// The encoding in `slot`, built by `build` on first use. `None` when `build` found nothing
    /// to send (remembered, so it is not retried per viewer).
    pub fn get_or_build(&self, slot: WireSlot, build: impl FnOnce() -> Option<Bytes>) -> Option<Bytes> {
        let b = self.slots[slot.0].get_or_init(|| build().unwrap_or_default());
        (!b.is_empty()).then(|| b.clone())
    }
}

impl Frame {
    pub fn new(
        track: TrackKind,
        dts: MediaTime,
        pts: MediaTime,
        keyframe: bool,
        data: Bytes,
        tracks: Arc<Tracks>,
    ) -> Self {
        Frame {
            track,
            dts,
            pts,
            keyframe,
            data,
            tracks,
            // Stamped by `RingWriter::push`; the epoch until then.
            received_at: SystemTime::UNIX_EPOCH,
            discontinuity: false,
            wire: WireCache::default(),
        }
    }

    /// Composition offset (`pts - dts`) in the frame's timescale.
    pub fn cts(&self) -> MediaTime {
        self.pts.minus(self.dts)
    }
}
