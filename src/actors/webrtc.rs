//! WebRTC sessions (WHIP ingest, WHEP play): the shared media ports, negotiation, and the
//! driver loop every session runs.
//!
//! Data flow:
//!
//! ```text
//! UDP port (one for all) --recv--> route: known address? else STUN USERNAME's ufrag -> session inbox
//! ICE-TCP port (RFC 6544) -> per connection: RFC 4571 frames -> route (same)          |
//!                                                                                      v
//!   session task (ingest/whip.rs or viewer/whep.rs): rtc::RTCPeerConnection (sans-IO:
//!   ICE-lite, DTLS, SRTP, RTCP reports, NACK) <-> Peer::pump -> UDP send_to / TCP writer
//! ```
//!
//! Every session is one task that owns its peer connection; no lock is held across the crate's
//! calls. The router only maps addresses to inboxes: a datagram from an address no session
//! knows is dropped unless it is a STUN check whose USERNAME names a session's ICE ufrag (RFC
//! 8445 §7.2.2), which is how a session learns its peer's address (ICE-lite: the peer does the
//! checks, we answer). [`Sessions`] holds the HTTP resources (`Location` of RFC 9725) so that
//! `DELETE` ends a session and the channel page can list them.
//!
//! Lifetimes: a session that has not connected within `webrtc.connect_timeout` is removed, and
//! a connected one that hears nothing for `webrtc.idle_timeout`; either way its routes, its
//! resource and its ring cursor or publish grant go with its task.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use rand::distributions::{Alphanumeric, DistString};
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::tcp_framing::{frame_packet, TcpFrameDecoder};
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::admission::{AddressSlot, PerAddressLimit};
use crate::config::WebRtcConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::metrics;

/// Datagrams queued per session before the router drops (a session that cannot keep up).
const INBOX: usize = 1024;
/// The largest datagram we read (jumbo frames are not used by WebRTC peers).
const MAX_DATAGRAM: usize = 2048;

/// The H.264 profiles we accept, all packetization-mode 1 (what Chromium, Firefox, Safari and
/// OBS offer): constrained baseline, baseline, main, high, and constrained high.
const H264_PROFILES: [&str; 5] = ["42e01f", "42001f", "4d001f", "64001f", "640c1f"];

/// One received datagram (or RFC 4571 frame) for a session.
pub struct Inbound {
    pub now: Instant,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub protocol: TransportProtocol,
    pub data: BytesMut,
}

/// What kind of session a resource is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionKind {
    Whip,
    Whep,
}

impl SessionKind {
    pub fn label(self) -> &'static str {
        match self {
            SessionKind::Whip => "whip",
            SessionKind::Whep => "whep",
        }
    }
}

/// An HTTP session resource (RFC 9725 §4.2 `Location`).
#[derive(Clone, Debug)]
pub struct SessionEntry {
    pub kind: SessionKind,
    pub channel: String,
    /// Ends the session's task (`DELETE`).
    pub cancel: CancellationToken,
    /// The ICE ufrag of the answer: the entity tag of the ICE session (RFC 9725 §4.3.1).
    pub ufrag: String,
}

/// A negotiated peer connection, before its task starts.
pub struct Negotiated {
    pub pc: RTCPeerConnection,
    pub answer: String,
    pub ufrag: String,
    pub inbox: mpsc::Receiver<Inbound>,
    /// WHEP: our video sender, and the audio one when asked for.
    pub senders: Vec<(RtpCodecKind, RTCRtpSenderId)>,
}

struct Inner {
    config: WebRtcConfig,
    udp: Arc<UdpSocket>,
    /// quinn-udp's view of `udp`: batched receives (`recvmmsg`, GRO) and GSO sends.
    udp_state: quinn_udp::UdpSocketState,
    udp_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    /// The host candidates' IPs.
    candidate_ips: Vec<IpAddr>,
    by_ufrag: DashMap<String, mpsc::Sender<Inbound>>,
    by_addr: DashMap<(bool, SocketAddr), mpsc::Sender<Inbound>>,
    /// ICE-TCP connections by peer address: the writer half's queue.
    tcp_out: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    /// `webrtc.tcp_max_connections_per_address`.
    tcp_per_address: Arc<PerAddressLimit>,
    sessions: DashMap<String, SessionEntry>,
    /// WHIP publishers by channel: their session id and where to ask them for a key frame.
    publishers: DashMap<String, (u64, Arc<KeyFrames>)>,
    live: AtomicUsize,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// The runtime the sessions run on (the media runtime; HTTP handlers start them).
    runtime: tokio::runtime::Handle,
}

/// The WebRTC side of the server (cheap to clone).
#[derive(Clone)]
pub struct WebRtc {
    inner: Arc<Inner>,
}

impl WebRtc {
    /// Bind the UDP port (and the ICE-TCP port), work out the host candidates, start routing.
    pub async fn start(
        config: &WebRtcConfig,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<WebRtc> {
        let ip: IpAddr = config.listen_ip.parse().map_err(|_| Error::invalid("webrtc.listen_ip"))?;
        let bind_err = |what: &str, e: std::io::Error| {
            Error::with_source(ErrorKind::Unavailable, format!("cannot bind WebRTC {what} on {ip}"), e)
        };
        let udp = UdpSocket::bind((ip, config.udp_port)).await.map_err(|e| bind_err("UDP", e))?;
        let udp_addr = udp.local_addr().map_err(|e| bind_err("UDP", e))?;
        let udp_state = quinn_udp::UdpSocketState::new((&udp).into()).map_err(|e| bind_err("UDP", e))?;
        crate::actors::listen::size_udp_buffers(&udp, config.udp_buffer.as_usize(), "webrtc.udp_buffer");
        let tcp = if config.tcp_enabled {
            Some(TcpListener::bind((ip, config.tcp_port)).await.map_err(|e| bind_err("ICE-TCP", e))?)
        } else {
            None
        };
        let tcp_addr = tcp.as_ref().and_then(|l| l.local_addr().ok());
        let candidate_ips = candidate_ips(config, ip);
        if candidate_ips.is_empty() {
            warn!(
                "webrtc: no address to advertise (check webrtc.interfaces, webrtc.ips, webrtc.advertise_ips)"
            );
        }
        info!(protocol = "webrtc", addr = %udp_addr, candidates = ?candidate_ips, "listening");
        if let Some(tcp) = tcp_addr {
            info!(protocol = "webrtc-tcp", addr = %tcp, "listening");
        }
        let rtc = WebRtc {
            inner: Arc::new(Inner {
                config: config.clone(),
                udp: Arc::new(udp),
                udp_state,
                udp_addr,
                tcp_addr,
                candidate_ips,
                by_ufrag: DashMap::new(),
                by_addr: DashMap::new(),
                tcp_out: DashMap::new(),
                tcp_per_address: PerAddressLimit::new(config.tcp_max_connections_per_address, Vec::new()),
                sessions: DashMap::new(),
                publishers: DashMap::new(),
                live: AtomicUsize::new(0),
                shutdown,
                tracker,
                runtime: tokio::runtime::Handle::current(),
            }),
        };
        tokio::spawn(rtc.clone().route_udp());
        if let Some(tcp) = tcp {
            tokio::spawn(rtc.clone().accept_tcp(tcp));
        }
        Ok(rtc)
    }

    pub fn config(&self) -> &WebRtcConfig {
        &self.inner.config
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.udp_addr
    }

    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    /// Run a session task on the media runtime, tracked for the shutdown wait.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.inner.runtime.spawn(self.inner.tracker.track_future(task));
    }

    /// Sessions at once (WHIP and WHEP, connected or not).
    pub fn session_count(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Refuses past `webrtc.max_sessions`. Signalling asks before anything with side effects
    /// (a publisher's live session, a viewer's on-demand pull), and `negotiate` again.
    pub fn check_room(&self) -> Result<()> {
        if self.session_count() >= self.inner.config.max_sessions {
            return Err(Error::new(ErrorKind::Unavailable, "too many WebRTC sessions; try again later"));
        }
        Ok(())
    }

    /// The resource `id`, if it exists.
    pub fn session(&self, id: &str) -> Option<SessionEntry> {
        self.inner.sessions.get(id).map(|e| e.clone())
    }

    /// Negotiate an answer to `offer`. `play`: the server sends (WHEP) an H.264 track and, with
    /// `audio`, an Opus track; otherwise it receives (WHIP). The caller checked the offer
    /// (`protocols::webrtc::check_offer`). Refuses past `webrtc.max_sessions`.
    pub fn negotiate(&self, offer: String, play: Option<bool>) -> Result<Negotiated> {
        self.check_room()?;
        let ufrag = Alphanumeric.sample_string(&mut rand::thread_rng(), 16);
        let pwd = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        let mut media = MediaEngine::default();
        register_codecs(&mut media).map_err(rtc_error)?;
        let registry = interceptors(&mut media, play.is_some()).map_err(rtc_error)?;
        let settings = SettingEngineBuilder::new()
            .with_lite(true)
            .with_ice_credentials(ufrag.clone(), pwd)
            // The answerer's DTLS role: passive (`a=setup:passive`), as servers are.
            .with_answering_dtls_role(RTCDtlsRole::Server)
            // rtc's ICE hears only STUN (not media) from the peer, and aiortc checks consent every
            // 4-6 s: its 5 s default would flap to "disconnected" while media flows. The
            // session's own idle timeout (any datagram) is what ends a vanished peer.
            .with_ice_timeouts(
                Some(self.inner.config.idle_timeout.max(Duration::from_secs(10))),
                Some(self.inner.config.idle_timeout.max(Duration::from_secs(10)) * 3),
                None,
            )
            .build();
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(settings)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .build(Instant::now())
            .map_err(rtc_error)?;
        let offer =
            RTCSessionDescription::offer(offer).map_err(|e| Error::invalid(format!("SDP offer: {e}")))?;
        pc.set_remote_description(Instant::now(), offer)
            .map_err(|e| Error::invalid(format!("SDP offer: {e}")))?;
        let mut senders = Vec::new();
        if let Some(audio) = play {
            senders.push((RtpCodecKind::Video, add_track(&mut pc, RtpCodecKind::Video)?));
            if audio {
                senders.push((RtpCodecKind::Audio, add_track(&mut pc, RtpCodecKind::Audio)?));
            }
        }
        for c in self.candidates() {
            pc.add_local_candidate(c).map_err(rtc_error)?;
        }
        let answer = pc.create_answer(None).map_err(|e| Error::invalid(format!("SDP answer: {e}")))?;
        pc.set_local_description(Instant::now(), answer).map_err(rtc_error)?;
        let answer =
            pc.local_description().map(|d| d.sdp).ok_or_else(|| Error::internal("no local description"))?;
        let (tx, inbox) = mpsc::channel(INBOX);
        self.inner.by_ufrag.insert(ufrag.clone(), tx);
        Ok(Negotiated { pc, answer, ufrag, inbox, senders })
    }

    /// Our host candidates: UDP on the shared port, and passive TCP on the ICE-TCP port.
    fn candidates(&self) -> Vec<rtc::peer_connection::transport::RTCIceCandidateInit> {
        let mut out = Vec::new();
        for ip in &self.inner.candidate_ips {
            let mut ports = vec![("udp", self.inner.udp_addr.port())];
            if let Some(tcp) = self.inner.tcp_addr {
                ports.push(("tcp", tcp.port()));
            }
            for (network, port) in ports {
                let host = CandidateHostConfig {
                    base_config: CandidateConfig {
                        network: network.to_owned(),
                        address: ip.to_string(),
                        port,
                        component: 1,
                        ..Default::default()
                    },
                    tcp_type: if network == "tcp" {
                        rtc::ice::tcp_type::TcpType::Passive
                    } else {
                        rtc::ice::tcp_type::TcpType::Unspecified
                    },
                };
                match host.new_candidate_host().and_then(|c| RTCIceCandidate::from(&c).to_json()) {
                    Ok(c) => out.push(c),
                    Err(e) => warn!(error = %e, %ip, "webrtc: cannot make a host candidate"),
                }
            }
        }
        out
    }

    /// A WHIP publisher of `channel` starts: it records its key frames in the returned
    /// [`KeyFrames`], where WHEP viewers ask it for a fresh one.
    pub fn publisher_started(&self, channel: &str, session_id: u64) -> Arc<KeyFrames> {
        let keys = Arc::new(KeyFrames::default());
        self.inner.publishers.insert(channel.to_owned(), (session_id, keys.clone()));
        keys
    }

    /// The WHIP publisher `session_id` of `channel` ended.
    pub fn publisher_ended(&self, channel: &str, session_id: u64) {
        self.inner.publishers.remove_if(channel, |_, (id, _)| *id == session_id);
    }

    /// A WHEP viewer is about to start: should it wait for a fresh key frame? Yes when
    /// `channel` has a WHIP publisher (it is asked for one now) whose newest key frame is older
    /// than [`FRESH_KEY`]: a buffered GOP sent in a burst would sit in the browser's jitter
    /// buffer as latency. No for a young key frame (start on it) or another kind of publisher
    /// (it cannot be asked; start on the newest buffered key frame).
    pub fn wait_for_fresh_key(&self, channel: &str) -> bool {
        let Some(p) = self.inner.publishers.get(channel) else { return false };
        let young = p.1.newest_age().is_some_and(|age| age < FRESH_KEY);
        if !young {
            p.1.wanted.notify_one();
        }
        !young
    }

    /// Register a session's resource; the returned guard removes it and the session's routes.
    pub fn register(&self, id: String, entry: SessionEntry) -> SessionGuard {
        self.inner.sessions.insert(id.clone(), entry.clone());
        self.inner.live.fetch_add(1, Ordering::Relaxed);
        metrics().webrtc_sessions.with_label_values(&[entry.kind.label()]).inc();
        SessionGuard { rtc: self.clone(), id, kind: entry.kind, ufrag: entry.ufrag }
    }

    /// Receive datagrams in batches (`recvmmsg`; with GRO a buffer holds several datagrams of
    /// one sender, `stride` bytes each) and route each.
    async fn route_udp(self) {
        let inner = &self.inner;
        let per_buffer = MAX_DATAGRAM * inner.udp_state.gro_segments().max(1);
        let mut bufs = vec![vec![0u8; per_buffer]; RECV_BATCH];
        let mut meta = vec![quinn_udp::RecvMeta::default(); RECV_BATCH];
        loop {
            tokio::select! {
                r = inner.udp.readable() => if r.is_err() { return },
                _ = inner.shutdown.cancelled() => return,
            }
            let mut slices: Vec<std::io::IoSliceMut> =
                bufs.iter_mut().map(|b| std::io::IoSliceMut::new(b)).collect();
            let received = inner.udp.try_io(tokio::io::Interest::READABLE, || {
                inner.udp_state.recv((&*inner.udp).into(), &mut slices, &mut meta)
            });
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // ICMP errors of earlier sends surface here (ECONNREFUSED): not fatal.
                    debug!(error = %e, "webrtc udp receive");
                    continue;
                }
            };
            for (m, buf) in meta.iter().zip(&slices).take(n) {
                let local = m.dst_ip.map_or(inner.udp_addr, |ip| SocketAddr::new(ip, inner.udp_addr.port()));
                let stride = m.stride.max(1);
                for datagram in buf[..m.len].chunks(stride) {
                    self.route(false, local, m.addr, datagram);
                }
            }
        }
    }

    /// Hand a datagram to its session (see the module docs).
    fn route(&self, tcp: bool, local: SocketAddr, peer: SocketAddr, data: &[u8]) {
        let inner = &self.inner;
        let tx = match inner.by_addr.get(&(tcp, peer)) {
            Some(tx) => tx.clone(),
            None => {
                let Some(ufrag) = crate::protocols::webrtc::stun_local_ufrag(data) else { return };
                let Some(tx) = inner.by_ufrag.get(&ufrag).map(|t| t.clone()) else { return };
                inner.by_addr.insert((tcp, peer), tx.clone());
                tx
            }
        };
        let protocol = if tcp { TransportProtocol::TCP } else { TransportProtocol::UDP };
        let item = Inbound { now: Instant::now(), local, peer, protocol, data: BytesMut::from(data) };
        if tx.try_send(item).is_err() {
            metrics().webrtc_datagrams_dropped.inc();
        }
    }

    async fn accept_tcp(self, listener: TcpListener) {
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(error = %e, "webrtc ice-tcp accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = self.inner.shutdown.cancelled() => return,
            };
            let slot = match self.inner.tcp_per_address.try_acquire(peer.ip()) {
                Ok(slot) => slot,
                Err(over) => {
                    metrics().connections_rejected.with_label_values(&["webrtc", "per_address"]).inc();
                    debug!(%peer, limit = over.limit, "webrtc ice-tcp connection refused: per-address limit");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            self.spawn(self.clone().serve_tcp(stream, peer, slot));
        }
    }

    /// One ICE-TCP connection: RFC 4571 frames in, routed like datagrams; frames out from the
    /// session's sends. Closed when the peer closes, when its session ends, or after the connect
    /// timeout if no frame ever named a session.
    async fn serve_tcp(self, stream: TcpStream, peer: SocketAddr, _slot: AddressSlot) {
        let local = stream.local_addr().unwrap_or(self.inner.udp_addr);
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(INBOX);
        self.inner.tcp_out.insert(peer, tx);
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if wr.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let mut decoder = TcpFrameDecoder::new();
        let mut buf = vec![0u8; 8192];
        let deadline = tokio::time::Instant::now() + self.inner.config.connect_timeout;
        // The inbox of the session this connection was routed to: the connection ends with it.
        let mut session: Option<mpsc::Sender<Inbound>> = None;
        loop {
            let read = tokio::select! {
                r = rd.read(&mut buf) => r,
                _ = tokio::time::sleep_until(deadline), if session.is_none() => break,
                _ = async { session.as_ref().expect("guarded").closed().await }, if session.is_some() => break,
                _ = self.inner.shutdown.cancelled() => break,
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    decoder.extend_from_slice(&buf[..n]);
                    while let Some(frame) = decoder.next_packet() {
                        self.route(true, local, peer, &frame);
                    }
                    if session.is_none() {
                        session = self.inner.by_addr.get(&(true, peer)).map(|tx| tx.clone());
                    }
                    if decoder.buffered_len() > 64 * 1024 {
                        break; // not RFC 4571 framing
                    }
                }
            }
        }
        self.inner.tcp_out.remove(&peer);
        self.inner.by_addr.remove(&(true, peer));
        writer.abort();
    }

    /// Send a batch of UDP datagrams to one peer: `contents` is `segment`-byte datagrams back
    /// to back, the last possibly shorter, in one `sendmsg` with GSO where the kernel has it.
    /// UDP may drop: a full socket buffer drops like the network would (counted).
    fn send_udp(&self, peer: SocketAddr, contents: &[u8], segment: usize) {
        let inner = &self.inner;
        let transmit = quinn_udp::Transmit {
            destination: peer,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        let sent = inner.udp.try_io(tokio::io::Interest::WRITABLE, || {
            inner.udp_state.try_send((&*inner.udp).into(), &transmit)
        });
        if let Err(e) = sent {
            debug!(error = %e, "webrtc udp send");
            metrics().webrtc_datagrams_dropped.inc_by(contents.len().div_ceil(segment.max(1)) as u64);
        }
    }

    /// Datagrams one GSO send may carry (1 where the kernel has no GSO).
    fn max_gso_segments(&self) -> usize {
        self.inner.udp_state.max_gso_segments()
    }

    /// Send a datagram over ICE-TCP (RFC 4571 framing).
    fn send_tcp(&self, peer: SocketAddr, data: &[u8]) {
        if let Some(tx) = self.inner.tcp_out.get(&peer) {
            if tx.try_send(Bytes::from(frame_packet(data))).is_err() {
                metrics().webrtc_datagrams_dropped.inc();
            }
        }
    }
}

/// A WHEP viewer starts on the buffered key frame when it is younger than this.
pub const FRESH_KEY: Duration = Duration::from_millis(500);

/// A WHIP publisher's key frames, shared with the WHEP viewers of its channel.
#[derive(Default)]
pub struct KeyFrames {
    /// When the newest arrived.
    newest: std::sync::Mutex<Option<Instant>>,
    /// A viewer wants a fresh one.
    pub wanted: tokio::sync::Notify,
}

impl KeyFrames {
    pub fn set_newest(&self, at: Option<Instant>) {
        *self.newest.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    fn newest_age(&self) -> Option<Duration> {
        self.newest.lock().unwrap_or_else(|p| p.into_inner()).map(|t| t.elapsed())
    }
}

/// Removes a session's resource and routes when its task ends.
pub struct SessionGuard {
    rtc: WebRtc,
    id: String,
    kind: SessionKind,
    ufrag: String,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let inner = &self.rtc.inner;
        inner.sessions.remove(&self.id);
        if let Some((_, tx)) = inner.by_ufrag.remove(&self.ufrag) {
            inner.by_addr.retain(|_, t| !t.same_channel(&tx));
        }
        inner.live.fetch_sub(1, Ordering::Relaxed);
        metrics().webrtc_sessions.with_label_values(&[self.kind.label()]).dec();
    }
}

/// A peer connection being driven by its session task: the plumbing every session shares.
pub struct Peer {
    pub pc: RTCPeerConnection,
    inbox: mpsc::Receiver<Inbound>,
    rtc: WebRtc,
    /// UDP datagrams gathered for one GSO send.
    out: UdpBatch,
    /// When anything was last received.
    pub last_heard: Instant,
}

/// Why a session's timeouts end it (`Peer::expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// ICE and DTLS did not complete within `webrtc.connect_timeout`.
    NeverConnected,
    /// Connected, then nothing heard for `webrtc.idle_timeout` (a peer gone without `DELETE`).
    Idle,
}

/// What woke a session up.
pub enum Wake {
    /// A datagram was handed to the peer connection, or a timer fired.
    Io,
    /// The inbox closed (the router dropped the session).
    Closed,
}

impl Peer {
    pub fn new(rtc: WebRtc, pc: RTCPeerConnection, inbox: mpsc::Receiver<Inbound>) -> Peer {
        Peer { pc, inbox, rtc, out: UdpBatch::default(), last_heard: Instant::now() }
    }

    /// Whether the session started at `started` is over by its timeouts at `now`.
    pub fn expired(&self, connected: bool, started: Instant, now: Instant) -> Option<Expired> {
        let config = self.rtc.config();
        if !connected && now.saturating_duration_since(started) > config.connect_timeout {
            Some(Expired::NeverConnected)
        } else if connected && now.saturating_duration_since(self.last_heard) > config.idle_timeout {
            Some(Expired::Idle)
        } else {
            None
        }
    }

    /// Send everything the peer connection queued: UDP datagrams in GSO batches (a frame's RTP
    /// packets are all one size but the last, which is what GSO wants), ICE-TCP frames one by
    /// one.
    pub fn flush(&mut self) {
        let max_segments = self.rtc.max_gso_segments();
        while let Some(out) = self.pc.poll_write() {
            let peer = out.transport.peer_addr;
            if out.transport.transport_protocol != TransportProtocol::UDP {
                self.rtc.send_tcp(peer, &out.message);
                continue;
            }
            if !self.out.push(peer, &out.message, max_segments) {
                self.out.send(&self.rtc);
                self.out.push(peer, &out.message, max_segments);
            }
        }
        self.out.send(&self.rtc);
    }

    /// Wait for a datagram or the connection's next timer, and feed it in. Cancel-safe.
    pub async fn io(&mut self) -> Wake {
        let deadline = self.pc.poll_timeout().unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
        tokio::select! {
            item = self.inbox.recv() => match item {
                Some(item) => {
                    self.feed(item);
                    // Take what else arrived, without waiting.
                    while let Ok(item) = self.inbox.try_recv() {
                        self.feed(item);
                    }
                    Wake::Io
                }
                None => Wake::Closed,
            },
            _ = sleep => {
                let _ = self.pc.handle_timeout(Instant::now());
                Wake::Io
            }
        }
    }

    fn feed(&mut self, item: Inbound) {
        self.last_heard = item.now;
        let tagged = TaggedBytesMut {
            now: item.now,
            transport: TransportContext {
                local_addr: item.local,
                peer_addr: item.peer,
                ecn: None,
                transport_protocol: item.protocol,
            },
            message: item.data,
        };
        if let Err(e) = self.pc.handle_read(tagged) {
            debug!(error = %e, "webrtc: datagram refused");
        }
    }

    /// Close the peer connection politely (DTLS close_notify) and send what that queued.
    pub fn close(&mut self) {
        let _ = self.pc.close();
        self.flush();
    }
}

/// The largest GSO send: the sum of its datagrams must fit one IP packet (64 KiB).
const MAX_GSO_BYTES: usize = 60_000;
/// Datagrams (or GRO buffers) read per receive call.
const RECV_BATCH: usize = 32;

/// Datagrams to one peer gathered for one GSO send: all the size of the first, but the last may
/// be shorter (the kernel cuts `contents` every `segment` bytes).
#[derive(Default)]
struct UdpBatch {
    peer: Option<SocketAddr>,
    contents: Vec<u8>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the batch.
    closed: bool,
}

impl UdpBatch {
    /// Add `datagram` for `peer`; false when it cannot join (send the batch, then push again).
    fn push(&mut self, peer: SocketAddr, datagram: &[u8], max_segments: usize) -> bool {
        if self.count == 0 {
            self.peer = Some(peer);
            self.segment = datagram.len();
            self.closed = false;
        } else if self.peer != Some(peer)
            || self.closed
            || self.count >= max_segments
            || datagram.len() > self.segment
            || self.contents.len() + datagram.len() > MAX_GSO_BYTES
        {
            return false;
        } else if datagram.len() < self.segment {
            self.closed = true;
        }
        self.contents.extend_from_slice(datagram);
        self.count += 1;
        true
    }

    fn send(&mut self, rtc: &WebRtc) {
        if let Some(peer) = self.peer.filter(|_| self.count > 0) {
            rtc.send_udp(peer, &self.contents, self.segment);
        }
        self.contents.clear();
        self.count = 0;
    }
}

/// `rtc`'s interceptor chain keeps inbound RTCP to itself unless an interceptor marks a packet
/// for the application. The sessions need sender reports (WHIP: RTP time to wall-clock, so
/// audio and video stay in sync) and NACKs (counted): this, application-most in the chain,
/// marks compound packets that hold either. Everything else (receiver reports, TWCC) stays
/// with the chain, which acts on it.
///
/// A second one, wire-most (`count_nacks_out`), counts the NACKs the chain's generator sends
/// to WHIP publishers (`tidecast_webrtc_nacks_total{direction="sent"}`).
#[derive(Default)]
struct ReportsToSession {
    queue: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    writes: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    count_nacks_out: bool,
}

impl Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()> for ReportsToSession {
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: rtc::interceptor::TaggedPacket) -> rtc::shared::error::Result<()> {
        use rtc::rtcp::sender_report::SenderReport;
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet {
            let wanted = packets
                .iter()
                .any(|p| p.as_any().is::<SenderReport>() || p.as_any().is::<TransportLayerNack>());
            if wanted && !self.count_nacks_out {
                msg.message.add(rtc::interceptor::Attribute::DeliverToApplication);
            }
        }
        self.queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.queue.pop_front()
    }

    fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> rtc::shared::error::Result<()> {
        use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
        if self.count_nacks_out {
            if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet {
                let n = packets.iter().filter(|p| p.as_any().is::<TransportLayerNack>()).count();
                if n > 0 {
                    metrics().webrtc_nacks.with_label_values(&["sent"]).inc_by(n as u64);
                }
            }
        }
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.writes.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> rtc::shared::error::Result<()> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl rtc::interceptor::Interceptor for ReportsToSession {
    fn bind_local_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &rtc::interceptor::StreamInfo) {}
}

/// RTP packets of each outgoing stream kept for NACK repairs: about 2 s of a 2 Mb/s stream,
/// 0.7 s of 6 Mb/s, longer than a repair that still arrives in time (rtc's default, 1,024, kept
/// 4-5 s and was most of a viewer's memory). The payloads are the frame's shared ones (see
/// `viewer/whep.rs`), so the history holds references, not copies.
const NACK_HISTORY: u16 = 512;

/// The interceptors of a session, by direction: of `rtc`'s defaults only those that act on
/// what the session sends (`play`, WHEP) or receives (WHIP), plus ours. Each one is a hop every
/// packet makes through a queue of its own (most of `rtc`'s per-packet cost), so a WHEP viewer
/// does not carry the receive side's NACK generator, receiver reports and TWCC feedback, nor a
/// WHIP publisher the NACK history and sender reports.
fn interceptors(media: &mut MediaEngine, play: bool) -> rtc::shared::error::Result<Registry> {
    use rtc::interceptor::{
        NackGeneratorBuilder, NackResponderBuilder, ReceiverReportBuilder, SenderReportBuilder, Slot,
    };
    configure_simulcast_extension_headers(media)?;
    let to_session = (Slot::Custom(20_000), ReportsToSession::default());
    if play {
        // Repairs from the NACK history; sender reports, by which the browser syncs audio and
        // video; the viewer's NACKs counted by the session.
        return Ok(Registry::new()
            .with(Slot::NackResponder, NackResponderBuilder::new().with_size(NACK_HISTORY).build())
            .with(Slot::SenderReport, SenderReportBuilder::new().build())
            .with(to_session.0, to_session.1));
    }
    // NACKs for lost packets (counted as they leave), receiver reports, TWCC feedback for the
    // publisher's bandwidth estimate; its sender reports go to the session (RTP to wall clock).
    let registry = Registry::new().with(Slot::NackGenerator, NackGeneratorBuilder::new().build());
    let registry = configure_twcc_receiver_only(registry, media)?;
    Ok(registry
        .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build())
        .with(to_session.0, to_session.1)
        .with(Slot::Custom(500), ReportsToSession { count_nacks_out: true, ..Default::default() }))
}

/// H.264 packetization-mode 1 of `profile` (its profile-level-id), with `rtcp_feedback`.
fn h264_codec(profile: &str, rtcp_feedback: Vec<RTCPFeedback>) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: format!("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={profile}"),
        rtcp_feedback,
    }
}

/// Opus, 48 kHz stereo with in-band FEC, with `rtcp_feedback`.
fn opus_codec(rtcp_feedback: Vec<RTCPFeedback>) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback,
    }
}

fn register_codecs(media: &mut MediaEngine) -> rtc::shared::error::Result<()> {
    let feedback = |t: &str, p: &str| RTCPFeedback { typ: t.to_owned(), parameter: p.to_owned() };
    let video_feedback = vec![
        feedback("nack", ""),
        feedback("nack", "pli"),
        feedback("ccm", "fir"),
        feedback("transport-cc", ""),
    ];
    for (i, profile) in H264_PROFILES.iter().enumerate() {
        media.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(profile, video_feedback.clone()),
                payload_type: 102 + 2 * i as u8,
            },
            RtpCodecKind::Video,
        )?;
    }
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: opus_codec(vec![feedback("transport-cc", "")]),
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    Ok(())
}

fn add_track(pc: &mut RTCPeerConnection, kind: RtpCodecKind) -> Result<RTCRtpSenderId> {
    use rtc::media_stream::MediaStreamTrack;
    use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters};
    let (name, codec) = match kind {
        RtpCodecKind::Audio => ("audio", opus_codec(vec![])),
        _ => ("video", h264_codec(H264_PROFILES[0], vec![])),
    };
    let track = MediaStreamTrack::new(
        "tidecast".to_owned(),
        name.to_owned(),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(rand::random::<u32>()),
                ..Default::default()
            },
            codec,
            ..Default::default()
        }],
    );
    pc.add_track(track).map_err(rtc_error)
}

/// The IPs our host candidates carry (see `WebRtcConfig`).
fn candidate_ips(config: &WebRtcConfig, bound: IpAddr) -> Vec<IpAddr> {
    if !config.advertise_ips.is_empty() {
        return config.advertise_ips.iter().filter_map(|s| s.parse().ok()).collect();
    }
    if !bound.is_unspecified() {
        return vec![bound];
    }
    let nets: Vec<ipnet::IpNet> =
        config.ips.iter().filter_map(|s| crate::admission::parse_network(s).ok()).collect();
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| config.interfaces.is_empty() || config.interfaces.iter().any(|n| n == &i.name))
        .map(|i| i.ip())
        .filter(|ip| bound.is_ipv4() == ip.is_ipv4() || bound.is_ipv6())
        .filter(|ip| nets.is_empty() || nets.iter().any(|n| n.contains(ip)))
        .filter(|ip| !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .collect();
    let mut seen = HashSet::new();
    ips.retain(|ip| seen.insert(*ip));
    // Loopback only when it is all there is (a machine with no network, or `lo` named).
    if ips.iter().any(|ip| !ip.is_loopback()) && config.interfaces.is_empty() && config.ips.is_empty() {
        ips.retain(|ip| !ip.is_loopback());
    }
    ips
}

fn rtc_error(e: rtc::shared::error::Error) -> Error {
    Error::internal(format!("webrtc: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Datagrams fed one by one; the sizes of each GSO send that results.
    fn batches(datagrams: &[(u16, usize)], max_segments: usize) -> Vec<Vec<usize>> {
        let mut b = UdpBatch::default();
        let mut sent = Vec::new();
        let mut current = Vec::new();
        for &(port, len) in datagrams {
            let d = vec![0u8; len];
            if !b.push(peer(port), &d, max_segments) {
                sent.push(std::mem::take(&mut current));
                b.contents.clear();
                b.count = 0;
                assert!(b.push(peer(port), &d, max_segments), "a fresh batch takes any datagram");
            }
            current.push(len);
        }
        sent.push(current);
        sent
    }

    #[test]
    fn a_frames_packets_go_in_one_gso_send() {
        // FU-A fragments of one size, the last shorter; then the next frame's.
        let frame = [(1, 1200), (1, 1200), (1, 1200), (1, 700), (1, 1200), (1, 300)];
        assert_eq!(batches(&frame, 64), vec![vec![1200, 1200, 1200, 700], vec![1200, 300]]);
        // A larger datagram after smaller ones starts a new send; so does another peer.
        assert_eq!(batches(&[(1, 100), (1, 1200), (2, 1200)], 64), vec![vec![100], vec![1200], vec![1200]]);
        // No GSO: one datagram per send.
        assert_eq!(batches(&[(1, 1200), (1, 1200)], 1), vec![vec![1200], vec![1200]]);
        // At most 64 KiB per send.
        let many = vec![(1, 1200); 60];
        let sizes: Vec<usize> = batches(&many, 64).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_GSO_BYTES / 1200, 60 - MAX_GSO_BYTES / 1200]);
    }
}
