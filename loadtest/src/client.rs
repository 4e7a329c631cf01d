//! RTMP client connection set-up shared by the publisher and the viewers: TCP connect, the
//! RTMP handshake (rml_rtmp `Handshake`, spec "RTMP 1.0" §5.2), `connect`, `createStream` and
//! `play`/`publish` (spec §7.2) driven by rml_rtmp's sans-IO `ClientSession`.
//!
//! After `open` returns, the caller owns the socket and the session and feeds every further
//! byte into `ClientSession::handle_input`, in order, as rml_rtmp requires.

use anyhow::{anyhow, bail, Context, Result};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `rtmp://host:port/app/stream`, split.
#[derive(Clone, Debug)]
pub struct RtmpUrl {
    /// `host:port` for `TcpStream::connect`.
    pub addr: String,
    pub app: String,
    pub stream: String,
    /// `rtmp://host:port/app`: some servers (nginx-rtmp among them) want it in `connect`.
    pub tc_url: String,
}

impl RtmpUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let rest = url.strip_prefix("rtmp://").ok_or_else(|| anyhow!("{url}: not an rtmp:// URL"))?;
        let (host, path) = rest.split_once('/').ok_or_else(|| anyhow!("{url}: no /app/stream path"))?;
        let (app, stream) =
            path.split_once('/').ok_or_else(|| anyhow!("{url}: no stream name after the app"))?;
        if app.is_empty() || stream.is_empty() {
            bail!("{url}: empty app or stream name");
        }
        let addr = if host.contains(':') { host.to_string() } else { format!("{host}:1935") };
        Ok(Self {
            addr: addr.clone(),
            app: app.to_string(),
            stream: stream.to_string(),
            tc_url: format!("rtmp://{addr}/{app}"),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Play,
    Publish,
}

/// An RTMP connection past `play`/`publish`, with any media events that arrived in the same
/// reads as the acceptance (a live server sends the cached GOP right behind `NetStream.Play.Start`).
pub struct Opened {
    pub sock: TcpStream,
    pub session: ClientSession,
    pub early_events: Vec<ClientSessionEvent>,
}

/// Read buffer for set-up; media reads use their own.
const SETUP_BUF: usize = 16 * 1024;

/// Open a connection for `role`. Every step is bounded by `timeout` as a whole.
pub async fn open(url: &RtmpUrl, role: Role, timeout: Duration) -> Result<Opened> {
    tokio::time::timeout(timeout, open_inner(url, role))
        .await
        .map_err(|_| anyhow!("{}: RTMP set-up ({role:?}) timed out after {timeout:?}", url.addr))?
}

async fn open_inner(url: &RtmpUrl, role: Role) -> Result<Opened> {
    let mut sock =
        TcpStream::connect(&url.addr).await.with_context(|| format!("connecting to {}", url.addr))?;
    sock.set_nodelay(true)?;
    let mut buf = vec![0u8; SETUP_BUF];

    // Handshake: C0+C1, then answer until Completed.
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs.generate_outbound_p0_and_p1().map_err(|e| anyhow!("handshake: {e:?}"))?;
    sock.write_all(&c0c1).await?;
    let leftover = loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("{}: server closed the connection during the handshake", url.addr);
        }
        match hs.process_bytes(&buf[..n]).map_err(|e| anyhow!("handshake: {e:?}"))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                if !response_bytes.is_empty() {
                    sock.write_all(&response_bytes).await?;
                }
            }
            HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                if !response_bytes.is_empty() {
                    sock.write_all(&response_bytes).await?;
                }
                break remaining_bytes;
            }
        }
    };

    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(url.tc_url.clone());
    let (mut session, initial) = ClientSession::new(config).map_err(|e| anyhow!("session: {e:?}"))?;
    let mut out = Vec::new();
    let mut early_events = Vec::new();
    let mut accepted = false;
    collect(initial, &mut out, &mut early_events);
    let connect = session.request_connection(url.app.clone()).map_err(|e| anyhow!("connect: {e:?}"))?;
    collect(vec![connect], &mut out, &mut early_events);
    sock.write_all(&out).await?;
    out.clear();

    let mut input = leftover;
    loop {
        if !input.is_empty() {
            let results =
                session.handle_input(&input).map_err(|e| anyhow!("{}: RTMP input: {e:?}", url.addr))?;
            let mut events = Vec::new();
            collect(results, &mut out, &mut events);
            for ev in events {
                match ev {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = match role {
                            Role::Play => session.request_playback(url.stream.clone()),
                            Role::Publish => {
                                session.request_publishing(url.stream.clone(), PublishRequestType::Live)
                            }
                        }
                        .map_err(|e| anyhow!("{role:?} request: {e:?}"))?;
                        collect(vec![r], &mut out, &mut early_events);
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        bail!("{}: connect rejected: {description}", url.addr)
                    }
                    ClientSessionEvent::PlaybackRequestAccepted
                    | ClientSessionEvent::PublishRequestAccepted => accepted = true,
                    ClientSessionEvent::UnhandleableOnStatusCode { code } if !accepted => {
                        // e.g. NetStream.Play.StreamNotFound / NetStream.Publish.BadName.
                        if code.contains("Failed") || code.contains("NotFound") || code.contains("Bad") {
                            bail!("{}: {role:?} refused: {code}", url.addr)
                        }
                    }
                    other => early_events.push(other),
                }
            }
            if !out.is_empty() {
                sock.write_all(&out).await?;
                out.clear();
            }
            if accepted {
                return Ok(Opened { sock, session, early_events });
            }
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("{}: server closed the connection before {role:?} was accepted", url.addr);
        }
        input = buf[..n].to_vec();
    }
}

/// Split session results into bytes to send and events to act on.
pub fn collect(results: Vec<ClientSessionResult>, out: &mut Vec<u8>, events: &mut Vec<ClientSessionEvent>) {
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
}
