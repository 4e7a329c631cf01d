//! TS demuxer tests: hand-built transport streams (PAT, PMT, PES split over packets) so each
//! case controls exactly the continuity counters and timestamps it is about.

use super::*;

const PMT_PID: u16 = 0x1000;
const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;
/// x264 (ffmpeg 5.1 `testsrc2`, 320x240, High) SPS and PPS, without start codes.
const SPS: &[u8] =
    &[0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

/// Packs a section (table_id onward, CRC left as zeros: the demuxer does not check it) into
/// one packet with a pointer field.
fn section_packet(pid: u16, section: &[u8]) -> Vec<u8> {
    let mut p = vec![0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10, 0x00];
    p.extend_from_slice(section);
    p.extend_from_slice(&[0; 4]);
    p.resize(PACKET_SIZE, 0xff);
    p
}

fn pat() -> Vec<u8> {
    let mut s = vec![0x00, 0xb0, 13, 0x00, 0x01, 0xc1, 0, 0, 0x00, 0x01];
    s.extend_from_slice(&[0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8]);
    section_packet(0, &s)
}

fn pmt() -> Vec<u8> {
    let mut s = vec![0x02, 0xb0, 23, 0x00, 0x01, 0xc1, 0, 0, 0xe1, 0x00, 0xf0, 0x00];
    s.extend_from_slice(&[0x1b, 0xe0 | (VIDEO_PID >> 8) as u8, VIDEO_PID as u8, 0xf0, 0]);
    s.extend_from_slice(&[0x0f, 0xe0 | (AUDIO_PID >> 8) as u8, AUDIO_PID as u8, 0xf0, 0]);
    section_packet(PMT_PID, &s)
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

/// A PES with PTS (and DTS when different), unbounded length for video as ffmpeg writes it.
fn pes(stream_id: u8, pts: u64, dts: u64, es: &[u8], bounded: bool) -> Vec<u8> {
    let mut h = vec![0, 0, 1, stream_id, 0, 0, 0x80];
    if pts == dts {
        h.extend_from_slice(&[0x80, 5]);
        h.extend_from_slice(&ts_field(2, pts));
    } else {
        h.extend_from_slice(&[0xc0, 10]);
        h.extend_from_slice(&ts_field(3, pts));
        h.extend_from_slice(&ts_field(1, dts));
    }
    h.extend_from_slice(es);
    if bounded {
        let len = (h.len() - 6) as u16;
        h[4..6].copy_from_slice(&len.to_be_bytes());
    }
    h
}

/// Cuts a PES into transport packets on `pid`, continuity counters from `*cc`; the last packet
/// is padded with adaptation-field stuffing.
fn packetize(pid: u16, cc: &mut u8, pes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        let mut p = vec![0x47, (if first { 0x40 } else { 0 }) | (pid >> 8) as u8, pid as u8];
        let room = PACKET_SIZE - 4;
        if rest.len() >= room {
            p.push(0x10 | *cc);
            p.extend_from_slice(&rest[..room]);
            rest = &rest[room..];
        } else {
            let stuff = room - rest.len(); // adaptation field of `stuff` bytes in all
            p.push(0x30 | *cc);
            p.push((stuff - 1) as u8);
            if stuff > 1 {
                p.push(0);
                p.extend(std::iter::repeat_n(0xff, stuff - 2));
            }
            p.extend_from_slice(rest);
            rest = &[];
        }
        assert_eq!(p.len(), PACKET_SIZE);
        *cc = (*cc + 1) & 0x0f;
        first = false;
        out.push(p);
    }
    out
}

fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
    nals.iter().flat_map(|n| [&[0u8, 0, 0, 1][..], n].concat()).collect()
}

fn idr(size: usize) -> Vec<u8> {
    let mut n = vec![0x65, 0x88];
    n.resize(size, 0x5a);
    n
}

fn non_idr(size: usize) -> Vec<u8> {
    let mut n = vec![0x41, 0x9a];
    n.resize(size, 0x3c);
    n
}

/// Two ADTS frames (AAC LC, 48 kHz, stereo) of `len` payload bytes each.
fn adts_pair(len: usize) -> Vec<u8> {
    let frame_len = len + 7;
    let h = [
        0xff,
        0xf1,
        (1 << 6) | (3 << 2), // LC, 48 kHz index 3, channel config high bit 0
        (2 << 6) | (frame_len >> 11) as u8,
        (frame_len >> 3) as u8,
        ((frame_len as u8) << 5) | 0x1f,
        0xfc,
    ];
    let mut out = Vec::new();
    for i in 0..2u8 {
        out.extend_from_slice(&h);
        out.extend(std::iter::repeat_n(0x21 + i, len));
    }
    out
}

struct Stream {
    packets: Vec<Vec<u8>>,
    vcc: u8,
    acc: u8,
}

impl Stream {
    fn new() -> Self {
        Stream { packets: vec![pat(), pmt()], vcc: 0, acc: 0 }
    }
    fn video(&mut self, pts: u64, dts: u64, nals: &[&[u8]]) -> std::ops::Range<usize> {
        let es = annex_b(&[&[&[0x09u8, 0xf0][..]], nals].concat());
        let pk = packetize(VIDEO_PID, &mut self.vcc, &pes(0xe0, pts, dts, &es, false));
        let start = self.packets.len();
        self.packets.extend(pk);
        start..self.packets.len()
    }
    fn audio(&mut self, pts: u64) {
        let pk = packetize(AUDIO_PID, &mut self.acc, &pes(0xc0, pts, pts, &adts_pair(100), true));
        self.packets.extend(pk);
    }
    fn bytes(&self) -> Vec<u8> {
        self.packets.concat()
    }
}

fn run(bytes: &[u8], piece: usize) -> (Vec<TsEvent>, TsStats) {
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(piece.max(1)) {
        d.feed(chunk, &mut out);
    }
    d.finish(&mut out);
    (out, d.stats())
}

fn frames(events: &[TsEvent]) -> Vec<&Frame> {
    events.iter().filter_map(|e| if let TsEvent::Frame(f) = e { Some(f) } else { None }).collect()
}

fn video_frames(events: &[TsEvent]) -> Vec<&Frame> {
    frames(events).into_iter().filter(|f| f.track == TrackKind::Video).collect()
}

#[test]
fn h264_and_aac_become_avcc_frames_and_raw_aac() {
    let mut s = Stream::new();
    let big_idr = idr(1000); // spans several packets
    s.video(3000 + 3003, 3000, &[SPS, PPS, &big_idr]);
    s.audio(3000);
    s.video(6003 + 3003, 6003, &[&non_idr(50)]);
    let (events, stats) = run(&s.bytes(), usize::MAX);
    assert_eq!(stats, TsStats::default());

    let tracks =
        events.iter().rev().find_map(|e| if let TsEvent::Tracks(t) = e { Some(t.clone()) } else { None });
    let tracks = tracks.expect("tracks announced");
    let video = tracks.video.as_ref().expect("video config");
    assert_eq!(video.codec_string, "avc1.64000d");
    assert_eq!(&video.record[..], &avcc_record(SPS, PPS)[..]);
    let audio = tracks.audio.as_ref().expect("audio config");
    assert_eq!((audio.sample_rate, audio.channels, audio.codec_string.as_str()), (48_000, 2, "mp4a.40.2"));

    let v = video_frames(&events);
    assert_eq!(v.len(), 2);
    assert!(v[0].keyframe && !v[1].keyframe);
    assert_eq!((v[0].dts.ticks, v[0].pts.ticks), (3000, 6003));
    assert_eq!(v[1].dts.ticks, 6003);
    // Length-prefixed, no AUD: SPS, PPS, IDR.
    let mut expect = Vec::new();
    for n in [SPS, PPS, &big_idr[..]] {
        expect.extend_from_slice(&(n.len() as u32).to_be_bytes());
        expect.extend_from_slice(n);
    }
    assert_eq!(&v[0].data[..], &expect[..]);

    let a: Vec<_> = frames(&events).into_iter().filter(|f| f.track == TrackKind::Audio).collect();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].data.len(), 100);
    assert_eq!(a[1].dts.ticks - a[0].dts.ticks, 1920); // 1024 samples at 48 kHz in 90 kHz ticks
}

#[test]
fn any_split_gives_the_same_frames() {
    let mut s = Stream::new();
    s.video(3000, 3000, &[SPS, PPS, &idr(700)]);
    s.audio(3000);
    s.video(6000, 6000, &[&non_idr(400)]);
    s.audio(4920);
    let bytes = s.bytes();
    let summary = |e: &[TsEvent]| -> Vec<(TrackKind, i64, Bytes)> {
        frames(e).into_iter().map(|f| (f.track, f.dts.ticks, f.data.clone())).collect()
    };
    let whole = summary(&run(&bytes, usize::MAX).0);
    assert_eq!(whole.len(), 6);
    for piece in [1, 7, 187, 188, 189, 1316] {
        assert_eq!(summary(&run(&bytes, piece).0), whole, "piece {piece}");
    }
}

#[test]
fn timestamps_continue_across_the_33_bit_wrap() {
    let mut s = Stream::new();
    let near = (1u64 << 33) - 3000;
    s.video(near, near, &[SPS, PPS, &idr(100)]);
    s.video(near + 3000, near + 3000, &[&non_idr(100)]); // == 2^33: wraps to 0
    s.video(3000, 3000, &[&non_idr(100)]);
    let (events, stats) = run(&s.bytes(), 1316);
    let v = video_frames(&events);
    let d: Vec<i64> = v.iter().map(|f| f.dts.ticks).collect();
    assert_eq!(d, vec![near as i64, near as i64 + 3000, near as i64 + 6000]);
    assert_eq!(stats.timestamp_jumps, 0);
}

#[test]
fn a_timestamp_jump_is_folded_into_a_continuous_timeline() {
    let mut s = Stream::new();
    s.video(90_000, 90_000, &[SPS, PPS, &idr(100)]);
    s.video(93_000, 93_000, &[&non_idr(100)]);
    // Encoder restarted: back to 0.
    s.video(0, 0, &[&idr(100)]);
    s.video(3000, 3000, &[&non_idr(100)]);
    let (events, stats) = run(&s.bytes(), 1316);
    let d: Vec<i64> = video_frames(&events).iter().map(|f| f.dts.ticks).collect();
    assert_eq!(d, vec![90_000, 93_000, 96_000, 99_000]);
    assert_eq!(stats.timestamp_jumps, 1);
    assert!(video_frames(&events)[2].discontinuity);
}

#[test]
fn a_continuity_gap_drops_the_damaged_unit_and_waits_for_a_key_frame() {
    let mut s = Stream::new();
    s.video(3000, 3000, &[SPS, PPS, &idr(100)]);
    let damaged = s.video(6000, 6000, &[&non_idr(600)]);
    s.video(9000, 9000, &[&non_idr(100)]); // intact but references the lost frame
    s.video(12000, 12000, &[&idr(100)]);
    s.video(15000, 15000, &[&non_idr(100)]);
    let mut packets = s.packets.clone();
    packets.remove(damaged.start + 1); // lose a middle packet of the second frame
    let (events, stats) = run(&packets.concat(), 1316);
    let d: Vec<i64> = video_frames(&events).iter().map(|f| f.dts.ticks).collect();
    assert_eq!(d, vec![3000, 12000, 15000]);
    assert_eq!(stats.cc_gaps, 1);
    assert_eq!(stats.dropped_units, 2); // the damaged one and the orphan P-frame
}

#[test]
fn video_before_its_parameter_sets_is_dropped() {
    let mut s = Stream::new();
    s.video(3000, 3000, &[&non_idr(100)]);
    s.video(6000, 6000, &[SPS, PPS, &idr(100)]);
    let (events, stats) = run(&s.bytes(), 188);
    assert_eq!(video_frames(&events).len(), 1);
    assert_eq!(stats.dropped_units, 1);
}

#[test]
fn garbage_between_packets_is_skipped() {
    let mut s = Stream::new();
    s.video(3000, 3000, &[SPS, PPS, &idr(100)]);
    let mut bytes = vec![1, 2, 3, 0x47, 9];
    bytes.extend(s.bytes());
    let (events, stats) = run(&bytes, usize::MAX);
    assert!(stats.resync_bytes > 0);
    assert_eq!(video_frames(&events).len(), 1);
}

#[test]
fn hevc_record_carries_the_sps_profile() {
    // x265 Main profile SPS header bytes: NAL header 42 01, then 01 (1 sub layer, nesting), PTL.
    let vps = [0x40, 0x01, 0x0c, 0x01];
    let sps = [
        0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03, 0x00,
        0x5d, 0xa0,
    ];
    let pps = [0x44, 0x01, 0xc1];
    let rec = hvcc_record(&vps, &sps, &pps);
    let config = VideoConfig::from_hevc_record(rec).expect("a valid hvcC");
    assert!(config.codec_string.starts_with("hvc1.1.6.L93"), "{}", config.codec_string);
}

#[test]
fn adts_header_to_asc() {
    let h = AdtsHeader::parse(&adts_pair(10)).expect("header");
    assert_eq!((h.profile, h.sampling_index, h.channel_config, h.frame_len), (1, 3, 2, 17));
    assert_eq!(&h.asc()[..], &[0x11, 0x90]);
}

/// ffmpeg 5.1 (`testsrc2` 160x120 25 fps, libx264 `-g 25`, aac 48 kHz, 1 s, `-f mpegts`): the
/// whole file demuxes into 25 video frames (one key frame first) and ~47 AAC frames, with no
/// loss counted, whatever the split.
#[test]
fn ffmpeg_h264_aac_fixture() {
    let bytes = include_bytes!("../../../tests/fixtures/ffmpeg-5.1_ts_h264_aac.ts");
    for piece in [1316, 188 * 3 + 5, usize::MAX] {
        let (events, stats) = run(bytes, piece);
        assert_eq!(stats, TsStats::default(), "piece {piece}");
        let v = video_frames(&events);
        assert_eq!(v.len(), 25);
        assert!(v[0].keyframe);
        let t = &v[0].tracks;
        let video = t.video.as_ref().expect("video config");
        assert_eq!((video.width, video.height), (160, 120));
        assert!(video.codec_string.starts_with("avc1."));
        let a = frames(&events).into_iter().filter(|f| f.track == TrackKind::Audio).count();
        assert!((44..=50).contains(&a), "{a} audio frames");
        assert!(v.windows(2).all(|w| w[0].dts <= w[1].dts));
        // The start gate: one track set, announced first, with both tracks, on every frame
        // (ffmpeg writes the first ADTS header after the first SPS/PPS).
        let announced: Vec<&Arc<Tracks>> = events
            .iter()
            .filter_map(|e| match e {
                TsEvent::Tracks(t) => Some(t),
                TsEvent::Frame(_) => None,
            })
            .collect();
        assert_eq!(announced.len(), 1, "piece {piece}: one track set, not one per configuration");
        assert!(matches!(events[0], TsEvent::Tracks(_)), "the track set comes before any frame");
        assert_eq!(t.audio.as_ref().map(|a| a.sample_rate), Some(48_000), "audio known from the first frame");
        assert!(frames(&events).iter().all(|f| Arc::ptr_eq(&f.tracks, announced[0])));
    }
}

/// ffmpeg 5.1 with libx265 (160x120, 0.2 s): an `hvcC` is built from the in-band VPS/SPS/PPS.
#[test]
fn ffmpeg_hevc_fixture() {
    let bytes = include_bytes!("../../../tests/fixtures/ffmpeg-5.1_ts_hevc.ts");
    let (events, stats) = run(bytes, 1316);
    assert_eq!(stats, TsStats::default());
    let v = video_frames(&events);
    assert_eq!(v.len(), 5);
    assert!(v[0].keyframe);
    let video = v[0].tracks.video.as_ref().expect("video config");
    assert_eq!((video.width, video.height), (160, 120));
    assert!(video.codec_string.starts_with("hvc1.1."), "{}", video.codec_string);
}

/// ffmpeg 5.1 with libopus (stereo, 0.5 s) beside H.264: Opus access units (control header and
/// packet) each become a 20 ms frame with an `OpusHead` built from the PMT's descriptors.
#[test]
fn ffmpeg_opus_fixture() {
    let bytes = include_bytes!("../../../tests/fixtures/ffmpeg-5.1_ts_h264_opus.ts");
    let (events, stats) = run(bytes, 1316);
    assert_eq!(stats, TsStats::default());
    let audio: Vec<&Frame> = frames(&events).into_iter().filter(|f| f.track == TrackKind::Audio).collect();
    assert!((24..=26).contains(&audio.len()), "{} Opus frames", audio.len());
    let config = audio[0].tracks.audio.as_ref().expect("audio config");
    assert_eq!((config.codec, config.channels, config.sample_rate), (AudioCodec::Opus, 2, 48_000));
    assert_eq!(&config.config[..8], b"OpusHead");
    // 20 ms apart (1800 ticks at 90 kHz), each a whole Opus packet (TOC of a 20 ms CELT frame).
    assert!(audio.windows(2).all(|w| w[1].dts.ticks - w[0].dts.ticks == 1800), "steps of 20 ms");
    assert!(audio.iter().all(|f| opus_packet_samples(&f.data) == Some(960)));
    assert!(!video_frames(&events).is_empty());
}

#[test]
fn opus_control_headers_and_packet_durations() {
    // Prefix, no trims, size 300 = 0xff + 0x2d.
    assert_eq!(opus_control_header(&[0x7f, 0xe0, 0xff, 0x2d, 0xfc]), Some((4, 300)));
    // Start and end trims (2 bytes each) and a 1-byte extension.
    assert_eq!(opus_control_header(&[0x7f, 0xfc, 3, 0, 1, 0, 2, 1, 9, 0xfc]), Some((9, 3)));
    assert_eq!(opus_control_header(&[0x7f, 0x00, 3]), None, "no prefix");
    assert_eq!(opus_control_header(&[0x7f, 0xe0, 0xff]), None, "size runs off the end");
    // TOC: CELT 20 ms (config 31) one frame; SILK 60 ms (config 3) two frames; code 3 with
    // 6 x 20 ms; code 3 past 120 ms is malformed.
    assert_eq!(opus_packet_samples(&[31 << 3]), Some(960));
    assert_eq!(opus_packet_samples(&[3 << 3 | 1]), Some(5760));
    assert_eq!(opus_packet_samples(&[31 << 3 | 3, 6]), Some(5760));
    assert_eq!(opus_packet_samples(&[31 << 3 | 3, 7]), None);
    assert_eq!(opus_packet_samples(&[]), None);
}
