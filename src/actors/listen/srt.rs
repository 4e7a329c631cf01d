//! SRT listener: binds `[srt] listen` (UDP), asks about each caller's stream id before the
//! handshake completes (srt-tokio's `ConnectionRequest`), and hands an accepted publisher to
//! the SRT ingest adapter (`ingest/srt.rs`).
//!
//! Refusals happen at the handshake with an SRT server reject code (Haivision SRT
//! `AccessControl.md`, "Rejection codes"): a malformed stream id is `BadRequest` (2400), a
//! wrong key `Unauthorized` (2401, counted in `tidecast_auth_failures_total{protocol="srt"}` by
//! `IngestSession::start`), a channel already being published `Conflict` (2409), anything else
//! `Down` (2503). Play (`m=request`, `read:`) of a missing channel is `Notfound` (2404), of a
//! non-public one `Forbidden` (2403): playback tokens are not checked yet.
//!
//! Random bytes to the port never reach us: srt-tokio drops what is not an SRT handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures_util::StreamExt;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::{ConnectionRequest, SocketStatistics, SrtIncoming, SrtListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, Instrument};

use crate::actors::ingest::IngestSession;
use crate::actors::registry::ChannelRegistry;
use crate::actors::viewer::{ViewerPolicy, ViewerSession};
use crate::error::ErrorKind;
use crate::media::clock::Clock;
use crate::metrics::{metrics, REJECT_MAX_CONNECTIONS};
use crate::protocols::rtmp::Secret;
use crate::protocols::srt::streamid::{self, StreamId};

pub(crate) const PROTOCOL: &str = "srt";

/// What every SRT connection task needs.
pub struct SrtContext {
    pub registry: Addr<ChannelRegistry>,
    /// Who may play a channel over SRT (public, or a playback token in the stream id).
    pub access: Arc<dyn crate::auth::PlayAccess>,
    /// A publisher that sends nothing for this long is dropped.
    pub publish_idle_timeout: Duration,
    /// SRT connections at once (`srt.max_connections`); past it, callers are refused.
    pub max_connections: usize,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// Lag policy and write timeout of SRT viewers (the RTMP viewer settings).
    pub viewer: ViewerPolicy,
    pub clock: Clock,
    /// On-demand pulled sources: an SRT player starts and holds them.
    pub pulls: crate::actors::pull::Pulls,
}

/// Binds the UDP socket (port 0 picks a free one) and starts srt-tokio's listener on it.
pub async fn bind(
    config: &crate::config::SrtConfig,
) -> std::io::Result<(SrtListener, SrtIncoming, SocketAddr)> {
    let udp = tokio::net::UdpSocket::bind(config.listen.as_str()).await?;
    let addr = udp.local_addr()?;
    // One UDP socket carries every SRT connection: at 50 publishers of 3 Mb/s the kernel's
    // default 208 KiB receive buffer was about 10 ms of input and overflowed.
    super::size_udp_buffers(&udp, config.udp_buffer.as_usize(), "srt.udp_buffer");
    let drop_too_late = config.drop_too_late;
    let mut builder = SrtListener::builder()
        .latency(config.latency)
        .set(|o| o.receiver.too_late_packet_drop = drop_too_late);
    if !config.passphrase.is_empty() {
        // Validated: 10-79 characters, key length 16/24/32 (srt-tokio panics on others). The
        // handshake then refuses a caller without the passphrase or with another one.
        builder = builder.encryption(config.pbkeylen, config.passphrase.clone());
    }
    let (listener, incoming) = builder.socket(udp).bind(addr.to_string().as_str()).await?;
    info!(protocol = PROTOCOL, %addr, encrypted = !config.passphrase.is_empty(), "listening");
    Ok((listener, incoming, addr))
}

/// Answers connection requests until shutdown. The listener is kept alive here: dropping it
/// stops srt-tokio's receive task.
pub async fn serve(listener: SrtListener, mut incoming: SrtIncoming, ctx: Arc<SrtContext>) {
    let _listener = listener;
    let slots = Arc::new(Semaphore::new(ctx.max_connections));
    let rejected = metrics().connections_rejected.with_label_values(&[PROTOCOL, REJECT_MAX_CONNECTIONS]);
    loop {
        let request = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = incoming.incoming().next() => match r {
                Some(r) => r,
                None => return,
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Refused before anything else is looked at: a flood of callers costs one answer each.
            rejected.inc();
            debug!(peer = %request.remote(), "srt connection limit reached");
            ctx.tracker.spawn(reject(request, ServerRejectReason::Overload));
            continue;
        };
        let ctx = ctx.clone();
        let span = info_span!("srt", peer = %request.remote(), channel = tracing::field::Empty, session = tracing::field::Empty);
        ctx.tracker.clone().spawn(
            async move {
                connection(request, &ctx).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// One SRT live-mode payload: seven transport packets (1316 bytes, what every receiver takes).
pub(crate) const SRT_PAYLOAD: usize = 7 * crate::protocols::ts::PACKET_SIZE;
/// Pacing of what is handed to srt-tokio. A sender's first batch is the ring's whole GOP at once;
/// fed in one burst, srt-tokio 0.4.4's sender sent one packet, then held the rest past its drop
/// window (`tidecast_srt_packets_dropped_total{direction="out"}` counted hundreds) and the
/// receiver got nothing (seen for most second SRT players, and some first ones). Fed at one
/// payload per millisecond during the connection's first `PACE_START`, every player started;
/// after that (srt-tokio's sender has measured its input rate by then) up to
/// `PACE_PACKETS_PER_MS`.
const PACE_START: Duration = Duration::from_secs(2);
/// Payloads per millisecond after `PACE_START` (about 84 Mb/s).
const PACE_PACKETS_PER_MS: usize = 8;

/// Hand `buf` (whole TS packets) to srt-tokio as live-mode payloads, paced (see `PACE_START`),
/// and flush; `connected` is when the connection was made. Returns the bytes sent. Used by SRT
/// play and the SRT restream push.
pub(crate) async fn send_paced(
    socket: &mut srt_tokio::SrtSocket,
    buf: &[u8],
    connected: std::time::Instant,
) -> std::io::Result<u64> {
    use futures_util::SinkExt;
    let per_ms = if connected.elapsed() < PACE_START { 1 } else { PACE_PACKETS_PER_MS };
    let mut in_tick = 0;
    for chunk in buf.chunks(SRT_PAYLOAD) {
        socket.feed((std::time::Instant::now(), bytes::Bytes::copy_from_slice(chunk))).await?;
        in_tick += 1;
        if in_tick >= per_ms {
            tokio::time::sleep(Duration::from_millis(1)).await;
            in_tick = 0;
        }
    }
    socket.flush().await?;
    Ok(buf.len() as u64)
}

/// Folds one connection's SRT statistics (srt-tokio publishes a cumulative snapshot every
/// second) into the process-wide packet counters, by direction and without per-session labels.
pub(crate) struct SrtStats {
    inbound: bool,
    last: SocketStatistics,
}

impl SrtStats {
    /// `inbound`: we receive the media (a publisher); otherwise we send it (a player).
    pub(crate) fn new(inbound: bool) -> Self {
        SrtStats { inbound, last: SocketStatistics::default() }
    }

    pub(crate) fn update(&mut self, now: &SocketStatistics) {
        let m = metrics();
        let (label, pick): (&str, fn(&SocketStatistics) -> [u64; 3]) = if self.inbound {
            ("in", |s| [s.rx_retransmit_data, s.rx_loss_data, s.rx_dropped_data])
        } else {
            ("out", |s| [s.tx_retransmit_data, s.tx_loss_data, s.tx_dropped_data])
        };
        let (new, old) = (pick(now), pick(&self.last));
        m.srt_retransmitted.with_label_values(&[label]).inc_by(new[0].saturating_sub(old[0]));
        m.srt_lost.with_label_values(&[label]).inc_by(new[1].saturating_sub(old[1]));
        m.srt_dropped.with_label_values(&[label]).inc_by(new[2].saturating_sub(old[2]));
        self.last = now.clone();
    }
}

async fn reject(request: ConnectionRequest, reason: ServerRejectReason) {
    debug!(?reason, "srt connection refused");
    if let Err(e) = request.reject(RejectReason::Server(reason)).await {
        debug!(error = %e, "srt reject not sent");
    }
}

async fn connection(request: ConnectionRequest, ctx: &SrtContext) {
    let id = request.stream_id().map(|s| s.to_string()).unwrap_or_default();
    let key = match streamid::parse(&id) {
        Ok(StreamId::Publish { key }) => key,
        Ok(StreamId::Request { channel, token }) => return play(request, ctx, channel, token).await,
        Err(e) => {
            info!(reason = %e, "srt stream id refused");
            return reject(request, ServerRejectReason::BadRequest).await;
        }
    };
    let session = match IngestSession::start(&ctx.registry, PROTOCOL, Secret(key), &ctx.shutdown).await {
        Ok(s) => s,
        Err(e) => {
            info!(reason = %e.msg, "publish refused");
            let code = match e.kind {
                ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => ServerRejectReason::Unauthorized,
                ErrorKind::AlreadyExists => ServerRejectReason::Conflict,
                ErrorKind::ResourceExhausted => ServerRejectReason::Overload,
                _ => ServerRejectReason::Down,
            };
            return reject(request, code).await;
        }
    };
    let span = tracing::Span::current();
    span.record("channel", session.channel_name());
    span.record("session", session.session_id());
    let socket = match request.accept(None).await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "srt accept failed");
            return;
        }
    };
    crate::actors::ingest::srt::run(socket, session, ctx.publish_idle_timeout).await;
}

/// SRT play: check who may play (public, or a playback token in the stream id, as LL-HLS),
/// attach a ring reader, accept. Refusals are SRT reject codes in the handshake.
async fn play(request: ConnectionRequest, ctx: &SrtContext, channel: String, token: Option<String>) {
    let started = crate::actors::viewer::srt::started();
    tracing::Span::current().record("channel", channel.as_str());
    let reader = match ctx.access.authorize(&channel, token.as_deref()).await {
        Ok(()) => crate::actors::viewer::attach(&ctx.registry, &ctx.pulls, &channel, true).await,
        Err(e) => {
            // A refused token, or none for a channel that needs one; an unknown channel is not
            // an authentication failure.
            if token.is_some() || e.kind == ErrorKind::PermissionDenied {
                metrics().auth_failures.with_label_values(&[PROTOCOL]).inc();
            }
            Err(e)
        }
    };
    // `_demand` keeps an on-demand pulled source running while this player plays.
    let (reader, _demand) = match reader {
        Ok(r) => r,
        Err(e) => {
            info!(reason = %e.msg, "play refused");
            let code = match e.kind {
                ErrorKind::NotFound => ServerRejectReason::Notfound,
                ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => ServerRejectReason::Forbidden,
                _ => ServerRejectReason::Down,
            };
            return reject(request, code).await;
        }
    };
    let socket = match request.accept(None).await {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "srt accept failed");
            return;
        }
    };
    let session = ViewerSession::new(&channel, PROTOCOL, "srt_play", reader, ctx.viewer, ctx.clock, started);
    crate::actors::viewer::srt::play(socket, session, ctx.shutdown.clone()).await;
}
