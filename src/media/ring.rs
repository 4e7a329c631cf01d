//! `FrameRing`: the one fan-out primitive. One writer, many readers, GOP-aware.
//!
//! Every consumer of live media (RTMP viewers, the LL-HLS packager, the archive writer, the
//! ffmpeg feeder) reads through a [`RingReader`]; there are no side channels.
//!
//! Invariants:
//! - [`RingWriter::push`] is synchronous and O(1) amortized; it never waits for, or fails
//!   because of, a reader (ARCHITECTURE.md, backpressure rule 1).
//! - Frames are `Arc<Frame>` with `Bytes` payloads: fan-out copies no media bytes.
//! - Frames are numbered by a sequence number that only grows. The ring keeps an index of
//!   sync points (video key frames; every audio frame of an audio-only rendition).
//! - The ring is bounded by bytes (hard) and by duration (soft: the newest GOP is never evicted
//!   for duration, so a late joiner can always start on a key frame).
//! - A new reader starts at the newest sync point (instant start). A reader that is lapped gets
//!   [`Lagged`], resyncs to the newest sync point, and its `dropped` count goes up.
//! - Wake-ups go through a `watch` of the next sequence number; the state lock is a short
//!   `std::sync::Mutex` section and is never held across `.await`.
//! - After a publisher resumes within its reconnect grace, the writer rebases timestamps so the
//!   channel timeline never goes backwards, and marks the first frame `discontinuity`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::clock::Clock;
use super::codec::Tracks;
use super::frame::{Frame, TrackKind};
use super::time::MediaTime;

/// Bookkeeping bytes charged per frame on top of its payload (the `Frame` itself, the Arc, the
/// deque slot), so a stream of tiny frames is bounded too.
const FRAME_OVERHEAD_BYTES: usize = 192;

/// Gap inserted between the last frame before a publisher dropped and the first frame after it
/// resumed. Large enough to absorb audio/video interleave jitter in the new session's first
/// frames, so neither track's decode time goes backwards.
const RESUME_GAP: MediaTime = MediaTime { ticks: 100, timescale: 1000 };

/// Audio frames that may wait for the next video frame before readers are woken anyway
/// (about 85 ms of AAC at 48 kHz).
const MAX_UNANNOUNCED_AUDIO: u32 = 4;

/// Limits of one ring.
#[derive(Clone, Copy, Debug)]
pub struct RingLimits {
    /// Keep about this much media (soft: the newest GOP always stays).
    pub max_duration: Duration,
    /// Hard bound on buffered payload bytes.
    pub max_bytes: usize,
}

/// What readers watch: the sequence number the next pushed frame will get, and whether the
/// ring has been closed (no more frames will come).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Signal {
    next_seq: u64,
    closed: bool,
}

struct State {
    frames: VecDeque<Arc<Frame>>,
    /// Sequence number of `frames[0]`.
    first_seq: u64,
    /// Sequence numbers of sync points still in `frames`, oldest first.
    sync_points: VecDeque<u64>,
    bytes: usize,
    tracks: Arc<Tracks>,
    /// Highest decode time pushed so far (channel timeline), for rebasing after a resume.
    last_dts: Option<MediaTime>,
    closed: bool,
}

impl State {
    fn next_seq(&self) -> u64 {
        self.first_seq + self.frames.len() as u64
    }

    fn newest_sync(&self) -> Option<u64> {
        self.sync_points.back().copied()
    }

    fn get(&self, seq: u64) -> Option<&Arc<Frame>> {
        seq.checked_sub(self.first_seq).and_then(|i| self.frames.get(i as usize))
    }

    fn pop_front(&mut self) {
        if let Some(f) = self.frames.pop_front() {
            self.bytes -= frame_cost(&f);
            if self.sync_points.front() == Some(&self.first_seq) {
                self.sync_points.pop_front();
            }
            self.first_seq += 1;
        }
    }

    fn span(&self) -> Duration {
        match (self.frames.front(), self.frames.back()) {
            (Some(a), Some(b)) => b.dts.minus(a.dts).as_duration(),
            _ => Duration::ZERO,
        }
    }

    fn evict(&mut self, limits: &RingLimits) {
        while self.frames.len() > 1 && self.bytes > limits.max_bytes {
            self.pop_front();
        }
        // Duration is soft: never evict the newest sync point or anything after it.
        while let Some(newest_sync) = self.newest_sync() {
            if self.first_seq >= newest_sync || self.span() <= limits.max_duration {
                break;
            }
            self.pop_front();
        }
    }
}

fn frame_cost(f: &Frame) -> usize {
    f.data.len() + FRAME_OVERHEAD_BYTES
}

/// A frame where a reader may start decoding.
fn is_sync_point(f: &Frame) -> bool {
    match f.track {
        TrackKind::Video => f.keyframe,
        TrackKind::Audio => f.tracks.video.is_none(),
    }
}

struct Shared {
    state: Mutex<State>,
    signal: watch::Sender<Signal>,
    limits: RingLimits,
    /// Stamps each frame's arrival (`Frame::received_at`) as it is pushed.
    clock: Clock,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would leave at worst a half-evicted deque, which every
        // method tolerates; recover the guard rather than poisoning every reader.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle to one rendition's ring. Cheap to clone; the `Channel` actor owns the canonical one.
#[derive(Clone)]
pub struct FrameRing {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for FrameRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("FrameRing")
            .field("first_seq", &s.first_seq)
            .field("frames", &s.frames.len())
            .field("bytes", &s.bytes)
            .field("closed", &s.closed)
            .finish()
    }
}

impl FrameRing {
    /// A ring on the system clock.
    pub fn new(limits: RingLimits) -> Self {
        Self::with_clock(limits, Clock::system())
    }

    /// A ring whose writer stamps arrivals from `clock`.
    pub fn with_clock(limits: RingLimits, clock: Clock) -> Self {
        let (signal, _) = watch::channel(Signal { next_seq: 0, closed: false });
        FrameRing {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    frames: VecDeque::new(),
                    first_seq: 0,
                    sync_points: VecDeque::new(),
                    bytes: 0,
                    tracks: Arc::new(Tracks::default()),
                    last_dts: None,
                    closed: false,
                }),
                signal,
                limits,
                clock,
            }),
        }
    }

    /// A writer for a publisher session. `resumed` is true when the session continues a
    /// channel whose previous publisher dropped within the grace period: the writer then rebases
    /// timestamps to follow the last frame and marks the first frame as a discontinuity.
    pub fn writer(&self, resumed: bool) -> RingWriter {
        RingWriter { shared: self.shared.clone(), rebase: resumed, offset: None, unannounced: 0 }
    }

    /// A reader positioned at the newest sync point (or, if none is buffered, at the next one
    /// to arrive).
    pub fn reader(&self) -> RingReader {
        let s = self.shared.lock();
        let (next, need_sync) = match s.newest_sync() {
            Some(seq) => (seq, false),
            None => (s.next_seq(), true),
        };
        drop(s);
        RingReader {
            shared: self.shared.clone(),
            rx: self.shared.signal.subscribe(),
            cur: Cursor { next, need_sync, dropped: 0 },
        }
    }

    /// No more frames will be pushed; readers drain what is buffered, then see `Closed`.
    pub fn close(&self) {
        let mut s = self.shared.lock();
        s.closed = true;
        let next_seq = s.next_seq();
        drop(s);
        self.shared.signal.send_replace(Signal { next_seq, closed: true });
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// The codec configuration currently in force.
    pub fn tracks(&self) -> Arc<Tracks> {
        self.shared.lock().tracks.clone()
    }

    /// (frames, bytes) buffered now.
    pub fn occupancy(&self) -> (usize, usize) {
        let s = self.shared.lock();
        (s.frames.len(), s.bytes)
    }

    /// Number of live readers (handles other than the ring's own).
    pub fn reader_count(&self) -> usize {
        self.shared.signal.receiver_count()
    }
}

/// The one writer of a ring, held by the ingest session (or an ffmpeg output).
pub struct RingWriter {
    shared: Arc<Shared>,
    /// Rebase timestamps on the next push (publisher resumed).
    rebase: bool,
    /// Added to every timestamp of this writer's session.
    offset: Option<MediaTime>,
    /// Audio frames pushed since readers were last woken.
    unannounced: u32,
}

impl RingWriter {
    /// Replace the codec configuration in force (the frames that follow carry the same `Arc`).
    pub fn set_tracks(&mut self, tracks: Arc<Tracks>) {
        self.shared.lock().tracks = tracks;
    }

    pub fn tracks(&self) -> Arc<Tracks> {
        self.shared.lock().tracks.clone()
    }

    /// Append a frame, stamping its arrival (`received_at`) from the ring's clock unless the
    /// demuxer stamped an earlier one; returns its
    /// sequence number. Never blocks on readers.
    pub fn push(&mut self, mut frame: Frame) -> u64 {
        // A demuxer that held the frame (RTSP and WHIP wait for sender reports) stamped when it
        // arrived; that, not the release, is when it was received.
        let now = self.shared.clock.wall();
        if frame.received_at == SystemTime::UNIX_EPOCH || frame.received_at > now {
            frame.received_at = now;
        }
        let mut s = self.shared.lock();
        if self.rebase {
            self.rebase = false;
            if let Some(last) = s.last_dts {
                let target = last.plus(RESUME_GAP);
                self.offset = Some(target.minus(frame.dts.rescale(target.timescale)));
                frame.discontinuity = true;
            }
        }
        if let Some(off) = self.offset {
            frame.dts = frame.dts.plus(off);
            frame.pts = frame.pts.plus(off);
        }
        if s.last_dts.is_none_or(|d| frame.dts > d) {
            s.last_dts = Some(frame.dts);
        }
        let seq = s.next_seq();
        if is_sync_point(&frame) {
            s.sync_points.push_back(seq);
        }
        s.bytes += frame_cost(&frame);
        s.frames.push_back(Arc::new(frame));
        let limits = self.shared.limits;
        let has_video = s.frames.back().is_some_and(|f| f.tracks.video.is_some());
        let is_video = s.frames.back().is_some_and(|f| f.track == TrackKind::Video);
        s.evict(&limits);
        // Wake readers on video frames only (audio rides along with the next one), so a viewer
        // writes once per video frame instead of once per audio and video frame: the wake-ups
        // and syscalls per viewer drop by half or more, for at most one video frame interval of
        // added audio delay. Audio-only renditions, and audio that piles up (a stalled video
        // track), still wake readers.
        if is_video || !has_video || self.unannounced >= MAX_UNANNOUNCED_AUDIO {
            self.unannounced = 0;
            let signal = Signal { next_seq: s.next_seq(), closed: s.closed };
            drop(s);
            self.shared.signal.send_replace(signal);
        } else {
            self.unannounced += 1;
        }
        seq
    }
}

/// A reader fell behind the ring's tail and was moved to the newest sync point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lagged {
    /// Frames the reader never saw.
    pub skipped: u64,
}

/// The result of a non-blocking read.
#[derive(Debug)]
pub enum ReadResult {
    Frame(Arc<Frame>),
    Lagged(Lagged),
    /// Nothing new yet; `wait` for more.
    Empty,
    /// Closed and fully drained.
    Closed,
}

/// Outcome of [`RingReader::read_batch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub skipped: u64,
    pub closed: bool,
}

/// A cursor into a ring. Dropping it detaches the consumer.
pub struct RingReader {
    shared: Arc<Shared>,
    rx: watch::Receiver<Signal>,
    cur: Cursor,
}

/// A reader's position, apart from the shared handle so it can move while the state is locked.
struct Cursor {
    /// Sequence number of the next frame to hand out.
    next: u64,
    /// Skip frames until the next sync point (no sync point was buffered when we started or resynced).
    need_sync: bool,
    /// Frames skipped so far (lapped or shed).
    dropped: u64,
}

impl Cursor {
    /// How far behind the newest frame the cursor is, by decode time.
    fn lag(&self, s: &State) -> Duration {
        match (s.get(self.next.max(s.first_seq)), s.frames.back()) {
            (Some(mine), Some(newest)) => newest.dts.minus(mine.dts).as_duration(),
            _ => Duration::ZERO,
        }
    }

    /// Up to `max` frames into `out` from the locked state.
    fn read_batch(&mut self, s: &State, out: &mut Vec<Arc<Frame>>, max: usize) -> Batch {
        let mut batch = Batch::default();
        while out.len() < max {
            match self.read(s) {
                ReadResult::Frame(f) => out.push(f),
                ReadResult::Lagged(l) => batch.skipped += l.skipped,
                ReadResult::Empty => break,
                ReadResult::Closed => {
                    batch.closed = true;
                    break;
                }
            }
        }
        batch
    }

    /// The next frame for this cursor from the locked state.
    fn read(&mut self, s: &State) -> ReadResult {
        if self.next < s.first_seq {
            let skipped = self.resync(s);
            return ReadResult::Lagged(Lagged { skipped });
        }
        loop {
            match s.get(self.next) {
                Some(f) => {
                    self.next += 1;
                    if self.need_sync {
                        if !is_sync_point(f) {
                            continue;
                        }
                        self.need_sync = false;
                    }
                    return ReadResult::Frame(f.clone());
                }
                None if s.closed => return ReadResult::Closed,
                None => return ReadResult::Empty,
            }
        }
    }

    fn resync(&mut self, s: &State) -> u64 {
        let target = match s.newest_sync() {
            Some(seq) if seq >= self.next => {
                self.need_sync = false;
                seq
            }
            // Already at or past the newest sync point: only a lapped reader needs to move,
            // and then it waits for the next sync point.
            _ if self.next >= s.first_seq => return 0,
            _ => {
                self.need_sync = true;
                s.next_seq()
            }
        };
        let skipped = target - self.next;
        self.next = target;
        self.dropped += skipped;
        skipped
    }
}

impl RingReader {
    /// Next frame if one is buffered; never waits.
    pub fn try_read(&mut self) -> ReadResult {
        let s = self.shared.lock();
        self.cur.read(&s)
    }

    /// Append up to `max` buffered frames to `out`, resyncing past any lap on the way.
    /// Returns how many frames were skipped by laps (0 normally) and whether the ring is
    /// closed and drained. One lock for the whole batch: with hundreds of viewers woken per
    /// video frame, a lock per frame would be most of the reading cost.
    pub fn read_batch(&mut self, out: &mut Vec<Arc<Frame>>, max: usize) -> Batch {
        let s = self.shared.lock();
        self.cur.read_batch(&s, out, max)
    }

    /// Wait until a frame past the cursor exists or the ring is closed.
    /// Returns false once the ring is closed and everything has been read.
    pub async fn wait(&mut self) -> bool {
        let next = self.cur.next;
        match self.rx.wait_for(|s| s.next_seq > next || s.closed).await {
            Ok(sig) => !(sig.closed && sig.next_seq <= next),
            // The sender lives in `Shared`, which we hold; it cannot be dropped.
            Err(_) => false,
        }
    }

    /// Convenience: wait for and return the next frame, `Err(Lagged)` after a resync, or `None`
    /// once the ring is closed and drained.
    pub async fn next(&mut self) -> Option<Result<Arc<Frame>, Lagged>> {
        loop {
            match self.try_read() {
                ReadResult::Frame(f) => return Some(Ok(f)),
                ReadResult::Lagged(l) => return Some(Err(l)),
                ReadResult::Closed => return None,
                ReadResult::Empty => {
                    if !self.wait().await {
                        // Closed: drain anything that raced in, then stop.
                        return match self.try_read() {
                            ReadResult::Frame(f) => Some(Ok(f)),
                            _ => None,
                        };
                    }
                }
            }
        }
    }

    /// How far behind the newest frame this reader is, by decode time.
    pub fn lag(&self) -> Duration {
        let s = self.shared.lock();
        self.cur.lag(&s)
    }

    /// `read_batch`, unless this reader is more than `max_lag` behind the newest frame: then
    /// nothing is read and the lag is returned, for the caller's shedding policy. One lock for
    /// both, since a viewer asks this on every wake-up.
    pub fn read_batch_within(
        &mut self,
        out: &mut Vec<Arc<Frame>>,
        max: usize,
        max_lag: Duration,
    ) -> Result<Batch, Duration> {
        let s = self.shared.lock();
        let lag = self.cur.lag(&s);
        if lag > max_lag {
            return Err(lag);
        }
        Ok(self.cur.read_batch(&s, out, max))
    }

    /// Shed load: jump to the newest sync point (backpressure rule 3: drop to a key frame, never
    /// a random frame). Returns the number of frames skipped.
    pub fn skip_to_newest_sync(&mut self) -> u64 {
        let s = self.shared.lock();
        self.cur.resync(&s)
    }

    /// Start over at the next sync point to arrive, skipping what is buffered (a WHEP viewer
    /// whose publisher was just asked for a fresh key frame). Returns the frames skipped.
    pub fn skip_to_next_sync(&mut self) -> u64 {
        let s = self.shared.lock();
        let target = s.next_seq();
        let skipped = target.saturating_sub(self.cur.next);
        self.cur.next = target;
        self.cur.need_sync = true;
        self.cur.dropped += skipped;
        skipped
    }

    /// Frames this reader has skipped in total.
    pub fn dropped(&self) -> u64 {
        self.cur.dropped
    }

    /// Sequence number of the next frame this reader will get.
    pub fn position(&self) -> u64 {
        self.cur.next
    }

    /// Identity of the ring this reader reads (equal for readers of the same ring, as long as
    /// one of them lives); a key for per-ring state such as the RTMP channel writer.
    pub fn ring_id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// A second reader of the same ring at the same position.
    pub fn fork(&self) -> RingReader {
        RingReader {
            shared: self.shared.clone(),
            rx: self.shared.signal.subscribe(),
            cur: Cursor { next: self.cur.next, need_sync: self.cur.need_sync, dropped: 0 },
        }
    }

    /// Move the cursor to `seq`, a position another reader of this ring reached (a viewer
    /// taking back its place from the channel writer). A position the ring has since evicted
    /// reads as a lap on the next read, like any reader that fell behind.
    pub fn seek(&mut self, seq: u64) {
        self.cur.next = seq;
        self.cur.need_sync = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{VideoCodec, VideoConfig};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn av_tracks() -> Arc<Tracks> {
        Arc::new(Tracks {
            video: Some(VideoConfig {
                codec: VideoCodec::H264,
                record: Bytes::new(),
                width: 0,
                height: 0,
                codec_string: "avc1.64001f".into(),
            }),
            audio: None,
        })
    }

    fn video(ms: i64, key: bool, size: usize) -> Frame {
        let t = MediaTime::from_millis(ms);
        Frame::new(TrackKind::Video, t, t, key, Bytes::from(vec![0u8; size]), av_tracks())
    }

    fn limits(secs: u64, bytes: usize) -> RingLimits {
        RingLimits { max_duration: Duration::from_secs(secs), max_bytes: bytes }
    }

    /// Push `n` frames at 40 ms with a key frame every `gop` frames.
    fn fill(w: &mut RingWriter, from: usize, n: usize, gop: usize) {
        for i in from..from + n {
            w.push(video(i as i64 * 40, i % gop == 0, 1000));
        }
    }

    /// A fork reads on from the same place and a reader can be put back where another left
    /// off (the RTMP channel writer and the viewers it hands back); a position since evicted
    /// reads as a lap to the newest key frame.
    #[test]
    fn fork_and_seek_share_positions_on_one_ring() {
        let ring = FrameRing::new(limits(30, 1 << 20));
        let mut w = ring.writer(false);
        fill(&mut w, 0, 10, 5);
        let mut a = ring.reader();
        let mut out = Vec::new();
        a.read_batch(&mut out, 2);
        let mut b = a.fork();
        assert_eq!((b.position(), b.ring_id()), (a.position(), a.ring_id()));
        assert_ne!(ring.reader().ring_id(), FrameRing::new(limits(1, 1)).reader().ring_id());
        out.clear();
        b.read_batch(&mut out, 64);
        a.seek(b.position());
        out.clear();
        assert_eq!(a.read_batch(&mut out, 64), Batch::default());
        assert!(out.is_empty(), "put where the fork left off, nothing is read twice");
        // Evicted: a small ring laps the old position.
        let small = FrameRing::new(limits(30, 12_000));
        let mut w = small.writer(false);
        let mut r = small.reader();
        let old = r.position();
        fill(&mut w, 0, 40, 5);
        r.seek(old);
        out.clear();
        let batch = r.read_batch(&mut out, 64);
        assert!(batch.skipped > 0 && out[0].keyframe, "lapped to a key frame: {batch:?}");
    }

    #[test]
    fn late_joiner_starts_at_newest_key_frame() {
        let ring = FrameRing::new(limits(10, 1 << 30));
        let mut w = ring.writer(false);
        fill(&mut w, 0, 130, 50); // key frames at 0, 50, 100
        let mut r = ring.reader();
        match r.try_read() {
            ReadResult::Frame(f) => {
                assert!(f.keyframe);
                assert_eq!(f.dts, MediaTime::from_millis(100 * 40));
            }
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn reader_before_first_key_frame_waits_for_one() {
        let ring = FrameRing::new(limits(10, 1 << 30));
        let mut w = ring.writer(false);
        let mut r = ring.reader();
        w.push(video(0, false, 10));
        w.push(video(40, false, 10));
        assert!(matches!(r.try_read(), ReadResult::Empty));
        w.push(video(80, true, 10));
        match r.try_read() {
            ReadResult::Frame(f) => assert!(f.keyframe),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lapped_reader_resyncs_to_key_frame_and_counts_drops() {
        // 20 KB budget with 1.2 KB frames: about 16 frames fit.
        let ring = FrameRing::new(limits(100, 20_000));
        let mut w = ring.writer(false);
        fill(&mut w, 0, 1, 10);
        let mut r = ring.reader();
        assert!(matches!(r.try_read(), ReadResult::Frame(_)));
        fill(&mut w, 1, 40, 10);
        match r.try_read() {
            ReadResult::Lagged(l) => assert!(l.skipped > 0),
            other => panic!("expected Lagged, got {other:?}"),
        }
        match r.try_read() {
            ReadResult::Frame(f) => assert!(f.keyframe, "resync lands on a key frame"),
            other => panic!("{other:?}"),
        }
        assert!(r.dropped() > 0);
    }

    #[test]
    fn byte_bound_holds_and_duration_keeps_newest_gop() {
        let ring = FrameRing::new(limits(1, 50_000));
        let mut w = ring.writer(false);
        fill(&mut w, 0, 500, 100); // 4 s GOPs, longer than the 1 s duration bound
        let (frames, bytes) = ring.occupancy();
        assert!(bytes <= 50_000, "bytes {bytes}");
        assert!(frames >= 1);
        let ring = FrameRing::new(limits(1, 1 << 30));
        let mut w = ring.writer(false);
        fill(&mut w, 0, 250, 100); // newest key frame at 200: 50 frames = 2 s > 1 s
        let (frames, _) = ring.occupancy();
        assert_eq!(frames, 50, "the newest GOP is kept whole even past max_duration");
    }

    #[test]
    fn resumed_writer_rebases_and_marks_discontinuity() {
        let ring = FrameRing::new(limits(10, 1 << 30));
        let mut w = ring.writer(false);
        fill(&mut w, 0, 10, 5); // last dts 360 ms
        drop(w);
        let mut r = ring.reader();
        while let ReadResult::Frame(_) = r.try_read() {}
        let mut w2 = ring.writer(true);
        w2.push(video(0, true, 10)); // the new session starts its clock at zero
        w2.push(video(40, false, 10));
        let a = match r.try_read() {
            ReadResult::Frame(f) => f,
            other => panic!("{other:?}"),
        };
        assert!(a.discontinuity);
        assert_eq!(a.dts, MediaTime::from_millis(460));
        let b = match r.try_read() {
            ReadResult::Frame(f) => f,
            other => panic!("{other:?}"),
        };
        assert!(!b.discontinuity);
        assert_eq!(b.dts, MediaTime::from_millis(500));
    }

    #[tokio::test]
    async fn wait_wakes_on_push_and_close() {
        let ring = FrameRing::new(limits(10, 1 << 30));
        let mut w = ring.writer(false);
        let mut r = ring.reader();
        let h = tokio::spawn(async move {
            let mut got = 0;
            while let Some(item) = r.next().await {
                item.expect("no lag in this test");
                got += 1;
            }
            got
        });
        tokio::task::yield_now().await;
        fill(&mut w, 0, 5, 5);
        ring.close();
        let got = tokio::time::timeout(Duration::from_secs(5), h).await.unwrap().unwrap();
        assert_eq!(got, 5);
    }

    #[tokio::test]
    async fn audio_waits_for_the_next_video_frame_to_wake_readers() {
        let ring = FrameRing::new(limits(10, 1 << 30));
        let mut w = ring.writer(false);
        w.push(video(0, true, 10));
        let mut r = ring.reader();
        assert!(matches!(r.try_read(), ReadResult::Frame(_)));
        let audio = |ms| {
            let t = MediaTime::from_millis(ms);
            Frame::new(TrackKind::Audio, t, t, false, Bytes::from_static(b"a"), av_tracks())
        };
        w.push(audio(5));
        let woke = tokio::time::timeout(Duration::from_millis(50), r.wait()).await;
        assert!(woke.is_err(), "one audio frame does not wake a reader of an A/V rendition");
        w.push(video(33, false, 10));
        let woke = tokio::time::timeout(Duration::from_millis(500), r.wait()).await;
        assert_eq!(woke, Ok(true), "the next video frame wakes it");
        assert!(matches!(r.try_read(), ReadResult::Frame(f) if f.track == TrackKind::Audio));
        assert!(matches!(r.try_read(), ReadResult::Frame(f) if f.track == TrackKind::Video));
        for i in 0..=MAX_UNANNOUNCED_AUDIO as i64 {
            w.push(audio(40 + i));
        }
        let woke = tokio::time::timeout(Duration::from_millis(500), r.wait()).await;
        assert_eq!(woke, Ok(true), "audio piling up without video still wakes readers");
    }

    #[test]
    fn skip_to_newest_sync_sheds_to_key_frame() {
        let ring = FrameRing::new(limits(100, 1 << 30));
        let mut w = ring.writer(false);
        fill(&mut w, 0, 1, 10);
        let mut r = ring.reader();
        fill(&mut w, 1, 29, 10);
        assert!(r.lag() >= Duration::from_millis(1000));
        let skipped = r.skip_to_newest_sync();
        assert_eq!(skipped, 20);
        match r.try_read() {
            ReadResult::Frame(f) => assert!(f.keyframe && f.dts == MediaTime::from_millis(800)),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        /// Whatever the push pattern and budget, every reader sees strictly increasing sequence
        /// positions, the first frame it sees after a start or resync is a key frame, and the
        /// ring never holds more than its byte bound (plus one frame, which is always kept).
        #[test]
        fn readers_only_resync_onto_key_frames(
            pattern in proptest::collection::vec((any::<bool>(), 1usize..5000), 1..300),
            budget in 2_000usize..100_000,
            read_every in 1usize..20,
        ) {
            let ring = FrameRing::new(limits(3, budget));
            let mut w = ring.writer(false);
            let mut r = ring.reader();
            let mut expect_key = true;
            let mut last_dts = None;
            for (i, (key, size)) in pattern.iter().enumerate() {
                w.push(video(i as i64 * 40, *key || i == 0, *size));
                let (_, bytes) = ring.occupancy();
                prop_assert!(bytes <= budget.max(size + FRAME_OVERHEAD_BYTES));
                if i % read_every == 0 {
                    loop {
                        match r.try_read() {
                            ReadResult::Frame(f) => {
                                if expect_key { prop_assert!(f.keyframe); expect_key = false; }
                                if let Some(d) = last_dts { prop_assert!(f.dts > d); }
                                last_dts = Some(f.dts);
                            }
                            ReadResult::Lagged(_) => expect_key = true,
                            ReadResult::Empty | ReadResult::Closed => break,
                        }
                    }
                }
            }
        }
    }
}
