//! `ViewerSession`: the policy every live viewer connection follows, whatever protocol it
//! plays over.
//!
//! Data flow: the channel's ring -> `RingReader` -> `ViewerSession::next_batch` (lag policy) ->
//! an egress adapter (`viewer/rtmp.rs`, `viewer/srt.rs`, `viewer/whep.rs`) serializes the frames and
//! hands its write to `ViewerSession::deliver` (write timeout, counting).
//!
//! The rules (ARCHITECTURE.md, backpressure rules 2 and 3), kept here once:
//! - a viewer further behind live than `max_lag` skips to the newest key frame, never to a
//!   random frame, and the skipped frames are counted (`tidecast_frames_dropped_total`);
//! - a viewer that needs more than `max_skips` such skips within `SKIP_WINDOW` is cut off
//!   (`reason="slow"`);
//! - a write that makes no progress for `write_timeout` cuts the viewer off
//!   (`reason="stalled"`); a server shutdown cuts everyone off politely (`reason="shutdown"`);
//! - the session counts itself in `tidecast_viewers{protocol}`, its bytes in
//!   `tidecast_egress_bytes_total{protocol}` and its time to first frame;
//! - merged writes: after a media write, the viewer waits `merge_write` before it looks at the
//!   ring again, so the frames of that window (a video frame and the audio around it) leave in
//!   one write instead of one each. Fewer, larger writes are most of what a viewer costs the
//!   server (the kernel's per-send work dominates); the price is at most `merge_write` of added
//!   latency. The first frame is never held back, and 0 turns merging off.
//!
//! Adapters must never drop a future that is part-way through a write: a half-written message
//! followed by another corrupts the stream. `deliver` only gives up on a write at the timeout,
//! and then the connection is closed.

pub mod rtmp;
pub mod srt;
pub mod whep;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use prometheus::IntCounter;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::actors::channel::AddReader;
use crate::actors::pull::{DemandGuard, Pulls};
use crate::actors::registry::{ChannelRegistry, ResolvePlay};
use crate::error::{Error, ErrorKind};
use crate::media::clock::Clock;
use crate::media::frame::Frame;
use crate::media::ring::{Batch, RingReader};
use crate::metrics::{metrics, GaugeGuard};

/// Resolve `name` for a viewer and attach a reader of its source rendition: the first step of
/// every egress adapter. `entitled`: the caller checked a playback token (`auth::PlayAccess`);
/// otherwise only a public channel resolves. A channel fed by an on-demand pulled source that is
/// not live yet is started first (the viewer waits up to `rtsp.start_timeout`); the returned
/// guard keeps such a pull running while the viewer holds it.
pub async fn attach(
    registry: &Addr<ChannelRegistry>,
    pulls: &Pulls,
    name: &str,
    entitled: bool,
) -> crate::Result<(RingReader, Option<DemandGuard>)> {
    let resolve = || async {
        registry
            .send(ResolvePlay { name: name.to_owned(), entitled })
            .await
            .map_err(Error::from)
            .and_then(|r| r)
    };
    let channel = match resolve().await {
        Err(e) if e.kind == ErrorKind::NotFound && pulls.start_on_demand(name).await => resolve().await,
        other => other,
    }?;
    let demand = pulls.hold(name);
    let reader = channel.send(AddReader::source()).await.map_err(Error::from).and_then(|r| r)?;
    Ok((reader, demand))
}

/// Window over which a viewer's key-frame skips are counted.
pub const SKIP_WINDOW: Duration = Duration::from_secs(60);

/// Per-protocol viewer limits (`rtmp.viewer_max_lag`, `rtmp.viewer_max_skips`,
/// `rtmp.write_timeout`, `rtmp.viewer_merge_write` for RTMP).
#[derive(Clone, Copy, Debug)]
pub struct ViewerPolicy {
    /// Further behind live than this, the viewer skips to the newest key frame.
    pub max_lag: Duration,
    /// Skips allowed within `SKIP_WINDOW` before the viewer is cut off.
    pub max_skips: u32,
    /// A write that makes no progress for this long cuts the viewer off.
    pub write_timeout: Duration,
    /// After a media write, wait this long before reading the ring again, so the frames of the
    /// window go out in one write; zero writes every frame as soon as it arrives.
    pub merge_write: Duration,
}

/// Why the server disconnected a viewer (`tidecast_viewers_disconnected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutReason {
    /// Kept falling behind live.
    Slow,
    /// Its socket accepted nothing for the write timeout.
    Stalled,
    /// The server is shutting down.
    Shutdown,
}

impl CutReason {
    pub fn label(self) -> &'static str {
        match self {
            CutReason::Slow => "slow",
            CutReason::Stalled => "stalled",
            CutReason::Shutdown => "shutdown",
        }
    }
}

/// What the adapter should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The batch holds frames to send.
    Frames,
    /// Nothing buffered now: wait for the ring.
    Idle,
    /// The live session ended and everything was read: finish politely.
    Ended,
    /// Disconnect the viewer (already counted).
    Cut(CutReason),
}

/// How a write handed to `deliver` went.
#[derive(Debug)]
pub enum Delivery {
    Written,
    /// No progress within the write timeout; the viewer is cut off (counted).
    Stalled,
    Failed(std::io::Error),
}

/// One live viewer.
pub struct ViewerSession {
    protocol: &'static str,
    reader: RingReader,
    policy: ViewerPolicy,
    clock: Clock,
    /// Times of recent skips, oldest first (at most `max_skips + 1` entries).
    skips: VecDeque<Instant>,
    /// When the viewer connected, for the time-to-first-frame histogram; `None` once counted.
    started: Option<Instant>,
    /// Merged writes: the ring is not looked at before this instant (set after a media write).
    hold_until: Option<Instant>,
    dropped: IntCounter,
    egress: IntCounter,
    _viewing: GaugeGuard,
    _listed: crate::actors::roster::Listed,
}

impl ViewerSession {
    /// A viewer of `channel` (listed in its roster); `consumer` labels the frames this viewer
    /// drops (`rtmp_play`); `started` is when the connection was accepted.
    pub fn new(
        channel: &str,
        protocol: &'static str,
        consumer: &'static str,
        reader: RingReader,
        policy: ViewerPolicy,
        clock: Clock,
        started: Instant,
    ) -> Self {
        ViewerSession {
            protocol,
            reader,
            policy,
            clock,
            skips: VecDeque::new(),
            started: Some(started),
            hold_until: None,
            dropped: metrics().frames_dropped.with_label_values(&[consumer]),
            egress: metrics().egress_bytes.with_label_values(&[protocol]),
            _viewing: GaugeGuard::new(metrics().viewers.with_label_values(&[protocol])),
            _listed: crate::actors::roster::Listed::new(
                channel,
                crate::actors::roster::Role::Viewer,
                protocol,
            ),
        }
    }

    /// This viewer's number in the channel roster (what logs call it; not a credential).
    pub fn id(&self) -> u64 {
        self._listed.id()
    }

    pub fn policy(&self) -> &ViewerPolicy {
        &self.policy
    }

    /// The viewer's ring cursor (for an adapter that hands the writing to a shared writer).
    pub fn reader(&self) -> &RingReader {
        &self.reader
    }

    /// Start at the next key frame to arrive instead of the buffered one (not counted as a
    /// lag skip): for a viewer whose publisher was asked for a fresh key frame.
    pub fn start_at_next_key(&mut self) {
        self.reader.skip_to_next_sync();
    }

    /// Whether the first media reached the viewer (its time to first frame is counted).
    pub fn first_frame_sent(&self) -> bool {
        self.started.is_none()
    }

    /// Take the viewer's place back at ring position `seq`, where a shared writer left it.
    pub fn resume_at(&mut self, seq: u64) {
        self.reader.seek(seq);
    }

    /// Wait for frames (or the end of the session), after the merge window of the last media
    /// write. Cancel-safe: the window's end is kept in the session, and the ring is a `watch`.
    pub async fn wait(&mut self) -> bool {
        if let Some(until) = self.hold_until {
            tokio::time::sleep_until(until).await;
            self.hold_until = None;
        }
        self.reader.wait().await
    }

    /// Apply the lag policy, then move up to `max` buffered frames into `batch` (cleared first).
    pub fn next_batch(&mut self, batch: &mut Vec<Arc<Frame>>, max: usize) -> Step {
        batch.clear();
        let b = match self.reader.read_batch_within(batch, max, self.policy.max_lag) {
            Ok(b) => b,
            Err(_lag) => match self.shed(batch, max) {
                Ok(b) => b,
                Err(cut) => return cut,
            },
        };
        self.dropped.inc_by(b.skipped);
        match (batch.is_empty(), b.closed) {
            (false, _) => Step::Frames,
            (true, true) => Step::Ended,
            (true, false) => Step::Idle,
        }
    }

    /// Too far behind live: skip to the newest key frame (counted), or cut the viewer off when
    /// it has skipped too often; then read from there.
    fn shed(&mut self, batch: &mut Vec<Arc<Frame>>, max: usize) -> Result<Batch, Step> {
        {
            let n = self.reader.skip_to_newest_sync();
            self.dropped.inc_by(n);
            let now = self.clock.now();
            self.skips.push_back(now);
            while self.skips.front().is_some_and(|t| now.saturating_duration_since(*t) > SKIP_WINDOW) {
                self.skips.pop_front();
            }
            info!(skipped = n, "viewer behind live; skipped to the newest key frame");
            if self.skips.len() > self.policy.max_skips as usize {
                info!("viewer keeps falling behind; disconnecting");
                return Err(self.cut(CutReason::Slow));
            }
        }
        Ok(self.reader.read_batch(batch, max))
    }

    /// Count a cut-off and return the step that says so.
    pub fn cut(&self, reason: CutReason) -> Step {
        metrics().viewers_cut.with_label_values(&[self.protocol, reason.label()]).inc();
        Step::Cut(reason)
    }

    /// Run one write (media or control) under the write timeout and count what it sent. The
    /// write future is only ever dropped at the timeout, after which the viewer is cut off.
    pub async fn deliver(&mut self, write: impl Future<Output = std::io::Result<u64>>) -> Delivery {
        match tokio::time::timeout(self.policy.write_timeout, write).await {
            Err(_) => {
                self.cut(CutReason::Stalled);
                info!(
                    timeout_ms = self.policy.write_timeout.as_millis() as u64,
                    "viewer stopped reading; disconnecting"
                );
                Delivery::Stalled
            }
            Ok(Err(e)) => Delivery::Failed(e),
            Ok(Ok(n)) => {
                self.egress.inc_by(n);
                Delivery::Written
            }
        }
    }

    /// A batch of media reached the viewer's socket: start the merge window, and count the time
    /// to first frame once.
    pub fn media_written(&mut self) {
        if !self.policy.merge_write.is_zero() {
            self.hold_until = Some(self.clock.now() + self.policy.merge_write);
        }
        if let Some(started) = self.started.take() {
            let t = self.clock.since(started);
            metrics().first_frame_seconds.with_label_values(&[self.protocol]).observe(t.as_secs_f64());
            debug!(first_frame_ms = t.as_millis() as u64, "first frame written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Tracks;
    use crate::media::frame::TrackKind;
    use crate::media::ring::{FrameRing, RingLimits};
    use crate::media::time::MediaTime;
    use bytes::Bytes;

    fn frame(ms: i64, key: bool) -> crate::media::frame::Frame {
        let t = MediaTime::from_millis(ms);
        crate::media::frame::Frame::new(
            TrackKind::Video,
            t,
            t,
            key,
            Bytes::from_static(b"f"),
            Arc::new(Tracks::default()),
        )
    }

    fn policy(max_skips: u32) -> ViewerPolicy {
        ViewerPolicy {
            max_lag: Duration::from_millis(500),
            max_skips,
            write_timeout: Duration::from_secs(1),
            merge_write: Duration::ZERO,
        }
    }

    /// A viewer that falls behind skips to the newest key frame; one that keeps falling behind
    /// within the skip window is cut off; skips older than the window are forgotten. Runs on
    /// simulated time: no sleeping.
    #[tokio::test(start_paused = true)]
    async fn lag_skips_to_key_frames_and_the_skip_budget_cuts_off() {
        let ring = FrameRing::new(RingLimits { max_duration: Duration::from_secs(30), max_bytes: 1 << 20 });
        let mut w = ring.writer(false);
        let clock = Clock::simulated(std::time::SystemTime::UNIX_EPOCH);
        let mut v =
            ViewerSession::new("test", "test", "test_play", ring.reader(), policy(1), clock, clock.now());
        let mut batch = Vec::new();
        let mut t = 0;
        let gop = |w: &mut crate::media::ring::RingWriter, t: &mut i64| {
            for i in 0..30 {
                w.push(frame(*t, i == 0));
                *t += 33;
            }
        };
        gop(&mut w, &mut t);
        // 1 s behind: the first skip lands on the newest key frame.
        assert_eq!(v.next_batch(&mut batch, 64), Step::Frames);
        assert!(batch[0].keyframe);
        gop(&mut w, &mut t);
        gop(&mut w, &mut t);
        // Wait out the skip window: the first skip is forgotten, so this one is within budget.
        tokio::time::advance(SKIP_WINDOW + Duration::from_secs(1)).await;
        assert_eq!(v.next_batch(&mut batch, 64), Step::Frames, "one skip in the window is allowed");
        assert!(batch[0].keyframe && batch[0].dts == MediaTime::from_millis(60 * 33));
        gop(&mut w, &mut t);
        gop(&mut w, &mut t);
        assert_eq!(
            v.next_batch(&mut batch, 64),
            Step::Cut(CutReason::Slow),
            "the second skip in a minute cuts off"
        );
    }

    /// After a media write the viewer does not look at the ring until the merge window is over,
    /// so what arrives meanwhile leaves in one batch; the first frame is never held back.
    #[tokio::test(start_paused = true)]
    async fn merged_writes_gather_the_window_into_one_batch() {
        let ring = FrameRing::new(RingLimits { max_duration: Duration::from_secs(30), max_bytes: 1 << 20 });
        let mut w = ring.writer(false);
        let clock = Clock::simulated(std::time::SystemTime::UNIX_EPOCH);
        let mut p = policy(3);
        p.merge_write = Duration::from_millis(30);
        let mut v = ViewerSession::new("test", "test", "test_play", ring.reader(), p, clock, clock.now());
        let mut batch = Vec::new();
        w.push(frame(0, true));
        let t0 = clock.now();
        assert!(v.wait().await);
        assert_eq!(clock.now(), t0, "the first frame is not held back");
        assert_eq!(v.next_batch(&mut batch, 64), Step::Frames);
        v.media_written();
        assert_eq!(v.next_batch(&mut batch, 64), Step::Idle);
        // Three frames arrive at 5, 15 and 25 ms, inside the window.
        let writer = async {
            for i in 0..3 {
                tokio::time::sleep(Duration::from_millis(if i == 0 { 5 } else { 10 })).await;
                w.push(frame(5 + i * 10, false));
            }
        };
        let (open, ()) = tokio::join!(v.wait(), writer);
        assert!(open);
        assert_eq!(clock.now(), t0 + Duration::from_millis(30), "woke at the end of the window");
        assert_eq!(v.next_batch(&mut batch, 64), Step::Frames);
        assert_eq!(batch.len(), 3, "the window's frames in one batch");
        // Without merging, a viewer wakes for each frame.
        p.merge_write = Duration::ZERO;
        let mut eager = ViewerSession::new("test", "test", "test_play", ring.reader(), p, clock, clock.now());
        assert!(eager.wait().await);
        assert_eq!(eager.next_batch(&mut batch, 64), Step::Frames);
        eager.media_written();
        let t1 = clock.now();
        w.push(frame(40, false));
        assert!(eager.wait().await);
        assert_eq!(clock.now(), t1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_is_cut_off_at_the_timeout() {
        let ring = FrameRing::new(RingLimits { max_duration: Duration::from_secs(30), max_bytes: 1 << 20 });
        let clock = Clock::simulated(std::time::SystemTime::UNIX_EPOCH);
        let mut v =
            ViewerSession::new("test", "test", "test_play", ring.reader(), policy(3), clock, clock.now());
        let d = v.deliver(std::future::pending()).await;
        assert!(matches!(d, Delivery::Stalled));
        let d = v.deliver(async { Ok(10) }).await;
        assert!(matches!(d, Delivery::Written));
        ring.close();
        let mut batch = Vec::new();
        assert_eq!(v.next_batch(&mut batch, 8), Step::Ended);
    }
}
