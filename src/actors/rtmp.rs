//! RTMP listener and connection sessions: `IngestSession` (publish) and `ViewerSession` (play).
//!
//! One task per connection on the media runtime. The sans-IO `protocols::rtmp::RtmpServerConn`
//! does the protocol; this file does sockets, timeouts, authorization through the
//! `ChannelRegistry`, and moving frames between the socket and the channel's `FrameRing`.
//!
//! Backpressure (ARCHITECTURE.md): the ingest loop never awaits a consumer: `RingWriter::push`
//! is synchronous. A viewer writes batches of pre-serialized, shared chunk buffers with one
//! vectored write per batch under `write_timeout`; a viewer further behind live than
//! `viewer_max_lag` skips to the newest key frame (counted), one that skips more than
//! `viewer_max_skips` times a minute, or whose socket accepts nothing for `write_timeout`, is
//! cut off (counted).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use bytes::{Buf, Bytes};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::channel::{AddPublisher, AddReader, Channel, PublisherLeft};
use super::next_session_id;
use super::registry::{AuthorizePublish, ChannelRegistry, ResolvePlay};
use crate::error::{Error, ErrorKind};
use crate::media::codec::Tracks;
use crate::media::frame::{Frame, TrackKind};
use crate::media::ring::RingReader;
use crate::media::time::MediaTime;
use crate::metrics::metrics;
use crate::protocols::flv::{self, AudioTag, VideoTag};
use crate::protocols::rtmp::{
    media_chunks, ConnEvent, RtmpError, RtmpLimits, RtmpServerConn, Secret, MSG_AUDIO, MSG_VIDEO,
    SHARED_STREAM_ID,
};

const PROTOCOL: &str = "rtmp";
/// The RTMP application name broadcasters use (`rtmp://HOST/live`).
pub const APP: &str = "live";
/// Socket read size. Small on purpose: viewers send almost nothing, and a 500-viewer server
/// should not hold megabytes of idle read buffers.
const READ_BUF: usize = 4096;
/// Publishers send megabits per second; a bigger buffer means fewer syscalls.
const PUBLISH_READ_BUF: usize = 64 * 1024;
/// Frames handed to one vectored write.
const WRITE_BATCH: usize = 64;
/// Connections over the limit still get a polite `NetConnection.Connect.Rejected`, but only this
/// many at once; beyond that they are closed right after accept.
const MAX_REJECTING: usize = 64;
const REJECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Window over which a viewer's key-frame skips are counted.
const SKIP_WINDOW: Duration = Duration::from_secs(60);

/// Everything a connection task needs.
pub struct RtmpContext {
    pub registry: Addr<ChannelRegistry>,
    pub limits: RtmpLimits,
    pub handshake_timeout: Duration,
    pub write_timeout: Duration,
    pub viewer_max_lag: Duration,
    pub viewer_max_skips: u32,
    /// SO_SNDBUF for viewer sockets; 0 keeps autotuning.
    pub viewer_send_buffer: usize,
    pub publish_idle_timeout: Duration,
    pub max_connections: usize,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
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
                    .instrument(info_span!("rtmp", conn_id = id, %peer)),
                );
            }
            Err(_) => {
                metrics().connections_rejected.with_label_values(&[PROTOCOL]).inc();
                if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                    let ctx2 = ctx.clone();
                    ctx.tracker.spawn(
                        async move {
                            let _ = tokio::time::timeout(REJECT_TIMEOUT, reject_full(stream, ctx2)).await;
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

/// Read, feed, answer: the common step of every phase.
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

/// Why a session ended, for one log line at the right level.
#[derive(Debug)]
enum SessionEnd {
    Io(std::io::Error),
    Protocol(RtmpError),
    Timeout(&'static str),
}

impl SessionEnd {
    fn log(&self) {
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
            publish(&mut rd, &mut wr, &mut conn, &ctx, request_id, stream_key, rest).await
        }
        Role::Play { request_id, name, stream_id } => {
            play(&mut rd, &mut wr, &mut conn, &ctx, request_id, name, stream_id, started).await
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
async fn refuse(
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
async fn reject_full(stream: TcpStream, _ctx: Arc<RtmpContext>) {
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

/// Extends RTMP's 32-bit millisecond timestamps (they wrap after 49.7 days) to 64 bits.
#[derive(Default)]
struct TimestampUnwrapper {
    last: Option<u32>,
    epoch: i64,
}

impl TimestampUnwrapper {
    fn unwrap(&mut self, ts: RtmpTimestamp) -> i64 {
        let v = ts.value;
        if let Some(last) = self.last {
            if v < last && last - v > 1 << 31 {
                self.epoch += 1 << 32;
            }
        }
        self.last = Some(v);
        self.epoch + v as i64
    }
}

/// Decrements a gauge when dropped, so every exit path is counted.
struct GaugeGuard(prometheus::IntGauge);

impl GaugeGuard {
    fn new(g: prometheus::IntGauge) -> Self {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The ingest side: FLV tags in, frames into the ring.
struct Ingest {
    writer: crate::media::ring::RingWriter,
    tracks: Tracks,
    shared_tracks: Arc<Tracks>,
    clock: TimestampUnwrapper,
}

impl Ingest {
    fn on_video(&mut self, data: Bytes, ts: RtmpTimestamp) -> Result<(), SessionEnd> {
        let dts = self.clock.unwrap(ts);
        match flv::parse_video_tag(data).map_err(|e| SessionEnd::Protocol(RtmpError::Media(e.to_string())))? {
            VideoTag::SequenceHeader(cfg) => {
                info!(codec = %cfg.codec_string, width = cfg.width, height = cfg.height, "video configuration");
                self.tracks.video = Some(cfg);
                self.shared_tracks = self.writer.set_tracks(self.tracks.clone());
            }
            VideoTag::Frame { keyframe, cts_ms, data, .. } => {
                if self.tracks.video.is_none() {
                    debug!("video frame before its sequence header; dropped");
                    return Ok(());
                }
                let dts = MediaTime::from_millis(dts);
                let pts = MediaTime::from_millis(dts.ticks + cts_ms as i64);
                self.writer.push(Frame::new(
                    TrackKind::Video,
                    dts,
                    pts,
                    keyframe,
                    data,
                    self.shared_tracks.clone(),
                ));
            }
            VideoTag::EndOfSequence | VideoTag::Ignored => {}
        }
        Ok(())
    }

    fn on_audio(&mut self, data: Bytes, ts: RtmpTimestamp) -> Result<(), SessionEnd> {
        let dts = self.clock.unwrap(ts);
        match flv::parse_audio_tag(data).map_err(|e| SessionEnd::Protocol(RtmpError::Media(e.to_string())))? {
            AudioTag::SequenceHeader(cfg) => {
                info!(codec = %cfg.codec_string, sample_rate = cfg.sample_rate, channels = cfg.channels, "audio configuration");
                self.tracks.audio = Some(cfg);
                self.shared_tracks = self.writer.set_tracks(self.tracks.clone());
            }
            AudioTag::Frame { data, .. } => {
                if self.tracks.audio.is_none() {
                    return Ok(());
                }
                let t = MediaTime::from_millis(dts);
                self.writer.push(Frame::new(TrackKind::Audio, t, t, false, data, self.shared_tracks.clone()));
            }
            AudioTag::Ignored => {}
        }
        Ok(())
    }
}

async fn publish(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    request_id: u32,
    stream_key: Secret,
    rest: Vec<ConnEvent>,
) -> Result<(), SessionEnd> {
    let session_id = next_session_id();
    let authorized =
        ctx.registry.send(AuthorizePublish { stream_key }).await.map_err(Error::from).and_then(|r| r);
    let (record, channel) = match authorized {
        Ok(x) => x,
        Err(e) => {
            if e.kind == ErrorKind::Unauthenticated {
                metrics().auth_failures.with_label_values(&[PROTOCOL]).inc();
            }
            info!(reason = %e.msg, "publish refused");
            return refuse(wr, conn, request_id, &e).await;
        }
    };
    let span = info_span!("publish", channel = %record.name, session = session_id);
    async move {
        let cancel = ctx.shutdown.child_token();
        let grant = channel
            .send(AddPublisher { session_id, cancel: cancel.clone(), visibility: record.visibility })
            .await
            .map_err(Error::from)
            .and_then(|r| r);
        let grant = match grant {
            Ok(g) => g,
            Err(e) => {
                info!(reason = %e.msg, "publish refused");
                return refuse(wr, conn, request_id, &e).await;
            }
        };
        let result = ingest_loop(rd, wr, conn, ctx, request_id, grant.writer, &cancel, rest, &channel).await;
        channel.do_send(PublisherLeft { session_id });
        result
    }
    .instrument(span)
    .await
}

#[allow(clippy::too_many_arguments)]
async fn ingest_loop(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    request_id: u32,
    writer: crate::media::ring::RingWriter,
    cancel: &CancellationToken,
    rest: Vec<ConnEvent>,
    channel: &Addr<Channel>,
) -> Result<(), SessionEnd> {
    let mut out = Vec::new();
    conn.accept(request_id, &mut out).map_err(SessionEnd::Protocol)?;
    wr.write_all(&out).await.map_err(SessionEnd::Io)?;
    info!("publishing");
    let _live = GaugeGuard::new(metrics().ingest_sessions.with_label_values(&[PROTOCOL]));
    let bytes_in = metrics().ingest_bytes.with_label_values(&[PROTOCOL]);
    let shared_tracks = writer.tracks();
    let mut ingest = Ingest {
        writer,
        tracks: (*shared_tracks).clone(),
        shared_tracks,
        clock: TimestampUnwrapper::default(),
    };
    let mut events = rest;
    let mut buf = vec![0u8; PUBLISH_READ_BUF];
    loop {
        for ev in events.drain(..) {
            match ev {
                ConnEvent::Video { data, timestamp } => ingest.on_video(data, timestamp)?,
                ConnEvent::Audio { data, timestamp } => ingest.on_audio(data, timestamp)?,
                ConnEvent::PublishFinished => {
                    info!("publisher finished");
                    return Ok(());
                }
                _ => {}
            }
        }
        if !channel.connected() {
            warn!("channel actor is gone; closing the publisher so it reconnects to a fresh one");
            return Ok(());
        }
        let read = tokio::select! {
            _ = cancel.cancelled() => {
                info!("publisher cut off (channel stopping)");
                return Ok(());
            }
            r = tokio::time::timeout(ctx.publish_idle_timeout, rd.read(&mut buf)) => r,
        };
        let n = match read {
            Err(_) => return Err(SessionEnd::Timeout("publisher idle")),
            Ok(Err(e)) => return Err(SessionEnd::Io(e)),
            Ok(Ok(0)) => {
                info!("publisher disconnected");
                return Ok(());
            }
            Ok(Ok(n)) => n,
        };
        bytes_in.inc_by(n as u64);
        let mut out = Vec::new();
        conn.handle_input(&buf[..n], &mut out, &mut events).map_err(SessionEnd::Protocol)?;
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(SessionEnd::Io)?;
        }
    }
}

/// The RTMP message (type, chunks) for one frame, shared across viewers on stream 1.
fn frame_wire(f: &Frame, stream_id: u32, chunk_size: u32) -> Option<Bytes> {
    let build = || -> Option<Bytes> {
        let ts = RtmpTimestamp::new(f.dts.as_millis() as u32);
        let (type_id, tag) = match f.track {
            TrackKind::Video => {
                let cfg = f.tracks.video.as_ref()?;
                let cts = f.cts().as_millis() as i32;
                (MSG_VIDEO, flv::video_frame(cfg.codec, f.keyframe, cts, &f.data))
            }
            TrackKind::Audio => {
                let cfg = f.tracks.audio.as_ref()?;
                (MSG_AUDIO, flv::audio_frame(cfg.codec, &f.data))
            }
        };
        media_chunks(type_id, ts, stream_id, chunk_size, tag).ok()
    };
    if stream_id == SHARED_STREAM_ID {
        let b = f.wire.rtmp.get_or_init(|| build().unwrap_or_default());
        (!b.is_empty()).then(|| b.clone())
    } else {
        build()
    }
}

/// Sequence headers for a (new) track set, stamped with the frame's time.
fn sequence_headers(tracks: &Tracks, at: MediaTime, stream_id: u32, chunk_size: u32, out: &mut Vec<Bytes>) {
    let ts = RtmpTimestamp::new(at.as_millis() as u32);
    if let Some(v) = &tracks.video {
        if let Ok(b) = media_chunks(MSG_VIDEO, ts, stream_id, chunk_size, flv::video_sequence_header(v)) {
            out.push(b);
        }
    }
    if let Some(a) = &tracks.audio {
        if let Ok(b) = media_chunks(MSG_AUDIO, ts, stream_id, chunk_size, flv::audio_sequence_header(a)) {
            out.push(b);
        }
    }
}

/// Write every buffer, in order, with vectored writes; `bufs` is consumed.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, bufs: &mut [Bytes]) -> std::io::Result<u64> {
    let mut idx = 0;
    let mut total = 0u64;
    while idx < bufs.len() {
        let slices: Vec<IoSlice<'_>> =
            bufs[idx..].iter().take(WRITE_BATCH).map(|b| IoSlice::new(b)).collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        total += n as u64;
        while n > 0 {
            let len = bufs[idx].len();
            if n >= len {
                n -= len;
                idx += 1;
            } else {
                bufs[idx].advance(n);
                n = 0;
            }
        }
        while idx < bufs.len() && bufs[idx].is_empty() {
            idx += 1;
        }
    }
    Ok(total)
}

#[allow(clippy::too_many_arguments)]
async fn play(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    request_id: u32,
    name: String,
    stream_id: u32,
    started: Instant,
) -> Result<(), SessionEnd> {
    let resolved =
        ctx.registry.send(ResolvePlay { name: name.clone() }).await.map_err(Error::from).and_then(|r| r);
    let reader = match resolved {
        Ok(channel) => channel.send(AddReader).await.map_err(Error::from).and_then(|r| r),
        Err(e) => Err(e),
    };
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            info!(channel = %name, reason = %e.msg, "play refused");
            return refuse(wr, conn, request_id, &e).await;
        }
    };
    if ctx.viewer_send_buffer > 0 {
        // Bound what one viewer can have in flight (backpressure rule 2).
        let sock = socket2::SockRef::from(wr.as_ref());
        if let Err(e) = sock.set_send_buffer_size(ctx.viewer_send_buffer) {
            debug!(error = %e, "cannot set the viewer send buffer");
        }
    }
    let mut out = Vec::new();
    conn.accept(request_id, &mut out).map_err(SessionEnd::Protocol)?;
    wr.write_all(&out).await.map_err(SessionEnd::Io)?;
    let span = info_span!("play", channel = %name);
    viewer_loop(rd, wr, conn, ctx, reader, stream_id, started).instrument(span).await
}

async fn viewer_loop(
    rd: &mut OwnedReadHalf,
    wr: &mut OwnedWriteHalf,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    mut reader: RingReader,
    stream_id: u32,
    started: Instant,
) -> Result<(), SessionEnd> {
    info!("viewer attached");
    let _gauge = GaugeGuard::new(metrics().viewers.with_label_values(&[PROTOCOL]));
    let egress = metrics().egress_bytes.with_label_values(&[PROTOCOL]);
    let dropped = metrics().frames_dropped.with_label_values(&["rtmp_play"]);
    let chunk_size = ctx.limits.out_chunk_size;
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut wire: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH + 2);
    let mut last_tracks: Option<Arc<Tracks>> = None;
    let mut first_written = false;
    let mut skips: VecDeque<Instant> = VecDeque::new();
    let finish = |conn: &mut RtmpServerConn| {
        let mut out = Vec::new();
        let _ = conn.finish_playing(stream_id, &mut out);
        out
    };
    loop {
        let ring_open = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => {
                let out = finish(conn);
                let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&out)).await;
                metrics().viewers_cut.with_label_values(&[PROTOCOL, "shutdown"]).inc();
                return Ok(());
            }
            r = pump(rd, wr, conn, &mut buf, &mut events) => {
                if !r? {
                    debug!("viewer disconnected");
                    return Ok(());
                }
                if events.drain(..).any(|e| matches!(e, ConnEvent::PlayFinished)) {
                    info!("viewer stopped playing");
                    return Ok(());
                }
                continue;
            }
            open = reader.wait() => open,
        };
        // Drain what the ring has, in batches.
        loop {
            if reader.lag() > ctx.viewer_max_lag {
                let n = reader.skip_to_newest_sync();
                dropped.inc_by(n);
                let now = Instant::now();
                skips.push_back(now);
                while skips.front().is_some_and(|t| now.duration_since(*t) > SKIP_WINDOW) {
                    skips.pop_front();
                }
                info!(skipped = n, "viewer behind live; skipped to the newest key frame");
                if skips.len() > ctx.viewer_max_skips as usize {
                    metrics().viewers_cut.with_label_values(&[PROTOCOL, "slow"]).inc();
                    info!("viewer keeps falling behind; disconnecting");
                    return Ok(());
                }
            }
            batch.clear();
            let b = reader.read_batch(&mut batch, WRITE_BATCH);
            dropped.inc_by(b.skipped);
            if batch.is_empty() {
                if b.closed || !ring_open {
                    info!("stream ended");
                    let out = finish(conn);
                    let _ = tokio::time::timeout(ctx.write_timeout, wr.write_all(&out)).await;
                    return Ok(());
                }
                break;
            }
            wire.clear();
            for f in &batch {
                if last_tracks.as_ref().is_none_or(|t| !Arc::ptr_eq(t, &f.tracks)) {
                    sequence_headers(&f.tracks, f.dts, stream_id, chunk_size, &mut wire);
                    last_tracks = Some(f.tracks.clone());
                }
                if let Some(b) = frame_wire(f, stream_id, chunk_size) {
                    wire.push(b);
                }
            }
            match tokio::time::timeout(ctx.write_timeout, write_all_vectored(wr, &mut wire)).await {
                Err(_) => {
                    metrics().viewers_cut.with_label_values(&[PROTOCOL, "stalled"]).inc();
                    info!(
                        timeout_ms = ctx.write_timeout.as_millis() as u64,
                        "viewer stopped reading; disconnecting"
                    );
                    return Ok(());
                }
                Ok(Err(e)) => return Err(SessionEnd::Io(e)),
                Ok(Ok(n)) => {
                    egress.inc_by(n);
                    if !first_written {
                        first_written = true;
                        let ms = started.elapsed();
                        metrics()
                            .first_frame_seconds
                            .with_label_values(&[PROTOCOL])
                            .observe(ms.as_secs_f64());
                        debug!(first_frame_ms = ms.as_millis() as u64, "first frame written");
                    }
                }
            }
        }
    }
}

/// Bind the RTMP listener (port 0 picks a free port) and log what was bound.
pub async fn bind(listen: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    info!(protocol = "rtmp", %addr, "listening");
    Ok((listener, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_unwrap_across_the_32_bit_boundary() {
        let mut u = TimestampUnwrapper::default();
        assert_eq!(u.unwrap(RtmpTimestamp::new(u32::MAX - 10)), u32::MAX as i64 - 10);
        assert_eq!(u.unwrap(RtmpTimestamp::new(5)), (1i64 << 32) + 5);
        // Small reorderings (B-frames, audio/video interleave) are not wraps.
        assert_eq!(u.unwrap(RtmpTimestamp::new(3)), (1i64 << 32) + 3);
    }
}
