//! RTMP listener: accept, admit, handshake and negotiate, then hand the connection to the RTMP
//! ingest adapter (`publish`) or the RTMP viewer adapter (`play`).
//!
//! One task per connection on the media runtime. The sans-IO `protocols::rtmp::RtmpServerConn`
//! does the protocol; this file does the socket, the handshake timeout and the connection limit
//! (connections over `rtmp.max_connections` get a polite `NetConnection.Connect.Rejected`,
//! at most `MAX_REJECTING` at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::actors::next_session_id;
use crate::actors::registry::ChannelRegistry;
use crate::actors::viewer::ViewerPolicy;
use crate::error::Error;
use crate::media::clock::Clock;
use crate::metrics::metrics;
use crate::protocols::rtmp::{ConnEvent, RtmpError, RtmpLimits, RtmpServerConn, Secret};

pub(crate) const PROTOCOL: &str = "rtmp";
/// The RTMP application name broadcasters use (`rtmp://HOST/live`).
pub const APP: &str = "live";
/// Socket read size during negotiation.
const READ_BUF: usize = 4096;
/// Connections over the limit still get a polite `NetConnection.Connect.Rejected`, but only this
/// many at once; beyond that they are closed right after accept.
const MAX_REJECTING: usize = 64;
const REJECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything a connection task needs.
pub struct RtmpContext {
    pub registry: Addr<ChannelRegistry>,
    pub limits: RtmpLimits,
    pub handshake_timeout: Duration,
    /// Lag, skip budget and write timeout of RTMP viewers.
    pub viewer: ViewerPolicy,
    /// SO_SNDBUF for viewer sockets; 0 keeps autotuning.
    pub viewer_send_buffer: usize,
    pub publish_idle_timeout: Duration,
    pub max_connections: usize,
    pub clock: Clock,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

/// Bind the RTMP listener (port 0 picks a free port) and log what was bound.
pub async fn bind(listen: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    info!(protocol = PROTOCOL, %addr, "listening");
    Ok((listener, addr))
}

/// Accept connections until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>) {
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
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let ctx2 = ctx.clone();
                ctx.tracker.spawn(
                    async move {
                        connection(stream, ctx2).await;
                        drop(permit);
                    }
                    // One span per connection; the adapters record the channel into it rather than
                    // nesting a second span that every poll of a viewer would enter too.
                    .instrument(info_span!(
                        "rtmp",
                        conn_id = id,
                        %peer,
                        role = tracing::field::Empty,
                        channel = tracing::field::Empty,
                        session = tracing::field::Empty
                    )),
                );
            }
            Err(_) => {
                metrics().connections_rejected.with_label_values(&[PROTOCOL]).inc();
                if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                    ctx.tracker.spawn(
                        async move {
                            let _ = tokio::time::timeout(REJECT_TIMEOUT, reject_full(stream)).await;
                            drop(permit);
                        }
                        .instrument(info_span!("rtmp", conn_id = id, %peer)),
                    );
                }
                info!(%peer, "connection limit reached; refusing");
            }
        }
    }
    info!("rtmp listener stopped");
}

/// Read, feed, answer: the common step of negotiation. Not used once media flows: the viewer
/// adapter never drops a write half-done, and this function's write would be (see
/// `viewer::rtmp`).
async fn pump(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    conn: &mut RtmpServerConn,
    buf: &mut [u8],
    events: &mut Vec<ConnEvent>,
) -> Result<bool, SessionEnd> {
    let n = rd.read(buf).await.map_err(SessionEnd::Io)?;
    if n == 0 {
        return Ok(false);
    }
    let mut out = Vec::new();
    conn.handle_input(&buf[..n], &mut out, events).map_err(SessionEnd::Protocol)?;
    if !out.is_empty() {
        wr.write_all(&out).await.map_err(SessionEnd::Io)?;
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
    pub(crate) fn log(&self) {
        match self {
            SessionEnd::Io(e) if is_hangup(e) => debug!(error = %e, "peer hung up"),
            SessionEnd::Io(e) => info!(error = %e, "connection error"),
            SessionEnd::Protocol(e) => {
                metrics().protocol_errors.with_label_values(&[PROTOCOL]).inc();
                if e.is_peer_fault() {
                    info!(reason = %e, "closing connection: malformed RTMP");
                } else {
                    warn!(reason = %e, "closing connection");
                }
            }
            SessionEnd::Timeout(what) => info!(what, "closing connection: timed out"),
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

async fn connection(stream: TcpStream, ctx: Arc<RtmpContext>) {
    let (mut rd, mut wr) = stream.into_split();
    let mut conn = RtmpServerConn::new(ctx.limits);
    let started = Instant::now();
    let role = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(ctx.handshake_timeout, negotiate(&mut rd, &mut wr, &mut conn)) => match r {
            Ok(Ok(Some(role))) => role,
            Ok(Ok(None)) => return debug!("peer closed before publish or play"),
            Ok(Err(end)) => return end.log(),
            Err(_) => return SessionEnd::Timeout("handshake").log(),
        },
    };
    let end = match role {
        Role::Publish { request_id, stream_key, rest } => {
            crate::actors::ingest::rtmp::run(&mut rd, &mut wr, &mut conn, &ctx, request_id, stream_key, rest)
                .await
        }
        Role::Play { request_id, name, stream_id } => {
            crate::actors::viewer::rtmp::run(
                &mut rd, &mut wr, &mut conn, &ctx, request_id, name, stream_id, started,
            )
            .await
        }
    };
    if let Err(end) = end {
        end.log();
    }
    let _ = wr.shutdown().await;
}

/// Handshake, connect, and wait for `publish` or `play`.
async fn negotiate(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    conn: &mut RtmpServerConn,
) -> Result<Option<Role>, SessionEnd> {
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::new();
    loop {
        if !pump(rd, wr, conn, &mut buf, &mut events).await? {
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
                        info!(app = %app, "unknown application; rejecting");
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
                    wr.write_all(&out).await.map_err(SessionEnd::Io)?;
                    return Ok(Some(Role::Publish { request_id, stream_key, rest }));
                }
                ConnEvent::PlayRequested { request_id, name, stream_id, .. } => {
                    wr.write_all(&out).await.map_err(SessionEnd::Io)?;
                    return Ok(Some(Role::Play { request_id, name, stream_id }));
                }
                _ => {}
            }
        }
        drop(drained);
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(SessionEnd::Io)?;
        }
    }
}

/// Refuse a request with the RTMP status for `err`, then end the session.
pub(crate) async fn refuse(
    wr: &mut OwnedWriteHalf,
    conn: &mut RtmpServerConn,
    request_id: u32,
    err: &Error,
) -> Result<(), SessionEnd> {
    let mut out = Vec::new();
    conn.reject(request_id, err.kind.rtmp_status(), &err.msg, &mut out).map_err(SessionEnd::Protocol)?;
    wr.write_all(&out).await.map_err(SessionEnd::Io)?;
    // Give the client a moment to read the status before the FIN (ffmpeg prints it).
    let _ = tokio::time::timeout(Duration::from_millis(200), wr.flush()).await;
    Ok(())
}

/// The server is at its connection limit: say so in RTMP terms and close.
async fn reject_full(stream: TcpStream) {
    let (mut rd, mut wr) = stream.into_split();
    let mut conn = RtmpServerConn::new(RtmpLimits {
        max_chunk_size: 4096,
        max_message_size: 64 * 1024,
        max_name_len: 256,
        out_chunk_size: 4096,
    });
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::new();
    while let Ok(true) = pump(&mut rd, &mut wr, &mut conn, &mut buf, &mut events).await {
        for ev in events.drain(..) {
            if let ConnEvent::ConnectRequested { request_id, .. } = ev {
                let mut out = Vec::new();
                if conn
                    .reject(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "server is at its connection limit",
                        &mut out,
                    )
                    .is_ok()
                {
                    let _ = wr.write_all(&out).await;
                }
                return;
            }
        }
    }
}
