//! WebRTC (WHIP ingest, WHEP play), the sans-IO half: what tidecast decides about an SDP offer
//! before a peer connection is built ([`sdp`]), which session a datagram on the shared port
//! belongs to ([`sdp::stun_local_ufrag`]), RTP in to media-model frames ([`depacketize`]) and
//! frames out to RTP payloads ([`packetize`]).
//!
//! Where it sits: the peer connections themselves (ICE-lite, DTLS, SRTP, RTCP reports, NACK)
//! are webrtc-rs's sans-IO core, `rtc`, driven by `actors/webrtc.rs`, which owns the one UDP
//! port and the one ICE-TCP port every session shares. `rtc` hands us decrypted RTP packets and
//! takes RTP packets to send; what they carry is decided here:
//!
//! ```text
//! WHIP: rtc RTP -> ReorderBuffer (waits for NACK repairs) -> retina's H.264 depacketizer / Opus
//!       -> RtspDemux (RTCP sender-report timing, shared with RTSP pull) -> Frames
//! WHEP: Frames -> H264Packetizer (SPS/PPS before every IDR, FU-A/STAP-A by rtc's payloader),
//!       once per frame for all viewers (the frame's RTP_WIRE cache), and Opus (one frame per
//!       packet) -> each viewer's RTP headers -> rtc (SRTP per viewer)
//! ```
//!
//! Codecs: H.264 with packetization-mode 1 and Opus, so nothing needs transcoding: OBS sends
//! exactly these, browsers offer them among others, and LL-HLS, RTMP play and the archive take
//! them as they are.

pub mod depacketize;
pub mod packetize;
pub mod sdp;

pub use depacketize::{RtpKind, WhipDepacketizer};
pub use packetize::{h264_payloads, H264Packetizer, RtpPayload, RTP_WIRE};
pub use sdp::{check_offer, stun_local_ufrag, OfferError, OfferSummary, Role};
