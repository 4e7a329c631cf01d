//! One WHEP viewer: an `rtc` peer connection (the offerer: recvonly H.264 and Opus, one host
//! candidate on its own UDP socket), signalled by `POST` to the WHEP endpoint, driven on its
//! socket until the window ends, then `DELETE`d. Counts RTP packets and bytes (no decoding),
//! first-sight sequence gaps (loss before NACK repair), late arrivals (repairs, reordering),
//! video timestamp jumps over 500 ms (a skip to a newer key frame), and the longest time without
//! RTP inside the window (a stall; one still running at the window's end is a cut-off).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264, MIME_TYPE_OPUS};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use tokio::net::UdpSocket;

use crate::http::Endpoint;
use crate::peer;

/// The measurement window (the same for every viewer).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub endpoint: Endpoint,
    pub token: Option<String>,
    pub window: Window,
    /// No RTP for this long inside the window is a stall.
    pub stall: Duration,
    /// ICE + DTLS must complete within this after the answer.
    pub connect_timeout: Duration,
    /// Datagrams read from the socket per wake-up before the connection is polled.
    pub read_burst: usize,
    /// SO_RCVBUF of each viewer's socket, bytes (0: the system default, net.core.rmem_default).
    pub rcvbuf: usize,
    /// The IP of the host candidate (the socket binds it, port 0).
    pub bind_ip: std::net::IpAddr,
    /// Becomes true when the viewers may leave (after the window, once main has read the
    /// sockets' drop counters): DELETE and close.
    pub leave: tokio::sync::watch::Receiver<bool>,
}

#[derive(Debug, Default)]
pub struct ViewerReport {
    /// Signalling or set-up failed (no peer connection to speak of).
    pub setup_error: Option<String>,
    /// Start (before the POST) to the answer.
    pub answered: Option<Duration>,
    /// Start to the peer connection's `connected`.
    pub connected: Option<Duration>,
    /// Start to the first video RTP packet.
    pub first_video: Option<Duration>,
    /// The connection failed or closed before the window's end.
    pub disconnected: Option<String>,
    /// In the window.
    pub video_packets: u64,
    pub audio_packets: u64,
    pub rtp_bytes: u64,
    /// Sequence numbers first missing (before repair), in the window.
    pub lost: u64,
    /// Packets that arrived behind the newest one (repairs, reordering), in the window.
    pub late: u64,
    /// The same two before the window (mostly the start: the burst from the newest key frame).
    pub lost_before: u64,
    pub late_before: u64,
    /// Video timestamp jumps over 500 ms, in the window.
    pub skips: u64,
    /// The longest time without RTP in the window, ms (from the window's start, to its end).
    pub max_gap_ms: u64,
    /// No RTP at all during the last `stall` of the window.
    pub cut_off: bool,
    /// Everything the socket received, whole run.
    pub datagrams: u64,
    /// The DELETE's status (None: not sent or failed).
    pub delete_status: Option<u16>,
    pub delete_error: Option<String>,
}

pub async fn run(opts: Options) -> ViewerReport {
    let mut r = ViewerReport::default();
    let started = Instant::now();
    match session(&opts, started, &mut r).await {
        Ok(()) => {}
        Err(e) => {
            if r.answered.is_none() || r.connected.is_none() {
                r.setup_error = Some(format!("{e:#}"));
            } else if r.disconnected.is_none() {
                r.disconnected = Some(format!("{e:#}"));
            }
        }
    }
    r
}

fn build_pc() -> Result<RTCPeerConnection> {
    let mut media = MediaEngine::default();
    let fb = |t: &str, p: &str| RTCPFeedback { typ: t.to_owned(), parameter: p.to_owned() };
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                    .to_owned(),
                rtcp_feedback: vec![
                    fb("nack", ""),
                    fb("nack", "pli"),
                    fb("ccm", "fir"),
                    fb("transport-cc", ""),
                ],
            },
            payload_type: 102,
        },
        RtpCodecKind::Video,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![fb("transport-cc", "")],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    // A browser's receive side: receiver reports, NACK generation, TWCC feedback.
    let mut pc = peer::build(media)?;
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )?;
    }
    Ok(pc)
}

/// Payload type -> kind, from the answer's m= lines.
fn payload_kinds(sdp: &str) -> HashMap<u8, RtpCodecKind> {
    let mut out = HashMap::new();
    for line in sdp.lines() {
        let Some(m) = line.strip_prefix("m=") else { continue };
        let mut parts = m.split_whitespace();
        let kind = match parts.next() {
            Some("video") => RtpCodecKind::Video,
            Some("audio") => RtpCodecKind::Audio,
            _ => continue,
        };
        for pt in parts.skip(2) {
            if let Ok(pt) = pt.parse::<u8>() {
                out.insert(pt, kind);
            }
        }
    }
    out
}

async fn session(opts: &Options, started: Instant, r: &mut ViewerReport) -> Result<()> {
    let sock = UdpSocket::bind((opts.bind_ip, 0)).await.context("binding the UDP socket")?;
    let local = sock.local_addr()?;
    if opts.rcvbuf > 0 {
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBuf, &opts.rcvbuf)
            .context("setting SO_RCVBUF")?;
    }
    let mut pc = build_pc()?;
    let token = opts.token.as_deref();
    let negotiated = peer::offer_and_post(&mut pc, local, &opts.endpoint, token).await?;
    if std::env::var_os("WHEP_CLIENTS_DUMP_SDP").is_some() {
        let (offer, answer) = (&negotiated.offer, &negotiated.answer);
        eprintln!("--- offer\n{offer}--- answer ({:?})\n{answer}---", negotiated.location);
    }
    let kinds = payload_kinds(&negotiated.answer);
    r.answered = Some(started.elapsed());

    let result = drive(opts, started, &sock, local, &mut pc, &kinds, r).await;
    // Keep the socket open until main has read its drop counter (bounded: 5 s).
    let mut leave = opts.leave.clone();
    let _ = tokio::time::timeout(Duration::from_secs(5), leave.wait_for(|l| *l)).await;

    // Leave: DELETE the resource (RFC 9725 §4.4), then close (DTLS close_notify).
    if let Some(loc) = &negotiated.location {
        match tokio::time::timeout(Duration::from_secs(5), peer::delete(&opts.endpoint, loc, token)).await {
            Ok(Ok(res)) => r.delete_status = Some(res.status),
            Ok(Err(e)) => r.delete_error = Some(format!("{e:#}")),
            Err(_) => r.delete_error = Some("DELETE: no answer in 5 s".into()),
        }
    } else {
        r.delete_error = Some("no Location in the answer".into());
    }
    peer::close(&mut pc, &sock).await;
    result
}

/// Per-stream sequence tracking (video and audio each have one SSRC here).
#[derive(Default)]
struct Seq {
    highest: Option<u16>,
    last_ts: Option<u32>,
}

async fn drive(
    opts: &Options,
    started: Instant,
    sock: &UdpSocket,
    local: SocketAddr,
    pc: &mut RTCPeerConnection,
    kinds: &HashMap<u8, RtpCodecKind>,
    r: &mut ViewerReport,
) -> Result<()> {
    let w = opts.window;
    let connect_deadline = Instant::now() + opts.connect_timeout;
    let mut buf = vec![0u8; 2048];
    let mut last_rtp: Option<Instant> = None;
    let mut seqs: HashMap<u32, Seq> = HashMap::new();
    let mut connected = false;
    loop {
        peer::flush(pc, sock).await;
        while let Some(ev) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = ev {
                match state {
                    RTCPeerConnectionState::Connected if !connected => {
                        connected = true;
                        r.connected = Some(started.elapsed());
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        let now = Instant::now();
                        if now < w.end {
                            r.disconnected = Some(format!("peer connection {state}"));
                            // Nothing more will come: the rest of the window is one gap.
                            if connected {
                                r.cut_off = true;
                                let from = last_rtp.map_or(w.start, |l| l.max(w.start));
                                r.max_gap_ms = r
                                    .max_gap_ms
                                    .max(w.end.saturating_duration_since(from).as_millis() as u64);
                            }
                        } else {
                            finish_gaps(opts, last_rtp, r);
                        }
                        return if connected {
                            Ok(())
                        } else {
                            Err(anyhow!("peer connection {state} before connecting"))
                        };
                    }
                    // ICE consent lost for a while (it may come back): counted all the same.
                    RTCPeerConnectionState::Disconnected
                        if Instant::now() < w.end && r.disconnected.is_none() =>
                    {
                        r.disconnected = Some("peer connection disconnected (recovered later?)".into());
                    }
                    _ => {}
                }
            }
        }
        let now = Instant::now();
        while let Some(msg) = pc.poll_read() {
            let RTCMessage::RtpPacket(_, pkt) = msg.message else { continue };
            let kind = kinds.get(&pkt.header.payload_type).copied().unwrap_or(RtpCodecKind::Video);
            if kind == RtpCodecKind::Video && r.first_video.is_none() {
                r.first_video = Some(now.duration_since(started));
            }
            let in_window = now >= w.start && now < w.end;
            let s = seqs.entry(pkt.header.ssrc).or_default();
            let seq = pkt.header.sequence_number;
            let ahead = match s.highest {
                None => true,
                Some(h) => (seq.wrapping_sub(h) as i16) > 0,
            };
            if ahead {
                if let Some(h) = s.highest {
                    let gap = (seq.wrapping_sub(h) as u64).saturating_sub(1);
                    if in_window {
                        r.lost += gap;
                    } else if now < w.start {
                        r.lost_before += gap;
                    }
                }
                s.highest = Some(seq);
                if kind == RtpCodecKind::Video {
                    if let (Some(t), true) = (s.last_ts, in_window) {
                        if (pkt.header.timestamp.wrapping_sub(t) as i32) > 45_000 {
                            r.skips += 1;
                        }
                    }
                    s.last_ts = Some(pkt.header.timestamp);
                }
            } else if in_window {
                r.late += 1;
            } else if now < w.start {
                r.late_before += 1;
            }
            if in_window {
                match kind {
                    RtpCodecKind::Audio => r.audio_packets += 1,
                    _ => r.video_packets += 1,
                }
                r.rtp_bytes += (pkt.header.marshal_size() + pkt.payload.len()) as u64;
                let from = last_rtp.map_or(w.start, |l| l.max(w.start));
                r.max_gap_ms = r.max_gap_ms.max(now.duration_since(from).as_millis() as u64);
            }
            last_rtp = Some(now);
        }

        if now >= w.end {
            finish_gaps(opts, last_rtp, r);
            return Ok(());
        }
        if !connected && now >= connect_deadline {
            bail!("not connected {} s after the answer", opts.connect_timeout.as_secs());
        }
        let mut deadline = pc.poll_timeout().unwrap_or(now + Duration::from_secs(1)).min(w.end);
        if !connected {
            deadline = deadline.min(connect_deadline);
        }
        if deadline <= now {
            let _ = pc.handle_timeout(now);
            continue;
        }
        tokio::select! {
            res = sock.recv_from(&mut buf) => {
                let now = Instant::now();
                if let Ok((n, from)) = res {
                    peer::feed(pc, local, from, &buf[..n], now);
                    r.datagrams += 1;
                    // Take what else is queued, without waiting.
                    for _ in 1..opts.read_burst {
                        match sock.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                peer::feed(pc, local, from, &buf[..n], now);
                                r.datagrams += 1;
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let _ = pc.handle_timeout(Instant::now());
            }
        }
    }
}

/// The gap from the last RTP (or the window's start) to the window's end.
fn finish_gaps(opts: &Options, last_rtp: Option<Instant>, r: &mut ViewerReport) {
    let w = opts.window;
    let end = Instant::now().min(w.end);
    if end <= w.start {
        return;
    }
    let from = last_rtp.map_or(w.start, |l| l.max(w.start)).min(end);
    let tail = end.duration_since(from);
    r.max_gap_ms = r.max_gap_ms.max(tail.as_millis() as u64);
    if end >= w.end && tail >= opts.stall {
        r.cut_off = true;
    }
}
