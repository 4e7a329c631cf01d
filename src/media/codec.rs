//! Codec configurations: what a decoder needs before the first frame, in codec-neutral form.
//!
//! Filled from the FLV sequence headers (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 §5.3.3;
//! HEVCDecoderConfigurationRecord, §8.3.3; AV1CodecConfigurationRecord, AV1-ISOBMFF §2.3;
//! AudioSpecificConfig, ISO/IEC 14496-3 §1.6.2.1). Later from SDP (WHIP, RTSP) and MPEG-TS.

use bytes::Bytes;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    H265,
    Av1,
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
