//! WHEP's RTP out: media-model frames to RTP payloads with their timestamps and marker bits.
//! The session puts them in RTP packets of its own sequence numbers and SSRC and hands them to
//! `rtc`, which encrypts (SRTP) and keeps them for NACK repairs.
//!
//! H.264: frames are 4-byte length-prefixed NAL units (the ring's format for every publisher).
//! A browser decoder needs the SPS and PPS before the IDR it starts on, and an RTMP or SRT
//! publisher sends them once, in its configuration record: so every random access frame is
//! preceded by the record's parameter sets (aggregated with it into a STAP-A by `rtc`'s H.264
//! payloader, which also does the FU-A fragmentation, RFC 6184 §5.7-5.8). A frame whose NAL
//! units already start with parameter sets (OBS's) gets none added. Opus: one frame per packet
//! (RFC 7587 §4.2). B-frames cannot be sent at all (WebRTC decoders play in arrival order):
//! the session refuses such a rendition before any of this runs.

use bytes::{BufMut, Bytes, BytesMut};
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::packetizer::Payloader;

use crate::media::{Frame, VideoCodec, WireSlot};

/// A frame's RTP payloads in its `WireCache`: packetized once, shared by every WHEP viewer (and
/// by each one's NACK history) as slices of one buffer.
pub const RTP_WIRE: WireSlot = WireSlot::new(1);

/// The largest RTP payload we send: 1200 bytes keeps the SRTP packet under every path MTU
/// browsers meet (what they use themselves).
pub const MTU: usize = 1200;

/// One RTP payload of a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpPayload {
    pub payload: Bytes,
    /// The last packet of the access unit (RFC 6184 §5.1; for audio, always set).
    pub marker: bool,
}

/// The RTP payloads of an H.264 frame (see [`H264Packetizer`]), built on the first viewer's
/// call and cached in the frame: each payload behind a 2-byte length.
pub fn h264_payloads(frame: &Frame, out: &mut Vec<RtpPayload>) {
    let built = frame.wire.get_or_build(RTP_WIRE, || {
        let mut payloads = Vec::new();
        H264Packetizer::default().packetize(frame, &mut payloads);
        let mut buf = BytesMut::with_capacity(payloads.iter().map(|p| p.payload.len() + 2).sum());
        for p in &payloads {
            buf.put_u16(p.payload.len() as u16); // at most MTU
            buf.put_slice(&p.payload);
        }
        Some(buf.freeze())
    });
    let Some(wire) = built else { return };
    let start = out.len();
    let mut at = 0;
    while at + 2 <= wire.len() {
        let len = u16::from_be_bytes([wire[at], wire[at + 1]]) as usize;
        let Some(end) = (at + 2).checked_add(len).filter(|e| *e <= wire.len()) else { break };
        out.push(RtpPayload { payload: wire.slice(at + 2..end), marker: false });
        at = end;
    }
    if out.len() > start {
        out.last_mut().expect("non-empty").marker = true;
    }
}

/// H.264 frames to RTP payloads (see the module docs).
#[derive(Debug, Default)]
pub struct H264Packetizer {
    payloader: H264Payloader,
}

impl H264Packetizer {
    /// The payloads of `frame`, in order; the last has the marker bit. Malformed length prefixes
    /// end the frame where they start (what came before is sent).
    pub fn packetize(&mut self, frame: &Frame, out: &mut Vec<RtpPayload>) {
        let start = out.len();
        let config = frame.tracks.video.as_ref().filter(|v| v.codec == VideoCodec::H264);
        let nals = length_prefixed(&frame.data);
        let has_sps = nals.iter().any(|n| n.first().is_some_and(|h| h & 0x1f == 7));
        if frame.keyframe && !has_sps {
            if let Some(v) = config {
                for ps in crate::protocols::ts::parameter_sets(&v.record, false) {
                    self.emit(&v.record.slice_ref(ps), out);
                }
            }
        }
        for nal in nals {
            // Access unit delimiters and filler mean nothing to a WebRTC decoder.
            if nal.first().is_some_and(|h| matches!(h & 0x1f, 9 | 12)) {
                continue;
            }
            self.emit(&frame.data.slice_ref(nal), out);
        }
        if out.len() > start {
            out.last_mut().expect("non-empty").marker = true;
        }
    }

    fn emit(&mut self, nal: &Bytes, out: &mut Vec<RtpPayload>) {
        // A lone NAL unit (no start code) is payloaded as one: emulation prevention keeps start
        // codes out of its body (H.264 §7.4.1).
        if let Ok(payloads) = self.payloader.payload(MTU, nal) {
            out.extend(payloads.into_iter().map(|payload| RtpPayload { payload, marker: false }));
        }
    }
}

/// The NAL units of 4-byte length-prefixed data (up to the first malformed prefix).
fn length_prefixed(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(nal) = data.get(4..4 + len) else { break };
        if !nal.is_empty() {
            out.push(nal);
        }
        data = &data[4 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::media::{MediaTime, TrackKind, Tracks, VideoConfig};

    fn avcc() -> Bytes {
        // avcC with one SPS (67 42 c0 1f ...) and one PPS (68 ce 3c 80).
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xe8, 0x06, 0xd0, 0xa1, 0x35];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut r = vec![1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, sps.len() as u8];
        r.extend_from_slice(&sps);
        r.extend_from_slice(&[1, 0, pps.len() as u8]);
        r.extend_from_slice(&pps);
        Bytes::from(r)
    }

    fn frame(key: bool, nals: &[&[u8]]) -> Frame {
        let mut data = Vec::new();
        for n in nals {
            data.extend_from_slice(&(n.len() as u32).to_be_bytes());
            data.extend_from_slice(n);
        }
        let tracks =
            Arc::new(Tracks { video: Some(VideoConfig::from_avc_record(avcc()).unwrap()), audio: None });
        let t = MediaTime::new(0, 90_000);
        Frame::new(TrackKind::Video, t, t, key, Bytes::from(data), tracks)
    }

    #[test]
    fn idr_gets_parameter_sets_and_fragments() {
        let mut p = H264Packetizer::default();
        let mut idr = vec![0x65u8];
        idr.extend(std::iter::repeat_n(0xab, 3000));
        let mut out = Vec::new();
        p.packetize(&frame(true, &[&[0x09, 0xf0], &idr]), &mut out);
        // STAP-A (SPS+PPS) is folded into the IDR's first packet or sent before it; the IDR is
        // split in FU-A packets, the last one marked.
        assert!(out.len() >= 3, "{}", out.len());
        assert!(out.iter().all(|p| p.payload.len() <= MTU));
        assert!(out.iter().take(out.len() - 1).all(|p| !p.marker) && out.last().unwrap().marker);
        let first_types: Vec<u8> = out.iter().map(|p| p.payload[0] & 0x1f).collect();
        assert!(first_types.contains(&24), "parameter sets in a STAP-A: {first_types:?}");
        assert!(first_types.contains(&28), "the IDR in FU-A: {first_types:?}");
    }

    #[test]
    fn cached_payloads_are_the_packetizer_s() {
        let mut idr = vec![0x65u8];
        idr.extend((0..5000u32).map(|i| (i % 251) as u8));
        let f = frame(true, &[&idr]);
        let mut direct = Vec::new();
        H264Packetizer::default().packetize(&f, &mut direct);
        for _ in 0..2 {
            let mut cached = Vec::new();
            h264_payloads(&f, &mut cached);
            assert_eq!(cached, direct);
        }
    }

    #[test]
    fn non_key_frames_carry_no_parameter_sets() {
        let mut p = H264Packetizer::default();
        let mut out = Vec::new();
        p.packetize(&frame(false, &[&[0x41, 1, 2, 3]]), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].payload[..], &[0x41, 1, 2, 3]);
        assert!(out[0].marker);
    }
}
