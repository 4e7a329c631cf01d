//! The transcode ladder: per live channel, one ffmpeg that makes lower renditions (and an Opus
//! track for WebRTC) from the source, each into a ring of its own with its own LL-HLS packager.
//!
//! Data flow: source `FrameRing` -> a `RingReader` (the publisher never waits for ffmpeg: a
//! ladder that falls behind skips to the newest key frame like any viewer) -> `TsMuxer` ->
//! ffmpeg's stdin; ffmpeg's outputs (one MPEG-TS pipe per rung) -> `TsDemuxer` -> the rung's
//! `RingWriter` -> its `HlsPackager`, which cuts in step with the source's (`media::follow`), so
//! every rendition has the same segment and part boundaries, MSNs and program date times.
//!
//! Lifecycle: the `Channel` starts the ladder as a supervised output of each live session when
//! the ladder is on and ffmpeg was found. The ladder takes a slot of the server-wide cap
//! (`max_transcodes`; none free: passthrough, and its status says why), reads the source
//! until it knows its size, bitrate and audio, plans the rungs (`command::plan`), asks the
//! channel for their rings (`AddRenditions`), and runs ffmpeg until the source ends.
//!
//! Process care: ffmpeg that exits, or takes input but gives no output for `stall_timeout`, is
//! killed and started again after a backoff (`retry_initial` doubling to `retry_max`), while
//! `source` plays on; the rungs get a discontinuity (gap segments for what they missed). A
//! source whose picture size or codec changes (a publisher reconnecting with other settings)
//! restarts ffmpeg at once. Without ffmpeg every channel runs passthrough, with one warning at
//! start and `tidecast_transcode_ffmpeg_missing` = 1.

mod command;
mod process;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use dashmap::DashMap;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

pub use command::{default_rungs, Codec, Encoder, Plan, RungSpec, SourceInfo};
use command::{ffmpeg_args, plan, EncoderSettings};
use process::Ffmpeg;

use super::channel::{AddRenditions, Channel, NewRendition};
use super::hls::HlsChannel;
use crate::media::clock::Clock;
use crate::media::codec::Tracks;
use crate::media::ring::{FrameRing, RingWriter};
use crate::media::TrackKind;
use crate::metrics::{metrics, GaugeGuard};
use crate::protocols::ts::{TsDemuxer, TsEvent, TsMuxer};

/// The rendition name of the Opus track made for WebRTC viewers (not in LL-HLS).
pub const OPUS: &str = "opus";
/// The source is measured for at most this long (wall clock) before the ladder plans.
const PROBE_WALL: Duration = Duration::from_secs(3);
/// Media time measured for the source's bitrate.
const PROBE_MEDIA: Duration = Duration::from_secs(1);
/// A ffmpeg that ran this long without trouble resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// After the source ends, ffmpeg gets this long to flush its outputs.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the stall watchdog looks.
const WATCHDOG_EVERY: Duration = Duration::from_millis(250);

/// `[transcode]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct TranscodeSettings {
    pub enabled: bool,
    pub ffmpeg: String,
    pub max_transcodes: usize,
    pub max_rungs: usize,
    pub encoder: Encoder,
    pub preset: String,
    pub tune: String,
    pub vaapi_device: String,
    pub stall_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub opus: bool,
    pub aac_kbps: u32,
    pub opus_kbps: u32,
    pub rungs: Vec<RungSpec>,
}

impl Default for TranscodeSettings {
    fn default() -> Self {
        TranscodeSettings {
            enabled: true,
            ffmpeg: "ffmpeg".into(),
            max_transcodes: 2,
            max_rungs: 3,
            encoder: Encoder::X264,
            preset: "veryfast".into(),
            tune: "zerolatency".into(),
            vaapi_device: "/dev/dri/renderD128".into(),
            stall_timeout: Duration::from_secs(5),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            opus: true,
            aac_kbps: 128,
            opus_kbps: 96,
            rungs: default_rungs(),
        }
    }
}

/// What a channel's owner changed from the server's `[transcode]` defaults (stored as JSON,
/// `PUT /api/v1/channels/{name}/ladder`); unset fields keep the defaults. Applies from the
/// channel's next live session: a running ladder's renditions are in players' playlists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rungs: Option<Vec<RungSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rungs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<Codec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tune: Option<String>,
}

/// A channel's ladder as it will run: the server's defaults with the owner's changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectiveLadder {
    pub enabled: bool,
    pub rungs: Vec<RungSpec>,
    pub max_rungs: usize,
    pub codec: Codec,
    pub preset: String,
    pub tune: String,
}

/// Where a channel's ladder stands (`GET /api/v1/channels/{name}`, `ladder`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LadderStatus {
    /// `starting` (measuring the source), `running`, `restarting` (ffmpeg died; backing off), or
    /// `passthrough` (the source only; `reason` says why).
    pub state: LadderState,
    /// The renditions the ladder makes (besides `source`).
    pub renditions: Vec<String>,
    /// Why the channel runs passthrough, or ffmpeg's last error when restarting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// ffmpeg restarts in this live session.
    pub restarts: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LadderState {
    Starting,
    Running,
    Restarting,
    Passthrough,
}

/// The server's transcoding: settings, the ffmpeg found at start, the cap, each live channel's
/// ladder status. Cheap to clone.
#[derive(Clone)]
pub struct Transcoder {
    inner: Arc<Inner>,
}

struct Inner {
    settings: TranscodeSettings,
    ffmpeg: Option<PathBuf>,
    slots: Arc<Semaphore>,
    status: DashMap<String, LadderStatus>,
    /// Channel name -> its owner's changes to the defaults.
    overrides: DashMap<String, LadderOverride>,
}

impl Transcoder {
    /// Find ffmpeg (a path, or a name on `PATH`) and set up the cap. Without ffmpeg, or with the
    /// ladder off, channels run passthrough; a missing ffmpeg is said once, here.
    pub fn new(settings: TranscodeSettings) -> Self {
        let ffmpeg = if settings.enabled { find_binary(&settings.ffmpeg) } else { None };
        metrics().transcode_ffmpeg_missing.set(i64::from(settings.enabled && ffmpeg.is_none()));
        match (&ffmpeg, settings.enabled) {
            (Some(path), true) => {
                info!(ffmpeg = %path.display(), max_transcodes = settings.max_transcodes, "transcode ladder on")
            }
            (None, true) => warn!(
                ffmpeg = %settings.ffmpeg,
                "ffmpeg not found: every channel runs passthrough only (install ffmpeg, or set \
                 [transcode] ffmpeg to its path; [transcode] enabled = false silences this)"
            ),
            _ => info!("transcode ladder off ([transcode] enabled = false)"),
        }
        let slots = Arc::new(Semaphore::new(settings.max_transcodes));
        Transcoder {
            inner: Arc::new(Inner {
                settings,
                ffmpeg,
                slots,
                status: DashMap::new(),
                overrides: DashMap::new(),
            }),
        }
    }

    /// Passthrough only (tests, and servers with the ladder off).
    pub fn disabled() -> Self {
        let settings = TranscodeSettings { enabled: false, ..TranscodeSettings::default() };
        let slots = Arc::new(Semaphore::new(0));
        Transcoder {
            inner: Arc::new(Inner {
                settings,
                ffmpeg: None,
                slots,
                status: DashMap::new(),
                overrides: DashMap::new(),
            }),
        }
    }

    /// A live session of `channel` should start a ladder: ffmpeg is there, and the ladder is
    /// on for the channel (its owner's setting, else the server's).
    pub fn active(&self, channel: &str) -> bool {
        self.inner.ffmpeg.is_some() && self.effective(channel).enabled
    }

    /// Whether the server can transcode at all (ffmpeg found).
    pub fn available(&self) -> bool {
        self.inner.ffmpeg.is_some()
    }

    /// Set (or with `None`, clear) a channel's changes to the defaults.
    pub fn set_override(&self, channel: &str, o: Option<LadderOverride>) {
        match o {
            Some(o) => {
                self.inner.overrides.insert(channel.to_string(), o);
            }
            None => {
                self.inner.overrides.remove(channel);
            }
        }
    }

    /// The owner's changes, if any.
    pub fn override_of(&self, channel: &str) -> Option<LadderOverride> {
        self.inner.overrides.get(channel).map(|o| o.clone())
    }

    /// The server's defaults with `channel`'s changes.
    pub fn effective(&self, channel: &str) -> EffectiveLadder {
        let s = &self.inner.settings;
        let o = self.override_of(channel).unwrap_or_default();
        EffectiveLadder {
            enabled: o.enabled.unwrap_or(s.enabled),
            rungs: o.rungs.unwrap_or_else(|| s.rungs.clone()),
            max_rungs: o.max_rungs.unwrap_or(s.max_rungs),
            codec: o.codec.unwrap_or_default(),
            preset: o.preset.unwrap_or_else(|| s.preset.clone()),
            tune: o.tune.unwrap_or_else(|| s.tune.clone()),
        }
    }

    /// The server-wide settings.
    pub fn settings(&self) -> &TranscodeSettings {
        &self.inner.settings
    }

    /// The ladder status of a live channel.
    pub fn status(&self, channel: &str) -> Option<LadderStatus> {
        self.inner.status.get(channel).map(|s| s.clone())
    }

    fn set_status(&self, channel: &str, f: impl FnOnce(&mut LadderStatus)) {
        let mut e = self.inner.status.entry(channel.to_string()).or_insert_with(|| LadderStatus {
            state: LadderState::Starting,
            renditions: Vec::new(),
            reason: None,
            restarts: 0,
        });
        f(e.value_mut());
    }
}

/// `name` as given when it holds a `/`, else the first executable of that name on `PATH`.
pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| executable(p)))
        .unwrap_or(None)
}

/// What one live session's ladder works with.
pub struct LadderContext {
    pub channel: String,
    pub source: FrameRing,
    pub hls: Arc<HlsChannel>,
    pub addr: Addr<Channel>,
    pub transcoder: Transcoder,
    pub clock: Clock,
}

/// Settles the session's renditions when the ladder stops adding any (whatever the reason).
struct Settle(Arc<HlsChannel>);

impl Drop for Settle {
    fn drop(&mut self) {
        self.0.settle();
    }
}

/// Clears the channel's status when the session's ladder ends.
struct StatusGuard(Transcoder, String);

impl Drop for StatusGuard {
    fn drop(&mut self) {
        self.0.inner.status.remove(&self.1);
    }
}

/// Run one live session's ladder until the source ends (a supervised channel output).
pub async fn run_ladder(ctx: LadderContext) {
    let _settle = Settle(ctx.hls.clone());
    let t = ctx.transcoder.clone();
    let _status = StatusGuard(t.clone(), ctx.channel.clone());
    let Some(ffmpeg) = t.inner.ffmpeg.clone() else { return };
    let Ok(_slot) = t.inner.slots.clone().try_acquire_owned() else {
        metrics().transcode_refused.with_label_values(&["cap"]).inc();
        let reason =
            format!("the server transcodes at most {} channels at once", t.inner.settings.max_transcodes);
        info!(channel = %ctx.channel, %reason, "running passthrough");
        t.set_status(&ctx.channel, |s| {
            s.state = LadderState::Passthrough;
            s.reason = Some(reason);
        });
        ctx.hls.settle();
        // Keep the status while the session lives.
        let mut reader = ctx.source.reader();
        while reader.next().await.is_some() {}
        return;
    };
    t.set_status(&ctx.channel, |s| s.state = LadderState::Starting);
    let Some(info) = probe(&ctx.source).await else { return };
    let settings = &t.inner.settings;
    let ladder = t.effective(&ctx.channel);
    let plan = plan(&ladder.rungs, ladder.max_rungs, settings.opus, &info);
    if plan.is_empty() {
        t.set_status(&ctx.channel, |s| {
            s.state = LadderState::Passthrough;
            s.reason = Some(format!("the source ({}p) is already at or below the lowest rung", info.height));
        });
        ctx.hls.settle();
        let mut reader = ctx.source.reader();
        while reader.next().await.is_some() {}
        return;
    }
    let mut renditions: Vec<NewRendition> =
        plan.rungs.iter().map(|r| NewRendition { name: r.name.clone(), hls: true }).collect();
    if plan.opus {
        renditions.push(NewRendition { name: OPUS.into(), hls: false });
    }
    let names: Vec<String> = renditions.iter().map(|r| r.name.clone()).collect();
    let writers = match ctx.addr.send(AddRenditions { renditions }).await {
        Ok(Ok(w)) => w,
        // The session ended meanwhile.
        _ => return,
    };
    drop(_settle);
    info!(channel = %ctx.channel, renditions = ?names, source = ?info, "transcode ladder starting");
    t.set_status(&ctx.channel, |s| {
        s.renditions = names;
        s.state = LadderState::Running;
    });
    let _running = GaugeGuard::new(metrics().transcodes_running.clone());
    let enc = EncoderSettings {
        encoder: settings.encoder,
        codec: ladder.codec,
        preset: &ladder.preset,
        tune: &ladder.tune,
        vaapi_device: &settings.vaapi_device,
        aac_kbps: settings.aac_kbps,
        opus_kbps: settings.opus_kbps,
    };
    let args = ffmpeg_args(&plan, &enc);
    let mut writers = writers;
    let mut delay = settings.retry_initial;
    let mut runs = 0u32;
    loop {
        let started = ctx.clock.now();
        let (outcome, back) = run_once(&ctx, &ffmpeg, &args, &plan, writers, runs > 0).await;
        writers = back;
        runs += 1;
        let reason = match outcome {
            Outcome::SourceEnded => return,
            Outcome::SourceChanged => {
                metrics().transcode_restarts.with_label_values(&["source"]).inc();
                info!(channel = %ctx.channel, "the source's picture or codec changed; restarting the transcoder");
                t.set_status(&ctx.channel, |s| s.restarts += 1);
                continue;
            }
            Outcome::Stalled => {
                metrics().transcode_restarts.with_label_values(&["stall"]).inc();
                format!("ffmpeg gave no output for {:?}", settings.stall_timeout)
            }
            Outcome::Exited(exit) => {
                metrics().transcode_restarts.with_label_values(&["exit"]).inc();
                match exit.last_error {
                    Some(e) => format!("ffmpeg exited ({}): {e}", exit.status),
                    None => format!("ffmpeg exited ({})", exit.status),
                }
            }
            Outcome::SpawnFailed(e) => {
                metrics().transcode_restarts.with_label_values(&["exit"]).inc();
                format!("ffmpeg could not start: {e}")
            }
        };
        if ctx.clock.since(started) >= HEALTHY_RUN {
            delay = settings.retry_initial;
        }
        warn!(channel = %ctx.channel, %reason, retry_in_ms = delay.as_millis() as u64, "transcoder failed; source keeps playing");
        t.set_status(&ctx.channel, |s| {
            s.state = LadderState::Restarting;
            s.reason = Some(reason.chars().take(300).collect());
            s.restarts += 1;
        });
        // Wait out the backoff, unless the source ends meanwhile.
        let mut reader = ctx.source.reader();
        let deadline = ctx.clock.now() + delay;
        loop {
            tokio::select! {
                _ = ctx.clock.sleep_until(deadline) => break,
                next = reader.next() => if next.is_none() { return },
            }
        }
        delay = (delay * 2).min(settings.retry_max);
        t.set_status(&ctx.channel, |s| {
            s.state = LadderState::Running;
            s.reason = None;
        });
    }
}

/// Read the source until its video size (and a second of its bitrate) is known, or a few
/// seconds passed (an audio-only source). `None` when the source ended first.
async fn probe(source: &FrameRing) -> Option<SourceInfo> {
    let mut reader = source.reader();
    let deadline = tokio::time::Instant::now() + PROBE_WALL;
    let mut tracks: Option<Arc<Tracks>> = None;
    let mut first_video = None;
    let mut video_bytes = 0u64;
    let mut span = Duration::ZERO;
    loop {
        match tokio::time::timeout_at(deadline, reader.next()).await {
            Err(_) => break,
            Ok(None) => return None,
            Ok(Some(Err(_))) => continue,
            Ok(Some(Ok(f))) => {
                tracks = Some(f.tracks.clone());
                if f.track == TrackKind::Video {
                    let first = *first_video.get_or_insert(f.dts);
                    video_bytes += f.data.len() as u64;
                    span = f.dts.minus(first).as_duration();
                    if span >= PROBE_MEDIA {
                        break;
                    }
                }
            }
        }
    }
    let tracks = tracks.unwrap_or_default();
    // AV1 does not travel in our MPEG-TS to ffmpeg: such a source gets no video rungs.
    let video = tracks.video.as_ref().filter(|v| v.codec != crate::media::VideoCodec::Av1);
    let (width, height) = video.map_or((0, 0), |v| (v.width, v.height));
    let video_kbps =
        if span.is_zero() { 0 } else { (video_bytes as f64 * 8.0 / span.as_secs_f64() / 1000.0) as u32 };
    Some(SourceInfo { width, height, video_kbps, audio: tracks.audio.as_ref().map(|a| a.codec) })
}

enum Outcome {
    SourceEnded,
    SourceChanged,
    Stalled,
    Exited(process::Exit),
    SpawnFailed(std::io::Error),
}

/// One ffmpeg run: feed it the source from its newest key frame, fan its outputs into the
/// rungs' rings, watch it. Returns why it ended and the writers for the next run.
async fn run_once(
    ctx: &LadderContext,
    ffmpeg: &Path,
    args: &[String],
    plan: &Plan,
    writers: Vec<RingWriter>,
    restarted: bool,
) -> (Outcome, Vec<RingWriter>) {
    let mut proc = match Ffmpeg::spawn(ffmpeg, args, writers.len(), &ctx.channel, plan.rung_class()) {
        Ok(p) => p,
        Err(e) => return (Outcome::SpawnFailed(e), writers),
    };
    info!(channel = %ctx.channel, pid = proc.pid, restarted, "transcoder started");
    let epoch = Instant::now();
    let last_output = Arc::new(AtomicU64::new(0));
    let mut outputs = JoinSet::new();
    let n = writers.len();
    for (index, (rx, writer)) in std::mem::take(&mut proc.outputs).into_iter().zip(writers).enumerate() {
        outputs.spawn(pump_output(index, rx, writer, restarted, last_output.clone(), epoch));
    }
    let stdin = proc.stdin.take().expect("ffmpeg's stdin is piped");
    let fed = Arc::new(FeedState::default());
    let feed = feed(ctx.source.clone(), stdin, fed.clone(), epoch);
    tokio::pin!(feed);
    let mut watchdog = tokio::time::interval(WATCHDOG_EVERY);
    let stall = ctx.transcoder.inner.settings.stall_timeout;
    let outcome = loop {
        tokio::select! {
            fed = &mut feed => {
                break match fed {
                    Fed::SourceEnded => Outcome::SourceEnded,
                    Fed::SourceChanged => Outcome::SourceChanged,
                    // ffmpeg stopped reading: it is exiting; its exit says why.
                    Fed::Closed => match tokio::time::timeout(FLUSH_TIMEOUT, &mut proc.exited).await {
                        Ok(Ok(exit)) => Outcome::Exited(exit),
                        _ => Outcome::Stalled,
                    },
                };
            }
            exit = &mut proc.exited => {
                break match exit {
                    Ok(exit) => Outcome::Exited(exit),
                    Err(_) => Outcome::Stalled,
                };
            }
            _ = watchdog.tick() => {
                // Stalled: no output for `stall` while ffmpeg had input to take (the feeder is
                // blocked writing, or read media within that time). A source that paused (a
                // publisher in its reconnect grace) gives no input, and is no stall.
                let now = epoch.elapsed();
                let since = |at: &AtomicU64| now.saturating_sub(Duration::from_millis(at.load(Ordering::Relaxed)));
                let input = fed.writing.load(Ordering::Relaxed) || since(&fed.last_read) < stall;
                if since(&last_output) > stall && input {
                    break Outcome::Stalled;
                }
            }
        }
    };
    if let Outcome::SourceEnded = outcome {
        // Stdin is closed (the feeder is done): let ffmpeg flush its last frames.
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, &mut proc.exited).await;
    }
    proc.kill();
    let mut writers = Vec::with_capacity(n);
    while let Some(w) = outputs.join_next().await {
        if let Ok(w) = w {
            writers.push(w);
        }
    }
    // Output tasks return in completion order: restore the rung order.
    writers.sort_by_key(|(i, _)| *i);
    let writers = writers.into_iter().map(|(_, w)| w).collect();
    (outcome, writers)
}

/// What the watchdog knows of the feeder.
#[derive(Default)]
struct FeedState {
    /// Milliseconds after the run's start when a frame was last read from the source.
    last_read: AtomicU64,
    /// A write to ffmpeg's stdin is under way (blocked while ffmpeg does not read).
    writing: std::sync::atomic::AtomicBool,
}

enum Fed {
    SourceEnded,
    SourceChanged,
    /// ffmpeg closed its stdin.
    Closed,
}

/// Write the source into ffmpeg's stdin as MPEG-TS until the source ends or changes.
async fn feed(
    source: FrameRing,
    mut stdin: tokio::net::unix::pipe::Sender,
    state: Arc<FeedState>,
    epoch: Instant,
) -> Fed {
    let mut reader = source.reader();
    let mut mux = TsMuxer::new();
    let mut video: Option<(u32, u32, crate::media::VideoCodec)> = None;
    let mut first = true;
    loop {
        let frame = match reader.next().await {
            None => return Fed::SourceEnded,
            // Behind by a ring: the reader resumed at the newest key frame; ffmpeg sees a jump.
            Some(Err(_)) => continue,
            Some(Ok(f)) => f,
        };
        state.last_read.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let now = frame.tracks.video.as_ref().map(|v| (v.width, v.height, v.codec));
        if !first && (frame.discontinuity || (now.is_some() && video.is_some() && now != video)) {
            // A publisher came back (maybe with other settings): a fresh ffmpeg takes it.
            return Fed::SourceChanged;
        }
        if now.is_some() {
            video = now;
        }
        first = false;
        let Some(bytes) = mux.frame(&frame) else { continue };
        state.writing.store(true, Ordering::Relaxed);
        let written = stdin.write_all(&bytes).await;
        state.writing.store(false, Ordering::Relaxed);
        if written.is_err() {
            return Fed::Closed;
        }
    }
}

/// Read one ffmpeg output into its rung's ring until ffmpeg closes it; returns the writer (and
/// the output's index, from its fd order) for the next run.
async fn pump_output(
    index: usize,
    mut rx: tokio::net::unix::pipe::Receiver,
    mut writer: RingWriter,
    restarted: bool,
    last_output: Arc<AtomicU64>,
    epoch: Instant,
) -> (usize, RingWriter) {
    let mut demux = TsDemuxer::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    let mut discontinuity = restarted;
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last_output.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        demux.feed(&buf[..n], &mut events);
        push_events(&mut writer, &mut events, &mut discontinuity);
    }
    demux.finish(&mut events);
    push_events(&mut writer, &mut events, &mut discontinuity);
    (index, writer)
}

fn push_events(writer: &mut RingWriter, events: &mut Vec<TsEvent>, discontinuity: &mut bool) {
    for e in events.drain(..) {
        match e {
            TsEvent::Tracks(t) => writer.set_tracks(t),
            TsEvent::Frame(mut f) => {
                f.discontinuity = std::mem::take(discontinuity);
                writer.push(f);
            }
        }
    }
}
