//! SRT push (caller mode): the destination's stream id is `#!::r=<app>/<key>,m=publish` (the
//! SRT Access Control convention tidecast, OBS and most servers accept) unless the owner's key
//! is already a full stream id (starts with `#!::`). Frames become MPEG-TS through the shared
//! `TsMuxer` (one per connection: continuity counters are per connection), sent as SRT
//! messages of seven TS packets (1316 bytes), like SRT play (`actors::viewer::srt`).

use std::sync::Arc;
use std::time::Instant as StdInstant;

use futures_util::SinkExt;
use srt_tokio::SrtSocket;
use tokio::time::timeout;
use tracing::info;

use super::{Destination, PushEnd, PushFailure, PushState, RestreamSettings, StatusCell};
use crate::media::frame::Frame;
use crate::media::ring::FrameRing;
use crate::metrics::metrics;
use crate::protocols::ts::TsMuxer;

const WRITE_BATCH: usize = 64;

/// The stream id announced to the destination.
pub(super) fn stream_id(d: &Destination) -> String {
    if d.stream_key.starts_with("#!::") {
        return d.stream_key.clone();
    }
    let app = if d.url.app.is_empty() { "live" } else { &d.url.app };
    format!("#!::r={app}/{},m=publish", d.stream_key)
}

pub(super) async fn push(
    d: &Destination,
    ring: &FrameRing,
    settings: &RestreamSettings,
    cell: &StatusCell,
) -> Result<PushEnd, PushFailure> {
    let addr = tokio::net::lookup_host(d.url.authority())
        .await
        .map_err(|e| PushFailure::new(format!("resolving {}: {e}", d.url)))?
        .next()
        .ok_or_else(|| PushFailure::new(format!("{} has no address", d.url)))?;
    let sid = stream_id(d);
    let mut socket: SrtSocket =
        timeout(settings.connect_timeout, SrtSocket::builder().call(addr, Some(&sid)))
            .await
            .map_err(|_| PushFailure::new(format!("SRT connection to {} timed out", d.url)))?
            .map_err(|e| PushFailure {
                // srt-tokio reports a rejected stream id as an error on call; it may name the id.
                message: format!(
                    "SRT connection to {}: {}",
                    d.url,
                    e.to_string().replace(&sid, "<stream id>")
                ),
                refused: false,
                was_live: false,
            })?;
    let connected = StdInstant::now();
    cell.set(PushState::Live);
    info!("push live");
    let live = |message: String| PushFailure { message, refused: false, was_live: true };
    let mut reader = ring.reader();
    let unwritable = metrics().frames_unwritable.with_label_values(&["srt"]);
    let mut mux = TsMuxer::new();
    let mut batch: Vec<Arc<Frame>> = Vec::new();
    let mut pending = Vec::<u8>::new();
    loop {
        if !reader.wait().await {
            let _ = socket.close().await;
            return Ok(PushEnd::SessionEnded);
        }
        batch.clear();
        if reader.read_batch_within(&mut batch, WRITE_BATCH, settings.max_lag).is_err() {
            reader.skip_to_newest_sync();
            reader.read_batch(&mut batch, WRITE_BATCH);
        }
        unwritable.inc_by(mux.frames(&batch, &mut pending));
        let buf = std::mem::take(&mut pending);
        let send = crate::actors::listen::srt::send_paced(&mut socket, &buf, connected);
        timeout(settings.write_timeout, send)
            .await
            .map_err(|_| live(format!("writing to {} timed out", d.url)))?
            .map_err(|e| live(format!("SRT connection to {}: {e}", d.url)))?;
        cell.wrote(buf.len() as u64);
    }
}
