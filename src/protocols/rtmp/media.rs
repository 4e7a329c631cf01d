//! FLV tags to media-model frames and back, for RTMP: the ingest demuxer ([`FlvDemuxer`]) and
//! the play serializer ([`frame_message`], [`sequence_headers`]).
//!
//! Sans-IO like the rest of `protocols`: tag bodies and RTMP timestamps in, [`Ingested`] values
//! out; frames in, chunk bytes out. The ingest adapter (`actors::ingest::rtmp`) hands what the
//! demuxer produces to its `IngestSession`; the play adapter (`actors::viewer::rtmp`) writes
//! what the serializer produces.
//!
//! Timestamps: RTMP carries 32-bit millisecond timestamps that wrap after 49.7 days (RTMP spec
//! 1.0 §5.3.1.1); the demuxer extends them to 64 bits, each one next to the previous (so a tag
//! stamped just before the wrap that arrives just after it, audio behind video, stays before
//! it), and the channel timeline never goes backwards at the wrap. Publishers also send time
//! that is not media time passing: a jump (an encoder restart, a relay switching sources, a
//! clock reset), which would make an hour-long part or stall the segmenter, and repeated or
//! slightly early decode times, which ISO BMFF cannot carry (sample durations are unsigned) and
//! players refuse. Per track, a step of more than [`MAX_BACK_MS`] back or more than
//! [`MAX_FORWARD_MS`] past everything the stream sent is folded into an offset so the track
//! continues one frame interval after its last frame (as `protocols::ts` does for MPEG-TS), and
//! a smaller step that does not move forward is placed one frame interval after the previous
//! frame. Decode times leaving the demuxer only grow, per track.
//!
//! Video frames before their sequence header (decoder configuration record) and audio before
//! its AudioSpecificConfig cannot be decoded and are dropped here.

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

/// A decode time more than this before the track's previous one is a jump, not reordering.
pub const MAX_BACK_MS: i64 = 1_000;
/// A decode time more than this past the newest of any track is a jump, not media time passing
/// (a track that paused while the other went on is within it when it resumes).
pub const MAX_FORWARD_MS: i64 = 10_000;

/// Extends RTMP's 32-bit millisecond timestamps (they wrap after 49.7 days) to 64 bits: each
/// value is read as the one nearest the previous (a signed 32-bit step, RFC 1982 serial number
/// arithmetic), so the wrap is crossed forwards and backwards alike.
#[derive(Debug, Default)]
struct TimestampUnwrapper {
    last: Option<(u32, i64)>,
}

impl TimestampUnwrapper {
    fn unwrap(&mut self, ts: RtmpTimestamp) -> i64 {
        let v = ts.value;
        let out = match self.last {
            Some((raw, unwrapped)) => unwrapped + i64::from(v.wrapping_sub(raw) as i32),
            None => i64::from(v),
        };
        self.last = Some((v, out));
        out
    }
}

/// One track's decode times on the channel timeline: jumps folded into an offset, times that
/// do not move forward placed one frame interval on.
#[derive(Debug, Default)]
struct TrackTimeline {
    /// Added to the unwrapped publisher time.
    offset: i64,
    /// The last decode time handed out.
    last: Option<i64>,
    /// Moving average of the forward steps the publisher's own times made (the frame interval),
    /// in microseconds: whole-millisecond stamps of 30 fps step 33 and 34 ms, and a placed frame
    /// one (floored) average after its predecessor lets the frames after it catch up instead of
    /// being pushed on one rounded-up interval each.
    step_us: i64,
}

impl TrackTimeline {
    /// The decode time for `unwrapped` (ms); `newest` is the newest decode time of any track.
    /// Returns it and whether a jump was folded into the offset.
    fn map(&mut self, unwrapped: i64, newest: Option<i64>) -> (i64, bool) {
        let mut out = unwrapped + self.offset;
        let mut jumped = false;
        if let Some(last) = self.last {
            let next = last + (self.step_us / 1000).max(1);
            let step = out - last;
            if step < -MAX_BACK_MS || newest.is_some_and(|n| out > n + MAX_FORWARD_MS) {
                self.offset = next - unwrapped;
                out = next;
                jumped = true;
            } else if step <= 0 {
                // Repeated or a little early (a muxer's rounding, a broken interleave): the
                // frame follows its predecessor by the usual interval, which is where a
                // mis-stamped frame belongs; the frames after it keep their own times.
                out = next;
            } else if step <= MAX_BACK_MS {
                // (A longer step is a pause, not a frame interval.)
                let us = step * 1000;
                self.step_us = if self.step_us == 0 { us } else { (self.step_us * 7 + us) / 8 };
            }
        }
        self.last = Some(out);
        (out, jumped)
    }
}

/// One publisher's FLV tag stream, turned into frames.
#[derive(Debug)]
pub struct FlvDemuxer {
    /// The configuration in force, shared by the frames that carry it.
    tracks: Arc<Tracks>,
    clock: TimestampUnwrapper,
    video_time: TrackTimeline,
    audio_time: TrackTimeline,
    /// Timestamp jumps folded into an offset so far.
    jumps: u64,
}

impl FlvDemuxer {
    /// Start from the configuration the ring already has (a publisher resuming within grace
    /// keeps it until it sends its own sequence headers).
    pub fn new(tracks: Arc<Tracks>) -> Self {
        FlvDemuxer {
            tracks,
            clock: TimestampUnwrapper::default(),
            video_time: TrackTimeline::default(),
            audio_time: TrackTimeline::default(),
            jumps: 0,
        }
    }

    /// Timestamp jumps folded into an offset so far (each one is a step the publisher's time
    /// made that was not media time passing).
    pub fn timestamp_jumps(&self) -> u64 {
        self.jumps
    }

    /// The channel-timeline decode time of a frame of `track` stamped `ms` (unwrapped).
    fn decode_time(&mut self, track: TrackKind, ms: i64) -> i64 {
        let newest = self.video_time.last.max(self.audio_time.last);
        let timeline = match track {
            TrackKind::Video => &mut self.video_time,
            TrackKind::Audio => &mut self.audio_time,
        };
        let (out, jumped) = timeline.map(ms, newest);
        self.jumps += u64::from(jumped);
        out
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
                let ms = self.decode_time(TrackKind::Video, ms);
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
                let t = MediaTime::from_millis(self.decode_time(TrackKind::Audio, ms));
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
    fn a_tag_stamped_before_the_wrap_that_arrives_after_it_stays_before_it() {
        // Audio 40 ms behind video: video crossed the wrap, the next audio tag has not yet.
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(RtmpTimestamp::new(u32::MAX - 10)), u32::MAX as i64 - 10);
        assert_eq!(u.unwrap(RtmpTimestamp::new(5)), (1i64 << 32) + 5);
        assert_eq!(u.unwrap(RtmpTimestamp::new(u32::MAX - 30)), u32::MAX as i64 - 30);
        assert_eq!(u.unwrap(RtmpTimestamp::new(26)), (1i64 << 32) + 26);
    }

    /// A demuxer with H.264 and AAC configured from ffmpeg's own sequence headers.
    fn configured() -> FlvDemuxer {
        let mut d = FlvDemuxer::new(Arc::new(Tracks::default()));
        let avc =
            Bytes::from_static(include_bytes!("../../../tests/fixtures/ffmpeg-5.1_flv_h264_seqhdr.bin"));
        let aac = Bytes::from_static(include_bytes!("../../../tests/fixtures/ffmpeg-5.1_flv_aac_seqhdr.bin"));
        assert!(matches!(d.video(avc, RtmpTimestamp::new(0)).unwrap(), Ingested::Tracks(_)));
        assert!(matches!(d.audio(aac, RtmpTimestamp::new(0)).unwrap(), Ingested::Tracks(_)));
        d
    }

    /// The decode time (ms) the demuxer gives a frame of `track` stamped `ts`.
    fn dts(d: &mut FlvDemuxer, track: TrackKind, ts: u32) -> i64 {
        let r = match track {
            TrackKind::Video => {
                d.video(Bytes::from_static(&[0x27, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x41]), RtmpTimestamp::new(ts))
            }
            TrackKind::Audio => d.audio(Bytes::from_static(&[0xaf, 0x01, 0x21]), RtmpTimestamp::new(ts)),
        };
        match r.unwrap() {
            Ingested::Frame(f) => f.dts.as_millis(),
            other => panic!("{track:?} at {ts}: {other:?}"),
        }
    }

    #[test]
    fn timestamp_jumps_continue_one_frame_after_the_last_on_every_track() {
        use TrackKind::{Audio, Video};
        // +1 h on both tracks (video 40 ms, audio 20 ms apart), then -10 s.
        let mut d = configured();
        assert_eq!((dts(&mut d, Video, 1_000), dts(&mut d, Audio, 1_010)), (1_000, 1_010));
        assert_eq!((dts(&mut d, Video, 1_040), dts(&mut d, Audio, 1_030)), (1_040, 1_030));
        assert_eq!(dts(&mut d, Video, 3_601_080), 1_080, "an hour forward is one frame on");
        assert_eq!(dts(&mut d, Audio, 3_601_050), 1_050);
        assert_eq!((dts(&mut d, Video, 3_601_120), dts(&mut d, Audio, 3_601_070)), (1_120, 1_070));
        assert_eq!(dts(&mut d, Video, 3_591_160), 1_160, "ten seconds back is one frame on");
        assert_eq!((dts(&mut d, Audio, 3_591_090), dts(&mut d, Video, 3_591_200)), (1_090, 1_200));
        assert_eq!(d.timestamp_jumps(), 4);

        // A track that paused while the other went on resumes where its time says.
        let mut d = configured();
        assert_eq!(dts(&mut d, Video, 0), 0);
        for t in (0..=30_000).step_by(20) {
            dts(&mut d, Audio, t);
        }
        assert_eq!(dts(&mut d, Video, 30_010), 30_010);
        // ... and its pause is not taken for its frame interval.
        assert_eq!(dts(&mut d, Video, 30_050), 30_050);
        assert_eq!(dts(&mut d, Video, 30_050), 30_090);
        assert_eq!(d.timestamp_jumps(), 0);
    }

    #[test]
    fn repeated_and_early_decode_times_follow_their_predecessor() {
        use TrackKind::{Audio, Video};
        let mut d = configured();
        // 30 fps: a frame stamped like its predecessor (really 100), one stamped 100 ms before
        // its predecessor (really 200).
        let got: Vec<i64> = [0, 33, 67, 67, 133, 167, 67, 233].map(|t| dts(&mut d, Video, t)).into();
        assert_eq!(got, [0, 33, 67, 100, 133, 167, 200, 233]);
        // AAC at 48 kHz (21.3 ms): the same for audio (really 1043 and 1085).
        let got: Vec<i64> = [1_000, 1_021, 1_021, 1_064, 964, 1_107].map(|t| dts(&mut d, Audio, t)).into();
        assert_eq!(got, [1_000, 1_021, 1_042, 1_064, 1_085, 1_107]);
        // Genuinely one frame too many (three in two intervals): pushed on, then caught up with.
        let mut d = configured();
        let got: Vec<i64> = (0..100)
            .map(|i| i * 100 / 3)
            .collect::<Vec<_>>()
            .iter()
            .flat_map(|&t| if t == 1_000 { vec![t, t] } else { vec![t] })
            .map(|t| dts(&mut d, Video, t as u32))
            .collect();
        assert!(got.windows(2).all(|w| w[1] > w[0]), "{got:?}");
        assert_eq!(got.last(), Some(&3_300), "{got:?}");
        assert_eq!(d.timestamp_jumps(), 0);
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
