//! CMAF fragmented-MP4 writer: an init segment (`ftyp` + `moov`) per track set, and a movie
//! fragment (`moof` + `mdat`) per LL-HLS part. Sans-IO: configs and samples in, `Bytes` out.
//!
//! Data flow: the HLS packager (and later the archive writer) reads frames from a rendition's
//! ring, cuts them into parts, and calls [`init_segment`] once per track set and [`fragment`]
//! once per part; the bytes go straight into the LL-HLS window or to disk.
//!
//! Specs: ISO/IEC 14496-12 (ISO BMFF) §8.8 movie fragments, §8.16.2 `tfdt`, §8.8.8 `trun`;
//! ISO/IEC 14496-15 for `avcC`/`hvcC` sample entries; AV1-ISOBMFF §2 for `av01`/`av1C`;
//! ISO/IEC 14496-14 §3 and 14496-1 §7.2.6 for `esds`; "Encapsulation of Opus in ISO Base Media
//! File Format" §4 for `Opus`/`dOps`; ISO/IEC 23000-19 (CMAF) for the brands and the fragment
//! shape (`tfhd` default-base-is-moof, `tfdt` in every `traf`).
//!
//! Invariants:
//! - Track ids are fixed: video is [`VIDEO_TRACK_ID`], audio [`AUDIO_TRACK_ID`], even when only
//!   one of them exists, so a rendition that gains or loses a track keeps its ids.
//! - Every box size is written by the builder after its body (reserve 4 bytes, patch at the end),
//!   so a size can never disagree with its contents; tests walk every box to hold us to it.
//! - [`fragment`] allocates once (exact capacity, computed up front) and copies each sample's
//!   bytes once; `trun.data_offset` points at the run's first byte inside `mdat`.
//! - Configuration records are written verbatim; only Opus is converted (OpusHead is
//!   little-endian, `dOps` big-endian).

pub mod cmaf;

use bytes::{BufMut, Bytes, BytesMut};

pub use cmaf::CmafMuxer;

use crate::media::{AudioCodec, AudioConfig, Tracks, VideoCodec, VideoConfig};

pub const VIDEO_TRACK_ID: u32 = 1;
pub const AUDIO_TRACK_ID: u32 = 2;
/// Video track timescale: 90 kHz, the MPEG-TS/RTP clock, so FLV milliseconds map exactly (× 90).
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Movie timescale (`mvhd`): only the (zero) movie duration uses it.
const MOVIE_TIMESCALE: u32 = 1000;

/// A configuration record larger than this is refused. No real avcC/hvcC/av1C/ASC/OpusHead
/// comes near it; the bound keeps every box size and `esds` descriptor length (28 bits) in range.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// `trun` sample flags (ISO/IEC 14496-12 §8.8.3.1): a sync sample depends on no other
/// (sample_depends_on = 2); any other sample depends on others (sample_depends_on = 1) and is
/// not a sync sample (sample_is_non_sync_sample = 1).
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;

/// `tfhd` flags: default-base-is-moof, required by CMAF; no other defaults, `trun` says it all.
const TFHD_DEFAULT_BASE_IS_MOOF: u32 = 0x02_0000;
/// `trun` flags: data-offset | sample-duration | sample-size | sample-flags |
/// sample-composition-time-offsets.
const TRUN_FLAGS: u32 = 0x0001 | 0x0100 | 0x0200 | 0x0400 | 0x0800;

/// Box sizes of a fragment, for the up-front capacity and `data_offset` computation.
const BOX_HEADER: usize = 8;
const FULL_BOX_HEADER: usize = 12;
const MFHD_SIZE: usize = FULL_BOX_HEADER + 4;
const TFHD_SIZE: usize = FULL_BOX_HEADER + 4;
const TFDT_SIZE: usize = FULL_BOX_HEADER + 8;
/// `trun` without entries: header, sample_count, data_offset.
const TRUN_FIXED_SIZE: usize = FULL_BOX_HEADER + 4 + 4;
/// Per sample: duration, size, flags, composition offset.
const TRUN_ENTRY_SIZE: usize = 16;
const TRAF_FIXED_SIZE: usize = BOX_HEADER + TFHD_SIZE + TFDT_SIZE + TRUN_FIXED_SIZE;

/// The init segment for `tracks` cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("init segment: the track set has neither a video nor an audio track")]
    NoTracks,
    #[error("track {track_id}: {record} is {len} bytes, over the {MAX_RECORD_BYTES}-byte limit")]
    RecordTooLarge { track_id: u32, record: &'static str, len: usize },
    #[error("track {track_id}: timescale 0 (audio sample rate is 0)")]
    ZeroTimescale { track_id: u32 },
    #[error("audio track: OpusHead {field} at byte {offset}: {reason}")]
    OpusHead { offset: usize, field: &'static str, reason: String },
}

/// One sample (frame) of a [`TrackRun`], in its track's timescale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Decode duration: the next sample's decode time minus this one's.
    pub duration: u32,
    /// Payload bytes; must equal the length of the matching entry of [`TrackRun::data`].
    pub size: u32,
    /// A sync sample (IDR/IRAP video frame; every audio frame).
    pub sync: bool,
    /// Composition time offset: pts − dts (signed: `trun` version 1).
    pub cts_offset: i32,
}

/// The samples of one track in one fragment.
#[derive(Clone, Copy, Debug)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale (`tfdt`).
    pub base_media_decode_time: u64,
    pub samples: &'a [Sample],
    /// One payload per sample, in order.
    pub data: &'a [Bytes],
}

/// Audio track timescale: the sample rate (48000 for Opus, whose `AudioConfig` always says so).
/// For HE-AAC with explicit SBR signalling it is the core rate, so an AAC frame still lasts 1024.
pub fn audio_timescale(cfg: &AudioConfig) -> u32 {
    cfg.sample_rate
}

/// `ftyp` + `moov` for the track set: video as track 1 if present, audio as track 2 if present,
/// with `mvex`/`trex` per track so players expect movie fragments.
pub fn init_segment(tracks: &Tracks) -> Result<Bytes, Fmp4Error> {
    // Everything fallible happens before the first byte is written.
    let video = tracks.video.as_ref().map(video_entry).transpose()?;
    let audio = tracks.audio.as_ref().map(audio_entry).transpose()?;
    let track_count = usize::from(video.is_some()) + usize::from(audio.is_some());
    if track_count == 0 {
        return Err(Fmp4Error::NoTracks);
    }
    let entries_len = video.as_ref().map_or(0, |e| e.len()) + audio.as_ref().map_or(0, |e| e.len());
    let mut b = BytesMut::with_capacity(1024 + entries_len);

    // Brands: iso6 (tfdt v1, default-base-is-moof); cmfc claims CMAF conformance, and a CMAF
    // header describes exactly one track, so it is only claimed for single-track segments.
    let mut brands: Vec<&[u8; 4]> = vec![b"iso6"];
    if track_count == 1 {
        brands.push(b"cmfc");
    }
    brands.extend([b"isom", b"mp41"]);
    put_box(&mut b, b"ftyp", |b| {
        b.put_slice(b"iso6");
        b.put_u32(0); // minor version
        for brand in brands {
            b.put_slice(brand);
        }
    });

    put_box(&mut b, b"moov", |b| {
        put_full_box(b, b"mvhd", 0, 0, |b| {
            b.put_u32(0); // creation_time
            b.put_u32(0); // modification_time
            b.put_u32(MOVIE_TIMESCALE);
            b.put_u32(0); // duration: unknown (live)
            b.put_u32(0x0001_0000); // rate 1.0
            b.put_u16(0x0100); // volume 1.0
            b.put_bytes(0, 2 + 8); // reserved
            put_unity_matrix(b);
            b.put_bytes(0, 6 * 4); // pre_defined
            b.put_u32(AUDIO_TRACK_ID + 1); // next_track_ID
        });
        if let (Some(cfg), Some(entry)) = (&tracks.video, &video) {
            let (w, h) = (clamp_u16(cfg.width), clamp_u16(cfg.height));
            let track = TrakInfo {
                track_id: VIDEO_TRACK_ID,
                timescale: VIDEO_TIMESCALE,
                handler: b"vide",
                handler_name: b"VideoHandler\0",
                width: w,
                height: h,
                volume: 0,
            };
            put_trak(b, &track, entry);
        }
        if let (Some(cfg), Some(entry)) = (&tracks.audio, &audio) {
            let track = TrakInfo {
                track_id: AUDIO_TRACK_ID,
                timescale: audio_timescale(cfg),
                handler: b"soun",
                handler_name: b"SoundHandler\0",
                width: 0,
                height: 0,
                volume: 0x0100,
            };
            put_trak(b, &track, entry);
        }
        put_box(b, b"mvex", |b| {
            for (present, track_id) in [(video.is_some(), VIDEO_TRACK_ID), (audio.is_some(), AUDIO_TRACK_ID)]
            {
                if present {
                    put_full_box(b, b"trex", 0, 0, |b| {
                        b.put_u32(track_id);
                        b.put_u32(1); // default_sample_description_index
                        b.put_u32(0); // default_sample_duration
                        b.put_u32(0); // default_sample_size
                        b.put_u32(0); // default_sample_flags
                    });
                }
            }
        });
    });
    Ok(b.freeze())
}

/// One movie fragment: `moof` (`mfhd` with `sequence_number`; per non-empty run a `traf` with
/// `tfhd` default-base-is-moof, `tfdt` v1 and `trun` v1 with data offset and per-sample
/// duration, size, flags and composition offset) and one `mdat` with every run's samples in
/// order.
///
/// # Panics
/// If a run's `data` and `samples` differ in length, or a payload's length differs from its
/// `Sample::size`: the `trun` would describe bytes the `mdat` does not hold, a caller bug that
/// must not reach a player.
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Bytes {
    let mut moof_size = BOX_HEADER + MFHD_SIZE;
    let mut mdat_payload = 0usize;
    for run in runs {
        assert_eq!(run.samples.len(), run.data.len(), "track {}: one payload per sample", run.track_id);
        if !run.samples.is_empty() {
            moof_size += TRAF_FIXED_SIZE + TRUN_ENTRY_SIZE * run.samples.len();
        }
        for (i, (s, d)) in run.samples.iter().zip(run.data).enumerate() {
            assert_eq!(
                s.size as usize,
                d.len(),
                "track {}: sample {i} size disagrees with its payload",
                run.track_id
            );
            mdat_payload += d.len();
        }
    }
    // ISO/IEC 14496-12 §4.2: a box over 4 GiB uses size 1 and a 64-bit largesize.
    let mdat_header = if BOX_HEADER + mdat_payload > u32::MAX as usize { 16 } else { BOX_HEADER };
    let mut b = BytesMut::with_capacity(moof_size + mdat_header + mdat_payload);

    put_box(&mut b, b"moof", |b| {
        put_full_box(b, b"mfhd", 0, 0, |b| b.put_u32(sequence_number));
        // Offset of the current run's first byte from the start of the moof.
        let mut data_offset = moof_size + mdat_header;
        for run in runs.iter().filter(|r| !r.samples.is_empty()) {
            put_box(b, b"traf", |b| {
                put_full_box(b, b"tfhd", 0, TFHD_DEFAULT_BASE_IS_MOOF, |b| b.put_u32(run.track_id));
                put_full_box(b, b"tfdt", 1, 0, |b| b.put_u64(run.base_media_decode_time));
                put_full_box(b, b"trun", 1, TRUN_FLAGS, |b| {
                    b.put_u32(
                        u32::try_from(run.samples.len()).expect("under 4 GiB of moof, so under 2^32 samples"),
                    );
                    b.put_i32(
                        i32::try_from(data_offset).expect("runs whose data starts past 2 GiB do not exist"),
                    );
                    for s in run.samples {
                        b.put_u32(s.duration);
                        b.put_u32(s.size);
                        b.put_u32(if s.sync { SYNC_SAMPLE_FLAGS } else { NON_SYNC_SAMPLE_FLAGS });
                        b.put_i32(s.cts_offset);
                    }
                });
            });
            data_offset += run.data.iter().map(Bytes::len).sum::<usize>();
        }
    });
    debug_assert_eq!(b.len(), moof_size, "precomputed moof size");

    if mdat_header == BOX_HEADER {
        b.put_u32((BOX_HEADER + mdat_payload) as u32);
        b.put_slice(b"mdat");
    } else {
        b.put_u32(1);
        b.put_slice(b"mdat");
        b.put_u64((mdat_header + mdat_payload) as u64);
    }
    for run in runs {
        for d in run.data {
            b.put_slice(d);
        }
    }
    b.freeze()
}

/// Converts an Opus ID header (`OpusHead`, RFC 7845 §5.1, little-endian) into the body of an
/// `OpusSpecificBox` (`dOps`, Opus-in-ISOBMFF §4.3.2, big-endian, Version 0).
pub fn dops_from_opus_head(head: &[u8]) -> Result<Bytes, Fmp4Error> {
    let err = |offset, field, reason: String| Fmp4Error::OpusHead { offset, field, reason };
    if head.len() < 19 {
        return Err(err(head.len(), "header", format!("{} bytes, need at least 19", head.len())));
    }
    if &head[..8] != b"OpusHead" {
        return Err(err(0, "magic", format!("{:02x?}, expected \"OpusHead\"", &head[..8])));
    }
    if head[8] >> 4 != 0 {
        return Err(err(8, "version", format!("{} (major version must be 0)", head[8])));
    }
    let channels = head[9];
    let family = head[18];
    let table_len = if family == 0 {
        // RFC 7845 §5.1.1.1: family 0 is mono or stereo only.
        if !(1..=2).contains(&channels) {
            return Err(err(9, "output channel count", format!("{channels} with mapping family 0")));
        }
        0
    } else {
        2 + usize::from(channels)
    };
    if head.len() < 19 + table_len {
        return Err(err(
            19,
            "channel mapping table",
            format!("need {table_len} bytes, have {}", head.len() - 19),
        ));
    }
    let mut b = BytesMut::with_capacity(11 + table_len);
    b.put_u8(0); // Version
    b.put_u8(channels); // OutputChannelCount
    b.put_u16(u16::from_le_bytes([head[10], head[11]])); // PreSkip
    b.put_u32(u32::from_le_bytes([head[12], head[13], head[14], head[15]])); // InputSampleRate
    b.put_i16(i16::from_le_bytes([head[16], head[17]])); // OutputGain
    b.put_u8(family); // ChannelMappingFamily
                      // StreamCount, CoupledCount, ChannelMapping[OutputChannelCount]: single bytes, in the
                      // same order in both.
    b.put_slice(&head[19..19 + table_len]);
    Ok(b.freeze())
}

/// What differs between the video and the audio `trak`.
struct TrakInfo {
    track_id: u32,
    timescale: u32,
    handler: &'static [u8; 4],
    handler_name: &'static [u8],
    width: u16,
    height: u16,
    volume: u16,
}

fn put_trak(b: &mut BytesMut, t: &TrakInfo, sample_entry: &[u8]) {
    put_box(b, b"trak", |b| {
        // flags: track_enabled | track_in_movie.
        put_full_box(b, b"tkhd", 0, 0x000003, |b| {
            b.put_u32(0); // creation_time
            b.put_u32(0); // modification_time
            b.put_u32(t.track_id);
            b.put_u32(0); // reserved
            b.put_u32(0); // duration
            b.put_bytes(0, 8); // reserved
            b.put_u16(0); // layer
            b.put_u16(0); // alternate_group
            b.put_u16(t.volume);
            b.put_u16(0); // reserved
            put_unity_matrix(b);
            b.put_u32(u32::from(t.width) << 16); // 16.16 fixed point
            b.put_u32(u32::from(t.height) << 16);
        });
        put_box(b, b"mdia", |b| {
            put_full_box(b, b"mdhd", 0, 0, |b| {
                b.put_u32(0); // creation_time
                b.put_u32(0); // modification_time
                b.put_u32(t.timescale);
                b.put_u32(0); // duration
                b.put_u16(LANGUAGE_UND);
                b.put_u16(0); // pre_defined
            });
            put_full_box(b, b"hdlr", 0, 0, |b| {
                b.put_u32(0); // pre_defined
                b.put_slice(t.handler);
                b.put_bytes(0, 12); // reserved
                b.put_slice(t.handler_name);
            });
            put_box(b, b"minf", |b| {
                if t.handler == b"vide" {
                    // flags 1 is mandated by §12.1.2.
                    put_full_box(b, b"vmhd", 0, 1, |b| b.put_bytes(0, 2 + 6)); // graphicsmode, opcolor
                } else {
                    put_full_box(b, b"smhd", 0, 0, |b| b.put_u32(0)); // balance, reserved
                }
                put_box(b, b"dinf", |b| {
                    put_full_box(b, b"dref", 0, 0, |b| {
                        b.put_u32(1); // entry_count
                        put_full_box(b, b"url ", 0, 1, |_| {}); // flags 1: media is in this file
                    });
                });
                put_box(b, b"stbl", |b| {
                    put_full_box(b, b"stsd", 0, 0, |b| {
                        b.put_u32(1); // entry_count
                        b.put_slice(sample_entry);
                    });
                    // Empty sample tables: every sample is in a movie fragment.
                    put_full_box(b, b"stts", 0, 0, |b| b.put_u32(0));
                    put_full_box(b, b"stsc", 0, 0, |b| b.put_u32(0));
                    put_full_box(b, b"stsz", 0, 0, |b| b.put_bytes(0, 8)); // sample_size, sample_count
                    put_full_box(b, b"stco", 0, 0, |b| b.put_u32(0));
                });
            });
        });
    });
}

/// ISO 639-2/T "und", packed as three 5-bit letters (each minus 0x60).
const LANGUAGE_UND: u16 =
    (((b'u' - 0x60) as u16) << 10) | (((b'n' - 0x60) as u16) << 5) | (b'd' - 0x60) as u16;

fn check_record(track_id: u32, record: &'static str, len: usize) -> Result<(), Fmp4Error> {
    if len > MAX_RECORD_BYTES {
        return Err(Fmp4Error::RecordTooLarge { track_id, record, len });
    }
    Ok(())
}

/// The video sample entry (`avc1`/`hvc1`/`av01` with its configuration box), as bytes.
fn video_entry(cfg: &VideoConfig) -> Result<BytesMut, Fmp4Error> {
    let (entry, config_box): (&[u8; 4], &[u8; 4]) = match cfg.codec {
        VideoCodec::H264 => (b"avc1", b"avcC"),
        // hvc1 (parameter sets only in hvcC, never in band) is what Safari/HLS require.
        VideoCodec::H265 => (b"hvc1", b"hvcC"),
        VideoCodec::Av1 => (b"av01", b"av1C"),
    };
    check_record(VIDEO_TRACK_ID, "video configuration record", cfg.record.len())?;
    let mut b = BytesMut::with_capacity(128 + cfg.record.len());
    put_box(&mut b, entry, |b| {
        b.put_bytes(0, 6); // reserved
        b.put_u16(1); // data_reference_index
        b.put_u16(0); // pre_defined
        b.put_u16(0); // reserved
        b.put_bytes(0, 12); // pre_defined
        b.put_u16(clamp_u16(cfg.width));
        b.put_u16(clamp_u16(cfg.height));
        b.put_u32(0x0048_0000); // horizresolution 72 dpi
        b.put_u32(0x0048_0000); // vertresolution 72 dpi
        b.put_u32(0); // reserved
        b.put_u16(1); // frame_count
        b.put_bytes(0, 32); // compressorname: empty Pascal string
        b.put_u16(0x0018); // depth
        b.put_i16(-1); // pre_defined
        put_box(b, config_box, |b| b.put_slice(&cfg.record));
    });
    Ok(b)
}

/// The audio sample entry (`mp4a` + `esds`, or `Opus` + `dOps`), as bytes.
fn audio_entry(cfg: &AudioConfig) -> Result<BytesMut, Fmp4Error> {
    let timescale = audio_timescale(cfg);
    if timescale == 0 {
        return Err(Fmp4Error::ZeroTimescale { track_id: AUDIO_TRACK_ID });
    }
    let (entry, channels, config_box): (&[u8; 4], u16, BytesMut) = match cfg.codec {
        AudioCodec::Aac => {
            check_record(AUDIO_TRACK_ID, "AudioSpecificConfig", cfg.config.len())?;
            // channelConfiguration 0 (layout in a PCE): 2 is the §12.2.3 default.
            let channels = if cfg.channels == 0 { 2 } else { u16::from(cfg.channels) };
            (b"mp4a", channels, esds(&cfg.config))
        }
        AudioCodec::Opus => {
            check_record(AUDIO_TRACK_ID, "OpusHead", cfg.config.len())?;
            let dops = dops_from_opus_head(&cfg.config)?;
            // Opus-in-ISOBMFF §4.3.1: channelcount is the OutputChannelCount.
            let channels = u16::from(dops[1]);
            let mut b = BytesMut::with_capacity(BOX_HEADER + dops.len());
            put_box(&mut b, b"dOps", |b| b.put_slice(&dops));
            (b"Opus", channels, b)
        }
    };
    let mut b = BytesMut::with_capacity(64 + config_box.len());
    put_box(&mut b, entry, |b| {
        b.put_bytes(0, 6); // reserved
        b.put_u16(1); // data_reference_index
        b.put_bytes(0, 8); // reserved
        b.put_u16(channels);
        b.put_u16(16); // samplesize
        b.put_u16(0); // pre_defined
        b.put_u16(0); // reserved
                      // 16.16 fixed point; a rate above 65535 Hz does not fit, and decoders then take the
                      // rate from the decoder configuration, so write 0 rather than a truncated value.
        b.put_u32(if timescale <= 0xffff { timescale << 16 } else { 0 });
        b.put_slice(&config_box);
    });
    Ok(b)
}

/// `esds` (ISO/IEC 14496-14 §3.1.2): an ES_Descriptor holding a DecoderConfigDescriptor
/// (objectTypeIndication 0x40 = MPEG-4 Audio, streamType 5 = audio) whose DecoderSpecificInfo
/// is the AudioSpecificConfig, and an SLConfigDescriptor (predefined 2, as MP4 files require).
/// Descriptor lengths use the 4-byte expandable form, as ffmpeg's mov muxer writes them.
fn esds(asc: &[u8]) -> BytesMut {
    const DESCRIPTOR_HEADER: usize = 5;
    let dsi_len = asc.len();
    let dcd_len = 13 + DESCRIPTOR_HEADER + dsi_len;
    let sl_len = 1;
    let es_len = 3 + DESCRIPTOR_HEADER + dcd_len + DESCRIPTOR_HEADER + sl_len;
    let mut b = BytesMut::with_capacity(FULL_BOX_HEADER + DESCRIPTOR_HEADER + es_len);
    put_full_box(&mut b, b"esds", 0, 0, |b| {
        put_descriptor_header(b, 0x03, es_len); // ES_DescrTag
        b.put_u16(0); // ES_ID: 0 in files (14496-14 §3.1.2)
        b.put_u8(0); // no stream dependence, no URL, no OCR stream, priority 0
        put_descriptor_header(b, 0x04, dcd_len); // DecoderConfigDescrTag
        b.put_u8(0x40); // objectTypeIndication: Audio ISO/IEC 14496-3
        b.put_u8(0x05 << 2 | 0x01); // streamType audio, upStream 0, reserved 1
        b.put_uint(0, 3); // bufferSizeDB: unknown
        b.put_u32(0); // maxBitrate: unknown
        b.put_u32(0); // avgBitrate: unknown (variable)
        put_descriptor_header(b, 0x05, dsi_len); // DecSpecificInfoTag
        b.put_slice(asc);
        put_descriptor_header(b, 0x06, sl_len); // SLConfigDescrTag
        b.put_u8(0x02); // predefined: reserved for use in MP4 files
    });
    b
}

/// Tag + 4-byte expandable length (ISO/IEC 14496-1 §8.3.3). `len` < 2^28 is guaranteed by
/// [`MAX_RECORD_BYTES`].
fn put_descriptor_header(b: &mut BytesMut, tag: u8, len: usize) {
    debug_assert!(len < 1 << 28);
    b.put_u8(tag);
    b.put_u8(0x80 | (len >> 21 & 0x7f) as u8);
    b.put_u8(0x80 | (len >> 14 & 0x7f) as u8);
    b.put_u8(0x80 | (len >> 7 & 0x7f) as u8);
    b.put_u8((len & 0x7f) as u8);
}

/// Writes a box: reserves the size, writes the type and the body, then patches the size.
fn put_box(b: &mut BytesMut, fourcc: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = b.len();
    b.put_u32(0);
    b.put_slice(fourcc);
    body(b);
    let size = u32::try_from(b.len() - start).expect("only mdat can exceed 4 GiB, and it is written apart");
    b[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Writes a full box (ISO/IEC 14496-12 §4.2): a box whose body starts with version and flags.
fn put_full_box(
    b: &mut BytesMut,
    fourcc: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut BytesMut),
) {
    put_box(b, fourcc, |b| {
        b.put_u32(u32::from(version) << 24 | (flags & 0x00ff_ffff));
        body(b);
    });
}

/// The identity transformation matrix of `mvhd`/`tkhd` (16.16 and 2.30 fixed point).
fn put_unity_matrix(b: &mut BytesMut) {
    for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000u32] {
        b.put_u32(v);
    }
}

/// Picture sizes above 65535 do not fit the 16-bit sample entry fields (or 16.16 `tkhd`).
fn clamp_u16(v: u32) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// (type, body) of each box in `b`, stopping at the first that does not fit.
fn boxes(mut b: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = b.get(4..8)?.try_into().ok()?;
        if size < 8 || size > b.len() {
            return None;
        }
        let body = &b[8..size];
        b = &b[size..];
        Some((kind, body))
    })
}

/// The `traf` of track `track_id` in the first `moof` of `fragment`.
fn traf_of(fragment: &[u8], track_id: u32) -> Option<&[u8]> {
    let (_, moof) = boxes(fragment).find(|(k, _)| k == b"moof")?;
    boxes(moof).filter(|(k, _)| k == b"traf").map(|(_, t)| t).find(|traf| {
        boxes(traf)
            .find(|(k, _)| k == b"tfhd")
            .and_then(|(_, tfhd)| tfhd.get(4..8))
            .is_some_and(|id| u32::from_be_bytes(id.try_into().unwrap_or_default()) == track_id)
    })
}

/// The base media decode time (`tfdt`) of track `track_id` in the first `moof` of `fragment`
/// (ISO/IEC 14496-12 §8.8.12), in that track's timescale. `None` when the bytes hold no such
/// box (or are not a fragment). Reads only box headers: a recorded segment's timeline for DASH.
pub fn first_decode_time(fragment: &[u8], track_id: u32) -> Option<u64> {
    let tfdt = boxes(traf_of(fragment, track_id)?).find(|(k, _)| k == b"tfdt")?.1;
    match tfdt.first()? {
        1 => Some(u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?)),
        _ => Some(u64::from(u32::from_be_bytes(tfdt.get(4..8)?.try_into().ok()?))),
    }
}

/// The composition time offset of the first sample of track `track_id` in the first `moof` of
/// `fragment` (its `trun`, §8.8.8): how much later than it is decoded the first frame is shown
/// (B-frames). 0 when the run has no offsets; `None` without such a run.
pub fn first_composition_offset(fragment: &[u8], track_id: u32) -> Option<i64> {
    let trun = boxes(traf_of(fragment, track_id)?).find(|(k, _)| k == b"trun")?.1;
    let version = *trun.first()?;
    let flags = u32::from_be_bytes([0, *trun.get(1)?, *trun.get(2)?, *trun.get(3)?]);
    if flags & 0x800 == 0 {
        return Some(0);
    }
    // version+flags, sample_count, then the optional data offset and first sample flags, then
    // the first sample's optional duration, size and flags before its offset.
    let mut at = 8;
    for (flag, len) in [(0x1, 4), (0x4, 4), (0x100, 4), (0x200, 4), (0x400, 4)] {
        if flags & flag != 0 {
            at += len;
        }
    }
    let raw: [u8; 4] = trun.get(at..at + 4)?.try_into().ok()?;
    Some(if version == 0 { i64::from(u32::from_be_bytes(raw)) } else { i64::from(i32::from_be_bytes(raw)) })
}

#[cfg(test)]
mod tests;
