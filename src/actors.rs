//! The supervised actors and the connection tasks they own.
//!
//! ```text
//! System
//! ├── ChannelRegistry (actix Supervisor)  name -> Addr<Channel>; authorizes; never on the frame path
//! │   └── Channel (one per live channel)   renditions (FrameRing each); publisher slot
//! │       ├── HlsPackager × rendition       supervised task (supervise.rs)
//! │       ├── LL-HLS viewer sweep           supervised task
//! │       ├── restream                      supervised task; one push task per destination
//! │       ├── transcode ladder              supervised task; one ffmpeg
//! │       └── archive                       supervised task; the session's recording, a writer per rendition
//! ├── listen/rtmp                          accept, admit, negotiate; then one task per connection:
//! │   ├── IngestSession + ingest/rtmp       a publisher
//! │   └── ViewerSession + viewer/rtmp       a viewer
//! ├── WatchHistory                         batched watch-progress writes
//! └── HTTP (actix-web workers)             /api/v1, LL-HLS, /metrics, /healthz, /readyz
//! ```
//!
//! Actor messages are control only (`AddPublisher`, `AddReader`, `PublisherLeft`, `StopChannel`);
//! media travels through the channel's rings. Connection sessions and channel outputs are tokio
//! tasks on the media runtime rather than actix actors: an actix actor is pinned to one arbiter
//! thread and its mailbox would sit on the frame path, while a task per connection spreads over
//! every core and reads the ring directly. The `Channel` still owns their lifecycle: it hands
//! each session a ring handle, holds the publisher's cancellation token, and supervises its
//! outputs.
//!
//! Adding a protocol: a listener in `listen/`, an ingest adapter in `ingest/` and/or an egress
//! adapter in `viewer/`, each driving the shared session; the codec lives in `protocols`.

pub mod archive;
pub mod channel;
pub mod hls;
pub mod ingest;
pub mod listen;
pub mod pull;
pub mod registry;
pub mod restream;
pub mod roster;
pub mod supervise;
pub mod transcode;
pub mod viewer;
pub mod watch_history;
pub mod webrtc;

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-unique id for a connection/session, used in logs and to match `PublisherLeft`.
pub fn next_session_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
