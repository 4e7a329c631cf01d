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

use futures_util::{SinkExt, StreamExt};
use srt_tokio::SrtSocket;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::actors::viewer::{Delivery, Step, ViewerSession};
use crate::media::frame::Frame;
use crate::metrics::metrics;
use crate::protocols::ts::TsMuxer;

/// Frames taken from the ring per batch.
const WRITE_BATCH: usize = 64;

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
            unwritable.inc_by(mux.frames(&batch, &mut pending));
            // Whole 1316-byte payloads now; a tail shorter than seven packets waits for the next
            // batch unless nothing follows soon (it is sent at once: latency over fill).
            let buf = std::mem::take(&mut pending);
            let send = crate::actors::listen::srt::send_paced(&mut socket, &buf, connected);
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
