//! FLV audio/video tag bodies <-> codec-neutral configs and frames. Sans-IO: bytes in, values out.
//!
//! Data flow: the RTMP session hands us each audio (type 8) and video (type 9) message body, i.e.
//! an FLV tag body without the 11-byte tag header; we return a sequence header (a
//! [`VideoConfig`]/[`AudioConfig`]) or a frame that the ingest session timestamps and pushes into
//! the channel's ring. For RTMP play the serializers go the other way.
//!
//! Specs: legacy tags follow Adobe FLV spec v10.1 Annex E.4.2.1 (AUDIODATA) and E.4.3.1
//! (VIDEODATA); enhanced tags follow veovera enhanced-rtmp v2 (ExVideoTagHeader,
//! ExAudioTagHeader). Supported: H.264 (legacy codec id 7 or FourCC `avc1`), H.265 (`hvc1`),
//! AV1 (`av01`), AAC (legacy sound format 10 or FourCC `mp4a`), Opus (`Opus`). Everything else is
//! refused with an error that names it, never guessed at.
//!
//! Invariants: every slice access is bounds-checked, so arbitrary bytes give an `Err`, never a
//! panic; frame payloads are `Bytes` slices of the input (no copy); `parse(serialize(x)) == x`.
//! The serializers write what every player understands: H.264 and AAC in the legacy form,
//! H.265, AV1 and Opus in the enhanced form.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::codec::CodecError;
use crate::media::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};

/// A parsed video tag body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// The decoder configuration (avcC / hvcC / av1C); applies to the frames that follow.
    SequenceHeader(VideoConfig),
    /// One access unit. `data` is length-prefixed NAL units (H.264/H.265) or low-overhead OBUs
    /// (AV1), exactly as in the tag.
    Frame {
        codec: VideoCodec,
        keyframe: bool,
        /// Composition time offset (pts - dts) in milliseconds; always 0 for AV1.
        cts_ms: i32,
        data: Bytes,
    },
    /// The publisher ended the sequence (AVC end of sequence / enhanced SequenceEnd).
    EndOfSequence,
    /// Carries nothing we use: video info/command frames, enhanced-RTMP metadata (HDR colour
    /// info). Safe to drop.
    Ignored,
}

/// A parsed audio tag body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// AudioSpecificConfig (AAC) or OpusHead (Opus).
    SequenceHeader(AudioConfig),
    /// One raw AAC frame (no ADTS header) or one Opus packet.
    Frame { codec: AudioCodec, data: Bytes },
    /// Carries nothing we use: enhanced SequenceEnd and MultichannelConfig. Safe to drop.
    Ignored,
}

/// Why a tag body could not be used. Fields say which part of the tag and which codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("FLV {what} truncated: need {needed} bytes, have {have}")]
    Truncated { what: &'static str, needed: usize, have: usize },
    #[error(
        "unsupported FLV {kind} codec id {codec_id} ({}); publish H.264, H.265 or AV1 video and AAC or Opus audio",
        legacy_codec_name(.kind, *.codec_id)
    )]
    UnsupportedCodec { codec_id: u8, kind: &'static str },
    #[error(
        "unsupported enhanced-RTMP FourCC {fourcc:?}; publish H.264 (avc1), H.265 (hvc1) or AV1 (av01) video and AAC (mp4a) or Opus audio"
    )]
    UnsupportedFourCc { fourcc: String },
    #[error(
        "unsupported FLV packet type {packet_type} ({}) for {}",
        packet_type_name(.fourcc, *.packet_type),
        if .fourcc.is_empty() { "this stream" } else { .fourcc.as_str() }
    )]
    UnsupportedPacketType { packet_type: u8, fourcc: String },
    #[error("FLV sequence header: {0}")]
    Codec(#[from] CodecError),
}

const AVC1: [u8; 4] = *b"avc1";
const HVC1: [u8; 4] = *b"hvc1";
const AV01: [u8; 4] = *b"av01";
const OPUS: [u8; 4] = *b"Opus";
const MP4A: [u8; 4] = *b"mp4a";

/// Legacy video CodecID 7 (E.4.3.1).
const CODEC_ID_AVC: u8 = 7;
/// Legacy SoundFormat 10 (E.4.2.1).
const SOUND_FORMAT_AAC: u8 = 10;
/// SoundFormat 9, reused by enhanced RTMP as "ExHeader follows".
const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// VideoFrameType (E.4.3.1 / enhanced-rtmp): 1 key frame, 2 inter frame, 5 info/command frame.
const FRAME_TYPE_KEY: u8 = 1;
const FRAME_TYPE_INTER: u8 = 2;
const FRAME_TYPE_COMMAND: u8 = 5;

/// Enhanced-RTMP VideoPacketType / AudioPacketType values.
mod packet {
    pub const SEQUENCE_START: u8 = 0;
    pub const CODED_FRAMES: u8 = 1;
    pub const SEQUENCE_END: u8 = 2;
    pub const CODED_FRAMES_X: u8 = 3;
    pub const METADATA: u8 = 4;
    pub const MULTICHANNEL_CONFIG: u8 = 4;
    pub const MULTITRACK_AUDIO: u8 = 5;
    pub const MULTITRACK: u8 = 6;
    pub const MOD_EX: u8 = 7;
}

/// Parses one video message body (FLV VIDEODATA or enhanced ExVideoTagHeader + body).
pub fn parse_video_tag(body: Bytes) -> Result<VideoTag, FlvError> {
    let b0 = *body.first().ok_or(FlvError::Truncated { what: "video tag header", needed: 1, have: 0 })?;
    if b0 & 0x80 != 0 {
        return parse_ex_video_tag(body, b0);
    }
    let frame_type = b0 >> 4;
    let codec_id = b0 & 0x0f;
    if codec_id != CODEC_ID_AVC {
        return Err(FlvError::UnsupportedCodec { codec_id, kind: "video" });
    }
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    need(&body, 5, "AVC video tag header")?;
    let packet_type = body[1];
    let cts_ms = si24(&body[2..5]);
    match packet_type {
        0 => Ok(VideoTag::SequenceHeader(VideoConfig::from_avc_record(body.slice(5..))?)),
        1 => Ok(VideoTag::Frame {
            codec: VideoCodec::H264,
            keyframe: frame_type == FRAME_TYPE_KEY,
            cts_ms,
            data: body.slice(5..),
        }),
        2 => Ok(VideoTag::EndOfSequence),
        _ => Err(FlvError::UnsupportedPacketType { packet_type, fourcc: "avc1".into() }),
    }
}

fn parse_ex_video_tag(body: Bytes, b0: u8) -> Result<VideoTag, FlvError> {
    let frame_type = (b0 >> 4) & 0x07;
    let packet_type = b0 & 0x0f;
    // Multitrack and ModEx put more headers before the FourCC; we do not read them (yet), and
    // must not misread them as a FourCC.
    if matches!(packet_type, packet::MULTITRACK | packet::MOD_EX) {
        return Err(FlvError::UnsupportedPacketType { packet_type, fourcc: String::new() });
    }
    // enhanced-rtmp v2: a command frame carries one VideoCommand byte and no FourCC.
    if frame_type == FRAME_TYPE_COMMAND && packet_type != packet::METADATA {
        return Ok(VideoTag::Ignored);
    }
    need(&body, 5, "enhanced video tag header")?;
    let fourcc = [body[1], body[2], body[3], body[4]];
    let codec = match fourcc {
        AVC1 => VideoCodec::H264,
        HVC1 => VideoCodec::H265,
        AV01 => VideoCodec::Av1,
        other => return Err(FlvError::UnsupportedFourCc { fourcc: fourcc_string(other) }),
    };
    let payload = body.slice(5..);
    match packet_type {
        packet::SEQUENCE_START => {
            let record = payload;
            Ok(VideoTag::SequenceHeader(match codec {
                VideoCodec::H264 => VideoConfig::from_avc_record(record)?,
                VideoCodec::H265 => VideoConfig::from_hevc_record(record)?,
                VideoCodec::Av1 => VideoConfig::from_av1_record(record)?,
            }))
        }
        packet::CODED_FRAMES | packet::CODED_FRAMES_X => {
            // Only avc1/hvc1 CodedFrames carry a composition time; AV1 has no reordering.
            let has_cts = packet_type == packet::CODED_FRAMES && codec != VideoCodec::Av1;
            let (cts_ms, data) = if has_cts {
                need(&payload, 3, "enhanced video composition time")?;
                (si24(&payload[..3]), payload.slice(3..))
            } else {
                (0, payload)
            };
            Ok(VideoTag::Frame { codec, keyframe: frame_type == FRAME_TYPE_KEY, cts_ms, data })
        }
        packet::SEQUENCE_END => Ok(VideoTag::EndOfSequence),
        packet::METADATA => Ok(VideoTag::Ignored),
        _ => Err(FlvError::UnsupportedPacketType { packet_type, fourcc: fourcc_string(fourcc) }),
    }
}

/// Parses one audio message body (FLV AUDIODATA or enhanced ExAudioTagHeader + body).
pub fn parse_audio_tag(body: Bytes) -> Result<AudioTag, FlvError> {
    let b0 = *body.first().ok_or(FlvError::Truncated { what: "audio tag header", needed: 1, have: 0 })?;
    let sound_format = b0 >> 4;
    match sound_format {
        SOUND_FORMAT_AAC => {
            need(&body, 2, "AAC audio tag header")?;
            match body[1] {
                0 => Ok(AudioTag::SequenceHeader(AudioConfig::from_aac_asc(body.slice(2..))?)),
                1 => Ok(AudioTag::Frame { codec: AudioCodec::Aac, data: body.slice(2..) }),
                packet_type => Err(FlvError::UnsupportedPacketType { packet_type, fourcc: "mp4a".into() }),
            }
        }
        SOUND_FORMAT_EX_HEADER => parse_ex_audio_tag(body, b0 & 0x0f),
        codec_id => Err(FlvError::UnsupportedCodec { codec_id, kind: "audio" }),
    }
}

fn parse_ex_audio_tag(body: Bytes, packet_type: u8) -> Result<AudioTag, FlvError> {
    if matches!(packet_type, packet::MULTITRACK_AUDIO | packet::MOD_EX) {
        return Err(FlvError::UnsupportedPacketType { packet_type, fourcc: String::new() });
    }
    need(&body, 5, "enhanced audio tag header")?;
    let fourcc = [body[1], body[2], body[3], body[4]];
    let codec = match fourcc {
        OPUS => AudioCodec::Opus,
        MP4A => AudioCodec::Aac,
        other => return Err(FlvError::UnsupportedFourCc { fourcc: fourcc_string(other) }),
    };
    let payload = body.slice(5..);
    match packet_type {
        packet::SEQUENCE_START => Ok(AudioTag::SequenceHeader(match codec {
            AudioCodec::Aac => AudioConfig::from_aac_asc(payload)?,
            AudioCodec::Opus => AudioConfig::from_opus_head(payload)?,
        })),
        packet::CODED_FRAMES => Ok(AudioTag::Frame { codec, data: payload }),
        packet::SEQUENCE_END | packet::MULTICHANNEL_CONFIG => Ok(AudioTag::Ignored),
        _ => Err(FlvError::UnsupportedPacketType { packet_type, fourcc: fourcc_string(fourcc) }),
    }
}

/// The tag body announcing `cfg` (sent before the first frame and on every config change).
pub fn video_sequence_header(cfg: &VideoConfig) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + cfg.record.len());
    match cfg.codec {
        VideoCodec::H264 => {
            out.put_u8(FRAME_TYPE_KEY << 4 | CODEC_ID_AVC);
            out.put_slice(&[0, 0, 0, 0]); // AVCPacketType 0, CompositionTime 0
        }
        VideoCodec::H265 | VideoCodec::Av1 => {
            out.put_u8(0x80 | FRAME_TYPE_KEY << 4 | packet::SEQUENCE_START);
            out.put_slice(&video_fourcc(cfg.codec));
        }
    }
    out.put_slice(&cfg.record);
    out.freeze()
}

/// The tag body carrying one video frame. `cts_ms` is clamped to the SI24 range (±2.3 hours,
/// far beyond any real reorder delay) and dropped for AV1, whose tags have no composition time.
pub fn video_frame(codec: VideoCodec, keyframe: bool, cts_ms: i32, data: &[u8]) -> Bytes {
    let frame_type = if keyframe { FRAME_TYPE_KEY } else { FRAME_TYPE_INTER };
    let mut out = BytesMut::with_capacity(8 + data.len());
    match codec {
        VideoCodec::H264 => {
            out.put_u8(frame_type << 4 | CODEC_ID_AVC);
            out.put_u8(1); // AVCPacketType NALU
            put_si24(&mut out, cts_ms);
        }
        VideoCodec::H265 => {
            out.put_u8(0x80 | frame_type << 4 | packet::CODED_FRAMES);
            out.put_slice(&HVC1);
            put_si24(&mut out, cts_ms);
        }
        VideoCodec::Av1 => {
            out.put_u8(0x80 | frame_type << 4 | packet::CODED_FRAMES);
            out.put_slice(&AV01);
        }
    }
    out.put_slice(data);
    out.freeze()
}

/// The tag body announcing `cfg`.
pub fn audio_sequence_header(cfg: &AudioConfig) -> Bytes {
    audio_body(cfg.codec, packet::SEQUENCE_START, &cfg.config)
}

/// The tag body carrying one audio frame.
pub fn audio_frame(codec: AudioCodec, data: &[u8]) -> Bytes {
    audio_body(codec, packet::CODED_FRAMES, data)
}

/// AAC: legacy form, byte 0 0xAF (E.4.2.1: AAC is always signalled as 44 kHz, 16-bit, stereo;
/// the real values are in the AudioSpecificConfig), then AACPacketType (0 config, 1 raw) — the
/// same numbers as the enhanced SequenceStart/CodedFrames. Opus: enhanced form.
fn audio_body(codec: AudioCodec, packet_type: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + data.len());
    match codec {
        AudioCodec::Aac => {
            out.put_u8(0xaf);
            out.put_u8(packet_type);
        }
        AudioCodec::Opus => {
            out.put_u8(SOUND_FORMAT_EX_HEADER << 4 | packet_type);
            out.put_slice(&OPUS);
        }
    }
    out.put_slice(data);
    out.freeze()
}

fn video_fourcc(codec: VideoCodec) -> [u8; 4] {
    match codec {
        VideoCodec::H264 => AVC1,
        VideoCodec::H265 => HVC1,
        VideoCodec::Av1 => AV01,
    }
}

fn need(data: &[u8], needed: usize, what: &'static str) -> Result<(), FlvError> {
    if data.len() < needed {
        return Err(FlvError::Truncated { what, needed, have: data.len() });
    }
    Ok(())
}

/// Signed 24-bit big-endian (FLV SI24). `b` has exactly 3 bytes.
fn si24(b: &[u8]) -> i32 {
    (i32::from_be_bytes([b[0], b[1], b[2], 0])) >> 8
}

fn put_si24(out: &mut BytesMut, v: i32) {
    let v = v.clamp(-(1 << 23), (1 << 23) - 1);
    out.put_slice(&v.to_be_bytes()[1..]);
}

/// A FourCC for an error message: printable ASCII as is, anything else escaped.
fn fourcc_string(f: [u8; 4]) -> String {
    f.iter().flat_map(|&b| std::ascii::escape_default(b)).map(char::from).collect()
}

/// Names for legacy codec ids, so an operator reading the log knows what the encoder sent.
fn legacy_codec_name(kind: &str, id: u8) -> &'static str {
    match (kind, id) {
        ("video", 2) => "Sorenson H.263",
        ("video", 3) => "Screen video",
        ("video", 4) => "On2 VP6",
        ("video", 5) => "On2 VP6 with alpha",
        ("video", 6) => "Screen video v2",
        ("video", 12) => "H.265 with a non-standard codec id",
        ("audio", 0) => "linear PCM, platform endian",
        ("audio", 1) => "ADPCM",
        ("audio", 2) => "MP3",
        ("audio", 3) => "linear PCM, little endian",
        ("audio", 4..=6) => "Nellymoser",
        ("audio", 7) => "G.711 A-law",
        ("audio", 8) => "G.711 mu-law",
        ("audio", 11) => "Speex",
        ("audio", 14) => "MP3 8 kHz",
        ("audio", 15) => "device-specific sound",
        _ => "unknown",
    }
}

/// Why a packet type is refused, for the error message. Legacy tags report their implied FourCC
/// (`avc1`, `mp4a`); enhanced Multitrack/ModEx are refused before a FourCC is read (empty).
fn packet_type_name(fourcc: &str, packet_type: u8) -> &'static str {
    let audio = matches!(fourcc, "mp4a" | "Opus");
    match packet_type {
        5 if fourcc.is_empty() => "Multitrack audio is not supported",
        5 if !audio => "MPEG2TSSequenceStart is not supported",
        6 if !audio => "Multitrack video is not supported",
        7 => "ModEx is not supported",
        _ => "not defined for this codec",
    }
}

#[cfg(test)]
pub(crate) mod tests;
