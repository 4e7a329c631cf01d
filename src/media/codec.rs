//! Codec configurations: what a decoder needs before the first frame, in codec-neutral form.
//!
//! Filled from the FLV sequence headers (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 §5.3.3;
//! HEVCDecoderConfigurationRecord, §8.3.3; AV1CodecConfigurationRecord, AV1-ISOBMFF §2.3;
//! AudioSpecificConfig, ISO/IEC 14496-3 §1.6.2.1; the Opus ID header, RFC 7845 §5.1). Later from
//! SDP (WHIP, RTSP) and MPEG-TS.
//!
//! The constructors (`VideoConfig::from_avc_record`, ...) are pure: bytes in, a config or a
//! [`CodecError`] naming the record and the byte offset out. Every read is bounds-checked, so
//! arbitrary bytes never panic (a property test holds us to it). The record is kept verbatim;
//! parsing only derives what HLS and the API need (picture size, RFC 6381 codec string).
//!
//! Picture size comes from the parameter sets in the record (see `codec/params.rs`). A record
//! whose parameter set we cannot parse is still accepted, with width = height = 0 and a warning:
//! the size is informational (HLS `RESOLUTION`), and refusing a stream that decoders play is the
//! worse failure. A record whose own structure is broken is refused.

use std::fmt::Write as _;

use bytes::Bytes;

pub(crate) mod bits;
mod params;

use bits::{BitReader, ByteReader};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
    Av1,
}

impl VideoCodec {
    /// Whether a NAL unit whose first header byte is `header` makes its access unit a random
    /// access point: an IDR slice (H.264 type 5), any IRAP picture (H.265 types 16-23: BLA, IDR,
    /// CRA; x265 and many cameras send CRA with closed GOPs). Always false for AV1.
    pub fn is_random_access_nal(self, header: u8) -> bool {
        match self {
            VideoCodec::H264 => header & 0x1f == 5,
            VideoCodec::H265 => (16..=23).contains(&((header >> 1) & 0x3f)),
            VideoCodec::Av1 => false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Opus,
}

/// A video track's decoder configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// The ISO BMFF configuration record as received (`avcC`, `hvcC` or `av1C` body): RTMP play
    /// and the fMP4 init segment write it back verbatim.
    pub record: Bytes,
    /// Coded picture size from the SPS (0 when the record carries no parsable SPS).
    pub width: u32,
    pub height: u32,
    /// RFC 6381 codec string for HLS `CODECS` (e.g. `avc1.64001f`).
    pub codec_string: String,
}

/// An audio track's decoder configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioConfig {
    pub codec: AudioCodec,
    /// AudioSpecificConfig for AAC; the `dOps`-equivalent header for Opus.
    pub config: Bytes,
    pub sample_rate: u32,
    pub channels: u8,
    /// RFC 6381 codec string (e.g. `mp4a.40.2`).
    pub codec_string: String,
}

/// The track set of one rendition: at most one video and one audio track.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracks {
    pub video: Option<VideoConfig>,
    pub audio: Option<AudioConfig>,
}

/// A configuration record that cannot be used. Every variant names the record and where in it
/// the fault is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{record}: truncated at byte {offset}: need {needed} bytes, have {have}")]
    Truncated { record: &'static str, offset: usize, needed: usize, have: usize },
    #[error("{record}: bitstream ends at bit {bit_offset} (byte {})", .bit_offset / 8)]
    BitstreamEnd { record: &'static str, bit_offset: usize },
    #[error("{record}: unsupported version {version} at byte 0 (expected {expected})")]
    UnsupportedVersion { record: &'static str, version: u8, expected: u8 },
    #[error("{record}: invalid {field} at byte {offset}: {reason}")]
    Invalid { record: &'static str, offset: usize, field: &'static str, reason: String },
}

impl VideoConfig {
    /// Parses an AVCDecoderConfigurationRecord (`avcC`, ISO/IEC 14496-15 §5.3.3.1).
    pub fn from_avc_record(record: Bytes) -> Result<VideoConfig, CodecError> {
        const RECORD: &str = "avcC";
        let mut r = ByteReader::new(&record, RECORD);
        let version = r.u8()?;
        if version != 1 {
            return Err(CodecError::UnsupportedVersion { record: RECORD, version, expected: 1 });
        }
        let profile = r.u8()?;
        let compat = r.u8()?;
        let level = r.u8()?;
        r.u8()?; // reserved(6) lengthSizeMinusOne(2): any length size is fine for a pass-through
        let num_sps = r.u8()? & 0x1f;
        let mut first_sps = None;
        for _ in 0..num_sps {
            let len = usize::from(r.u16()?);
            let sps = r.take(len)?;
            first_sps.get_or_insert(sps);
        }
        let num_pps = r.u8()?;
        for _ in 0..num_pps {
            let len = usize::from(r.u16()?);
            r.take(len)?;
        }
        // High-profile trailing fields (chroma format, bit depth, SPS ext) are not needed.
        let (width, height) = picture_size(RECORD, first_sps.map(params::h264_sps_size));
        Ok(VideoConfig {
            codec: VideoCodec::H264,
            codec_string: format!("avc1.{profile:02x}{compat:02x}{level:02x}"),
            width,
            height,
            record,
        })
    }

    /// Parses an HEVCDecoderConfigurationRecord (`hvcC`, ISO/IEC 14496-15 §8.3.3.1). The codec
    /// string follows ISO/IEC 14496-15 Annex E (`hvc1.1.6.L93.B0`); the size comes from the
    /// first SPS (NAL type 33) in the arrays.
    pub fn from_hevc_record(record: Bytes) -> Result<VideoConfig, CodecError> {
        const RECORD: &str = "hvcC";
        let mut r = ByteReader::new(&record, RECORD);
        let version = r.u8()?;
        if version != 1 {
            return Err(CodecError::UnsupportedVersion { record: RECORD, version, expected: 1 });
        }
        let ptl = r.u8()?;
        let compat = r.u32()?;
        let constraints = r.take(6)?;
        let level = r.u8()?;
        r.take(9)?; // min_spatial_segmentation_idc .. lengthSizeMinusOne (bytes 13-21)
        let num_arrays = r.u8()?;
        let mut first_sps = None;
        for _ in 0..num_arrays {
            let nal_type = r.u8()? & 0x3f;
            let num_nalus = r.u16()?;
            for _ in 0..num_nalus {
                let len = usize::from(r.u16()?);
                let nal = r.take(len)?;
                if nal_type == 33 {
                    first_sps.get_or_insert(nal);
                }
            }
        }

        // Annex E.3: profile space as a letter prefix, the compatibility flags bit-reversed in
        // hex, tier letter + level, then the constraint bytes with trailing zero bytes omitted.
        let space = ["", "A", "B", "C"][usize::from(ptl >> 6)];
        let tier = if ptl & 0x20 != 0 { 'H' } else { 'L' };
        let mut codec_string =
            format!("hvc1.{space}{}.{:x}.{tier}{level}", ptl & 0x1f, compat.reverse_bits());
        let used = constraints.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        for b in &constraints[..used] {
            write!(codec_string, ".{b:X}").expect("writing to a String cannot fail");
        }
        let (width, height) = picture_size(RECORD, first_sps.map(params::h265_sps_size));
        Ok(VideoConfig { codec: VideoCodec::H265, codec_string, width, height, record })
    }

    /// Parses an AV1CodecConfigurationRecord (`av1C`, AV1-ISOBMFF §2.3.3). The codec string is
    /// `av01.P.LLT.DD` (AV1-ISOBMFF Annex A); the size comes from a sequence header OBU in
    /// `configOBUs` when present (it is optional, so 0 otherwise).
    pub fn from_av1_record(record: Bytes) -> Result<VideoConfig, CodecError> {
        const RECORD: &str = "av1C";
        let mut r = ByteReader::new(&record, RECORD);
        let b0 = r.u8()?;
        if b0 & 0x80 == 0 {
            return Err(CodecError::Invalid {
                record: RECORD,
                offset: 0,
                field: "marker",
                reason: format!("byte 0x{b0:02x} has the marker bit clear"),
            });
        }
        if b0 & 0x7f != 1 {
            return Err(CodecError::UnsupportedVersion { record: RECORD, version: b0 & 0x7f, expected: 1 });
        }
        let b1 = r.u8()?;
        let b2 = r.u8()?;
        r.u8()?; // initial_presentation_delay
        let profile = b1 >> 5;
        let level = b1 & 0x1f;
        let tier = if b2 & 0x80 != 0 { 'H' } else { 'M' };
        let high_bitdepth = b2 & 0x40 != 0;
        let twelve_bit = b2 & 0x20 != 0;
        let depth = match (profile, high_bitdepth, twelve_bit) {
            (2, true, true) => 12,
            (_, true, _) => 10,
            _ => 8,
        };
        let size = params::av1_config_obus_size(r.rest()).transpose();
        let (width, height) = picture_size(RECORD, size);
        Ok(VideoConfig {
            codec: VideoCodec::Av1,
            codec_string: format!("av01.{profile}.{level:02}{tier}.{depth:02}"),
            width,
            height,
            record,
        })
    }
}

/// The picture size, or 0x0 when the parameter set is absent or unparsable (see the module docs).
fn picture_size(record: &'static str, size: Option<Result<params::PictureSize, CodecError>>) -> (u32, u32) {
    match size {
        Some(Ok(s)) => (s.width, s.height),
        Some(Err(e)) => {
            tracing::warn!(record, error = %e, "cannot read picture size from parameter set; reporting 0x0");
            (0, 0)
        }
        None => (0, 0),
    }
}

/// AAC sampling frequencies by `samplingFrequencyIndex` (ISO/IEC 14496-3 Table 1.18).
const AAC_SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

impl AudioConfig {
    /// Parses an AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1). `sample_rate` is the core
    /// sampling frequency the ASC states (for HE-AAC with explicit SBR signalling, half the
    /// output rate); `channels` is 0 for channelConfiguration 0 (layout in a PCE).
    pub fn from_aac_asc(asc: Bytes) -> Result<AudioConfig, CodecError> {
        let mut r = BitReader::new(&asc, "AudioSpecificConfig");
        let mut aot = r.bits(5)?;
        if aot == 31 {
            aot = 32 + r.bits(6)?; // audioObjectTypeExt
        }
        if aot == 0 {
            return Err(r.invalid("audioObjectType", "0 (null object)".into()));
        }
        let index = r.bits(4)?;
        let sample_rate = match index {
            0x0f => r.bits(24)?,
            i => *AAC_SAMPLE_RATES
                .get(i as usize)
                .ok_or_else(|| r.invalid("samplingFrequencyIndex", format!("{i} is reserved")))?,
        };
        if sample_rate == 0 {
            return Err(r.invalid("samplingFrequency", "0 Hz".into()));
        }
        // channelConfiguration -> channel count (ISO/IEC 23001-8 ChannelConfiguration).
        let channels = match r.bits(4)? {
            c @ 0..=6 => c as u8,
            7 | 12 | 14 => 8,
            11 => 7,
            13 => 24,
            c => return Err(r.invalid("channelConfiguration", format!("{c} is reserved"))),
        };
        Ok(AudioConfig {
            codec: AudioCodec::Aac,
            config: asc,
            sample_rate,
            channels,
            codec_string: format!("mp4a.40.{aot}"),
        })
    }

    /// Parses an Opus ID header (`OpusHead`, RFC 7845 §5.1). `sample_rate` is always 48000: Opus
    /// decodes at 48 kHz and its MP4/RTP timescale is 48 kHz (RFC 7845 §4, Opus-in-ISOBMFF §4.3);
    /// the header's input sample rate only describes the original source.
    pub fn from_opus_head(head: Bytes) -> Result<AudioConfig, CodecError> {
        const RECORD: &str = "OpusHead";
        let mut r = ByteReader::new(&head, RECORD);
        let magic = r.take(8)?;
        if magic != b"OpusHead" {
            return Err(CodecError::Invalid {
                record: RECORD,
                offset: 0,
                field: "magic",
                reason: format!("{magic:02x?}, expected \"OpusHead\""),
            });
        }
        let version = r.u8()?;
        // RFC 7845 §5.1: only the major version (upper nibble) must be 0.
        if version >> 4 != 0 {
            return Err(CodecError::UnsupportedVersion { record: RECORD, version, expected: 1 });
        }
        let channels = r.u8()?;
        if channels == 0 {
            return Err(CodecError::Invalid {
                record: RECORD,
                offset: 9,
                field: "output channel count",
                reason: "0".into(),
            });
        }
        r.take(2 + 4 + 2 + 1)?; // pre-skip, input sample rate, output gain, mapping family
        Ok(AudioConfig {
            codec: AudioCodec::Opus,
            config: head,
            sample_rate: 48_000,
            channels,
            codec_string: "opus".into(),
        })
    }
}

#[cfg(test)]
mod tests;
