//! FLV tag parsing against ffmpeg's real output, every refusal path, and round-trip/no-panic
//! properties.

use std::process::Command;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// An enhanced tag built around a real record: byte 0, FourCC, record. ffmpeg 5.1's FLV muxer
/// cannot write enhanced RTMP, so the HEVC/AV1/Opus records come from its MP4/Ogg output.
fn enhanced(b0: u8, fourcc: &[u8; 4], payload: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b0);
    b.put_slice(fourcc);
    b.put_slice(payload);
    b.freeze()
}

fn video_config(body: Bytes) -> VideoConfig {
    match parse_video_tag(body).unwrap() {
        VideoTag::SequenceHeader(cfg) => cfg,
        other => panic!("expected a sequence header, got {other:?}"),
    }
}

fn audio_config(body: Bytes) -> AudioConfig {
    match parse_audio_tag(body).unwrap() {
        AudioTag::SequenceHeader(cfg) => cfg,
        other => panic!("expected a sequence header, got {other:?}"),
    }
}

#[test]
fn ffmpeg_h264_sequence_header() {
    let body = fixture("ffmpeg-5.1_flv_h264_seqhdr.bin");
    let cfg = video_config(body.clone());
    assert_eq!(cfg.codec, VideoCodec::H264);
    assert_eq!((cfg.width, cfg.height), (320, 240));
    assert_eq!(cfg.codec_string, "avc1.64000d");
    assert_eq!(video_sequence_header(&cfg), body, "legacy form written back byte for byte");
}

#[test]
fn ffmpeg_aac_sequence_header() {
    let body = fixture("ffmpeg-5.1_flv_aac_seqhdr.bin");
    let cfg = audio_config(body.clone());
    assert_eq!(cfg.codec, AudioCodec::Aac);
    assert_eq!((cfg.sample_rate, cfg.channels), (44100, 1));
    assert_eq!(cfg.codec_string, "mp4a.40.2");
    assert_eq!(audio_sequence_header(&cfg), body);
}

#[test]
fn enhanced_hevc_sequence_header() {
    let body = enhanced(0x90, b"hvc1", &fixture("ffmpeg-5.1_mp4_libx265_hvcC.bin"));
    let cfg = video_config(body.clone());
    assert_eq!(cfg.codec, VideoCodec::H265);
    assert_eq!((cfg.width, cfg.height), (320, 240));
    assert_eq!(cfg.codec_string, "hvc1.1.6.L60.90");
    assert_eq!(video_sequence_header(&cfg), body);
}

#[test]
fn enhanced_av1_sequence_header() {
    let body = enhanced(0x90, b"av01", &fixture("ffmpeg-5.1_mp4_libsvtav1_av1C.bin"));
    let cfg = video_config(body.clone());
    assert_eq!(cfg.codec, VideoCodec::Av1);
    assert_eq!((cfg.width, cfg.height), (320, 240));
    assert_eq!(cfg.codec_string, "av01.0.00M.08");
    assert_eq!(video_sequence_header(&cfg), body);
}

#[test]
fn enhanced_avc_sequence_header_is_accepted() {
    let legacy = fixture("ffmpeg-5.1_flv_h264_seqhdr.bin");
    let cfg = video_config(enhanced(0x90, b"avc1", &legacy[5..]));
    assert_eq!((cfg.width, cfg.height), (320, 240));
}

#[test]
fn enhanced_opus_sequence_header() {
    let body = enhanced(0x90, b"Opus", &fixture("ffmpeg-5.1_ogg_libopus_OpusHead.bin"));
    let cfg = audio_config(body.clone());
    assert_eq!(cfg.codec, AudioCodec::Opus);
    assert_eq!((cfg.sample_rate, cfg.channels), (48000, 2));
    assert_eq!(audio_sequence_header(&cfg), body);
}

#[test]
fn enhanced_mp4a_is_aac() {
    let asc = &fixture("ffmpeg-5.1_flv_aac_seqhdr.bin")[2..];
    assert_eq!(audio_config(enhanced(0x90, b"mp4a", asc)).sample_rate, 44100);
    assert_eq!(
        parse_audio_tag(enhanced(0x91, b"mp4a", &[1, 2])).unwrap(),
        AudioTag::Frame { codec: AudioCodec::Aac, data: Bytes::from_static(&[1, 2]) }
    );
}

#[test]
fn frames_and_composition_time() {
    // Legacy AVC inter frame, cts -1 (0xffffff).
    let tag = parse_video_tag(Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xff, 9, 9])).unwrap();
    assert_eq!(
        tag,
        VideoTag::Frame {
            codec: VideoCodec::H264,
            keyframe: false,
            cts_ms: -1,
            data: Bytes::from_static(&[9, 9])
        }
    );
    // hvc1 CodedFrames carry SI24 cts; CodedFramesX do not.
    let f = parse_video_tag(enhanced(0x91, b"hvc1", &[0, 0, 80, 7])).unwrap();
    assert!(matches!(f, VideoTag::Frame { keyframe: true, cts_ms: 80, ref data, .. } if data[..] == [7]));
    let f = parse_video_tag(enhanced(0xa3, b"hvc1", &[0, 0, 80])).unwrap();
    assert!(matches!(f, VideoTag::Frame { keyframe: false, cts_ms: 0, ref data, .. } if data.len() == 3));
    // av01 CodedFrames have no cts: the bytes after the FourCC are all OBU data.
    let f = parse_video_tag(enhanced(0x91, b"av01", &[0x12, 0x00])).unwrap();
    assert!(
        matches!(f, VideoTag::Frame { codec: VideoCodec::Av1, cts_ms: 0, ref data, .. } if data.len() == 2)
    );
}

#[test]
fn ignored_and_end_of_sequence() {
    let ignored = |b: Bytes| assert_eq!(parse_video_tag(b).unwrap(), VideoTag::Ignored);
    ignored(Bytes::from_static(&[0x57, 0])); // legacy AVC video info/command frame
    ignored(Bytes::from_static(&[0xd1, 0])); // enhanced command frame: no FourCC follows
    ignored(enhanced(0x94, b"hvc1", b"\x02\x00\x09colorInfo")); // Metadata
    assert_eq!(parse_video_tag(Bytes::from_static(&[0x17, 2, 0, 0, 0])).unwrap(), VideoTag::EndOfSequence);
    assert_eq!(parse_video_tag(enhanced(0x92, b"av01", &[])).unwrap(), VideoTag::EndOfSequence);
    assert_eq!(parse_audio_tag(enhanced(0x92, b"Opus", &[])).unwrap(), AudioTag::Ignored);
}

#[test]
fn truncated() {
    assert_eq!(
        parse_video_tag(Bytes::new()).unwrap_err(),
        FlvError::Truncated { what: "video tag header", needed: 1, have: 0 }
    );
    assert_eq!(
        parse_video_tag(Bytes::from_static(&[0x17, 1, 0])).unwrap_err(),
        FlvError::Truncated { what: "AVC video tag header", needed: 5, have: 3 }
    );
    assert!(matches!(
        parse_video_tag(enhanced(0x91, b"hvc1", &[0])).unwrap_err(),
        FlvError::Truncated { what: "enhanced video composition time", needed: 3, have: 1 }
    ));
    assert!(matches!(
        parse_video_tag(Bytes::from_static(&[0x90, b'h', b'v'])).unwrap_err(),
        FlvError::Truncated { what: "enhanced video tag header", .. }
    ));
    assert!(matches!(
        parse_audio_tag(Bytes::from_static(&[0xaf])).unwrap_err(),
        FlvError::Truncated { what: "AAC audio tag header", .. }
    ));
    // A truncated record inside a well-formed tag is a codec error that says where.
    let e = parse_video_tag(Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64])).unwrap_err();
    assert!(matches!(e, FlvError::Codec(CodecError::Truncated { record: "avcC", offset: 2, .. })));
    assert_eq!(e.to_string(), "FLV sequence header: avcC: truncated at byte 2: need 1 bytes, have 0");
}

#[test]
fn unsupported_codecs_are_named() {
    let e = parse_video_tag(Bytes::from_static(&[0x22, 0, 0])).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedCodec { codec_id: 2, kind: "video" });
    assert!(e.to_string().contains("Sorenson H.263"), "{e}");
    let e = parse_video_tag(Bytes::from_static(&[0x14, 0, 0])).unwrap_err();
    assert!(e.to_string().contains("On2 VP6"), "{e}");
    let e = parse_audio_tag(Bytes::from_static(&[0x2f, 0xff, 0xfb])).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedCodec { codec_id: 2, kind: "audio" });
    assert!(e.to_string().contains("MP3"), "{e}");
    let e = parse_audio_tag(Bytes::from_static(&[0x72, 0])).unwrap_err();
    assert!(e.to_string().contains("G.711 A-law"), "{e}");
}

#[test]
fn vp9_and_unknown_fourccs_are_refused() {
    for b0 in [0x90, 0x91, 0x93] {
        assert_eq!(
            parse_video_tag(enhanced(b0, b"vp09", &[0; 8])).unwrap_err(),
            FlvError::UnsupportedFourCc { fourcc: "vp09".into() }
        );
    }
    let e = parse_video_tag(enhanced(0x91, b"\x00vc\xff", &[])).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedFourCc { fourcc: "\\x00vc\\xff".into() });
    let e = parse_audio_tag(enhanced(0x91, b"ac-3", &[])).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedFourCc { fourcc: "ac-3".into() });
}

#[test]
fn multitrack_modex_and_ts_start_are_refused() {
    // Video Multitrack (6): the next byte is a multitrack type, not a FourCC; never misread it.
    let e = parse_video_tag(enhanced(0x96, b"hvc1", &[0; 8])).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedPacketType { packet_type: 6, fourcc: String::new() });
    assert_eq!(
        e.to_string(),
        "unsupported FLV packet type 6 (Multitrack video is not supported) for this stream"
    );
    let e = parse_video_tag(enhanced(0x97, b"avc1", &[0; 8])).unwrap_err();
    assert!(e.to_string().contains("ModEx"), "{e}");
    let e = parse_audio_tag(enhanced(0x95, b"Opus", &[0; 8])).unwrap_err();
    assert!(e.to_string().contains("Multitrack audio"), "{e}");
    let e = parse_video_tag(enhanced(0x95, b"av01", &[0; 8])).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedPacketType { packet_type: 5, fourcc: "av01".into() });
    assert!(e.to_string().contains("MPEG2TSSequenceStart"), "{e}");
    let e = parse_video_tag(Bytes::from_static(&[0x17, 3, 0, 0, 0])).unwrap_err();
    assert_eq!(e, FlvError::UnsupportedPacketType { packet_type: 3, fourcc: "avc1".into() });
}

/// Walks an FLV file (FLV spec E.2, E.3): header, then (PreviousTagSize, tag)*; yields
/// (tag type, timestamp ms, body).
/// Walk an FLV file's tags: (tag type, timestamp ms, body). Shared with the fMP4 tests.
pub(crate) fn flv_tags(file: &[u8]) -> Vec<(u8, u32, Bytes)> {
    assert_eq!(&file[..3], b"FLV");
    let mut off = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize + 4;
    let mut tags = Vec::new();
    while off + 11 <= file.len() {
        let h = &file[off..off + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        tags.push((h[0] & 0x1f, ts, Bytes::copy_from_slice(&file[off + 11..off + 11 + size])));
        off += 11 + size + 4;
    }
    tags
}

/// ffmpeg as the publisher: every tag of a fresh x264/AAC FLV parses, and re-serializes to the
/// same bytes. Set TIDECAST_REGEN_FIXTURES=1 to rewrite the FLV fixtures from this run.
#[test]
fn ffmpeg_flv_every_tag_round_trips() {
    if Command::new("ffmpeg").arg("-version").output().is_err() {
        eprintln!("!!! SKIPPED ffmpeg_flv_every_tag_round_trips: ffmpeg is not installed !!!");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine", "-t", "1"])
        .args(["-c:v", "libx264", "-c:a", "aac", "-f", "flv"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let file = std::fs::read(&out).unwrap();
    let (mut video_frames, mut keyframes, mut audio_frames, mut reordered) = (0, 0, 0, 0);
    let (mut vcfg, mut acfg) = (None, None);
    for (tag_type, ts, body) in flv_tags(&file) {
        match tag_type {
            9 => match parse_video_tag(body.clone()).unwrap() {
                VideoTag::SequenceHeader(cfg) => {
                    assert_eq!(video_sequence_header(&cfg), body);
                    if std::env::var_os("TIDECAST_REGEN_FIXTURES").is_some() && vcfg.is_none() {
                        std::fs::write(fixture_path("ffmpeg-5.1_flv_h264_seqhdr.bin"), &body).unwrap();
                    }
                    vcfg = Some(cfg);
                }
                VideoTag::Frame { codec, keyframe, cts_ms, data } => {
                    assert_eq!(video_frame(codec, keyframe, cts_ms, &data), body, "frame at {ts} ms");
                    video_frames += 1;
                    keyframes += usize::from(keyframe);
                    reordered += usize::from(cts_ms != 0);
                }
                VideoTag::EndOfSequence => {}
                VideoTag::Ignored => panic!("ffmpeg sent an ignorable video tag at {ts} ms"),
            },
            8 => match parse_audio_tag(body.clone()).unwrap() {
                AudioTag::SequenceHeader(cfg) => {
                    assert_eq!(audio_sequence_header(&cfg), body);
                    if std::env::var_os("TIDECAST_REGEN_FIXTURES").is_some() && acfg.is_none() {
                        std::fs::write(fixture_path("ffmpeg-5.1_flv_aac_seqhdr.bin"), &body).unwrap();
                    }
                    acfg = Some(cfg);
                }
                AudioTag::Frame { codec, data } => {
                    assert_eq!(audio_frame(codec, &data), body, "audio at {ts} ms");
                    audio_frames += 1;
                }
                AudioTag::Ignored => panic!("ffmpeg sent an ignorable audio tag at {ts} ms"),
            },
            _ => {} // script data (onMetaData)
        }
    }
    let vcfg = vcfg.expect("a video sequence header");
    assert_eq!((vcfg.width, vcfg.height), (320, 240));
    assert!(vcfg.codec_string.starts_with("avc1.64"), "{}", vcfg.codec_string);
    let acfg = acfg.expect("an audio sequence header");
    assert_eq!((acfg.sample_rate, acfg.channels, acfg.codec_string.as_str()), (44100, 1, "mp4a.40.2"));
    assert_eq!(video_frames, 25);
    assert!(keyframes >= 1);
    assert!(reordered > 0, "x264 defaults use B-frames, so some frames have cts != 0");
    assert!(audio_frames >= 40, "{audio_frames} AAC frames for 1 s at 44.1 kHz");
}

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn video_codec() -> impl Strategy<Value = VideoCodec> {
    prop_oneof![Just(VideoCodec::H264), Just(VideoCodec::H265), Just(VideoCodec::Av1)]
}

/// Fixture records with their header bytes (profile, level, flags) randomised.
fn video_record() -> impl Strategy<Value = (VideoCodec, Bytes)> {
    (video_codec(), proptest::collection::vec(any::<u8>(), 12)).prop_map(|(codec, noise)| {
        let (mut rec, range) = match codec {
            VideoCodec::H264 => (fixture("ffmpeg-5.1_flv_h264_seqhdr.bin")[5..].to_vec(), 1..4),
            VideoCodec::H265 => (fixture("ffmpeg-5.1_mp4_libx265_hvcC.bin").to_vec(), 1..13),
            VideoCodec::Av1 => (fixture("ffmpeg-5.1_mp4_libsvtav1_av1C.bin").to_vec(), 1..3),
        };
        for (i, n) in range.zip(noise) {
            rec[i] = n;
        }
        (codec, Bytes::from(rec))
    })
}

proptest! {
    #[test]
    fn video_frames_round_trip(
        codec in video_codec(),
        keyframe in any::<bool>(),
        cts_ms in -(1i32 << 23)..(1 << 23),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let cts_ms = if codec == VideoCodec::Av1 { 0 } else { cts_ms };
        let body = video_frame(codec, keyframe, cts_ms, &data);
        prop_assert_eq!(
            parse_video_tag(body).unwrap(),
            VideoTag::Frame { codec, keyframe, cts_ms, data: Bytes::from(data) }
        );
    }

    #[test]
    fn video_sequence_headers_round_trip((codec, record) in video_record()) {
        let cfg = match codec {
            VideoCodec::H264 => VideoConfig::from_avc_record(record),
            VideoCodec::H265 => VideoConfig::from_hevc_record(record),
            VideoCodec::Av1 => VideoConfig::from_av1_record(record),
        }.unwrap();
        prop_assert_eq!(
            parse_video_tag(video_sequence_header(&cfg)).unwrap(),
            VideoTag::SequenceHeader(cfg)
        );
    }

    #[test]
    fn audio_round_trips(
        opus in any::<bool>(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
        asc in (1u8..31, 0u8..13, 0u8..8),
    ) {
        let codec = if opus { AudioCodec::Opus } else { AudioCodec::Aac };
        prop_assert_eq!(
            parse_audio_tag(audio_frame(codec, &data)).unwrap(),
            AudioTag::Frame { codec, data: Bytes::from(data) }
        );
        let cfg = if opus {
            let mut head = fixture("ffmpeg-5.1_ogg_libopus_OpusHead.bin").to_vec();
            head[9] = asc.2.max(1);
            AudioConfig::from_opus_head(Bytes::from(head)).unwrap()
        } else {
            let (aot, index, chan) = asc;
            let v = u16::from(aot) << 11 | u16::from(index) << 7 | u16::from(chan) << 3;
            AudioConfig::from_aac_asc(Bytes::copy_from_slice(&v.to_be_bytes())).unwrap()
        };
        prop_assert_eq!(
            parse_audio_tag(audio_sequence_header(&cfg)).unwrap(),
            AudioTag::SequenceHeader(cfg)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = parse_video_tag(Bytes::from(data.clone()));
        let _ = parse_audio_tag(Bytes::from(data));
    }

    /// Valid tag headers with random tails reach the record parsers.
    #[test]
    fn plausible_headers_never_panic(
        head in prop::sample::select(vec![
            &b"\x17\x00\x00\x00\x00"[..], b"\x27\x01", b"\x90hvc1", b"\x90av01", b"\x90avc1",
            b"\x91hvc1", b"\xaf\x00", b"\x90Opus", b"\x90mp4a",
        ]),
        tail in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let mut body = head.to_vec();
        body.extend_from_slice(&tail);
        let _ = parse_video_tag(Bytes::from(body.clone()));
        let _ = parse_audio_tag(Bytes::from(body));
    }
}
