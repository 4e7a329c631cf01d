//! The RTMP channel writer: one task per channel ring that writes each frame to every RTMP
//! viewer that keeps up, instead of every viewer's task waking up for every frame.
//!
//! Why: at hundreds of viewers of one stream, what a viewer costs the server is mostly its
//! wake-up, not its bytes. Per frame and viewer, a task of its own is woken through the ring's
//! `watch`, scheduled (often on the other worker thread), locks the ring, arms a write timer and
//! writes. The channel writer is woken once per frame, reads the ring once, and makes one
//! non-blocking `writev` per viewer; nothing else runs per viewer.
//!
//! Who is served here: plain-TCP viewers on the shared message stream (RTMPS keeps its own path:
//! rustls needs the connection's state for every write). A viewer's task serves itself until it
//! has caught up with the ring, then *attaches* here and only waits for its input. It gets its
//! place back (a *hand-back*) when
//! - its socket cannot take a whole write (full, or an error): the unsent rest of the write is
//!   handed back with the ring position, and the viewer's own task finishes it under its write
//!   timeout and lag policy, then attaches again once it has caught up;
//! - it has input to answer, or the server shuts down (the viewer detaches itself);
//! - the stream ends (every viewer is handed back and finishes politely).
//!
//! A viewer's bytes therefore always leave in order and a message is never split between two
//! writers: a partial write is finished by whoever takes over, before anything else.
//!
//! The writer writes through a duplicate of the viewer's socket descriptor (never registered
//! with the reactor: the writes are non-blocking and never awaited), which the viewer's
//! `Attachment` removes, on every path out including a panic, before its connection closes.

use std::collections::HashMap;
use std::io::{IoSlice, Write};
use std::net::TcpStream as StdTcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes};
use prometheus::IntCounter;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::media::clock::Clock;
use crate::media::codec::Tracks;
use crate::media::frame::Frame;
use crate::media::ring::RingReader;
use crate::metrics::metrics;
use crate::protocols::rtmp::media::{frame_message, sequence_headers, RTMP_WIRE};
use crate::protocols::rtmp::SHARED_STREAM_ID;

/// Frames taken from the ring per round.
const ROUND_FRAMES: usize = 64;
/// Buffers per `writev`; a round rarely holds more than a handful (Linux allows 1,024).
const MAX_IOV: usize = 256;

/// What every channel writer of one listener shares.
#[derive(Clone, Copy, Debug)]
pub struct FanoutConfig {
    pub chunk_size: u32,
    /// Further behind live than this, the writer skips to the newest key frame (counted for
    /// each attached viewer), as a viewer would.
    pub max_lag: Duration,
    /// After a round, wait this long before reading the ring again (`rtmp.viewer_merge_write`).
    pub merge_write: Duration,
}

/// The channel writers of one listener, by ring.
pub struct Fanouts {
    config: FanoutConfig,
    protocol: &'static str,
    clock: Clock,
    tracker: TaskTracker,
    writers: Mutex<HashMap<usize, Arc<Fanout>>>,
}

/// Where an attached viewer stands when it takes its place back.
pub(crate) struct Handback {
    /// The unsent rest of a write the viewer's socket did not take whole; send it first.
    pub pending: Vec<Bytes>,
    /// Ring position of the next frame the viewer has not been sent.
    pub next: u64,
    /// Codec configuration of the last frame sent (for sequence headers on a change).
    pub last_tracks: Option<Arc<Tracks>>,
}

/// A viewer's membership of a channel writer. Dropping it detaches the viewer.
pub(crate) struct Attachment {
    fanout: Arc<Fanout>,
    id: u64,
    slot: Arc<Slot>,
}

/// What the writer leaves for one viewer it handed back.
struct Slot {
    handback: Mutex<Option<Handback>>,
    notify: Notify,
}

struct Fanout {
    key: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    members: Vec<Member>,
    /// Ring position the writer reads next; a viewer attaches only at or past it.
    position: u64,
    /// No more members: the task has ended (or is about to).
    closed: bool,
    next_id: u64,
}

struct Member {
    id: u64,
    sock: StdTcpStream,
    next: u64,
    last_tracks: Option<Arc<Tracks>>,
    slot: Arc<Slot>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here is left half-done across a panic that a later user could trip over.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fanouts {
    pub fn new(config: FanoutConfig, protocol: &'static str, clock: Clock, tracker: TaskTracker) -> Self {
        Fanouts { config, protocol, clock, tracker, writers: Mutex::new(HashMap::new()) }
    }

    /// Attach a viewer that has been sent everything before ring position `reader.position()`
    /// (the last of it with `last_tracks`), starting the ring's writer if it has none. `None`
    /// when the writer is already past that position (the viewer reads on by itself and tries
    /// again) or the socket cannot be shared.
    pub(crate) fn attach(
        self: &Arc<Self>,
        reader: &RingReader,
        sock: &TcpStream,
        last_tracks: Option<Arc<Tracks>>,
    ) -> Option<Attachment> {
        let dup = match socket2::SockRef::from(sock).try_clone() {
            Ok(s) => StdTcpStream::from(s),
            Err(e) => {
                debug!(error = %e, "cannot share the viewer socket with the channel writer");
                return None;
            }
        };
        let key = reader.ring_id();
        let slot = Arc::new(Slot { handback: Mutex::new(None), notify: Notify::new() });
        let mut member =
            Member { id: 0, sock: dup, next: reader.position(), last_tracks, slot: slot.clone() };
        // Twice at most: a writer found closing is replaced once.
        for _ in 0..2 {
            let fanout = {
                let mut writers = lock(&self.writers);
                writers.entry(key).or_insert_with(|| self.start(key, reader.fork())).clone()
            };
            let mut inner = lock(&fanout.inner);
            if inner.closed {
                drop(inner);
                let mut writers = lock(&self.writers);
                if writers.get(&key).is_some_and(|w| Arc::ptr_eq(w, &fanout)) {
                    writers.remove(&key);
                }
                continue;
            }
            if member.next < inner.position {
                return None;
            }
            inner.next_id += 1;
            member.id = inner.next_id;
            let id = member.id;
            inner.members.push(member);
            drop(inner);
            return Some(Attachment { fanout, id, slot });
        }
        None
    }

    fn start(self: &Arc<Self>, key: usize, reader: RingReader) -> Arc<Fanout> {
        let fanout = Arc::new(Fanout {
            key,
            inner: Mutex::new(Inner {
                members: Vec::new(),
                position: reader.position(),
                closed: false,
                next_id: 0,
            }),
        });
        let (this, f) = (self.clone(), fanout.clone());
        self.tracker.spawn(async move { this.run(f, reader).await });
        fanout
    }

    /// The writer's loop: wait for the ring, write the new frames to every member, repeat until
    /// no member is left or the stream has ended.
    async fn run(self: Arc<Self>, fanout: Arc<Fanout>, mut reader: RingReader) {
        let m = metrics();
        let dropped = m.frames_dropped.with_label_values(&["rtmp_play"]);
        let egress = m.egress_bytes.with_label_values(&[self.protocol]);
        let unwritable = m.frames_unwritable.with_label_values(&[self.protocol]);
        let handbacks = m.viewer_handbacks.with_label_values(&[self.protocol]);
        let mut round = Round::default();
        let mut hold_until: Option<Instant> = None;
        debug!("channel writer started");
        loop {
            if let Some(until) = hold_until.take() {
                tokio::time::sleep_until(until).await;
            }
            let open = reader.wait().await;
            let mut inner = lock(&fanout.inner);
            if inner.members.is_empty() {
                inner.closed = true;
                break;
            }
            round.frames.clear();
            let batch = match reader.read_batch_within(&mut round.frames, ROUND_FRAMES, self.config.max_lag) {
                Ok(b) => b,
                Err(_lag) => {
                    let n = reader.skip_to_newest_sync();
                    dropped.inc_by(n * inner.members.len() as u64);
                    debug!(skipped = n, "channel writer behind live; skipped to the newest key frame");
                    reader.read_batch(&mut round.frames, ROUND_FRAMES)
                }
            };
            dropped.inc_by(batch.skipped * inner.members.len() as u64);
            if round.frames.is_empty() {
                if batch.closed || !open {
                    // The stream ended: every viewer finishes by itself.
                    for member in inner.members.drain(..) {
                        member.hand_back(Vec::new());
                    }
                    inner.closed = true;
                    break;
                }
                continue;
            }
            let first_seq = reader.position() - round.frames.len() as u64;
            round.build(&self.config, &unwritable);
            let mut written = 0u64;
            let mut i = 0;
            while i < inner.members.len() {
                match round.write_to(&mut inner.members[i], first_seq, &self.config) {
                    Ok(n) => {
                        written += n;
                        i += 1;
                    }
                    Err((n, pending)) => {
                        written += n;
                        handbacks.inc();
                        inner.members.swap_remove(i).hand_back(pending);
                    }
                }
            }
            egress.inc_by(written);
            inner.position = reader.position();
            drop(inner);
            if !self.config.merge_write.is_zero() {
                hold_until = Some(self.clock.now() + self.config.merge_write);
            }
        }
        debug!("channel writer stopped");
        let mut writers = lock(&self.writers);
        if writers.get(&fanout.key).is_some_and(|w| Arc::ptr_eq(w, &fanout)) {
            writers.remove(&fanout.key);
        }
    }
}

/// One round's frames and their RTMP messages, built once for every member.
#[derive(Default)]
struct Round {
    frames: Vec<Arc<Frame>>,
    /// Messages in order: sequence headers where the configuration changes, then each frame.
    wire: Vec<Bytes>,
    /// For each frame, the index in `wire` of its first message (its headers, if any).
    starts: Vec<usize>,
    /// For each frame, whether sequence headers precede it in `wire`.
    headed: Vec<bool>,
    /// Configuration of the frame before the round's first: what a member at the writer's
    /// position already has.
    assumed: Option<Arc<Tracks>>,
    /// Configuration of the round's last frame (the next round's `assumed`).
    last: Option<Arc<Tracks>>,
}

impl Round {
    fn build(&mut self, cfg: &FanoutConfig, unwritable: &IntCounter) {
        self.wire.clear();
        self.starts.clear();
        self.headed.clear();
        self.assumed = self.last.take();
        let mut prev = self.assumed.clone();
        for f in &self.frames {
            self.starts.push(self.wire.len());
            let change = prev.as_ref().is_none_or(|t| !Arc::ptr_eq(t, &f.tracks));
            self.headed.push(change);
            if change {
                if let Err(e) =
                    sequence_headers(&f.tracks, f.dts, SHARED_STREAM_ID, cfg.chunk_size, &mut self.wire)
                {
                    warn!(error = %e, "cannot serialize sequence headers");
                    unwritable.inc();
                }
                prev = Some(f.tracks.clone());
            }
            let msg = f.wire.get_or_build(RTMP_WIRE, || {
                frame_message(f, SHARED_STREAM_ID, cfg.chunk_size)
                    .map_err(|e| {
                        // Once per frame, not per viewer: the shared slot remembers the failure.
                        warn!(error = %e, "frame cannot be sent over RTMP; skipped");
                        unwritable.inc();
                    })
                    .ok()
            });
            if let Some(b) = msg {
                self.wire.push(b);
            }
        }
        self.last = prev;
    }

    /// Write the round to one member without waiting: the bytes written, or (socket full, part
    /// written, or failed) the bytes written and the unsent rest, for the member's own task.
    fn write_to(
        &self,
        member: &mut Member,
        first_seq: u64,
        cfg: &FanoutConfig,
    ) -> Result<u64, (u64, Vec<Bytes>)> {
        let end_seq = first_seq + self.frames.len() as u64;
        if member.next >= end_seq {
            // Attached ahead of this round: it had read these frames by itself.
            return Ok(0);
        }
        let skip = member.next.saturating_sub(first_seq) as usize;
        let assumed = if skip == 0 { self.assumed.as_ref() } else { Some(&self.frames[skip - 1].tracks) };
        let up_to_date =
            matches!((assumed, member.last_tracks.as_ref()), (Some(a), Some(m)) if Arc::ptr_eq(a, m));
        let mut extra = Vec::new();
        if !up_to_date && !self.headed[skip] {
            // Rare: the member last saw another configuration than the round's messages assume.
            let f = &self.frames[skip];
            if let Err(e) = sequence_headers(&f.tracks, f.dts, SHARED_STREAM_ID, cfg.chunk_size, &mut extra) {
                warn!(error = %e, "cannot serialize sequence headers");
            }
        }
        member.next = end_seq;
        member.last_tracks = self.last.clone();
        let bufs: Vec<&Bytes> = extra.iter().chain(&self.wire[self.starts[skip]..]).collect();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let count = bufs.len().min(MAX_IOV);
        for (slot, b) in slices.iter_mut().zip(&bufs) {
            *slot = IoSlice::new(b);
        }
        // Full socket, interrupted or failed: the viewer's own task takes over and, on an
        // error, meets it on its next write and ends.
        let n = (&member.sock).write_vectored(&slices[..count]).unwrap_or(0);
        if n == total {
            return Ok(n as u64);
        }
        Err((n as u64, rest(&bufs, n)))
    }
}

/// What is left of `bufs` after the first `n` bytes.
fn rest(bufs: &[&Bytes], mut n: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(bufs.len());
    for b in bufs {
        if n >= b.len() {
            n -= b.len();
            continue;
        }
        let mut b = (*b).clone();
        b.advance(n);
        n = 0;
        out.push(b);
    }
    out
}

impl Member {
    fn hand_back(self, pending: Vec<Bytes>) {
        *lock(&self.slot.handback) =
            Some(Handback { pending, next: self.next, last_tracks: self.last_tracks.clone() });
        self.slot.notify.notify_one();
        // The duplicate descriptor closes here, before the viewer's task learns of it.
    }
}

impl Attachment {
    /// Resolves when the writer has handed the viewer back.
    pub(crate) async fn handed_back(&self) {
        self.slot.notify.notified().await
    }

    /// Leave the writer and take the viewer's place back.
    pub(crate) fn detach(self) -> Handback {
        let mut inner = lock(&self.fanout.inner);
        if let Some(i) = inner.members.iter().position(|m| m.id == self.id) {
            let m = inner.members.swap_remove(i);
            drop(inner);
            return Handback { pending: Vec::new(), next: m.next, last_tracks: m.last_tracks };
        }
        drop(inner);
        lock(&self.slot.handback).take().expect("a member not in the writer was handed back")
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        // After `detach` the member is gone already; otherwise (an early return, a panic) the
        // duplicate descriptor must not outlive the connection.
        let mut inner = lock(&self.fanout.inner);
        if let Some(i) = inner.members.iter().position(|m| m.id == self.id) {
            inner.members.swap_remove(i);
        }
    }
}
