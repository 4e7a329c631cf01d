//! `HlsPackager`: one per rendition. Reads the rendition's `FrameRing`, cuts parts and
//! segments with the `Segmenter`, muxes them into CMAF fMP4 and keeps an in-memory LL-HLS
//! window that the HTTP layer serves. Started and owned by the `Channel` for each live session.
//!
//! Data flow: `RingReader` -> `media::segmenter` -> `protocols::fmp4::CmafMuxer` -> `HlsRendition`
//! (parts, segments, init segments) -> `http::hls` renders playlists from it on request.
//!
//! Supervision: the channel runs each packager as a supervised output. The window
//! (`HlsRendition`) outlives a packager that panics; its successor seals the segment that was
//! being made and continues the window after a discontinuity (`HlsRendition::seal_for_resume`).
//! Time comes from the channel's `Clock` (pacing and window expiry on the monotonic clock,
//! program date time on the wall clock).
//!
//! Waking blocked requests: every published part bumps a `watch` of the rendition's progress;
//! blocking playlist reloads and preload-hinted part requests wait on it with a hard timeout
//! (backpressure rule 7). The window is bounded by `hls.window`. Playlists list parts only for
//! the last three target durations (RFC 8216bis §6.2.2), but a part stays available as long as
//! its segment: once the segment completes, its parts are slices of the segment's buffer.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use tokio::time::Instant;

use crate::media::clock::Clock;
use crate::media::codec::Tracks;
use crate::media::follow::{BoundaryLog, Recorder};
use crate::media::frame::TrackKind;
use crate::media::ring::RingReader;
use crate::media::segmenter::{Part, Segmenter, SegmenterConfig};
use crate::media::time::MediaTime;
use crate::metrics::metrics;
use crate::protocols::fmp4::CmafMuxer;
use crate::protocols::hls::SkipRequest;

mod follow;
use crate::store::Visibility;

/// The rendition name of the publisher's own encoding.
pub const SOURCE: &str = "source";

/// `[hls]` settings the packager and the HTTP layer share.
#[derive(Clone, Copy, Debug)]
pub struct HlsSettings {
    pub part_target: Duration,
    pub segment_target: Duration,
    /// How long segments stay available after they complete.
    pub window: Duration,
    /// Hard limit for blocking playlist reloads and preload-hinted part requests.
    pub block_timeout: Duration,
}

/// Live channels' LL-HLS state by channel name, read by HTTP handlers without an actor hop.
pub type HlsDirectory = Arc<DashMap<String, Arc<HlsChannel>>>;

/// One channel's renditions for one live session.
pub struct HlsChannel {
    pub visibility: Visibility,
    /// `source` first; a transcode ladder adds its rungs once it knows the source's size.
    renditions: ArcSwap<Vec<Arc<HlsRendition>>>,
    /// True once the renditions are all there: no ladder, or the ladder has added its rungs or
    /// given up. The multivariant playlist waits for it (bounded) so that a player arriving
    /// at the start of a session sees the whole ladder.
    settled: watch::Sender<bool>,
    pub viewers: HlsViewers,
}

/// How long after its last media playlist request a client still counts as an LL-HLS viewer
/// (players reload every part; a paused hls.js stops after its buffer fills, ~a minute ahead
/// at most, so a viewer who pauses long drops out).
pub const VIEWER_IDLE: Duration = Duration::from_secs(10);
/// Clients tracked per channel at most (a flood of distinct clients cannot grow it further).
const MAX_TRACKED_VIEWERS: usize = 200_000;

/// The LL-HLS viewers of one channel's live session, for `tidecast_viewers{protocol="hls"}`.
/// HLS has no session: a viewer is a distinct client (the caller's key: address and
/// User-Agent, hashed) that asked for a media playlist within `VIEWER_IDLE`. Behind a CDN the
/// clients are its edges. `sweep` (every couple of seconds, by the channel) forgets idle clients
/// and moves the gauge by the change; dropping the session takes its count off the gauge.
#[derive(Default)]
pub struct HlsViewers {
    seen: Mutex<std::collections::HashMap<u64, std::time::Instant>>,
    /// What this session adds to the gauge now.
    counted: std::sync::atomic::AtomicI64,
}

impl HlsViewers {
    pub fn touch(&self, client: u64) {
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_TRACKED_VIEWERS || seen.contains_key(&client) {
            seen.insert(client, now);
        }
    }

    /// Forget clients idle for `VIEWER_IDLE`, update the gauge; returns the viewer count.
    pub fn sweep(&self) -> i64 {
        let now = std::time::Instant::now();
        let n = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, at| now.duration_since(*at) < VIEWER_IDLE);
            seen.len() as i64
        };
        let before = self.counted.swap(n, Ordering::AcqRel);
        metrics().viewers.with_label_values(&["hls"]).add(n - before);
        n
    }
}

impl Drop for HlsViewers {
    fn drop(&mut self) {
        metrics().viewers.with_label_values(&["hls"]).sub(*self.counted.get_mut());
    }
}

impl HlsChannel {
    /// A live session's LL-HLS entry; `ladder`: a transcode ladder will add renditions.
    pub fn new(visibility: Visibility, renditions: Vec<Arc<HlsRendition>>, ladder: bool) -> Self {
        HlsChannel {
            visibility,
            renditions: ArcSwap::from_pointee(renditions),
            settled: watch::channel(!ladder).0,
            viewers: HlsViewers::default(),
        }
    }

    /// The renditions now (`source` first).
    pub fn renditions(&self) -> Arc<Vec<Arc<HlsRendition>>> {
        self.renditions.load_full()
    }

    pub fn rendition(&self, name: &str) -> Option<Arc<HlsRendition>> {
        self.renditions.load().iter().find(|r| r.name == name).cloned()
    }

    /// Add a rendition (a ladder rung); one of the same name is replaced.
    pub fn add_rendition(&self, r: Arc<HlsRendition>) {
        self.renditions.rcu(|cur| {
            let mut next: Vec<Arc<HlsRendition>> = cur.iter().filter(|c| c.name != r.name).cloned().collect();
            next.push(r.clone());
            next
        });
    }

    /// Every rendition of the session is there (see `settled`).
    pub fn settle(&self) {
        self.settled.send_replace(true);
    }

    pub fn subscribe_settled(&self) -> watch::Receiver<bool> {
        self.settled.subscribe()
    }
}

/// How far the rendition has got; what blocked requests wait on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// MSN of the newest segment (complete or not); `None` before the first part.
    pub msn: Option<u64>,
    /// Completed parts in segment `msn`.
    pub parts: u32,
    /// Segment `msn` is complete.
    pub complete: bool,
    pub ended: bool,
    /// When this progress was published (the newest part completed).
    pub at: Option<std::time::Instant>,
    /// The window version it was published with (grows with every publication).
    pub seq: u64,
}

/// One part's bytes and playlist facts.
pub struct PartData {
    pub data: Bytes,
    pub duration: Duration,
    pub independent: bool,
}

/// One segment in the window.
pub struct SegmentData {
    pub msn: u64,
    /// Parts, while the segment is recent enough for them to be listed; emptied afterwards.
    pub parts: Vec<PartData>,
    /// Total part count (stays when `parts` is pruned).
    pub part_count: u32,
    /// The whole segment (all parts concatenated), once complete.
    pub data: Option<Bytes>,
    pub duration: Duration,
    pub program_date_time: SystemTime,
    pub discontinuity: bool,
    pub init_version: u32,
    pub bytes: usize,
    /// Video frames in it (for FRAME-RATE).
    pub video_frames: u32,
    /// When it completed (for window expiry).
    pub completed_at: Option<Instant>,
    /// No media: the source's segment that a transcoded rendition missed (`EXT-X-GAP`).
    pub gap: bool,
}

impl SegmentData {
    pub fn complete(&self) -> bool {
        self.data.is_some()
    }

    /// Complete the segment from the parts it has: a segment is its parts back to back, so from
    /// now on each part is a slice of the segment's buffer. Parts stay available as long as
    /// their segment (the whole `hls.window`) at no extra memory, and their own buffers are
    /// freed.
    fn seal(&mut self, now: Instant) {
        let mut whole = BytesMut::with_capacity(self.bytes);
        for p in &self.parts {
            whole.extend_from_slice(&p.data);
        }
        let whole = whole.freeze();
        let mut at = 0;
        for p in &mut self.parts {
            let n = p.data.len();
            p.data = whole.slice(at..at + n);
            at += n;
        }
        self.data = Some(whole);
        self.completed_at = Some(now);
    }
}

/// Everything a media playlist is rendered from.
pub struct Window {
    /// Random per live session; part of every media URI so caches never mix sessions.
    pub session: String,
    pub inits: Vec<(u32, Bytes)>,
    pub segments: VecDeque<SegmentData>,
    pub discontinuity_sequence: u64,
    /// `EXT-X-TARGETDURATION` (rendered rounded up to whole seconds). The segment target until
    /// the first segment completes; then set once from it, and never changed again.
    pub target_duration: Duration,
    /// `target_duration` is final (RFC 8216bis §4.4.3.1: it MUST NOT change).
    pub target_fixed: bool,
    /// A segment longer than the target duration was reported (once per live session).
    pub over_target_reported: bool,
    pub part_target: Duration,
    pub ended: bool,
    /// RFC 6381 codecs of the current init ("avc1.64001f,mp4a.40.2").
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    /// Bumped on every change; keys the rendered-playlist cache.
    pub version: u64,
    /// `mfhd` sequence number of the newest fragment, so a restarted packager continues it.
    pub fragment_sequence: u32,
}

impl Window {
    pub fn init(&self, version: u32) -> Option<&Bytes> {
        self.inits.iter().find(|(v, _)| *v == version).map(|(_, b)| b)
    }

    pub fn segment(&self, msn: u64) -> Option<&SegmentData> {
        let first = self.segments.front()?.msn;
        self.segments.get(msn.checked_sub(first)? as usize)
    }

    /// Peak and average bitrate over complete segments, bits per second.
    pub fn bandwidth(&self) -> (u64, u64) {
        let mut peak = 0u64;
        let (mut bytes, mut dur) = (0u64, 0f64);
        for s in self.segments.iter().filter(|s| s.complete() && !s.gap) {
            let secs = s.duration.as_secs_f64();
            if secs > 0.0 {
                peak = peak.max((s.bytes as f64 * 8.0 / secs) as u64);
                bytes += s.bytes as u64;
                dur += secs;
            }
        }
        if dur == 0.0 {
            // Nothing complete yet: estimate from the parts so far.
            let (b, d) = self
                .segments
                .iter()
                .flat_map(|s| &s.parts)
                .fold((0usize, 0f64), |(b, d), p| (b + p.data.len(), d + p.duration.as_secs_f64()));
            let bps = if d > 0.0 { (b as f64 * 8.0 / d) as u64 } else { 0 };
            return (bps, bps);
        }
        (peak, (bytes as f64 * 8.0 / dur) as u64)
    }
}

/// One rendition's live state.
pub struct HlsRendition {
    pub name: String,
    /// Unique in this process (never reused, unlike an address).
    id: u64,
    window: RwLock<Window>,
    progress: watch::Sender<Progress>,
    /// The same progress for held part requests, published once the playlist reloads blocked
    /// on it have been answered (see `PlaylistHold`), or after `MEDIA_RELEASE_CAP` at most.
    /// When a part completes, every blocked reload and every held part request becomes ready
    /// at once; on a loaded server, releasing both together makes the playlist answers queue
    /// behind ~80 KB part bodies (in the server's workers, in the kernel and in the players),
    /// while a player needs the playlist first to know what to fetch next.
    media_progress: watch::Sender<Progress>,
    /// Blocked playlist requests by the parity of the progress `seq` they started waiting at:
    /// the publication of `seq + 1` releases them, and its part requests wait for that slot
    /// to drain.
    held_playlists: [AtomicUsize; 2],
    /// Signalled when a `held_playlists` slot drains to zero.
    playlists_drained: Notify,
    /// Rendered playlists of the current window version, by skip mode. Every completed part
    /// releases every blocked reload at once; with this, a thousand of them share one rendering
    /// instead of rendering the same text a thousand times.
    rendered: Mutex<Vec<(u64, SkipRequest, Bytes)>>,
    /// Where this rendition's packager cut, for renditions cut in step with it (the transcode
    /// ladder's rungs follow the source's: `media::follow`). Kept only when `logs_boundaries`:
    /// a session with a ladder (a few hundred kB per channel otherwise spent for nothing).
    boundaries: Mutex<BoundaryLog>,
    logs_boundaries: std::sync::atomic::AtomicBool,
    /// Bumped whenever `boundaries` changes.
    boundaries_changed: watch::Sender<u64>,
    /// Test-only: panic the packager on its next frame (supervision tests).
    #[cfg(test)]
    fault: std::sync::atomic::AtomicBool,
}

impl HlsRendition {
    pub fn new(name: &str, settings: &HlsSettings) -> Self {
        let session = format!("{:08x}", rand::random::<u32>());
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        HlsRendition {
            name: name.to_string(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            window: RwLock::new(Window {
                session,
                inits: Vec::new(),
                segments: VecDeque::new(),
                discontinuity_sequence: 0,
                target_duration: settings.segment_target,
                target_fixed: false,
                over_target_reported: false,
                part_target: settings.part_target,
                ended: false,
                codecs: String::new(),
                resolution: None,
                frame_rate: None,
                version: 0,
                fragment_sequence: 0,
            }),
            progress: watch::channel(Progress::default()).0,
            media_progress: watch::channel(Progress::default()).0,
            held_playlists: [AtomicUsize::new(0), AtomicUsize::new(0)],
            playlists_drained: Notify::new(),
            rendered: Mutex::new(Vec::new()),
            boundaries: Mutex::new(BoundaryLog::default()),
            logs_boundaries: std::sync::atomic::AtomicBool::new(false),
            boundaries_changed: watch::channel(0).0,
            #[cfg(test)]
            fault: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The playlist text for `skip` at the current window version, rendered by `render` only
    /// when this version has not been rendered yet. For responses without per-viewer URI
    /// queries (tokens): those are rendered per request.
    pub fn cached_playlist(&self, skip: SkipRequest, render: impl FnOnce(&Window) -> String) -> Bytes {
        let w = self.window();
        let version = w.version;
        let lock = || self.rendered.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, text)) = lock().iter().find(|(v, s, _)| *v == version && *s == skip) {
            return text.clone();
        }
        let text = Bytes::from(render(&w));
        drop(w);
        let mut cache = lock();
        cache.retain(|(v, _, _)| *v == version);
        if !cache.iter().any(|(_, s, _)| *s == skip) {
            cache.push((version, skip, text.clone()));
        }
        text
    }

    /// Prepare the window for a packager that restarts after its predecessor died: the
    /// segment it was making is completed with the parts already published (an empty one is
    /// dropped), and the new packager continues after it. `None` for a fresh window.
    pub fn seal_for_resume(self: &Arc<Self>, now: Instant) -> Option<ResumePoint> {
        {
            let w = self.window();
            if w.segments.is_empty() && w.inits.is_empty() {
                return None;
            }
        }
        let mut point = None;
        self.update(|w| {
            let mut next_msn = w.segments.back().map_or(0, |s| s.msn + 1);
            if let Some(last) = w.segments.back_mut().filter(|s| !s.complete()) {
                if last.parts.is_empty() {
                    next_msn = last.msn;
                    w.segments.pop_back();
                } else {
                    last.seal(now);
                }
            }
            point = Some(ResumePoint {
                next_msn,
                init_version: w.inits.last().map_or(0, |(v, _)| *v),
                fragment_sequence: w.fragment_sequence,
            });
        });
        point
    }

    /// Test-only fault injection: the packager panics on its next frame.
    #[cfg(test)]
    pub(crate) fn inject_fault(&self) {
        self.fault.store(true, Ordering::Release);
    }

    #[cfg(test)]
    fn injected_fault(&self) {
        if self.fault.swap(false, Ordering::AcqRel) {
            panic!("injected HLS packager fault");
        }
    }

    /// This rendition's process-unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A publication with no change but the codecs string, as the packager's would be.
    #[cfg(test)]
    pub(crate) fn publish_for_test(self: &Arc<Self>) {
        self.update(|w| w.codecs = "avc1.64001f".into());
    }

    /// Keep the boundary log from now on (a transcode ladder will follow this rendition).
    pub fn enable_boundary_log(&self) {
        self.logs_boundaries.store(true, Ordering::Release);
    }

    /// Change the boundary log (the source packager) and wake followers; nothing when no ladder
    /// follows.
    fn log_boundaries(&self, f: impl FnOnce(&mut BoundaryLog)) {
        if !self.logs_boundaries.load(Ordering::Acquire) {
            return;
        }
        f(&mut self.boundaries.lock().unwrap_or_else(|p| p.into_inner()));
        self.boundaries_changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Read the boundary log (a follower).
    pub(crate) fn with_boundaries<T>(&self, f: impl FnOnce(&BoundaryLog) -> T) -> T {
        f(&self.boundaries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wakes when the boundary log changes.
    pub(crate) fn subscribe_boundaries(&self) -> watch::Receiver<u64> {
        self.boundaries_changed.subscribe()
    }

    /// Read access for rendering; held only while copying out what a response needs.
    pub fn window(&self) -> RwLockReadGuard<'_, Window> {
        self.window.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// The progress held part requests see (`subscribe_media`).
    pub fn media_progress(&self) -> Progress {
        *self.media_progress.borrow()
    }

    /// Progress for playlist requests.
    pub fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Progress for held media (part) requests: published just after `subscribe`'s.
    pub fn subscribe_media(&self) -> watch::Receiver<Progress> {
        self.media_progress.subscribe()
    }

    /// Count a playlist request that is about to wait with `seen` as the newest progress;
    /// dropping the guard (answered, timed out or abandoned) uncounts it.
    pub fn hold_playlist(&self, seen: &Progress) -> PlaylistHold<'_> {
        let slot = (seen.seq & 1) as usize;
        self.held_playlists[slot].fetch_add(1, Ordering::AcqRel);
        PlaylistHold { rendition: self, slot }
    }

    fn update(self: &Arc<Self>, f: impl FnOnce(&mut Window)) {
        let progress = {
            let mut w = self.window.write().unwrap_or_else(|p| p.into_inner());
            f(&mut w);
            w.version += 1;
            progress_of(&w)
        };
        self.progress.send_replace(progress);
        // Playlist requests that were waiting at the previous publication are the ones this
        // one releases.
        let slot = (progress.seq.wrapping_sub(1) & 1) as usize;
        let handle = tokio::runtime::Handle::try_current();
        match handle {
            Ok(handle) if self.held_playlists[slot].load(Ordering::Acquire) > 0 => {
                let me = self.clone();
                handle.spawn(async move {
                    let cap = tokio::time::Instant::now() + MEDIA_RELEASE_CAP;
                    loop {
                        let drained = me.playlists_drained.notified();
                        tokio::pin!(drained);
                        drained.as_mut().enable();
                        if me.held_playlists[slot].load(Ordering::Acquire) == 0 {
                            break;
                        }
                        if tokio::time::timeout_at(cap, drained).await.is_err() {
                            break;
                        }
                    }
                    me.publish_media(progress);
                });
            }
            _ => self.publish_media(progress),
        }
    }

    /// Publish to held part requests, never going back to an older progress.
    fn publish_media(&self, progress: Progress) {
        self.media_progress.send_if_modified(|cur| {
            let newer = progress.seq > cur.seq || cur.at.is_none();
            if newer {
                *cur = progress;
            }
            newer
        });
    }
}

/// The longest held part requests wait for the playlist reloads released by the same part.
const MEDIA_RELEASE_CAP: Duration = Duration::from_millis(25);

/// A counted blocked playlist request (`HlsRendition::hold_playlist`).
pub struct PlaylistHold<'a> {
    rendition: &'a HlsRendition,
    slot: usize,
}

impl Drop for PlaylistHold<'_> {
    fn drop(&mut self) {
        if self.rendition.held_playlists[self.slot].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.rendition.playlists_drained.notify_waiters();
        }
    }
}

fn progress_of(w: &Window) -> Progress {
    match w.segments.back() {
        Some(s) => Progress {
            msn: Some(s.msn),
            parts: s.part_count,
            complete: s.complete(),
            ended: w.ended,
            at: Some(std::time::Instant::now()),
            seq: w.version,
        },
        None => Progress {
            msn: None,
            parts: 0,
            complete: false,
            ended: w.ended,
            at: Some(std::time::Instant::now()),
            seq: w.version,
        },
    }
}

/// One rendition's LL-HLS packager: a ring cursor that cuts parts and publishes them into the
/// rendition's window. Run by the channel as a supervised output (`actors::supervise`): when
/// it panics, a new packager resumes the same window (`HlsRendition` outlives it) after a
/// discontinuity, continuing MSNs, init versions and fragment sequence numbers.
pub struct HlsPackager {
    pub channel: String,
    pub rendition: Arc<HlsRendition>,
    pub settings: HlsSettings,
    pub clock: Clock,
    /// Cut where this rendition's packager cuts, instead of by the segmenter's own rules: a
    /// transcoded rung following the source (`follow.rs`).
    pub follow: Option<Arc<HlsRendition>>,
}

impl HlsPackager {
    /// Package `reader` until its ring closes.
    pub async fn run(self, reader: RingReader) {
        match self.follow.clone() {
            Some(source) => self.run_following(source, reader).await,
            None => self.run_segmenting(reader).await,
        }
    }

    async fn run_segmenting(self, mut reader: RingReader) {
        let HlsPackager { channel, rendition, settings, clock, .. } = self;
        let cfg =
            SegmenterConfig { part_target: settings.part_target, segment_target: settings.segment_target };
        let resume = rendition.seal_for_resume(clock.now());
        let (mut segmenter, mut muxer) = match resume {
            Some(r) => {
                info!(%channel, rendition = %rendition.name, next_msn = r.next_msn, "packager resuming after a restart");
                (Segmenter::resume(cfg, r.next_msn), CmafMuxer::resume(r.fragment_sequence, r.init_version))
            }
            None => (Segmenter::new(cfg), CmafMuxer::new()),
        };
        let mut parts = Vec::new();
        // Wall-clock anchor for EXT-X-PROGRAM-DATE-TIME: (media time, wall time) of a frame.
        let mut anchor: Option<(MediaTime, SystemTime)> = None;
        let dropped = metrics().frames_dropped.with_label_values(&["hls"]);
        let mut last_published: Option<Instant> = None;
        let mut recorder = Recorder::default();
        let out = Publisher { rendition: &rendition, settings: &settings, clock, target_from: None };
        debug!(%channel, rendition = %rendition.name, "packager started");
        loop {
            match reader.next().await {
                Some(Ok(frame)) => {
                    #[cfg(test)]
                    rendition.injected_fault();
                    if frame.discontinuity || anchor.is_none() {
                        anchor = Some((frame.dts, frame.received_at));
                    }
                    let before = parts.len();
                    segmenter.push(frame.clone(), &mut parts);
                    rendition.log_boundaries(|log| {
                        let pdt = |start| program_date_time(anchor, start, clock);
                        recorder.after_push(&frame, &parts[before..], segmenter.open_part(), pdt, log)
                    });
                }
                Some(Err(lag)) => {
                    // The packager fell a ring behind (CPU starvation): what it missed is gone,
                    // so the timeline continues after a discontinuity at the next key frame.
                    dropped.inc_by(lag.skipped);
                    warn!(%channel, skipped = lag.skipped, "HLS packager lapped; inserting a discontinuity");
                    segmenter.break_off(&mut parts);
                }
                None => {
                    segmenter.finish(&mut parts);
                    rendition.log_boundaries(|log| log.end());
                    for part in parts.drain(..) {
                        let pdt = program_date_time(anchor, part.start, clock);
                        out.publish_part(&mut muxer, part, pdt, segmenter.frame_interval());
                    }
                    rendition.update(|w| w.ended = true);
                    info!(%channel, rendition = %rendition.name, "packager finished");
                    return;
                }
            }
            // Parts are published at least half a part target apart. Frames can arrive in a
            // burst (a publisher catching up, a starved ingest), and then parts would complete
            // within a few ms of each other. hls.js 1.7.4 mishandles a segment completing while
            // it is still appending the previous part (its fragment tracker marks the segment
            // fully buffered without its last part and stops loading parts for ~5 s; seen in
            // its own debug log in tests/hlsjs_play.rs). Pacing gives the player a part's load
            // and append before the next, and still catches up at twice real time.
            for part in parts.drain(..) {
                let due = last_published.map(|at| at + settings.part_target / 2);
                if let Some(due) = due.filter(|d| *d > clock.now()) {
                    clock.sleep_until(due).await;
                }
                let pdt = program_date_time(anchor, part.start, clock);
                out.publish_part(&mut muxer, part, pdt, segmenter.frame_interval());
                last_published = Some(clock.now());
            }
        }
    }
}

/// Where a restarted packager picks up (`HlsRendition::seal_for_resume`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    pub next_msn: u64,
    pub init_version: u32,
    pub fragment_sequence: u32,
}

/// `EXT-X-PROGRAM-DATE-TIME` of media decoded at `start`: the wall clock of the anchor frame
/// (media time, arrival) plus the media time since; the current time without an anchor.
fn program_date_time(anchor: Option<(MediaTime, SystemTime)>, start: MediaTime, clock: Clock) -> SystemTime {
    match anchor {
        Some((media, wall)) => {
            let off = start.minus(media.rescale(start.timescale));
            if off.ticks >= 0 {
                wall + off.as_duration()
            } else {
                wall.checked_sub(MediaTime::new(-off.ticks, off.timescale).as_duration()).unwrap_or(wall)
            }
        }
        None => clock.wall(),
    }
}

/// What `publish_part` needs besides the part.
struct Publisher<'a> {
    rendition: &'a Arc<HlsRendition>,
    settings: &'a HlsSettings,
    clock: Clock,
    /// Take the target duration from this rendition (the source a rung follows), so every
    /// rendition of the channel declares the same one.
    target_from: Option<&'a HlsRendition>,
}

impl Publisher<'_> {
    /// Mux one completed part and add it to the rendition's window.
    fn publish_part(
        &self,
        muxer: &mut CmafMuxer,
        part: Part,
        pdt: SystemTime,
        frame_interval: Option<Duration>,
    ) {
        let (rendition, settings, clock) = (self.rendition, self.settings, self.clock);
        let m = metrics();
        if part.frames.is_empty() {
            return;
        }
        let tracks = part.frames[0].tracks.clone();
        let init = match muxer.init_for(&part) {
            Ok(init) => init,
            Err(e) => {
                warn!(error = %e, msn = part.msn, "cannot build an init segment; skipping the part");
                return;
            }
        };
        let data = muxer.fragment(&part);
        let video_frames = part.frames.iter().filter(|f| f.track == TrackKind::Video).count() as u32;
        let duration = part.duration();
        m.hls_parts.inc();
        m.hls_part_duration_seconds.observe(duration.as_secs_f64());
        if part.ends_segment {
            m.hls_segments.inc();
        }
        let source = self.target_from.map(|s| {
            let w = s.window();
            (w.target_fixed, w.target_duration, w.frame_rate)
        });
        let init_version = muxer.init_version();
        let fragment_sequence = muxer.sequence();
        rendition.update(|w| {
            w.fragment_sequence = fragment_sequence;
            if let Some(init) = init {
                w.inits.push((init_version, init));
                w.codecs = codecs_of(&tracks);
                w.resolution = tracks.video.as_ref().filter(|v| v.width > 0).map(|v| (v.width, v.height));
            }
            if let Some((_, _, Some(fps))) = source {
                // A rung keeps the source's frames: it declares the source's rate, so the
                // multivariant playlist never shows two rates for one stream.
                w.frame_rate = Some(fps);
            } else if w.frame_rate.is_none() {
                // A first estimate until a whole segment gives a measured one.
                if let Some(fi) = frame_interval.filter(|d| !d.is_zero()) {
                    w.frame_rate = Some((1.0 / fi.as_secs_f64() * 1000.0).round() / 1000.0);
                }
            }
            if part.index == 0 {
                w.segments.push_back(SegmentData {
                    msn: part.msn,
                    parts: Vec::new(),
                    part_count: 0,
                    data: None,
                    duration: Duration::ZERO,
                    program_date_time: pdt,
                    discontinuity: part.discontinuity,
                    init_version,
                    bytes: 0,
                    video_frames: 0,
                    completed_at: None,
                    gap: false,
                });
            }
            let Some(seg) = w.segments.back_mut().filter(|s| s.msn == part.msn) else {
                return;
            };
            seg.duration += duration;
            seg.bytes += data.len();
            seg.video_frames += video_frames;
            seg.part_count += 1;
            seg.parts.push(PartData { data, duration, independent: part.independent });
            if part.ends_segment {
                seg.seal(clock.now());
                let secs = seg.duration;
                if source.is_some() {
                    // (set above, from the source)
                } else if seg.video_frames > 0 && !secs.is_zero() {
                    let fps = seg.video_frames as f64 / secs.as_secs_f64();
                    w.frame_rate = Some((fps * 1000.0).round() / 1000.0);
                }
                // EXTINF rounded to the nearest second must not exceed TARGETDURATION, which must
                // not change. Segments end at the first key frame after the segment target, so
                // the first one shows the publisher's key-frame interval (x264's default is 250
                // frames, 8.3 s at 30 fps): the target duration is widened to it once, before any
                // player has seen a playlist (the first plain playlist request waits for this
                // segment), and then stays.
                let rounded = Duration::from_secs(secs.as_secs_f64().round() as u64);
                if let (false, Some((true, target, _))) = (w.target_fixed, source) {
                    w.target_duration = target.max(rounded);
                    w.target_fixed = true;
                } else if !w.target_fixed {
                    w.target_duration = w.target_duration.max(rounded);
                    w.target_fixed = true;
                } else if rounded > Duration::from_secs(w.target_duration.as_secs_f64().ceil() as u64)
                    && !std::mem::replace(&mut w.over_target_reported, true)
                {
                    // Cutting between key frames would break "every segment starts on a key
                    // frame" (and EXT-X-INDEPENDENT-SEGMENTS); changing the target would break
                    // playlist continuity. The segment stays whole; the operator is told why.
                    warn!(
                        msn = seg.msn,
                        segment = ?secs,
                        target = ?w.target_duration,
                        "a key-frame interval grew past the playlist's target duration (fixed from the \
                         first segment); set the encoder's key-frame interval to at most the segment \
                         target (e.g. 2 s)"
                    );
                }
            }
            prune(w, settings, clock.now());
        });
    }
}

/// Drop segments past the window (their parts go with them) and init segments nothing uses.
fn prune(w: &mut Window, settings: &HlsSettings, now: Instant) {
    while w.segments.len() > 2
        && w.segments
            .front()
            .and_then(|s| s.completed_at)
            .is_some_and(|t| now.duration_since(t) > settings.window)
    {
        // EXT-X-DISCONTINUITY-SEQUENCE counts the discontinuity tags that slid out.
        if w.segments.pop_front().is_some_and(|s| s.discontinuity) {
            w.discontinuity_sequence += 1;
        }
    }
    let in_use: Vec<u32> = w.segments.iter().map(|s| s.init_version).collect();
    w.inits.retain(|(v, _)| in_use.contains(v) || Some(*v) == in_use.last().copied());
}

fn codecs_of(tracks: &Tracks) -> String {
    let mut c = Vec::new();
    if let Some(v) = &tracks.video {
        c.push(v.codec_string.clone());
    }
    if let Some(a) = &tracks.audio {
        c.push(a.codec_string.clone());
    }
    c.join(",")
}

#[cfg(test)]
pub(crate) mod tests;
