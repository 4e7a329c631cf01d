//! Restream (push, simulcast): each live channel's source stream, without re-encoding, to the
//! owner's destinations (`rtmp://`, `rtmps://`, `srt://`).
//!
//! Data flow: `FrameRing` (source rendition) -> one `RingReader` per destination -> the
//! protocol's sans-IO writer (`protocols::rtmp::client` or `protocols::ts::TsMuxer`) -> the
//! destination's socket (`restream::rtmp`, `restream::srt`).
//!
//! Lifecycle: when a live session starts, the `Channel` starts one supervised `restream`
//! output (`actors::supervise`) which watches the channel's destination list in
//! [`Restream`] and runs one push task per enabled destination in its own `JoinSet` (tracked,
//! never detached). A list change (added, disabled, deleted through the API) takes effect at
//! once: removed pushes are cancelled, new ones start. When the ring closes (the session
//! ended) every push disconnects and the output finishes; the next live session starts it
//! again.
//!
//! Failure isolation: a push that fails goes to `retrying`, waits an exponential backoff
//! (`[restream] retry_initial`, doubling to `retry_max`) and reconnects with a fresh cursor at
//! the newest key frame. It reads the ring like a viewer, so it can never hold the publisher
//! back (ARCHITECTURE.md, backpressure rule 1), and a destination behind by more than
//! `max_lag` skips to the newest key frame (rule 3). Nothing it does reaches the channel or
//! the other destinations.
//!
//! Secrets: the destination's stream key never appears in logs, metrics or `last_error`;
//! logs show [`PushUrl::masked`] (scheme://host:port/app).

mod rtmp;
mod srt;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::media::ring::FrameRing;
use crate::metrics::metrics;

/// How often the restream output checks whether the live session ended.
const CLOSE_POLL: Duration = Duration::from_millis(250);

/// Restream settings (from `[restream]` in the config).
#[derive(Clone, Debug)]
pub struct RestreamSettings {
    /// Give up on connecting (TCP + handshake + publish accepted) after this long.
    pub connect_timeout: Duration,
    /// First retry delay after a failure; doubles per failure.
    pub retry_initial: Duration,
    /// The retry delay never exceeds this.
    pub retry_max: Duration,
    /// A write that does not finish within this is a failure (the destination stalled).
    pub write_timeout: Duration,
    /// A destination further behind the newest frame than this skips to the newest key frame.
    pub max_lag: Duration,
    /// Extra trusted root certificates for `rtmps://` (PEM), besides the public web roots.
    pub extra_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl Default for RestreamSettings {
    fn default() -> Self {
        RestreamSettings {
            connect_timeout: Duration::from_secs(10),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            max_lag: Duration::from_secs(4),
            extra_roots: Vec::new(),
        }
    }
}

/// The protocol of a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushProtocol {
    Rtmp,
    Rtmps,
    Srt,
}

impl PushProtocol {
    pub fn label(self) -> &'static str {
        match self {
            PushProtocol::Rtmp => "rtmp",
            PushProtocol::Rtmps => "rtmps",
            PushProtocol::Srt => "srt",
        }
    }
}

/// A validated destination URL: `rtmp[s]://host[:port]/app` or `srt://host:port[/app]`. The
/// stream key is not part of it (it is stored apart, as a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushUrl {
    pub protocol: PushProtocol,
    pub host: String,
    pub port: u16,
    /// RTMP application (path without the leading `/`); for SRT the resource prefix of the
    /// stream id (`live` when empty).
    pub app: String,
}

impl PushUrl {
    /// Parse and validate; the error says what is wrong without echoing a possible secret.
    pub fn parse(s: &str) -> Result<PushUrl, String> {
        let (scheme, rest) =
            s.split_once("://").ok_or("the URL needs a scheme (rtmp://, rtmps://, srt://)")?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => PushProtocol::Rtmp,
            "rtmps" => PushProtocol::Rtmps,
            "srt" => PushProtocol::Srt,
            _ => return Err("unsupported scheme: use rtmp://, rtmps:// or srt://".into()),
        };
        if rest.contains(['@', '?', '#', ' ']) {
            return Err("the URL must not contain credentials, a query, a fragment or spaces: \
                        put the stream key in stream_key"
                .into());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unterminated IPv6 address")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c)) {
            return Err("the URL needs a valid host".into());
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or("invalid port")?,
            None => match protocol {
                PushProtocol::Rtmp => 1935,
                PushProtocol::Rtmps => 443,
                PushProtocol::Srt => return Err("srt:// URLs need a port".into()),
            },
        };
        let app = path.trim_end_matches('/').to_string();
        if protocol != PushProtocol::Srt && app.is_empty() {
            return Err("rtmp:// and rtmps:// URLs need an application path (e.g. /live2)".into());
        }
        Ok(PushUrl { protocol, host: host.to_string(), port, app })
    }

    /// `host:port` for connecting, IPv6 in brackets.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL as stored and shown: no stream key in it.
    pub fn masked(&self) -> String {
        let app = if self.app.is_empty() { String::new() } else { format!("/{}", self.app) };
        format!("{}://{}{app}", self.protocol.label(), self.authority())
    }
}

impl fmt::Display for PushUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// One destination as the push tasks see it.
#[derive(Clone, PartialEq, Eq)]
pub struct Destination {
    pub id: i64,
    pub url: PushUrl,
    /// The owner's key at the destination. Never printed (no `Debug`).
    pub stream_key: String,
    pub enabled: bool,
}

/// Where a destination is, as the API and `/metrics` show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PushState {
    /// The channel is not live (or the destination is disabled).
    Idle,
    Connecting,
    Live,
    /// The last attempt failed; the next one starts after a backoff.
    Retrying,
    /// The destination refused us in a way a retry will not fix soon (still retried, slowly).
    Error,
}

impl PushState {
    fn label(self) -> Option<&'static str> {
        match self {
            PushState::Idle => None,
            PushState::Connecting => Some("connecting"),
            PushState::Live => Some("live"),
            PushState::Retrying => Some("retrying"),
            PushState::Error => Some("error"),
        }
    }
}

/// A destination's status snapshot for the API.
#[derive(Clone, Debug, Serialize)]
pub struct PushStatus {
    pub state: PushState,
    /// The last failure, without secrets.
    pub last_error: Option<String>,
    pub retries: u64,
    pub bytes: u64,
}

impl Default for PushStatus {
    fn default() -> Self {
        PushStatus { state: PushState::Idle, last_error: None, retries: 0, bytes: 0 }
    }
}

/// The live status of one push, kept in the metrics gauge too.
struct StatusCell {
    protocol: PushProtocol,
    inner: Mutex<PushStatus>,
}

impl StatusCell {
    fn set(&self, state: PushState) {
        let mut s = self.inner.lock().expect("status lock is never poisoned: no panics inside");
        let g = &metrics().push_destinations;
        if let Some(l) = s.state.label() {
            g.with_label_values(&[self.protocol.label(), l]).dec();
        }
        if let Some(l) = state.label() {
            g.with_label_values(&[self.protocol.label(), l]).inc();
        }
        s.state = state;
    }

    fn failed(&self, error: String) {
        let mut s = self.inner.lock().expect("status lock is never poisoned: no panics inside");
        s.retries += 1;
        s.last_error = Some(error);
        metrics().push_retries.with_label_values(&[self.protocol.label()]).inc();
    }

    fn wrote(&self, n: u64) {
        self.inner.lock().expect("status lock is never poisoned: no panics inside").bytes += n;
        metrics().push_bytes.with_label_values(&[self.protocol.label()]).inc_by(n);
    }

    fn snapshot(&self) -> PushStatus {
        self.inner.lock().expect("status lock is never poisoned: no panics inside").clone()
    }
}

/// Destinations of every channel and the status of every push: the one place the API writes
/// to and the channels' `restream` outputs read from.
#[derive(Clone, Default)]
pub struct Restream {
    inner: Arc<RestreamInner>,
}

#[derive(Default)]
struct RestreamInner {
    settings: RestreamSettings,
    lists: DashMap<String, watch::Sender<Arc<Vec<Destination>>>>,
    status: DashMap<i64, Arc<StatusCell>>,
}

impl Restream {
    pub fn new(settings: RestreamSettings) -> Self {
        Restream { inner: Arc::new(RestreamInner { settings, ..Default::default() }) }
    }

    /// Replace a channel's destination list (after an API change or on start-up); a live
    /// channel applies it at once.
    pub fn set_destinations(&self, channel: &str, list: Vec<Destination>) {
        let list = Arc::new(list);
        match self.inner.lists.get(channel) {
            Some(tx) => {
                // A deleted destination's status goes with it (its push is being cancelled).
                let old = tx.send_replace(list.clone());
                for gone in old.iter().filter(|o| !list.iter().any(|d| d.id == o.id)) {
                    self.inner.status.remove(&gone.id);
                }
            }
            None => {
                self.inner.lists.insert(channel.to_string(), watch::channel(list).0);
            }
        }
    }

    fn subscribe(&self, channel: &str) -> watch::Receiver<Arc<Vec<Destination>>> {
        self.inner
            .lists
            .entry(channel.to_string())
            .or_insert_with(|| watch::channel(Arc::new(Vec::new())).0)
            .subscribe()
    }

    /// The status of destination `id` (idle when it is not being pushed).
    pub fn status(&self, id: i64) -> PushStatus {
        self.inner.status.get(&id).map(|c| c.snapshot()).unwrap_or_default()
    }

    /// The channel's `restream` output for one live session: keeps one push per enabled
    /// destination running until `ring` closes.
    pub async fn run_channel(self, channel: String, ring: FrameRing) {
        let mut list = self.subscribe(&channel);
        let mut running: HashMap<i64, (Destination, CancellationToken)> = HashMap::new();
        let mut tasks = JoinSet::new();
        let closed = ring_closed(ring.clone());
        tokio::pin!(closed);
        loop {
            let wanted: Vec<Destination> =
                list.borrow_and_update().iter().filter(|d| d.enabled).cloned().collect();
            running.retain(|id, (d, cancel)| {
                let keep = wanted.iter().any(|w| w == d && w.id == *id);
                if !keep {
                    cancel.cancel();
                }
                keep
            });
            for d in wanted {
                if running.contains_key(&d.id) {
                    continue;
                }
                let cancel = CancellationToken::new();
                let cell = self.cell(&d);
                let span = info_span!("push", %channel, destination = d.id, url = %d.url);
                tasks.spawn(
                    push_loop(d.clone(), ring.clone(), self.inner.settings.clone(), cell, cancel.clone())
                        .instrument(span),
                );
                running.insert(d.id, (d, cancel));
            }
            tokio::select! {
                changed = list.changed() => if changed.is_err() { break },
                _ = &mut closed => break,
                Some(_) = tasks.join_next() => {}
            }
        }
        for (_, (_, cancel)) in running {
            cancel.cancel();
        }
        while tasks.join_next().await.is_some() {}
    }

    fn cell(&self, d: &Destination) -> Arc<StatusCell> {
        let cell =
            Arc::new(StatusCell { protocol: d.url.protocol, inner: Mutex::new(PushStatus::default()) });
        // Bytes and retries add up over the destination's life on this server.
        if let Some(old) = self.inner.status.get(&d.id) {
            let o = old.snapshot();
            let mut s = cell.inner.lock().expect("fresh lock");
            (s.bytes, s.retries, s.last_error) = (o.bytes, o.retries, o.last_error);
        }
        self.inner.status.insert(d.id, cell.clone());
        cell
    }
}

/// Resolves when the ring is closed (the live session ended). Polled rather than read: a
/// reader here would hold frames and count as a consumer for nothing.
async fn ring_closed(ring: FrameRing) {
    while !ring.is_closed() {
        tokio::time::sleep(CLOSE_POLL).await;
    }
}

/// What one connection attempt ended with.
pub(crate) enum PushEnd {
    /// The ring closed: the live session is over.
    SessionEnded,
    /// The destination was removed or disabled.
    Cancelled,
}

/// Keep one destination pushed: connect, push until failure, back off, repeat.
async fn push_loop(
    d: Destination,
    ring: FrameRing,
    settings: RestreamSettings,
    cell: Arc<StatusCell>,
    cancel: CancellationToken,
) {
    let mut delay = settings.retry_initial;
    info!("push starting");
    loop {
        cell.set(PushState::Connecting);
        let attempt = async {
            match d.url.protocol {
                PushProtocol::Rtmp | PushProtocol::Rtmps => rtmp::push(&d, &ring, &settings, &cell).await,
                PushProtocol::Srt => srt::push(&d, &ring, &settings, &cell).await,
            }
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = cancel.cancelled() => Ok(PushEnd::Cancelled),
        };
        match outcome {
            Ok(end) => {
                cell.set(PushState::Idle);
                match end {
                    PushEnd::SessionEnded => info!("push ended with the live session"),
                    PushEnd::Cancelled => info!("push stopped: destination changed"),
                }
                return;
            }
            Err(failure) => {
                if failure.was_live {
                    delay = settings.retry_initial;
                }
                let msg = failure.message.replace(&d.stream_key, "<stream key>");
                warn!(error = %msg, retry_in_ms = delay.as_millis() as u64, "push failed; retrying");
                cell.failed(msg);
                cell.set(if failure.refused { PushState::Error } else { PushState::Retrying });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = cancel.cancelled() => { cell.set(PushState::Idle); return }
        }
        if ring.is_closed() {
            cell.set(PushState::Idle);
            return;
        }
        delay = (delay * 2).min(settings.retry_max);
    }
}

/// A failed attempt, already without secrets.
pub(crate) struct PushFailure {
    pub message: String,
    /// The destination said no (rejected connect or publish), rather than being unreachable.
    pub refused: bool,
    /// The push had reached `live` before failing: the backoff starts over.
    pub was_live: bool,
}

impl PushFailure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        PushFailure { message: message.into(), refused: false, was_live: false }
    }
}

#[cfg(test)]
mod tests;
