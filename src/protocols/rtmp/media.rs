//! FLV tags to media-model frames and back, for RTMP: the ingest demuxer ([`FlvDemuxer`]) and
//! the play serializer ([`frame_message`], [`sequence_headers`]).
//!
//! Sans-IO like the rest of `protocols`: tag bodies and RTMP timestamps in, [`Ingested`] values
//! out; frames in, chunk bytes out. The ingest adapter (`actors::ingest::rtmp`) hands what the
//! demuxer produces to its `IngestSession`; the play adapter (`actors::viewer::rtmp`) writes
//! what the serializer produces.
//!
//! Timestamps: RTMP carries 32-bit millisecond timestamps that wrap after 49.7 days (RTMP spec
//! 1.0 §5.3.1.1); the demuxer extends them to 64 bits, so the channel timeline never goes
//! backwards at the wrap. Video frames before their sequence header (decoder configuration
//! record) and audio before its AudioSpecificConfig cannot be decoded and are dropped here.

use std::sync::Arc;

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkSerializationError;
use rml_rtmp::time::RtmpTimestamp;

use super::{media_chunks, MSG_AUDIO, MSG_VIDEO};
use crate::media::codec::Tracks;
use crate::media::frame::{Frame, TrackKind, WireSlot};
use crate::media::time::MediaTime;
use crate::protocols::flv::{self, AudioTag, FlvError, VideoTag};

/// The `Frame::wire` slot of RTMP play: the chunks of a frame's FLV tag on
/// `SHARED_STREAM_ID`, built once per frame and written to every viewer.
pub const RTMP_WIRE: WireSlot = WireSlot::new(0);

/// A publisher's tag that could not be read, located by track and timestamp.
#[derive(Debug, thiserror::Error)]
#[error("{track:?} tag at {timestamp_ms} ms ({len} bytes): {source}")]
pub struct MediaError {
    pub track: TrackKind,
    /// The tag's timestamp on the publisher's (unwrapped) timeline.
    pub timestamp_ms: i64,
    pub len: usize,
    #[source]
    pub source: FlvError,
}

/// A frame that could not be serialized for RTMP play.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{track:?} frame at {dts_ms} ms has no codec configuration")]
    MissingConfig { track: TrackKind, dts_ms: i64 },
    #[error("{track:?} frame at {dts_ms} ms: {source}")]
    Serialize {
        track: TrackKind,
        dts_ms: i64,
        #[source]
        source: ChunkSerializationError,
    },
}

/// What one tag meant for the channel.
#[derive(Debug)]
pub enum Ingested {
    /// A new codec configuration is in force from now on; frames that follow carry it.
    Tracks(Arc<Tracks>),
    /// A frame for the ring.
    Frame(Frame),
    /// Nothing to do (end of sequence, unsupported extras, a frame before its configuration).
    Nothing,
}

/// Extends RTMP's 32-bit millisecond timestamps (they wrap after 49.7 days) to 64 bits.
#[derive(Debug, Default)]
struct TimestampUnwrapper {
    last: Option<u32>,
    epoch: i64,
}

impl TimestampUnwrapper {
    fn unwrap(&mut self, ts: RtmpTimestamp) -> i64 {
        let v = ts.value;
        if let Some(last) = self.last {
            if v < last && last - v > 1 << 31 {
                self.epoch += 1 << 32;
            }
        }
        self.last = Some(v);
        self.epoch + v as i64
    }
}

/// One publisher's FLV tag stream, turned into frames.
#[derive(Debug)]
pub struct FlvDemuxer {
    /// The configuration in force, shared by the frames that carry it.
    tracks: Arc<Tracks>,
    clock: TimestampUnwrapper,
}

impl FlvDemuxer {
    /// Start from the configuration the ring already has (a publisher resuming within grace
    /// keeps it until it sends its own sequence headers).
    pub fn new(tracks: Arc<Tracks>) -> Self {
        FlvDemuxer { tracks, clock: TimestampUnwrapper::default() }
    }

    /// An FLV video tag body (RTMP message type 9).
    pub fn video(&mut self, data: Bytes, ts: RtmpTimestamp) -> Result<Ingested, MediaError> {
        let ms = self.clock.unwrap(ts);
        let len = data.len();
        let tag = flv::parse_video_tag(data).map_err(|source| MediaError {
            track: TrackKind::Video,
            timestamp_ms: ms,
            len,
            source,
        })?;
        Ok(match tag {
            VideoTag::SequenceHeader(cfg) => {
                let mut tracks = (*self.tracks).clone();
                tracks.video = Some(cfg);
                self.tracks = Arc::new(tracks);
                Ingested::Tracks(self.tracks.clone())
            }
            VideoTag::Frame { keyframe, cts_ms, data, .. } => {
                if self.tracks.video.is_none() {
                    return Ok(Ingested::Nothing);
                }
                let dts = MediaTime::from_millis(ms);
                let pts = MediaTime::from_millis(ms + cts_ms as i64);
                Ingested::Frame(Frame::new(TrackKind::Video, dts, pts, keyframe, data, self.tracks.clone()))
            }
            VideoTag::EndOfSequence | VideoTag::Ignored => Ingested::Nothing,
        })
    }

    /// An FLV audio tag body (RTMP message type 8).
    pub fn audio(&mut self, data: Bytes, ts: RtmpTimestamp) -> Result<Ingested, MediaError> {
        let ms = self.clock.unwrap(ts);
        let len = data.len();
        let tag = flv::parse_audio_tag(data).map_err(|source| MediaError {
            track: TrackKind::Audio,
            timestamp_ms: ms,
            len,
            source,
        })?;
        Ok(match tag {
            AudioTag::SequenceHeader(cfg) => {
                let mut tracks = (*self.tracks).clone();
                tracks.audio = Some(cfg);
                self.tracks = Arc::new(tracks);
                Ingested::Tracks(self.tracks.clone())
            }
            AudioTag::Frame { data, .. } => {
                if self.tracks.audio.is_none() {
                    return Ok(Ingested::Nothing);
                }
                let t = MediaTime::from_millis(ms);
                Ingested::Frame(Frame::new(TrackKind::Audio, t, t, false, data, self.tracks.clone()))
            }
            AudioTag::Ignored => Ingested::Nothing,
        })
    }
}

/// The RTMP message (FLV tag in chunks) for one frame on `stream_id`.
pub fn frame_message(f: &Frame, stream_id: u32, chunk_size: u32) -> Result<Bytes, WireError> {
    let dts_ms = f.dts.as_millis();
    let ts = RtmpTimestamp::new(dts_ms as u32);
    let missing = || WireError::MissingConfig { track: f.track, dts_ms };
    let (type_id, tag) = match f.track {
        TrackKind::Video => {
            let cfg = f.tracks.video.as_ref().ok_or_else(missing)?;
            let cts = f.cts().as_millis() as i32;
            (MSG_VIDEO, flv::video_frame(cfg.codec, f.keyframe, cts, &f.data))
        }
        TrackKind::Audio => {
            let cfg = f.tracks.audio.as_ref().ok_or_else(missing)?;
            (MSG_AUDIO, flv::audio_frame(cfg.codec, &f.data))
        }
    };
    media_chunks(type_id, ts, stream_id, chunk_size, tag).map_err(|source| WireError::Serialize {
        track: f.track,
        dts_ms,
        source,
    })
}

/// Sequence headers for a (new) track set, stamped with `at`, appended to `out`.
pub fn sequence_headers(
    tracks: &Tracks,
    at: MediaTime,
    stream_id: u32,
    chunk_size: u32,
    out: &mut Vec<Bytes>,
) -> Result<(), WireError> {
    let dts_ms = at.as_millis();
    let ts = RtmpTimestamp::new(dts_ms as u32);
    if let Some(v) = &tracks.video {
        let b = media_chunks(MSG_VIDEO, ts, stream_id, chunk_size, flv::video_sequence_header(v))
            .map_err(|source| WireError::Serialize { track: TrackKind::Video, dts_ms, source })?;
        out.push(b);
    }
    if let Some(a) = &tracks.audio {
        let b = media_chunks(MSG_AUDIO, ts, stream_id, chunk_size, flv::audio_sequence_header(a))
            .map_err(|source| WireError::Serialize { track: TrackKind::Audio, dts_ms, source })?;
        out.push(b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_unwrap_across_the_32_bit_boundary() {
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(RtmpTimestamp::new(u32::MAX - 10)), u32::MAX as i64 - 10);
        assert_eq!(u.unwrap(RtmpTimestamp::new(5)), (1i64 << 32) + 5);
        // Small reorderings (B-frames, audio/video interleave) are not wraps.
        assert_eq!(u.unwrap(RtmpTimestamp::new(3)), (1i64 << 32) + 3);
    }

    #[test]
    fn frames_before_their_configuration_are_dropped_and_errors_say_where() {
        let mut d = FlvDemuxer::new(Arc::new(Tracks::default()));
        // AVC NALU packet (codec 7, packet type 1) before any sequence header.
        let nalu = Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        assert!(matches!(d.video(nalu, RtmpTimestamp::new(40)).unwrap(), Ingested::Nothing));
        // An empty tag is malformed: the error names the track, the timestamp and the size.
        let err = d.video(Bytes::new(), RtmpTimestamp::new(80)).unwrap_err();
        assert_eq!((err.track, err.timestamp_ms, err.len), (TrackKind::Video, 80, 0));
        let err = d.audio(Bytes::new(), RtmpTimestamp::new(90)).unwrap_err();
        assert_eq!((err.track, err.timestamp_ms), (TrackKind::Audio, 90));
        assert!(err.to_string().contains("90 ms"), "{err}");
    }

    #[test]
    fn a_frame_without_configuration_is_a_located_wire_error() {
        let t = MediaTime::from_millis(1234);
        let f =
            Frame::new(TrackKind::Audio, t, t, false, Bytes::from_static(b"x"), Arc::new(Tracks::default()));
        let err = frame_message(&f, 1, 4096).unwrap_err();
        assert!(matches!(err, WireError::MissingConfig { track: TrackKind::Audio, dts_ms: 1234 }), "{err}");
    }
}
