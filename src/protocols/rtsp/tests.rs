//! RTSP demux tests: source URLs, sender-report timing, and frames through retina's own H.264
//! and AAC depacketizers (RTP packets built here), so the conversion is checked on what retina
//! really yields.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use retina::codec::Depacketizer;
use retina::rtp::PacketMeta;
use retina::testutil::DepacketizeBuf;

use super::*;

/// x264 (ffmpeg 5.1 `testsrc2`, 320x240, High) SPS and PPS, without start codes.
const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00,
    0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99, 0x60,
];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
/// AAC-LC, 48 kHz, stereo.
const ASC: &[u8] = &[0x11, 0x90];

const VIDEO: Selected = Selected { index: 0, clock_rate: 90_000 };
const AUDIO: Selected = Selected { index: 1, clock_rate: 48_000 };

#[test]
fn source_urls_keep_credentials_apart() {
    let u = SourceUrl::parse("rtsp://admin:p%40ss%3Aw@cam.local:8554/stream1?channel=2").unwrap();
    assert_eq!(u.username(), "admin");
    assert_eq!(u.password(), "p@ss:w");
    assert_eq!(u.masked(), "rtsp://cam.local:8554/stream1?channel=2");
    assert_eq!(u.url().as_str(), u.masked());
    for shown in [u.to_string(), format!("{u:?}")] {
        assert!(!shown.contains("admin") && !shown.contains("p%40ss") && !shown.contains("p@ss"), "{shown}");
    }
    let plain = SourceUrl::parse("rtsp://10.0.0.5/live").unwrap();
    assert!(!plain.has_credentials());
    let given = plain.with_credentials(Some("u".into()), Some("pw".into()));
    assert_eq!((given.username(), given.password()), ("u", "pw"));

    for bad in ["http://x/y", "rtsp://", "not a url", "rtsp://u:secretpw@h/p#frag"] {
        let e = SourceUrl::parse(bad).unwrap_err();
        assert!(!e.contains("secretpw"), "{e}");
    }
    assert!(SourceUrl::parse(&format!("rtsp://h/{}", "a".repeat(3000))).is_err());
}

fn demux(now: Instant) -> RtspDemux {
    let mut d = RtspDemux::new(Some(VIDEO), Some(AUDIO), now);
    d.set_parameters(0, Some(ParametersRef::Video(&h264_depacketizer_params()))).unwrap();
    d.set_parameters(1, Some(ParametersRef::Audio(&aac_params()))).unwrap();
    d
}

fn h264_depacketizer() -> Depacketizer {
    let fmtp = format!(
        "packetization-mode=1;profile-level-id=64000d;sprop-parameter-sets={},{}",
        STANDARD.encode(SPS),
        STANDARD.encode(PPS)
    );
    let mut d = Depacketizer::new("video", "h264", 90_000, None, Some(&fmtp)).unwrap();
    // As the pull adapter sets up every stream: parameter sets in the record only.
    d.set_frame_format(retina::codec::FrameFormat::MP4);
    d
}

fn h264_depacketizer_params() -> retina::codec::VideoParameters {
    match h264_depacketizer().parameters() {
        Some(ParametersRef::Video(v)) => v.clone(),
        other => panic!("no video parameters from the SDP: {other:?}"),
    }
}

fn aac_depacketizer() -> Depacketizer {
    let fmtp = format!(
        "streamtype=5;profile-level-id=2;mode=AAC-hbr;config={};sizelength=13;indexlength=3;indexdeltalength=3",
        ASC.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    Depacketizer::new("audio", "mpeg4-generic", 48_000, std::num::NonZeroU16::new(2), Some(&fmtp)).unwrap()
}

fn aac_params() -> retina::codec::AudioParameters {
    match aac_depacketizer().parameters() {
        Some(ParametersRef::Audio(a)) => a.clone(),
        other => panic!("no audio parameters from the SDP: {other:?}"),
    }
}

fn frames(out: &[RtspEvent]) -> Vec<&Frame> {
    out.iter()
        .filter_map(|e| match e {
            RtspEvent::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// NTP 32.32 of `secs` seconds.
fn ntp(secs: f64) -> u64 {
    (secs * 4_294_967_296.0) as u64
}

#[test]
fn sender_reports_put_audio_and_video_on_one_timeline() {
    let t0 = Instant::now();
    let mut d = demux(t0);
    let mut out = Vec::new();
    // Video RTP time 900_000 and audio 96_000 are the same instant (the camera's clock says so),
    // although their elapsed times differ: each stream started at its own random point.
    d.media(0, 900_000, true, Bytes::from_static(b"\0\0\0\x01\x65"), t0, &mut out);
    d.media(1, 96_000 + 480, false, Bytes::from_static(b"aac"), t0, &mut out);
    assert!(out.is_empty(), "held until both streams reported");
    d.sender_report(0, 900_000 + 9000, ntp(1000.1), t0, &mut out);
    assert!(out.is_empty(), "one report is not enough");
    d.sender_report(1, 96_000 + 4800, ntp(1000.1), t0, &mut out);
    assert_eq!(d.timing(), Timing::SenderReports);
    assert!(matches!(out[0], RtspEvent::Tracks(_)));
    let f = frames(&out);
    assert_eq!(f.len(), 2);
    assert_eq!((f[0].track, f[0].pts.as_millis(), f[0].keyframe), (TrackKind::Video, 0, true));
    // The audio frame is 10 ms (480 samples) after the key frame.
    assert_eq!((f[1].track, f[1].pts.as_millis()), (TrackKind::Audio, 10));
    assert_eq!(f[1].pts.timescale, 48_000);
    // Later frames follow at once, on the same mapping.
    out.clear();
    d.media(0, 900_000 + 3600, false, Bytes::from_static(b"p"), t0, &mut out);
    assert_eq!(frames(&out)[0].pts.as_millis(), 40);
}

#[test]
fn without_sender_reports_timing_falls_back_after_the_wait() {
    let t0 = Instant::now();
    let mut d = demux(t0);
    let mut out = Vec::new();
    d.media(0, 0, true, Bytes::from_static(b"k"), t0, &mut out);
    d.media(1, 0, false, Bytes::from_static(b"a"), t0, &mut out);
    d.tick(t0 + SR_WAIT / 2, &mut out);
    assert!(out.is_empty());
    d.tick(t0 + SR_WAIT, &mut out);
    assert_eq!(d.timing(), Timing::RtpInfo);
    assert_eq!(frames(&out).len(), 2);
}

#[test]
fn video_starts_at_a_key_frame_and_decode_times_only_grow() {
    let t0 = Instant::now();
    let mut d = demux(t0);
    let mut out = Vec::new();
    d.sender_report(0, 0, ntp(50.0), t0, &mut out);
    d.sender_report(1, 0, ntp(50.0), t0, &mut out);
    d.media(0, 0, false, Bytes::from_static(b"p"), t0, &mut out);
    d.media(1, 0, false, Bytes::from_static(b"a"), t0, &mut out);
    assert!(frames(&out).is_empty(), "nothing before the first key frame");
    assert_eq!(d.dropped, 2);
    d.media(0, 9000, true, Bytes::from_static(b"k"), t0, &mut out);
    d.media(0, 9000 + 7200, false, Bytes::from_static(b"p"), t0, &mut out);
    // A frame whose presentation time goes back (a B-frame): its decode time still grows.
    d.media(0, 9000 + 3600, false, Bytes::from_static(b"b"), t0, &mut out);
    let f = frames(&out);
    let dts: Vec<i64> = f.iter().map(|f| f.dts.ticks).collect();
    assert_eq!(dts, [0, 7200, 7201]);
    assert!(f.iter().all(|f| f.pts.ticks >= f.dts.ticks));
}

#[test]
fn frames_wait_for_the_track_set() {
    let t0 = Instant::now();
    // Video parameters not in the SDP: frames before them are dropped, not sent untyped.
    let mut d = RtspDemux::new(Some(VIDEO), None, t0);
    let mut out = Vec::new();
    d.tick(t0 + SR_WAIT, &mut out);
    d.media(0, 0, true, Bytes::from_static(b"k"), t0, &mut out);
    assert!(out.is_empty());
    d.set_parameters(0, Some(ParametersRef::Video(&h264_depacketizer_params()))).unwrap();
    d.media(0, 3600, true, Bytes::from_static(b"k"), t0, &mut out);
    assert!(matches!(out[0], RtspEvent::Tracks(ref t) if t.video.as_ref().unwrap().width == 320));
    assert_eq!(frames(&out).len(), 1);
    // Parameters of the wrong media type are an error.
    assert!(d.set_parameters(0, Some(ParametersRef::Audio(&aac_params()))).is_err());
}

/// Hand one RTP payload to a retina depacketizer the way its `Demuxed` stream does.
fn feed(
    d: &mut Depacketizer,
    buf: &mut DepacketizeBuf,
    stream_id: usize,
    seq: u16,
    ts: i64,
    mark: bool,
    payload: &[u8],
) {
    let clock = if stream_id == 0 { 90_000 } else { 48_000 };
    let meta = PacketMeta {
        ctx: retina::PacketContext::dummy(),
        stream_id,
        timestamp: retina::Timestamp::new(ts, NonZeroU32::new(clock).unwrap(), 0).unwrap(),
        sequence_number: seq,
        ssrc: 0x1234,
        mark,
        loss: 0,
    };
    buf.push(d, meta, payload).unwrap();
}

fn drain(d: &mut Depacketizer, demux: &mut RtspDemux, now: Instant, out: &mut Vec<RtspEvent>) {
    while let Some(item) = d.pull().transpose().unwrap() {
        demux.push(item, now, out);
    }
}

#[test]
fn retina_depacketized_h264_and_aac_become_frames() {
    let t0 = Instant::now();
    let mut video = h264_depacketizer();
    let mut audio = aac_depacketizer();
    let mut d = demux(t0);
    d.tick(t0 + SR_WAIT, &mut Vec::new());
    let mut out = Vec::new();
    // An IDR slice as one single-NAL packet, then a FU-A fragmented non-IDR slice.
    let idr = [0x65, 0x88, 0x84, 0x00, 0x33];
    let mut buf = DepacketizeBuf::new(1 << 16);
    feed(&mut video, &mut buf, 0, 1, 0, true, &idr);
    drain(&mut video, &mut d, t0, &mut out);
    feed(&mut video, &mut buf, 0, 2, 3600, false, &[0x7c, 0x81, 0x9a, 0x01]);
    drain(&mut video, &mut d, t0, &mut out);
    feed(&mut video, &mut buf, 0, 3, 3600, true, &[0x7c, 0x41, 0x02, 0x03]);
    drain(&mut video, &mut d, t0, &mut out);
    // One AAC access unit in an AAC-hbr packet: AU-headers-length 16 bits, one header (13-bit
    // size, 3-bit index), then the frame.
    let au = [0x21, 0x10, 0x04, 0x60, 0x8c];
    let mut payload = vec![0x00, 0x10, (au.len() >> 5) as u8, ((au.len() & 0x1f) << 3) as u8];
    payload.extend_from_slice(&au);
    feed(&mut audio, &mut buf, 1, 1, 1024, true, &payload);
    drain(&mut audio, &mut d, t0, &mut out);
    let f = frames(&out);
    assert_eq!(f.len(), 3, "{out:?}");
    assert_eq!(&f[0].data[..], &[0, 0, 0, 5, 0x65, 0x88, 0x84, 0x00, 0x33], "4-byte length prefix");
    assert!(f[0].keyframe && !f[1].keyframe);
    assert_eq!(&f[1].data[..], &[0, 0, 0, 5, 0x61, 0x9a, 0x01, 0x02, 0x03], "FU-A reassembled");
    assert_eq!(f[1].pts.as_millis(), 40);
    assert_eq!(&f[2].data[..], &au);
    assert_eq!(f[2].track, TrackKind::Audio);
}

#[test]
fn cra_and_idr_pictures_are_key_frames() {
    // H.265: a CRA slice (type 21; x265's key frames) after an SEI; a trailing picture is not.
    assert!(random_access(VideoCodec::H265, &[0, 0, 0, 2, 0x4e, 0x01, 0, 0, 0, 2, 0x2a, 0x01]));
    assert!(random_access(VideoCodec::H265, &[0, 0, 0, 2, 0x26, 0x01]), "IDR_W_RADL");
    assert!(!random_access(VideoCodec::H265, &[0, 0, 0, 2, 0x02, 0x01]));
    // H.264: IDR (type 5) only.
    assert!(random_access(VideoCodec::H264, &[0, 0, 0, 1, 0x06, 0, 0, 0, 1, 0x65]));
    assert!(!random_access(VideoCodec::H264, &[0, 0, 0, 1, 0x41]));
    // A length past the end is not read.
    assert!(!random_access(VideoCodec::H264, &[0, 0, 0, 9, 0x65]));
}
