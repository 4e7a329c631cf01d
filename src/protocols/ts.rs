//! Sans-IO MPEG-TS demuxer: transport stream bytes in, media-model [`Frame`]s out.
//!
//! Where it sits: SRT ingest (`actors/ingest/srt.rs`) feeds every datagram payload it
//! receives to [`TsDemuxer::feed`] and pushes the frames into the channel's ring. Follows ISO/IEC
//! 13818-1 (§2.4.3 transport packets, §2.4.4 PAT/PMT, §2.4.3.6 PES), ISO/IEC 14496-10 Annex B and
//! ISO/IEC 23008-2 Annex B (byte-stream NAL units), ISO/IEC 13818-7 §6.2 / 14496-3 §1.A.2 (ADTS).
//!
//! Invariants:
//! - **Never a corrupt frame.** A continuity-counter gap on a PID marks the PES being assembled
//!   as damaged; it is dropped whole (and counted in [`TsStats`]) and the PID waits for the
//!   next `payload_unit_start_indicator`. A video gap also drops frames until the next key
//!   frame, because P-frames that reference a lost frame decode as garbage.
//! - **Timestamps only grow.** PTS/DTS are 33-bit 90 kHz values; they are unwrapped across the
//!   2^33 wrap (26.5 hours) and a jump of more than [`MAX_JUMP_90K`] (an encoder restart, a
//!   splice, a PCR discontinuity) is folded into an offset so the output timeline continues
//!   one frame after the last frame. Output times are in a 90 kHz timescale.
//! - Video leaves as length-prefixed NAL units (4-byte lengths, as `avcC`/`hvcC` declare with
//!   `lengthSizeMinusOne = 3`), without access unit delimiters; the configuration record is
//!   built from the SPS/PPS (and VPS) seen in the stream. AAC leaves as raw frames with an
//!   AudioSpecificConfig built from the ADTS header. Opus (stream type 0x06 with the `Opus`
//!   registration descriptor, mono or stereo) leaves as one Opus packet per frame, its control
//!   header removed, with an `OpusHead` built from the PMT; each packet's duration comes from
//!   its TOC byte (RFC 6716 §3.1). The muxer writes Opus back the same way.
//! - Arbitrary bytes never panic; input may arrive in any split (SRT live mode delivers 7
//!   packets per datagram, a file reader any length), and lost sync is found again on 0x47.
//!
//! The issue suggested the `mpeg2ts` crate's reader. Its reader is `io::Read`-driven and
//! returns an error on a continuity gap rather than letting us drop one access unit and go on,
//! so the packet layer here is our own (a few dozen lines), and so is the muxer for SRT play
//! (`ts/mux.rs`), which round-trips through this demuxer in its tests.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::{AudioCodec, AudioConfig, Frame, MediaTime, TrackKind, Tracks, VideoCodec, VideoConfig};

mod mux;
pub(crate) use mux::parameter_sets;
pub use mux::{crc32_mpeg2, TsMuxer};

/// Media held at most at the start while a declared stream has no configuration yet.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Frames held at most at the start (a bound besides the duration, for streams without time).
const MAX_HELD_FRAMES: usize = 1024;

/// One transport packet (ISO/IEC 13818-1 §2.4.3.1).
pub const PACKET_SIZE: usize = 188;
const SYNC_BYTE: u8 = 0x47;
/// The 90 kHz clock of PTS/DTS.
pub const TIMESCALE_90K: u32 = 90_000;
/// PTS/DTS are 33 bits.
const WRAP_90K: i64 = 1 << 33;
/// A timestamp step larger than this (10 s) on one track is a jump, not media time passing.
pub const MAX_JUMP_90K: i64 = 10 * 90_000;
/// A PES larger than this (8 MiB) is refused: no sane access unit is bigger, and an unbounded
/// PES with `PES_packet_length = 0` must not grow memory without limit.
pub const MAX_PES_BYTES: usize = 8 << 20;

/// What the demuxer produced.
#[derive(Debug)]
pub enum TsEvent {
    /// The track set changed (first configuration, or new SPS/PPS/ASC); later frames carry it.
    Tracks(Arc<Tracks>),
    Frame(Frame),
}

/// Counters for metrics: what was lost or refused, never per-session labelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsStats {
    /// Continuity-counter gaps seen (each is at least one lost packet).
    pub cc_gaps: u64,
    /// Access units dropped because they were damaged, truncated or undecodable.
    pub dropped_units: u64,
    /// Bytes skipped to find the sync byte again.
    pub resync_bytes: u64,
    /// Timestamp jumps folded into the offset.
    pub timestamp_jumps: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    H264,
    Hevc,
    AacAdts,
    /// Opus (stream type 0x06 with an `Opus` registration descriptor; ETSI TS 102 366-style
    /// access units with a control header), mono or stereo.
    Opus {
        channels: u8,
    },
}

impl StreamKind {
    fn is_audio(self) -> bool {
        matches!(self, StreamKind::AacAdts | StreamKind::Opus { .. })
    }
}

/// One elementary stream's PES assembly.
#[derive(Debug)]
struct Pes {
    kind: StreamKind,
    /// Last continuity counter seen on a packet with payload.
    last_cc: Option<u8>,
    buf: BytesMut,
    /// Assembling a PES (seen its start, and nothing lost since).
    active: bool,
}

/// The sans-IO demuxer of one SRT (or file) connection.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    /// Bytes of a packet cut by the transport.
    partial: Vec<u8>,
    /// The last packet started where the one before it ended (no resync in progress).
    synced: bool,
    /// While resyncing: bytes from a candidate sync byte whose confirmation (the byte one packet
    /// later) has not arrived yet. Held rather than guessed, so where the input was split never
    /// changes what is found.
    carry: Vec<u8>,
    pmt_pid: Option<u16>,
    streams: HashMap<u16, Pes>,
    tracks: Arc<Tracks>,
    /// Video SPS/PPS/VPS last seen (Annex-B payload, no start code).
    vps: Option<Bytes>,
    sps: Option<Bytes>,
    pps: Option<Bytes>,
    /// Raw ADTS parameters (profile, sampling index, channel config) behind the current ASC.
    adts_params: Option<(u8, u8, u8)>,
    /// A video gap or a start without configuration: drop video until the next key frame.
    wait_key: bool,
    video_clock: Timeline,
    audio_clock: Timeline,
    stats: TsStats,
    /// The start gate is open: the track set has been announced (see `gate`).
    started: bool,
    /// Frames held at the start until every stream the PMT declares has its configuration.
    held: Vec<Frame>,
}

/// Unwraps 33-bit timestamps and folds jumps into an offset, per track.
#[derive(Clone, Copy, Debug, Default)]
struct Timeline {
    /// Last raw unwrapped value (before the jump offset).
    last_unwrapped: Option<i64>,
    /// Added to unwrapped values so the output continues across jumps.
    offset: i64,
    /// Last output DTS and the step before it (the expected frame duration).
    last_out: Option<i64>,
    last_step: i64,
}

impl Timeline {
    /// Unwraps `raw` (33 bits) next to the previous value of this track.
    fn unwrap(&self, raw: u64) -> i64 {
        let raw = (raw & (WRAP_90K as u64 - 1)) as i64;
        match self.last_unwrapped {
            None => raw,
            Some(last) => {
                // The candidate nearest the last value: raw + k * 2^33.
                let base = last - last.rem_euclid(WRAP_90K);
                [base - WRAP_90K + raw, base + raw, base + WRAP_90K + raw]
                    .into_iter()
                    .min_by_key(|c| (c - last).abs())
                    .expect("three candidates")
            }
        }
    }

    /// Maps a DTS (and its PTS, same unwrap) to the output timeline. Returns `(dts, pts, jumped)`.
    fn map(&mut self, raw_dts: u64, raw_pts: u64) -> (i64, i64, bool) {
        let dts = self.unwrap(raw_dts);
        let cts = {
            let p = self.unwrap(raw_pts) - dts;
            // A PTS that is not near its DTS is nonsense; present at the DTS.
            if (0..MAX_JUMP_90K).contains(&p) {
                p
            } else {
                0
            }
        };
        let mut jumped = false;
        if let (Some(last_raw), Some(last_out)) = (self.last_unwrapped, self.last_out) {
            let step = dts - last_raw;
            // Backwards by more than a little (B-frame DTS never goes back), or far forward.
            if !(-MAX_JUMP_90K / 10..=MAX_JUMP_90K).contains(&step) {
                let expected = last_out + self.last_step.max(1);
                self.offset = expected - dts;
                jumped = true;
            }
        }
        self.last_unwrapped = Some(dts);
        let out = dts + self.offset;
        if let Some(last_out) = self.last_out {
            if out > last_out {
                self.last_step = out - last_out;
            }
        }
        // Never backwards: equal DTS is allowed (two audio frames can share a clamped time).
        let out = self.last_out.map_or(out, |l| out.max(l));
        self.last_out = Some(out);
        (out, out + cts, jumped)
    }
}

impl TsDemuxer {
    pub fn new() -> Self {
        TsDemuxer { wait_key: true, ..Default::default() }
    }

    pub fn stats(&self) -> TsStats {
        self.stats
    }

    /// The current track set (empty until the first configuration).
    pub fn tracks(&self) -> &Arc<Tracks> {
        &self.tracks
    }

    /// Feeds transport stream bytes in any split; complete events are appended to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<TsEvent>) {
        let start = out.len();
        if self.carry.is_empty() {
            self.feed_packets(data, out);
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(data);
            self.feed_packets(&joined, out);
        }
        self.gate(out, start, false);
    }

    fn feed_packets(&mut self, mut data: &[u8], out: &mut Vec<TsEvent>) {
        if !self.partial.is_empty() {
            let need = PACKET_SIZE - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < PACKET_SIZE {
                return;
            }
            let packet = std::mem::take(&mut self.partial);
            if packet[0] == SYNC_BYTE {
                self.packet(&packet, out);
            } else {
                self.stats.resync_bytes += PACKET_SIZE as u64;
            }
        }
        while !data.is_empty() {
            if !self.synced && data[0] == SYNC_BYTE && data.len() <= PACKET_SIZE {
                // A candidate whose confirmation is not here yet: wait for it (`finish` takes
                // it as it is at the end of the stream).
                self.carry.extend_from_slice(data);
                return;
            }
            if data[0] != SYNC_BYTE
                || (!self.synced && data.get(PACKET_SIZE).is_some_and(|&b| b != SYNC_BYTE))
            {
                // Lost sync: a candidate 0x47 counts only when the byte one packet later is
                // 0x47 too (or not here yet), so a 0x47 inside garbage does not eat a packet.
                self.synced = false;
                let skip = (1..data.len())
                    .find(|&i| {
                        data[i] == SYNC_BYTE && data.get(i + PACKET_SIZE).is_none_or(|&b| b == SYNC_BYTE)
                    })
                    .unwrap_or(data.len());
                self.stats.resync_bytes += skip as u64;
                data = &data[skip..];
                continue;
            }
            self.synced = true;
            if data.len() < PACKET_SIZE {
                self.partial.extend_from_slice(data);
                return;
            }
            let (packet, rest) = data.split_at(PACKET_SIZE);
            self.packet(packet, out);
            data = rest;
        }
    }

    /// Flushes what is buffered (end of stream): a PES whose length was unbounded completes.
    pub fn finish(&mut self, out: &mut Vec<TsEvent>) {
        let start = out.len();
        if !self.carry.is_empty() {
            // The stream ended on a candidate: nothing follows to confirm or refute it.
            let carry = std::mem::take(&mut self.carry);
            self.synced = true;
            self.feed_packets(&carry, out);
        }
        let pids: Vec<u16> = self.streams.keys().copied().collect();
        for pid in pids {
            self.flush_pes(pid, out);
        }
        self.gate(out, start, true);
    }

    /// The start gate. Encoders send the video's parameter sets and the first ADTS header at
    /// different moments, so announcing each configuration as it appears would start the
    /// channel with one track and add the other a moment later: a second init segment in
    /// LL-HLS, which players (ffmpeg's HLS reader among them) do not all follow, and a track
    /// set change for every RTMP viewer. So until every stream the PMT declares has its
    /// configuration, the frames of `out[start..]` are held, and the first track set is
    /// announced once, with the held frames re-labelled with it. A declared stream that never
    /// configures does not hold the others up for more than `START_WAIT` of media.
    fn gate(&mut self, out: &mut Vec<TsEvent>, start: usize, end: bool) {
        if self.started {
            return;
        }
        for e in out.drain(start..) {
            if let TsEvent::Frame(f) = e {
                self.held.push(f);
            }
        }
        let want_video = self.streams.values().any(|p| !p.kind.is_audio());
        let want_audio = self.streams.values().any(|p| p.kind.is_audio());
        let (video, audio) = (self.tracks.video.is_some(), self.tracks.audio.is_some());
        let missing = (want_video && !video) || (want_audio && !audio);
        let complete = (video || audio) && !missing;
        let waited = match (self.held.iter().map(|f| f.dts).min(), self.held.iter().map(|f| f.dts).max()) {
            (Some(a), Some(b)) => b.minus(a).as_duration() >= START_WAIT,
            _ => false,
        };
        if !(complete || ((waited || end) && (video || audio))) {
            // Bounded anyway: with no configuration at all nothing is held for long.
            if self.held.len() > MAX_HELD_FRAMES {
                self.stats.dropped_units += self.held.len() as u64;
                self.held.clear();
            }
            return;
        }
        self.started = true;
        out.push(TsEvent::Tracks(self.tracks.clone()));
        for mut f in self.held.drain(..) {
            f.tracks = self.tracks.clone();
            out.push(TsEvent::Frame(f));
        }
    }

    fn packet(&mut self, p: &[u8], out: &mut Vec<TsEvent>) {
        let tei = p[1] & 0x80 != 0;
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let afc = (p[3] >> 4) & 0x3;
        let cc = p[3] & 0x0f;
        let mut off = 4;
        let mut discontinuity = false;
        if afc & 0x2 != 0 {
            let len = usize::from(p[4]);
            if len > 0 {
                discontinuity = p[5] & 0x80 != 0;
            }
            off = 5 + len;
        }
        let has_payload = afc & 0x1 != 0;
        if off > PACKET_SIZE || pid == 0x1fff {
            return;
        }
        let payload = &p[off..];
        if pid == 0 {
            if pusi && has_payload && !tei {
                self.pat(payload);
            }
            return;
        }
        if Some(pid) == self.pmt_pid {
            if pusi && has_payload && !tei {
                self.pmt(payload);
            }
            return;
        }
        let Some(pes) = self.streams.get_mut(&pid) else { return };
        if !has_payload {
            return;
        }
        // Continuity (§2.4.3.3): one duplicate is allowed; any other step is loss, unless the
        // adaptation field announces a discontinuity.
        let lost = tei
            || match pes.last_cc {
                Some(last) if !discontinuity => {
                    if cc == last {
                        return; // duplicate packet
                    }
                    cc != (last + 1) & 0x0f
                }
                _ => false,
            };
        pes.last_cc = Some(cc);
        if lost {
            self.stats.cc_gaps += 1;
            if pes.active || !pes.buf.is_empty() {
                self.stats.dropped_units += 1;
            }
            pes.buf.clear();
            pes.active = false;
            if !pes.kind.is_audio() {
                self.wait_key = true;
            }
            if !pusi {
                return;
            }
        }
        if pusi {
            self.flush_pes(pid, out);
            let pes = self.streams.get_mut(&pid).expect("pid present above");
            pes.active = true;
        }
        let pes = self.streams.get_mut(&pid).expect("pid present above");
        if !pes.active {
            return;
        }
        if pes.buf.len() + payload.len() > MAX_PES_BYTES {
            pes.buf.clear();
            pes.active = false;
            self.stats.dropped_units += 1;
            return;
        }
        pes.buf.extend_from_slice(payload);
        // A bounded PES is complete as soon as its length is in: no need to wait for the next
        // start (which would add one frame of latency on audio).
        if pes.buf.len() >= 6 {
            let len = usize::from(u16::from_be_bytes([pes.buf[4], pes.buf[5]]));
            if len != 0 && pes.buf.len() >= 6 + len {
                self.flush_pes(pid, out);
            }
        }
    }

    /// Skips the pointer field and returns the section (table_id onward), CRC not checked: a
    /// broken table is caught by its own length checks, and loss is caught by the CC.
    fn section(payload: &[u8]) -> Option<&[u8]> {
        let pointer = usize::from(*payload.first()?);
        let s = payload.get(1 + pointer..)?;
        let len = usize::from(u16::from_be_bytes([*s.get(1)?, *s.get(2)?]) & 0x0fff);
        // Section body without the 4-byte CRC.
        s.get(..(3 + len).checked_sub(4)?.max(3))
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(s) = Self::section(payload) else { return };
        if s.first() != Some(&0x00) || s.len() < 8 {
            return;
        }
        for entry in s[8..].chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            if program != 0 {
                self.pmt_pid = Some(u16::from_be_bytes([entry[2], entry[3]]) & 0x1fff);
                return; // the first program; SRT senders carry one
            }
        }
    }

    fn pmt(&mut self, payload: &[u8]) {
        let Some(s) = Self::section(payload) else { return };
        if s.first() != Some(&0x02) || s.len() < 12 {
            return;
        }
        let info_len = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0fff);
        let mut i = 12 + info_len;
        let (mut video, mut audio) = (None, None);
        while i + 5 <= s.len() {
            let stream_type = s[i];
            let pid = u16::from_be_bytes([s[i + 1], s[i + 2]]) & 0x1fff;
            let es_len = usize::from(u16::from_be_bytes([s[i + 3], s[i + 4]]) & 0x0fff);
            let descriptors = s.get(i + 5..(i + 5 + es_len).min(s.len())).unwrap_or_default();
            let kind = match stream_type {
                0x1b => Some(StreamKind::H264),
                0x24 => Some(StreamKind::Hevc),
                0x0f => Some(StreamKind::AacAdts),
                0x06 => opus_stream(descriptors),
                _ => None,
            };
            match kind {
                Some(k) if k.is_audio() && audio.is_none() => audio = Some((pid, k)),
                Some(k) if !k.is_audio() && video.is_none() => video = Some((pid, k)),
                _ => {}
            }
            i += 5 + es_len;
        }
        // A repeated PMT (every 100 ms or so) keeps the running PES state.
        for (pid, kind) in [video, audio].into_iter().flatten() {
            if self.streams.get(&pid).map(|p| p.kind) != Some(kind) {
                self.streams.insert(pid, Pes { kind, last_cc: None, buf: BytesMut::new(), active: false });
            }
        }
        self.streams.retain(|pid, _| Some(*pid) == video.map(|v| v.0) || Some(*pid) == audio.map(|a| a.0));
    }

    /// Completes the PES assembled on `pid`, if any.
    fn flush_pes(&mut self, pid: u16, out: &mut Vec<TsEvent>) {
        let Some(pes) = self.streams.get_mut(&pid) else { return };
        let was_active = std::mem::replace(&mut pes.active, false);
        let buf = pes.buf.split().freeze();
        let kind = pes.kind;
        if !was_active || buf.is_empty() {
            return;
        }
        let Some((pts, dts, body)) = parse_pes_header(&buf) else {
            self.stats.dropped_units += 1;
            return;
        };
        match kind {
            StreamKind::H264 | StreamKind::Hevc => self.video_unit(kind, pts, dts, body, out),
            StreamKind::AacAdts => self.audio_units(pts, body, out),
            StreamKind::Opus { channels } => self.opus_units(channels, pts, body, out),
        }
    }

    fn video_unit(&mut self, kind: StreamKind, pts: u64, dts: u64, es: Bytes, out: &mut Vec<TsEvent>) {
        let hevc = kind == StreamKind::Hevc;
        let codec = if hevc { VideoCodec::H265 } else { VideoCodec::H264 };
        let mut data = BytesMut::with_capacity(es.len() + 16);
        let mut keyframe = false;
        let mut config_changed = false;
        for nal in annex_b_nals(&es) {
            let Some(&h) = nal.first() else { continue };
            let t = if hevc { (h >> 1) & 0x3f } else { h & 0x1f };
            let slot = match (hevc, t) {
                (false, 9) | (true, 35) => continue, // access unit delimiter
                (false, 7) | (true, 33) => Some(&mut self.sps),
                (false, 8) | (true, 34) => Some(&mut self.pps),
                (true, 32) => Some(&mut self.vps),
                _ => {
                    keyframe |= codec.is_random_access_nal(h);
                    None
                }
            };
            if let Some(slot) = slot {
                if slot.as_deref() != Some(nal) {
                    *slot = Some(es.slice_ref(nal));
                    config_changed = true;
                }
            }
            data.put_u32(nal.len() as u32);
            data.extend_from_slice(nal);
        }
        if config_changed {
            self.update_video_config(hevc, out);
        }
        if data.is_empty() {
            return;
        }
        if self.tracks.video.is_none() || (self.wait_key && !keyframe) {
            self.stats.dropped_units += 1;
            return;
        }
        self.wait_key = false;
        let (d, p, jumped) = self.video_clock.map(dts, pts);
        self.stats.timestamp_jumps += u64::from(jumped);
        let mut f = Frame::new(
            TrackKind::Video,
            MediaTime::new(d, TIMESCALE_90K),
            MediaTime::new(p, TIMESCALE_90K),
            keyframe,
            data.freeze(),
            self.tracks.clone(),
        );
        f.discontinuity = jumped;
        out.push(TsEvent::Frame(f));
    }

    fn update_video_config(&mut self, hevc: bool, out: &mut Vec<TsEvent>) {
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else { return };
        let config = if hevc {
            let Some(vps) = &self.vps else { return };
            VideoConfig::from_hevc_record(hvcc_record(vps, sps, pps))
        } else {
            VideoConfig::from_avc_record(avcc_record(sps, pps))
        };
        let Ok(config) = config else {
            return; // a parameter set we cannot describe: keep waiting (frames are dropped)
        };
        if self.tracks.video.as_ref() != Some(&config) {
            let mut t = (*self.tracks).clone();
            t.video = Some(config);
            self.tracks = Arc::new(t);
            out.push(TsEvent::Tracks(self.tracks.clone()));
        }
    }

    fn audio_units(&mut self, pts: u64, mut es: Bytes, out: &mut Vec<TsEvent>) {
        let mut index = 0u64;
        while !es.is_empty() {
            let Some(h) = AdtsHeader::parse(&es) else {
                self.stats.dropped_units += 1;
                return;
            };
            if h.frame_len > es.len() || h.header_len >= h.frame_len {
                self.stats.dropped_units += 1;
                return;
            }
            let frame = es.slice(h.header_len..h.frame_len);
            es = es.slice(h.frame_len..);
            let params = (h.profile, h.sampling_index, h.channel_config);
            if self.adts_params != Some(params) {
                let Ok(config) = AudioConfig::from_aac_asc(h.asc()) else {
                    self.stats.dropped_units += 1;
                    return;
                };
                self.adts_params = Some(params);
                let mut t = (*self.tracks).clone();
                t.audio = Some(config);
                self.tracks = Arc::new(t);
                out.push(TsEvent::Tracks(self.tracks.clone()));
            }
            let rate = self.tracks.audio.as_ref().map_or(48_000, |a| a.sample_rate.max(1));
            // Several ADTS frames share one PES timestamp (ffmpeg packs them): 1024 samples each.
            let t = pts + index * 1024 * u64::from(TIMESCALE_90K) / u64::from(rate);
            index += 1;
            self.audio_frame(t, frame, out);
        }
    }

    /// One audio frame at 90 kHz time `t` (before unwrapping), with the current track set.
    fn audio_frame(&mut self, t: u64, frame: Bytes, out: &mut Vec<TsEvent>) {
        let (d, _, jumped) = self.audio_clock.map(t, t);
        self.stats.timestamp_jumps += u64::from(jumped);
        let time = MediaTime::new(d, TIMESCALE_90K);
        out.push(TsEvent::Frame(Frame::new(TrackKind::Audio, time, time, false, frame, self.tracks.clone())));
    }
}

impl TsDemuxer {
    /// Opus access units of one PES: each is a control header (11-bit prefix `0x3ff`, trim and
    /// extension flags, the size as a run of 0xFF bytes plus one) and an Opus packet. The
    /// first takes the PES time; each next one follows by the previous packet's duration.
    fn opus_units(&mut self, channels: u8, pts: u64, mut es: Bytes, out: &mut Vec<TsEvent>) {
        if self.tracks.audio.as_ref().is_none_or(|a| a.codec != AudioCodec::Opus || a.channels != channels) {
            let Ok(config) = AudioConfig::from_opus_head(opus_head(channels)) else { return };
            let mut t = (*self.tracks).clone();
            t.audio = Some(config);
            self.tracks = Arc::new(t);
            out.push(TsEvent::Tracks(self.tracks.clone()));
        }
        let mut offset_48k = 0u64;
        while !es.is_empty() {
            let Some((header_len, size)) = opus_control_header(&es) else {
                self.stats.dropped_units += 1;
                return;
            };
            let Some(packet) = es.get(header_len..header_len + size) else {
                self.stats.dropped_units += 1;
                return;
            };
            let Some(samples) = opus_packet_samples(packet) else {
                self.stats.dropped_units += 1;
                return;
            };
            let frame = es.slice(header_len..header_len + size);
            es = es.slice(header_len + size..);
            let t = pts + offset_48k * u64::from(TIMESCALE_90K) / 48_000;
            offset_48k += u64::from(samples);
            self.audio_frame(t, frame, out);
        }
    }
}

/// An Opus elementary stream (stream type 0x06): a registration descriptor (tag 5) with format
/// identifier `Opus`, and the channel count from the extension descriptor (tag 0x7f, extension
/// tag 0x80: `channel_config_code` 1 or 2; without it, stereo). Other channel layouts need a
/// mapping table we do not carry: not taken.
fn opus_stream(descriptors: &[u8]) -> Option<StreamKind> {
    let (mut registered, mut channels) = (false, 2u8);
    let mut d = descriptors;
    while let [tag, len, rest @ ..] = d {
        let body = rest.get(..usize::from(*len))?;
        match (*tag, body) {
            (0x05, [b'O', b'p', b'u', b's', ..]) => registered = true,
            (0x7f, [0x80, code, ..]) => channels = *code,
            _ => {}
        }
        d = &rest[usize::from(*len)..];
    }
    (registered && matches!(channels, 1 | 2)).then_some(StreamKind::Opus { channels })
}

/// The `OpusHead` (RFC 7845 §5.1) of a mono or stereo stream from TS: version 1, no pre-skip
/// (TS carries trims per access unit), 48 kHz, mapping family 0.
pub(crate) fn opus_head(channels: u8) -> Bytes {
    let mut h = BytesMut::with_capacity(19);
    h.extend_from_slice(b"OpusHead");
    h.put_u8(1);
    h.put_u8(channels);
    h.put_u16_le(0);
    h.put_u32_le(48_000);
    h.put_u16_le(0);
    h.put_u8(0);
    h.freeze()
}

/// Parses an Opus access unit's control header: `(header length, packet size)`.
fn opus_control_header(b: &[u8]) -> Option<(usize, usize)> {
    let word = u16::from_be_bytes([*b.first()?, *b.get(1)?]);
    if word >> 5 != 0x3ff {
        return None;
    }
    let (start_trim, end_trim, extension) = (word & 0x10 != 0, word & 0x08 != 0, word & 0x04 != 0);
    let mut i = 2;
    let mut size = 0usize;
    loop {
        let v = *b.get(i)?;
        i += 1;
        size += usize::from(v);
        if v != 0xff {
            break;
        }
    }
    i += 2 * usize::from(start_trim) + 2 * usize::from(end_trim);
    if extension {
        i += 1 + usize::from(*b.get(i)?);
    }
    (i <= b.len()).then_some((i, size))
}

/// Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 §3.1); `None` for an
/// empty or malformed packet.
pub(crate) fn opus_packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame sizes in units of 2.5 ms (120 samples).
    let units = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    // At most 120 ms per packet (RFC 6716 §3.2.5).
    let samples = frames * units * 120;
    (frames > 0 && samples <= 5760).then_some(samples)
}

/// Parses a PES header (§2.4.3.6): returns `(pts, dts, elementary stream bytes)`. A PES without
/// a PTS is not usable (we cannot place it in time).
fn parse_pes_header(buf: &Bytes) -> Option<(u64, u64, Bytes)> {
    if buf.len() < 9 || buf[..3] != [0, 0, 1] {
        return None;
    }
    let pes_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    let flags = buf[7];
    let header_len = usize::from(buf[8]);
    let start = 9 + header_len;
    let end = if pes_len == 0 { buf.len() } else { 6 + pes_len };
    if start > end || end > buf.len() {
        return None;
    }
    let ts = |b: &[u8]| -> u64 {
        (u64::from(b[0] >> 1) & 0x07) << 30
            | u64::from(b[1]) << 22
            | u64::from(b[2] >> 1) << 15
            | u64::from(b[3]) << 7
            | u64::from(b[4] >> 1)
    };
    let (pts, dts) = match flags >> 6 {
        0b10 if header_len >= 5 => {
            let p = ts(&buf[9..14]);
            (p, p)
        }
        0b11 if header_len >= 10 => (ts(&buf[9..14]), ts(&buf[14..19])),
        _ => return None,
    };
    Some((pts, dts, buf.slice(start..end)))
}

/// Splits an Annex-B byte stream at start codes (`00 00 01`, with or without a leading zero),
/// dropping trailing zero bytes of each NAL unit (they are `trailing_zero_8bits`).
pub fn annex_b_nals(es: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= es.len() {
        if es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts.iter().skip(1).map(|s| s - 3).chain(std::iter::once(es.len())).collect();
    starts.into_iter().zip(ends).map(move |(s, e)| {
        let mut nal = &es[s..e.max(s)];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        nal
    })
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) from one SPS and one PPS, with
/// 4-byte NAL lengths. The high-profile trailer (chroma format, bit depth) is left out, as
/// ffmpeg's `ff_isom_write_avcc` did for years; decoders read those from the SPS.
pub fn avcc_record(sps: &[u8], pps: &[u8]) -> Bytes {
    let mut r = BytesMut::with_capacity(11 + sps.len() + pps.len());
    r.put_u8(1);
    r.put_slice(&[*sps.get(1).unwrap_or(&0), *sps.get(2).unwrap_or(&0), *sps.get(3).unwrap_or(&0)]);
    r.put_u8(0xff); // reserved + lengthSizeMinusOne = 3
    r.put_u8(0xe1); // reserved + one SPS
    r.put_u16(sps.len().min(0xffff) as u16);
    r.put_slice(&sps[..sps.len().min(0xffff)]);
    r.put_u8(1);
    r.put_u16(pps.len().min(0xffff) as u16);
    r.put_slice(&pps[..pps.len().min(0xffff)]);
    r.freeze()
}

/// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1) from one VPS, SPS and PPS. The
/// general profile/tier/level fields are copied from the SPS's profile_tier_level (after
/// removing emulation prevention bytes); chroma format and bit depth are written as 4:2:0 8-bit
/// (what SRT encoders send for live; decoders take the real values from the SPS).
pub fn hvcc_record(vps: &[u8], sps: &[u8], pps: &[u8]) -> Bytes {
    let rbsp = crate::media::codec::bits::strip_emulation_prevention(sps);
    // NAL header (2), then vps_id(4) max_sub_layers_minus1(3) temporal_id_nesting(1), then the
    // 12-byte general profile_tier_level.
    let mut ptl = [0u8; 12];
    if let Some(src) = rbsp.get(3..15) {
        ptl.copy_from_slice(src);
    }
    let nesting_and_layers = rbsp.get(2).copied().unwrap_or(0);
    let mut r = BytesMut::with_capacity(23 + 3 * 5 + vps.len() + sps.len() + pps.len());
    r.put_u8(1);
    r.put_slice(&ptl); // profile_space/tier/idc, 32 compat flags, 48 constraint flags, level
    r.put_u16(0xf000); // reserved + min_spatial_segmentation_idc 0
    r.put_u8(0xfc); // reserved + parallelismType 0
    r.put_u8(0xfd); // reserved + chromaFormat 1 (4:2:0)
    r.put_u8(0xf8); // reserved + bitDepthLumaMinus8 0
    r.put_u8(0xf8); // reserved + bitDepthChromaMinus8 0
    r.put_u16(0); // avgFrameRate unknown
                  // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
    let layers = ((nesting_and_layers >> 1) & 0x07) + 1;
    r.put_u8((layers & 0x07) << 3 | (nesting_and_layers & 1) << 2 | 0x03);
    r.put_u8(3);
    for (t, nal) in [(32u8, vps), (33, sps), (34, pps)] {
        r.put_u8(0x80 | t); // array_completeness 1
        r.put_u16(1);
        r.put_u16(nal.len().min(0xffff) as u16);
        r.put_slice(&nal[..nal.len().min(0xffff)]);
    }
    r.freeze()
}

/// The fields of an ADTS header (ISO/IEC 13818-7 §6.2.1) that build an AudioSpecificConfig.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdtsHeader {
    /// `profile_ObjectType`: audioObjectType - 1.
    pub profile: u8,
    pub sampling_index: u8,
    pub channel_config: u8,
    pub header_len: usize,
    /// Whole frame including the header.
    pub frame_len: usize,
}

impl AdtsHeader {
    pub fn parse(b: &[u8]) -> Option<AdtsHeader> {
        if b.len() < 7 || b[0] != 0xff || b[1] & 0xf0 != 0xf0 {
            return None;
        }
        let protection_absent = b[1] & 1 != 0;
        Some(AdtsHeader {
            profile: b[2] >> 6,
            sampling_index: (b[2] >> 2) & 0x0f,
            channel_config: (b[2] & 1) << 2 | b[3] >> 6,
            header_len: if protection_absent { 7 } else { 9 },
            frame_len: usize::from(b[3] & 0x03) << 11 | usize::from(b[4]) << 3 | usize::from(b[5] >> 5),
        })
    }

    /// AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), two bytes.
    pub fn asc(&self) -> Bytes {
        let aot = self.profile + 1;
        let v =
            u16::from(aot) << 11 | u16::from(self.sampling_index) << 7 | u16::from(self.channel_config) << 3;
        Bytes::copy_from_slice(&v.to_be_bytes())
    }
}

#[cfg(test)]
mod tests;
