//! Aligned cutting for transcoded renditions: a rendition made from the source (the transcode
//! ladder's rungs) is cut where the source was cut, so that its segments and parts have the
//! source's media sequence numbers, part indexes and program date times, and a player switches
//! between renditions at any part without a stall. Pure policy, like [`super::segmenter`].
//!
//! The source's packager records every part it opens in a [`BoundaryLog`] (MSN, index, the decode
//! time of the part's first frame, and the segment's B-frame shift) and how far its input has
//! got. A [`Follower`] reads a rung's frames and cuts by that log:
//! - A segment starts on a rung key frame whose *presentation* time is that of a source segment's
//!   first frame (the ladder forces key frames where the source has them). The rung has no
//!   B-frames, so its decode times are the presentation times, and a source part boundary at
//!   decode time `t` in a segment whose first frame is shown `shift` after it is decoded falls
//!   at `t + shift` on the rung: part durations match the source's.
//! - A rung frame waits until the source has seen the same instant, since only then is every
//!   boundary before it in the log (the rung is an encoder's delay behind, so it rarely waits).
//! - Source segments the rung has no media for (ffmpeg restarting, a key frame that was not
//!   forced where it should have been) become gap segments (`EXT-X-GAP`), so MSNs stay the
//!   source's and consecutive; the first segment after a gap follows a discontinuity.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::frame::{Frame, TrackKind};
use super::segmenter::{OpenPart, Part};
use super::time::MediaTime;

/// Boundaries kept (about 3 minutes of 200 ms parts, 64 kB): more than a rung lags, or misses
/// while its ffmpeg restarts after the longest backoff.
const LOG_CAPACITY: usize = 1024;
/// Frames a follower holds while it waits for the source (a stuck source packager).
const MAX_PENDING: usize = 2048;
/// Timestamps travel through MPEG-TS (90 kHz) and back; an FLV source is in whole milliseconds.
/// Instants this close are the same instant.
const TOLERANCE: MediaTime = MediaTime { ticks: 1, timescale: 1000 };

/// Where the source opened a part.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Boundary {
    pub msn: u64,
    pub index: u32,
    /// Decode time of the part's first driver frame in the source.
    pub start: MediaTime,
    /// Presentation minus decode time of the segment's first frame (its B-frame delay).
    pub shift: MediaTime,
    /// The segment follows a discontinuity in the source.
    pub discontinuity: bool,
    /// The segment's `EXT-X-PROGRAM-DATE-TIME`.
    pub program_date_time: SystemTime,
}

impl Boundary {
    /// Where this boundary falls on a B-frame-free rendition of the same segment.
    fn at(&self, shift: MediaTime) -> MediaTime {
        self.start.plus(shift)
    }
}

/// The source packager's cuts, newest last, for followers to read.
#[derive(Debug, Default)]
pub struct BoundaryLog {
    entries: VecDeque<Boundary>,
    /// Decode time of the newest driver frame the source segmenter has taken: every boundary up
    /// to it is logged.
    progress: Option<MediaTime>,
    /// The source ended: no boundary will be added.
    ended: bool,
}

impl BoundaryLog {
    /// Record a part the source opened (in order).
    pub fn record(&mut self, b: Boundary) {
        if self.entries.back().is_some_and(|l| (l.msn, l.index) >= (b.msn, b.index)) {
            // A restarted packager re-opening a part it had opened: keep the first record.
            return;
        }
        if self.entries.len() == LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(b);
    }

    /// The source segmenter took a driver frame decoded at `dts`.
    pub fn advance(&mut self, dts: MediaTime) {
        if self.progress.is_none_or(|p| dts > p) {
            self.progress = Some(dts);
        }
    }

    pub fn end(&mut self) {
        self.ended = true;
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Every boundary before `t` is known.
    fn covers(&self, t: MediaTime) -> bool {
        self.ended || self.progress.is_some_and(|p| p.plus(TOLERANCE) >= t)
    }

    fn find(&self, msn: u64, index: u32) -> Option<&Boundary> {
        let i = self.entries.binary_search_by(|b| (b.msn, b.index).cmp(&(msn, index))).ok()?;
        self.entries.get(i)
    }

    /// The source segment whose first frame is presented at `pts`.
    fn segment_at(&self, pts: MediaTime) -> Option<&Boundary> {
        self.entries
            .iter()
            .rev()
            .filter(|b| b.index == 0)
            .take_while(|b| b.at(b.shift).plus(TOLERANCE) >= pts)
            .find(|b| {
                let at = b.at(b.shift);
                at.plus(TOLERANCE) >= pts && pts.plus(TOLERANCE) >= at
            })
    }

    /// Duration and program date time of source segment `msn`, when the log still has it and
    /// the next one.
    fn segment(&self, msn: u64) -> Option<(Duration, SystemTime)> {
        let (b, next) = (self.find(msn, 0)?, self.find(msn + 1, 0)?);
        Some((next.start.minus(b.start).as_duration(), b.program_date_time))
    }
}

/// Records the source packager's cuts into its [`BoundaryLog`]: call [`Recorder::after_push`]
/// after every frame the source segmenter takes.
#[derive(Debug, Default)]
pub struct Recorder {
    /// The segment being made and its shift.
    segment: Option<(u64, MediaTime)>,
}

impl Recorder {
    /// `emitted`: the parts the push completed; `open`: the segmenter's open part
    /// (`Segmenter::open_part`); `pdt`: the program date time of a segment starting at a decode
    /// time.
    pub fn after_push(
        &mut self,
        frame: &Frame,
        emitted: &[Part],
        open: Option<OpenPart<'_>>,
        pdt: impl Fn(MediaTime) -> SystemTime,
        log: &mut BoundaryLog,
    ) {
        let opened = open.map(|o| (o.msn, o.index, o.start, o.discontinuity, o.frames));
        let parts = emitted
            .iter()
            .map(|p| (p.msn, p.index, p.start, p.discontinuity, p.frames.as_slice()))
            .chain(opened);
        for (msn, index, start, discontinuity, frames) in parts {
            if index == 0 && self.segment.is_none_or(|(m, _)| m != msn) {
                let first = frames.iter().find(|f| is_driver(f));
                let shift = first.map_or(MediaTime::new(0, start.timescale), |f| f.pts.minus(f.dts));
                self.segment = Some((msn, shift));
            }
            let Some((_, shift)) = self.segment.filter(|(m, _)| *m == msn) else { continue };
            log.record(Boundary { msn, index, start, shift, discontinuity, program_date_time: pdt(start) });
        }
        if is_driver(frame) {
            log.advance(frame.dts);
        }
    }
}

/// What a follower emits.
#[derive(Debug)]
pub enum Followed {
    /// A part of the rendition, numbered and timed as the source's.
    Part { part: Part, program_date_time: SystemTime },
    /// A source segment this rendition has no media for.
    Gap { msn: u64, duration: Duration, program_date_time: SystemTime },
}

#[derive(Debug)]
struct Open {
    msn: u64,
    index: u32,
    shift: MediaTime,
    start: MediaTime,
    independent: bool,
    discontinuity: bool,
    program_date_time: SystemTime,
    frames: Vec<Arc<Frame>>,
}

/// Counters for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowStats {
    /// Frames dropped because no source segment they belong to could be started.
    pub dropped_frames: u64,
    /// Source segments the rendition had no key frame for (it went on at the next one).
    pub misaligned: u64,
    /// Gap segments emitted.
    pub gaps: u64,
}

/// Cuts one transcoded rendition by the source's [`BoundaryLog`].
#[derive(Debug, Default)]
pub struct Follower {
    pending: VecDeque<Arc<Frame>>,
    open: Option<Open>,
    /// The newest segment emitted (media or gap).
    last_msn: Option<u64>,
    pending_discontinuity: bool,
    last_driver: Option<MediaTime>,
    frame_interval: Option<Duration>,
    stats: FollowStats,
    /// No part ends later than this after its start unless a frame in it does (the source's
    /// rule): an end predicted from the frame interval, or at a key frame after a gap, is cut to
    /// it. `None`: no cap.
    part_target: Option<Duration>,
}

fn is_driver(f: &Frame) -> bool {
    f.track == TrackKind::Video || f.tracks.video.is_none()
}

impl Follower {
    pub fn new() -> Self {
        Self::default()
    }

    /// A follower whose parts never exceed `part_target` (`hls.part_target`) past their last frame.
    pub fn with_part_target(part_target: Duration) -> Self {
        Follower { part_target: Some(part_target), ..Self::default() }
    }

    pub fn stats(&self) -> FollowStats {
        self.stats
    }

    /// The driver frame interval seen (for FRAME-RATE before a segment completes).
    pub fn frame_interval(&self) -> Option<Duration> {
        self.frame_interval
    }

    /// Queue a frame of the rendition; [`Follower::drive`] places it.
    pub fn push(&mut self, frame: Arc<Frame>, out: &mut Vec<Followed>) {
        if self.pending.len() >= MAX_PENDING {
            // The source stopped telling us where to cut: what waited is dropped.
            self.stats.dropped_frames += self.pending.len() as u64;
            self.pending.clear();
            self.break_off(out);
        }
        self.pending.push_back(frame);
    }

    /// Place every queued frame the log covers; completed parts and gaps go to `out`.
    pub fn drive(&mut self, log: &BoundaryLog, out: &mut Vec<Followed>) {
        while let Some(f) = self.pending.front() {
            if is_driver(f) && !log.covers(f.dts) {
                return;
            }
            let f = self.pending.pop_front().expect("front exists");
            self.place(f, log, out);
        }
    }

    /// The rendition ended: place what is queued and close the open part.
    pub fn finish(&mut self, log: &BoundaryLog, out: &mut Vec<Followed>) {
        while let Some(f) = self.pending.pop_front() {
            self.place(f, log, out);
        }
        let end = self.predicted_end();
        self.close(end, true, out);
        self.last_driver = None;
    }

    /// The rendition lost frames (a restarted encoder, a lapped reader): close the open part
    /// as the end of its segment; the rendition resumes at the next aligned key frame, after a
    /// discontinuity.
    pub fn break_off(&mut self, out: &mut Vec<Followed>) {
        let end = self.predicted_end();
        self.close(end, true, out);
        self.pending_discontinuity = true;
        self.last_driver = None;
    }

    fn predicted_end(&self) -> Option<MediaTime> {
        let last = self.last_driver?;
        let step = MediaTime::new(self.frame_interval.unwrap_or_default().as_micros() as i64, 1_000_000);
        Some(last.plus(step))
    }

    fn place(&mut self, f: Arc<Frame>, log: &BoundaryLog, out: &mut Vec<Followed>) {
        if f.discontinuity {
            self.break_off(out);
        }
        if !is_driver(&f) {
            match &mut self.open {
                Some(o) => o.frames.push(f),
                None => self.stats.dropped_frames += 1,
            }
            return;
        }
        if let Some(prev) = self.last_driver {
            let delta = f.dts.minus(prev).as_duration();
            if !delta.is_zero() {
                self.frame_interval = Some(match self.frame_interval {
                    Some(cur) => (cur * 7 + delta) / 8,
                    None => delta,
                });
            }
        }
        self.last_driver = Some(f.dts);
        let sync = f.keyframe || f.track == TrackKind::Audio;
        if sync {
            if let Some(b) = log.segment_at(f.pts).copied() {
                if self.last_msn.is_none_or(|m| b.msn > m) {
                    self.close(Some(f.dts), true, out);
                    self.start_segment(b, f, log, out);
                    return;
                }
            }
        }
        let Some(o) = &self.open else {
            self.stats.dropped_frames += 1;
            return;
        };
        // Past the source's next segment start without a key frame there: this segment ends at
        // that start, and the rendition waits for the next aligned key frame.
        if let Some(next) = log.find(o.msn + 1, 0) {
            let at = next.at(next.shift);
            if f.dts >= at.plus(TOLERANCE) {
                self.stats.misaligned += 1;
                self.stats.dropped_frames += 1;
                self.close(Some(at.rescale(f.dts.timescale)), true, out);
                self.pending_discontinuity = true;
                return;
            }
        }
        // Part boundaries of this segment that the frame has reached.
        let (msn, shift) = (o.msn, o.shift);
        let mut next_index = o.index + 1;
        let mut cut = None;
        while let Some(b) = log.find(msn, next_index) {
            let at = b.at(shift).rescale(f.dts.timescale);
            if f.dts.plus(TOLERANCE) < at {
                break;
            }
            cut = Some(at);
            next_index += 1;
        }
        if let Some(at) = cut {
            self.close(Some(at), false, out);
            let o = self.open.as_mut().expect("a part close keeps the segment open");
            o.start = at;
            o.independent = f.keyframe;
        }
        self.open.as_mut().expect("checked above").frames.push(f);
    }

    fn start_segment(&mut self, b: Boundary, f: Arc<Frame>, log: &BoundaryLog, out: &mut Vec<Followed>) {
        let mut gapped = false;
        if let Some(last) = self.last_msn {
            let missing = last + 1..b.msn;
            // Segments the log no longer has (a rung down for many minutes) get the average
            // duration of those it has.
            let fallback =
                log.segment(b.msn.saturating_sub(1)).map(|(d, _)| d).unwrap_or(Duration::from_secs(2));
            for msn in missing {
                let (duration, program_date_time) =
                    log.segment(msn).unwrap_or((fallback, b.program_date_time));
                out.push(Followed::Gap { msn, duration, program_date_time });
                self.stats.gaps += 1;
                gapped = true;
            }
        }
        self.last_msn = Some(b.msn);
        self.open = Some(Open {
            msn: b.msn,
            index: 0,
            shift: b.shift,
            start: f.dts,
            independent: true,
            discontinuity: b.discontinuity || gapped || std::mem::take(&mut self.pending_discontinuity),
            program_date_time: b.program_date_time,
            frames: vec![f],
        });
    }

    /// Emit the open part ending at `end` (a predicted end when `None` is all there is).
    fn close(&mut self, end: Option<MediaTime>, end_segment: bool, out: &mut Vec<Followed>) {
        let Some(o) = &mut self.open else { return };
        if o.frames.is_empty() {
            // Nothing since the last cut (the encoder skipped frames): nothing to publish; the
            // next part continues the numbering.
            if end_segment {
                self.open = None;
            }
            return;
        }
        let last = o.frames.iter().rev().find(|f| is_driver(f)).map_or(o.start, |f| f.dts);
        let mut end = end.unwrap_or(last).max(o.start);
        if let Some(target) = self.part_target {
            let cap = o.start.plus(MediaTime::new(target.as_micros() as i64, 1_000_000));
            if end > cap && last < cap {
                end = cap;
            }
        }
        out.push(Followed::Part {
            part: Part {
                msn: o.msn,
                index: o.index,
                frames: std::mem::take(&mut o.frames),
                start: o.start,
                end,
                independent: o.independent,
                ends_segment: end_segment,
                discontinuity: o.discontinuity,
            },
            program_date_time: o.program_date_time,
        });
        if end_segment {
            self.open = None;
        } else {
            o.index += 1;
        }
    }
}

#[cfg(test)]
mod tests;
