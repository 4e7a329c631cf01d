//! What the WHEP viewers and the WHIP publisher do alike with their `rtc` peer connection: offer
//! with one host candidate and `POST` the offer (RFC 9725 signalling), feed received datagrams in,
//! write what the connection wants sent, and close.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;

use crate::http::{self, Endpoint, Response};

/// A peer connection with `media`'s codecs and `rtc`'s default interceptors (what a browser
/// runs: NACK, reports, TWCC), default configuration and settings.
pub fn build(mut media: MediaEngine) -> Result<RTCPeerConnection> {
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    Ok(RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(SettingEngineBuilder::new().build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(Instant::now())?)
}

/// What the offer/answer exchange gave: the offer sent, the 201 response's `Location` and answer.
pub struct Negotiated {
    pub offer: String,
    pub location: Option<String>,
    pub answer: String,
}

/// Offers `pc`'s transceivers with `local` as the one host candidate, `POST`s the offer to
/// `endpoint` (as `Authorization: Bearer <token>` when there is one), and sets the answer of a
/// 201. Anything else is an error carrying the status and the start of the body.
pub async fn offer_and_post(
    pc: &mut RTCPeerConnection,
    local: SocketAddr,
    endpoint: &Endpoint,
    token: Option<&str>,
) -> Result<Negotiated> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local.ip().to_string(),
            port: local.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    let offer = pc.create_offer(None)?;
    pc.set_local_description(Instant::now(), offer)?;
    let offer = pc.local_description().map(|d| d.sdp).ok_or_else(|| anyhow!("no local description"))?;

    let auth = token.map(|t| format!("Bearer {t}"));
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        http::request(endpoint, "POST", &bearer(&auth), Some(("application/sdp", offer.as_bytes()))),
    )
    .await
    .map_err(|_| anyhow!("POST: no answer in 10 s"))??;
    if res.status != 201 {
        let body = String::from_utf8_lossy(&res.body);
        bail!("POST answered {}: {}", res.status, body.chars().take(200).collect::<String>());
    }
    let location = res.header("location").map(str::to_owned);
    let answer = String::from_utf8(res.body).context("the answer is not UTF-8")?;
    pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(answer.clone())?)?;
    Ok(Negotiated { offer, location, answer })
}

/// `DELETE`s the session resource at `location` (RFC 9725 §4.4).
pub async fn delete(endpoint: &Endpoint, location: &str, token: Option<&str>) -> Result<Response> {
    let ep = endpoint.resolve(location)?;
    let auth = token.map(|t| format!("Bearer {t}"));
    http::request(&ep, "DELETE", &bearer(&auth), None).await
}

fn bearer(auth: &Option<String>) -> Vec<(&str, &str)> {
    auth.iter().map(|a| ("Authorization", a.as_str())).collect()
}

/// Hands one datagram received on `local` from `peer` to the connection.
pub fn feed(pc: &mut RTCPeerConnection, local: SocketAddr, peer: SocketAddr, data: &[u8], now: Instant) {
    let _ = pc.handle_read(TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: BytesMut::from(data),
    });
}

/// Sends everything the connection has queued; a full socket buffer waits for room rather than
/// dropping the datagram.
pub async fn flush(pc: &mut RTCPeerConnection, sock: &UdpSocket) {
    while let Some(out) = pc.poll_write() {
        match sock.try_send_to(&out.message, out.transport.peer_addr) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = sock.send_to(&out.message, out.transport.peer_addr).await;
            }
            _ => {}
        }
    }
}

/// Closes the connection (DTLS close_notify) and sends what that queued.
pub async fn close(pc: &mut RTCPeerConnection, sock: &UdpSocket) {
    let _ = pc.close();
    flush(pc, sock).await;
}
