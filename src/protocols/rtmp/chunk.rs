//! Chunk-header watch: follows the peer's RTMP chunk stream header by header, without buffering
//! payloads, so that limits can be enforced the moment a header arrives.
//!
//! rml_rtmp's `ChunkDeserializer` exposes no headers: it only returns complete messages, and it
//! reserves the whole declared message length as soon as the first chunk's payload is in. So a
//! peer could declare a 16 MiB message and we would only notice after `max_message_size` bytes
//! were buffered (twice: once in the session, once in our control parser). [`ChunkWatch`] parses
//! the basic header and the type 0-3 message headers (RTMP spec 1.0 §5.3.1) and refuses a declared
//! message length over the limit as soon as its three length bytes arrive.
//!
//! It mirrors rml_rtmp 0.8's deserializer exactly, quirks included, because it must cut the byte
//! stream where rml_rtmp does: one payload in progress for the whole connection (not one per
//! chunk stream), a type-3 chunk re-reads the extended timestamp whenever the previous header
//! had one, a message no longer than the chunk size is read as one chunk, and a SetChunkSize
//! (type 1) takes effect right after its message completes. The one place it departs is a chunk
//! that does not continue the message in progress: one on another chunk stream (a peer
//! interleaving chunk streams), or a type-0/1 header that changes the message's length or type
//! half-way. rml_rtmp 0.8 keeps one payload for the whole connection, so it would glue the
//! previous message's bytes in front of the new one (a body the AMF check never saw: the fuzzer
//! found exactly that), or panic on a length shorter than what is in; we refuse all of these.
//! Real encoders (OBS, ffmpeg, GStreamer) send each message's chunks back to back.
//!
//! It also hands the body of every complete AMF message (types 15, 17, 18, 20: the ones rml_rtmp
//! decodes) to the caller, so they can be vetted (`amf0::check_message`) before the session
//! decodes them. Media payloads (types 8 and 9, nearly all the bytes) are skipped, never copied:
//! this watch replaced a second full `ChunkDeserializer` that buffered every message twice.
//!
//! Invariant: holds at most one partial header (18 bytes), the first 4 bytes of the payload in
//! progress, the AMF message in progress (at most `max_message_size`, released after it), and
//! one small header per chunk stream id the peer used (at most 65,600).

use std::collections::HashMap;

/// RTMP spec §5.4.1: the chunk size both sides start with.
pub const INITIAL_CHUNK_SIZE: usize = 128;
/// A 24-bit timestamp field of all ones means "extended timestamp follows" (RTMP spec §5.3.1.3).
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// Basic header (3) + type-0 message header (11) + extended timestamp (4).
const MAX_HEADER: usize = 18;
/// RTMP spec §7.1: SetChunkSize.
const MSG_SET_CHUNK_SIZE: u8 = 1;
/// Message types whose bodies rml_rtmp 0.8 decodes as AMF0 (RTMP spec §7.1: AMF3 data 15, AMF3
/// command 17, AMF0 data 18, AMF0 command 20).
const AMF_TYPES: [u8; 4] = [15, 17, 18, 20];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk stream {chunk_stream_id} declares a {declared}-byte message (limit {limit})")]
    MessageTooLarge { chunk_stream_id: u32, declared: u32, limit: usize },
    #[error("peer announced chunk size {requested}; it must be between 1 and 2^31-1")]
    InvalidChunkSize { requested: u32 },
    #[error("peer announced chunk size {requested}, above the limit of {limit}")]
    ChunkSizeTooLarge { requested: u32, limit: u32 },
    #[error(
        "chunk stream {chunk_stream_id} sends a {declared}-byte message while {in_progress} bytes \
         of another message are pending (interleaved chunk streams are not supported)"
    )]
    Interleaved { chunk_stream_id: u32, declared: u32, in_progress: usize },
    #[error("type-{fmt} chunk header on chunk stream {chunk_stream_id}, which has no previous header")]
    NoPreviousHeader { fmt: u8, chunk_stream_id: u32 },
    #[error(
        "type-{fmt} chunk header on chunk stream {chunk_stream_id} carries an extended timestamp \
         delta of {delta}, below 0xFFFFFF (that delta fits the 24-bit field)"
    )]
    ExtendedDeltaTooSmall { fmt: u8, chunk_stream_id: u32, delta: u32 },
}

/// Validate a SetChunkSize value (RTMP spec §5.4.1: 31 bits, the top bit zero, at least 1) against
/// our limit. rml_rtmp 0.8 accepts 0, with which no chunk ever carries a payload byte.
pub fn checked_chunk_size(requested: u32, limit: u32) -> Result<u32, ChunkError> {
    if requested == 0 || requested > 0x7fff_ffff {
        return Err(ChunkError::InvalidChunkSize { requested });
    }
    if requested > limit {
        return Err(ChunkError::ChunkSizeTooLarge { requested, limit });
    }
    Ok(requested)
}

/// What a chunk stream's last header said, for the compressed headers that follow it.
#[derive(Clone, Copy, Debug, Default)]
struct Previous {
    message_length: u32,
    type_id: u8,
    /// The 24-bit timestamp or delta field as sent; all ones means an extended timestamp.
    timestamp_field: u32,
}

/// The header being waited for, or the payload being skipped.
enum Stage {
    Header,
    Payload { chunk_stream_id: u32, header: Previous, left: usize },
}

/// Follows chunk boundaries and message lengths of one peer's byte stream.
pub struct ChunkWatch {
    max_message_size: usize,
    max_chunk_size: u32,
    chunk_size: usize,
    stage: Stage,
    /// Header bytes received so far while `stage` is `Header`.
    partial: [u8; MAX_HEADER],
    /// How many bytes of `partial` are in (inline: one allocation less per connection).
    partial_len: usize,
    previous: HashMap<u32, Previous>,
    /// Payload bytes of the message in progress (rml_rtmp keeps one for all chunk streams).
    in_progress: usize,
    /// The chunk stream and header of that message while `in_progress > 0`: the next chunk
    /// must continue it.
    open: Option<(u32, Previous)>,
    /// Its first bytes: a SetChunkSize value.
    head: [u8; 4],
    /// The body of the AMF message in progress (empty for other types).
    amf: Vec<u8>,
    /// (type id, length) of every message completed, to compare with rml_rtmp in tests.
    #[cfg(test)]
    completed: Vec<(u8, usize)>,
}

impl ChunkWatch {
    pub fn new(max_message_size: usize, max_chunk_size: u32) -> Self {
        ChunkWatch {
            max_message_size,
            max_chunk_size,
            chunk_size: INITIAL_CHUNK_SIZE,
            stage: Stage::Header,
            partial: [0; MAX_HEADER],
            partial_len: 0,
            previous: HashMap::new(),
            in_progress: 0,
            open: None,
            head: [0; 4],
            amf: Vec::new(),
            #[cfg(test)]
            completed: Vec::new(),
        }
    }

    /// Change the largest declared message length accepted from the next header on (the
    /// listener raises it once a publish is accepted, see `RtmpServerConn::set_max_declared_length`).
    pub fn set_max_message_size(&mut self, max_message_size: usize) {
        self.max_message_size = max_message_size;
    }

    /// Follow `input`, the next bytes after the handshake. Errors as soon as the offending header
    /// bytes are in. `on_amf(type_id, body)` sees each complete AMF message before anything after
    /// it is followed; its error stops the feed.
    pub fn feed<E: From<ChunkError>>(
        &mut self,
        mut input: &[u8],
        mut on_amf: impl FnMut(u8, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        loop {
            match &mut self.stage {
                Stage::Header => {
                    let had = self.partial_len;
                    let take = input.len().min(MAX_HEADER - had);
                    self.partial[had..had + take].copy_from_slice(&input[..take]);
                    self.partial_len = had + take;
                    match self.parse_header()? {
                        None => {
                            debug_assert!(self.partial_len < MAX_HEADER, "a header never exceeds 18 bytes");
                            return Ok(());
                        }
                        Some((chunk_stream_id, header, used)) => {
                            input = &input[used - had..];
                            self.partial_len = 0;
                            self.start_payload(chunk_stream_id, header, &mut on_amf)?;
                        }
                    }
                }
                Stage::Payload { left, header, .. } => {
                    let n = (*left).min(input.len());
                    let at = self.in_progress;
                    for (i, b) in input[..n].iter().enumerate() {
                        if let Some(slot) = self.head.get_mut(at + i) {
                            *slot = *b;
                        }
                    }
                    if AMF_TYPES.contains(&header.type_id) {
                        self.amf.extend_from_slice(&input[..n]);
                    }
                    *left -= n;
                    self.in_progress += n;
                    input = &input[n..];
                    if *left > 0 {
                        return Ok(());
                    }
                    self.end_chunk(&mut on_amf)?;
                    if input.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Parse the header in `partial`: `None` until it is complete (or an error as soon as what is
    /// in is enough to refuse), else the chunk stream id, the header and its length in bytes.
    fn parse_header(&self) -> Result<Option<(u32, Previous, usize)>, ChunkError> {
        let b = &self.partial[..self.partial_len];
        let Some(&first) = b.first() else { return Ok(None) };
        let fmt = first >> 6;
        let (chunk_stream_id, mut at) = match first & 0x3f {
            0 if b.len() >= 2 => (b[1] as u32 + 64, 2),
            1 if b.len() >= 3 => (b[2] as u32 * 256 + b[1] as u32 + 64, 3),
            0 | 1 => return Ok(None),
            id => (id as u32, 1),
        };
        let mut header = if fmt == 0 {
            Previous::default()
        } else {
            *self
                .previous
                .get(&chunk_stream_id)
                .ok_or(ChunkError::NoPreviousHeader { fmt, chunk_stream_id })?
        };
        let u24 = |at: usize| u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]]);
        if fmt <= 2 {
            if b.len() < at + 3 {
                return Ok(None);
            }
            header.timestamp_field = u24(at);
            at += 3;
        }
        if fmt <= 1 {
            if b.len() < at + 3 {
                return Ok(None);
            }
            let declared = u24(at);
            if declared as usize > self.max_message_size {
                return Err(ChunkError::MessageTooLarge {
                    chunk_stream_id,
                    declared,
                    limit: self.max_message_size,
                });
            }
            header.message_length = declared;
            at += 3;
            let Some(&type_id) = b.get(at) else { return Ok(None) };
            header.type_id = type_id;
            at += 1;
        }
        if fmt == 0 {
            at += 4; // message stream id
        }
        if header.timestamp_field >= EXTENDED_TIMESTAMP {
            let Some(ext) = b.get(at..at + 4) else { return Ok(None) };
            let delta = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]);
            // rml_rtmp 0.8 subtracts 0xFFFFFF from the extended value of a delta header (types
            // 1-3) that starts a message, unchecked: a smaller value panics in a debug build and
            // wraps the timestamp in a release one. A sender only uses the extended field when
            // the value does not fit 24 bits, so a smaller one is refused (fuzzer-found).
            if fmt != 0 && self.in_progress == 0 && delta < EXTENDED_TIMESTAMP {
                return Err(ChunkError::ExtendedDeltaTooSmall { fmt, chunk_stream_id, delta });
            }
            at += 4;
        }
        Ok((b.len() >= at).then_some((chunk_stream_id, header, at)))
    }

    /// rml_rtmp 0.8 `get_message_data`: a message longer than the chunk size is read in chunks
    /// of up to the chunk size; a shorter one in one piece of its full length.
    fn start_payload<E: From<ChunkError>>(
        &mut self,
        chunk_stream_id: u32,
        header: Previous,
        on_amf: &mut impl FnMut(u8, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let declared = header.message_length as usize;
        let continues = self.open.is_none_or(|(id, open)| {
            id == chunk_stream_id
                && open.message_length == header.message_length
                && open.type_id == header.type_id
        });
        let remaining = declared.checked_sub(self.in_progress).filter(|_| continues);
        let Some(remaining) = remaining else {
            return Err(ChunkError::Interleaved {
                chunk_stream_id,
                declared: header.message_length,
                in_progress: self.in_progress,
            }
            .into());
        };
        let left = if declared > self.chunk_size { remaining.min(self.chunk_size) } else { declared };
        self.stage = Stage::Payload { chunk_stream_id, header, left };
        // A zero-length chunk (an empty message) ends right after its header.
        if left == 0 {
            self.end_chunk(on_amf)?;
        }
        Ok(())
    }

    fn end_chunk<E: From<ChunkError>>(
        &mut self,
        on_amf: &mut impl FnMut(u8, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let Stage::Payload { chunk_stream_id, header, .. } =
            std::mem::replace(&mut self.stage, Stage::Header)
        else {
            unreachable!("end_chunk is only called while in a payload");
        };
        self.previous.insert(chunk_stream_id, header);
        if self.in_progress != header.message_length as usize {
            self.open = Some((chunk_stream_id, header));
            return Ok(());
        }
        self.open = None;
        #[cfg(test)]
        self.completed.push((header.type_id, self.in_progress));
        // rml_rtmp fails on a SetChunkSize shorter than 4 bytes; the session reports that.
        if header.type_id == MSG_SET_CHUNK_SIZE && self.in_progress >= 4 {
            let size = checked_chunk_size(u32::from_be_bytes(self.head), self.max_chunk_size)?;
            self.chunk_size = size as usize;
        }
        self.in_progress = 0;
        self.head = [0; 4];
        if AMF_TYPES.contains(&header.type_id) {
            let checked = on_amf(header.type_id, &self.amf);
            // Released, not kept: after connect and play/publish a peer sends almost no AMF, and
            // a kept buffer would be held by every idle viewer.
            self.amf = Vec::new();
            checked?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    fn no_amf(_: u8, _: &[u8]) -> Result<(), ChunkError> {
        Ok(())
    }

    #[test]
    fn oversized_declared_length_is_refused_at_its_length_bytes() {
        let mut w = ChunkWatch::new(65_536, 65_536);
        // fmt 0, csid 4, timestamp 0, then length 0x010001 (65,537).
        assert_eq!(w.feed(&[0x04, 0, 0, 0, 0x01, 0x00], no_amf), Ok(()));
        assert_eq!(
            w.feed(&[0x01], no_amf),
            Err(ChunkError::MessageTooLarge { chunk_stream_id: 4, declared: 65_537, limit: 65_536 })
        );
    }

    #[test]
    fn set_chunk_size_zero_and_top_bit_are_refused() {
        for bad in [0u32, 0x8000_0000, 0xffff_ffff] {
            let mut w = ChunkWatch::new(65_536, 65_536);
            let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
            bytes.extend(bad.to_be_bytes());
            assert_eq!(w.feed(&bytes, no_amf), Err(ChunkError::InvalidChunkSize { requested: bad }));
        }
        assert_eq!(checked_chunk_size(4096, 65_536), Ok(4096));
        assert_eq!(
            checked_chunk_size(65_537, 65_536),
            Err(ChunkError::ChunkSizeTooLarge { requested: 65_537, limit: 65_536 })
        );
    }

    #[test]
    fn interleaving_that_would_panic_rml_rtmp_is_refused() {
        let mut w = ChunkWatch::new(65_536, 65_536);
        // 200-byte message on csid 4: the first 128-byte chunk, then a 10-byte one on csid 5.
        let mut bytes = vec![0x04, 0, 0, 0, 0, 0, 200, 9, 1, 0, 0, 0];
        bytes.extend([0u8; 128]);
        bytes.extend([0x05, 0, 0, 0, 0, 0, 10, 8, 1, 0, 0, 0]);
        assert!(matches!(w.feed(&bytes, no_amf), Err(ChunkError::Interleaved { in_progress: 128, .. })));
    }

    /// A message in progress on one chunk stream, then a complete AMF command on another: rml_rtmp
    /// 0.8 would hand out the first message's bytes glued in front of the command (a body our
    /// AMF check never saw). Found by the `rtmp_chunk_watch` fuzzer.
    #[test]
    fn an_extended_delta_below_the_24_bit_limit_is_refused() {
        // A 4-byte video message with a large absolute timestamp (type 0, extended), then a
        // type-1 header on the same chunk stream whose extended delta (5) would fit 24 bits.
        let mut bytes = vec![0x04, 0xff, 0xff, 0xff, 0, 0, 4, 9, 1, 0, 0, 0, 0x01, 0, 0, 0];
        bytes.extend([0x17u8; 4]);
        let mut w = ChunkWatch::new(65_536, 65_536);
        assert_eq!(w.feed(&bytes, no_amf), Ok(()));
        let mut delta = vec![0x44, 0xff, 0xff, 0xff, 0, 0, 4, 9, 0, 0, 0, 5];
        delta.extend([0x17u8; 4]);
        let fed = w.feed(&delta, no_amf);
        assert!(
            matches!(fed, Err(ChunkError::ExtendedDeltaTooSmall { fmt: 1, chunk_stream_id: 4, delta: 5 })),
            "{fed:?}"
        );
        // The same header with a delta that needs the extended field is fine.
        let mut w = ChunkWatch::new(65_536, 65_536);
        assert_eq!(w.feed(&bytes, no_amf), Ok(()));
        let mut big = vec![0x44, 0xff, 0xff, 0xff, 0, 0, 4, 9, 0x01, 0, 0, 0];
        big.extend([0x17u8; 4]);
        assert_eq!(w.feed(&big, no_amf), Ok(()));
        assert_eq!(w.completed, [(9, 4), (9, 4)]);
    }

    #[test]
    fn a_chunk_that_does_not_continue_the_open_message_is_refused() {
        // 300-byte video message on csid 4: its first 128-byte chunk only.
        let mut first = vec![0x04, 0, 0, 0, 0, 0x01, 0x2c, 9, 1, 0, 0, 0];
        first.extend([0x03u8; 128]);
        // Another chunk stream: a 129-byte AMF0 command (rml_rtmp would complete it after 1 byte).
        let mut other = first.clone();
        other.extend([0x05, 0, 0, 0, 0, 0, 129, 20, 0, 0, 0, 0, 0x02]);
        // The same chunk stream, but a type-0 header that turns the message into an AMF command.
        let mut retyped = first.clone();
        retyped.extend([0x04, 0, 0, 0, 0, 0x01, 0x2c, 20, 1, 0, 0, 0, 0x02]);
        // A type-1 header that changes the length.
        let mut resized = first.clone();
        resized.extend([0x44, 0, 0, 0, 0, 0x01, 0x2d, 9, 0x02]);
        for (name, bytes) in [("other", other), ("retyped", retyped), ("resized", resized)] {
            let mut w = ChunkWatch::new(65_536, 65_536);
            let fed = w.feed(&bytes, |_, _: &[u8]| -> Result<(), ChunkError> {
                panic!("no AMF body may be handed out")
            });
            assert!(matches!(fed, Err(ChunkError::Interleaved { in_progress: 128, .. })), "{name}: {fed:?}");
        }
        // Continuation chunks (type 3, or type 2 with a new timestamp delta) are fine.
        let mut ok = first.clone();
        ok.push(0xc4);
        ok.extend([0x03u8; 128]);
        ok.extend([0x84, 0, 0, 1]);
        ok.extend([0x03u8; 44]);
        let mut w = ChunkWatch::new(65_536, 65_536);
        assert_eq!(w.feed(&ok, no_amf), Ok(()));
        assert_eq!(w.completed, [(9, 300)]);
    }

    type Seen = (Vec<(u8, usize)>, Vec<(u8, Vec<u8>)>);

    /// (type, length) of every message, and the AMF bodies handed out.
    fn watch_messages(bytes: &[u8], split: usize, max_chunk: u32) -> Result<Seen, ChunkError> {
        let mut w = ChunkWatch::new(1 << 24, max_chunk);
        let mut amf = Vec::new();
        for piece in bytes.chunks(split.max(1)) {
            w.feed(piece, |t, body: &[u8]| {
                amf.push((t, body.to_vec()));
                Ok::<(), ChunkError>(())
            })?;
        }
        Ok((w.completed, amf))
    }

    fn rml_messages(bytes: &[u8], max_chunk: u32) -> Seen {
        let mut de = ChunkDeserializer::new();
        let mut out = Vec::new();
        let mut amf = Vec::new();
        let mut input = bytes;
        while let Ok(Some(m)) = de.get_next_message(input) {
            input = &[];
            if m.type_id == MSG_SET_CHUNK_SIZE && m.data.len() >= 4 {
                let size = u32::from_be_bytes([m.data[0], m.data[1], m.data[2], m.data[3]]);
                if checked_chunk_size(size, max_chunk).is_err() {
                    break;
                }
                de.set_max_chunk_size(size as usize).unwrap();
            }
            if AMF_TYPES.contains(&m.type_id) {
                amf.push((m.type_id, m.data.to_vec()));
            }
            out.push((m.type_id, m.data.len()));
        }
        (out, amf)
    }

    proptest! {
        /// Whatever rml_rtmp's serializer produces (any chunk size changes, timestamps beyond 24
        /// bits, header compression), the watch follows the same boundaries as rml_rtmp's
        /// deserializer, never refuses it, and hands out exactly the AMF bodies rml_rtmp reads.
        #[test]
        fn follows_rml_rtmp_framing(
            msgs in prop::collection::vec(
                (prop::sample::select(vec![1u8, 8, 9, 15, 17, 18, 20]), 1usize..600, 1u32..4,
                 prop::sample::select(vec![0u32, 40, 0xff_fffe, 0x0100_0000])),
                1..12),
            split in 1usize..300,
        ) {
            let mut ser = ChunkSerializer::new();
            let mut bytes = Vec::new();
            let mut ts = 0u32;
            for (type_id, len, stream, step) in &msgs {
                ts = ts.wrapping_add(*step);
                let data = if *type_id == MSG_SET_CHUNK_SIZE {
                    // A new chunk size for the following messages.
                    let size = 1 + (*len as u32 % 300);
                    let p = ser.set_max_chunk_size(size, RtmpTimestamp::new(ts)).unwrap();
                    bytes.extend(p.bytes);
                    continue;
                } else {
                    Bytes::from((0..*len).map(|i| (i % 251) as u8).collect::<Vec<u8>>())
                };
                let payload = MessagePayload {
                    timestamp: RtmpTimestamp::new(ts),
                    type_id: *type_id,
                    message_stream_id: *stream,
                    data,
                };
                bytes.extend(ser.serialize(&payload, false, false).unwrap().bytes);
            }
            let ours = watch_messages(&bytes, split, 65_536);
            prop_assert_eq!(ours, Ok(rml_messages(&bytes, 65_536)));
        }
    }
}
