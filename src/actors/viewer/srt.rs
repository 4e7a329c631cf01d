//! SRT play adapter: a `ViewerSession` served as MPEG-TS over SRT (vMix, OBS, ffmpeg
//! receivers).
//!
//! Data flow: `ViewerSession::next_batch` -> `TsMuxer` (sans-IO, `protocols::ts`; one per
//! viewer, since continuity counters are per connection) -> SRT messages of at most seven TS
//! packets (1316 bytes, the live-mode payload every receiver accepts) -> srt-tokio's socket,
//! through `ViewerSession::deliver` (write timeout, byte counts). SRT paces and retransmits;
//! a viewer that falls behind the ring skips to the newest key frame like every other viewer.
//!
//! Entitlement (checked by `listen/srt.rs` before the handshake is accepted): the LL-HLS rule,
//! through `auth::PlayAccess`: public channels for everyone, others with a playback token for
//! the channel in the stream id (`#!::r=<channel>,m=request,token=<token>` or
//! `read:<channel>?token=<token>`).

use std::sync::Arc;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use srt_tokio::SrtSocket;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::actors::viewer::{Delivery, Step, ViewerSession};
use crate::media::frame::Frame;
use crate::metrics::metrics;
use crate::protocols::ts::{TsMuxer, PACKET_SIZE};

/// Frames taken from the ring per batch.
const WRITE_BATCH: usize = 64;
/// Pacing of what is handed to srt-tokio. A viewer's first batch is the ring's whole GOP at
/// once; fed in one burst, srt-tokio 0.4.4's sender sent one packet, then held the rest past its
/// drop window (`tidecast_srt_packets_dropped_total{direction="out"}` counted hundreds) and the
/// player got nothing (seen for most second viewers, and some first ones). Fed at one payload
/// per millisecond during the connection's first `PACE_START`, every player started; after
/// that (srt-tokio's sender has measured its input rate by then) up to `PACE_PACKETS_PER_MS`.
const PACE_START: std::time::Duration = std::time::Duration::from_secs(2);
/// Payloads per millisecond after `PACE_START` (about 84 Mb/s).
const PACE_PACKETS_PER_MS: usize = 8;
/// One SRT live-mode payload: seven transport packets.
const SRT_PAYLOAD: usize = 7 * PACKET_SIZE;

/// Play the session's ring to the socket until the ring ends, the viewer leaves or is cut off.
pub(crate) async fn play(
    mut socket: SrtSocket,
    mut session: ViewerSession,
    shutdown: tokio_util::sync::CancellationToken,
) {
    info!("viewer attached");
    let unwritable = metrics().frames_unwritable.with_label_values(&["srt"]);
    let mut mux = TsMuxer::new();
    let mut batch: Vec<Arc<Frame>> = Vec::new();
    let mut pending = Vec::<u8>::new();
    let connected = StdInstant::now();
    let mut stats = socket.statistics().clone();
    let mut srt_stats = crate::actors::listen::srt::SrtStats::new(false);
    loop {
        let open = tokio::select! {
            open = session.wait() => open,
            Some(s) = stats.next() => {
                srt_stats.update(&s);
                continue;
            }
            _ = shutdown.cancelled() => {
                session.cut(crate::actors::viewer::CutReason::Shutdown);
                let _ = socket.close().await;
                return;
            }
        };
        loop {
            match session.next_batch(&mut batch, WRITE_BATCH) {
                Step::Frames => {}
                Step::Idle if open => break,
                Step::Idle | Step::Ended => {
                    info!("stream ended");
                    let _ = socket.close().await;
                    return;
                }
                Step::Cut(_) => return,
            }
            for f in &batch {
                match mux.frame(f) {
                    Some(ts) => pending.extend_from_slice(&ts),
                    None => unwritable.inc(),
                }
            }
            // Whole 1316-byte payloads now; a tail shorter than seven packets waits for the next
            // batch unless nothing follows soon (it is sent at once: latency over fill).
            let buf = std::mem::take(&mut pending);
            let send = async {
                let mut total = 0u64;
                let mut sent_in_tick = 0;
                let per_ms = if connected.elapsed() < PACE_START { 1 } else { PACE_PACKETS_PER_MS };
                for chunk in buf.chunks(SRT_PAYLOAD) {
                    socket.feed((StdInstant::now(), Bytes::copy_from_slice(chunk))).await?;
                    sent_in_tick += 1;
                    if sent_in_tick >= per_ms {
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        sent_in_tick = 0;
                    }
                    total += chunk.len() as u64;
                }
                socket.flush().await?;
                Ok(total)
            };
            match session.deliver(send).await {
                Delivery::Written => {}
                Delivery::Stalled => return,
                Delivery::Failed(e) => {
                    warn!(error = %e, "srt viewer write failed");
                    return;
                }
            }
            session.media_written();
        }
    }
}

/// When the viewer connected, for the time-to-first-frame histogram.
pub(crate) fn started() -> Instant {
    Instant::now()
}
