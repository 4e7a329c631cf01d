//! RTMP listener: accept, admit, handshake and negotiate, then hand the connection to the RTMP
//! ingest adapter (`publish`) or the RTMP viewer adapter (`play`).
//!
//! One task per connection on the media runtime. The sans-IO `protocols::rtmp::RtmpServerConn`
//! does the protocol; this file does the socket, the handshake timeout and the connection limits
//! (connections over `rtmp.max_connections_per_address` or `rtmp.max_connections` get a polite
//! `NetConnection.Connect.Rejected`, at most `MAX_REJECTING` at once).
//!
//! Until a publish is accepted a connection may send messages of at most
//! `NEGOTIATION_MAX_MESSAGE`: commands are small, and rml_rtmp reserves a message's whole
//! declared length when its first chunk arrives, so unauthenticated peers declaring
//! `rtmp.max_message_size` each could otherwise hold megabytes apiece (measured: 40 of them took
//! the server from 31 to 324 MiB, and glibc kept most of it after they left).
//!
//! RTMPS (`rtmp.tls_listen`) is this same listener with a `TlsAcceptor`: admission happens at
//! accept as for RTMP (the per-address limit is shared by both listeners), the TLS handshake
//! then runs inside the connection's task under `rtmp.handshake_timeout`, and everything after
//! it is the code below, generic over the connection's [`Transport`]. Metrics and logs say
//! `protocol="rtmps"` for those connections.
//!
//! Client mistakes (malformed input, timeouts, refusals) are logged at INFO through a
//! [`LogBudget`] per kind, so a flood of them costs a few lines a minute; `/metrics` counts each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::actors::listen::transport::{send, Transport};
use crate::actors::next_session_id;
use crate::actors::registry::ChannelRegistry;
use crate::actors::viewer::ViewerPolicy;
use crate::admission::PerAddressLimit;
use crate::error::Error;
use crate::logging::LogBudget;
use crate::media::clock::Clock;
use crate::metrics::{metrics, REJECT_MAX_CONNECTIONS, REJECT_PER_ADDRESS};
use crate::protocols::rtmp::{ConnEvent, RtmpError, RtmpLimits, RtmpServerConn, Secret};

/// The `protocol` label of plain RTMP connections.
pub const PROTOCOL: &str = "rtmp";
/// The `protocol` label of RTMP-in-TLS connections.
pub const PROTOCOL_TLS: &str = "rtmps";
/// The RTMP application name broadcasters use (`rtmp://HOST/live`).
pub const APP: &str = "live";
/// Socket read size during negotiation.
const READ_BUF: usize = 4096;
/// Connections over the limit still get a polite `NetConnection.Connect.Rejected`, but only this
/// many at once; beyond that they are closed right after accept.
const MAX_REJECTING: usize = 64;
const REJECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest message accepted before a publish is accepted (and for the whole life of a player):
/// a `connect` from OBS or ffmpeg is well under 1 KiB.
pub(crate) const NEGOTIATION_MAX_MESSAGE: usize = 64 * 1024;

/// Log budgets of the connection-level client mistakes: at most this many lines per minute of
/// each kind (the next line logged says how many were suppressed).
const LINES_PER_MINUTE: u32 = 10;
static REFUSALS: LogBudget = LogBudget::new(LINES_PER_MINUTE, Duration::from_secs(60));
static MALFORMED: LogBudget = LogBudget::new(LINES_PER_MINUTE, Duration::from_secs(60));
static TIMEOUTS: LogBudget = LogBudget::new(LINES_PER_MINUTE, Duration::from_secs(60));
static IO_ERRORS: LogBudget = LogBudget::new(LINES_PER_MINUTE, Duration::from_secs(60));

/// Everything a connection task needs.
#[derive(Clone)]
pub struct RtmpContext {
    /// `PROTOCOL` or `PROTOCOL_TLS`: the label of this listener's metrics and logs.
    pub protocol: &'static str,
    pub registry: Addr<ChannelRegistry>,
    pub limits: RtmpLimits,
    pub handshake_timeout: Duration,
    /// Lag, skip budget and write timeout of RTMP viewers.
    pub viewer: ViewerPolicy,
    /// SO_SNDBUF for viewer sockets; 0 keeps autotuning.
    pub viewer_send_buffer: usize,
    pub publish_idle_timeout: Duration,
    pub max_connections: usize,
    /// `rtmp.max_connections_per_address` and its exempt networks.
    pub per_address: Arc<PerAddressLimit>,
    pub clock: Clock,
    /// On-demand pulled sources: an RTMP viewer starts and holds them.
    pub pulls: crate::actors::pull::Pulls,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    /// The channel writers of plain-RTMP viewers (`rtmp.viewer_fanout`); `None` when off.
    pub fanouts: Option<Arc<crate::actors::viewer::rtmp::Fanouts>>,
}

/// Bind an RTMP listener (port 0 picks a free port) and log what was bound under `protocol`.
pub async fn bind(listen: &str, protocol: &'static str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    info!(protocol, %addr, "listening");
    Ok((listener, addr))
}

/// Accept connections until shutdown; with `tls`, each connection is a TLS handshake first
/// (RTMPS).
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, tls: Option<TlsAcceptor>) {
    let slots = Arc::new(Semaphore::new(ctx.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    loop {
        let (stream, peer) = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let id = next_session_id();
        let address_slot = match ctx.per_address.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(_) => {
                let why = (REJECT_PER_ADDRESS, "too many connections from your address");
                refuse_connection(&ctx, &tls, &rejecting, stream, peer, id, why);
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let why = (REJECT_MAX_CONNECTIONS, "server is at its connection limit");
            refuse_connection(&ctx, &tls, &rejecting, stream, peer, id, why);
            continue;
        };
        let ctx2 = ctx.clone();
        let tls = tls.clone();
        ctx.tracker.spawn(
            async move {
                // Each step is boxed: a connection's task then holds only the step it is in,
                // sized for its own transport, instead of the largest of all of them (the TLS
                // handshake, negotiation, a publisher's loop) for every plain viewer it serves.
                match tls {
                    None => Box::pin(connection(stream, ctx2)).await,
                    Some(acceptor) => {
                        if let Some(stream) = Box::pin(tls_handshake(&acceptor, stream, &ctx2)).await {
                            Box::pin(connection(stream, ctx2)).await;
                        }
                    }
                }
                drop((permit, address_slot));
            }
            // One span per connection; the adapters record the channel into it rather than
            // nesting a second span that every poll of a viewer would enter too.
            .instrument(info_span!(
                "rtmp",
                conn_id = id,
                %peer,
                protocol = ctx.protocol,
                role = tracing::field::Empty,
                channel = tracing::field::Empty,
                session = tracing::field::Empty
            )),
        );
    }
    info!(protocol = ctx.protocol, "listener stopped");
}

/// The TLS handshake of an RTMPS connection, within the handshake timeout; `None` (logged)
/// if it fails.
async fn tls_handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    ctx: &RtmpContext,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accepted = tokio::select! {
        _ = ctx.shutdown.cancelled() => return None,
        r = tokio::time::timeout(ctx.handshake_timeout, acceptor.accept(stream)) => r,
    };
    match accepted {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            // A client that does not trust the certificate, or speaks plain RTMP to the TLS port.
            metrics().protocol_errors.with_label_values(&[ctx.protocol]).inc();
            if let Some(suppressed) = MALFORMED.admit() {
                info!(error = %e, suppressed, "closing connection: TLS handshake failed");
            }
            None
        }
        Err(_) => {
            SessionEnd::Timeout("TLS handshake").log(ctx.protocol);
            None
        }
    }
}

/// Count and log a connection refused for `reason` (a `connections_rejected` label), and tell
/// the client `description` politely if fewer than `MAX_REJECTING` refusals are under way.
fn refuse_connection(
    ctx: &RtmpContext,
    tls: &Option<TlsAcceptor>,
    rejecting: &Arc<Semaphore>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    (reason, description): (&'static str, &'static str),
) {
    metrics().connections_rejected.with_label_values(&[ctx.protocol, reason]).inc();
    if let Ok(permit) = rejecting.clone().try_acquire_owned() {
        let tls = tls.clone();
        ctx.tracker.spawn(
            async move {
                let polite = async move {
                    match tls {
                        None => reject_full(stream, description).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                reject_full(stream, description).await;
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(REJECT_TIMEOUT, polite).await;
                drop(permit);
            }
            .instrument(info_span!("rtmp", conn_id = id, %peer)),
        );
    }
    if let Some(suppressed) = REFUSALS.admit() {
        info!(%peer, reason, suppressed, "connection limit reached; refusing");
    }
}

/// Read, feed, answer: the common step of negotiation. Not used once media flows: the viewer
/// adapter never drops a write half-done, and this function's write would be (see
/// `viewer::rtmp`).
async fn pump<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    buf: &mut [u8],
    events: &mut Vec<ConnEvent>,
) -> Result<bool, SessionEnd> {
    let n = io.read(buf).await.map_err(SessionEnd::Io)?;
    if n == 0 {
        return Ok(false);
    }
    let mut out = Vec::new();
    conn.handle_input(&buf[..n], &mut out, events).map_err(SessionEnd::Protocol)?;
    if !out.is_empty() {
        send(io, &out).await.map_err(SessionEnd::Io)?;
    }
    Ok(true)
}

/// Why a connection ended, for one log line at the right level.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    Io(std::io::Error),
    Protocol(RtmpError),
    Timeout(&'static str),
}

impl SessionEnd {
    /// Log the end; `protocol` labels the protocol-error counter.
    pub(crate) fn log(&self, protocol: &str) {
        match self {
            SessionEnd::Io(e) if is_hangup(e) => debug!(error = %e, "peer hung up"),
            SessionEnd::Io(e) => {
                if let Some(suppressed) = IO_ERRORS.admit() {
                    info!(error = %e, suppressed, "connection error");
                }
            }
            SessionEnd::Protocol(e) => {
                metrics().protocol_errors.with_label_values(&[protocol]).inc();
                if !e.is_peer_fault() {
                    warn!(reason = %e, "closing connection");
                } else if let Some(suppressed) = MALFORMED.admit() {
                    info!(reason = %e, suppressed, "closing connection: malformed RTMP");
                }
            }
            SessionEnd::Timeout(what) => {
                if let Some(suppressed) = TIMEOUTS.admit() {
                    info!(what, suppressed, "closing connection: timed out");
                }
            }
        }
    }
}

fn is_hangup(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(e.kind(), K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof | K::ConnectionAborted)
}

/// What the connection turned out to be.
enum Role {
    Publish { request_id: u32, stream_key: Secret, rest: Vec<ConnEvent> },
    Play { request_id: u32, name: String, stream_id: u32 },
}

async fn connection<T: Transport>(mut io: T, ctx: Arc<RtmpContext>) {
    let protocol = ctx.protocol;
    let mut conn = RtmpServerConn::new(ctx.limits);
    conn.set_max_declared_length(NEGOTIATION_MAX_MESSAGE.min(ctx.limits.max_message_size));
    let started = Instant::now();
    let role = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(ctx.handshake_timeout, Box::pin(negotiate(&mut io, &mut conn))) => match r {
            Ok(Ok(Some(role))) => role,
            Ok(Ok(None)) => return debug!("peer closed before publish or play"),
            Ok(Err(end)) => return end.log(protocol),
            Err(_) => return SessionEnd::Timeout("handshake").log(protocol),
        },
    };
    let end = match role {
        Role::Publish { request_id, stream_key, rest } => {
            // Nothing is read between here and the publish being accepted or refused, so the
            // full limit applies exactly to an accepted publisher's media.
            conn.set_max_declared_length(ctx.limits.max_message_size);
            Box::pin(crate::actors::ingest::rtmp::run(&mut io, &mut conn, &ctx, request_id, stream_key, rest))
                .await
        }
        Role::Play { request_id, name, stream_id } => {
            Box::pin(crate::actors::viewer::rtmp::run(
                &mut io, &mut conn, &ctx, request_id, name, stream_id, started,
            ))
            .await
        }
    };
    if let Err(end) = end {
        end.log(protocol);
    }
    let _ = io.shutdown().await;
}

/// Handshake, connect, and wait for `publish` or `play`.
async fn negotiate<T: Transport>(io: &mut T, conn: &mut RtmpServerConn) -> Result<Option<Role>, SessionEnd> {
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::new();
    loop {
        if !pump(io, conn, &mut buf, &mut events).await? {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut drained = events.drain(..);
        while let Some(ev) = drained.next() {
            match ev {
                ConnEvent::ConnectRequested { request_id, app } => {
                    if app == APP {
                        conn.accept(request_id, &mut out).map_err(SessionEnd::Protocol)?;
                    } else {
                        if let Some(suppressed) = MALFORMED.admit() {
                            info!(app = %app, suppressed, "unknown application; rejecting");
                        }
                        conn.reject(
                            request_id,
                            "NetConnection.Connect.Rejected",
                            "unknown application",
                            &mut out,
                        )
                        .map_err(SessionEnd::Protocol)?;
                    }
                }
                ConnEvent::PublishRequested { request_id, stream_key, .. } => {
                    let rest = drained.collect();
                    send(io, &out).await.map_err(SessionEnd::Io)?;
                    return Ok(Some(Role::Publish { request_id, stream_key, rest }));
                }
                ConnEvent::PlayRequested { request_id, name, stream_id, .. } => {
                    send(io, &out).await.map_err(SessionEnd::Io)?;
                    return Ok(Some(Role::Play { request_id, name, stream_id }));
                }
                _ => {}
            }
        }
        drop(drained);
        if !out.is_empty() {
            send(io, &out).await.map_err(SessionEnd::Io)?;
        }
    }
}

/// Refuse a request with the RTMP status for `err`, then end the session.
pub(crate) async fn refuse<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    request_id: u32,
    err: &Error,
) -> Result<(), SessionEnd> {
    let mut out = Vec::new();
    conn.reject(request_id, err.kind.rtmp_status(), &err.msg, &mut out).map_err(SessionEnd::Protocol)?;
    send(io, &out).await.map_err(SessionEnd::Io)?;
    // Give the client a moment to read the status before the FIN (ffmpeg prints it).
    let _ = tokio::time::timeout(Duration::from_millis(200), io.flush()).await;
    Ok(())
}

/// The server's or the client address's connection limit is reached: say so (`description`) in
/// RTMP terms and close.
async fn reject_full<T: Transport>(mut io: T, description: &str) {
    let mut conn = RtmpServerConn::new(RtmpLimits {
        max_chunk_size: 4096,
        max_message_size: NEGOTIATION_MAX_MESSAGE,
        max_name_len: 256,
        out_chunk_size: 4096,
    });
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::new();
    while let Ok(true) = pump(&mut io, &mut conn, &mut buf, &mut events).await {
        for ev in events.drain(..) {
            if let ConnEvent::ConnectRequested { request_id, .. } = ev {
                let mut out = Vec::new();
                if conn.reject(request_id, "NetConnection.Connect.Rejected", description, &mut out).is_ok() {
                    let _ = send(&mut io, &out).await;
                }
                return;
            }
        }
    }
}
