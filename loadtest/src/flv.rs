//! Minimal FLV file reader for the publisher: splits a file into its audio, video and script
//! tags (Adobe FLV spec v10.1, Annex E.4: 11-byte tag header, `PreviousTagSize` trailer).
//!
//! The whole file is read into memory once; tag payloads are `Bytes` slices of it, so looping
//! the file copies nothing. Invariant: `tags` are in file order, timestamps in milliseconds.

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;

/// FLV tag types (spec E.4.1 `TagType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

/// One FLV tag: the payload is what goes into an RTMP audio/video message body unchanged.
#[derive(Clone, Debug)]
pub struct Tag {
    pub kind: TagKind,
    /// Decode timestamp in milliseconds (24 bits plus the 8-bit extension).
    pub ts_ms: u32,
    pub data: Bytes,
}

impl Tag {
    /// A codec configuration record (AVC sequence header, AAC AudioSpecificConfig): sent once at
    /// the start, not on every loop of the file, and never used for latency matching because
    /// servers replay it to each new viewer.
    pub fn is_config(&self) -> bool {
        match self.kind {
            // E.4.3.1: AVCPacketType 0 = sequence header (codec id 7 = AVC).
            TagKind::Video => self.data.len() >= 2 && self.data[0] & 0x0f == 7 && self.data[1] == 0,
            // E.4.2.1: SoundFormat 10 = AAC, AACPacketType 0 = sequence header.
            TagKind::Audio => self.data.len() >= 2 && self.data[0] >> 4 == 10 && self.data[1] == 0,
            TagKind::Script => true,
        }
    }
}

/// Parse a whole FLV file.
pub fn parse(file: Bytes) -> Result<Vec<Tag>> {
    ensure!(file.len() >= 13 && &file[..3] == b"FLV", "not an FLV file (no 'FLV' signature)");
    let header_len = u32::from_be_bytes([file[5], file[6], file[7], file[8]]) as usize;
    // Skip the header and PreviousTagSize0.
    let mut off = header_len + 4;
    let mut tags = Vec::new();
    while off + 11 <= file.len() {
        let h = &file[off..off + 11];
        let kind = match h[0] & 0x1f {
            8 => TagKind::Audio,
            9 => TagKind::Video,
            18 => TagKind::Script,
            other => bail!("unknown FLV tag type {other} at byte offset {off}"),
        };
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        let ts_ms = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let start = off + 11;
        let end = start + size;
        if end > file.len() {
            // A truncated last tag (ffmpeg killed mid-write): keep what is complete.
            break;
        }
        tags.push(Tag { kind, ts_ms, data: file.slice(start..end) });
        off = end + 4;
    }
    ensure!(!tags.is_empty(), "FLV file has no complete tags");
    Ok(tags)
}

/// Read and parse an FLV file from disk.
pub fn read(path: &std::path::Path) -> Result<Vec<Tag>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(Bytes::from(bytes)).with_context(|| format!("parsing {}", path.display()))
}
