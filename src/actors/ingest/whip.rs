//! WHIP ingest adapter (RFC 9725): one WebRTC publisher (OBS 30+, a browser) as an
//! `IngestSession`.
//!
//! Data flow: the shared UDP/ICE-TCP port (`actors/webrtc.rs`) -> this session's
//! `rtc::RTCPeerConnection` (ICE-lite, DTLS, SRTP; NACK and receiver reports by its
//! interceptors) -> decrypted RTP and RTCP -> `protocols::webrtc::WhipDepacketizer` (reorder,
//! H.264/Opus, sender-report timing) -> `IngestSession::push` -> the channel's ring, where
//! LL-HLS, RTMP play, WHEP, the ladder and the archive read it like any publisher's.
//!
//! The HTTP side (`http/webrtc.rs`) authorizes the key and takes the publish grant before it
//! answers, so a wrong key is 401 and a taken channel 409 with nothing negotiated; this task
//! then owns the session until the publisher leaves (`DELETE`, DTLS close), vanishes (nothing
//! heard for `webrtc.idle_timeout`), never connects (`webrtc.connect_timeout`), or the channel
//! cuts it off. Key frames: a PLI at the start, after loss the depacketizer could not repair,
//! and whenever the newest key frame is older than `webrtc.keyframe_request_interval` (browsers
//! send one only when asked; LL-HLS segments and WHEP viewers start at key frames).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::sansio::Protocol;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{IngestEnd, IngestSession};
use crate::actors::webrtc::{Expired, Peer, SessionGuard, Wake, WebRtc};
use crate::metrics::metrics;
use crate::protocols::rtsp::RtspEvent;
use crate::protocols::webrtc::{OfferSummary, RtpKind, WhipDepacketizer};

/// The shortest key frame interval browsers honour a PLI at (libwebrtc's 300 ms, and a margin).
const MIN_KEY_INTERVAL: Duration = Duration::from_millis(350);

/// The session's clock for reorder waits, timeouts and key frame requests.
const TICK: Duration = Duration::from_millis(50);

/// Run a negotiated WHIP session to its end.
pub(crate) async fn run(
    rtc: WebRtc,
    mut peer: Peer,
    guard: SessionGuard,
    mut ingest: IngestSession,
    offer: OfferSummary,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    let config = rtc.config().clone();
    let end = match WhipDepacketizer::new(offer.h264_fmtp.as_deref(), offer.audio.then_some(2), started) {
        Err(e) => IngestEnd::Failed(format!("offer: {e}")),
        Ok(dep) => {
            let mut s = Whip {
                dep,
                tracks: HashMap::new(),
                video: None,
                connected: false,
                last_pli: None,
                viewer_wants_key: false,
                reported_lost: 0,
                events: Vec::new(),
            };
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (channel, session_id) = (ingest.channel_name().to_owned(), ingest.session_id());
            let keys = rtc.publisher_started(&channel, session_id);
            let end = loop {
                if let Err(end) = s.drain(&mut peer, &mut ingest, config.keyframe_request_interval) {
                    break end;
                }
                keys.set_newest(s.dep.last_key());
                let now = Instant::now();
                tokio::select! {
                    wake = peer.io() => if let Wake::Closed = wake { break IngestEnd::Disconnected },
                    _ = tick.tick() => {
                        if let Err(e) = s.dep.tick(now, &mut s.events) {
                            break IngestEnd::Failed(e);
                        }
                        match peer.expired(s.connected, started, now) {
                            Some(Expired::NeverConnected) => break IngestEnd::Failed(format!(
                                "ICE/DTLS did not complete within {:?}", config.connect_timeout
                            )),
                            Some(Expired::Idle) => break IngestEnd::Idle,
                            None => {}
                        }
                    }
                    // A WHEP viewer starts on a fresh key frame rather than a buffered one.
                    _ = keys.wanted.notified() => s.viewer_wants_key = true,
                    _ = ingest.cancelled() => break IngestEnd::CutOff,
                    _ = cancel.cancelled() => break IngestEnd::Finished,
                }
            };
            rtc.publisher_ended(&channel, session_id);
            end
        }
    };
    peer.close();
    info!("whip session closed");
    ingest.finish(&end);
    drop(guard);
}

struct Whip {
    dep: WhipDepacketizer,
    /// The publisher's tracks by `rtc` track id.
    tracks: HashMap<String, RtpKind>,
    /// The video receiver and the SSRC it receives (for PLI).
    video: Option<(RTCRtpReceiverId, u32)>,
    connected: bool,
    last_pli: Option<Instant>,
    /// A WHEP viewer asked for a key frame (sent at once, not at the interval's pace).
    viewer_wants_key: bool,
    reported_lost: u64,
    events: Vec<RtspEvent>,
}

impl Whip {
    /// Everything the peer connection has for us: sends, state changes, RTP and RTCP; then the
    /// frames that came of it go to the ring, and a key frame is asked for when needed.
    fn drain(
        &mut self,
        peer: &mut Peer,
        ingest: &mut IngestSession,
        pli_every: Duration,
    ) -> Result<(), IngestEnd> {
        peer.flush();
        while let Some(ev) = peer.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected if !self.connected => {
                        self.connected = true;
                        info!("whip publisher connected");
                    }
                    RTCPeerConnectionState::Failed => {
                        return Err(IngestEnd::Failed("ICE or DTLS failed".into()));
                    }
                    RTCPeerConnectionState::Closed => return Err(IngestEnd::Finished),
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = peer.pc.rtp_receiver(init.receiver_id).map(|r| r.track().kind());
                    let kind = match kind {
                        Some(RtpCodecKind::Video) => {
                            self.video = Some((init.receiver_id, init.ssrc));
                            RtpKind::Video
                        }
                        Some(RtpCodecKind::Audio) => RtpKind::Audio,
                        _ => continue,
                    };
                    self.tracks.insert(init.track_id.clone(), kind);
                }
                _ => {}
            }
        }
        while let Some(msg) = peer.pc.poll_read() {
            let now = msg.now;
            match msg.message {
                RTCMessage::RtpPacket(track, p) => {
                    let Some(&kind) = self.tracks.get(&track) else { continue };
                    ingest.received(p.payload.len() + 12);
                    let h = &p.header;
                    let (seq, ts, marker, ssrc) = (h.sequence_number, h.timestamp, h.marker, h.ssrc);
                    self.dep
                        .rtp(kind, seq, ts, marker, ssrc, p.payload, now, &mut self.events)
                        .map_err(IngestEnd::Failed)?;
                }
                RTCMessage::RtcpPacket(track, packets) => {
                    let Some(&kind) = self.tracks.get(&track) else { continue };
                    for p in packets {
                        if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                            self.dep.sender_report(kind, sr.rtp_time, sr.ntp_time, now, &mut self.events);
                        } else if p.as_any().is::<TransportLayerNack>() {
                            // Our own NACKs are not handed back; this is the publisher's.
                        }
                    }
                }
                _ => {}
            }
        }
        for e in self.events.drain(..) {
            match e {
                RtspEvent::Tracks(t) => ingest.set_tracks(t),
                RtspEvent::Frame(f) => ingest.push(f),
            }
        }
        let (lost, _, _) = self.dep.losses();
        if lost > self.reported_lost {
            metrics().webrtc_rtp_lost.inc_by(lost - self.reported_lost);
            self.reported_lost = lost;
        }
        let now = Instant::now();
        // Browsers send a key frame only when asked (their GOP is minutes long), and LL-HLS can
        // only cut a segment at one: ask whenever the newest is older than the interval (the
        // segment target's pace), and until one comes.
        let stale = self.dep.waiting_for_key() || self.dep.key_age(now).is_none_or(|age| age >= pli_every);
        let due = stale && self.last_pli.is_none_or(|t| now.duration_since(t) >= pli_every);
        // Chromium ignores a PLI that comes within 300 ms of its last key frame
        // (libwebrtc's minimum key frame interval): a viewer's request waits until then.
        let asked = self.viewer_wants_key && self.dep.key_age(now).is_none_or(|age| age >= MIN_KEY_INTERVAL);
        if asked {
            self.viewer_wants_key = false;
        }
        if self.connected && (self.dep.take_key_request() || due || asked) {
            if let Some((receiver, ssrc)) = self.video {
                if let Some(mut r) = peer.pc.rtp_receiver(receiver) {
                    let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
                    match r.write_rtcp(now, vec![Box::new(pli)]) {
                        Ok(()) => {
                            metrics().webrtc_plis_sent.inc();
                            tracing::debug!(asked, "PLI sent");
                        }
                        Err(e) => warn!(error = %e, "whip: cannot send PLI"),
                    }
                    self.last_pli = Some(now);
                }
            }
            peer.flush();
        }
        Ok(())
    }
}
