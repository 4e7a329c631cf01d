//! What tidecast accepts in an SDP offer (RFC 8866, JSEP RFC 8829), checked before any peer
//! connection exists so that a bad offer costs nothing and gets a clear 4xx: too big (413),
//! not SDP (400), no usable codec (406). And which session a STUN datagram on the shared port
//! is for ([`stun_local_ufrag`]).

use std::io::Cursor;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

/// Which side of WebRTC the offer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// WHIP: the peer sends media to us.
    Publish,
    /// WHEP: we send media to the peer.
    Play,
}

/// Why an offer was refused. `Display` is the message the client gets (no input is echoed
/// beyond short codec names).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the SDP offer is {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("the SDP offer is not valid SDP: {0}")]
    Malformed(String),
    #[error("{0}")]
    Unsupported(String),
}

impl OfferError {
    /// The HTTP status RFC 9725 and RFC 9110 give for it.
    pub fn status(&self) -> u16 {
        match self {
            OfferError::TooLarge { .. } => 413,
            OfferError::Malformed(_) => 400,
            OfferError::Unsupported(_) => 406,
        }
    }
}

/// What the offer holds that the session needs before negotiation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferSummary {
    /// An H.264 (packetization-mode 1) video section.
    pub video: bool,
    /// An Opus audio section.
    pub audio: bool,
    /// The `a=fmtp` parameters of the chosen H.264 payload type (a publisher may put its
    /// `sprop-parameter-sets` there; OBS does not).
    pub h264_fmtp: Option<String>,
    /// Audio sections without Opus, which the session will ignore (said in the log).
    pub audio_ignored: bool,
}

/// Check `sdp` for `role`: at most `max_bytes`, parseable, an offer with a video section that
/// offers H.264 in packetization-mode 1 (the only video WebRTC carries without transcoding here).
/// Audio is optional; without Opus it is ignored.
pub fn check_offer(sdp: &str, max_bytes: usize, role: Role) -> Result<OfferSummary, OfferError> {
    if sdp.len() > max_bytes {
        return Err(OfferError::TooLarge { size: sdp.len(), max: max_bytes });
    }
    if !sdp.starts_with("v=0") {
        return Err(OfferError::Malformed("it must start with \"v=0\"".into()));
    }
    let parsed = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| OfferError::Malformed(short(&e.to_string())))?;
    let mut summary = OfferSummary::default();
    let mut saw_video = false;
    for m in &parsed.media_descriptions {
        match m.media_name.media.as_str() {
            "video" if !summary.video => {
                saw_video = true;
                if let Some(fmtp) = h264_packetization_mode_1(m) {
                    summary.video = true;
                    summary.h264_fmtp = Some(fmtp);
                }
            }
            "audio" if !summary.audio => {
                if has_codec(m, "opus") {
                    summary.audio = true;
                } else {
                    summary.audio_ignored = true;
                }
            }
            _ => {}
        }
    }
    if !summary.video {
        let what = match role {
            Role::Publish => "publish",
            Role::Play => "play",
        };
        return Err(OfferError::Unsupported(if saw_video {
            format!(
                "the offer's video has no H.264 with packetization-mode=1; tidecast {what}s H.264 \
                 (and Opus) over WebRTC"
            )
        } else {
            format!("the offer has no video section; tidecast {what}s H.264 (and Opus) over WebRTC")
        }));
    }
    Ok(summary)
}

/// The first H.264 payload type of `m` whose `fmtp` says packetization-mode=1: its fmtp line.
fn h264_packetization_mode_1(m: &MediaDescription) -> Option<String> {
    let pts = payload_types(m, "h264");
    for pt in pts {
        let fmtp = m.attributes.iter().filter(|a| a.key == "fmtp").find_map(|a| {
            let v = a.value.as_deref()?;
            let (p, params) = v.split_once(' ')?;
            (p == pt).then(|| params.trim().to_owned())
        });
        let Some(fmtp) = fmtp else { continue };
        let mode_1 = fmtp
            .split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .any(|(k, v)| k.eq_ignore_ascii_case("packetization-mode") && v.trim() == "1");
        if mode_1 {
            return Some(fmtp);
        }
    }
    None
}

fn has_codec(m: &MediaDescription, codec: &str) -> bool {
    !payload_types(m, codec).is_empty()
}

/// The payload types `a=rtpmap` names `codec` (case-insensitive), in offer order.
fn payload_types<'a>(m: &'a MediaDescription, codec: &str) -> Vec<&'a str> {
    m.attributes
        .iter()
        .filter(|a| a.key == "rtpmap")
        .filter_map(|a| {
            let v = a.value.as_deref()?;
            let (pt, enc) = v.split_once(' ')?;
            let name = enc.split('/').next()?;
            name.eq_ignore_ascii_case(codec).then_some(pt)
        })
        .collect()
}

/// A parser message, cut to a line's worth (it may quote the input).
fn short(s: &str) -> String {
    let mut s: String = s.chars().take(120).filter(|c| !c.is_control()).collect();
    if s.is_empty() {
        s.push_str("unparseable");
    }
    s
}

/// The local ICE username fragment a STUN binding request is addressed to, or `None` when
/// `datagram` is not a STUN request with a USERNAME. RFC 8445 §7.2.2: a check from the peer
/// carries `USERNAME = <our ufrag>:<its ufrag>`, so the part before the colon names the
/// session, whatever address the peer checks from.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<String> {
    // RFC 7983 §7: the first byte of a STUN message is 0..=3.
    if datagram.len() < 20 || datagram[0] > 3 {
        return None;
    }
    let mut m = rtc::stun::message::Message::new();
    m.unmarshal_binary(datagram).ok()?;
    let user =
        rtc::stun::textattrs::TextAttribute::get_from_as(&m, rtc::stun::attributes::ATTR_USERNAME).ok()?;
    let local = user.text.split(':').next()?;
    (!local.is_empty() && local.len() <= 256).then(|| local.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS_LIKE: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
        a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\n\
        a=rtpmap:96 VP8/90000\r\na=rtpmap:97 H264/90000\r\n\
        a=fmtp:97 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn picks_h264_mode_1_and_opus() {
        let s = check_offer(OBS_LIKE, 64 * 1024, Role::Publish).unwrap();
        assert!(s.video && s.audio && !s.audio_ignored);
        assert!(s.h264_fmtp.unwrap().contains("profile-level-id=42e01f"));
    }

    #[test]
    fn refusals_are_clear() {
        let e = check_offer(OBS_LIKE, 100, Role::Publish).unwrap_err();
        assert_eq!(e.status(), 413);
        let e = check_offer("hello", 1000, Role::Play).unwrap_err();
        assert_eq!(e.status(), 400);
        let vp8_only = OBS_LIKE.replace("H264/90000", "VP9/90000");
        let e = check_offer(&vp8_only, 64 * 1024, Role::Publish).unwrap_err();
        assert_eq!(e.status(), 406);
        assert!(e.to_string().contains("H.264"), "{e}");
        let mode_0 = OBS_LIKE.replace("packetization-mode=1", "packetization-mode=0");
        assert_eq!(check_offer(&mode_0, 64 * 1024, Role::Publish).unwrap_err().status(), 406);
        let audio_only: String = OBS_LIKE.split("m=video").next().unwrap().to_owned();
        let e = check_offer(&audio_only, 64 * 1024, Role::Play).unwrap_err();
        assert!(e.to_string().contains("no video section"), "{e}");
    }

    #[test]
    fn stun_username_names_the_local_fragment() {
        use rtc::stun::attributes::ATTR_USERNAME;
        use rtc::stun::message::{Message, BINDING_REQUEST};
        use rtc::stun::textattrs::TextAttribute;
        let mut m = Message::new();
        m.build(&[
            Box::new(BINDING_REQUEST),
            Box::new(rtc::stun::message::TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, "serverfrag:clientfrag".into())),
        ])
        .unwrap();
        assert_eq!(stun_local_ufrag(&m.raw).as_deref(), Some("serverfrag"));
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None, "RTP is not STUN");
        assert_eq!(stun_local_ufrag(&m.raw[..19]), None);
    }
}
