//! The CMAF segmenter: pure policy deciding where LL-HLS parts and segments are cut.
//!
//! Frames go in (in ring order); completed parts come out, each tagged with its media sequence
//! number (MSN) and part index. No I/O, no clock: the `HlsPackager` turns parts into fMP4
//! fragments and playlists.
//!
//! Rules (RFC 8216bis §4.4.4.9 and §4.4.4.2; Apple's LL-HLS authoring guidance):
//! - The *driver* track decides boundaries: video when the rendition has video, else audio.
//!   Boundaries fall only on driver frames, so a part's duration is the distance between the
//!   decode times of its first driver frame and the next part's.
//! - Every segment starts on a key frame (sync point); frames before the first key frame are
//!   dropped. A segment is cut at the first key frame at or after `segment_target`.
//! - A part is cut before a driver frame when including that frame would make the part longer
//!   than `part_target` (judged with the recent average frame interval), so that it is published
//!   as soon as its last frame arrives. When a frame then comes later than predicted (a dropped
//!   frame, a variable frame rate), the part is cut before its last frame instead, so no part
//!   exceeds the target unless a single frame does. A part starting on a key frame is
//!   `independent`.
//! - A frame flagged `discontinuity` (publisher resumed) closes the part and segment; the next
//!   segment carries the discontinuity.
//! - MSNs and part indexes only grow; part durations of a segment add up to the segment.

use std::sync::Arc;
use std::time::Duration;

use super::frame::{Frame, TrackKind};
use super::time::MediaTime;

/// Timestamps arrive rounded (FLV/RTMP: whole milliseconds), so the next frame's predicted time
/// is compared after rounding: a prediction of 200.3 ms is the frame stamped 200 ms, which ends a
/// 200 ms part exactly. The cost is that a part may exceed the target by the rounding itself
/// (under 1 ms) when the average interval drifts against the rounding.
const TIMESTAMP_SLACK: Duration = Duration::from_micros(500);

/// Where to cut.
#[derive(Clone, Copy, Debug)]
pub struct SegmenterConfig {
    pub part_target: Duration,
    pub segment_target: Duration,
}

/// A completed part.
#[derive(Clone, Debug)]
pub struct Part {
    /// Media sequence number of the segment this part belongs to.
    pub msn: u64,
    /// Index of the part within its segment, from 0.
    pub index: u32,
    /// Frames of both tracks, in arrival (decode) order.
    pub frames: Vec<Arc<Frame>>,
    /// Decode time of the first driver frame.
    pub start: MediaTime,
    /// Decode time of the next part's first driver frame (exclusive end).
    pub end: MediaTime,
    /// Starts on a key frame.
    pub independent: bool,
    /// This part is the last one of its segment.
    pub ends_segment: bool,
    /// The segment this part belongs to follows a discontinuity.
    pub discontinuity: bool,
}

impl Part {
    pub fn duration(&self) -> Duration {
        self.end.minus(self.start).as_duration()
    }
}

/// The part a segmenter is making (`Segmenter::open_part`).
#[derive(Clone, Copy, Debug)]
pub struct OpenPart<'a> {
    pub msn: u64,
    pub index: u32,
    /// Decode time of its first driver frame.
    pub start: MediaTime,
    /// Its segment follows a discontinuity.
    pub discontinuity: bool,
    /// Its frames so far.
    pub frames: &'a [Arc<Frame>],
}

#[derive(Debug)]
struct Open {
    msn: u64,
    index: u32,
    frames: Vec<Arc<Frame>>,
    start: MediaTime,
    independent: bool,
    segment_start: MediaTime,
    discontinuity: bool,
}

/// The segmenter state for one rendition.
#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    open: Option<Open>,
    next_msn: u64,
    /// Decode time of the previous driver frame, for the frame-interval estimate.
    last_driver_dts: Option<MediaTime>,
    /// Moving average of the driver frame interval.
    frame_interval: Option<Duration>,
    /// The next segment follows a discontinuity.
    pending_discontinuity: bool,
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        Segmenter {
            cfg,
            open: None,
            next_msn: 0,
            last_driver_dts: None,
            frame_interval: None,
            pending_discontinuity: false,
        }
    }

    /// Continue an earlier segmenter's numbering (a restarted packager): the first segment gets
    /// `next_msn` and follows a discontinuity.
    pub fn resume(cfg: SegmenterConfig, next_msn: u64) -> Self {
        Segmenter { next_msn, pending_discontinuity: true, ..Segmenter::new(cfg) }
    }

    /// The MSN the next segment will get.
    pub fn next_msn(&self) -> u64 {
        self.open.as_ref().map_or(self.next_msn, |o| o.msn)
    }

    /// The part being made. The packager logs it for renditions cut in step with this one
    /// (`media::follow`).
    pub fn open_part(&self) -> Option<OpenPart<'_>> {
        self.open.as_ref().map(|o| OpenPart {
            msn: o.msn,
            index: o.index,
            start: o.start,
            discontinuity: o.discontinuity,
            frames: &o.frames,
        })
    }

    /// Average driver frame interval (the frame duration on a regular stream).
    pub fn frame_interval(&self) -> Option<Duration> {
        self.frame_interval
    }

    /// Feed one frame; completed parts are appended to `out`.
    pub fn push(&mut self, frame: Arc<Frame>, out: &mut Vec<Part>) {
        let has_video = frame.tracks.video.is_some();
        let is_driver = match frame.track {
            TrackKind::Video => true,
            TrackKind::Audio => !has_video,
        };
        if is_driver && self.open.as_ref().is_some_and(|o| frame.dts < o.start) {
            // Time went back past the open part's start (a source whose ingest let a jump
            // through; RTMP and MPEG-TS fold them). The part could never reach its target, so it
            // would take every frame from now on and never be published: end it as a lap does,
            // and start again after a discontinuity at the next key frame.
            self.break_off(out);
        }
        if frame.discontinuity {
            // The gap before a resumed publisher is not media: end the part at most one part
            // target after it started.
            let cap = self
                .open
                .as_ref()
                .map(|o| o.start.plus(MediaTime::new(self.cfg.part_target.as_micros() as i64, 1_000_000)));
            let end = match cap {
                Some(cap) if cap < frame.dts => cap.rescale(frame.dts.timescale),
                _ => frame.dts,
            };
            self.close(end, true, out);
            self.pending_discontinuity = true;
            self.last_driver_dts = None;
        }
        if !is_driver {
            // Audio rides along in whatever part is open; before the first key frame there is
            // nothing to attach it to.
            if let Some(open) = &mut self.open {
                open.frames.push(frame);
            }
            return;
        }
        let sync = frame.keyframe || frame.track == TrackKind::Audio;
        if let Some(prev) = self.last_driver_dts {
            let delta = frame.dts.minus(prev).as_duration();
            if !delta.is_zero() {
                // A moving average: rounded timestamps (33, 34, 33 ms at 30 fps) average out
                // to the true interval, and a frame-rate change is followed within ~8 frames.
                let est = match self.frame_interval {
                    Some(cur) => (cur * 7 + delta) / 8,
                    None => delta,
                };
                self.frame_interval = Some(est);
            }
        }
        self.last_driver_dts = Some(frame.dts);

        let Some(open) = &self.open else {
            if sync {
                self.start_segment(frame, out.len());
            }
            return;
        };
        if frame.dts.minus(open.start).as_duration() > self.cfg.part_target + TIMESTAMP_SLACK {
            // A late frame (one dropped before it, a variable frame rate) would stretch the
            // open part past the target: it ends before its last driver frame instead, which
            // opens the next part.
            self.split_before_last_driver(has_video, out);
        }
        let open = self.open.as_ref().expect("a split keeps the segment open");
        let into_segment = frame.dts.minus(open.segment_start).as_duration();
        let into_part = frame.dts.minus(open.start).as_duration();
        let interval = self.frame_interval.unwrap_or_default();
        if sync && into_segment >= self.cfg.segment_target {
            self.close(frame.dts, true, out);
            self.start_segment(frame, out.len());
        } else if into_part + interval > self.cfg.part_target + TIMESTAMP_SLACK && !into_part.is_zero() {
            self.close(frame.dts, false, out);
            let open = self.open.as_mut().expect("close(false) keeps the segment open");
            open.start = frame.dts;
            open.independent = frame.keyframe;
            open.frames.push(frame);
        } else {
            self.open.as_mut().expect("checked above").frames.push(frame);
        }
    }

    /// The stream ended (or lost frames): emit the open part as the end of its segment. Its end
    /// is one frame interval after the last driver frame, never past the part target: audio
    /// that ran on after the last video frame does not stretch the part.
    pub fn finish(&mut self, out: &mut Vec<Part>) {
        let (Some(open), Some(last)) = (&self.open, self.last_driver_dts) else {
            self.open = None;
            return;
        };
        let interval = MediaTime::new(self.frame_interval.unwrap_or_default().as_micros() as i64, 1_000_000);
        let cap = open.start.plus(MediaTime::new(self.cfg.part_target.as_micros() as i64, 1_000_000));
        let end = last.plus(interval.rescale(last.timescale)).min(cap.rescale(last.timescale));
        self.close(end, true, out);
        self.last_driver_dts = None;
    }

    /// Frames were lost (the reader lapped): end the open part as `finish` does, and mark the
    /// next segment as following a discontinuity, since the timeline jumps over the loss.
    pub fn break_off(&mut self, out: &mut Vec<Part>) {
        self.finish(out);
        self.pending_discontinuity = true;
    }

    fn start_segment(&mut self, frame: Arc<Frame>, _: usize) {
        let msn = self.next_msn;
        self.next_msn += 1;
        self.open = Some(Open {
            msn,
            index: 0,
            start: frame.dts,
            independent: true,
            segment_start: frame.dts,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            frames: vec![frame],
        });
    }

    /// End the open part before its last driver frame, which (with the audio after it) starts
    /// the next part. Nothing to do when the part has only one driver frame: a single frame
    /// longer than the target cannot be split.
    fn split_before_last_driver(&mut self, has_video: bool, out: &mut Vec<Part>) {
        let Some(open) = &mut self.open else { return };
        let is_driver = |f: &Arc<Frame>| match f.track {
            TrackKind::Video => true,
            TrackKind::Audio => !has_video,
        };
        let (Some(first), Some(last)) =
            (open.frames.iter().position(is_driver), open.frames.iter().rposition(is_driver))
        else {
            return;
        };
        if first == last {
            return;
        }
        let tail = open.frames.split_off(last);
        let end = tail[0].dts;
        self.close(end, false, out);
        let open = self.open.as_mut().expect("close(false) keeps the segment open");
        open.start = end;
        open.independent = tail[0].keyframe;
        open.frames = tail;
    }

    /// Emit the open part ending at `end`. With `end_segment`, the segment is closed too;
    /// otherwise the open state is kept with an empty frame list and the next index.
    fn close(&mut self, end: MediaTime, end_segment: bool, out: &mut Vec<Part>) {
        let Some(open) = &mut self.open else { return };
        // A part never ends before it starts (only a broken source sends time backwards).
        let end = if end < open.start { open.start } else { end };
        out.push(Part {
            msn: open.msn,
            index: open.index,
            frames: std::mem::take(&mut open.frames),
            start: open.start,
            end,
            independent: open.independent,
            ends_segment: end_segment,
            discontinuity: open.discontinuity,
        });
        if end_segment {
            self.open = None;
        } else {
            open.index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{Tracks, VideoCodec, VideoConfig};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn tracks() -> Arc<Tracks> {
        Arc::new(Tracks {
            video: Some(VideoConfig {
                codec: VideoCodec::H264,
                record: Bytes::new(),
                width: 0,
                height: 0,
                codec_string: String::new(),
            }),
            audio: None,
        })
    }

    fn vf(ms: i64, key: bool, t: &Arc<Tracks>) -> Arc<Frame> {
        let d = MediaTime::from_millis(ms);
        Arc::new(Frame::new(TrackKind::Video, d, d, key, Bytes::from_static(b"x"), t.clone()))
    }

    fn af(ms: i64, t: &Arc<Tracks>) -> Arc<Frame> {
        let d = MediaTime::from_millis(ms);
        Arc::new(Frame::new(TrackKind::Audio, d, d, false, Bytes::from_static(b"a"), t.clone()))
    }

    fn cfg() -> SegmenterConfig {
        SegmenterConfig { part_target: Duration::from_millis(200), segment_target: Duration::from_secs(2) }
    }

    /// 30 fps with millisecond rounding, key frame every `gop` frames.
    fn run(n: usize, gop: usize) -> Vec<Part> {
        let t = tracks();
        let mut s = Segmenter::new(cfg());
        let mut out = Vec::new();
        for i in 0..n {
            let ms = (i as f64 * 1000.0 / 30.0).round() as i64;
            s.push(vf(ms, i % gop == 0, &t), &mut out);
            s.push(af(ms + 5, &t), &mut out);
        }
        out
    }

    #[test]
    fn thirty_fps_gives_six_frame_parts_and_two_second_segments() {
        let parts = run(300, 60);
        let first_seg: Vec<_> = parts.iter().filter(|p| p.msn == 0).collect();
        assert_eq!(first_seg.len(), 10);
        for p in &first_seg {
            assert_eq!(p.frames.iter().filter(|f| f.track == TrackKind::Video).count(), 6);
            assert!(p.duration() <= Duration::from_millis(200));
        }
        assert!(first_seg[0].independent);
        assert!(first_seg.last().unwrap().ends_segment);
        let seg_dur: Duration = first_seg.iter().map(|p| p.duration()).sum();
        assert_eq!(seg_dur, Duration::from_secs(2));
    }

    #[test]
    fn frames_before_first_key_frame_are_dropped() {
        let t = tracks();
        let mut s = Segmenter::new(cfg());
        let mut out = Vec::new();
        s.push(af(0, &t), &mut out);
        s.push(vf(0, false, &t), &mut out);
        s.push(vf(33, true, &t), &mut out);
        for i in 2..20 {
            s.push(vf(i * 33, false, &t), &mut out);
        }
        assert!(!out.is_empty());
        assert_eq!(out[0].start, MediaTime::from_millis(33));
        assert!(out[0].frames[0].keyframe);
    }

    #[test]
    fn discontinuity_closes_segment_and_marks_the_next() {
        let t = tracks();
        let mut s = Segmenter::new(cfg());
        let mut out = Vec::new();
        for i in 0..10 {
            s.push(vf(i * 33, i == 0, &t), &mut out);
        }
        let mut f = Frame::new(
            TrackKind::Video,
            MediaTime::from_millis(430),
            MediaTime::from_millis(430),
            true,
            Bytes::new(),
            t.clone(),
        );
        f.discontinuity = true;
        s.push(Arc::new(f), &mut out);
        for i in 1..10 {
            s.push(vf(430 + i * 33, false, &t), &mut out);
        }
        let closed = out.iter().find(|p| p.ends_segment).expect("segment 0 closed");
        assert_eq!(closed.msn, 0);
        assert!(closed.duration() <= Duration::from_millis(200));
        let next = out.iter().find(|p| p.msn == 1).expect("segment 1 started");
        assert!(next.discontinuity && next.independent && next.index == 0);
    }

    #[test]
    fn time_going_back_ends_the_segment_instead_of_growing_one_part_forever() {
        let t = tracks();
        let mut s = Segmenter::new(cfg());
        let mut out = Vec::new();
        // 2 s of 30 fps, then the source's time goes back 10 s and runs on for 4 s.
        for i in 0..60 {
            s.push(vf(10_000 + i * 100 / 3, i % 30 == 0, &t), &mut out);
        }
        for i in 0..120 {
            s.push(vf(2_000 + i * 100 / 3, i % 30 == 15, &t), &mut out);
        }
        let after: Vec<_> = out.iter().filter(|p| p.discontinuity).collect();
        assert!(!after.is_empty(), "parts after the step back are published");
        assert!(
            after[0].independent && after[0].start == MediaTime::from_millis(2_500),
            "{:?}",
            after[0].start
        );
        assert!(out.iter().all(|p| p.duration() <= Duration::from_millis(200) && p.frames.len() <= 12));
        // The segment open at the step back ends one frame after its last frame.
        let before = out.iter().rfind(|p| p.msn == 0).unwrap();
        assert!(before.ends_segment && before.end == MediaTime::from_millis(11_999), "{:?}", before.end);
    }

    #[test]
    fn frames_lost_to_a_lap_end_the_segment_before_a_discontinuity() {
        let t = tracks();
        let mut s = Segmenter::new(cfg());
        let mut out = Vec::new();
        for i in 0..10 {
            s.push(vf(i * 33, i == 0, &t), &mut out);
        }
        s.break_off(&mut out);
        let closed = out.last().expect("the open part was emitted");
        assert!(closed.ends_segment && closed.msn == 0);
        // Frames resume 2 s later; nothing until the next key frame, which starts segment 1.
        s.push(vf(2330, false, &t), &mut out);
        let before = out.len();
        for i in 0..10 {
            s.push(vf(2363 + i * 33, i == 0, &t), &mut out);
        }
        let next = out[before..].iter().find(|p| p.msn == 1).expect("segment 1 started");
        assert!(next.discontinuity && next.independent && next.index == 0);
        assert_eq!(next.start, MediaTime::from_millis(2363));
    }

    #[test]
    fn twenty_four_fps_never_exceeds_part_target() {
        let t = tracks();
        let mut s = Segmenter::new(cfg());
        let mut out = Vec::new();
        for i in 0..480 {
            let ms = (i as f64 * 1000.0 / 24.0).round() as i64;
            s.push(vf(ms, i % 48 == 0, &t), &mut out);
        }
        assert!(
            out.iter().all(|p| p.duration() <= Duration::from_millis(200)),
            "{:?}",
            out.iter().map(|p| p.duration()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn finish_ends_one_frame_after_the_last_video_frame_within_the_target() {
        let t = tracks();
        let mut s = Segmenter::new(cfg());
        let mut out = Vec::new();
        for i in 0..8 {
            s.push(vf(i * 33, i == 0, &t), &mut out);
        }
        // Audio runs on for a second after the last video frame.
        for i in 0..40 {
            s.push(af(231 + i * 21, &t), &mut out);
        }
        s.finish(&mut out);
        let last = out.last().expect("the open part is emitted");
        assert!(last.ends_segment);
        assert!(last.duration() <= Duration::from_millis(200), "{:?}", last.duration());
        assert_eq!(
            last.end,
            MediaTime::from_millis(231 + 33).min(last.start.plus(MediaTime::from_millis(200)))
        );
    }

    proptest! {
        /// Segmenter invariants on arbitrary streams: every segment starts on a key frame; parts
        /// never exceed the target unless one frame does, also with frames dropped; MSN and part
        /// numbers only grow;
        /// part durations tile the timeline with no gap or overlap.
        #[test]
        fn invariants(fps in prop::sample::select(vec![24.0f64, 25.0, 29.97, 30.0, 50.0, 59.94, 60.0]),
                      frames in proptest::collection::vec((any::<bool>(), 0u8..100), 50..400),
                      drop_pct in prop::sample::select(vec![0u8, 5, 20]),
                      part_ms in 100u64..1000, seg_ms in 500u64..6000) {
            let t = tracks();
            let mut s = Segmenter::new(SegmenterConfig { part_target: Duration::from_millis(part_ms), segment_target: Duration::from_millis(seg_ms) });
            let mut out = Vec::new();
            // Some frames dropped (as a congested encoder or network does): the gaps make
            // frames arrive later than the average interval predicts.
            let mut last_ms = 0i64;
            let mut longest_ms = 0i64;
            for (i, (key, roll)) in frames.iter().enumerate() {
                if i > 0 && *roll < drop_pct {
                    continue;
                }
                let ms = (i as f64 * 1000.0 / fps).round() as i64;
                longest_ms = longest_ms.max(ms - last_ms);
                last_ms = ms;
                s.push(vf(ms, *key || i == 0, &t), &mut out);
            }
            let frame_ms = longest_ms.max((1000.0 / fps).ceil() as i64) as f64;
            let mut prev: Option<&Part> = None;
            for p in &out {
                if p.index == 0 {
                    prop_assert!(p.independent && p.frames[0].keyframe, "segment {} does not start on a key frame", p.msn);
                }
                // A single frame longer than the target cannot be split; otherwise the bound holds.
                if (part_ms as f64) >= frame_ms + 1.0 {
                    // Within the timestamps' own precision (1 ms for RTMP sources).
                    prop_assert!(p.duration() <= Duration::from_millis(part_ms + 1), "part {}.{} is {:?}", p.msn, p.index, p.duration());
                }
                if let Some(q) = prev {
                    prop_assert!((p.msn, p.index) > (q.msn, q.index));
                    prop_assert_eq!(p.start, q.end);
                    if q.ends_segment { prop_assert_eq!(p.msn, q.msn + 1); prop_assert_eq!(p.index, 0); }
                    else { prop_assert_eq!(p.msn, q.msn); prop_assert_eq!(p.index, q.index + 1); }
                }
                prev = Some(p);
            }
        }
    }
}
