//! Sans-IO RTMP publish client for restreaming (push): a thin adapter over rml_rtmp's client
//! `Handshake` and `ClientSession` that connects to `rtmp://host/app`, publishes the owner's
//! stream key, and turns channel frames into RTMP messages.
//!
//! Bytes in, bytes out: the push task (`actors::restream`) owns the socket, writes what
//! [`RtmpPushClient::new`] returns, feeds everything it reads to
//! [`RtmpPushClient::handle_input`] and writes what that appends, in order (rml_rtmp requires its
//! responses to go out in order). Once [`RtmpPushClient::is_publishing`], frames go through
//! [`RtmpPushClient::send_frame`], which re-sends the sequence headers whenever the channel's
//! track set changes (a new publisher, a codec change), as a player-facing RTMP server expects
//! before the first frame of each configuration (FLV spec v10.1 §E.4.3.1, AVCPacketType 0).
//!
//! The stream key is a secret: it is never part of an error message produced here.

use std::sync::Arc;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeError, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionError, ClientSessionEvent, ClientSessionResult,
    PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

use crate::media::codec::Tracks;
use crate::media::frame::{Frame, TrackKind};
use crate::protocols::flv;

/// Why a push connection failed, located by phase; never contains the stream key.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("RTMP session error while {phase}: {source:?}")]
    Session { phase: &'static str, source: ClientSessionError },
    #[error("connect to app '{app}' rejected: {description}")]
    ConnectRejected { app: String, description: String },
    #[error("publish refused: {code}")]
    PublishRefused { code: String },
}

fn session_err(phase: &'static str) -> impl Fn(ClientSessionError) -> PushError {
    move |source| PushError::Session { phase, source }
}

/// One push connection's protocol state.
pub struct RtmpPushClient {
    handshake: Option<Handshake>,
    session: Option<ClientSession>,
    tc_url: String,
    app: String,
    key: String,
    publishing: bool,
    /// The track set whose sequence headers were sent last, by identity.
    sent_tracks: Option<Arc<Tracks>>,
}

impl RtmpPushClient {
    /// A client for `tc_url` (`rtmp://host:port/app`) publishing `key` on `app`; returns the
    /// first handshake bytes (C0 + C1) to send.
    pub fn new(tc_url: String, app: String, key: String) -> Result<(Self, Vec<u8>), PushError> {
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake.generate_outbound_p0_and_p1()?;
        let client = RtmpPushClient {
            handshake: Some(handshake),
            session: None,
            tc_url,
            app,
            key,
            publishing: false,
            sent_tracks: None,
        };
        Ok((client, c0c1))
    }

    /// The server accepted `publish`: frames may be sent.
    pub fn is_publishing(&self) -> bool {
        self.publishing
    }

    /// Feed bytes read from the server; responses are appended to `out`.
    pub fn handle_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), PushError> {
        let mut rest = input.to_vec();
        if let Some(hs) = self.handshake.as_mut() {
            match hs.process_bytes(input)? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    out.extend_from_slice(&response_bytes);
                    return Ok(());
                }
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    out.extend_from_slice(&response_bytes);
                    self.handshake = None;
                    let mut config = ClientSessionConfig::new();
                    config.tc_url = Some(self.tc_url.clone());
                    let (mut session, initial) =
                        ClientSession::new(config).map_err(session_err("starting the session"))?;
                    collect(initial, out, &mut Vec::new());
                    let connect = session
                        .request_connection(self.app.clone())
                        .map_err(session_err("requesting the connection"))?;
                    collect(vec![connect], out, &mut Vec::new());
                    self.session = Some(session);
                    rest = remaining_bytes;
                }
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
        let session = self.session.as_mut().expect("the session exists once the handshake completed");
        let results = session.handle_input(&rest).map_err(session_err("reading the server's messages"))?;
        let mut events = Vec::new();
        collect(results, out, &mut events);
        for event in events {
            match event {
                ClientSessionEvent::ConnectionRequestAccepted => {
                    let r = session
                        .request_publishing(self.key.clone(), PublishRequestType::Live)
                        .map_err(session_err("requesting to publish"))?;
                    collect(vec![r], out, &mut Vec::new());
                }
                ClientSessionEvent::ConnectionRequestRejected { description } => {
                    return Err(PushError::ConnectRejected { app: self.app.clone(), description });
                }
                ClientSessionEvent::PublishRequestAccepted => self.publishing = true,
                ClientSessionEvent::UnhandleableOnStatusCode { code }
                    if code.contains("Failed") || code.contains("Bad") || code.contains("Rejected") =>
                {
                    return Err(PushError::PublishRefused { code });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Append one frame (and, on a new track set, its sequence headers first) to `out`.
    /// Returns `false` for a frame that cannot be sent (no codec configuration), which the
    /// caller counts and skips.
    pub fn send_frame(&mut self, f: &Frame, out: &mut Vec<u8>) -> Result<bool, PushError> {
        let session = self.session.as_mut().filter(|_| self.publishing).ok_or(PushError::Session {
            phase: "sending media",
            source: ClientSessionError::NoKnownActiveStreamIdWhenRequired,
        })?;
        let ts = RtmpTimestamp::new(f.dts.as_millis() as u32);
        let fresh = self.sent_tracks.as_ref().is_none_or(|t| !Arc::ptr_eq(t, &f.tracks));
        if fresh {
            if let Some(v) = &f.tracks.video {
                let r = session
                    .publish_video_data(flv::video_sequence_header(v), ts, false)
                    .map_err(session_err("sending the video sequence header"))?;
                collect(vec![r], out, &mut Vec::new());
            }
            if let Some(a) = &f.tracks.audio {
                let r = session
                    .publish_audio_data(flv::audio_sequence_header(a), ts, false)
                    .map_err(session_err("sending the audio sequence header"))?;
                collect(vec![r], out, &mut Vec::new());
            }
            self.sent_tracks = Some(f.tracks.clone());
        }
        let r = match f.track {
            TrackKind::Video => {
                let Some(cfg) = &f.tracks.video else { return Ok(false) };
                let tag = flv::video_frame(cfg.codec, f.keyframe, f.cts().as_millis() as i32, &f.data);
                session.publish_video_data(tag, ts, !f.keyframe).map_err(session_err("sending video"))?
            }
            TrackKind::Audio => {
                let Some(cfg) = &f.tracks.audio else { return Ok(false) };
                let tag: Bytes = flv::audio_frame(cfg.codec, &f.data);
                session.publish_audio_data(tag, ts, true).map_err(session_err("sending audio"))?
            }
        };
        collect(vec![r], out, &mut Vec::new());
        Ok(true)
    }
}

fn collect(results: Vec<ClientSessionResult>, out: &mut Vec<u8>, events: &mut Vec<ClientSessionEvent>) {
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::rtmp::{ConnEvent, RtmpLimits, RtmpServerConn};

    /// Our own server connection accepts what the push client sends, all the way to `publish`.
    #[test]
    fn the_push_client_reaches_publishing_against_our_server() {
        let limits = RtmpLimits {
            max_chunk_size: 65536,
            max_message_size: 1 << 20,
            max_name_len: 256,
            out_chunk_size: 4096,
        };
        let mut server = RtmpServerConn::new(limits);
        let (mut client, mut to_server) =
            RtmpPushClient::new("rtmp://127.0.0.1/live".into(), "live".into(), "live_secret".into()).unwrap();
        let mut published = None;
        for _ in 0..20 {
            let mut to_client = Vec::new();
            let mut events = Vec::new();
            server.handle_input(&std::mem::take(&mut to_server), &mut to_client, &mut events).unwrap();
            for e in events {
                match e {
                    ConnEvent::ConnectRequested { request_id, .. } => {
                        server.accept(request_id, &mut to_client).unwrap()
                    }
                    ConnEvent::PublishRequested { request_id, stream_key, .. } => {
                        published = Some(stream_key.0.clone());
                        server.accept(request_id, &mut to_client).unwrap();
                    }
                    _ => {}
                }
            }
            client.handle_input(&to_client, &mut to_server).unwrap();
            if client.is_publishing() {
                break;
            }
        }
        assert_eq!(published.as_deref(), Some("live_secret"));
        assert!(client.is_publishing());
    }
}
