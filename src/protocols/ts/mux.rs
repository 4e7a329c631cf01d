//! MPEG-TS muxer: media-model [`Frame`]s in, transport packets out; the writer SRT play will
//! serve from (`actors/viewer/srt.rs`, not written yet). ISO/IEC 13818-1 §2.4.3 (packets),
//! §2.4.4 (PAT/PMT, CRC-32 of Annex A), §2.4.3.6 (PES).
//!
//! Invariants: every key frame is preceded by PAT and PMT and carries its parameter sets in
//! band (so a receiver that joins at any key frame can decode); video leaves as Annex-B with an
//! access unit delimiter, AAC as ADTS; the first packet of each video PES carries the PCR
//! (= DTS, as ffmpeg's muxer does for a single program without a separate PCR PID). Continuity
//! counters run per PID. Output is whole 188-byte packets, so any 7 of them fill one 1316-byte
//! SRT payload.

use bytes::{BufMut, Bytes, BytesMut};

use super::{PACKET_SIZE, TIMESCALE_90K};
use crate::media::{AudioCodec, Frame, TrackKind, Tracks, VideoCodec};

const PMT_PID: u16 = 0x1000;
const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;

/// A muxer for one output connection (continuity counters are per connection).
#[derive(Debug, Default)]
pub struct TsMuxer {
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    /// The track set the last PAT/PMT described: a change (audio configured after video, a new
    /// codec) sends them again before the frame, or the receiver never learns the new PID.
    psi_tracks: Option<std::sync::Arc<Tracks>>,
}

impl TsMuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the transport packets of every frame of `batch` to `out` (what SRT play and the SRT
    /// push send); returns how many frames could not be muxed (skipped).
    pub fn frames(&mut self, batch: &[std::sync::Arc<Frame>], out: &mut Vec<u8>) -> u64 {
        let mut skipped = 0;
        for f in batch {
            match self.frame(f) {
                Some(ts) => out.extend_from_slice(&ts),
                None => skipped += 1,
            }
        }
        skipped
    }

    /// The transport packets of one frame, with PAT/PMT first at a video key frame and whenever
    /// the track set changed. `None` for codecs TS cannot carry here.
    pub fn frame(&mut self, f: &Frame) -> Option<Bytes> {
        let tracks = &f.tracks;
        let mut out = BytesMut::new();
        let changed = !self.psi_tracks.as_ref().is_some_and(|t| std::sync::Arc::ptr_eq(t, tracks));
        if changed || (f.keyframe && f.track == TrackKind::Video) {
            self.psi(tracks, &mut out);
            self.psi_tracks = Some(tracks.clone());
        }
        let dts = f.dts.rescale(TIMESCALE_90K).ticks.max(0) as u64;
        let pts = f.pts.rescale(TIMESCALE_90K).ticks.max(0) as u64;
        match f.track {
            TrackKind::Video => {
                let v = tracks.video.as_ref()?;
                let hevc = match v.codec {
                    VideoCodec::H264 => false,
                    VideoCodec::H265 => true,
                    VideoCodec::Av1 => return None,
                };
                let mut es = BytesMut::with_capacity(f.data.len() + 64);
                es.put_slice(if hevc { &[0, 0, 0, 1, 0x46, 0x01, 0x50] } else { &[0, 0, 0, 1, 0x09, 0xf0] });
                if f.keyframe {
                    for ps in parameter_sets(&v.record, hevc) {
                        es.put_slice(&[0, 0, 0, 1]);
                        es.put_slice(ps);
                    }
                }
                let mut rest = &f.data[..];
                while rest.len() >= 4 {
                    let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    let Some(nal) = rest.get(4..4 + len) else { break };
                    es.put_slice(&[0, 0, 0, 1]);
                    es.put_slice(nal);
                    rest = &rest[4 + len..];
                }
                let pes = pes(0xe0, pts, dts, &es, false);
                packetize(VIDEO_PID, &mut self.cc_video, &pes, Some(dts), &mut out);
            }
            TrackKind::Audio => {
                let a = tracks.audio.as_ref()?;
                let mut es = BytesMut::with_capacity(f.data.len() + 8);
                let stream_id = match a.codec {
                    AudioCodec::Aac => {
                        es.put_slice(&adts_header(&a.config, f.data.len())?);
                        0xc0
                    }
                    AudioCodec::Opus if opus_in_ts(a) => {
                        // Control header: the 11-bit prefix, no trims, the size as 0xff runs.
                        es.put_slice(&[0x7f, 0xe0]);
                        es.put_bytes(0xff, f.data.len() / 255);
                        es.put_u8((f.data.len() % 255) as u8);
                        0xbd
                    }
                    AudioCodec::Opus => return None,
                };
                es.put_slice(&f.data);
                let pes = pes(stream_id, pts, pts, &es, true);
                let pcr = tracks.video.is_none().then_some(dts);
                packetize(AUDIO_PID, &mut self.cc_audio, &pes, pcr, &mut out);
            }
        }
        Some(out.freeze())
    }

    /// PAT and PMT for `tracks`.
    fn psi(&mut self, tracks: &Tracks, out: &mut BytesMut) {
        let mut pat = vec![0x00, 0xb0, 13, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01];
        pat.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
        section_packet(0, &mut self.cc_pat, &pat, out);

        let pcr_pid = if tracks.video.is_some() { VIDEO_PID } else { AUDIO_PID };
        let mut pmt = vec![0x02, 0xb0, 0, 0x00, 0x01, 0xc1, 0x00, 0x00];
        pmt.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
        pmt.extend_from_slice(&[0xf0, 0x00]);
        if let Some(v) = &tracks.video {
            let st = if v.codec == VideoCodec::H265 { 0x24 } else { 0x1b };
            pmt.push(st);
            pmt.extend_from_slice(&(0xe000 | VIDEO_PID).to_be_bytes());
            pmt.extend_from_slice(&[0xf0, 0x00]);
        }
        match &tracks.audio {
            Some(a) if a.codec == AudioCodec::Aac => {
                pmt.push(0x0f);
                pmt.extend_from_slice(&(0xe000 | AUDIO_PID).to_be_bytes());
                pmt.extend_from_slice(&[0xf0, 0x00]);
            }
            Some(a) if opus_in_ts(a) => {
                // Private data with the `Opus` registration descriptor and the extension
                // descriptor's channel_config_code (1 or 2 channels).
                pmt.push(0x06);
                pmt.extend_from_slice(&(0xe000 | AUDIO_PID).to_be_bytes());
                pmt.extend_from_slice(&[
                    0xf0, 10, 0x05, 4, b'O', b'p', b'u', b's', 0x7f, 2, 0x80, a.channels,
                ]);
            }
            _ => {}
        }
        pmt[2] = (pmt.len() - 3 + 4) as u8; // section_length counts the CRC
        section_packet(PMT_PID, &mut self.cc_pmt, &pmt, out);
    }
}

/// Opus goes into TS as mono or stereo (mapping family 0); other layouts are left out.
fn opus_in_ts(a: &crate::media::AudioConfig) -> bool {
    a.codec == AudioCodec::Opus && matches!(a.channels, 1 | 2)
}

/// One PSI section (table_id onward, without CRC) in one packet, CRC-32 appended.
fn section_packet(pid: u16, cc: &mut u8, section: &[u8], out: &mut BytesMut) {
    let start = out.len();
    out.put_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | *cc, 0x00]);
    out.put_slice(section);
    out.put_u32(crc32_mpeg2(section));
    out.resize(start + PACKET_SIZE, 0xff);
    *cc = (*cc + 1) & 0x0f;
}

/// CRC-32/MPEG-2 (ISO/IEC 13818-1 Annex A): polynomial 0x04C11DB7, initial 0xFFFFFFFF, no
/// reflection, no final XOR.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

fn ts_field(prefix: u8, t: u64) -> [u8; 5] {
    [
        prefix << 4 | ((t >> 29) as u8 & 0x0e) | 1,
        (t >> 22) as u8,
        ((t >> 14) as u8 & 0xfe) | 1,
        (t >> 7) as u8,
        ((t << 1) as u8) | 1,
    ]
}

/// A PES packet; video PES are unbounded (length 0, allowed for video by §2.4.3.7) because an
/// access unit can exceed 65535 bytes.
fn pes(stream_id: u8, pts: u64, dts: u64, es: &[u8], bounded: bool) -> Vec<u8> {
    let (pts, dts) = (pts & ((1 << 33) - 1), dts & ((1 << 33) - 1));
    let mut h = Vec::with_capacity(es.len() + 19);
    h.extend_from_slice(&[0, 0, 1, stream_id, 0, 0, 0x80]);
    if pts == dts {
        h.extend_from_slice(&[0x80, 5]);
        h.extend_from_slice(&ts_field(2, pts));
    } else {
        h.extend_from_slice(&[0xc0, 10]);
        h.extend_from_slice(&ts_field(3, pts));
        h.extend_from_slice(&ts_field(1, dts));
    }
    h.extend_from_slice(es);
    let len = h.len() - 6;
    if bounded && len <= 0xffff {
        h[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    }
    h
}

/// Cuts a PES into packets; the first carries the PCR when given, the last is padded with
/// adaptation-field stuffing.
fn packetize(pid: u16, cc: &mut u8, pes: &[u8], pcr_90k: Option<u64>, out: &mut BytesMut) {
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        let start = out.len();
        out.put_slice(&[0x47, (if first { 0x40 } else { 0 }) | (pid >> 8) as u8, pid as u8]);
        let pcr = if first { pcr_90k } else { None };
        // Adaptation field body: flags (+ 6 PCR bytes).
        let mut af: Vec<u8> = Vec::new();
        if let Some(pcr) = pcr {
            let base = pcr & ((1 << 33) - 1);
            af.push(0x10);
            af.extend_from_slice(&[
                (base >> 25) as u8,
                (base >> 17) as u8,
                (base >> 9) as u8,
                (base >> 1) as u8,
            ]);
            af.extend_from_slice(&[((base & 1) as u8) << 7 | 0x7e, 0x00]);
        }
        let room_without_af = PACKET_SIZE - 4;
        let af_len = if af.is_empty() { 0 } else { 1 + af.len() };
        let take;
        if rest.len() + af_len >= room_without_af {
            take = room_without_af - af_len;
            if af_len > 0 {
                out.put_u8(0x30 | *cc);
                out.put_u8(af.len() as u8);
                out.put_slice(&af);
            } else {
                out.put_u8(0x10 | *cc);
            }
        } else {
            take = rest.len();
            let total_af = room_without_af - take; // >= 1
            out.put_u8(0x30 | *cc);
            out.put_u8((total_af - 1) as u8);
            if total_af > 1 {
                if af.is_empty() {
                    af.push(0x00);
                }
                out.put_slice(&af);
                out.resize(out.len() + total_af - 1 - af.len(), 0xff);
            }
        }
        out.put_slice(&rest[..take]);
        rest = &rest[take..];
        debug_assert_eq!(out.len() - start, PACKET_SIZE);
        *cc = (*cc + 1) & 0x0f;
        first = false;
    }
}

/// The parameter sets of an `avcC` (SPS then PPS) or `hvcC` (its arrays in order), without
/// lengths. Malformed records yield what could be read.
pub(crate) fn parameter_sets(record: &[u8], hevc: bool) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i;
    fn take<'a>(record: &'a [u8], i: &mut usize, out: &mut Vec<&'a [u8]>) -> bool {
        let Some(l) = record.get(*i..*i + 2) else { return false };
        let len = usize::from(u16::from_be_bytes([l[0], l[1]]));
        let Some(nal) = record.get(*i + 2..*i + 2 + len) else { return false };
        out.push(nal);
        *i += 2 + len;
        true
    }
    if hevc {
        let Some(&arrays) = record.get(22) else { return out };
        i = 23;
        for _ in 0..arrays {
            let Some(n) = record.get(i + 1..i + 3) else { return out };
            let n = u16::from_be_bytes([n[0], n[1]]);
            i += 3;
            for _ in 0..n {
                if !take(record, &mut i, &mut out) {
                    return out;
                }
            }
        }
    } else {
        let Some(&n_sps) = record.get(5) else { return out };
        i = 6;
        for _ in 0..(n_sps & 0x1f) {
            if !take(record, &mut i, &mut out) {
                return out;
            }
        }
        let Some(&n_pps) = record.get(i) else { return out };
        i += 1;
        for _ in 0..n_pps {
            if !take(record, &mut i, &mut out) {
                return out;
            }
        }
    }
    out
}

/// An ADTS header (ISO/IEC 13818-7 §6.2.1, no CRC) for one raw AAC frame, from the ASC's
/// object type, sampling index and channel configuration. `None` for an ASC ADTS cannot state
/// (explicit frequency, object types above 4).
fn adts_header(asc: &[u8], payload_len: usize) -> Option<[u8; 7]> {
    let (&b0, &b1) = (asc.first()?, asc.get(1)?);
    let aot = b0 >> 3;
    let sfi = (b0 & 0x07) << 1 | b1 >> 7;
    let ch = (b1 >> 3) & 0x0f;
    if !(1..=4).contains(&aot) || sfi > 12 || ch > 7 {
        return None;
    }
    let len = payload_len + 7;
    if len > 0x1fff {
        return None;
    }
    Some([
        0xff,
        0xf1,
        (aot - 1) << 6 | sfi << 2 | ch >> 2,
        (ch & 3) << 6 | (len >> 11) as u8,
        (len >> 3) as u8,
        (len as u8 & 7) << 5 | 0x1f,
        0xfc,
    ])
}

#[cfg(test)]
mod tests {
    use super::super::{TsDemuxer, TsEvent};
    use super::*;

    /// ffmpeg's TS, demuxed, muxed by us and demuxed again: the same frames, times and bytes
    /// (minus the in-band parameter sets we add at key frames, which the demuxer keeps).
    #[test]
    fn round_trip_through_the_demuxer() {
        round_trip(include_bytes!("../../../tests/fixtures/ffmpeg-5.1_ts_h264_aac.ts"));
    }

    /// Opus (control headers, private stream, registration descriptor) survives the same trip.
    #[test]
    fn opus_round_trip_through_the_demuxer() {
        round_trip(include_bytes!("../../../tests/fixtures/ffmpeg-5.1_ts_h264_opus.ts"));
    }

    fn round_trip(bytes: &[u8]) {
        let demux = |b: &[u8]| {
            let mut d = TsDemuxer::new();
            let mut ev = Vec::new();
            d.feed(b, &mut ev);
            d.finish(&mut ev);
            (ev, d.stats())
        };
        let (first, _) = demux(bytes);
        let mut mux = TsMuxer::new();
        let mut ts = Vec::new();
        let mut original = Vec::new();
        for e in first {
            if let TsEvent::Frame(f) = e {
                ts.extend_from_slice(&mux.frame(&f).expect("h264 with aac or opus"));
                original.push((f.track, f.dts.ticks, f.pts.ticks, f.keyframe));
            }
        }
        assert!(original.iter().any(|x| x.0 == TrackKind::Audio));
        assert_eq!(ts.len() % PACKET_SIZE, 0);
        let (second, stats) = demux(&ts);
        assert_eq!(stats.cc_gaps, 0);
        assert_eq!(stats.dropped_units, 0);
        let again: Vec<_> = second
            .iter()
            .filter_map(|e| {
                if let TsEvent::Frame(f) = e {
                    Some((f.track, f.dts.ticks, f.pts.ticks, f.keyframe))
                } else {
                    None
                }
            })
            .collect();
        // Audio and video interleave by arrival, so compare per track.
        for kind in [TrackKind::Video, TrackKind::Audio] {
            let a: Vec<_> = original.iter().filter(|x| x.0 == kind).collect();
            let b: Vec<_> = again.iter().filter(|x| x.0 == kind).collect();
            assert_eq!(a, b, "{kind:?}");
        }
    }

    #[test]
    fn crc_of_a_known_pat() {
        // ffmpeg's PAT for program 1 -> PMT 0x1000: CRC 2AB104B2.
        let pat = [0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00];
        assert_eq!(crc32_mpeg2(&pat), 0x2ab1_04b2);
    }

    #[test]
    fn adts_round_trip() {
        let h = adts_header(&[0x11, 0x90], 100).expect("LC 48k stereo");
        let parsed = super::super::AdtsHeader::parse(&h).expect("parses");
        assert_eq!(
            (parsed.profile, parsed.sampling_index, parsed.channel_config, parsed.frame_len),
            (1, 3, 2, 107)
        );
    }
}
