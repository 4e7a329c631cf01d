//! WHEP play adapter: a `ViewerSession` served over WebRTC (browsers, the watch page's
//! lowest-latency mode).
//!
//! Data flow: the channel's ring -> `ViewerSession::next_batch` (lag policy: starts on the
//! newest key frame, skips to key frames when behind, cut off when it stays behind) ->
//! `protocols::webrtc::h264_payloads` (packetized once per frame, shared by every viewer) / Opus
//! payloads -> RTP packets of this viewer's sequence numbers, SSRCs and timestamps -> `rtc`
//! (SRTP, kept for NACK repairs) -> `Peer::flush`: one GSO send per run of equal-size datagrams
//! -> the shared UDP port.
//!
//! Timing: the RTP timestamp is the frame's presentation time on the channel's timeline in the
//! codec's clock (90 kHz, 48 kHz) from a random base (RFC 3550 §5.1); `rtc`'s sender reports map
//! it to wall-clock time so the browser keeps audio and video in sync. Live frames leave as soon
//! as the ring has them: WebRTC's jitter buffer paces playback, and no write ever waits (UDP),
//! so the write timeout of other protocols has nothing to time; a viewer whose connection is
//! gone is caught by the idle timeout instead. The backlog a viewer starts with (the frames
//! since the key frame it starts on, up to a GOP) leaves at [`CATCH_UP`] times real time, not
//! in one burst: a GOP of datagrams back to back overflowed receive buffers and router queues
//! (half of 200 loopback viewers lost packets in their first second).
//!
//! Audio: Opus from the ring as it is; an AAC channel's audio has no WebRTC form, so the
//! session looks for the transcode ladder's `opus` rendition once a second and sends it from
//! then on (the answer and the log said audio was absent until then).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::actors::viewer::{CutReason, Step, ViewerSession};
use crate::actors::webrtc::{Expired, Peer, SessionGuard, Wake, WebRtc};
use crate::media::{AudioCodec, Frame, MediaTime, TrackKind, VideoCodec};
use crate::metrics::metrics;
use crate::protocols::webrtc::{h264_payloads, RtpPayload};

/// Frames taken from the ring per batch.
const BATCH: usize = 64;
const TICK: Duration = Duration::from_millis(250);
/// How much faster than real time a viewer's starting backlog is sent.
const CATCH_UP: u32 = 4;

/// When each frame may leave: at [`CATCH_UP`] times the media's own pace from the first frame
/// sent, or at once when that moment has passed (every live frame once the backlog is sent).
#[derive(Default)]
struct Pacer {
    origin: Option<(Instant, MediaTime)>,
}

impl Pacer {
    fn due(&mut self, frame: &Frame, now: Instant) -> Instant {
        let (wall, dts) = *self.origin.get_or_insert((now, frame.dts));
        let ahead = frame.dts.minus(dts).as_duration() / CATCH_UP;
        wall + ahead
    }
}

/// One of our outgoing RTP streams.
struct Sender {
    id: RTCRtpSenderId,
    ssrc: u32,
    payload_type: u8,
    seq: u16,
    base: u32,
    clock: u32,
}

impl Sender {
    fn open(peer: &mut Peer, kind: RtpCodecKind, id: RTCRtpSenderId) -> Option<Sender> {
        let mut s = peer.pc.rtp_sender(id)?;
        let ssrc = s.track().ssrcs().last()?;
        let codec = s.get_parameters().rtp_parameters.codecs.first()?.clone();
        Some(Sender {
            id,
            ssrc,
            payload_type: codec.payload_type,
            seq: rand::random(),
            base: rand::random(),
            clock: if kind == RtpCodecKind::Audio { 48_000 } else { 90_000 },
        })
    }

    fn send(&mut self, peer: &mut Peer, frame: &Frame, payloads: &mut Vec<RtpPayload>) -> u64 {
        let ts = self.base.wrapping_add(frame.pts.rescale(self.clock).ticks as u32);
        let now = Instant::now();
        let mut bytes = 0;
        let Some(mut sender) = peer.pc.rtp_sender(self.id) else { return 0 };
        for p in payloads.drain(..) {
            bytes += p.payload.len() as u64 + 12;
            let packet = Packet {
                header: Header {
                    version: 2,
                    marker: p.marker,
                    payload_type: self.payload_type,
                    sequence_number: self.seq,
                    timestamp: ts,
                    ssrc: self.ssrc,
                    ..Default::default()
                },
                payload: p.payload,
            };
            self.seq = self.seq.wrapping_add(1);
            if let Err(e) = sender.write_rtp(now, packet) {
                debug!(error = %e, "whep: RTP not sent");
            }
        }
        bytes
    }
}

/// The session's outgoing streams.
#[derive(Default)]
struct Outgoing {
    video: Option<Sender>,
    audio: Option<Sender>,
    payloads: Vec<RtpPayload>,
    /// The channel's audio is AAC (seen on the ring): the ladder's Opus is looked for.
    aac_seen: bool,
}

impl Outgoing {
    /// Send the held frames that are due (see [`Pacer`]), in order; returns the bytes sent.
    fn send_due(
        &mut self,
        held: &mut std::collections::VecDeque<Arc<Frame>>,
        pacer: &mut Pacer,
        peer: &mut Peer,
    ) -> u64 {
        let now = Instant::now();
        let mut sent = 0;
        while let Some(f) = held.front() {
            if pacer.due(f, now) > now {
                break;
            }
            sent += self.send_frame(f, peer);
            held.pop_front();
        }
        peer.flush();
        sent
    }

    fn send_frame(&mut self, f: &Frame, peer: &mut Peer) -> u64 {
        match f.track {
            TrackKind::Video => {
                let Some(v) = self.video.as_mut() else { return 0 };
                if f.tracks.video.as_ref().is_none_or(|c| c.codec != VideoCodec::H264) {
                    return 0;
                }
                h264_payloads(f, &mut self.payloads);
                v.send(peer, f, &mut self.payloads)
            }
            TrackKind::Audio => {
                let Some(a) = self.audio.as_mut() else { return 0 };
                if f.tracks.audio.as_ref().is_none_or(|c| c.codec != AudioCodec::Opus) {
                    self.aac_seen |= f.tracks.audio.as_ref().is_some_and(|c| c.codec == AudioCodec::Aac);
                    return 0;
                }
                self.payloads.push(RtpPayload { payload: f.data.clone(), marker: true });
                a.send(peer, f, &mut self.payloads)
            }
        }
    }
}

/// Where an AAC channel's Opus comes from: the transcode ladder's `opus` rendition, which
/// appears once its ffmpeg runs (or never, with the ladder off). Looked for once a second.
pub(crate) struct OpusFromLadder {
    pub registry: actix::Addr<crate::actors::registry::ChannelRegistry>,
    pub entitled: bool,
}

async fn ladder_opus(from: &OpusFromLadder, channel: &str) -> Option<crate::media::RingReader> {
    let resolve = crate::actors::registry::ResolvePlay { name: channel.to_owned(), entitled: from.entitled };
    let addr = from.registry.send(resolve).await.ok()?.ok()?;
    let add = crate::actors::channel::AddReader { rendition: crate::actors::transcode::OPUS.to_owned() };
    addr.send(add).await.ok()?.ok()
}

/// A negotiated WHEP session, ready to run.
pub(crate) struct WhepSession {
    pub peer: Peer,
    pub guard: SessionGuard,
    pub session: ViewerSession,
    pub senders: Vec<(RtpCodecKind, RTCRtpSenderId)>,
    pub channel: String,
    pub opus_from: Option<OpusFromLadder>,
    pub cancel: CancellationToken,
}

/// Run a negotiated WHEP session to its end.
pub(crate) async fn run(rtc: WebRtc, w: WhepSession) {
    let WhepSession { mut peer, guard, mut session, senders, channel, opus_from, cancel } = w;
    let started = Instant::now();
    let mut out = Outgoing::default();
    for (kind, id) in senders {
        match kind {
            RtpCodecKind::Video => out.video = Sender::open(&mut peer, kind, id),
            _ => out.audio = Sender::open(&mut peer, kind, id),
        }
    }
    let mut batch: Vec<Arc<Frame>> = Vec::new();
    // Frames read from the ring that the pacer holds back (the starting backlog).
    let mut held: std::collections::VecDeque<Arc<Frame>> = std::collections::VecDeque::new();
    let mut pacer = Pacer::default();
    let mut connected = false;
    let mut opus: Option<crate::media::RingReader> = None;
    let mut opus_batch: Vec<Arc<Frame>> = Vec::new();
    let mut next_opus_try = Instant::now();
    let mut tick = tokio::time::interval(TICK);
    let end = 'session: loop {
        peer.flush();
        while let Some(ev) = peer.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) = ev {
                match state {
                    RTCPeerConnectionState::Connected => {
                        connected = true;
                        // Start on a young buffered key frame, or ask a WHIP publisher for a
                        // fresh one and start on that (`WebRtc::wait_for_fresh_key`).
                        let fresh = rtc.wait_for_fresh_key(&channel);
                        if fresh {
                            session.start_at_next_key();
                        }
                        info!(fresh_key_frame = fresh, "whep viewer connected");
                    }
                    RTCPeerConnectionState::Failed => break 'session "ICE or DTLS failed",
                    RTCPeerConnectionState::Closed => break 'session "closed by the viewer",
                    _ => {}
                }
            }
        }
        while let Some(msg) = peer.pc.poll_read() {
            if let RTCMessage::RtcpPacket(_, packets) = msg.message {
                let nacks = packets.iter().filter(|p| p.as_any().is::<TransportLayerNack>()).count();
                if nacks > 0 {
                    metrics().webrtc_nacks.with_label_values(&["received"]).inc_by(nacks as u64);
                }
            }
        }
        let now = Instant::now();
        tokio::select! {
            wake = peer.io() => if let Wake::Closed = wake { break "closed" },
            open = session.wait(), if connected && held.is_empty() => {
                let mut sent = 0;
                loop {
                    match session.next_batch(&mut batch, BATCH) {
                        Step::Frames => {}
                        Step::Idle if open => break,
                        Step::Idle | Step::Ended => {
                            peer.flush();
                            return finish(peer, guard, "stream ended");
                        }
                        Step::Cut(_) => return finish(peer, guard, "cut off (kept falling behind)"),
                    }
                    held.extend(batch.drain(..));
                    sent += out.send_due(&mut held, &mut pacer, &mut peer);
                    if !held.is_empty() {
                        break; // the rest when the pacer says
                    }
                }
                if sent > 0 {
                    let _ = session.deliver(async { Ok(sent) }).await;
                    session.media_written();
                }
            }
            _ = tokio::time::sleep_until(held.front().map_or(now, |f| pacer.due(f, now)).into()), if !held.is_empty() => {
                let sent = out.send_due(&mut held, &mut pacer, &mut peer);
                if sent > 0 {
                    let _ = session.deliver(async { Ok(sent) }).await;
                    session.media_written();
                }
            }
            open = async { opus.as_mut().expect("guarded").wait().await }, if connected && opus.is_some() => {
                let reader = opus.as_mut().expect("guarded");
                let mut sent = 0;
                loop {
                    opus_batch.clear();
                    let b = reader.read_batch(&mut opus_batch, BATCH);
                    if opus_batch.is_empty() {
                        if b.closed || !open {
                            opus = None; // the ladder stopped; looked for again
                        }
                        break;
                    }
                    let Some(a) = out.audio.as_mut() else { break };
                    for f in &opus_batch {
                        out.payloads.push(RtpPayload { payload: f.data.clone(), marker: true });
                        sent += a.send(&mut peer, f, &mut out.payloads);
                    }
                    peer.flush();
                }
                if sent > 0 {
                    let _ = session.deliver(async { Ok(sent) }).await;
                }
            }
            _ = tick.tick() => {
                if let Some(from) = opus_from.as_ref().filter(|_| out.aac_seen && connected && opus.is_none() && now >= next_opus_try) {
                    next_opus_try = now + Duration::from_secs(1);
                    opus = ladder_opus(from, &channel).await;
                    if opus.is_some() {
                        info!("the transcode ladder's Opus track is here: audio added");
                    }
                }
                match peer.expired(connected, started, now) {
                    Some(Expired::NeverConnected) => break "ICE/DTLS did not complete in time",
                    Some(Expired::Idle) => break "nothing heard from the viewer (gone)",
                    None => {}
                }
            }
            _ = rtc.shutdown().cancelled() => {
                session.cut(CutReason::Shutdown);
                break "server shutting down";
            }
            _ = cancel.cancelled() => break "DELETE",
        }
    };
    finish(peer, guard, end)
}

fn finish(mut peer: Peer, guard: SessionGuard, why: &str) {
    peer.close();
    info!(reason = why, "whep session closed");
    drop(guard);
}
