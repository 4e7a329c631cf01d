//! Real-time publisher: sends a pre-encoded FLV file's tags over RTMP, paced by their
//! timestamps, looping the file with timestamps kept monotonic, and records when each video
//! frame was handed to the socket so viewers can compute publish-to-viewer latency.
//!
//! Latency matching is by content, not by RTMP timestamp: nginx-rtmp (with `atc off`, its
//! default) rebases every subscriber's timestamps to start near 0, so a received timestamp
//! does not name the sent frame there. The last 16 bytes of a video payload (entropy-coded
//! slice data) do, and both servers pass the payload through unchanged. Fingerprints that occur
//! twice in the file are left out of the map, so a match is never ambiguous; a frame repeats
//! only once per loop of the file (~30 s), far longer than any latency we measure.

use crate::client::{self, Role, RtmpUrl};
use crate::flv::{Tag, TagKind};
use anyhow::{anyhow, Result};
use rml_rtmp::sessions::ClientSession;
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// What viewers need to turn a received video payload into a latency.
pub struct SendLog {
    /// Everything is measured from here.
    pub origin: Instant,
    /// Last 16 payload bytes -> tag index, for fingerprints unique in the file.
    fingerprints: HashMap<[u8; 16], usize>,
    /// Per tag index: nanoseconds since `origin` of its latest send, plus one (0 = never sent).
    sent_ns: Vec<AtomicU64>,
    /// Every video send: (instant, RTMP timestamp in ms), for the publisher's timestamp span.
    pub video_sends: Mutex<Vec<(Instant, u32)>>,
}

impl SendLog {
    pub fn new(tags: &[Tag], origin: Instant) -> Self {
        let mut count: HashMap<[u8; 16], (usize, u32)> = HashMap::new();
        for (i, t) in tags.iter().enumerate() {
            if let Some(fp) = fingerprint(t.kind, &t.data, t.is_config()) {
                let e = count.entry(fp).or_insert((i, 0));
                e.1 += 1;
            }
        }
        let fingerprints =
            count.into_iter().filter(|(_, (_, n))| *n == 1).map(|(fp, (i, _))| (fp, i)).collect();
        Self {
            origin,
            fingerprints,
            sent_ns: tags.iter().map(|_| AtomicU64::new(0)).collect(),
            video_sends: Mutex::new(Vec::new()),
        }
    }

    /// Latency of a video payload received at `now`, if it matches a sent frame.
    pub fn latency(&self, data: &[u8], now: Instant) -> Option<Duration> {
        let fp: [u8; 16] = data.get(data.len().checked_sub(16)?..)?.try_into().ok()?;
        let idx = *self.fingerprints.get(&fp)?;
        let sent = self.sent_ns[idx].load(Ordering::Acquire);
        if sent == 0 {
            return None;
        }
        let sent = Duration::from_nanos(sent - 1);
        now.duration_since(self.origin).checked_sub(sent)
    }

    fn record(&self, idx: usize, at: Instant) {
        let ns = at.duration_since(self.origin).as_nanos() as u64 + 1;
        self.sent_ns[idx].store(ns, Ordering::Release);
    }

    /// RTMP timestamp span (ms) of the video frames sent in `[from, to]`.
    pub fn span_ms(&self, from: Instant, to: Instant) -> Option<u32> {
        let sends = self.video_sends.lock().expect("send log lock is never poisoned: no panics under it");
        let mut it = sends.iter().filter(|(t, _)| *t >= from && *t <= to).map(|(_, ts)| *ts);
        let first = it.next()?;
        let (lo, hi) = it.fold((first, first), |(lo, hi), ts| (lo.min(ts), hi.max(ts)));
        Some(hi - lo)
    }
}

/// Video, non-config, at least 16 bytes: the fingerprint is its last 16 bytes.
fn fingerprint(kind: TagKind, data: &[u8], config: bool) -> Option<[u8; 16]> {
    if kind != TagKind::Video || config || data.len() < 32 {
        return None;
    }
    data[data.len() - 16..].try_into().ok()
}

/// Publisher statistics.
#[derive(Debug, Default)]
pub struct PublishReport {
    pub tags_sent: u64,
    pub bytes_sent: u64,
    pub loops: u32,
    /// Sends that started more than 50 ms after their due time (the publisher itself fell behind).
    pub late_sends: u64,
}

/// Publish `tags` to `url` in real time until `stop`.
pub async fn run(
    url: RtmpUrl,
    tags: Arc<Vec<Tag>>,
    log: Arc<SendLog>,
    stop: Instant,
) -> Result<PublishReport> {
    let opened = client::open(&url, Role::Publish, Duration::from_secs(5)).await?;
    let mut sock = opened.sock;
    let mut session = opened.session;
    let mut report = PublishReport::default();
    let mut rbuf = vec![0u8; 16 * 1024];

    let first_ts = tags.iter().filter(|t| !t.is_config()).map(|t| t.ts_ms).min().unwrap_or(0);
    // The loop restarts one video frame interval (30 fps: 33 ms) after the last video frame, so
    // the video timeline has no gap at the seam: a gap there is a frame arriving late, which the
    // server must then end a part before. Audio the encoder flushed past that point (up to
    // ~100 ms of AAC) is not sent, so the audio timeline never goes back either.
    let last_video_ts = tags
        .iter()
        .filter(|t| t.kind == TagKind::Video && !t.is_config())
        .map(|t| t.ts_ms)
        .max()
        .or_else(|| tags.iter().map(|t| t.ts_ms).max())
        .unwrap_or(0);
    let loop_ms = (last_video_ts - first_ts) as u64 + 33;

    // Codec configuration first, once, at timestamp 0.
    let mut out = Vec::new();
    for t in tags.iter().filter(|t| t.is_config() && t.kind != TagKind::Script) {
        packet(&mut session, t, 0, &mut out)?;
    }
    sock.write_all(&out).await?;
    report.bytes_sent += out.len() as u64;

    let start = Instant::now();
    let mut offset_ms: u64 = 0;
    'outer: loop {
        for (idx, t) in tags.iter().enumerate() {
            if t.is_config() {
                continue;
            }
            let in_loop_ms = (t.ts_ms - first_ts) as u64;
            if in_loop_ms >= loop_ms {
                continue;
            }
            let rel_ms = offset_ms + in_loop_ms;
            let due = start + Duration::from_millis(rel_ms);
            if due > stop {
                break 'outer;
            }
            // Wait for the due time, answering the server meanwhile (acks, pings).
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    r = sock.read(&mut rbuf) => {
                        let n = r?;
                        if n == 0 {
                            return Err(anyhow!("{}: server closed the publishing connection", url.addr));
                        }
                        let results = session.handle_input(&rbuf[..n]).map_err(|e| anyhow!("publisher input: {e:?}"))?;
                        let mut resp = Vec::new();
                        client::collect(results, &mut resp, &mut Vec::new());
                        if !resp.is_empty() {
                            sock.write_all(&resp).await?;
                        }
                    }
                }
            }
            if Instant::now().duration_since(due) > Duration::from_millis(50) {
                report.late_sends += 1;
            }
            out.clear();
            let ts = rel_ms as u32;
            packet(&mut session, t, ts, &mut out)?;
            // Record before writing: once the bytes are in the socket a viewer may receive the
            // frame before this task runs again (seen at 500 viewers: the lookup then found the
            // previous loop's send and reported ~30 s). The write itself is part of the latency.
            let sent = Instant::now();
            if t.kind == TagKind::Video {
                log.record(idx, sent);
                log.video_sends.lock().expect("send log lock is never poisoned").push((sent, ts));
            }
            sock.write_all(&out).await?;
            report.tags_sent += 1;
            report.bytes_sent += out.len() as u64;
        }
        offset_ms += loop_ms;
        report.loops += 1;
    }
    let _ = sock.shutdown().await;
    Ok(report)
}

fn packet(session: &mut ClientSession, t: &Tag, ts: u32, out: &mut Vec<u8>) -> Result<()> {
    let ts = RtmpTimestamp::new(ts);
    let r = match t.kind {
        TagKind::Video => session.publish_video_data(t.data.clone(), ts, false),
        TagKind::Audio => session.publish_audio_data(t.data.clone(), ts, false),
        TagKind::Script => return Ok(()),
    }
    .map_err(|e| anyhow!("serializing a tag at {ts:?}: {e:?}"))?;
    client::collect(vec![r], out, &mut Vec::new());
    Ok(())
}
