//! Pulled sources: channels fed by a camera the server connects to (RTSP pull), instead of a
//! publisher connecting to the server.
//!
//! Data flow: camera -> retina (`ingest/rtsp.rs`) -> `protocols::rtsp::RtspDemux` ->
//! `IngestSession` -> the channel's ring. The pulled stream is a publisher like any other: the
//! channel, LL-HLS, RTMP and SRT play and restream see no difference.
//!
//! Lifecycle: [`Pulls`] holds one entry per channel with a source (from `[[rtsp.sources]]` and
//! the API's `/channels/{name}/source`); each entry runs one task on the media runtime, tracked
//! for shutdown. The task connects, pulls until the camera drops or fails, then waits a backoff
//! (`rtsp.retry_initial`, doubling to `rtsp.retry_max`; reset after a pull that lasted a minute)
//! and connects again. A reconnect within the channel's reconnect grace continues the same live
//! session with a discontinuity. Setting or deleting a source replaces or cancels its task at
//! once.
//!
//! On demand: a source with `on_demand` connects only while someone watches. Viewers declare
//! demand with a [`DemandGuard`] ([`Pulls::hold`]): an LL-HLS request while it is handled (an HLS
//! viewer has no connection to hold; its requests follow each other within a part), RTMP and
//! SRT viewers while connected; the linger counts from a guard's drop. The first viewer of an idle
//! on-demand channel waits (at most `rtsp.start_timeout`) for the camera's first media; the pull
//! stops `rtsp.linger` after the last viewer left.
//!
//! State: `waiting` (on demand, nobody watching), `connecting`, `live`, `retrying`; visible in the
//! API and in `tidecast_pull_sources{protocol,state}`. Reconnects are counted in
//! `tidecast_pull_reconnects_total`. Credentials never leave [`PullSource`]: logs and the API
//! show the URL without them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, warn, Instrument};

use super::registry::ChannelRegistry;
use crate::metrics::metrics;
use crate::protocols::rtsp::{RtspTransport, SourceUrl};

/// The protocol label of RTSP pulls.
pub const PROTOCOL: &str = "rtsp";
/// A pull that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
/// How often an on-demand pull checks whether anyone still watches.
const DEMAND_POLL: Duration = Duration::from_millis(500);

/// `[rtsp]` settings.
#[derive(Clone, Copy, Debug)]
pub struct PullSettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub linger: Duration,
    pub start_timeout: Duration,
    pub max_pulls: usize,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            linger: Duration::from_secs(30),
            start_timeout: Duration::from_secs(10),
            max_pulls: 64,
        }
    }
}

/// A channel's source as the pull task sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSource {
    pub url: SourceUrl,
    pub transport: RtspTransport,
    pub on_demand: bool,
}

/// Where a source is, as the API and `/metrics` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullState {
    /// On demand, and nobody watches.
    Waiting,
    Connecting,
    Live,
    /// The last attempt failed or the camera dropped; the next starts after a backoff.
    Retrying,
}

impl PullState {
    fn label(self) -> &'static str {
        match self {
            PullState::Waiting => "waiting",
            PullState::Connecting => "connecting",
            PullState::Live => "live",
            PullState::Retrying => "retrying",
        }
    }
}

/// A source's status snapshot for the API.
#[derive(Clone, Debug, Serialize)]
pub struct PullStatus {
    pub state: PullState,
    /// The last failure, without credentials.
    pub last_error: Option<String>,
    /// Pulls started again after a failure or a drop (since the server started).
    pub reconnects: u64,
}

/// One channel's source: its status and the demand of its viewers.
pub struct PullEntry {
    source: PullSource,
    cancel: CancellationToken,
    status: Mutex<PullStatus>,
    /// Live (frames flowing) or not, for viewers waiting on an on-demand start.
    live: watch::Sender<bool>,
    /// Milliseconds since `epoch` of the last viewer request, plus one (0: never).
    last_demand: AtomicU64,
    holders: AtomicUsize,
    wake: Notify,
    epoch: Instant,
}

impl PullEntry {
    fn new(source: PullSource) -> Self {
        let initial = if source.on_demand { PullState::Waiting } else { PullState::Connecting };
        metrics().pull_sources.with_label_values(&[PROTOCOL, initial.label()]).inc();
        PullEntry {
            source,
            cancel: CancellationToken::new(),
            status: Mutex::new(PullStatus { state: initial, last_error: None, reconnects: 0 }),
            live: watch::channel(false).0,
            last_demand: AtomicU64::new(0),
            holders: AtomicUsize::new(0),
            wake: Notify::new(),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PullStatus> {
        self.status.lock().expect("status lock is never poisoned: no panics inside")
    }

    /// Move to `state`, keeping the gauge in step.
    pub(crate) fn set_state(&self, state: PullState) {
        let mut s = self.lock();
        if s.state != state {
            let g = &metrics().pull_sources;
            g.with_label_values(&[PROTOCOL, s.state.label()]).dec();
            g.with_label_values(&[PROTOCOL, state.label()]).inc();
            s.state = state;
        }
        self.live.send_replace(state == PullState::Live);
    }

    /// Record a failure for the API: its first line (retina appends hex dumps and connection
    /// context on the lines after), at most 300 characters.
    fn failed(&self, error: &str) {
        let line = error.lines().next().unwrap_or_default();
        let short: String = line.chars().take(300).collect();
        self.lock().last_error = Some(short);
    }

    pub fn status(&self) -> PullStatus {
        self.lock().clone()
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_demand.store(ms, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Someone watches, or did within `linger`.
    fn demanded(&self, linger: Duration) -> bool {
        if self.holders.load(Ordering::Relaxed) > 0 {
            return true;
        }
        match self.last_demand.load(Ordering::Relaxed) {
            0 => false,
            ms => self.epoch.elapsed().saturating_sub(Duration::from_millis(ms - 1)) < linger,
        }
    }
}

impl Drop for PullEntry {
    fn drop(&mut self) {
        let state = self.lock().state;
        metrics().pull_sources.with_label_values(&[PROTOCOL, state.label()]).dec();
    }
}

/// Held by an RTMP or SRT viewer of a pulled channel while it is connected.
pub struct DemandGuard(Arc<PullEntry>);

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.0.holders.fetch_sub(1, Ordering::Relaxed);
        // The linger counts from the last viewer's leaving.
        self.0.touch();
    }
}

/// Every pulled source of the server. Cheap to clone.
#[derive(Clone)]
pub struct Pulls {
    inner: Arc<Inner>,
}

struct Inner {
    settings: PullSettings,
    /// `None`: a server part without channels (HTTP-only test servers); nothing is pulled.
    registry: Option<Addr<ChannelRegistry>>,
    media: tokio::runtime::Handle,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    entries: DashMap<String, Arc<PullEntry>>,
    slots: Arc<Semaphore>,
}

impl Pulls {
    pub fn new(
        settings: PullSettings,
        registry: Addr<ChannelRegistry>,
        media: tokio::runtime::Handle,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_pulls));
        Pulls {
            inner: Arc::new(Inner {
                settings,
                registry: Some(registry),
                media,
                shutdown,
                tracker,
                entries: DashMap::new(),
                slots,
            }),
        }
    }

    /// No sources and no way to run one (`set` is ignored): for HTTP servers in tests that
    /// have no channel registry. Must be called on a tokio runtime.
    pub fn none() -> Self {
        Pulls {
            inner: Arc::new(Inner {
                settings: PullSettings::default(),
                registry: None,
                media: tokio::runtime::Handle::current(),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                entries: DashMap::new(),
                slots: Arc::new(Semaphore::new(1)),
            }),
        }
    }

    pub fn settings(&self) -> &PullSettings {
        &self.inner.settings
    }

    /// Set (`Some`) or remove (`None`) `channel`'s source. An unchanged source keeps running;
    /// a changed one is restarted.
    pub fn set(&self, channel: &str, source: Option<PullSource>) {
        if let (Some(new), Some(cur)) = (&source, self.inner.entries.get(channel)) {
            if &cur.source == new {
                return;
            }
        }
        if let Some((_, old)) = self.inner.entries.remove(channel) {
            old.cancel.cancel();
        }
        let (Some(source), Some(registry)) = (source, self.inner.registry.clone()) else { return };
        let entry = Arc::new(PullEntry::new(source));
        self.inner.entries.insert(channel.to_owned(), entry.clone());
        let span = info_span!("pull", channel = %channel, source = %entry.source.url);
        let (inner, channel) = (self.inner.clone(), channel.to_owned());
        self.inner.tracker.spawn_on(run(inner, registry, channel, entry).instrument(span), &self.inner.media);
    }

    /// The status of `channel`'s source, if it has one.
    pub fn status(&self, channel: &str) -> Option<PullStatus> {
        self.inner.entries.get(channel).map(|e| e.status())
    }

    /// Channels with a source (for tests and the start-up log).
    pub fn channels(&self) -> Vec<String> {
        self.inner.entries.iter().map(|e| e.key().clone()).collect()
    }

    /// A connected viewer of `channel` (RTMP, SRT): the pull keeps running while the guard lives.
    pub fn hold(&self, channel: &str) -> Option<DemandGuard> {
        let e = self.inner.entries.get(channel)?.clone();
        if !e.source.on_demand {
            return None;
        }
        e.holders.fetch_add(1, Ordering::Relaxed);
        e.touch();
        Some(DemandGuard(e))
    }

    /// For a viewer of a channel that is not live: if an on-demand source feeds it, start the
    /// pull and wait (at most `rtsp.start_timeout`) for its first media. `true` when it is live.
    pub async fn start_on_demand(&self, channel: &str) -> bool {
        let Some(e) = self.inner.entries.get(channel).map(|e| e.clone()) else { return false };
        if !e.source.on_demand {
            return false;
        }
        e.touch();
        let mut live = e.live.subscribe();
        let started = tokio::time::timeout(self.inner.settings.start_timeout, live.wait_for(|l| *l)).await;
        matches!(started, Ok(Ok(_)))
    }

    /// Stop every pull (server shutdown; the tasks also watch the shutdown token).
    pub fn stop_all(&self) {
        for e in self.inner.entries.iter() {
            e.cancel.cancel();
        }
    }
}

/// One source's task: connect, pull, back off, again; on demand only while someone watches.
async fn run(inner: Arc<Inner>, registry: Addr<ChannelRegistry>, channel: String, entry: Arc<PullEntry>) {
    let s = inner.settings;
    let cancel = entry.cancel.clone();
    let mut backoff = s.retry_initial;
    let mut attempts = 0u64;
    info!(transport = entry.source.transport.label(), on_demand = entry.source.on_demand, "pull source set");
    loop {
        if entry.source.on_demand {
            entry.set_state(PullState::Waiting);
            while !entry.demanded(s.linger) {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = inner.shutdown.cancelled() => return,
                    _ = entry.wake.notified() => {}
                }
            }
        }
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = inner.shutdown.cancelled() => return,
            p = inner.slots.clone().acquire_owned() => p.expect("the pull semaphore is never closed"),
        };
        if attempts > 0 {
            entry.lock().reconnects += 1;
            metrics().pull_reconnects.with_label_values(&[PROTOCOL]).inc();
        }
        attempts += 1;
        entry.set_state(PullState::Connecting);
        let started = Instant::now();
        let pull = super::ingest::rtsp::run(&channel, &entry, &entry.source, &s, &registry, &inner.shutdown);
        let outcome = tokio::select! {
            r = pull => Some(r),
            _ = cancel.cancelled() => None,
            _ = idle(&entry, s.linger), if entry.source.on_demand => {
                info!(linger_ms = s.linger.as_millis() as u64, "on-demand pull stopped: nobody watched for the linger");
                drop(permit);
                backoff = s.retry_initial;
                attempts = 0;
                continue;
            }
        };
        drop(permit);
        entry.live.send_replace(false);
        let Some(result) = outcome else { break };
        if inner.shutdown.is_cancelled() {
            break;
        }
        if started.elapsed() >= STABLE {
            backoff = s.retry_initial;
        }
        match result {
            Ok(()) => info!("camera ended the stream; reconnecting"),
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "pull failed");
                entry.failed(&e);
            }
        }
        entry.set_state(PullState::Retrying);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(s.retry_max);
    }
    info!("pull source stopped");
}

/// Resolves once nobody has watched for `linger` (polled: demand is a pair of atomics).
async fn idle(entry: &PullEntry, linger: Duration) {
    loop {
        tokio::time::sleep(DEMAND_POLL).await;
        if !entry.demanded(linger) {
            return;
        }
    }
}
