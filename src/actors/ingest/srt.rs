//! SRT ingest adapter: an SRT publisher's MPEG-TS into its `IngestSession`.
//!
//! Data flow: srt-tokio socket (ARQ within the latency, TSBPD release) -> payloads of up to
//! seven TS packets -> `TsDemuxer` (sans-IO, `protocols::ts`) -> `IngestSession::push` -> the
//! channel's ring. What SRT could not repair in time arrives as a continuity-counter gap: the
//! demuxer drops the damaged access unit and the gap is counted
//! (`tidecast_srt_ts_gaps_total`), so no corrupt frame enters the ring. The loop never awaits a
//! consumer (backpressure rule 1); its awaits are the socket, its idle timeout and the
//! channel's cancellation.

use std::time::Duration;

use futures_util::StreamExt;
use srt_tokio::SrtSocket;
use tokio::time::Instant;
use tracing::info;

use crate::actors::ingest::{IngestEnd, IngestSession};
use crate::actors::listen::srt::SrtStats;
use crate::metrics::metrics;
use crate::protocols::ts::{TsDemuxer, TsEvent, TsStats};

/// Move the publisher's media into the channel until it stops.
pub(crate) async fn run(mut socket: SrtSocket, mut session: IngestSession, idle_timeout: Duration) {
    info!(resumed = session.resumed(), "publishing");
    let mut demux = TsDemuxer::new();
    let mut events = Vec::new();
    let mut counted = TsStats::default();
    let mut stats = socket.statistics().clone();
    let mut srt_stats = SrtStats::new(true);
    // A deadline, not a timeout per wake-up: statistics arrive every second and must not keep
    // a silent publisher alive.
    let mut idle_at = Instant::now() + idle_timeout;
    let end = loop {
        if !session.channel_alive() {
            break IngestEnd::ChannelGone;
        }
        let next = tokio::select! {
            _ = session.cancelled() => break IngestEnd::CutOff,
            Some(s) = stats.next() => {
                srt_stats.update(&s);
                continue;
            }
            r = tokio::time::timeout_at(idle_at, socket.next()) => r,
        };
        idle_at = Instant::now() + idle_timeout;
        let payload = match next {
            Err(_) => break IngestEnd::Idle,
            Ok(None) => break IngestEnd::Disconnected,
            Ok(Some(Err(e))) => break IngestEnd::Failed(format!("srt receive: {e}")),
            Ok(Some(Ok((_, payload)))) => payload,
        };
        session.received(payload.len());
        demux.feed(&payload, &mut events);
        for e in events.drain(..) {
            match e {
                TsEvent::Tracks(tracks) => {
                    if let Some(v) = &tracks.video {
                        info!(codec = %v.codec_string, width = v.width, height = v.height, "video configuration");
                    }
                    if let Some(a) = &tracks.audio {
                        info!(codec = %a.codec_string, sample_rate = a.sample_rate, channels = a.channels, "audio configuration");
                    }
                    session.set_tracks(tracks);
                }
                TsEvent::Frame(frame) => session.push(frame),
            }
        }
        count(&mut counted, demux.stats());
    };
    session.finish(&end);
}

/// Adds what the demuxer counted since the last call to the process-wide counters.
fn count(counted: &mut TsStats, now: TsStats) {
    let m = metrics();
    m.srt_ts_gaps.inc_by(now.cc_gaps - counted.cc_gaps);
    m.srt_dropped_units.inc_by(now.dropped_units - counted.dropped_units);
    *counted = now;
}
