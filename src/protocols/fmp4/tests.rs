//! fMP4 writer tests: box layout walked with a tiny test-only box reader, fragment invariants as
//! properties, and ffmpeg/ffprobe as the oracle for real H.264/AAC, HEVC and Opus streams.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::protocols::flv::{parse_audio_tag, parse_video_tag, AudioTag, VideoTag};

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn h264_config() -> VideoConfig {
    VideoConfig::from_avc_record(fixture("ffmpeg-5.1_flv_h264_seqhdr.bin").slice(5..)).unwrap()
}

fn aac_config() -> AudioConfig {
    AudioConfig::from_aac_asc(fixture("ffmpeg-5.1_flv_aac_seqhdr.bin").slice(2..)).unwrap()
}

fn opus_config() -> AudioConfig {
    AudioConfig::from_opus_head(fixture("ffmpeg-5.1_ogg_libopus_OpusHead.bin")).unwrap()
}

// ---- A test-only box reader -------------------------------------------------------------

/// One box: its type, absolute offset of its first byte, and its body (after the header).
#[derive(Clone, Copy, Debug)]
struct Bx<'a> {
    kind: [u8; 4],
    start: usize,
    body: &'a [u8],
    body_start: usize,
}

impl Bx<'_> {
    fn size(&self) -> usize {
        self.body_start - self.start + self.body.len()
    }
    /// Version and flags of a full box.
    fn version_flags(&self) -> (u8, u32) {
        (self.body[0], be32(self.body, 0) & 0x00ff_ffff)
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

/// Boxes that must exactly fill `buf` (sizes are checked: a sibling may not overrun its
/// parent, and the children's sizes must sum to the parent's body). `base` is `buf`'s offset.
fn walk(buf: &[u8], base: usize) -> Vec<Bx<'_>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        assert!(off + 8 <= buf.len(), "box header at {} truncated", base + off);
        let mut size = be32(buf, off) as usize;
        let kind: [u8; 4] = buf[off + 4..off + 8].try_into().unwrap();
        let mut header = 8;
        if size == 1 {
            size = u64::from_be_bytes(buf[off + 8..off + 16].try_into().unwrap()) as usize;
            header = 16;
        }
        assert!(
            size >= header && off + size <= buf.len(),
            "box {:?} at {} has size {size}, {} bytes left",
            String::from_utf8_lossy(&kind),
            base + off,
            buf.len() - off
        );
        out.push(Bx {
            kind,
            start: base + off,
            body: &buf[off + header..off + size],
            body_start: base + off + header,
        });
        off += size;
    }
    out
}

/// The children of a container box (skipping the fields that precede them).
fn children<'a>(b: &Bx<'a>) -> Vec<Bx<'a>> {
    let skip = match &b.kind {
        b"stsd" | b"dref" => 8, // full box header + entry_count
        b"avc1" | b"hvc1" | b"av01" => 78,
        b"mp4a" | b"Opus" => 28,
        _ => 0,
    };
    walk(&b.body[skip..], b.body_start + skip)
}

const CONTAINERS: [&[u8; 4]; 16] = [
    b"moov", b"trak", b"mdia", b"minf", b"dinf", b"dref", b"stbl", b"stsd", b"avc1", b"hvc1", b"av01",
    b"mp4a", b"Opus", b"mvex", b"moof", b"traf",
];

/// Walks every container recursively, so every size in the tree is checked.
fn check_tree(boxes: &[Bx<'_>]) -> usize {
    let mut count = 0;
    for b in boxes {
        count += 1;
        if CONTAINERS.contains(&&b.kind) {
            let kids = children(b);
            count += check_tree(&kids);
        }
    }
    count
}

fn all<'a>(boxes: &[Bx<'a>], kind: &[u8; 4]) -> Vec<Bx<'a>> {
    boxes.iter().filter(|b| &b.kind == kind).copied().collect()
}

/// The first box along `path` (each step the first child of that type).
fn find<'a>(boxes: &[Bx<'a>], path: &[&[u8; 4]]) -> Bx<'a> {
    let (first, rest) = path.split_first().unwrap();
    let b = *all(boxes, first)
        .first()
        .unwrap_or_else(|| panic!("no {:?} box", String::from_utf8_lossy(&first[..])));
    if rest.is_empty() {
        b
    } else {
        find(&children(&b), rest)
    }
}

/// One `traf` as read back.
#[derive(Debug)]
struct Traf {
    track_id: u32,
    base_media_decode_time: u64,
    data_offset: usize,
    samples: Vec<Sample>,
}

/// Reads a fragment: (sequence number, trafs, mdat), checking the fixed header fields.
fn read_fragment(buf: &[u8]) -> (u32, Vec<Traf>, Bx<'_>) {
    let top = walk(buf, 0);
    check_tree(&top);
    assert_eq!(top.len(), 2, "moof + mdat");
    assert_eq!((&top[0].kind, &top[1].kind), (b"moof", b"mdat"));
    let moof = children(&top[0]);
    let mfhd = find(&moof, &[b"mfhd"]);
    assert_eq!(mfhd.version_flags(), (0, 0));
    let seq = be32(mfhd.body, 4);
    let mut trafs = Vec::new();
    for traf in all(&moof, b"traf") {
        let kids = children(&traf);
        let kinds: Vec<_> = kids.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, [*b"tfhd", *b"tfdt", *b"trun"]);
        assert_eq!(kids[0].version_flags(), (0, 0x02_0000), "tfhd default-base-is-moof");
        assert_eq!(kids[1].version_flags().0, 1, "tfdt v1");
        let trun = kids[2];
        assert_eq!(trun.version_flags(), (1, 0xf01));
        let count = be32(trun.body, 4) as usize;
        assert_eq!(trun.body.len(), 12 + 16 * count);
        let samples = (0..count)
            .map(|i| {
                let e = &trun.body[12 + 16 * i..];
                let flags = be32(e, 8);
                assert!(flags == 0x0200_0000 || flags == 0x0101_0000, "sample flags {flags:#x}");
                Sample {
                    duration: be32(e, 0),
                    size: be32(e, 4),
                    sync: flags == 0x0200_0000,
                    cts_offset: be32(e, 12) as i32,
                }
            })
            .collect();
        trafs.push(Traf {
            track_id: be32(kids[0].body, 4),
            base_media_decode_time: u64::from_be_bytes(kids[1].body[4..12].try_into().unwrap()),
            data_offset: be32(trun.body, 8) as i32 as usize,
            samples,
        });
    }
    (seq, trafs, top[1])
}

/// Every traf's samples, read back at `data_offset` (from the moof, which starts the buffer),
/// must be exactly the runs' payloads, and lie inside the mdat.
fn assert_payloads(buf: &[u8], trafs: &[Traf], mdat: &Bx<'_>, runs: &[TrackRun<'_>]) {
    let non_empty: Vec<_> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    assert_eq!(trafs.len(), non_empty.len());
    for (traf, run) in trafs.iter().zip(non_empty) {
        assert_eq!(traf.track_id, run.track_id);
        assert_eq!(traf.base_media_decode_time, run.base_media_decode_time);
        assert_eq!(traf.samples, run.samples);
        let mut at = traf.data_offset;
        assert!(at >= mdat.body_start);
        for d in run.data {
            assert_eq!(&buf[at..at + d.len()], &d[..], "payload at {at}");
            at += d.len();
        }
        assert!(at <= mdat.body_start + mdat.body.len());
    }
}

// ---- Init segment layout ----------------------------------------------------------------

#[test]
fn h264_aac_init_layout() {
    let (video, audio) = (h264_config(), aac_config());
    let tracks = Tracks { video: Some(video.clone()), audio: Some(audio.clone()) };
    let init = init_segment(&tracks).unwrap();
    let top = walk(&init, 0);
    check_tree(&top);
    let kinds: Vec<_> = top.iter().map(|b| b.kind).collect();
    assert_eq!(kinds, [*b"ftyp", *b"moov"]);
    let ftyp = top[0].body;
    assert_eq!(&ftyp[..4], b"iso6");
    assert_eq!(&ftyp[8..], b"iso6isommp41", "no cmfc for a two-track header");

    let moov = children(&top[1]);
    assert_eq!(be32(find(&moov, &[b"mvhd"]).body, 12), 1000, "mvhd timescale");
    let traks = all(&moov, b"trak");
    assert_eq!(traks.len(), 2);
    let (vt, at) = (children(&traks[0]), children(&traks[1]));

    let tkhd = find(&vt, &[b"tkhd"]);
    assert_eq!(tkhd.version_flags(), (0, 3));
    assert_eq!(be32(tkhd.body, 12), VIDEO_TRACK_ID);
    assert_eq!(be16(tkhd.body, 36), 0, "video volume");
    assert_eq!((be32(tkhd.body, 76), be32(tkhd.body, 80)), (320 << 16, 240 << 16));
    assert_eq!(be32(find(&vt, &[b"mdia", b"mdhd"]).body, 12), VIDEO_TIMESCALE);
    assert_eq!(be16(find(&vt, &[b"mdia", b"mdhd"]).body, 20), 0x55c4, "und");
    assert_eq!(&find(&vt, &[b"mdia", b"hdlr"]).body[8..12], b"vide");
    find(&vt, &[b"mdia", b"minf", b"vmhd"]);
    let url = find(&vt, &[b"mdia", b"minf", b"dinf", b"dref", b"url "]);
    assert_eq!(url.version_flags(), (0, 1));
    let stbl = children(&find(&vt, &[b"mdia", b"minf", b"stbl"]));
    for empty in [b"stts", b"stsc", b"stco"] {
        assert_eq!(be32(find(&stbl, &[empty]).body, 4), 0);
    }
    let avc1 = find(&stbl, &[b"stsd", b"avc1"]);
    assert_eq!((be16(avc1.body, 24), be16(avc1.body, 26)), (320, 240));
    assert_eq!(find(&stbl, &[b"stsd", b"avc1", b"avcC"]).body, &video.record[..], "avcC verbatim");

    let tkhd = find(&at, &[b"tkhd"]);
    assert_eq!(be32(tkhd.body, 12), AUDIO_TRACK_ID);
    assert_eq!(be16(tkhd.body, 36), 0x0100, "audio volume");
    assert_eq!(be32(find(&at, &[b"mdia", b"mdhd"]).body, 12), 44100);
    assert_eq!(&find(&at, &[b"mdia", b"hdlr"]).body[8..12], b"soun");
    find(&at, &[b"mdia", b"minf", b"smhd"]);
    let mp4a = find(&at, &[b"mdia", b"minf", b"stbl", b"stsd", b"mp4a"]);
    assert_eq!(be16(mp4a.body, 16), 1, "channelcount");
    assert_eq!(be32(mp4a.body, 24), 44100 << 16);
    let esds = find(&children(&mp4a), &[b"esds"]);
    assert_eq!(esds_audio_specific_config(esds.body), &audio.config[..]);

    let trex = all(&children(&find(&moov, &[b"mvex"])), b"trex");
    assert_eq!(trex.len(), 2, "one trex per track");
    assert_eq!(trex.iter().map(|t| (be32(t.body, 4), be32(t.body, 8))).collect::<Vec<_>>(), [(1, 1), (2, 1)]);
}

/// Walks the esds descriptors (ISO/IEC 14496-1 §7.2.6) and returns the DecoderSpecificInfo,
/// checking objectTypeIndication and streamType on the way.
fn esds_audio_specific_config(body: &[u8]) -> &[u8] {
    fn descriptor(b: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(b[0], tag, "descriptor tag");
        let (mut len, mut i) = (0usize, 1);
        loop {
            len = len << 7 | usize::from(b[i] & 0x7f);
            i += 1;
            if b[i - 1] & 0x80 == 0 {
                break;
            }
        }
        (&b[i..i + len], &b[i + len..])
    }
    let (es, rest) = descriptor(&body[4..], 0x03);
    assert!(rest.is_empty());
    let (dcd, sl) = descriptor(&es[3..], 0x04);
    assert_eq!(descriptor(sl, 0x06).0, [0x02]);
    assert_eq!(dcd[0], 0x40, "objectTypeIndication MPEG-4 Audio");
    assert_eq!(dcd[1] >> 2, 5, "streamType audio");
    let (asc, rest) = descriptor(&dcd[13..], 0x05);
    assert!(rest.is_empty());
    asc
}

#[test]
fn audio_only_keeps_track_id_2() {
    let init = init_segment(&Tracks { video: None, audio: Some(aac_config()) }).unwrap();
    let top = walk(&init, 0);
    check_tree(&top);
    assert_eq!(&top[0].body[8..], b"iso6cmfcisommp41", "one track: a CMAF header");
    let moov = children(&top[1]);
    let traks = all(&moov, b"trak");
    assert_eq!(traks.len(), 1);
    assert_eq!(be32(find(&children(&traks[0]), &[b"tkhd"]).body, 12), AUDIO_TRACK_ID);
    let trex = all(&children(&find(&moov, &[b"mvex"])), b"trex");
    assert_eq!(trex.len(), 1);
    assert_eq!(be32(trex[0].body, 4), AUDIO_TRACK_ID);
}

#[test]
fn empty_track_set_is_refused() {
    assert!(matches!(init_segment(&Tracks::default()), Err(Fmp4Error::NoTracks)));
}

#[test]
fn zero_sample_rate_is_refused() {
    let mut audio = aac_config();
    audio.sample_rate = 0;
    let err = init_segment(&Tracks { video: None, audio: Some(audio) }).unwrap_err();
    assert!(matches!(err, Fmp4Error::ZeroTimescale { track_id: AUDIO_TRACK_ID }), "{err}");
}

#[test]
fn oversized_record_is_refused() {
    let mut video = h264_config();
    video.record = Bytes::from(vec![0; MAX_RECORD_BYTES + 1]);
    let err = init_segment(&Tracks { video: Some(video), audio: None }).unwrap_err();
    assert!(matches!(err, Fmp4Error::RecordTooLarge { track_id: VIDEO_TRACK_ID, .. }), "{err}");
}

#[test]
fn hevc_and_av1_init_from_fixtures() {
    for (fixture_name, entry, config_box) in [
        ("ffmpeg-5.1_mp4_libx265_hvcC.bin", b"hvc1", b"hvcC"),
        ("ffmpeg-5.1_mp4_libsvtav1_av1C.bin", b"av01", b"av1C"),
    ] {
        let record = fixture(fixture_name);
        let video = match entry {
            b"hvc1" => VideoConfig::from_hevc_record(record.clone()).unwrap(),
            _ => VideoConfig::from_av1_record(record.clone()).unwrap(),
        };
        let init = init_segment(&Tracks { video: Some(video), audio: Some(opus_config()) }).unwrap();
        let top = walk(&init, 0);
        check_tree(&top);
        let moov = children(&top[1]);
        let stsd = [b"trak", b"mdia", b"minf", b"stbl", b"stsd"];
        let sample_entry = find(&moov, &[&stsd[..], &[entry]].concat());
        assert_eq!((be16(sample_entry.body, 24), be16(sample_entry.body, 26)), (320, 240));
        assert_eq!(find(&children(&sample_entry), &[config_box]).body, &record[..], "{fixture_name}");
    }
}

// ---- Opus ---------------------------------------------------------------------------------

#[test]
fn dops_from_ffmpeg_opus_head() {
    // OpusHead v1, 2 channels, pre-skip 312, 48000 Hz input, gain 0, family 0.
    let head = fixture("ffmpeg-5.1_ogg_libopus_OpusHead.bin");
    let dops = dops_from_opus_head(&head).unwrap();
    assert_eq!(&dops[..], [0, 2, 0x01, 0x38, 0, 0, 0xbb, 0x80, 0, 0, 0]);
    assert_eq!(be16(&dops, 2), 312, "PreSkip");
    assert_eq!(be32(&dops, 4), 48_000, "InputSampleRate");

    let init = init_segment(&Tracks { video: None, audio: Some(opus_config()) }).unwrap();
    let top = walk(&init, 0);
    check_tree(&top);
    let moov = children(&top[1]);
    assert_eq!(be32(find(&moov, &[b"trak", b"mdia", b"mdhd"]).body, 12), 48_000);
    let opus = find(&moov, &[b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"Opus"]);
    assert_eq!(be16(opus.body, 16), 2, "channelcount = OutputChannelCount");
    assert_eq!(be32(opus.body, 24), 48_000 << 16);
    assert_eq!(find(&children(&opus), &[b"dOps"]).body, &dops[..]);
}

#[test]
fn dops_copies_the_channel_mapping_table() {
    // 5.1 surround, family 1: 4 streams, 2 coupled, Vorbis channel order; gain -256 (-1 dB).
    let mut head = b"OpusHead".to_vec();
    head.extend([1, 6, 0x38, 0x01, 0x44, 0xac, 0, 0, 0x00, 0xff, 1, 4, 2, 0, 4, 1, 2, 3, 5]);
    let dops = dops_from_opus_head(&head).unwrap();
    assert_eq!(&dops[..], [0, 6, 0x01, 0x38, 0, 0, 0xac, 0x44, 0xff, 0x00, 1, 4, 2, 0, 4, 1, 2, 3, 5]);
    assert_eq!(dops[8..10], (-256i16).to_be_bytes(), "OutputGain");
}

#[test]
fn bad_opus_heads_are_refused() {
    let good = fixture("ffmpeg-5.1_ogg_libopus_OpusHead.bin").to_vec();
    let field = |head: &[u8]| match dops_from_opus_head(head) {
        Err(Fmp4Error::OpusHead { field, .. }) => field,
        other => panic!("expected an OpusHead error, got {other:?}"),
    };
    assert_eq!(field(&good[..18]), "header");
    let mut bad = good.clone();
    bad[0] = b'o';
    assert_eq!(field(&bad), "magic");
    let mut bad = good.clone();
    bad[8] = 0x10;
    assert_eq!(field(&bad), "version");
    let mut bad = good.clone();
    bad[9] = 3; // three channels cannot use family 0
    assert_eq!(field(&bad), "output channel count");
    let mut bad = good.clone();
    bad[18] = 1; // family 1 without its table
    assert_eq!(field(&bad), "channel mapping table");
}

// ---- Fragments ----------------------------------------------------------------------------

#[test]
fn fragment_layout() {
    let vdata = [Bytes::from_static(b"key frame"), Bytes::from_static(b"b"), Bytes::from_static(b"p frame")];
    let vsamples = [
        Sample { duration: 3600, size: 9, sync: true, cts_offset: 7200 },
        Sample { duration: 3600, size: 1, sync: false, cts_offset: -3600 },
        Sample { duration: 3600, size: 7, sync: false, cts_offset: 0 },
    ];
    let adata = [Bytes::from_static(b"aac1"), Bytes::from_static(b"aac22")];
    let asamples = [
        Sample { duration: 1024, size: 4, sync: true, cts_offset: 0 },
        Sample { duration: 1024, size: 5, sync: true, cts_offset: 0 },
    ];
    let runs = [
        TrackRun {
            track_id: VIDEO_TRACK_ID,
            base_media_decode_time: 1 << 33,
            samples: &vsamples,
            data: &vdata,
        },
        TrackRun { track_id: 7, base_media_decode_time: 0, samples: &[], data: &[] },
        TrackRun {
            track_id: AUDIO_TRACK_ID,
            base_media_decode_time: 96_000,
            samples: &asamples,
            data: &adata,
        },
    ];
    let frag = fragment(42, &runs);
    let (seq, trafs, mdat) = read_fragment(&frag);
    assert_eq!(seq, 42);
    assert_eq!(trafs.len(), 2, "the empty run gets no traf");
    assert_eq!(trafs[0].base_media_decode_time, 1 << 33, "tfdt v1 holds 64 bits");
    assert_eq!(trafs[1].base_media_decode_time, 96_000);
    assert_eq!(trafs[0].samples.len(), 3);
    assert_eq!(trafs[0].data_offset, mdat.body_start, "first sample is the first mdat byte");
    assert_eq!(&frag[trafs[0].data_offset..][..9], b"key frame");
    assert_eq!(&frag[trafs[1].data_offset..][..4], b"aac1");
    assert_eq!(mdat.body, b"key framebp frameaac1aac22");
    assert_payloads(&frag, &trafs, &mdat, &runs);
    // The archive reads a segment's timeline from its first fragment.
    assert_eq!(super::first_decode_time(&frag, VIDEO_TRACK_ID), Some(1 << 33));
    assert_eq!(super::first_decode_time(&frag, AUDIO_TRACK_ID), Some(96_000));
    assert_eq!(super::first_decode_time(&frag, 7), None, "no traf for the empty run");
    assert_eq!(super::first_decode_time(&frag[..40], VIDEO_TRACK_ID), None, "a torn fragment");
    assert_eq!(super::first_decode_time(b"", VIDEO_TRACK_ID), None);
    assert_eq!(super::first_composition_offset(&frag, VIDEO_TRACK_ID), Some(7200), "the key frame's offset");
    assert_eq!(super::first_composition_offset(&frag, AUDIO_TRACK_ID), Some(0));
    assert_eq!(super::first_composition_offset(&frag, 7), None);
}

#[test]
fn fragment_without_samples_is_moof_and_empty_mdat() {
    let frag = fragment(1, &[]);
    let (seq, trafs, mdat) = read_fragment(&frag);
    assert_eq!((seq, trafs.len(), mdat.body.len()), (1, 0, 0));
}

#[test]
#[should_panic(expected = "size disagrees")]
fn fragment_refuses_a_size_that_disagrees_with_the_payload() {
    let s = [Sample { duration: 1, size: 3, sync: true, cts_offset: 0 }];
    fragment(
        1,
        &[TrackRun {
            track_id: 1,
            base_media_decode_time: 0,
            samples: &s,
            data: &[Bytes::from_static(b"ab")],
        }],
    );
}

fn samples_strategy() -> impl Strategy<Value = Vec<(Sample, u8)>> {
    prop::collection::vec(
        (0u32..100_000, 0u32..600, any::<bool>(), any::<i32>(), any::<u8>()).prop_map(
            |(duration, size, sync, cts_offset, fill)| (Sample { duration, size, sync, cts_offset }, fill),
        ),
        0..40,
    )
}

proptest! {
    #[test]
    fn fragment_boxes_are_consistent(
        seq in any::<u32>(),
        tracks in prop::collection::vec((1u32..4, any::<u64>(), samples_strategy()), 0..4),
    ) {
        let owned: Vec<(u32, u64, Vec<Sample>, Vec<Bytes>)> = tracks
            .into_iter()
            .map(|(id, bmdt, s)| {
                let data = s.iter().map(|(s, fill)| Bytes::from(vec![*fill; s.size as usize])).collect();
                (id, bmdt, s.into_iter().map(|(s, _)| s).collect(), data)
            })
            .collect();
        let runs: Vec<TrackRun<'_>> = owned
            .iter()
            .map(|(track_id, bmdt, samples, data)| {
                TrackRun { track_id: *track_id, base_media_decode_time: *bmdt, samples, data }
            })
            .collect();
        let frag = fragment(seq, &runs);
        // read_fragment walks every box: children sum to their parent, top level to the buffer.
        let (got_seq, trafs, mdat) = read_fragment(&frag);
        prop_assert_eq!(got_seq, seq);
        let total: usize = owned.iter().flat_map(|(_, _, s, _)| s).map(|s| s.size as usize).sum();
        prop_assert_eq!(mdat.body.len(), total);
        prop_assert_eq!(frag.len(), mdat.start + mdat.size());
        assert_payloads(&frag, &trafs, &mdat, &runs);
    }
}

// ---- ffmpeg / ffprobe as the oracle ------------------------------------------------------

/// Whether ffmpeg and ffprobe can run. Absent tools skip loudly, except under CI.
fn have_ffmpeg(test: &str) -> bool {
    let ok = ["ffmpeg", "ffprobe"].iter().all(|t| Command::new(t).arg("-version").output().is_ok());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{test}: ffmpeg/ffprobe are not installed, and CI is set");
        eprintln!("!!! SKIPPED {test}: ffmpeg/ffprobe are not installed !!!");
    }
    ok
}

/// Runs ffmpeg with whitespace-separated `args` (none contains a space) writing `out`.
fn run_ffmpeg(args: &str, out: &Path) {
    let o = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args.split_whitespace())
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// `ffprobe -show_streams -count_frames` as JSON streams; asserts ffprobe printed no error.
fn ffprobe_streams(path: &Path) -> Vec<serde_json::Value> {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-count_frames", "-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && stderr.trim().is_empty(), "ffprobe: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["streams"].as_array().unwrap().clone()
}

/// A full decode with `ffmpeg -v error -i path -f null -` prints nothing.
fn assert_decodes_cleanly(path: &Path) {
    let o = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && stderr.trim().is_empty(), "ffmpeg decode: {stderr}");
}

fn stream<'a>(streams: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    streams
        .iter()
        .find(|s| s["codec_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stream: {streams:?}"))
}

/// FLV tags as (type, timestamp ms, body), from the 11-byte tag headers.
use crate::protocols::flv::tests::flv_tags;

struct VideoFrame {
    dts_ms: u32,
    cts_ms: i32,
    keyframe: bool,
    data: Bytes,
}

/// ffmpeg publishes (x264 defaults, so B-frames; AAC 48 kHz mono; 4 s), we re-mux its FLV
/// frames into init + 200 ms fragments, and ffprobe/ffmpeg judge the result.
#[test]
fn ffmpeg_reads_h264_aac_fragments() {
    if !have_ffmpeg("ffmpeg_reads_h264_aac_fragments") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("in.flv");
    run_ffmpeg(
        "-f lavfi -i testsrc2=size=320x240:rate=25 -f lavfi -i sine=frequency=440:sample_rate=48000 \
         -t 4 -c:v libx264 -g 50 -c:a aac -ar 48000 -ac 1 -f flv",
        &flv,
    );
    let (mut vcfg, mut acfg) = (None, None);
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    for (tag_type, ts, body) in flv_tags(&std::fs::read(&flv).unwrap()) {
        match tag_type {
            9 => match parse_video_tag(body).unwrap() {
                VideoTag::SequenceHeader(cfg) => vcfg = Some(cfg),
                VideoTag::Frame { keyframe, cts_ms, data, .. } => {
                    video.push(VideoFrame { dts_ms: ts, cts_ms, keyframe, data })
                }
                _ => {}
            },
            8 => match parse_audio_tag(body).unwrap() {
                AudioTag::SequenceHeader(cfg) => acfg = Some(cfg),
                AudioTag::Frame { data, .. } => audio.push(data),
                AudioTag::Ignored => {}
            },
            _ => {}
        }
    }
    let tracks = Tracks { video: vcfg, audio: acfg };
    let audio_cfg = tracks.audio.clone().unwrap();
    assert_eq!(audio_timescale(&audio_cfg), 48_000);
    assert_eq!(video.len(), 100);
    assert!(video.iter().any(|f| f.cts_ms != 0), "x264 defaults use B-frames");
    assert!(video[0].keyframe);

    // Video samples on the 90 kHz clock; each lasts until the next dts, the last as long as
    // the one before it.
    let vsamples: Vec<Sample> = video
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let duration = match video.get(i + 1) {
                Some(next) => (next.dts_ms - f.dts_ms) * 90,
                None => (f.dts_ms - video[i - 1].dts_ms) * 90,
            };
            Sample { duration, size: f.data.len() as u32, sync: f.keyframe, cts_offset: f.cts_ms * 90 }
        })
        .collect();
    let vdata: Vec<Bytes> = video.iter().map(|f| f.data.clone()).collect();
    let asamples: Vec<Sample> = audio
        .iter()
        .map(|d| Sample { duration: 1024, size: d.len() as u32, sync: true, cts_offset: 0 })
        .collect();

    let mut file = init_segment(&tracks).unwrap().to_vec();
    let (mut vi, mut ai, mut seq) = (0, 0, 1);
    while vi < video.len() || ai < audio.len() {
        let end_ms = u64::from(seq) * 200;
        let v_end = vi + video[vi..].iter().take_while(|f| u64::from(f.dts_ms) < end_ms).count();
        let a_end =
            ai + (ai..audio.len()).take_while(|i| (*i as u64) * 1024 * 1000 / 48_000 < end_ms).count();
        let runs = [
            TrackRun {
                track_id: VIDEO_TRACK_ID,
                base_media_decode_time: u64::from(video.get(vi).map_or(0, |f| f.dts_ms)) * 90,
                samples: &vsamples[vi..v_end],
                data: &vdata[vi..v_end],
            },
            TrackRun {
                track_id: AUDIO_TRACK_ID,
                base_media_decode_time: ai as u64 * 1024,
                samples: &asamples[ai..a_end],
                data: &audio[ai..a_end],
            },
        ];
        let frag = fragment(seq, &runs);
        let (got_seq, trafs, mdat) = read_fragment(&frag);
        assert_eq!(got_seq, seq);
        assert_payloads(&frag, &trafs, &mdat, &runs);
        file.extend_from_slice(&frag);
        (vi, ai, seq) = (v_end, a_end, seq + 1);
    }
    assert!(seq > 20, "{} fragments", seq - 1);

    let mp4 = dir.path().join("out.mp4");
    std::fs::write(&mp4, &file).unwrap();
    let streams = ffprobe_streams(&mp4);
    let v = stream(&streams, "video");
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64(), v["height"].as_u64()),
        (Some("h264"), Some(320), Some(240))
    );
    assert_eq!(v["nb_read_frames"].as_str(), Some(video.len().to_string().as_str()));
    let duration: f64 = v["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 4.0).abs() < 0.05, "video duration {duration}");
    let a = stream(&streams, "audio");
    assert_eq!((a["codec_name"].as_str(), a["sample_rate"].as_str()), (Some("aac"), Some("48000")));
    assert_eq!(a["channels"].as_u64(), Some(1));
    assert_eq!(a["nb_read_frames"].as_str(), Some(audio.len().to_string().as_str()));
    assert_decodes_cleanly(&mp4);
}

/// A real libx265 frame in our init + fragment decodes. ffmpeg 5.1 cannot put HEVC in FLV, so
/// the frame and its hvcC come from a one-frame MP4 (whose mdat is exactly that frame).
#[test]
fn ffmpeg_reads_hevc_fragment() {
    if !have_ffmpeg("ffmpeg_reads_hevc_fragment") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.mp4");
    run_ffmpeg(
        "-f lavfi -i testsrc2=size=320x240:rate=25 -frames:v 1 \
         -c:v libx265 -x265-params log-level=error -tag:v hvc1 -f mp4",
        &src,
    );
    let src = std::fs::read(&src).unwrap();
    let top = walk(&src, 0);
    let hvcc = find(&top, &[b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"hvc1", b"hvcC"]);
    let frame = Bytes::copy_from_slice(find(&top, &[b"mdat"]).body);
    let video = VideoConfig::from_hevc_record(Bytes::copy_from_slice(hvcc.body)).unwrap();

    let mut file = init_segment(&Tracks { video: Some(video), audio: None }).unwrap().to_vec();
    let samples = [Sample { duration: 3600, size: frame.len() as u32, sync: true, cts_offset: 0 }];
    let data = [frame];
    file.extend_from_slice(&fragment(
        1,
        &[TrackRun { track_id: VIDEO_TRACK_ID, base_media_decode_time: 0, samples: &samples, data: &data }],
    ));
    let mp4 = dir.path().join("out.mp4");
    std::fs::write(&mp4, &file).unwrap();
    let streams = ffprobe_streams(&mp4);
    let v = stream(&streams, "video");
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64(), v["height"].as_u64()),
        (Some("hevc"), Some(320), Some(240))
    );
    assert_eq!(v["codec_tag_string"].as_str(), Some("hvc1"));
    assert_eq!(v["nb_read_frames"].as_str(), Some("1"));
    assert_decodes_cleanly(&mp4);
}

/// The dOps converted from libopus's real OpusHead drives ffmpeg's Opus decoder: one second of
/// 20 ms CELT packets (TOC 0xfc: config 31 = CELT fullband 20 ms, stereo, one frame).
#[test]
fn ffmpeg_reads_opus_fragment() {
    if !have_ffmpeg("ffmpeg_reads_opus_fragment") {
        return;
    }
    let mut file = init_segment(&Tracks { video: None, audio: Some(opus_config()) }).unwrap().to_vec();
    let data = vec![Bytes::from_static(&[0xfc, 0xff, 0xfe]); 50];
    let samples = vec![Sample { duration: 960, size: 3, sync: true, cts_offset: 0 }; 50];
    file.extend_from_slice(&fragment(
        1,
        &[TrackRun { track_id: AUDIO_TRACK_ID, base_media_decode_time: 0, samples: &samples, data: &data }],
    ));
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("out.mp4");
    std::fs::write(&mp4, &file).unwrap();
    let streams = ffprobe_streams(&mp4);
    let a = stream(&streams, "audio");
    assert_eq!((a["codec_name"].as_str(), a["sample_rate"].as_str()), (Some("opus"), Some("48000")));
    assert_eq!(a["channels"].as_u64(), Some(2));
    assert_eq!(a["nb_read_frames"].as_str(), Some("50"));
    assert_decodes_cleanly(&mp4);
}
