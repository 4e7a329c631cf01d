//! RTMP play adapter: a `ViewerSession` written to an RTMP viewer's socket.
//!
//! Data flow: `ViewerSession::next_batch` -> per-frame RTMP chunks (built once per frame for
//! every viewer on message stream 1, cached in the frame's `RTMP_WIRE` slot) -> one vectored
//! write per batch through `ViewerSession::deliver` (a batch holds what arrived during the
//! merge window, `rtmp.viewer_merge_write`).
//!
//! The viewer also talks to us (acknowledgements, pings, commands such as `createStream` or
//! `closeStream`), and rml_rtmp answers some of that. The loop waits on three things at once:
//! shutdown, the socket becoming readable, and the ring. Only the readiness of the socket is
//! awaited inside that `select!`, never a read or a write: reading happens after the select
//! (into a stack buffer), and rml_rtmp's answers are queued and written, in order, before the
//! next media batch, by the same `deliver` path as media. So no future that has written part of
//! a message is ever dropped: a slow viewer whose socket is full can no longer receive half a
//! control chunk followed by media chunks (which corrupted its chunk stream).

use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::actors::listen::rtmp::{refuse, RtmpContext, SessionEnd};
use crate::actors::listen::transport::{send, Transport};
use crate::actors::viewer::{Delivery, Step, ViewerSession};
use crate::media::codec::Tracks;
use crate::media::frame::Frame;
use crate::metrics::metrics;
use crate::protocols::rtmp::media::{frame_message, sequence_headers, RTMP_WIRE};
use crate::protocols::rtmp::{ConnEvent, RtmpServerConn, SHARED_STREAM_ID};

mod fanout;

pub use fanout::{FanoutConfig, Fanouts};

/// Frames taken from the ring per batch.
const WRITE_BATCH: usize = 64;
/// Buffers per `writev` (a woken viewer usually has 2-4: a video frame and the audio beside it).
const IOV_BATCH: usize = 16;
/// What one read of a viewer's input takes at most; viewers send almost nothing. A stack
/// buffer, so 500 viewers do not hold 500 idle read buffers.
const INPUT_READ: usize = 2048;

/// Resolve the channel, attach a reader and play until the viewer or the session ends.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    request_id: u32,
    name: String,
    stream_id: u32,
    started: Instant,
) -> Result<(), SessionEnd> {
    // RTMP play carries no playback token: public channels only.
    // `_demand` keeps an on-demand pulled source running while this viewer plays.
    let (reader, _demand) = match crate::actors::viewer::attach(&ctx.registry, &ctx.pulls, &name, false).await
    {
        Ok(r) => r,
        Err(e) => {
            info!(channel = %name, reason = %e.msg, "play refused");
            return refuse(io, conn, request_id, &e).await;
        }
    };
    if ctx.viewer_send_buffer > 0 {
        // Bound what one viewer can have in flight (backpressure rule 2).
        let sock = socket2::SockRef::from(io.tcp());
        if let Err(e) = sock.set_send_buffer_size(ctx.viewer_send_buffer) {
            debug!(error = %e, "cannot set the viewer send buffer");
        }
    }
    let mut out = Vec::new();
    conn.accept(request_id, &mut out).map_err(SessionEnd::Protocol)?;
    send(io, &out).await.map_err(SessionEnd::Io)?;
    let session =
        ViewerSession::new(&name, ctx.protocol, "rtmp_play", reader, ctx.viewer, ctx.clock, started);
    let span = tracing::Span::current();
    span.record("role", "play");
    span.record("channel", name.as_str());
    play(io, conn, ctx, session, stream_id).await
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Input,
    Ring(bool),
}

async fn play<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    mut session: ViewerSession,
    stream_id: u32,
) -> Result<(), SessionEnd> {
    info!("viewer attached");
    let chunk_size = ctx.limits.out_chunk_size;
    let unwritable = metrics().frames_unwritable.with_label_values(&[ctx.protocol]);
    // Grown on demand: a woken viewer usually takes one video frame and the audio beside it.
    let mut batch: Vec<Arc<Frame>> = Vec::new();
    let mut wire: Vec<Bytes> = Vec::new();
    // rml_rtmp's answers to the viewer's input, written before the next media batch.
    let mut control: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let mut last_tracks: Option<Arc<Tracks>> = None;
    // Registered once, not on every wake-up: a fresh `cancelled()` future per loop would lock the
    // shared shutdown token of every connection on every frame.
    let shutdown = ctx.shutdown.cancelled();
    tokio::pin!(shutdown);
    // Set while the channel writer sends this viewer its media (see `fanout`): the loop then
    // only waits for input, shutdown or the writer handing the viewer back.
    let mut attached: Option<fanout::Attachment> = None;
    loop {
        if !control.is_empty() {
            let buf = std::mem::take(&mut control);
            match session.deliver(write_counted(io, &buf)).await {
                Delivery::Written => {}
                Delivery::Stalled => return Ok(()),
                Delivery::Failed(e) => return Err(SessionEnd::Io(e)),
            }
        }
        // Biased, shutdown last: on a frame wake-up the ring branch answers before the shutdown
        // future is polled (polling it locks the token every server connection shares). At
        // shutdown the channels close their rings too, so a busy viewer still ends promptly.
        let wake = match attached.as_ref() {
            None => tokio::select! {
                biased;
                r = io.readable() => {
                    r.map_err(SessionEnd::Io)?;
                    Wake::Input
                }
                open = session.wait() => Wake::Ring(open),
                _ = &mut shutdown => Wake::Shutdown,
            },
            Some(writer) => tokio::select! {
                biased;
                r = io.readable() => {
                    r.map_err(SessionEnd::Io)?;
                    Wake::Input
                }
                _ = writer.handed_back() => Wake::Ring(true),
                _ = &mut shutdown => Wake::Shutdown,
            },
        };
        // Whatever woke us, take the viewer's place back from the channel writer first: the
        // rest of a write its socket did not take goes out before anything else.
        if let Some(writer) = attached.take() {
            let back = writer.detach();
            session.resume_at(back.next);
            last_tracks = back.last_tracks;
            let mut pending = back.pending;
            if !pending.is_empty() {
                match session.deliver(write_all_vectored(io, &mut pending)).await {
                    Delivery::Written => {}
                    Delivery::Stalled => return Ok(()),
                    Delivery::Failed(e) => return Err(SessionEnd::Io(e)),
                }
            }
        }
        let ring_open = match wake {
            Wake::Shutdown => {
                session.cut(crate::actors::viewer::CutReason::Shutdown);
                finish(io, conn, stream_id, std::time::Duration::from_millis(500)).await;
                return Ok(());
            }
            Wake::Input => {
                match read_input(io, conn, &mut control, &mut events)? {
                    Input::Closed => {
                        debug!("viewer disconnected");
                        return Ok(());
                    }
                    Input::Read => {}
                }
                if events.drain(..).any(|e| matches!(e, ConnEvent::PlayFinished)) {
                    info!("viewer stopped playing");
                    return Ok(());
                }
                continue;
            }
            Wake::Ring(open) => open,
        };
        // Drain what the ring has, in batches.
        loop {
            match session.next_batch(&mut batch, WRITE_BATCH) {
                Step::Frames => {}
                Step::Idle if ring_open => {
                    // Caught up: let the channel writer carry on (plain TCP, shared stream).
                    if let (Some(fanouts), Some(tcp)) = (ctx.fanouts.as_ref(), io.plain()) {
                        if stream_id == SHARED_STREAM_ID && control.is_empty() && session.first_frame_sent() {
                            attached = fanouts.attach(session.reader(), tcp, last_tracks.clone());
                            if attached.is_some() {
                                // The first batch (a whole GOP) grew these; while the writer
                                // serves the viewer they would only hold memory.
                                batch = Vec::new();
                                wire = Vec::new();
                                control = Vec::new();
                            }
                        }
                    }
                    break;
                }
                Step::Idle | Step::Ended => {
                    info!("stream ended");
                    finish(io, conn, stream_id, session.policy().write_timeout).await;
                    return Ok(());
                }
                Step::Cut(_) => return Ok(()),
            }
            wire.clear();
            for f in &batch {
                if last_tracks.as_ref().is_none_or(|t| !Arc::ptr_eq(t, &f.tracks)) {
                    if let Err(e) = sequence_headers(&f.tracks, f.dts, stream_id, chunk_size, &mut wire) {
                        warn!(error = %e, "cannot serialize sequence headers");
                        unwritable.inc();
                    }
                    last_tracks = Some(f.tracks.clone());
                }
                let report = |e: &dyn std::fmt::Display| {
                    // Once per frame, not per viewer: the shared slot remembers the failure.
                    warn!(error = %e, "frame cannot be sent over RTMP; skipped");
                    unwritable.inc();
                };
                let msg = if stream_id == SHARED_STREAM_ID {
                    f.wire.get_or_build(RTMP_WIRE, || {
                        frame_message(f, stream_id, chunk_size).map_err(|e| report(&e)).ok()
                    })
                } else {
                    frame_message(f, stream_id, chunk_size).map_err(|e| report(&e)).ok()
                };
                if let Some(b) = msg {
                    wire.push(b);
                }
            }
            match session.deliver(write_all_vectored(io, &mut wire)).await {
                Delivery::Written => {}
                Delivery::Stalled => return Ok(()),
                Delivery::Failed(e) => return Err(SessionEnd::Io(e)),
            }
            session.media_written();
        }
    }
}

enum Input {
    Read,
    Closed,
}

/// Read what the viewer sent (the socket is readable) and feed it to the session; its answers
/// are appended to `control`. Synchronous: the buffer lives on the stack only for this call.
///
/// Reads until a read comes back short: over TLS a record can decrypt to more than one buffer,
/// and what rustls holds is not visible to the socket's readiness (`Transport::readable`
/// checks it, but draining here keeps the loop from waking twice).
fn read_input<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    control: &mut Vec<u8>,
    events: &mut Vec<ConnEvent>,
) -> Result<Input, SessionEnd> {
    let mut buf = [0u8; INPUT_READ];
    loop {
        match io.try_read(&mut buf) {
            Ok(0) => return Ok(Input::Closed),
            Ok(n) => {
                conn.handle_input(&buf[..n], control, events).map_err(SessionEnd::Protocol)?;
                if n < buf.len() {
                    return Ok(Input::Read);
                }
            }
            // Readiness can be spurious; wait again.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Input::Read),
            Err(e) => return Err(SessionEnd::Io(e)),
        }
    }
}

/// Tell the viewer the stream is over (`NetStream.Play.Stop`), within `timeout`.
async fn finish<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    stream_id: u32,
    timeout: std::time::Duration,
) {
    let mut out = Vec::new();
    let _ = conn.finish_playing(stream_id, &mut out);
    let _ = tokio::time::timeout(timeout, send(io, &out)).await;
}

async fn write_counted<T: Transport>(io: &mut T, buf: &[u8]) -> std::io::Result<u64> {
    send(io, buf).await?;
    Ok(buf.len() as u64)
}

/// Write every buffer, in order, with vectored writes; `bufs` is consumed.
async fn write_all_vectored<T: Transport>(io: &mut T, bufs: &mut [Bytes]) -> std::io::Result<u64> {
    let mut idx = 0;
    let mut total = 0u64;
    while idx < bufs.len() {
        // The slices live on the stack of each poll, not in the future: one vectored write per
        // wake-up per viewer allocates nothing, and the viewer's task stays small while idle.
        let pending = &bufs[idx..];
        let mut n = std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); IOV_BATCH];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(pending) {
                *slot = IoSlice::new(b);
                count += 1;
            }
            std::pin::Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
        })
        .await?;
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
    // TLS: encrypted bytes rustls could not hand to a full socket (a no-op over TCP).
    io.flush().await?;
    Ok(total)
}
