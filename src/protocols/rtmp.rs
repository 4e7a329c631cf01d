//! Sans-IO RTMP server connection: a thin adapter over rml_rtmp's `Handshake` and
//! `ServerSession` that adds our hard limits and turns its results into [`ConnEvent`]s.
//!
//! Bytes in, events and bytes out: the connection tasks (`actors::listen::rtmp`, `actors::ingest::rtmp`, `actors::viewer::rtmp`) own the socket and
//! feeds whatever it read to [`RtmpServerConn::handle_input`]; every response rml_rtmp wants to
//! send is appended to the caller's output buffer in order (rml_rtmp requires that all its
//! responses go out in order and nothing else is interleaved *on its chunk streams*).
//!
//! Media for viewers does not go through the session's serializer: [`media_chunks`] serializes
//! one FLV tag into RTMP chunks on fixed chunk streams with a type-0 header first, so the same
//! bytes are valid on every viewer connection and are built once per frame, not once per viewer
//! (see `crate::media::frame::WireCache` and [`media::RTMP_WIRE`]). The session's own chunk streams (2, 3 and 6: control, data,
//! commands) never carry audio (5) or video (4), so the two never disturb each other's header
//! compression.
//!
//! Limits enforced here (Adobe RTMP spec 1.0 §5.4.1 lets a peer announce chunk sizes up to
//! 2^31-1 and messages up to 2^24-1 bytes; we cap both so one connection cannot claim megabytes
//! of buffer): announced chunk size (and never 0), declared message length (refused at its
//! header, [`chunk`]), bytes buffered without a complete message, stream/app name length, and
//! AMF0 nesting depth ([`amf0`]).
//!
//! rml_rtmp is wrapped, not forked: every byte goes through our own checks ([`chunk::ChunkWatch`]
//! on headers, and [`amf0::check_message`] on each complete AMF message it hands out) before the
//! session sees it, so its unbounded AMF0 recursion and its panics on short
//! commands are never reached. See `amf0.rs` for why a pre-check beats a fork.

pub mod amf0;
pub mod chunk;
pub mod client;
pub mod media;

use std::fmt;

use bytes::Bytes;
use rml_rtmp::chunk_io::{ChunkSerializationError, ChunkSerializer};
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionError, ServerSessionEvent, ServerSessionResult,
};
use rml_rtmp::time::RtmpTimestamp;

use self::amf0::Amf0Error;
use self::chunk::{ChunkError, ChunkWatch};

/// RTMP message type ids (RTMP spec §7.1).
pub const MSG_AUDIO: u8 = 8;
pub const MSG_VIDEO: u8 = 9;

/// The message stream id rml_rtmp gives the first `createStream` of a connection; ffmpeg, OBS,
/// VLC and ffplay all play on it. Shared media chunks are built for this id only.
pub const SHARED_STREAM_ID: u32 = 1;

/// Hard limits for one connection.
#[derive(Clone, Copy, Debug)]
pub struct RtmpLimits {
    /// Largest chunk size a peer may announce with SetChunkSize.
    pub max_chunk_size: u32,
    /// Largest message we buffer. Enforced as "bytes received without completing a message".
    pub max_message_size: usize,
    /// Longest app or stream name (stream keys included).
    pub max_name_len: usize,
    /// Chunk size we send with.
    pub out_chunk_size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("handshake failed after {received} bytes: {source}")]
    Handshake {
        received: u64,
        #[source]
        source: HandshakeError,
    },
    #[error("session error after {received} bytes: {source}")]
    Session {
        received: u64,
        #[source]
        source: ServerSessionError,
    },
    #[error("peer announced chunk size {requested}, above the limit of {limit}")]
    ChunkSizeTooLarge { requested: u32, limit: u32 },
    #[error("{buffered} bytes received without a complete message (limit {limit})")]
    MessageTooLarge { buffered: usize, limit: usize },
    #[error("{what} name is {len} bytes long (limit {limit})")]
    NameTooLong { what: &'static str, len: usize, limit: usize },
    #[error("chunk header refused after {received} bytes: {source}")]
    Framing {
        received: u64,
        #[source]
        source: ChunkError,
    },
    #[error("AMF message (type {type_id}) refused after {received} bytes: {source}")]
    Amf0 {
        received: u64,
        type_id: u8,
        #[source]
        source: Amf0Error,
    },
    #[error("media tag rejected: {0}")]
    Media(#[from] media::MediaError),
    #[error("message serialization failed: {0}")]
    Serialize(#[from] ChunkSerializationError),
}

impl RtmpError {
    /// Protocol violations are the peer's fault and logged at info; the rest are ours.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, RtmpError::Serialize(_))
    }
}

/// A string that must never be printed: stream keys arrive as RTMP stream names.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// What the connection asks of the application.
#[derive(Debug, Clone)]
pub enum ConnEvent {
    /// `connect`: answer with `accept` or `reject`.
    ConnectRequested { request_id: u32, app: String },
    /// `publish`: the stream name is the broadcaster's stream key.
    PublishRequested { request_id: u32, app: String, stream_key: Secret },
    /// `play`: the stream name is the channel name.
    PlayRequested { request_id: u32, app: String, name: String, stream_id: u32 },
    /// An FLV audio tag body from the publisher.
    Audio { data: Bytes, timestamp: RtmpTimestamp },
    /// An FLV video tag body from the publisher.
    Video { data: Bytes, timestamp: RtmpTimestamp },
    /// The publisher sent `FCUnpublish`/`deleteStream`/`closeStream`.
    PublishFinished,
    /// The viewer stopped playing.
    PlayFinished,
}

/// Why `check_control` refused input, before it is located by byte offset.
enum Refusal {
    Chunk(ChunkError),
    Amf0 { type_id: u8, source: amf0::Amf0Error },
}

impl From<ChunkError> for Refusal {
    fn from(e: ChunkError) -> Self {
        Refusal::Chunk(e)
    }
}

enum Phase {
    Handshake(Box<Handshake>),
    Session(Box<ServerSession>),
}

/// One RTMP server-side connection, without I/O.
pub struct RtmpServerConn {
    phase: Phase,
    limits: RtmpLimits,
    received: u64,
    /// Bytes fed since rml_rtmp last raised an application event.
    pending: usize,
    /// Sees every byte the session sees, before the session does: refuses a declared length over
    /// `max_message_size` when its header arrives, reads the peer's SetChunkSize (rml_rtmp 0.8
    /// applies them internally without raising `ClientChunkSizeChanged`), and hands every AMF
    /// body to [`amf0::check_message`] before rml_rtmp decodes it. Media is not copied.
    headers: ChunkWatch,
}

impl RtmpServerConn {
    pub fn new(limits: RtmpLimits) -> Self {
        RtmpServerConn {
            phase: Phase::Handshake(Box::new(Handshake::new(PeerType::Server))),
            limits,
            received: 0,
            pending: 0,
            headers: ChunkWatch::new(limits.max_message_size, limits.max_chunk_size),
        }
    }

    /// Vet `input` before the session sees any of it: chunk headers (declared lengths,
    /// SetChunkSize values, RTMP spec §5.3.1 and §5.4.1), then every complete message, whose AMF
    /// body must pass the bounded walk in [`amf0`] because rml_rtmp's decoder recurses unbounded.
    fn check_control(&mut self, input: &[u8], start: u64) -> Result<(), RtmpError> {
        self.headers
            .feed(input, |type_id, body| {
                amf0::check_message(type_id, body).map_err(|source| Refusal::Amf0 { type_id, source })
            })
            .map_err(|r| match r {
                Refusal::Chunk(source) => RtmpError::Framing { received: start, source },
                Refusal::Amf0 { type_id, source } => RtmpError::Amf0 { received: start, type_id, source },
            })
    }

    /// Change the largest message length a chunk header may declare, from the next header on
    /// (`RtmpLimits::max_message_size` until then). The listener starts every connection with a
    /// small one (commands are small) and raises it to `max_message_size` only for an accepted
    /// publisher, so an unauthenticated peer cannot make rml_rtmp reserve megabytes per
    /// connection. The bytes-without-an-event bound stays at `max_message_size`: a player's
    /// commands (createStream, acknowledgements) raise no event, and must not add up to a close.
    pub fn set_max_declared_length(&mut self, max: usize) {
        self.headers.set_max_message_size(max);
    }

    /// Total bytes fed so far (for error locations).
    pub fn received(&self) -> u64 {
        self.received
    }

    pub fn handshake_done(&self) -> bool {
        matches!(self.phase, Phase::Session(_))
    }

    /// Feed bytes from the peer. Responses are appended to `out`, application events to `events`.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        events: &mut Vec<ConnEvent>,
    ) -> Result<(), RtmpError> {
        let start = self.received;
        self.received += input.len() as u64;
        match &mut self.phase {
            Phase::Handshake(hs) => {
                let res = hs
                    .process_bytes(input)
                    .map_err(|source| RtmpError::Handshake { received: start, source })?;
                match res {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        out.extend_from_slice(&response_bytes);
                        Ok(())
                    }
                    HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                        out.extend_from_slice(&response_bytes);
                        let mut config = ServerSessionConfig::new();
                        config.chunk_size = self.limits.out_chunk_size;
                        let (session, initial) = ServerSession::new(config)
                            .map_err(|source| RtmpError::Session { received: start, source })?;
                        self.phase = Phase::Session(Box::new(session));
                        self.apply(initial, out, events)?;
                        if remaining_bytes.is_empty() {
                            Ok(())
                        } else {
                            self.received -= remaining_bytes.len() as u64;
                            self.handle_input(&remaining_bytes, out, events)
                        }
                    }
                }
            }
            Phase::Session(_) => {
                self.check_control(input, start)?;
                let Phase::Session(session) = &mut self.phase else { unreachable!("matched above") };
                self.pending += input.len();
                let results = session
                    .handle_input(input)
                    .map_err(|source| RtmpError::Session { received: start, source })?;
                // Only a completed message that reaches the application counts as progress:
                // responses do not, since a peer announcing a 1-byte acknowledgement window
                // makes rml_rtmp answer every read with an Acknowledgement.
                if results.iter().any(|r| matches!(r, ServerSessionResult::RaisedEvent(_))) {
                    self.pending = 0;
                } else if self.pending > self.limits.max_message_size {
                    return Err(RtmpError::MessageTooLarge {
                        buffered: self.pending,
                        limit: self.limits.max_message_size,
                    });
                }
                self.apply(results, out, events)
            }
        }
    }

    /// Accept an outstanding connect/publish/play request.
    pub fn accept(&mut self, request_id: u32, out: &mut Vec<u8>) -> Result<(), RtmpError> {
        let received = self.received;
        let results = self
            .session()?
            .accept_request(request_id)
            .map_err(|source| RtmpError::Session { received, source })?;
        self.apply(results, out, &mut Vec::new())
    }

    /// Refuse an outstanding request with an `onStatus` error `code` (e.g.
    /// `NetConnection.Connect.Rejected`). The description must not contain a secret.
    pub fn reject(
        &mut self,
        request_id: u32,
        code: &str,
        description: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), RtmpError> {
        let received = self.received;
        let results = self
            .session()?
            .reject_request(request_id, code, description)
            .map_err(|source| RtmpError::Session { received, source })?;
        self.apply(results, out, &mut Vec::new())
    }

    /// Tell a viewer its stream ended (`NetStream.Play.UnpublishNotify` / stop).
    pub fn finish_playing(&mut self, stream_id: u32, out: &mut Vec<u8>) -> Result<(), RtmpError> {
        let received = self.received;
        let packet = self
            .session()?
            .finish_playing(stream_id)
            .map_err(|source| RtmpError::Session { received, source })?;
        out.extend_from_slice(&packet.bytes);
        Ok(())
    }

    fn session(&mut self) -> Result<&mut ServerSession, RtmpError> {
        match &mut self.phase {
            Phase::Session(s) => Ok(s),
            Phase::Handshake(_) => Err(RtmpError::Session {
                received: self.received,
                source: ServerSessionError::InvalidRequestId,
            }),
        }
    }

    fn check_name(&self, what: &'static str, name: &str) -> Result<(), RtmpError> {
        if name.len() > self.limits.max_name_len {
            return Err(RtmpError::NameTooLong { what, len: name.len(), limit: self.limits.max_name_len });
        }
        Ok(())
    }

    fn apply(
        &mut self,
        results: Vec<ServerSessionResult>,
        out: &mut Vec<u8>,
        events: &mut Vec<ConnEvent>,
    ) -> Result<(), RtmpError> {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
                ServerSessionResult::RaisedEvent(ev) => {
                    if let Some(ev) = self.convert(ev)? {
                        events.push(ev);
                    }
                }
                // Messages rml_rtmp does not model (e.g. Aggregate) carry nothing we need.
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn convert(&mut self, ev: ServerSessionEvent) -> Result<Option<ConnEvent>, RtmpError> {
        Ok(Some(match ev {
            ServerSessionEvent::ClientChunkSizeChanged { new_chunk_size } => {
                if new_chunk_size > self.limits.max_chunk_size {
                    return Err(RtmpError::ChunkSizeTooLarge {
                        requested: new_chunk_size,
                        limit: self.limits.max_chunk_size,
                    });
                }
                return Ok(None);
            }
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                self.check_name("app", &app_name)?;
                ConnEvent::ConnectRequested { request_id, app: app_name }
            }
            ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
                self.check_name("stream", &stream_key)?;
                ConnEvent::PublishRequested { request_id, app: app_name, stream_key: Secret(stream_key) }
            }
            ServerSessionEvent::PlayStreamRequested {
                request_id, app_name, stream_key, stream_id, ..
            } => {
                self.check_name("stream", &stream_key)?;
                ConnEvent::PlayRequested { request_id, app: app_name, name: stream_key, stream_id }
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                ConnEvent::Audio { data, timestamp }
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                ConnEvent::Video { data, timestamp }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => ConnEvent::PublishFinished,
            ServerSessionEvent::PlayStreamFinished { .. } => ConnEvent::PlayFinished,
            // releaseStream, FCPublish, onMetaData, acks, pings: nothing for the application.
            _ => return Ok(None),
        }))
    }
}

/// Serialize one FLV tag body as an RTMP message on `stream_id`, chunked at `chunk_size`, with a
/// type-0 (full) header on the first chunk and type-3 on continuations: valid on any connection
/// that uses `chunk_size`, whatever was sent before, so one buffer serves every viewer.
pub fn media_chunks(
    type_id: u8,
    timestamp: RtmpTimestamp,
    stream_id: u32,
    chunk_size: u32,
    tag: Bytes,
) -> Result<Bytes, ChunkSerializationError> {
    let mut ser = ChunkSerializer::new();
    // The SetChunkSize packet it returns is for a peer; here we only want the serializer state.
    ser.set_max_chunk_size(chunk_size, RtmpTimestamp::new(0))?;
    let payload = MessagePayload { timestamp, type_id, message_stream_id: stream_id, data: tag };
    Ok(Bytes::from(ser.serialize(&payload, false, false)?.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
    };

    fn limits() -> RtmpLimits {
        RtmpLimits {
            max_chunk_size: 65536,
            max_message_size: 1 << 20,
            max_name_len: 64,
            out_chunk_size: 4096,
        }
    }

    /// Drive a full client handshake + connect + publish through `conn`, splitting every byte
    /// stream at `split` to check that chunking of the input does not change the events.
    fn publish_flow(split: usize) -> Vec<ConnEvent> {
        let mut conn = RtmpServerConn::new(limits());
        let mut client_hs = Handshake::new(PeerType::Client);
        let mut to_server = client_hs.generate_outbound_p0_and_p1().unwrap();
        let mut events = Vec::new();
        let mut to_client = Vec::new();
        let feed =
            |conn: &mut RtmpServerConn, bytes: &[u8], out: &mut Vec<u8>, events: &mut Vec<ConnEvent>| {
                for piece in bytes.chunks(split.max(1)) {
                    conn.handle_input(piece, out, events).unwrap();
                }
            };
        // Handshake.
        let mut client_done = false;
        let mut leftover = Vec::new();
        while !client_done {
            feed(&mut conn, &to_server, &mut to_client, &mut events);
            to_server.clear();
            match client_hs.process_bytes(&to_client).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    to_server = response_bytes;
                    leftover = remaining_bytes;
                    client_done = true;
                }
            }
            to_client.clear();
        }
        feed(&mut conn, &to_server, &mut to_client, &mut events);
        to_client.splice(0..0, leftover);
        let (mut client, init) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut to_server = Vec::new();
        for r in init {
            if let ClientSessionResult::OutboundResponse(p) = r {
                to_server.extend(p.bytes);
            }
        }
        for r in client.handle_input(&to_client).unwrap() {
            if let ClientSessionResult::OutboundResponse(p) = r {
                to_server.extend(p.bytes);
            }
        }
        to_client.clear();
        if let ClientSessionResult::OutboundResponse(p) = client.request_connection("live".into()).unwrap() {
            to_server.extend(p.bytes);
        }
        let pump = |conn: &mut RtmpServerConn,
                    client: &mut ClientSession,
                    to_server: &mut Vec<u8>,
                    events: &mut Vec<ConnEvent>| {
            for _ in 0..10 {
                let mut out = Vec::new();
                let before = events.len();
                feed(conn, to_server, &mut out, events);
                to_server.clear();
                for ev in events[before..].iter().cloned() {
                    match ev {
                        ConnEvent::ConnectRequested { request_id, .. }
                        | ConnEvent::PublishRequested { request_id, .. } => {
                            conn.accept(request_id, &mut out).unwrap()
                        }
                        _ => {}
                    }
                }
                if out.is_empty() {
                    break;
                }
                for r in client.handle_input(&out).unwrap() {
                    match r {
                        ClientSessionResult::OutboundResponse(p) => to_server.extend(p.bytes),
                        ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                            if let ClientSessionResult::OutboundResponse(p) = client
                                .request_publishing("secret-key".into(), PublishRequestType::Live)
                                .unwrap()
                            {
                                to_server.extend(p.bytes);
                            }
                        }
                        _ => {}
                    }
                }
            }
        };
        pump(&mut conn, &mut client, &mut to_server, &mut events);
        if let ClientSessionResult::OutboundResponse(p) = client
            .publish_video_data(
                Bytes::from_static(&[0x17, 1, 0, 0, 0, 1, 2, 3]),
                RtmpTimestamp::new(40),
                false,
            )
            .unwrap()
        {
            to_server.extend(p.bytes);
        }
        pump(&mut conn, &mut client, &mut to_server, &mut events);
        events
    }

    fn summary(events: &[ConnEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                ConnEvent::ConnectRequested { app, .. } => format!("connect {app}"),
                ConnEvent::PublishRequested { app, stream_key, .. } => {
                    format!("publish {app} {}", stream_key.0)
                }
                ConnEvent::Video { data, timestamp } => format!("video {} {}", data.len(), timestamp.value),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn publish_flow_yields_events_whatever_the_input_split() {
        let whole = summary(&publish_flow(usize::MAX));
        assert_eq!(whole, vec!["connect live", "publish live secret-key", "video 8 40"]);
        for split in [1, 7, 128, 1537] {
            assert_eq!(summary(&publish_flow(split)), whole, "split {split}");
        }
    }

    /// A connection past the handshake, ready for chunks.
    fn handshaken() -> RtmpServerConn {
        let mut conn = RtmpServerConn::new(limits());
        let mut client_hs = Handshake::new(PeerType::Client);
        let mut to_server = client_hs.generate_outbound_p0_and_p1().unwrap();
        for _ in 0..4 {
            let mut to_client = Vec::new();
            conn.handle_input(&to_server, &mut to_client, &mut Vec::new()).unwrap();
            match client_hs.process_bytes(&to_client).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
                HandshakeProcessResult::Completed { response_bytes, .. } => {
                    conn.handle_input(&response_bytes, &mut Vec::new(), &mut Vec::new()).unwrap();
                    assert!(conn.handshake_done());
                    return conn;
                }
            }
        }
        panic!("handshake did not complete");
    }

    /// One message as a client would chunk it (128-byte chunks, the initial size).
    fn chunked(type_id: u8, data: Vec<u8>) -> Vec<u8> {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id,
            message_stream_id: 0,
            data: data.into(),
        };
        ChunkSerializer::new().serialize(&payload, true, false).unwrap().bytes
    }

    use super::amf0::nested_connect as deep_connect;

    #[test]
    fn deeply_nested_connect_is_refused_not_a_stack_overflow() {
        for kind in [0x03, 0x08, 0x0A] {
            let mut conn = handshaken();
            let bytes = chunked(20, deep_connect(kind, 5_000));
            let r = conn.handle_input(&bytes, &mut Vec::new(), &mut Vec::new());
            let err = r.expect_err("a 5,000-deep connect must be refused");
            assert!(matches!(err, RtmpError::Amf0 { type_id: 20, .. }), "kind {kind:#x}: {err}");
            assert!(err.is_peer_fault());
        }
    }

    #[test]
    fn shallow_connect_is_still_accepted() {
        let mut conn = handshaken();
        let mut events = Vec::new();
        let mut body = deep_connect(0x03, 0);
        // The object `{app: "live"}`.
        body.pop();
        body.extend([0x03, 0, 3, b'a', b'p', b'p', 0x02, 0, 4, b'l', b'i', b'v', b'e', 0, 0, 0x09]);
        conn.handle_input(&chunked(20, body), &mut Vec::new(), &mut events).unwrap();
        assert!(
            matches!(&events[..], [ConnEvent::ConnectRequested { app, .. }] if app == "live"),
            "{events:?}"
        );
    }

    #[test]
    fn short_command_is_refused_not_a_panic() {
        let mut conn = handshaken();
        let body = vec![0x02, 0, 7, b'c', b'o', b'n', b'n', b'e', b'c', b't'];
        let err = conn.handle_input(&chunked(20, body), &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(matches!(err, RtmpError::Amf0 { .. }), "{err}");
    }

    #[test]
    fn oversized_declared_length_is_refused_at_its_header() {
        let mut conn = handshaken();
        // fmt 0, csid 4, timestamp 0, length 1 MiB + 1 (limit 1 MiB), video, stream 1: the
        // header alone, no payload byte.
        let header = [0x04, 0, 0, 0, 0x10, 0x00, 0x01, 9, 1, 0, 0, 0];
        let err = conn.handle_input(&header, &mut Vec::new(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                RtmpError::Framing { source: ChunkError::MessageTooLarge { declared: 0x10_0001, .. }, .. }
            ),
            "{err}"
        );
        // At the limit, the header is fine.
        let mut conn = handshaken();
        let header = [0x04, 0, 0, 0, 0x10, 0x00, 0x00, 9, 1, 0, 0, 0];
        conn.handle_input(&header, &mut Vec::new(), &mut Vec::new()).unwrap();
    }

    #[test]
    fn set_chunk_size_zero_is_refused() {
        for bad in [0u32, 0x8000_0000] {
            let mut conn = handshaken();
            let bytes = chunked(1, bad.to_be_bytes().to_vec());
            let err = conn.handle_input(&bytes, &mut Vec::new(), &mut Vec::new()).unwrap_err();
            assert!(
                matches!(err, RtmpError::Framing { source: ChunkError::InvalidChunkSize { .. }, .. }),
                "{bad:#x}: {err}"
            );
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = format!("{:?}", Secret("live_abcdef".into()));
        assert!(!s.contains("abcdef"), "{s}");
    }

    #[test]
    fn garbage_handshake_is_an_error_not_a_panic() {
        let mut conn = RtmpServerConn::new(limits());
        let mut out = Vec::new();
        let mut ev = Vec::new();
        // Version byte 0x47 ('G' of "GET /"): not RTMP.
        let r = conn.handle_input(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut out, &mut ev);
        let r2 = r.and_then(|_| conn.handle_input(&[0u8; 3000], &mut out, &mut ev));
        assert!(r2.is_err());
    }

    #[test]
    fn media_chunks_deserialize_on_a_fresh_peer() {
        let tag = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let bytes = media_chunks(MSG_VIDEO, RtmpTimestamp::new(123_456), 1, 4096, tag.clone()).unwrap();
        let mut de = ChunkDeserializer::new();
        de.set_max_chunk_size(4096).unwrap();
        let msg = de.get_next_message(&bytes).unwrap().expect("one whole message");
        assert_eq!(msg.type_id, MSG_VIDEO);
        assert_eq!(msg.timestamp.value, 123_456);
        assert_eq!(msg.message_stream_id, 1);
        assert_eq!(msg.data, tag);
        // And the same bytes again on the same peer: the type-0 header resets its state.
        let msg2 = de.get_next_message(&bytes).unwrap().expect("again");
        assert_eq!(msg2.data.len(), 10_000);
    }
}
