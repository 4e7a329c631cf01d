//! WebRTC's fuzz targets (see the parent module): the SDP offer checks and STUN routing, and
//! WHIP's RTP depacketizing.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocols::rtsp::RtspEvent;
use crate::protocols::webrtc::{check_offer, stun_local_ufrag, Role, RtpKind, WhipDepacketizer};

/// SDP offers (`protocols::webrtc::check_offer`, both roles, a cap below and above the input's
/// size) and the shared port's STUN routing (`stun_local_ufrag`) on the same bytes: never a
/// panic; an accepted offer has H.264 with its fmtp; a refusal's message quotes at most a line.
pub fn webrtc_sdp(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for role in [Role::Publish, Role::Play] {
        for cap in [data.len().saturating_sub(1), 64 * 1024] {
            match check_offer(&text, cap, role) {
                Ok(s) => assert!(s.video && s.h264_fmtp.is_some(), "accepted without H.264"),
                Err(e) => {
                    assert!((400..=413).contains(&e.status()));
                    assert!(e.to_string().len() < 400, "the refusal echoes the input");
                }
            }
        }
    }
    if let Some(ufrag) = stun_local_ufrag(data) {
        assert!(!ufrag.is_empty() && ufrag.len() <= 256 && !ufrag.contains(':'));
    }
}

/// WHIP's RTP in (`protocols::webrtc::WhipDepacketizer`): the first byte picks audio on or off;
/// then records of `[kind, length, payload]`: kind bits 0-1 pick video RTP, audio RTP, a sender
/// report or a tick (time passes by 40 ms), bit 2 is the marker, bits 3-5 the timestamp step,
/// bit 6 swaps the sequence number with the next packet's (reordering), bit 7 skips one (loss).
/// Never a panic; what leaves has a track set, growing DTS per track, PTS >= DTS, and whole
/// length-prefixed NAL units.
pub fn whip_depacketize(data: &[u8]) {
    let [opts, input @ ..] = data else { return };
    let audio = (opts & 1 != 0).then_some(2);
    let mut now = Instant::now();
    let Ok(mut dep) = WhipDepacketizer::new(None, audio, now) else { return };
    let mut rest = input;
    let mut out = Vec::new();
    let (mut seq, mut ts) = ([100u16, 7000u16], [0u32, 0u32]);
    while let &[kind, len, ref tail @ ..] = rest {
        let (payload, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        let track = usize::from(kind & 1);
        ts[track] = ts[track].wrapping_add(u32::from((kind >> 3) & 7) * [3000, 960][track]);
        let step = |s: &mut u16| {
            let n = *s;
            *s = s.wrapping_add(1 + u16::from(kind & 0x80 != 0));
            if kind & 0x40 != 0 {
                n.wrapping_add(1)
            } else {
                n
            }
        };
        let r = match kind & 3 {
            0 | 1 => {
                let s = step(&mut seq[track]);
                let rtp_kind = if track == 0 { RtpKind::Video } else { RtpKind::Audio };
                dep.rtp(
                    rtp_kind,
                    s,
                    ts[track],
                    kind & 4 != 0,
                    0x5eed,
                    Bytes::copy_from_slice(payload),
                    now,
                    &mut out,
                )
            }
            2 => {
                let ntp = payload.iter().fold(0u64, |n, b| n.rotate_left(8) ^ u64::from(*b));
                dep.sender_report(RtpKind::Video, ts[0], ntp, now, &mut out);
                dep.sender_report(RtpKind::Audio, ts[1], ntp ^ 1, now, &mut out);
                Ok(())
            }
            _ => {
                now += Duration::from_millis(40);
                dep.tick(now, &mut out)
            }
        };
        if r.is_err() {
            break; // the session ends on a depacketizer error
        }
    }
    let mut last = [i64::MIN; 2];
    for e in &out {
        let RtspEvent::Frame(f) = e else { continue };
        let t = usize::from(f.track != crate::media::TrackKind::Video);
        assert!(f.dts.ticks > last[t], "DTS did not grow");
        last[t] = f.dts.ticks;
        assert!(f.pts >= f.dts, "pts before dts");
        if t == 0 {
            assert!(f.tracks.video.is_some(), "video frame without configuration");
            super::assert_length_prefixed(&f.data);
        } else {
            assert!(f.tracks.audio.is_some(), "audio frame without configuration");
        }
    }
}
