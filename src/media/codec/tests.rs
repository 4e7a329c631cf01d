//! Codec configuration parsing against real encoder output (fixtures in `tests/fixtures/`) and
//! arbitrary bytes.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

pub(crate) fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

#[test]
fn libx264_avc_record() {
    // The FLV tag body is 5 bytes of AVC tag header, then the avcC.
    let body = fixture("ffmpeg-5.1_flv_h264_seqhdr.bin");
    let cfg = VideoConfig::from_avc_record(body.slice(5..)).unwrap();
    assert_eq!(cfg.codec, VideoCodec::H264);
    assert_eq!((cfg.width, cfg.height), (320, 240));
    assert_eq!(cfg.codec_string, "avc1.64000d");
    assert_eq!(cfg.record, body.slice(5..));
}

#[test]
fn libx265_hevc_record() {
    let cfg = VideoConfig::from_hevc_record(fixture("ffmpeg-5.1_mp4_libx265_hvcC.bin")).unwrap();
    assert_eq!(cfg.codec, VideoCodec::H265);
    assert_eq!((cfg.width, cfg.height), (320, 240));
    // Main profile, compat flags 1 and 2, Main tier level 2 (60), progressive + frame only.
    assert_eq!(cfg.codec_string, "hvc1.1.6.L60.90");
}

#[test]
fn libsvtav1_av1_record() {
    let cfg = VideoConfig::from_av1_record(fixture("ffmpeg-5.1_mp4_libsvtav1_av1C.bin")).unwrap();
    assert_eq!(cfg.codec, VideoCodec::Av1);
    assert_eq!((cfg.width, cfg.height), (320, 240));
    assert_eq!(cfg.codec_string, "av01.0.00M.08");
}

#[test]
fn av1_record_without_config_obus_has_no_size() {
    let cfg = VideoConfig::from_av1_record(Bytes::from_static(&[0x81, 0x49, 0xec, 0x00])).unwrap();
    // Profile 2, level 9, high tier, 12-bit.
    assert_eq!(cfg.codec_string, "av01.2.09H.12");
    assert_eq!((cfg.width, cfg.height), (0, 0));
}

#[test]
fn ffmpeg_aac_asc() {
    let body = fixture("ffmpeg-5.1_flv_aac_seqhdr.bin");
    let cfg = AudioConfig::from_aac_asc(body.slice(2..)).unwrap();
    assert_eq!(cfg.codec, AudioCodec::Aac);
    assert_eq!(cfg.sample_rate, 44100);
    assert_eq!(cfg.channels, 1);
    assert_eq!(cfg.codec_string, "mp4a.40.2");
}

#[test]
fn aac_escape_object_type_and_explicit_rate() {
    // aot 31 + 6 bits (42 = 32 + 10), index 15 + 24-bit 12345 Hz, channel config 2.
    let mut bits = String::new();
    bits += "11111001010"; // 31, then 10
    bits += "1111";
    bits += &format!("{:024b}", 12345);
    bits += "0010";
    while !bits.len().is_multiple_of(8) {
        bits.push('0');
    }
    let bytes: Vec<u8> =
        (0..bits.len() / 8).map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap()).collect();
    let cfg = AudioConfig::from_aac_asc(Bytes::from(bytes)).unwrap();
    assert_eq!(cfg.codec_string, "mp4a.40.42");
    assert_eq!(cfg.sample_rate, 12345);
    assert_eq!(cfg.channels, 2);
}

#[test]
fn libopus_head() {
    let cfg = AudioConfig::from_opus_head(fixture("ffmpeg-5.1_ogg_libopus_OpusHead.bin")).unwrap();
    assert_eq!(cfg.codec, AudioCodec::Opus);
    assert_eq!(cfg.channels, 2);
    assert_eq!(cfg.sample_rate, 48000);
    assert_eq!(cfg.codec_string, "opus");
}

#[test]
fn errors_locate_the_fault() {
    let e = VideoConfig::from_avc_record(Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 10, 0x67]))
        .unwrap_err();
    assert_eq!(e, CodecError::Truncated { record: "avcC", offset: 8, needed: 10, have: 1 });
    assert_eq!(e.to_string(), "avcC: truncated at byte 8: need 10 bytes, have 1");
    assert!(matches!(
        VideoConfig::from_avc_record(Bytes::from_static(&[0])),
        Err(CodecError::UnsupportedVersion { record: "avcC", version: 0, .. })
    ));
    assert!(matches!(
        VideoConfig::from_hevc_record(Bytes::from_static(&[1, 1, 0x60])),
        Err(CodecError::Truncated { record: "hvcC", offset: 2, .. })
    ));
    assert!(matches!(
        VideoConfig::from_av1_record(Bytes::from_static(&[0x01, 0, 0, 0])),
        Err(CodecError::Invalid { record: "av1C", field: "marker", .. })
    ));
    assert!(matches!(
        AudioConfig::from_aac_asc(Bytes::from_static(&[0x17, 0x00])),
        Err(CodecError::Invalid { field: "samplingFrequencyIndex", .. })
    ));
    assert!(matches!(
        AudioConfig::from_aac_asc(Bytes::from_static(&[0x12])),
        Err(CodecError::BitstreamEnd { bit_offset: 5, .. })
    ));
    assert!(matches!(
        AudioConfig::from_opus_head(Bytes::from_static(b"OpusTags\x01\x02")),
        Err(CodecError::Invalid { record: "OpusHead", field: "magic", .. })
    ));
}

#[test]
fn bad_sps_keeps_the_record_with_zero_size() {
    // An avcC whose one SPS is garbage: accepted (decoders may cope), size unknown.
    let cfg = VideoConfig::from_avc_record(Bytes::from_static(&[
        1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 2, 0x67, 0x64, 0,
    ]))
    .unwrap();
    assert_eq!((cfg.width, cfg.height, cfg.codec_string.as_str()), (0, 0, "avc1.64001f"));
}

proptest! {
    #[test]
    fn arbitrary_records_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let data = Bytes::from(data);
        let _ = VideoConfig::from_avc_record(data.clone());
        let _ = VideoConfig::from_hevc_record(data.clone());
        let _ = VideoConfig::from_av1_record(data.clone());
        let _ = AudioConfig::from_aac_asc(data.clone());
        let _ = AudioConfig::from_opus_head(data);
    }

    /// Plausible headers with random tails reach deeper into the parsers than random bytes.
    #[test]
    fn mutated_fixtures_never_panic(
        name in prop::sample::select(vec![
            "ffmpeg-5.1_flv_h264_seqhdr.bin",
            "ffmpeg-5.1_mp4_libx265_hvcC.bin",
            "ffmpeg-5.1_mp4_libsvtav1_av1C.bin",
        ]),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut data = fixture(name).to_vec();
        if name.contains("flv") {
            data.drain(..5);
        }
        for (at, x) in flips {
            let i = at % data.len();
            data[i] ^= x;
        }
        data.truncate(cut % (data.len() + 1));
        let data = Bytes::from(data);
        let _ = VideoConfig::from_avc_record(data.clone());
        let _ = VideoConfig::from_hevc_record(data.clone());
        let _ = VideoConfig::from_av1_record(data);
    }

    #[test]
    fn aac_fields_round_trip(aot in 1u32..=95, index in 0u32..=15, rate in 1u32..(1 << 24), chan in 0u32..=7) {
        if aot == 31 {
            return Ok(()); // 31 is the escape value, not an object type
        }
        let mut bits = String::new();
        if aot > 31 {
            bits += &format!("11111{:06b}", aot - 32);
        } else {
            bits += &format!("{aot:05b}");
        }
        bits += &format!("{index:04b}");
        let want_rate = if index == 15 {
            bits += &format!("{rate:024b}");
            rate
        } else if index < 13 {
            AAC_SAMPLE_RATES[index as usize]
        } else {
            return Ok(()); // reserved indexes: refused, covered above
        };
        bits += &format!("{chan:04b}");
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let bytes: Vec<u8> = (0..bits.len() / 8)
            .map(|i| u8::from_str_radix(&bits[i * 8..i * 8 + 8], 2).unwrap())
            .collect();
        let cfg = AudioConfig::from_aac_asc(Bytes::from(bytes)).unwrap();
        prop_assert_eq!(cfg.codec_string, format!("mp4a.40.{aot}"));
        prop_assert_eq!(cfg.sample_rate, want_rate);
        prop_assert_eq!(cfg.channels, if chan == 7 { 8 } else { chan as u8 });
    }
}
