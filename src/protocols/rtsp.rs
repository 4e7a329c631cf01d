//! RTSP pull, the sans-IO half: camera source URLs (credentials kept apart and never shown) and
//! [`RtspDemux`], which turns what retina depacketized into media-model [`Frame`]s on one
//! timeline. WHIP ingest (`protocols::webrtc::depacketize`) times its RTP with the same demuxer:
//! both are RTP with sender reports.
//!
//! Where it sits: the RTSP pull adapter (`actors/ingest/rtsp.rs`) runs retina's client
//! (DESCRIBE, SETUP, PLAY, keep-alives, auth, RTP/RTCP over TCP-interleaved or UDP) and hands
//! every item it yields to [`RtspDemux`]; the frames go to the channel's `IngestSession`.
//! retina's depacketizers already give what the media model wants: video as 4-byte
//! length-prefixed NAL units with an `avcC`/`hvcC` record (`FrameFormat::MP4`), AAC as raw frames
//! with an AudioSpecificConfig.
//!
//! Timing. RTP timestamps of different streams start at random values and tick at their own
//! clocks; only RTCP sender reports (RFC 3550 §6.4.1) say which RTP time of each stream belongs
//! to which wall-clock (NTP) instant. So the demuxer holds frames until every selected stream
//! has had a sender report, then places each frame at `ntp(SR) + (rtp - rtp(SR)) / clock` and
//! releases them in arrival order on a timeline that starts at the first frame. A camera that
//! sends no reports within [`SR_WAIT`] (or fills [`MAX_HELD_FRAMES`]) is played on retina's
//! `RTP-Info`-based times instead, with one log line. After that the mapping is kept: a later
//! report never moves frames (a camera's NTP clock may step; its RTP clock does not).
//!
//! Invariants: decode times only grow per track (RTP carries presentation times; a frame that
//! would go back, such as a B-frame, gets the last time plus one tick); video starts at a key
//! frame and audio waits for it; nothing leaves before the track set is known.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use retina::codec::{AudioFrame, CodecItem, ParametersRef, VideoFrame};
use retina::rtcp::ReceivedCompoundPacket;

use crate::media::{AudioConfig, Frame, MediaTime, TrackKind, Tracks, VideoCodec, VideoConfig};

/// How long frames are held at the start waiting for every stream's first sender report.
pub const SR_WAIT: Duration = Duration::from_secs(6);
/// Frames held at most while waiting (about 8 s of 25 fps video with AAC at 48 kHz).
pub const MAX_HELD_FRAMES: usize = 600;

/// Which wire transport to ask the camera for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RtspTransport {
    /// RTP and RTCP interleaved on the RTSP TCP connection: works through NAT and firewalls.
    #[default]
    Tcp,
    /// RTP and RTCP on UDP port pairs: for cameras on the same LAN.
    Udp,
}

impl RtspTransport {
    pub fn label(self) -> &'static str {
        match self {
            RtspTransport::Tcp => "tcp",
            RtspTransport::Udp => "udp",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(RtspTransport::Tcp),
            "udp" => Ok(RtspTransport::Udp),
            _ => Err("transport must be tcp or udp".into()),
        }
    }
}

/// A camera's URL: `rtsp://[user[:pass]@]host[:port]/path[?query]`, with the credentials taken
/// out. `Display` and [`SourceUrl::masked`] never show them.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceUrl {
    /// The URL without user and password (what is logged, stored and shown).
    url: url::Url,
    username: String,
    password: String,
}

impl SourceUrl {
    /// Parse and validate. The error never echoes the input (it may hold a password).
    pub fn parse(s: &str) -> Result<SourceUrl, String> {
        if s.len() > 2048 {
            return Err("the URL is longer than 2048 bytes".into());
        }
        let mut url = url::Url::parse(s).map_err(|e| format!("not a valid URL ({e})"))?;
        if !url.scheme().eq_ignore_ascii_case("rtsp") {
            return Err("only rtsp:// URLs can be pulled".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL needs a host".into());
        }
        if url.fragment().is_some() {
            return Err("the URL must not have a fragment".into());
        }
        let decode = |s: &str| {
            percent_decode(s)
                .ok_or_else(|| "the URL's credentials are not valid percent-encoded UTF-8".to_string())
        };
        let username = decode(url.username())?;
        let password = decode(url.password().unwrap_or(""))?;
        // Both setters only fail for URLs that cannot have credentials; an rtsp URL with a host
        // always can.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(SourceUrl { url, username, password })
    }

    /// Credentials given separately (the API's `username`/`password`) win over none in the URL.
    pub fn with_credentials(mut self, username: Option<String>, password: Option<String>) -> Self {
        if let Some(u) = username {
            self.username = u;
        }
        if let Some(p) = password {
            self.password = p;
        }
        self
    }

    /// The URL without credentials.
    pub fn masked(&self) -> &str {
        self.url.as_str()
    }

    /// The URL retina connects to (no credentials in it: they go in `SessionOptions::creds`,
    /// so retina's errors, which name the URL, never carry them).
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn has_credentials(&self) -> bool {
        !self.username.is_empty()
    }
}

impl std::fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.masked())
    }
}

impl std::fmt::Debug for SourceUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceUrl({}, credentials: {})", self.masked(), self.has_credentials())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What the demuxer produced.
#[derive(Debug)]
pub enum RtspEvent {
    /// The track set changed (first configuration, or new parameter sets); later frames carry it.
    Tracks(Arc<Tracks>),
    Frame(Frame),
}

/// A stream of the presentation as the pull adapter chose it.
#[derive(Clone, Copy, Debug)]
pub struct Selected {
    /// retina's stream index.
    pub index: usize,
    /// RTP clock rate in Hz.
    pub clock_rate: u32,
}

/// How timestamps are placed on the output timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// Holding frames until every stream has a sender report (or `SR_WAIT` passes).
    Waiting,
    /// Placed by sender reports: audio and video in sync as the camera's clock says.
    SenderReports,
    /// No reports in time: retina's times from `RTP-Info` (synced if the camera sent `rtptime`
    /// for every stream, else each stream starts at zero).
    RtpInfo,
}

/// Per-stream timing state.
#[derive(Clone, Copy, Debug, Default)]
struct StreamClock {
    clock_rate: u32,
    /// Wall-clock nanoseconds at RTP elapsed time zero, from the first sender report.
    offset_ns: Option<i128>,
    /// Last decode time released, in the stream's ticks on the output timeline.
    last_dts: Option<i64>,
}

/// A frame held until timing is settled.
struct Held {
    /// When it reached the demuxer (its `received_at`: LL-HLS dates it by that, not the release).
    arrived: Instant,
    track: TrackKind,
    /// retina's elapsed RTP time of the frame, in the stream's clock.
    elapsed: i64,
    keyframe: bool,
    data: Bytes,
}

/// retina items in, frames out (see the module docs).
pub struct RtspDemux {
    video: Option<Selected>,
    audio: Option<Selected>,
    clocks: [StreamClock; 2],
    timing: Timing,
    started: Instant,
    /// Wall-clock (or NPT) nanoseconds of output time zero.
    base_ns: Option<i128>,
    tracks: Tracks,
    /// The current track set, once complete and announced.
    announced: Option<Arc<Tracks>>,
    /// Video seen a key frame since the (re)start of the output.
    keyed: bool,
    held: VecDeque<Held>,
    /// Frames dropped before the track set was known or before the first key frame.
    pub dropped: u64,
}

impl RtspDemux {
    /// `now` starts the sender-report wait.
    pub fn new(video: Option<Selected>, audio: Option<Selected>, now: Instant) -> Self {
        let clock = |s: Option<Selected>| StreamClock {
            clock_rate: s.map_or(1, |s| s.clock_rate.max(1)),
            ..Default::default()
        };
        RtspDemux {
            video,
            audio,
            clocks: [clock(video), clock(audio)],
            timing: Timing::Waiting,
            started: now,
            base_ns: None,
            tracks: Tracks::default(),
            announced: None,
            keyed: video.is_none(),
            held: VecDeque::new(),
            dropped: 0,
        }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn slot(&self, stream: usize) -> Option<(usize, TrackKind)> {
        if self.video.is_some_and(|s| s.index == stream) {
            Some((0, TrackKind::Video))
        } else if self.audio.is_some_and(|s| s.index == stream) {
            Some((1, TrackKind::Audio))
        } else {
            None
        }
    }

    /// A stream's parameters (from the SDP, or new ones with a frame). Unusable parameters are
    /// an error naming the stream; the caller ends the session.
    pub fn set_parameters(&mut self, stream: usize, params: Option<ParametersRef<'_>>) -> Result<(), String> {
        let Some((_, kind)) = self.slot(stream) else { return Ok(()) };
        match (kind, params) {
            (TrackKind::Video, Some(ParametersRef::Video(v))) => {
                let record = Bytes::copy_from_slice(v.extra_data());
                let config =
                    if v.rfc6381_codec().starts_with("hvc1") || v.rfc6381_codec().starts_with("hev1") {
                        VideoConfig::from_hevc_record(record)
                    } else {
                        VideoConfig::from_avc_record(record)
                    }
                    .map_err(|e| format!("video parameters: {e}"))?;
                if self.tracks.video.as_ref() != Some(&config) {
                    self.tracks.video = Some(config);
                    self.announced = None;
                }
            }
            (TrackKind::Audio, Some(ParametersRef::Audio(a))) => {
                let config = AudioConfig::from_aac_asc(Bytes::copy_from_slice(a.extra_data()))
                    .map_err(|e| format!("audio parameters: {e}"))?;
                if self.tracks.audio.as_ref() != Some(&config) {
                    self.tracks.audio = Some(config);
                    self.announced = None;
                }
            }
            // Not known yet (video parameters may only come with the first frame).
            (_, None) => {}
            (_, Some(_)) => return Err(format!("stream {stream}: parameters of another media type")),
        }
        Ok(())
    }

    /// An audio configuration known from elsewhere than retina (WHIP's Opus, whose RTP carries
    /// no parameters: `OpusHead` from the SDP's channel count).
    pub fn set_audio(&mut self, config: AudioConfig) {
        if self.tracks.audio.as_ref() != Some(&config) {
            self.tracks.audio = Some(config);
            self.announced = None;
        }
    }

    fn complete(&self) -> bool {
        self.video.is_none_or(|_| self.tracks.video.is_some())
            && self.audio.is_none_or(|_| self.tracks.audio.is_some())
    }

    /// One item from retina's demuxed stream; frames ready to go are appended to `out`.
    pub fn push(&mut self, item: CodecItem, now: Instant, out: &mut Vec<RtspEvent>) {
        match item {
            CodecItem::VideoFrame(f) => self.video_frame(f, now, out),
            CodecItem::AudioFrame(f) => self.audio_frame(f, now, out),
            CodecItem::Rtcp(p) => self.rtcp(&p, now, out),
            // ONVIF metadata and anything retina adds later: not media we carry.
            _ => {}
        }
    }

    fn video_frame(&mut self, f: VideoFrame, now: Instant, out: &mut Vec<RtspEvent>) {
        let (stream, elapsed) = (f.stream_id(), f.timestamp().elapsed());
        // retina marks only IDR pictures; a CRA (an IRAP picture too) starts a GOP as well.
        let data = Bytes::from(f.into_data());
        let keyframe = self.tracks.video.as_ref().is_some_and(|v| random_access(v.codec, &data));
        self.media(stream, elapsed, keyframe, data, now, out);
    }

    fn audio_frame(&mut self, f: AudioFrame, now: Instant, out: &mut Vec<RtspEvent>) {
        let data = Bytes::copy_from_slice(f.data());
        self.media(f.stream_id(), f.timestamp().elapsed(), false, data, now, out);
    }

    fn rtcp(&mut self, p: &ReceivedCompoundPacket, now: Instant, out: &mut Vec<RtspEvent>) {
        let Some(rtp) = p.rtp_timestamp() else { return };
        if let Some(sr) = p.pkts().find_map(|pkt| pkt.as_sender_report().ok().flatten()) {
            self.sender_report(p.stream_id(), rtp.elapsed(), sr.ntp_timestamp().0, now, out);
        }
    }

    /// One access unit of `stream` at retina's elapsed RTP time `elapsed` (stream clock ticks).
    /// Video `data` is length-prefixed NAL units; audio a raw AAC frame.
    pub fn media(
        &mut self,
        stream: usize,
        elapsed: i64,
        keyframe: bool,
        data: Bytes,
        now: Instant,
        out: &mut Vec<RtspEvent>,
    ) {
        let Some((_, track)) = self.slot(stream) else { return };
        self.held.push_back(Held {
            arrived: now,
            track,
            elapsed,
            keyframe: keyframe && track == TrackKind::Video,
            data,
        });
        self.settle(now, out);
    }

    /// A sender report of `stream`: RTP elapsed time `elapsed` was NTP time `ntp` (32.32 fixed
    /// point). Only the first report of each stream is used.
    pub fn sender_report(
        &mut self,
        stream: usize,
        elapsed: i64,
        ntp: u64,
        now: Instant,
        out: &mut Vec<RtspEvent>,
    ) {
        let Some((slot, _)) = self.slot(stream) else { return };
        let clock = &mut self.clocks[slot];
        if clock.offset_ns.is_none() {
            // NTP 32.32 fixed point to nanoseconds (the era does not matter: only differences do).
            let ntp_ns =
                ((ntp >> 32) as i128) * 1_000_000_000 + (((ntp & 0xffff_ffff) as i128 * 1_000_000_000) >> 32);
            clock.offset_ns = Some(ntp_ns - ticks_to_ns(elapsed, clock.clock_rate));
        }
        self.settle(now, out);
    }

    /// Call now and then (the adapter does on every item and once a second): ends the
    /// sender-report wait when it has lasted `SR_WAIT`.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<RtspEvent>) {
        self.settle(now, out);
    }

    fn settle(&mut self, now: Instant, out: &mut Vec<RtspEvent>) {
        if self.timing == Timing::Waiting {
            let reported = [self.video, self.audio]
                .iter()
                .zip(&self.clocks)
                .all(|(s, c)| s.is_none() || c.offset_ns.is_some());
            if reported {
                self.timing = Timing::SenderReports;
            } else if now.duration_since(self.started) >= SR_WAIT || self.held.len() >= MAX_HELD_FRAMES {
                tracing::info!(
                    wait_ms = now.duration_since(self.started).as_millis() as u64,
                    "no RTCP sender report from every stream: timing from RTP-Info"
                );
                self.timing = Timing::RtpInfo;
            } else {
                return;
            }
        }
        while let Some(h) = self.held.pop_front() {
            self.release(h, now, out);
        }
    }

    /// Wall-clock (or NPT) nanoseconds of a frame.
    fn wall_ns(&self, slot: usize, elapsed: i64) -> i128 {
        let c = &self.clocks[slot];
        let offset = if self.timing == Timing::SenderReports { c.offset_ns.unwrap_or(0) } else { 0 };
        offset + ticks_to_ns(elapsed, c.clock_rate)
    }

    fn release(&mut self, h: Held, now: Instant, out: &mut Vec<RtspEvent>) {
        if !self.complete() {
            self.dropped += 1;
            return;
        }
        let tracks = match &self.announced {
            Some(t) => t.clone(),
            None => {
                let t = Arc::new(self.tracks.clone());
                self.announced = Some(t.clone());
                out.push(RtspEvent::Tracks(t.clone()));
                t
            }
        };
        if h.track == TrackKind::Video && h.keyframe {
            self.keyed = true;
        }
        if !self.keyed {
            self.dropped += 1;
            return;
        }
        let slot = if h.track == TrackKind::Video { 0 } else { 1 };
        let wall = self.wall_ns(slot, h.elapsed);
        let base = *self.base_ns.get_or_insert(wall);
        let clock = &mut self.clocks[slot];
        let pts = ns_to_ticks(wall - base, clock.clock_rate);
        if pts < 0 {
            // Audio from before the first key frame's instant.
            self.dropped += 1;
            return;
        }
        let dts = match clock.last_dts {
            Some(last) if pts <= last => last + 1,
            _ => pts,
        };
        clock.last_dts = Some(dts);
        let timescale = clock.clock_rate;
        let mut frame = Frame::new(
            h.track,
            MediaTime::new(dts, timescale),
            MediaTime::new(pts.max(dts), timescale),
            h.keyframe,
            h.data,
            tracks,
        );
        if let Some(at) = std::time::SystemTime::now().checked_sub(now.saturating_duration_since(h.arrived)) {
            frame.received_at = at;
        }
        out.push(RtspEvent::Frame(frame));
    }
}

/// Whether length-prefixed (4-byte) NAL units hold a random access picture.
fn random_access(codec: VideoCodec, mut data: &[u8]) -> bool {
    while data.len() > 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let Some(nal) = data.get(4..4 + len) else { return false };
        if nal.first().is_some_and(|&h| codec.is_random_access_nal(h)) {
            return true;
        }
        data = &data[4 + len..];
    }
    false
}

fn ticks_to_ns(ticks: i64, clock_rate: u32) -> i128 {
    ticks as i128 * 1_000_000_000 / clock_rate.max(1) as i128
}

fn ns_to_ticks(ns: i128, clock_rate: u32) -> i64 {
    (ns * clock_rate as i128).div_euclid(1_000_000_000) as i64
}

#[cfg(test)]
mod tests;
