//! The supervised actors and the connection tasks they own.
//!
//! ```text
//! System
//! ├── ChannelRegistry (actix Supervisor)  name -> Addr<Channel>; authorizes; never on the frame path
//! │   └── Channel (one per live channel)   owns its FrameRing; grants RingWriter / RingReader
//! ├── RTMP connections × N                 one task each: an ingest session or a viewer session
//! └── HTTP (actix-web workers)             /metrics, /healthz, /readyz
//! ```
//!
//! Actor messages are control only (`AddPublisher`, `AddReader`, `PublisherLeft`, `StopChannel`);
//! media travels through the channel's `FrameRing`. Connection sessions are tokio tasks on the
//! media runtime rather than actix actors: an actix actor is pinned to one arbiter thread and
//! its mailbox would sit on the frame path, while a task per connection spreads over every core
//! and reads the ring directly. The `Channel` still owns their lifecycle: it hands each session a
//! ring handle and holds the publisher's cancellation token, so it can cut a session off.

pub mod channel;
pub mod hls;
pub mod ingest;
pub mod listen;
pub mod registry;
pub mod supervise;
pub mod viewer;
pub mod watch_history;

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-unique id for a connection/session, used in logs and to match `PublisherLeft`.
pub fn next_session_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
