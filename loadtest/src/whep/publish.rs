//! A WHIP publisher (`whep-clients --whip-publish URL --input FILE.flv`): the FLV file's H.264
//! video, in real time and looped (timestamps kept monotonic), sent as RTP over one `rtc` peer
//! connection (the offerer: one sendonly H.264 track; no audio, the file's AAC has no WebRTC
//! form). The SPS and PPS of the file's configuration record go in front of every key frame
//! (as OBS does), so a server that reads parameter sets in-band can start anywhere. For servers
//! that serve WHEP only from WebRTC publishers (xiu), and for like-for-like runs on tidecast.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_H264};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp::packetizer::Payloader;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::net::UdpSocket;

use crate::flv::{self, TagKind};
use crate::http::Endpoint;
use crate::peer;

/// One video frame of the file: its RTP payloads (the last one marks the frame's end).
struct Frame {
    ts_ms: u32,
    payloads: Vec<Bytes>,
}

/// The file's video as RTP payloads, packetized once.
fn frames(path: &std::path::Path) -> Result<Vec<Frame>> {
    let tags = flv::read(path)?;
    let mut sps_pps: Vec<Bytes> = Vec::new();
    let mut len_size = 4usize;
    let mut payloader = H264Payloader::default();
    let mut out = Vec::new();
    for t in tags.iter().filter(|t| t.kind == TagKind::Video) {
        let d = &t.data;
        if d.len() < 5 || d[0] & 0x0f != 7 {
            continue; // not AVC
        }
        if d[1] == 0 {
            // AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1).
            let r = d.slice(5..);
            if r.len() < 7 {
                bail!("short avcC");
            }
            len_size = (r[4] & 3) as usize + 1;
            let mut off = 5;
            let nsps = (r[off] & 0x1f) as usize;
            off += 1;
            sps_pps.clear();
            for _ in 0..nsps {
                let n = u16::from_be_bytes([r[off], r[off + 1]]) as usize;
                sps_pps.push(r.slice(off + 2..off + 2 + n));
                off += 2 + n;
            }
            let npps = r[off] as usize;
            off += 1;
            for _ in 0..npps {
                let n = u16::from_be_bytes([r[off], r[off + 1]]) as usize;
                sps_pps.push(r.slice(off + 2..off + 2 + n));
                off += 2 + n;
            }
            continue;
        }
        if d[1] != 1 {
            continue;
        }
        if d[2..5] != [0, 0, 0] {
            bail!("the file has B-frames (a composition offset); WebRTC cannot carry them");
        }
        let key = d[0] >> 4 == 1;
        let mut payloads = Vec::new();
        if key {
            for ps in &sps_pps {
                payloads.extend(payloader.payload(1200, ps)?);
            }
        }
        let mut body = d.slice(5..);
        while body.len() >= len_size {
            let mut n = 0usize;
            for b in &body[..len_size] {
                n = (n << 8) | *b as usize;
            }
            if body.len() < len_size + n {
                break;
            }
            let nal = body.slice(len_size..len_size + n);
            payloads.extend(payloader.payload(1200, &nal)?);
            body = body.slice(len_size + n..);
        }
        if !payloads.is_empty() {
            out.push(Frame { ts_ms: t.ts_ms, payloads });
        }
    }
    if out.is_empty() {
        bail!("no H.264 frames in {}", path.display());
    }
    Ok(out)
}

/// Publish until `duration` has passed (or the connection fails).
pub async fn run(
    url: &str,
    token: Option<&str>,
    input: &std::path::Path,
    duration: Duration,
    bind_ip: std::net::IpAddr,
) -> Result<()> {
    let frames = frames(input)?;
    let endpoint = Endpoint::parse(url)?;
    let sock = UdpSocket::bind((bind_ip, 0)).await?;
    let local = sock.local_addr()?;

    let mut media = MediaEngine::default();
    let fb = |t: &str, p: &str| RTCPFeedback { typ: t.to_owned(), parameter: p.to_owned() };
    let codec = RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".to_owned(),
        rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir"), fb("transport-cc", "")],
    };
    media.register_codec(
        RTCRtpCodecParameters { rtp_codec: codec.clone(), payload_type: 102 },
        RtpCodecKind::Video,
    )?;
    let mut pc = peer::build(media)?;
    let ssrc: u32 = rand_u32();
    let track = MediaStreamTrack::new(
        "whep-clients".to_owned(),
        "video".to_owned(),
        "video".to_owned(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: RTCRtpCodec { rtcp_feedback: vec![], ..codec },
            ..Default::default()
        }],
    );
    let sender_id = pc.add_track(track)?;
    peer::offer_and_post(&mut pc, local, &endpoint, token).await.context("WHIP")?;
    let payload_type = pc
        .rtp_sender(sender_id)
        .and_then(|mut s| s.get_parameters().rtp_parameters.codecs.first().map(|c| c.payload_type))
        .unwrap_or(102);
    eprintln!("whip: answered; publishing {} frames per loop to {url}", frames.len());

    let started = Instant::now();
    let end = started + duration;
    let loop_ms = frames.last().map(|f| f.ts_ms).unwrap_or(0) + 33;
    let mut connected: Option<Instant> = None;
    let (mut idx, mut loops) = (0usize, 0u64);
    let mut seq: u16 = rand_u32() as u16;
    let ts_base = rand_u32();
    let mut buf = vec![0u8; 2048];
    loop {
        peer::flush(&mut pc, &sock).await;
        while let Some(ev) = pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(s) = ev {
                match s {
                    RTCPeerConnectionState::Connected => {
                        connected.get_or_insert_with(Instant::now);
                        eprintln!("whip: connected after {:?}", started.elapsed());
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        bail!("whip: peer connection {s}")
                    }
                    _ => {}
                }
            }
        }
        while pc.poll_read().is_some() {}
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Send every frame that is due (file time from the connection's start).
        let mut next_frame_at = None;
        if let Some(t0) = connected {
            loop {
                let f = &frames[idx];
                let file_ms = loops * loop_ms as u64 + f.ts_ms as u64;
                let at = t0 + Duration::from_millis(file_ms);
                if at > now {
                    next_frame_at = Some(at);
                    break;
                }
                let ts = ts_base.wrapping_add((file_ms * 90) as u32);
                let n = f.payloads.len();
                if let Some(mut sender) = pc.rtp_sender(sender_id) {
                    for (i, p) in f.payloads.iter().enumerate() {
                        let packet = Packet {
                            header: Header {
                                version: 2,
                                marker: i + 1 == n,
                                payload_type,
                                sequence_number: seq,
                                timestamp: ts,
                                ssrc,
                                ..Default::default()
                            },
                            payload: p.clone(),
                        };
                        seq = seq.wrapping_add(1);
                        let _ = sender.write_rtp(now, packet);
                    }
                }
                idx += 1;
                if idx == frames.len() {
                    idx = 0;
                    loops += 1;
                }
            }
        } else if now > started + Duration::from_secs(10) {
            bail!("whip: not connected 10 s after the answer");
        }
        let mut deadline = pc.poll_timeout().unwrap_or(now + Duration::from_secs(1)).min(end);
        if let Some(at) = next_frame_at {
            deadline = deadline.min(at);
        }
        if deadline <= now {
            let _ = pc.handle_timeout(now);
            continue;
        }
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    peer::feed(&mut pc, local, from, &buf[..n], Instant::now());
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let _ = pc.handle_timeout(Instant::now());
            }
        }
    }
    peer::close(&mut pc, &sock).await;
    Ok(())
}

/// A random-enough u32 (SSRC, first sequence number, timestamp base) without another crate.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos() ^ std::process::id() as u128);
    h.finish() as u32
}
