//! # tidecast
//!
//! An actor-based live and VOD media server: broadcasters publish over RTMP, RTMPS or SRT, and
//! IP cameras are pulled over RTSP (WHIP is planned); viewers play over LL-HLS (HTTP or HTTPS),
//! RTMP(S) or SRT (WHEP is planned), operators scrape Prometheus metrics and configure one TOML file. The map of the
//! house is `ARCHITECTURE.md`.
//!
//! ## Data flow
//!
//! ```text
//!  OBS/ffmpeg --RTMP(S)/SRT--> IngestSession --> FrameRing per rendition (Channel) --+--> HlsPackager --> LL-HLS
//!  camera <--RTSP pull--     (ingest::rtmp, ::srt, ::rtsp)                          +--> ViewerSession --> RTMP(S) / SRT play
//!                                                                                   +--> restream push --> rtmp:// rtmps:// srt:// destinations
//!                                                                                   +--> TranscodeLadder --> ffmpeg --> FrameRing per rung
//!                                                                                   |     (each rung: an HlsPackager cut in step with the source's)
//!                                                                                   +--> (per rendition) ArchiveWriter --> recording on disk
//!                                                                                         (the LL-HLS windows' CMAF)   --> /vod HLS + DASH, DVR; moved to S3
//! ```
//!
//! Bytes in, events out: protocol code in [`protocols`] is sans-IO (bytes and time in, typed
//! events or bytes out). Sockets, timers and the database live in [`actors`], [`http`], [`app`]
//! and [`store`]. Every consumer of live media reads it through a [`media::RingReader`]; actor
//! mailboxes carry control only, and the publisher never waits for a consumer. Each protocol is
//! one adapter on the shared [`actors::ingest::IngestSession`] and
//! [`actors::viewer::ViewerSession`].
//!
//! ## Actor tree
//!
//! ```text
//! System
//! ├── ChannelRegistry (supervised)      channel name -> Addr<Channel>; authorizes; never on the frame path
//! │   └── Channel (one per live channel) renditions (a FrameRing each); grants RingWriter / RingReader
//! │       ├── HlsPackager × rendition    supervised: ring -> segmenter -> CMAF -> LL-HLS window
//! │       ├── LL-HLS viewer sweep        supervised: counts HLS viewers, retires ended windows
//! │       ├── restream                   supervised: one push task per enabled destination (own RingReader, retries with backoff)
//! │       ├── transcode ladder           supervised: one ffmpeg (rungs + Opus) fed from the source ring, restarted with backoff
//! │       └── archive                    supervised: the session's recording (a video); a writer per rendition follows its LL-HLS window
//! ├── RTMP/RTMPS listeners + connections × N   IngestSession (publish) or ViewerSession (play), a task each
//! │   └── RTMP channel writer × ring     writes each frame to every plain-RTMP viewer that keeps up
//! ├── SRT listener + connections × N    the same sessions; stream ids checked in the SRT handshake
//! ├── pull × source                      RTSP camera: IngestSession like a publisher; always or on demand, backoff
//! ├── WatchHistory                       buffers watch progress, writes it in batches (api)
//! ├── archive jobs                       recovery of crashed recordings (at start), retention, moves to S3
//! └── HTTP                               /api/v1, LL-HLS + DVR, /vod (HLS, DASH), /watch, /metrics, /healthz, /readyz
//! ```
//!
//! ## Glossary
//!
//! - **channel**: a named live stream owned by a user, published with its secret stream key.
//! - **stream key**: the channel's publishing secret; stored only as a SHA-256 hash.
//! - **rendition**: one encoding of a channel (`source` is the publisher's own).
//! - **ladder** / **rung**: the lower renditions ffmpeg makes from the source (`480p`, `360p`),
//!   cut at the source's part and segment boundaries (`media::follow`).
//! - **track**: the video or audio elementary stream of a rendition ([`media::Tracks`]).
//! - **frame**: one access unit of one track ([`media::Frame`]).
//! - **GOP**: a key frame and the frames up to the next one; viewers start and resync on GOPs.
//! - **part** / **segment** / **MSN**: LL-HLS units (a part is a fraction of a segment; MSN is
//!   the media sequence number).
//! - **session**: one connection's life (a publisher's ingest session or a viewer session); a
//!   *live session* of a channel spans publisher reconnects within the grace period.
//! - **source** (pulled): a camera the server connects to for a channel (RTSP), instead of a
//!   publisher connecting to the server.
//! - **video**: a VOD item, uploaded or archived from a live session.
//! - **recording**: a live session archived as it streams (`actors::archive`): a video, its
//!   files (a journal, init segments and segments per rendition) and its `recordings` row.
//! - **DVR**: seeking back into a live session, through playlists built from its recording.
//! - **visibility**: who may play a channel or video: `public`, `subscribers`, `private`.
//! - **plan** / **subscription**: what a user pays for (config) / their grant of it (store).
//! - **access token**: the API's JWT bearer token; **playback token**: a signed, expiring
//!   capability to play one channel or video, carried in playlist URIs (`?token=`).

pub mod actors;
pub mod admission;
pub mod app;
pub mod auth;
pub mod billing;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod protocols;
pub mod shared_state;
pub mod store;
pub mod tls;

pub use error::{Error, ErrorKind, Result};
