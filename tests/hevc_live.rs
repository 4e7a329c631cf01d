//! H.265 in over enhanced RTMP, `hvc1` CMAF out over LL-HLS, end to end: the real `tidecast`
//! binary, a publisher built here, and ffmpeg/ffprobe as the oracle for what comes out.
//!
//! ffmpeg 5.1 cannot publish HEVC over RTMP ("Video codec hevc not compatible with flv"), so the
//! test publishes itself: libx265 encodes a 6 s 640x360 30 fps clip to Annex B (key frame every
//! 30 frames, no B-frames, so decode order is presentation order and composition time is 0); the
//! test splits it into access units, builds the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15
//! §8.3.3.1) from the stream's own VPS/SPS/PPS, and sends veovera enhanced-RTMP video tags over
//! rml_rtmp's `ClientSession`: `SequenceStart` + FourCC `hvc1` + hvcC, then one `CodedFramesX`
//! (4-byte-length-prefixed NAL units, no composition time) per access unit, paced in real time.
//!
//! Checked: the multivariant playlist's CODECS (computed here from the record, ISO/IEC 14496-15
//! Annex E) and RESOLUTION; LL-HLS parts and complete segments in the media playlist; an `hvc1`
//! sample entry in the init segment whose `hvcC` is the record sent, byte for byte; ffprobe sees
//! hevc/hvc1 640x360; ffmpeg decodes init + first segment without a word at `-v error`, to the
//! frame count the segment's duration implies, and the decoded pictures are the source's
//! (per-frame MD5s match a contiguous run of the clip's).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tidecast::protocols::hls::validate_multivariant;

const PLAYLIST: &str = "/live/main/source/index.m3u8";
/// What relative media URIs in [`PLAYLIST`] resolve against.
const MEDIA_BASE: &str = "/live/main/source/";
const MULTIVARIANT: &str = "/live/main/index.m3u8";
const FPS: u32 = 30;
const CLIP_SECONDS: u32 = 6;

// ---------------------------------------------------------------------------------------------
// H.265 Annex B -> access units and an hvcC record

const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;
const NAL_AUD: u8 = 35;
const NAL_PREFIX_SEI: u8 = 39;

fn nal_type(nal: &[u8]) -> u8 {
    (nal[0] >> 1) & 0x3f
}

/// The NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01), without start
/// codes or trailing zero bytes.
fn split_annex_b(data: &[u8]) -> Vec<&[u8]> {
    // (start of the start code, start of the NAL unit)
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &(_, from))| {
            let to = starts.get(k + 1).map_or(data.len(), |&(sc, _)| sc);
            let mut nal = &data[from..to];
            // A NAL unit ends in its RBSP stop bit, never 0x00: zeros are the next 4-byte start
            // code's leading byte or trailing_zero_8bits.
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            nal
        })
        .filter(|nal| nal.len() >= 2)
        .collect()
}

/// One coded picture as sent: its NAL units minus parameter sets and delimiters (hvc1 keeps
/// parameter sets out of band, in the hvcC).
struct AccessUnit {
    keyframe: bool,
    nals: Vec<Vec<u8>>,
}

struct Clip {
    vps: Vec<u8>,
    sps: Vec<u8>,
    pps: Vec<u8>,
    aus: Vec<AccessUnit>,
}

/// Groups NAL units into access units (H.265 §7.4.2.4.4): a new one starts, after a VCL NAL unit,
/// at a VPS/SPS/PPS/AUD/prefix SEI or at a slice with first_slice_segment_in_pic_flag set.
fn parse_clip(data: &[u8]) -> Clip {
    let (mut vps, mut sps, mut pps) = (None::<Vec<u8>>, None::<Vec<u8>>, None::<Vec<u8>>);
    let mut aus: Vec<AccessUnit> = Vec::new();
    let mut cur = AccessUnit { keyframe: false, nals: Vec::new() };
    let mut cur_has_vcl = false;
    for nal in split_annex_b(data) {
        let t = nal_type(nal);
        let vcl = t < 32;
        let first_slice = vcl && nal.get(2).is_some_and(|b| b & 0x80 != 0);
        let starts_au = first_slice || matches!(t, NAL_VPS..=NAL_AUD | NAL_PREFIX_SEI);
        if starts_au && cur_has_vcl {
            aus.push(std::mem::replace(&mut cur, AccessUnit { keyframe: false, nals: Vec::new() }));
            cur_has_vcl = false;
        }
        match t {
            NAL_VPS | NAL_SPS | NAL_PPS => {
                let slot = match t {
                    NAL_VPS => &mut vps,
                    NAL_SPS => &mut sps,
                    _ => &mut pps,
                };
                // x265 repeats the parameter sets at every key frame; out of band is only
                // right if they never change.
                match slot {
                    Some(first) => assert_eq!(first, nal, "parameter set type {t} changed mid-stream"),
                    None => *slot = Some(nal.to_vec()),
                }
            }
            NAL_AUD => {}
            _ => {
                if vcl {
                    cur_has_vcl = true;
                    // IRAP pictures (BLA, IDR, CRA): types 16..=23.
                    cur.keyframe |= (16..=23).contains(&t);
                }
                cur.nals.push(nal.to_vec());
            }
        }
    }
    if cur_has_vcl {
        aus.push(cur);
    }
    Clip {
        vps: vps.expect("a VPS in the stream"),
        sps: sps.expect("an SPS in the stream"),
        pps: pps.expect("a PPS in the stream"),
        aus,
    }
}

/// The RBSP of a NAL unit: emulation-prevention bytes (00 00 03 -> 00 00) removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// An HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 §8.3.3.1) for an 8-bit 4:2:0 stream with
/// one array each of VPS, SPS and PPS and 4-byte NAL unit lengths.
fn hvcc(clip: &Clip) -> Vec<u8> {
    let sps = rbsp(&clip.sps);
    // After the 2-byte NAL header: sps_video_parameter_set_id (4), sps_max_sub_layers_minus1
    // (3), sps_temporal_id_nesting_flag (1), then profile_tier_level(1, max_sub_layers_minus1):
    // general_profile_space/tier/idc (1 byte), 32 compatibility flags, 48 constraint bits,
    // general_level_idc — the 12 bytes the record copies.
    let max_sub_layers_minus1 = (sps[2] >> 1) & 0x07;
    let temporal_id_nested = sps[2] & 0x01;
    let general_ptl = &sps[3..15];
    let mut r = vec![1]; // configurationVersion
    r.extend_from_slice(general_ptl);
    r.extend_from_slice(&[0xf0, 0x00]); // reserved 1111 + min_spatial_segmentation_idc 0
    r.push(0xfc); // reserved 111111 + parallelismType 0 (unknown)
    r.push(0xfc | 1); // reserved 111111 + chroma_format_idc 1 (4:2:0, -pix_fmt yuv420p)
    r.push(0xf8); // reserved 11111 + bitDepthLumaMinus8 0
    r.push(0xf8); // reserved 11111 + bitDepthChromaMinus8 0
    r.extend_from_slice(&[0, 0]); // avgFrameRate 0 (unspecified)
                                  // constantFrameRate 0, numTemporalLayers, temporalIdNested, lengthSizeMinusOne 3.
    r.push(((max_sub_layers_minus1 + 1) << 3) | (temporal_id_nested << 2) | 3);
    r.push(3); // numOfArrays
    for nal in [&clip.vps, &clip.sps, &clip.pps] {
        r.push(0x80 | nal_type(nal)); // array_completeness 1, reserved 0, NAL_unit_type
        r.extend_from_slice(&1u16.to_be_bytes()); // numNalus
        r.extend_from_slice(&u16::try_from(nal.len()).unwrap().to_be_bytes());
        r.extend_from_slice(nal);
    }
    r
}

/// The RFC 6381 codec string of an hvcC record, by ISO/IEC 14496-15 Annex E.3: profile space
/// letter + profile_idc, the compatibility flags bit-reversed in hex, tier letter + level, then
/// the constraint bytes with trailing zero bytes left out.
fn hevc_codec_string(record: &[u8]) -> String {
    let ptl = record[1];
    let space = ["", "A", "B", "C"][usize::from(ptl >> 6)];
    let tier = if ptl & 0x20 != 0 { 'H' } else { 'L' };
    let compat = u32::from_be_bytes(record[2..6].try_into().unwrap()).reverse_bits();
    let constraints = &record[6..12];
    let used = constraints.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut s = format!("hvc1.{space}{}.{compat:x}.{tier}{}", ptl & 0x1f, record[12]);
    for b in &constraints[..used] {
        s.push_str(&format!(".{b:X}"));
    }
    s
}

/// Encode the test clip with libx265 into `path` (Annex B).
fn encode_clip(path: &Path) {
    let params = format!("keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0:open-gop=0:log-level=error");
    let ran = run_tool(
        "ffmpeg",
        &[
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size=640x360:rate={FPS}"),
            "-t",
            &CLIP_SECONDS.to_string(),
            "-c:v",
            "libx265",
            "-preset",
            "veryfast",
            "-x265-params",
            &params,
            "-pix_fmt",
            "yuv420p",
            "-f",
            "hevc",
            path.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(ran.status.success(), "libx265 encode failed ({}):\n{}", ran.status, ran.stderr);
}

// ---------------------------------------------------------------------------------------------
// An enhanced-RTMP H.265 publisher over rml_rtmp

/// ExVideoTagHeader: IsExHeader bit, VideoFrameType (1 key, 2 inter), VideoPacketType.
fn ex_video_header(keyframe: bool, packet_type: u8) -> BytesMut {
    let frame_type: u8 = if keyframe { 1 } else { 2 };
    let mut b = BytesMut::new();
    b.put_u8(0x80 | (frame_type << 4) | packet_type);
    b.put_slice(b"hvc1");
    b
}

/// VideoPacketType.SequenceStart with the hvcC record.
fn sequence_start(record: &[u8]) -> Bytes {
    let mut b = ex_video_header(true, 0);
    b.put_slice(record);
    b.freeze()
}

/// VideoPacketType.CodedFramesX: the access unit as 4-byte-length-prefixed NAL units.
fn coded_frames_x(au: &AccessUnit) -> Bytes {
    let mut b = ex_video_header(au.keyframe, 3);
    for nal in &au.nals {
        b.put_u32(u32::try_from(nal.len()).unwrap());
        b.put_slice(nal);
    }
    b.freeze()
}

/// VideoPacketType.SequenceEnd.
fn sequence_end() -> Bytes {
    ex_video_header(true, 2).freeze()
}

struct RtmpPublisher {
    stream: TcpStream,
    session: ClientSession,
    key: String,
    publishing: bool,
}

impl RtmpPublisher {
    /// TCP connect, handshake, `connect` to app `live`, `publish` `key` (live); returns once the
    /// server accepted the publish request.
    fn connect(addr: SocketAddr, key: &str, timeout: Duration) -> RtmpPublisher {
        let mut stream = tcp_connect(addr, false);
        let rest = rtmp_handshake(&mut stream);
        let mut config = ClientSessionConfig::new();
        config.tc_url = Some(format!("rtmp://{addr}/live"));
        let (session, initial) = ClientSession::new(config).unwrap();
        let mut p = RtmpPublisher { stream, session, key: key.to_string(), publishing: false };
        p.send(initial);
        let r = p.session.request_connection("live".to_string()).unwrap();
        p.send(vec![r]);
        p.feed(&rest);
        let deadline = Instant::now() + timeout;
        while !p.publishing {
            let now = Instant::now();
            assert!(now < deadline, "publish not accepted within {timeout:?}");
            p.pump_until(now + Duration::from_millis(100));
        }
        p
    }

    fn send(&mut self, results: Vec<ClientSessionResult>) {
        for r in results {
            if let ClientSessionResult::OutboundResponse(packet) = r {
                self.stream.write_all(&packet.bytes).expect("write to server");
            }
        }
    }

    /// Feed bytes from the server; answers what the session answers (acks, pings).
    fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let results = self.session.handle_input(bytes).expect("valid RTMP from the server");
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(packet) => {
                    self.stream.write_all(&packet.bytes).expect("write to server")
                }
                ClientSessionResult::RaisedEvent(ev) => match ev {
                    ClientSessionEvent::ConnectionRequestAccepted => {
                        let r = self.session.request_publishing(self.key.clone(), PublishRequestType::Live);
                        self.send(vec![r.unwrap()]);
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        panic!("connect rejected: {description}")
                    }
                    ClientSessionEvent::PublishRequestAccepted => self.publishing = true,
                    _ => {}
                },
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// Read and answer whatever the server sends until `until`.
    fn pump_until(&mut self, until: Instant) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("the server closed the publishing connection"),
                Ok(n) => self.feed(&buf[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
    }

    fn video(&mut self, body: Bytes, ms: u32) {
        let r = self.session.publish_video_data(body, RtmpTimestamp::new(ms), false).unwrap();
        self.send(vec![r]);
    }
}

/// A thread publishing the clip in a loop, in real time, until stopped.
struct Publisher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u32>>,
}

impl Publisher {
    fn start(addr: SocketAddr, key: &str, clip: Arc<Clip>, record: Vec<u8>) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let key = key.to_string();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            let mut p = RtmpPublisher::connect(addr, &key, Duration::from_secs(10));
            p.video(sequence_start(&record), 0);
            let started = Instant::now();
            let mut sent = 0u32;
            while !flag.load(Ordering::Relaxed) {
                // Frame i at i * 1000 / 30 ms; the clip loops (it starts with an IDR) with the
                // timestamps continuing.
                let ms = sent * 1000 / FPS;
                p.pump_until(started + Duration::from_millis(u64::from(ms)));
                p.video(coded_frames_x(&clip.aus[sent as usize % clip.aus.len()]), ms);
                sent += 1;
            }
            p.video(sequence_end(), sent * 1000 / FPS);
            sent
        });
        Publisher { stop, thread: Some(thread) }
    }

    /// Why the publishing thread ended, if it did (it only ends early on a failure).
    fn check(&mut self) -> Result<(), String> {
        if !self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            return Ok(());
        }
        Err(match self.thread.take().unwrap().join() {
            Ok(n) => format!("stopped on its own after {n} frames"),
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
        })
    }

    /// Stop, and return the number of frames sent.
    fn finish(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().unwrap().join() {
            Ok(n) => n,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Publisher {
    /// Stops the thread before the server goes (the server is declared first, so dropped last):
    /// a failing test then reports its own failure, not a publisher cut off mid-frame.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP and tools (small copies of tests/hls_live.rs helpers)

/// GET that must answer 200.
fn get_ok(server: &TestServer, path: &str) -> Vec<u8> {
    let r = get_with(server.http, path, &[], Duration::from_secs(10));
    assert_eq!(r.status, 200, "GET {path}: {}\nserver:\n{}", r.text(), server.logs());
    r.body
}

/// The MD5 of every decoded video frame of `path`, in order (ffmpeg's framemd5 muxer).
fn frame_md5s(path: &Path) -> Vec<String> {
    let ran = run_tool(
        "ffmpeg",
        &["-nostdin", "-v", "error", "-i", path.to_str().unwrap(), "-map", "0:v", "-f", "framemd5", "-"],
        Duration::from_secs(30),
    );
    assert!(ran.status.success(), "framemd5 of {}: {}\n{}", path.display(), ran.status, ran.stderr);
    ran.stdout
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.rsplit(',').next().unwrap().trim().to_string())
        .collect()
}

/// The payload of the first box of type `kind` found after `from` in `data` (a byte search, not a
/// box walk: enough to pull a configuration box out of an init segment).
fn find_box<'a>(data: &'a [u8], kind: &[u8; 4], from: usize) -> Option<(usize, &'a [u8])> {
    let at = from + data.get(from..)?.windows(4).position(|w| w == kind)?;
    let start = at.checked_sub(4)?;
    let size = u32::from_be_bytes(data[start..at].try_into().unwrap()) as usize;
    Some((at, data.get(at + 4..start + size)?))
}

// ---------------------------------------------------------------------------------------------
// Test

#[test]
fn hevc_over_enhanced_rtmp_comes_out_as_hvc1_cmaf() {
    if !require_ffmpeg() {
        return;
    }
    let t0 = Instant::now();
    let dir = tempfile::Builder::new().prefix("tidecast-hevc").tempdir().unwrap();
    let source = dir.path().join("clip.hevc");
    encode_clip(&source);
    let encoded_in = t0.elapsed();
    let clip = parse_clip(&std::fs::read(&source).unwrap());
    let n = clip.aus.len();
    let keys: Vec<usize> = (0..n).filter(|&i| clip.aus[i].keyframe).collect();
    assert_eq!(n, (CLIP_SECONDS * FPS) as usize, "access units in the clip");
    assert_eq!(keys, (0..n).step_by(FPS as usize).collect::<Vec<_>>(), "key frames of the clip");
    let record = hvcc(&clip);
    let codecs = hevc_codec_string(&record);
    // libx265's Main profile: profile_idc 1, compatibility flags 1 and 2.
    assert!(codecs.starts_with("hvc1.1.6.L"), "codec string {codecs}");
    let source_md5s = frame_md5s(&source);
    assert_eq!(source_md5s.len(), n, "frames decoded from the Annex B clip");

    let server = TestServer::start(&[("TIDECAST__HLS__SEGMENT_TARGET", "1s")]);
    let clip = Arc::new(clip);
    let mut publisher = Publisher::start(server.rtmp, &server.key, clip.clone(), record.clone());
    let publish_start = Instant::now();

    // Media playlist: LL-HLS parts and two complete segments.
    let (text, pl) =
        wait_media_playlist(&server, PLAYLIST, Duration::from_secs(20), "2 complete segments", |pl| {
            if let Err(e) = publisher.check() {
                panic!("the publisher failed: {e}\nserver:\n{}", server.logs());
            }
            pl.segments.len() >= 2 && pl.segments.iter().any(|s| !s.parts.is_empty())
        });
    let two_segments_after = publish_start.elapsed();
    assert!(text.contains("#EXT-X-PART:"), "no EXT-X-PART:\n{text}");
    for s in &pl.segments {
        assert!(
            s.parts.first().is_none_or(|p| p.independent),
            "segment {} starts with a dependent part:\n{text}",
            s.msn
        );
    }

    // Multivariant: the codec string of the record sent, the SPS's picture size.
    let mv = String::from_utf8(get_ok(&server, MULTIVARIANT)).unwrap();
    if let Err(errors) = validate_multivariant(&mv) {
        panic!("invalid multivariant playlist: {errors:#?}\n{mv}");
    }
    let inf: Vec<&str> = mv.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert_eq!(inf.len(), 1, "one variant:\n{mv}");
    let attrs = stream_inf_attrs(inf[0]);
    let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(attr("CODECS").as_deref(), Some(codecs.as_str()), "CODECS:\n{mv}");
    assert!(mv.contains(&format!("CODECS=\"{codecs}\"")), "CODECS quoted:\n{mv}");
    assert_eq!(attr("RESOLUTION").as_deref(), Some("640x360"), "RESOLUTION:\n{mv}");
    let fps: f64 = attr("FRAME-RATE").expect("FRAME-RATE").parse().unwrap();
    assert!((fps - f64::from(FPS)).abs() < 0.5, "FRAME-RATE={fps}:\n{mv}");

    // Init segment: an hvc1 sample entry carrying the record sent, byte for byte.
    let seg = &pl.segments[0];
    let map = pl
        .segments
        .iter()
        .take_while(|s| s.msn <= seg.msn)
        .filter_map(|s| s.map_uri.clone())
        .last()
        .unwrap_or_else(|| panic!("no EXT-X-MAP before segment {}:\n{text}", seg.msn));
    let init = get_ok(&server, &format!("{MEDIA_BASE}{map}"));
    let (entry_at, _) = find_box(&init, b"hvc1", 0).expect("an hvc1 sample entry in the init segment");
    let (_, hvcc_box) = find_box(&init, b"hvcC", entry_at).expect("an hvcC box in the hvc1 sample entry");
    assert!(hvcc_box == record.as_slice(), "the init segment's hvcC is not the record published");
    assert!(!init.windows(4).any(|w| w == b"hev1" || w == b"avc1"), "another video sample entry in init");

    // Init + first complete segment: ffprobe and ffmpeg.
    let segment = get_ok(&server, &format!("{MEDIA_BASE}{}", seg.uri));
    let whole = dir.path().join("init-and-segment.mp4");
    std::fs::write(&whole, [init.as_slice(), &segment].concat()).unwrap();
    let probe = run_tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,codec_tag_string,width,height",
            "-of",
            "json",
            whole.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(
        probe.status.success() && probe.stderr.trim().is_empty(),
        "ffprobe: {}\n{}",
        probe.status,
        probe.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&probe.stdout).expect("ffprobe JSON");
    let streams = v["streams"].as_array().expect("streams");
    assert_eq!(streams.len(), 1, "one stream: {v}");
    let s = &streams[0];
    assert_eq!(
        (&s["codec_type"], &s["codec_name"], &s["codec_tag_string"]),
        (&"video".into(), &"hevc".into(), &"hvc1".into()),
        "{v}"
    );
    assert_eq!((s["width"].as_u64(), s["height"].as_u64()), (Some(640), Some(360)), "{v}");
    let packets = ffprobe(&whole);
    assert!(
        packets.video().next().is_some_and(|p| p.keyframe),
        "segment {} does not start with a key frame",
        seg.msn
    );

    let expected = (seg.duration * f64::from(FPS)).round() as u64;
    let frames = decode_clean(&whole);
    assert!(frames.abs_diff(expected) <= 1, "decoded {frames} frames from a {:.3}s segment", seg.duration);

    // The pictures are the source's: a contiguous run of the clip (which loops).
    let md5s = frame_md5s(&whole);
    assert_eq!(md5s.len() as u64, frames, "framemd5 and -f null disagree on the frame count");
    let first = source_md5s
        .iter()
        .position(|h| *h == md5s[0])
        .unwrap_or_else(|| panic!("segment {}'s first picture is not a picture of the clip", seg.msn));
    for (i, h) in md5s.iter().enumerate() {
        assert_eq!(
            *h,
            source_md5s[(first + i) % n],
            "segment {} picture {i} differs from clip frame {}",
            seg.msn,
            (first + i) % n
        );
    }

    // Init + every complete segment: fragments join up (decode times, no gaps or repeats).
    let mut all = init.clone();
    for s in &pl.segments {
        all.extend_from_slice(&get_ok(&server, &format!("{MEDIA_BASE}{}", s.uri)));
    }
    let all_path = dir.path().join("init-and-all.mp4");
    std::fs::write(&all_path, all).unwrap();
    let all_secs: f64 = pl.segments.iter().map(|s| s.duration).sum();
    let all_frames = decode_clean(&all_path);
    let all_md5s = frame_md5s(&all_path);
    assert!(
        all_frames.abs_diff((all_secs * f64::from(FPS)).round() as u64) <= 1,
        "decoded {all_frames} frames from {} segments of {all_secs:.3}s",
        pl.segments.len()
    );
    for (i, h) in all_md5s.iter().enumerate() {
        assert_eq!(
            *h,
            source_md5s[(first + i) % n],
            "picture {i} of segments {}.. differs from the clip",
            seg.msn
        );
    }

    let sent = publisher.finish();
    eprintln!(
        "hevc_live: encode {:.1}s; {} complete segments {:.1}s after publishing began; segment {} \
         {:.3}s = {frames} frames (clip frames {first}..{}) bit-exact; CODECS={codecs}; {sent} frames \
         sent; {} segments {all_secs:.3}s = {all_frames} frames; {:.1}s in all",
        encoded_in.as_secs_f64(),
        pl.segments.len(),
        two_segments_after.as_secs_f64(),
        seg.msn,
        seg.duration,
        first + md5s.len(),
        pl.segments.len(),
        t0.elapsed().as_secs_f64()
    );
}
