//! WHIP's RTP in: packets of the publisher's H.264 and Opus tracks (already decrypted by
//! `rtc`) to media-model frames.
//!
//! Per track: a [`ReorderBuffer`] puts packets back in sequence order and waits a little for a
//! missing one (the NACK that `rtc` sends brings it back within a round trip); a [`Unwrapper`]
//! makes the 32-bit RTP timestamp a growing 64-bit one, folding a jump (a publisher that
//! restarted its clock) into an offset so that it never reaches the ring. Then H.264 goes
//! through retina's depacketizer (the RTSP pull's: FU-A with start/end checks, STAP-A bounds,
//! loss marks the access unit broken; `FrameFormat::MP4` output, an `avcC` built from the
//! in-band SPS/PPS that OBS sends before every IDR), and Opus is one frame per packet (RFC
//! 7587 §4.2). Both go into [`RtspDemux`], which places frames by the RTCP sender reports
//! (audio/video sync as the publisher's clock says) and starts video at a key frame.
//!
//! Invariants: as `RtspDemux`'s (growing DTS per track, PTS >= DTS, video from a key frame);
//! a packet that is neither in order nor a repair within the wait is dropped and counted.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use retina::codec::{CodecItem, Depacketizer, FrameFormat};
use retina::rtp::PacketMeta;
use retina::testutil::DepacketizeBuf;

use crate::media::AudioConfig;
use crate::protocols::rtsp::{RtspDemux, RtspEvent, Selected};

/// How long a gap in sequence numbers is waited for before the packets after it go on (a
/// NACK's repair comes back within a round trip; past this the access unit is lost).
pub const REORDER_WAIT: Duration = Duration::from_millis(150);
/// Packets held per track at most while waiting (about 0.3 s of 8 Mb/s video).
pub const REORDER_MAX: usize = 256;
/// A timestamp step further than this (either way) is a jump, folded into an offset.
pub const MAX_STEP: Duration = Duration::from_secs(10);

const VIDEO_CLOCK: u32 = 90_000;
const OPUS_CLOCK: u32 = 48_000;

/// Which of the publisher's tracks a packet is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtpKind {
    Video,
    Audio,
}

/// One RTP packet as `rtc` delivered it.
#[derive(Clone, Debug)]
struct Packet {
    timestamp: u32,
    marker: bool,
    ssrc: u32,
    payload: Bytes,
}

/// Sequence order with a bounded wait for repairs (see the module docs).
#[derive(Default)]
pub struct ReorderBuffer {
    /// The next extended sequence number to release.
    next: Option<u64>,
    /// The extended number of the highest packet seen.
    highest: u64,
    held: BTreeMap<u64, (Instant, Packet)>,
    /// Packets that came too late (already skipped) or twice.
    pub late: u64,
    /// Sequence numbers given up on.
    pub lost: u64,
}

impl ReorderBuffer {
    /// Extend a 16-bit sequence number to the one nearest the highest seen.
    fn extend(&self, seq: u16) -> u64 {
        let Some(_) = self.next else { return u64::from(seq) + (1 << 16) };
        let delta = seq.wrapping_sub(self.highest as u16) as i16 as i64;
        (self.highest as i64 + delta).max(0) as u64
    }

    fn insert(&mut self, seq: u16, p: Packet, now: Instant) {
        let ext = self.extend(seq);
        let next = *self.next.get_or_insert(ext);
        if ext < next || self.held.contains_key(&ext) {
            self.late += 1;
            return;
        }
        self.highest = self.highest.max(ext);
        self.held.insert(ext, (now, p));
    }

    /// Release what is in order; skip a gap that waited `REORDER_WAIT` or when too much is
    /// held. Each released packet comes with the number of packets lost just before it.
    fn release(&mut self, now: Instant, out: &mut Vec<(u16, u16, Packet)>) {
        let Some(mut next) = self.next else { return };
        while let Some((&first, (arrived, _))) = self.held.first_key_value() {
            let lost = first - next;
            if lost > 0 && now.duration_since(*arrived) < REORDER_WAIT && self.held.len() < REORDER_MAX {
                break;
            }
            let p = self.held.remove(&first).expect("first key exists").1;
            self.lost += lost;
            out.push((first as u16, lost.min(u64::from(u16::MAX)) as u16, p));
            next = first + 1;
        }
        self.next = Some(next);
    }
}

/// 32-bit RTP timestamps to a growing 64-bit timeline (see the module docs).
#[derive(Default)]
struct Unwrapper {
    last_raw: u32,
    last: Option<i64>,
    /// Ticks per nominal frame, the step a jump is replaced by.
    step: i64,
    max_step: i64,
    jumps: u64,
}

impl Unwrapper {
    fn new(clock: u32, step: i64) -> Self {
        Unwrapper { step, max_step: MAX_STEP.as_secs() as i64 * i64::from(clock), ..Default::default() }
    }

    fn unwrap(&mut self, raw: u32) -> i64 {
        let Some(last) = self.last else {
            self.last_raw = raw;
            self.last = Some(i64::from(raw));
            return i64::from(raw);
        };
        let mut delta = i64::from(raw.wrapping_sub(self.last_raw) as i32);
        if delta.abs() > self.max_step {
            self.jumps += 1;
            delta = self.step;
        }
        self.last_raw = raw;
        let t = last + delta;
        self.last = Some(t);
        t
    }

    /// Where `raw` sits on the timeline without moving it (a sender report's RTP time).
    fn peek(&self, raw: u32) -> Option<i64> {
        Some(self.last? + i64::from(raw.wrapping_sub(self.last_raw) as i32))
    }
}

struct VideoIn {
    reorder: ReorderBuffer,
    clock: Unwrapper,
    depacketizer: Depacketizer,
    buf: DepacketizeBuf,
}

struct AudioIn {
    reorder: ReorderBuffer,
    clock: Unwrapper,
}

/// A WHIP publisher's RTP to frames (see the module docs).
pub struct WhipDepacketizer {
    video: VideoIn,
    audio: Option<AudioIn>,
    demux: RtspDemux,
    ready: Vec<(u16, u16, Packet)>,
    /// The video needs a key frame (loss broke the picture, or none came yet): ask with a PLI.
    key_wanted: bool,
    /// A key frame reached the output since the last loss.
    keyed: bool,
    /// When the newest key frame arrived.
    last_key: Option<Instant>,
}

impl WhipDepacketizer {
    /// `h264_fmtp`: the offer's fmtp line of the H.264 payload type (parameter sets, if it
    /// carries them); `opus_channels`: the offer's Opus channel count, `None` without audio.
    pub fn new(h264_fmtp: Option<&str>, opus_channels: Option<u8>, now: Instant) -> Result<Self, String> {
        // Only a line with parameter sets tells retina anything; others may carry keys it
        // refuses to guess about.
        let fmtp = h264_fmtp.filter(|f| f.contains("sprop-parameter-sets"));
        let mut depacketizer = Depacketizer::new("video", "h264", VIDEO_CLOCK, None, fmtp)?;
        depacketizer.set_frame_format(FrameFormat::MP4);
        let video = Some(Selected { index: 0, clock_rate: VIDEO_CLOCK });
        let audio = opus_channels.map(|_| Selected { index: 1, clock_rate: OPUS_CLOCK });
        let mut demux = RtspDemux::new(video, audio, now);
        demux.set_parameters(0, depacketizer.parameters())?;
        if let Some(channels) = opus_channels {
            let config = AudioConfig::from_opus_head(crate::protocols::ts::opus_head(channels.clamp(1, 2)))
                .map_err(|e| e.to_string())?;
            demux.set_audio(config);
        }
        Ok(WhipDepacketizer {
            video: VideoIn {
                reorder: ReorderBuffer::default(),
                clock: Unwrapper::new(VIDEO_CLOCK, 3000),
                depacketizer,
                buf: DepacketizeBuf::new(1 << 16),
            },
            audio: opus_channels.map(|_| AudioIn {
                reorder: ReorderBuffer::default(),
                clock: Unwrapper::new(OPUS_CLOCK, 960),
            }),
            demux,
            ready: Vec::new(),
            key_wanted: true,
            keyed: false,
            last_key: None,
        })
    }

    /// One RTP packet. Frames ready to go are appended to `out`. An error is a packet the
    /// depacketizer cannot make sense of; the session ends with it as the reason.
    #[allow(clippy::too_many_arguments)]
    pub fn rtp(
        &mut self,
        kind: RtpKind,
        seq: u16,
        timestamp: u32,
        marker: bool,
        ssrc: u32,
        payload: Bytes,
        now: Instant,
        out: &mut Vec<RtspEvent>,
    ) -> Result<(), String> {
        let p = Packet { timestamp, marker, ssrc, payload };
        match kind {
            RtpKind::Video => self.video.reorder.insert(seq, p, now),
            RtpKind::Audio => match &mut self.audio {
                Some(a) => a.reorder.insert(seq, p, now),
                None => return Ok(()),
            },
        }
        self.drain(now, out)
    }

    /// A sender report of `kind`'s stream: RTP time `rtp` was NTP time `ntp` (32.32).
    pub fn sender_report(
        &mut self,
        kind: RtpKind,
        rtp: u32,
        ntp: u64,
        now: Instant,
        out: &mut Vec<RtspEvent>,
    ) {
        let (stream, elapsed) = match kind {
            RtpKind::Video => (0, self.video.clock.peek(rtp)),
            RtpKind::Audio => (1, self.audio.as_ref().and_then(|a| a.clock.peek(rtp))),
        };
        // Before the stream's first packet the report cannot be placed; the next one will be.
        if let Some(elapsed) = elapsed {
            self.demux.sender_report(stream, elapsed, ntp, now, out);
        }
    }

    /// Call now and then (the session does every 100 ms): releases packets whose gap waited
    /// long enough and ends the sender-report wait.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<RtspEvent>) -> Result<(), String> {
        self.drain(now, out)?;
        self.demux.tick(now, out);
        Ok(())
    }

    /// Whether to ask the publisher for a key frame now (cleared by asking).
    pub fn take_key_request(&mut self) -> bool {
        std::mem::take(&mut self.key_wanted)
    }

    /// The video has had no key frame since the start or the last loss.
    pub fn waiting_for_key(&self) -> bool {
        !self.keyed
    }

    /// How long ago the newest key frame arrived (`None`: none yet).
    pub fn key_age(&self, now: Instant) -> Option<Duration> {
        self.last_key.map(|t| now.saturating_duration_since(t))
    }

    /// When the newest key frame arrived.
    pub fn last_key(&self) -> Option<Instant> {
        self.last_key
    }

    /// Packets given up on, late or duplicate, and timestamp jumps folded, over both tracks.
    pub fn losses(&self) -> (u64, u64, u64) {
        let a = self.audio.as_ref();
        (
            self.video.reorder.lost + a.map_or(0, |a| a.reorder.lost),
            self.video.reorder.late + a.map_or(0, |a| a.reorder.late),
            self.video.clock.jumps + a.map_or(0, |a| a.clock.jumps),
        )
    }

    fn drain(&mut self, now: Instant, out: &mut Vec<RtspEvent>) -> Result<(), String> {
        let mut ready = std::mem::take(&mut self.ready);
        self.video.reorder.release(now, &mut ready);
        for (seq, lost, p) in ready.drain(..) {
            if lost > 0 {
                self.key_wanted = true;
                self.keyed = false;
            }
            // Padding-only packets (bandwidth probes; `rtc` removed the padding) carry no media.
            if p.payload.is_empty() {
                continue;
            }
            let ts = self.video.clock.unwrap(p.timestamp);
            let meta = PacketMeta {
                ctx: retina::PacketContext::dummy(),
                stream_id: 0,
                timestamp: retina::Timestamp::new(ts, NonZeroU32::new(VIDEO_CLOCK).expect("non-zero"), 0)
                    .ok_or("RTP timestamp out of range")?,
                sequence_number: seq,
                ssrc: p.ssrc,
                mark: p.marker,
                loss: lost,
            };
            self.video
                .buf
                .push(&mut self.video.depacketizer, meta, &p.payload)
                .map_err(|e| format!("H.264 RTP packet {seq}: {e}"))?;
            while let Some(item) = self.video.depacketizer.pull() {
                let item = item.map_err(|e| format!("H.264 RTP: {e:?}"))?;
                if let CodecItem::VideoFrame(f) = &item {
                    if f.has_new_parameters() {
                        self.demux.set_parameters(0, self.video.depacketizer.parameters())?;
                    }
                    if f.is_random_access_point() {
                        self.keyed = true;
                        self.last_key = Some(now);
                    }
                }
                self.demux.push(item, now, out);
            }
        }
        if let Some(a) = &mut self.audio {
            a.reorder.release(now, &mut ready);
            for (_, _, p) in ready.drain(..) {
                // RFC 7587 §4.2: one Opus packet per RTP payload; an empty one is a DTX gap.
                if p.payload.is_empty() {
                    continue;
                }
                let ts = a.clock.unwrap(p.timestamp);
                self.demux.media(1, ts, false, p.payload, now, out);
            }
        }
        self.ready = ready;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ts: u32) -> Packet {
        Packet { timestamp: ts, marker: true, ssrc: 1, payload: Bytes::from_static(b"x") }
    }

    #[test]
    fn reorder_waits_for_a_repair_then_gives_up() {
        let t0 = Instant::now();
        let mut r = ReorderBuffer::default();
        let mut out = Vec::new();
        r.insert(65534, pkt(0), t0);
        r.insert(0, pkt(2), t0); // 65535 missing, across the wrap
        r.release(t0, &mut out);
        assert_eq!(out.len(), 1, "waits for 65535");
        r.insert(65535, pkt(1), t0 + Duration::from_millis(20));
        r.release(t0 + Duration::from_millis(20), &mut out);
        assert_eq!(out.iter().map(|p| p.2.timestamp).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(r.lost, 0);
        out.clear();
        r.insert(2, pkt(4), t0);
        r.release(t0 + REORDER_WAIT, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1, 1, "one lost before it");
        r.insert(1, pkt(3), t0);
        assert_eq!(r.late, 1, "a repair after the gap was skipped is late");
    }

    #[test]
    fn unwrapper_wraps_and_folds_jumps() {
        let mut u = Unwrapper::new(90_000, 3000);
        assert_eq!(u.unwrap(u32::MAX - 1499), i64::from(u32::MAX - 1499));
        assert_eq!(u.unwrap(1500), i64::from(u32::MAX) + 1501);
        let before = u.unwrap(4500);
        let after = u.unwrap(4500 + 3_600_000 * 90); // an hour ahead
        assert_eq!(after - before, 3000);
        assert_eq!(u.jumps, 1);
        assert_eq!(u.peek(4500 + 3_600_000 * 90 + 90), Some(after + 90));
    }
}
