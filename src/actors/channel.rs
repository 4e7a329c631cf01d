//! `Channel`: one live channel. Owns the channel's renditions (one `FrameRing` each, `source`
//! first), the publisher slot, and the supervised outputs of each live session.
//!
//! Lifecycle: a publisher is granted the source ring's writer (`AddPublisher`); when it leaves
//! (`PublisherLeft`) the channel waits `reconnect_grace` for it to come back, during which
//! viewers stay attached and a returning publisher continues the same live session (the ring
//! rebases timestamps and marks a discontinuity). When grace expires the rings are closed,
//! which ends every viewer politely. A channel with no publisher and no readers stops after
//! `idle_timeout`.
//!
//! Outputs: a live session starts one `HlsPackager` per rendition and the LL-HLS viewer sweep,
//! each a supervised child (`actors::supervise`): a panic is counted and the child restarts
//! with backoff (the packager resumes its window after a discontinuity). The archive writer
//! (`actors::archive`, recording the session from the LL-HLS windows) and the transcode ladder
//! join them the same way; so does the `restream` output (`actors::restream`), which pushes the
//! source ring to the owner's destinations. Consumers attach with
//! `AddReader { rendition }`.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::archive::Archive;
use super::hls::{HlsChannel, HlsDirectory, HlsPackager, HlsRendition, HlsSettings, SOURCE};
use super::restream::Restream;
use super::supervise::{spawn_supervised, Backoff};
use super::transcode::{run_ladder, LadderContext, Transcoder};
use crate::error::{Error, ErrorKind, Result};
use crate::media::clock::Clock;
use crate::media::ring::{FrameRing, RingLimits, RingReader, RingWriter};
use crate::metrics::metrics;
use crate::store::Visibility;

/// How often the channel checks its idle state.
const IDLE_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often a live session's LL-HLS viewer count is refreshed.
const VIEWER_SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How long an ended session's playlists stay served (players see `EXT-X-ENDLIST`), at most.
const ENDED_LINGER_MAX: Duration = Duration::from_secs(60);

/// Live channels by name: the registry's directory, which a stopping channel leaves itself.
pub type ChannelDirectory = Arc<DashMap<String, Addr<Channel>>>;

/// Settings every channel shares (from `[channel]` in the config).
#[derive(Clone, Copy, Debug)]
pub struct ChannelSettings {
    pub reconnect_grace: Duration,
    pub idle_timeout: Duration,
    pub ring: RingLimits,
    pub hls: HlsSettings,
}

/// Handles every channel needs to start its outputs.
#[derive(Clone)]
pub struct ChannelDeps {
    /// Where packagers publish their LL-HLS windows for the HTTP layer.
    pub hls: HlsDirectory,
    /// The multi-threaded runtime that runs media tasks (packagers, sessions).
    pub media: tokio::runtime::Handle,
    /// Time for rings (arrival stamps) and outputs (pacing, expiry).
    pub clock: Clock,
    /// Restart timing of supervised outputs.
    pub backoff: Backoff,
    /// Restream destinations and push status; a live session pushes the source ring to them.
    pub restream: Restream,
    /// The transcode ladder (ffmpeg, the server-wide cap, ladder statuses).
    pub transcoder: Transcoder,
    /// Live-to-VOD: each live session recorded as a video.
    pub archive: Archive,
}

impl ChannelDeps {
    /// Deps on the current runtime with an empty LL-HLS directory (tests).
    pub fn current() -> Self {
        ChannelDeps {
            hls: Arc::new(DashMap::new()),
            media: tokio::runtime::Handle::current(),
            clock: Clock::system(),
            backoff: Backoff::default(),
            restream: Restream::default(),
            transcoder: Transcoder::disabled(),
            archive: Archive::disabled(),
        }
    }
}

enum Publisher {
    /// No publisher; the rings (if any frames were ever written) are closed.
    Offline,
    Live {
        session_id: u64,
        cancel: CancellationToken,
    },
    /// The publisher dropped; the live session continues if it comes back before the timer.
    Grace {
        timer: SpawnHandle,
    },
}

/// One encoding of the channel and its ring.
struct Rendition {
    name: String,
    ring: FrameRing,
}

pub struct Channel {
    name: String,
    settings: ChannelSettings,
    /// `source` (the publisher's own encoding) first; a transcode ladder adds the others for
    /// the length of a live session.
    renditions: Vec<Rendition>,
    /// The live session's LL-HLS entry, where a ladder's rungs are added.
    hls: Option<Arc<HlsChannel>>,
    publisher: Publisher,
    /// When the channel last had neither publisher nor readers.
    idle_since: Option<Instant>,
    /// The registry's map, so a stopping channel can remove itself.
    directory: ChannelDirectory,
    /// Counted in `tidecast_channels_live` (live or in grace).
    counted_live: bool,
    deps: ChannelDeps,
    /// Cancelled when the channel stops: supervised outputs are not restarted after that.
    outputs: CancellationToken,
}

impl Channel {
    pub fn new(
        name: String,
        settings: ChannelSettings,
        directory: ChannelDirectory,
        deps: ChannelDeps,
    ) -> Self {
        let source =
            Rendition { name: SOURCE.to_string(), ring: FrameRing::with_clock(settings.ring, deps.clock) };
        Channel {
            name,
            settings,
            renditions: vec![source],
            hls: None,
            publisher: Publisher::Offline,
            idle_since: Some(Instant::now()),
            directory,
            counted_live: false,
            deps,
            outputs: CancellationToken::new(),
        }
    }

    fn source(&self) -> &FrameRing {
        &self.renditions[0].ring
    }

    fn reader_count(&self) -> usize {
        self.renditions.iter().map(|r| r.ring.reader_count()).sum()
    }

    /// Start the outputs of a new live session: an LL-HLS packager per rendition, the LL-HLS
    /// viewer sweep, restream and the transcode ladder, all supervised. They read the rings like
    /// any viewer and end when the rings close.
    fn start_outputs(&mut self, visibility: Visibility, me: Addr<Channel>) {
        let settings = self.settings.hls;
        let clock = self.deps.clock;
        let ladder = self.deps.transcoder.active(&self.name);
        let source_hls = Arc::new(HlsRendition::new(SOURCE, &settings));
        if ladder {
            source_hls.enable_boundary_log();
        }
        let entry = Arc::new(HlsChannel::new(visibility, vec![source_hls.clone()], ladder));
        self.deps.hls.insert(self.name.clone(), entry.clone());
        self.hls = Some(entry.clone());
        self.start_packager(self.source().clone(), source_hls, None);
        let (name, directory, weak) = (self.name.clone(), self.deps.hls.clone(), Arc::downgrade(&entry));
        spawn_supervised(
            &self.deps.media,
            "hls_viewer_sweep",
            self.name.clone(),
            self.deps.backoff,
            clock,
            self.outputs.clone(),
            move |_| sweep_hls(name.clone(), weak.clone(), directory.clone(), settings, clock),
        );
        // Restream: the source rendition, without re-encoding, to the owner's destinations.
        let (name, ring, restream) = (self.name.clone(), self.source().clone(), self.deps.restream.clone());
        spawn_supervised(
            &self.deps.media,
            "restream",
            self.name.clone(),
            self.deps.backoff,
            clock,
            self.outputs.clone(),
            move |_| restream.clone().run_channel(name.clone(), ring.clone()),
        );
        if self.deps.archive.records(&self.name) {
            // One recording per live session: a restarted archive output continues it.
            let (name, archive, hls) = (self.name.clone(), self.deps.archive.clone(), entry.clone());
            let recording = Arc::new(tokio::sync::OnceCell::new());
            spawn_supervised(
                &self.deps.media,
                "archive",
                self.name.clone(),
                self.deps.backoff,
                clock,
                self.outputs.clone(),
                move |_| archive.clone().run_session(name.clone(), hls.clone(), recording.clone()),
            );
        }
        if ladder {
            let (name, source, transcoder) =
                (self.name.clone(), self.source().clone(), self.deps.transcoder.clone());
            spawn_supervised(
                &self.deps.media,
                "transcode",
                self.name.clone(),
                self.deps.backoff,
                clock,
                self.outputs.clone(),
                move |_| {
                    run_ladder(LadderContext {
                        channel: name.clone(),
                        source: source.clone(),
                        hls: entry.clone(),
                        addr: me.clone(),
                        transcoder: transcoder.clone(),
                        clock,
                    })
                },
            );
        }
    }

    /// A supervised LL-HLS packager for `ring`, cutting on its own or in step with `follow`.
    fn start_packager(&self, ring: FrameRing, hls: Arc<HlsRendition>, follow: Option<Arc<HlsRendition>>) {
        let (name, settings, clock) = (self.name.clone(), self.settings.hls, self.deps.clock);
        spawn_supervised(
            &self.deps.media,
            "hls_packager",
            self.name.clone(),
            self.deps.backoff,
            clock,
            self.outputs.clone(),
            move |_restarts| {
                let packager = HlsPackager {
                    channel: name.clone(),
                    rendition: hls.clone(),
                    settings,
                    clock,
                    follow: follow.clone(),
                };
                packager.run(ring.reader())
            },
        );
    }

    fn set_live(&mut self, live: bool) {
        if live != self.counted_live {
            self.counted_live = live;
            if live {
                metrics().channels_live.inc();
            } else {
                metrics().channels_live.dec();
            }
        }
    }

    /// End the live session: close the rings so consumers drain and finish, and start fresh
    /// rings for whoever publishes next.
    fn end_session(&mut self) {
        for r in &self.renditions {
            r.ring.close();
        }
        // The ladder's renditions belong to the session; the next one plans its own.
        self.renditions.truncate(1);
        self.renditions[0].ring = FrameRing::with_clock(self.settings.ring, self.deps.clock);
        self.hls = None;
        self.publisher = Publisher::Offline;
        self.set_live(false);
        info!(channel = %self.name, "live session ended");
    }
}

/// Count one live session's LL-HLS viewers every couple of seconds (the gauge and the channel's
/// roster), and once every rendition
/// has ended, keep its playlists served for a while (players see `EXT-X-ENDLIST`) and then take
/// the session out of the directory unless a new session replaced it.
async fn sweep_hls(
    name: String,
    entry: Weak<HlsChannel>,
    directory: HlsDirectory,
    settings: HlsSettings,
    clock: Clock,
) {
    let linger = settings.window.min(ENDED_LINGER_MAX);
    let mut ended_at = None;
    let mut tick = tokio::time::interval(VIEWER_SWEEP_EVERY.min(linger.max(Duration::from_millis(100))));
    loop {
        tick.tick().await;
        let Some(e) = entry.upgrade() else {
            crate::actors::roster::set_hls_viewers(&name, None);
            return;
        };
        crate::actors::roster::set_hls_viewers(&name, Some(e.viewers.sweep()));
        if e.renditions().iter().all(|r| r.progress().ended) {
            let since = *ended_at.get_or_insert_with(|| clock.now());
            if clock.since(since) >= linger {
                directory.remove_if(&name, |_, current| Arc::ptr_eq(current, &e));
                crate::actors::roster::set_hls_viewers(&name, None);
                return;
            }
        }
    }
}

impl Actor for Channel {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(IDLE_CHECK_EVERY, |act, ctx| {
            let busy = !matches!(act.publisher, Publisher::Offline) || act.reader_count() > 0;
            if busy {
                act.idle_since = None;
            } else {
                let since = *act.idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= act.settings.idle_timeout {
                    info!(channel = %act.name, "idle, stopping");
                    ctx.stop();
                }
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        if let Publisher::Live { cancel, .. } = &self.publisher {
            cancel.cancel();
        }
        for r in &self.renditions {
            r.ring.close();
        }
        self.outputs.cancel();
        self.set_live(false);
        // actix runs `stopped` while unwinding from a panic too. A crashed channel stays in the
        // directory with its dead address, which is how the registry tells a failure (to be
        // counted and backed off) from an orderly stop.
        if !std::thread::panicking() {
            let me = ctx.address();
            self.directory.remove_if(&self.name, |_, addr| *addr == me);
        }
    }
}

/// Ask for the channel's writer. Refused while another publisher is live; granted with
/// `resumed = true` during the reconnect grace period.
#[derive(Message)]
#[rtype(result = "Result<PublishGrant>")]
pub struct AddPublisher {
    pub session_id: u64,
    /// Cancelled by the channel to cut the publisher off (channel stop, shutdown).
    pub cancel: CancellationToken,
    /// The channel's visibility, for the outputs' access checks.
    pub visibility: Visibility,
}

pub struct PublishGrant {
    /// The writer of the `source` rendition's ring.
    pub writer: RingWriter,
    /// This publisher continues a session whose previous publisher dropped within grace.
    pub resumed: bool,
}

impl Handler<AddPublisher> for Channel {
    type Result = Result<PublishGrant>;

    fn handle(&mut self, msg: AddPublisher, ctx: &mut Self::Context) -> Self::Result {
        let resumed = match std::mem::replace(&mut self.publisher, Publisher::Offline) {
            live @ Publisher::Live { .. } => {
                self.publisher = live;
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("channel '{}' is already being published", self.name),
                ));
            }
            Publisher::Grace { timer } => {
                ctx.cancel_future(timer);
                true
            }
            Publisher::Offline => false,
        };
        self.publisher = Publisher::Live { session_id: msg.session_id, cancel: msg.cancel };
        self.set_live(true);
        if !resumed {
            self.start_outputs(msg.visibility, ctx.address());
        }
        info!(channel = %self.name, session = msg.session_id, resumed, "publisher attached");
        Ok(PublishGrant { writer: self.source().writer(resumed), resumed })
    }
}

/// The publisher's connection ended (cleanly or not).
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublisherLeft {
    pub session_id: u64,
}

impl Handler<PublisherLeft> for Channel {
    type Result = ();

    fn handle(&mut self, msg: PublisherLeft, ctx: &mut Self::Context) {
        let is_current =
            matches!(&self.publisher, Publisher::Live { session_id, .. } if *session_id == msg.session_id);
        if !is_current {
            return;
        }
        let grace = self.settings.reconnect_grace;
        info!(channel = %self.name, session = msg.session_id, grace_ms = grace.as_millis() as u64, "publisher left; waiting for reconnect");
        let timer = ctx.run_later(grace, |act, _| {
            if matches!(act.publisher, Publisher::Grace { .. }) {
                act.end_session();
            }
        });
        self.publisher = Publisher::Grace { timer };
    }
}

/// Attach a consumer to one rendition. Refused when nothing is being published (and not in
/// grace), or when the rendition does not exist.
#[derive(Message)]
#[rtype(result = "Result<RingReader>")]
pub struct AddReader {
    pub rendition: String,
}

impl AddReader {
    /// A reader of the publisher's own encoding.
    pub fn source() -> Self {
        AddReader { rendition: SOURCE.to_string() }
    }
}

impl Handler<AddReader> for Channel {
    type Result = Result<RingReader>;

    fn handle(&mut self, msg: AddReader, _: &mut Self::Context) -> Self::Result {
        if matches!(self.publisher, Publisher::Offline) {
            return Err(Error::not_found(format!("channel '{}' is offline", self.name)));
        }
        let rendition = self.renditions.iter().find(|r| r.name == msg.rendition).ok_or_else(|| {
            Error::not_found(format!("channel '{}' has no rendition '{}'", self.name, msg.rendition))
        })?;
        self.idle_since = None;
        Ok(rendition.ring.reader())
    }
}

/// A transcode ladder's renditions for the current live session: a ring each (and an LL-HLS
/// packager cutting in step with the source's, for those in LL-HLS). Answers their writers; a
/// rendition that exists already (a restarted ladder) gets a new writer of the same ring.
#[derive(Message)]
#[rtype(result = "Result<Vec<RingWriter>>")]
pub struct AddRenditions {
    pub renditions: Vec<NewRendition>,
}

pub struct NewRendition {
    pub name: String,
    /// Listed in LL-HLS (the video rungs); the Opus track for WebRTC is not.
    pub hls: bool,
}

impl Handler<AddRenditions> for Channel {
    type Result = Result<Vec<RingWriter>>;

    fn handle(&mut self, msg: AddRenditions, _: &mut Self::Context) -> Self::Result {
        let Some(entry) = self.hls.clone().filter(|_| !matches!(self.publisher, Publisher::Offline)) else {
            return Err(Error::not_found(format!("channel '{}' is offline", self.name)));
        };
        let source_hls = entry.rendition(SOURCE).expect("a session's LL-HLS entry has its source");
        let mut writers = Vec::with_capacity(msg.renditions.len());
        for r in msg.renditions {
            if let Some(existing) = self.renditions.iter().find(|x| x.name == r.name) {
                writers.push(existing.ring.writer(false));
                continue;
            }
            let ring = FrameRing::with_clock(self.settings.ring, self.deps.clock);
            writers.push(ring.writer(false));
            if r.hls {
                let hls = Arc::new(HlsRendition::new(&r.name, &self.settings.hls));
                entry.add_rendition(hls.clone());
                self.start_packager(ring.clone(), hls, Some(source_hls.clone()));
            }
            self.renditions.push(Rendition { name: r.name, ring });
        }
        Ok(writers)
    }
}

/// Stop the channel: cut the publisher off, end viewers, remove it from the registry.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopChannel;

impl Handler<StopChannel> for Channel {
    type Result = ();

    fn handle(&mut self, _: StopChannel, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// What the API and tests can see of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelStatus {
    pub live: bool,
    pub in_grace: bool,
    pub readers: usize,
}

#[derive(Message)]
#[rtype(result = "ChannelStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for Channel {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(ChannelStatus {
            live: matches!(self.publisher, Publisher::Live { .. }),
            in_grace: matches!(self.publisher, Publisher::Grace { .. }),
            readers: self.reader_count(),
        })
    }
}

/// Test-only: make the actor die the way a bug would (a panic in a handler), to exercise the
/// registry's supervision.
#[cfg(test)]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

#[cfg(test)]
impl Handler<Crash> for Channel {
    type Result = ();

    fn handle(&mut self, _: Crash, _: &mut Self::Context) {
        panic!("simulated channel actor failure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Tracks;
    use crate::media::frame::{Frame, TrackKind};
    use crate::media::ring::ReadResult;
    use crate::media::time::MediaTime;
    use bytes::Bytes;

    fn settings(grace_ms: u64, idle_ms: u64) -> ChannelSettings {
        ChannelSettings {
            reconnect_grace: Duration::from_millis(grace_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            ring: RingLimits { max_duration: Duration::from_secs(4), max_bytes: 1 << 20 },
            hls: HlsSettings {
                part_target: Duration::from_millis(200),
                segment_target: Duration::from_secs(1),
                window: Duration::from_secs(6),
                block_timeout: Duration::from_secs(1),
            },
        }
    }

    fn start(grace_ms: u64, idle_ms: u64) -> (Addr<Channel>, ChannelDirectory, HlsDirectory) {
        let dir = Arc::new(DashMap::new());
        let deps = ChannelDeps {
            backoff: Backoff { initial: Duration::from_millis(50), ..Backoff::default() },
            ..ChannelDeps::current()
        };
        let hls = deps.hls.clone();
        let addr = Channel::new("studio".into(), settings(grace_ms, idle_ms), dir.clone(), deps).start();
        dir.insert("studio".into(), addr.clone());
        (addr, dir, hls)
    }

    fn publish(session_id: u64) -> AddPublisher {
        AddPublisher { session_id, cancel: CancellationToken::new(), visibility: Visibility::Public }
    }

    fn key_frame(ms: i64) -> Frame {
        let t = MediaTime::from_millis(ms);
        Frame::new(TrackKind::Video, t, t, true, Bytes::from_static(b"k"), Arc::new(Tracks::default()))
    }

    #[actix::test]
    async fn second_publisher_is_refused_and_resume_within_grace_continues() {
        let (ch, _, hls) = start(300, 60_000);
        let grant = ch.send(publish(1)).await.unwrap().expect("first publisher accepted");
        assert!(!grant.resumed);
        assert!(hls.contains_key("studio"), "the LL-HLS packager starts with the live session");
        let err = ch.send(publish(2)).await.unwrap().err().expect("second publisher refused");
        assert_eq!(err.kind, ErrorKind::AlreadyExists);

        let mut writer = grant.writer;
        writer.push(key_frame(0));
        let mut reader = ch.send(AddReader::source()).await.unwrap().expect("live channel has a reader");
        assert!(matches!(reader.try_read(), ReadResult::Frame(_)));

        drop(writer);
        ch.send(PublisherLeft { session_id: 1 }).await.unwrap();
        let status = ch.send(GetStatus).await.unwrap();
        assert!(status.in_grace && !status.live);
        let grant = ch.send(publish(3)).await.unwrap().expect("a publisher returning in grace is accepted");
        assert!(grant.resumed, "within grace the live session continues");
        let mut writer = grant.writer;
        writer.push(key_frame(0));
        match reader.try_read() {
            ReadResult::Frame(f) => assert!(f.discontinuity && f.dts > MediaTime::from_millis(0)),
            other => panic!("the same reader continues: {other:?}"),
        }
    }

    #[actix::test]
    async fn grace_expiry_ends_the_session_and_closes_readers() {
        let (ch, _, _) = start(100, 60_000);
        let grant = ch.send(publish(1)).await.unwrap().unwrap();
        let mut reader = ch.send(AddReader::source()).await.unwrap().unwrap();
        drop(grant);
        ch.send(PublisherLeft { session_id: 1 }).await.unwrap();
        let closed =
            tokio::time::timeout(Duration::from_secs(3), async { while reader.next().await.is_some() {} })
                .await;
        assert!(closed.is_ok(), "readers see the end of the session after the grace period");
        let status = ch.send(GetStatus).await.unwrap();
        assert!(!status.live && !status.in_grace);
        let err = ch.send(AddReader::source()).await.unwrap().err().expect("offline channel has no readers");
        assert_eq!(err.kind, ErrorKind::NotFound);
        let grant = ch.send(publish(2)).await.unwrap().unwrap();
        assert!(!grant.resumed, "after grace a publisher starts a new session");
    }

    #[actix::test]
    async fn idle_channel_stops_and_leaves_the_directory() {
        let (ch, dir, _) = start(100, 200);
        assert!(dir.contains_key("studio"));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!ch.connected(), "an idle channel stops");
        assert!(!dir.contains_key("studio"), "and removes itself from the registry's directory");
    }

    #[actix::test]
    async fn stale_publisher_left_is_ignored() {
        let (ch, _, _) = start(100, 60_000);
        let _grant = ch.send(publish(7)).await.unwrap().unwrap();
        ch.send(PublisherLeft { session_id: 99 }).await.unwrap();
        assert!(ch.send(GetStatus).await.unwrap().live, "only the current publisher's departure counts");
    }

    /// Poll `cond` every 50 ms for up to 20 s (the machine may be busy).
    async fn eventually(cond: &dyn Fn() -> bool) {
        for _ in 0..400 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A packager that panics is restarted by its supervisor; LL-HLS for the channel resumes
    /// in the same window after a discontinuity, MSNs keep growing, and the restart is counted.
    #[actix::test]
    async fn a_panicking_packager_is_restarted_and_hls_resumes_after_a_discontinuity() {
        let (ch, _, hls) = start(10_000, 60_000);
        let grant = ch.send(publish(1)).await.unwrap().unwrap();
        let mut writer = grant.writer;
        let rendition = hls.get("studio").expect("the session's LL-HLS entry").renditions()[0].clone();
        let restarts = || metrics().output_restarts.with_label_values(&["hls_packager"]).get();
        let before = restarts();
        let tracks = crate::actors::hls::tests::video_tracks();
        let mut t = 0i64;
        // 30 fps with a key frame every second (the segment target here), pushed in real time
        // in bursts of half a second so parts are published as they complete.
        let push = |writer: &mut RingWriter, secs: u32, t: &mut i64| {
            for _ in 0..secs * 30 {
                let ts = MediaTime::from_millis(*t * 1000 / 30);
                writer.push(Frame::new(
                    TrackKind::Video,
                    ts,
                    ts,
                    *t % 30 == 0,
                    Bytes::from_static(b"f"),
                    tracks.clone(),
                ));
                *t += 1;
            }
        };
        push(&mut writer, 3, &mut t);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let complete = || rendition.window().segments.iter().filter(|s| s.complete()).count();
        let complete_two = || complete() >= 2;
        eventually(&complete_two).await;
        assert!(complete() >= 2, "segments before the fault");
        let msn_before = rendition.window().segments.back().unwrap().msn;

        rendition.inject_fault();
        push(&mut writer, 1, &mut t);
        eventually(&|| restarts() > before).await;
        assert_eq!(restarts() - before, 1, "the panic is counted in tidecast_channel_output_restarts_total");
        // The restarted packager's reader starts at the newest key frame once its backoff
        // (50 ms here) is over: publish after that, so it sees whole segments.
        tokio::time::sleep(Duration::from_millis(500)).await;
        push(&mut writer, 3, &mut t);
        let resumed = || {
            let w = rendition.window();
            w.segments.iter().any(|s| s.msn > msn_before && s.discontinuity && s.complete())
        };
        eventually(&resumed).await;
        let w = rendition.window();
        assert!(
            resumed(),
            "a new segment after a discontinuity: {:?}",
            w.segments.iter().map(|s| (s.msn, s.discontinuity, s.complete())).collect::<Vec<_>>()
        );
        let msns: Vec<u64> = w.segments.iter().map(|s| s.msn).collect();
        assert!(msns.windows(2).all(|p| p[1] == p[0] + 1), "MSNs continue without reuse: {msns:?}");
        assert!(
            w.segments.iter().all(|s| s.complete() || Some(s.msn) == msns.last().copied()),
            "the segment cut short by the fault was sealed"
        );
        drop(w);
        let text = metrics().render();
        assert!(
            text.contains("tidecast_channel_output_restarts_total{output=\"hls_packager\"}"),
            "in /metrics"
        );
    }
}
