//! One light RTMP viewer: connects, plays, and counts what arrives until the measurement window
//! ends. Thousands of these share one tokio runtime; each costs a socket, a 64 KiB read buffer
//! and an rml_rtmp `ClientSession` (which reassembles chunks into messages).
//!
//! Measured per viewer: time from the TCP connect call to the first video message, bytes and
//! messages received, the RTMP timestamp span of the video received inside the window, the
//! largest timestamp gap there (a skip to a newer key frame shows as a gap), whether the server
//! hung up before the window ended, and the publish-to-receive latency of every video frame in
//! the window that matches a published frame.

use crate::client::{self, Role, RtmpUrl};
use crate::publisher::SendLog;
use rml_rtmp::sessions::ClientSessionEvent;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

#[derive(Debug, Default)]
pub struct ViewerReport {
    /// Set when the viewer never got to `play` (refused, timed out).
    pub setup_error: Option<String>,
    /// Set when the connection ended before the window did (server hang-up or error).
    pub disconnected: Option<String>,
    pub first_video: Option<Duration>,
    pub bytes: u64,
    pub messages: u64,
    /// Video timestamps received inside the window: lowest, highest, largest step.
    pub window_ts: Option<(u32, u32)>,
    pub max_gap_ms: u32,
    /// Publish-to-receive latency of matched video frames inside the window, microseconds.
    pub latencies_us: Vec<u32>,
    /// Video frames inside the window that matched no published frame (should stay 0).
    pub unmatched: u64,
}

/// The measurement window, shared by every viewer and the publisher.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

const READ_BUF: usize = 64 * 1024;

pub async fn run(url: RtmpUrl, window: Window, log: Option<Arc<SendLog>>) -> ViewerReport {
    let mut rep = ViewerReport::default();
    let t_connect = Instant::now();
    let opened = match client::open(&url, Role::Play, Duration::from_secs(10)).await {
        Ok(o) => o,
        Err(e) => {
            rep.setup_error = Some(format!("{e:#}"));
            return rep;
        }
    };
    let mut sock = opened.sock;
    let mut session = opened.session;
    let mut state = State { t_connect, window, log, last_ts: None };
    for ev in opened.early_events {
        state.on_event(ev, Instant::now(), &mut rep);
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut events = Vec::new();
    let mut out = Vec::new();
    loop {
        let n = tokio::select! {
            _ = tokio::time::sleep_until(window.end) => break,
            r = sock.read(&mut buf) => match r {
                Ok(0) => {
                    rep.disconnected = Some("server closed the connection".into());
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    rep.disconnected = Some(format!("read: {e}"));
                    break;
                }
            },
        };
        let now = Instant::now();
        rep.bytes += n as u64;
        match session.handle_input(&buf[..n]) {
            Ok(results) => client::collect(results, &mut out, &mut events),
            Err(e) => {
                rep.disconnected = Some(format!("RTMP input: {e:?}"));
                break;
            }
        }
        for ev in events.drain(..) {
            state.on_event(ev, now, &mut rep);
        }
        if !out.is_empty() {
            // Acknowledgements (spec §5.4.3) and ping responses; tiny, so write inline.
            if let Err(e) = sock.write_all(&out).await {
                rep.disconnected = Some(format!("write: {e}"));
                break;
            }
            out.clear();
        }
    }
    rep
}

struct State {
    t_connect: Instant,
    window: Window,
    log: Option<Arc<SendLog>>,
    last_ts: Option<u32>,
}

impl State {
    fn on_event(&mut self, ev: ClientSessionEvent, now: Instant, rep: &mut ViewerReport) {
        match ev {
            ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                rep.messages += 1;
                // A sequence header (AVCPacketType 0) is not a frame.
                let config = data.len() >= 2 && data[1] == 0;
                if config {
                    return;
                }
                if rep.first_video.is_none() {
                    rep.first_video = Some(now.duration_since(self.t_connect));
                }
                if now < self.window.start || now > self.window.end {
                    return;
                }
                let ts = timestamp.value;
                rep.window_ts = Some(match rep.window_ts {
                    None => (ts, ts),
                    Some((lo, hi)) => (lo.min(ts), hi.max(ts)),
                });
                if let Some(prev) = self.last_ts {
                    rep.max_gap_ms = rep.max_gap_ms.max(ts.saturating_sub(prev));
                }
                self.last_ts = Some(ts);
                if let Some(log) = &self.log {
                    match log.latency(&data, now) {
                        Some(d) => rep.latencies_us.push(d.as_micros().min(u32::MAX as u128) as u32),
                        None => rep.unmatched += 1,
                    }
                }
            }
            ClientSessionEvent::AudioDataReceived { .. } => rep.messages += 1,
            ClientSessionEvent::StreamMetadataReceived { .. } => rep.messages += 1,
            _ => {}
        }
    }
}
