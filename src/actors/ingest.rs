//! `IngestSession`: one publisher's live session, whatever protocol carries it.
//!
//! Data flow: a protocol adapter (`ingest/rtmp.rs`, `ingest/srt.rs`, `ingest/rtsp.rs`, `ingest/whip.rs`) owns
//! the connection, turns wire packets into media-model [`Frame`]s with the sans-IO code in
//! `protocols`, and hands them to this session, which owns the channel's `RingWriter`:
//!
//! ```text
//! socket -> adapter (protocols::* demuxer) -> IngestSession::push -> FrameRing (Channel)
//! ```
//!
//! What every protocol shares lives here, once: authorization of the stream key through the
//! `ChannelRegistry` (two-step lookup: the registry resolves, then the session talks to the
//! `Channel`), the publish grant (`AddPublisher`, refused while another publisher is live,
//! resumed within the reconnect grace), counting (`tidecast_ingest_sessions`,
//! `tidecast_ingest_bytes_total`, `tidecast_auth_failures_total`, all by protocol), the
//! cancellation the channel uses to cut the publisher off, and `PublisherLeft` when the session
//! ends, on every exit path (it is sent from `Drop`).
//!
//! Backpressure rule 1: `push` is synchronous and never waits for a consumer.

pub mod rtmp;
pub mod rtsp;
pub mod srt;
pub mod whip;

use std::sync::Arc;

use actix::Addr;
use prometheus::IntCounter;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tracing::info;

use super::channel::{AddPublisher, Channel, PublisherLeft};
use super::next_session_id;
use super::registry::{AuthorizePublish, AuthorizePull, ChannelRegistry};
use crate::error::{Error, ErrorKind, Result};
use crate::media::codec::Tracks;
use crate::media::frame::Frame;
use crate::media::ring::RingWriter;
use crate::metrics::{metrics, GaugeGuard};
use crate::protocols::rtmp::Secret;
use crate::store::ChannelRecord;

/// Why a publisher's session ended, for its one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestEnd {
    /// The publisher said it was done (RTMP `FCUnpublish`/`deleteStream`, SRT shutdown, WHIP
    /// `DELETE`).
    Finished,
    /// The connection closed without a goodbye.
    Disconnected,
    /// The channel cut the publisher off (channel stop, server shutdown).
    CutOff,
    /// The channel actor died; the publisher is closed so it reconnects to a fresh one.
    ChannelGone,
    /// Nothing arrived for the protocol's idle timeout.
    Idle,
    /// A malformed packet or an I/O error; the reason says where.
    Failed(String),
}

/// One live publisher. Dropping it tells the channel the publisher left.
pub struct IngestSession {
    protocol: &'static str,
    session_id: u64,
    channel_name: String,
    channel: Addr<Channel>,
    writer: RingWriter,
    cancel: CancellationToken,
    resumed: bool,
    bytes: IntCounter,
    _live: GaugeGuard,
    _listed: crate::actors::roster::Listed,
}

impl IngestSession {
    /// Authorize `stream_key` and take the channel's writer. A wrong key is
    /// `Unauthenticated` (counted in `tidecast_auth_failures_total{protocol}`); a channel
    /// already being published is `AlreadyExists`; a degraded channel is `Unavailable`. Each
    /// protocol turns the error into its own refusal (`ErrorKind::rtmp_status` and friends).
    pub async fn start(
        registry: &Addr<ChannelRegistry>,
        protocol: &'static str,
        stream_key: Secret,
        shutdown: &CancellationToken,
    ) -> Result<IngestSession> {
        IngestSession::start_checked(registry, protocol, stream_key, None, shutdown).await
    }

    /// [`IngestSession::start`] where the publisher also named the channel (WHIP's
    /// `/whip/<channel>`): a key of another channel is refused like a wrong one.
    pub async fn start_checked(
        registry: &Addr<ChannelRegistry>,
        protocol: &'static str,
        stream_key: Secret,
        expected: Option<&str>,
        shutdown: &CancellationToken,
    ) -> Result<IngestSession> {
        let authorized = registry
            .send(AuthorizePublish { stream_key })
            .await
            .map_err(Error::from)
            .and_then(|r| r)
            .and_then(|(record, channel)| match expected {
                Some(name) if name != record.name => {
                    Err(Error::new(ErrorKind::Unauthenticated, "the stream key is not this channel's"))
                }
                _ => Ok((record, channel)),
            });
        match authorized {
            Ok((record, channel)) => IngestSession::grant(protocol, record, channel, shutdown).await,
            Err(e) => {
                if e.kind == ErrorKind::Unauthenticated {
                    metrics().auth_failures.with_label_values(&[protocol]).inc();
                }
                Err(e)
            }
        }
    }

    /// A source the server pulls for `channel` (RTSP pull): no key to check, the channel's
    /// configuration named the source. Refused like a publisher when the channel is live.
    pub async fn start_pull(
        registry: &Addr<ChannelRegistry>,
        protocol: &'static str,
        channel: &str,
        shutdown: &CancellationToken,
    ) -> Result<IngestSession> {
        let (record, addr) = registry
            .send(AuthorizePull { name: channel.to_owned() })
            .await
            .map_err(Error::from)
            .and_then(|r| r)?;
        IngestSession::grant(protocol, record, addr, shutdown).await
    }

    /// Take the channel's writer (`AddPublisher`).
    async fn grant(
        protocol: &'static str,
        record: ChannelRecord,
        channel: Addr<Channel>,
        shutdown: &CancellationToken,
    ) -> Result<IngestSession> {
        let session_id = next_session_id();
        let cancel = shutdown.child_token();
        let grant = channel
            .send(AddPublisher { session_id, cancel: cancel.clone(), visibility: record.visibility })
            .await
            .map_err(Error::from)
            .and_then(|r| r)?;
        let listed = crate::actors::roster::Listed::new(
            &record.name,
            crate::actors::roster::Role::Publisher,
            protocol,
        );
        Ok(IngestSession {
            protocol,
            session_id,
            channel_name: record.name,
            channel,
            writer: grant.writer,
            cancel,
            resumed: grant.resumed,
            bytes: metrics().ingest_bytes.with_label_values(&[protocol]),
            _live: GaugeGuard::new(metrics().ingest_sessions.with_label_values(&[protocol])),
            _listed: listed,
        })
    }

    pub fn channel_name(&self) -> &str {
        &self.channel_name
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// This session continues a live session whose publisher dropped within the grace period.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The codec configuration in force on the channel's ring.
    pub fn tracks(&self) -> Arc<Tracks> {
        self.writer.tracks()
    }

    /// A new codec configuration is in force; the frames that follow carry `tracks`.
    pub fn set_tracks(&mut self, tracks: Arc<Tracks>) {
        self.writer.set_tracks(tracks);
    }

    /// Hand a frame to every consumer. Synchronous; never waits.
    pub fn push(&mut self, frame: Frame) {
        self.writer.push(frame);
    }

    /// Count bytes read from the publisher's connection (wire bytes, all overhead included).
    pub fn received(&self, n: usize) {
        self.bytes.inc_by(n as u64);
    }

    /// Resolves when the channel cuts the publisher off or the server shuts down.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The channel actor is still there (it can die from a bug; the registry replaces it).
    pub fn channel_alive(&self) -> bool {
        self.channel.connected()
    }

    /// End the session with one log line; `PublisherLeft` follows from `Drop`.
    pub fn finish(self, end: &IngestEnd) {
        match end {
            IngestEnd::Failed(reason) => info!(protocol = self.protocol, %reason, "publisher session failed"),
            other => info!(protocol = self.protocol, end = ?other, "publisher session ended"),
        }
    }
}

impl Drop for IngestSession {
    fn drop(&mut self) {
        // Not a hot path: once per session.
        self.channel.do_send(PublisherLeft { session_id: self.session_id });
    }
}
