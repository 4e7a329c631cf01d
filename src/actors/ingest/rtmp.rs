//! RTMP ingest adapter: an RTMP publisher's FLV tags into its `IngestSession`.
//!
//! Data flow: socket -> `RtmpServerConn` (sans-IO, rml_rtmp) -> `ConnEvent::Video`/`Audio` ->
//! `FlvDemuxer` (sans-IO, `protocols::rtmp::media`) -> `IngestSession::push` -> the channel's
//! ring. Everything not RTMP-specific (authorization, the publish grant, counting, reconnect
//! grace, `PublisherLeft`) is the session's. The loop never awaits a consumer (backpressure
//! rule 1); its only awaits are the socket and the channel's cancellation.

use tokio::io::AsyncReadExt;
use tracing::info;

use crate::actors::ingest::{IngestEnd, IngestSession};
use crate::actors::listen::rtmp::{refuse, RtmpContext, SessionEnd};
use crate::actors::listen::transport::{send, Transport};
use crate::protocols::rtmp::media::{FlvDemuxer, Ingested};
use crate::protocols::rtmp::{ConnEvent, RtmpError, RtmpServerConn, Secret};

/// Publishers send megabits per second; a bigger buffer means fewer syscalls.
const PUBLISH_READ_BUF: usize = 64 * 1024;

/// Authorize the publisher, then move its media into the channel until it stops.
pub(crate) async fn run<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    request_id: u32,
    stream_key: Secret,
    rest: Vec<ConnEvent>,
) -> Result<(), SessionEnd> {
    let session = match IngestSession::start(&ctx.registry, ctx.protocol, stream_key, &ctx.shutdown).await {
        Ok(s) => s,
        Err(e) => {
            info!(reason = %e.msg, "publish refused");
            return refuse(io, conn, request_id, &e).await;
        }
    };
    let span = tracing::Span::current();
    span.record("role", "publish");
    span.record("channel", session.channel_name());
    span.record("session", session.session_id());
    let mut session = session;
    let mut out = Vec::new();
    conn.accept(request_id, &mut out).map_err(SessionEnd::Protocol)?;
    send(io, &out).await.map_err(SessionEnd::Io)?;
    info!(resumed = session.resumed(), "publishing");
    let end = ingest_loop(io, conn, ctx, &mut session, rest).await?;
    session.finish(&end);
    Ok(())
}

async fn ingest_loop<T: Transport>(
    io: &mut T,
    conn: &mut RtmpServerConn,
    ctx: &RtmpContext,
    session: &mut IngestSession,
    rest: Vec<ConnEvent>,
) -> Result<IngestEnd, SessionEnd> {
    let mut demux = FlvDemuxer::new(session.tracks());
    let mut jumps = 0;
    let mut events = rest;
    let mut buf = vec![0u8; PUBLISH_READ_BUF];
    loop {
        for ev in events.drain(..) {
            let ingested = match ev {
                ConnEvent::Video { data, timestamp } => demux.video(data, timestamp),
                ConnEvent::Audio { data, timestamp } => demux.audio(data, timestamp),
                ConnEvent::PublishFinished => return Ok(IngestEnd::Finished),
                _ => continue,
            };
            match ingested.map_err(|e| SessionEnd::Protocol(RtmpError::Media(e)))? {
                Ingested::Tracks(tracks) => {
                    if let Some(v) = &tracks.video {
                        info!(codec = %v.codec_string, width = v.width, height = v.height, "video configuration");
                    }
                    if let Some(a) = &tracks.audio {
                        info!(codec = %a.codec_string, sample_rate = a.sample_rate, channels = a.channels, "audio configuration");
                    }
                    session.set_tracks(tracks);
                }
                Ingested::Frame(frame) => {
                    if demux.timestamp_jumps() != jumps {
                        jumps = demux.timestamp_jumps();
                        // The demuxer folded it into an offset: the timeline goes on one frame
                        // after the last (no discontinuity, no hour-long part).
                        info!(track = ?frame.track, dts_ms = frame.dts.as_millis(), jumps, "publisher timestamps jumped");
                    }
                    session.push(frame)
                }
                Ingested::Nothing => {}
            }
        }
        if !session.channel_alive() {
            return Ok(IngestEnd::ChannelGone);
        }
        let read = tokio::select! {
            _ = session.cancelled() => return Ok(IngestEnd::CutOff),
            r = tokio::time::timeout(ctx.publish_idle_timeout, io.read(&mut buf)) => r,
        };
        let n = match read {
            Err(_) => return Ok(IngestEnd::Idle),
            Ok(Err(e)) => return Err(SessionEnd::Io(e)),
            Ok(Ok(0)) => return Ok(IngestEnd::Disconnected),
            Ok(Ok(n)) => n,
        };
        session.received(n);
        let mut out = Vec::new();
        conn.handle_input(&buf[..n], &mut out, &mut events).map_err(SessionEnd::Protocol)?;
        if !out.is_empty() {
            // Acknowledgements and command results; media never flows towards a publisher, so
            // nothing can interleave with this write.
            send(io, &out).await.map_err(SessionEnd::Io)?;
        }
    }
}
