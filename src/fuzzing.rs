//! Fuzz target bodies: one function per decoder of untrusted bytes, shared by the `cargo fuzz`
//! crate (`tests/fuzz/`, nightly, libFuzzer) and the stable replay test (`tests/fuzz_replay.rs`),
//! which runs every stored corpus and crasher file through the same function on every
//! `cargo test`. Not part of the server; hidden from the docs.
//!
//! Each target takes arbitrary bytes and must never panic, overflow the stack or loop without
//! bound; where a decoder has an encoder, it also asserts the round trip. Inputs that carry a
//! byte stream (RTMP, chunk stream) are fed in pieces cut at points chosen by one seed byte, as
//! a socket would deliver them, so a state machine that only works on whole messages is caught.
//!
//! Targets ([`TARGETS`] lists them by name for the fuzz crate, the replay test and
//! `loadtest/fuzz.sh`): RTMP handshake + chunk stream + session with accept/reject/finish, the
//! chunk-header watch against rml_rtmp's deserializer, AMF0 (our bounded pre-check, then
//! rml_amf0 and rml_rtmp's message decoding), FLV video/audio tags (legacy and enhanced) with
//! the ingest demuxer, codec configuration records (avcC, hvcC, av1C, AudioSpecificConfig,
//! OpusHead), the `_HLS_*` playlist query, HTTP paths (route table and media file names), JWT
//! access tokens, playback tokens, Stripe webhook signatures, the MPEG-TS demuxer (split
//! invariance, monotonic DTS, well-formed length-prefixed video) SRT stream ids, and RTSP pull's depacketizing (retina's H.264, H.265 and AAC depacketizers
//! into `protocols::rtsp::RtspDemux`), WebRTC's SDP offer checks and STUN routing, and WHIP's
//! RTP depacketizing (reordering, loss, H.264 and Opus, sender reports; `fuzzing/webrtc.rs`).
//! rml_rtmp decodes AMF3 message
//! types as AMF0 (there is no AMF3 decoder to reach), so the AMF0 target covers them.

mod webrtc;

// The cargo-fuzz binaries call every target as `tidecast::fuzzing::<name>`.
pub use webrtc::{webrtc_sdp, whip_depacketize};

use std::io::Cursor;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::time::RtmpTimestamp;
use sha2::Sha256;

use crate::auth::jwt::JwtKeys;
use crate::auth::keys::KeyRing;
use crate::auth::playback::{PlaybackKeys, PlaybackScope};
use crate::billing::stripe;
use crate::http::hls::{parse_file, MediaFile};
use crate::http::routes::RouteTable;
use crate::media::{AudioConfig, Tracks, VideoConfig};
use crate::protocols::flv::{self, AudioTag, VideoTag};
use crate::protocols::hls::parse_query;
use crate::protocols::rtmp::amf0::{self, MAX_DEPTH};
use crate::protocols::rtmp::chunk::{checked_chunk_size, ChunkError, ChunkWatch};
use crate::protocols::rtmp::media::{frame_message, FlvDemuxer, Ingested};
use crate::protocols::rtmp::{ConnEvent, RtmpLimits, RtmpServerConn};
use crate::protocols::ts::{TsDemuxer, TsEvent};

/// A fuzz target: its name and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, as the fuzz crate's binaries and the corpus directories are named.
pub const TARGETS: &[Target] = &[
    ("rtmp_session", rtmp_session),
    ("rtmp_chunk_watch", rtmp_chunk_watch),
    ("amf0", amf0),
    ("flv_tag", flv_tag),
    ("codec_config", codec_config),
    ("hls_query", hls_query),
    ("http_path", http_path),
    ("jwt", jwt),
    ("playback_token", playback_token),
    ("stripe_signature", stripe_signature),
    ("ts_demux", ts_demux),
    ("srt_stream_id", srt_stream_id),
    ("rtsp_depacketize", rtsp_depacketize),
    ("webrtc_sdp", webrtc_sdp),
    ("whip_depacketize", whip_depacketize),
];

/// The server's defaults (`config::RtmpConfig`), with a smaller message cap so runs stay fast.
const LIMITS: RtmpLimits = RtmpLimits {
    max_chunk_size: 64 * 1024,
    max_message_size: 1 << 20,
    max_name_len: 256,
    out_chunk_size: 4096,
};

/// A fixed key ring for the token targets (32 bytes of secret, as `KeyRing::parse` wants).
const KEY_RING: &str = "fz:0123456789abcdef0123456789abcdef";
/// "Now" for the token targets, so a run is reproducible.
const NOW: u64 = 1_800_000_000;

/// Cut `input` into the pieces a socket might deliver: `seed` picks a piece length scale and a
/// xorshift sequence of lengths, so the fuzzer explores splits with one byte, not a split list.
fn pieces(input: &[u8], seed: u8) -> impl Iterator<Item = &[u8]> {
    let scale = [1usize, 3, 17, 130, 1537, usize::MAX][usize::from(seed % 6)];
    let mut state = u32::from(seed) | 0x100;
    let mut rest = input;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let len = if scale == usize::MAX { rest.len() } else { 1 + state as usize % scale };
        let (piece, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        Some(piece)
    })
}

/// A complete client handshake that rml_rtmp's server accepts: C0, then a C1 without a Flash
/// digest (the original-spec handshake, answered with an echo), then any C2 (rml_rtmp 0.8 does
/// not verify it).
pub fn client_handshake() -> Vec<u8> {
    let mut v = vec![3u8];
    v.extend(std::iter::repeat_n(0u8, 1536 * 2));
    v
}

/// RTMP server connection: `[flags, split seed, bytes...]`. Flags bit 0 prefixes a valid client
/// handshake (so most runs spend their bytes on the chunk stream and session); bit 1 accepts
/// connect/publish/play requests, else they are rejected; bit 2 ends a viewer's play at once.
/// Media messages go through the ingest demuxer and back out as viewer chunks.
pub fn rtmp_session(data: &[u8]) {
    let [flags, seed, payload @ ..] = data else { return };
    let input =
        if flags & 1 != 0 { [client_handshake().as_slice(), payload].concat() } else { payload.to_vec() };
    let mut conn = RtmpServerConn::new(LIMITS);
    let mut demuxer = FlvDemuxer::new(Arc::new(Tracks::default()));
    let mut out = Vec::new();
    let mut events = Vec::new();
    for piece in pieces(&input, *seed) {
        if conn.handle_input(piece, &mut out, &mut events).is_err() {
            return;
        }
        for event in events.drain(..) {
            let answered = match event {
                ConnEvent::ConnectRequested { request_id, .. }
                | ConnEvent::PublishRequested { request_id, .. } => {
                    answer(&mut conn, request_id, flags & 2 != 0, &mut out)
                }
                ConnEvent::PlayRequested { request_id, stream_id, .. } => {
                    answer(&mut conn, request_id, flags & 2 != 0, &mut out).and_then(|()| {
                        if flags & 4 != 0 {
                            conn.finish_playing(stream_id, &mut out)
                        } else {
                            Ok(())
                        }
                    })
                }
                ConnEvent::Video { data, timestamp } => {
                    relay(demuxer.video(data, timestamp));
                    Ok(())
                }
                ConnEvent::Audio { data, timestamp } => {
                    relay(demuxer.audio(data, timestamp));
                    Ok(())
                }
                ConnEvent::PublishFinished | ConnEvent::PlayFinished => Ok(()),
            };
            if answered.is_err() {
                return;
            }
        }
        out.clear();
    }
}

fn answer(
    conn: &mut RtmpServerConn,
    request_id: u32,
    accept: bool,
    out: &mut Vec<u8>,
) -> Result<(), crate::protocols::rtmp::RtmpError> {
    if accept {
        conn.accept(request_id, out)
    } else {
        conn.reject(request_id, "NetConnection.Connect.Rejected", "fuzz", out)
    }
}

/// A demuxed frame goes out to viewers as shared chunks; that must work for any frame in.
fn relay<E>(ingested: Result<Ingested, E>) {
    if let Ok(Ingested::Frame(frame)) = ingested {
        assert!(frame_message(&frame, 1, LIMITS.out_chunk_size).is_ok(), "a demuxed frame must serialize");
    }
}

/// Chunk-header watch: `[split seed, bytes...]` after the handshake. Whatever the watch lets
/// through, rml_rtmp's `ChunkDeserializer` must read without panicking (the watch exists to
/// refuse what would panic it), and when neither side refuses anything both must hand out the
/// same AMF message bodies.
pub fn rtmp_chunk_watch(data: &[u8]) {
    let [seed, input @ ..] = data else { return };
    let mut watch = ChunkWatch::new(LIMITS.max_message_size, LIMITS.max_chunk_size);
    let mut rml = ChunkDeserializer::new();
    let mut ours: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut theirs: Vec<(u8, Vec<u8>)> = Vec::new();
    for piece in pieces(input, *seed) {
        let fed = watch.feed(piece, |type_id, body: &[u8]| {
            ours.push((type_id, body.to_vec()));
            Ok::<(), ChunkError>(())
        });
        if fed.is_err() {
            return;
        }
        let mut next = piece;
        loop {
            match rml.get_next_message(next) {
                Ok(Some(m)) => {
                    if m.type_id == 1 && m.data.len() >= 4 {
                        let size = u32::from_be_bytes([m.data[0], m.data[1], m.data[2], m.data[3]]);
                        // The watch refused the same SetChunkSize already (and returned above).
                        let size = checked_chunk_size(size, LIMITS.max_chunk_size);
                        assert!(size.is_ok(), "the watch let a bad SetChunkSize through: {size:?}");
                        if let Ok(size) = size {
                            assert!(rml.set_max_chunk_size(size as usize).is_ok());
                        }
                    }
                    if [15, 17, 18, 20].contains(&m.type_id) {
                        theirs.push((m.type_id, m.data.to_vec()));
                    }
                }
                Ok(None) => break,
                // rml_rtmp refuses something the watch passed (a short SetChunkSize, say): the
                // session would drop the connection here, so there is nothing more to compare.
                Err(_) => return,
            }
            next = &[];
        }
    }
    assert_eq!(ours, theirs, "the watch and rml_rtmp disagree on AMF messages");
}

/// AMF0 message body: `[type selector, body...]` for message types 15, 17, 18 and 20. When our
/// bounded pre-check passes, rml_amf0 must decode within the depth bound and agree with our
/// count of top-level values, rml_rtmp's message decoding must not panic, and a decoded value
/// list must survive serialize + deserialize.
pub fn amf0(data: &[u8]) {
    let [selector, body @ ..] = data else { return };
    let type_id = [15u8, 17, 18, 20][usize::from(selector & 3)];
    if amf0::check_message(type_id, body).is_err() {
        return;
    }
    let amf = if type_id == 17 && body.first() == Some(&0) { &body[1..] } else { body };
    let scan = amf0::scan(amf, MAX_DEPTH);
    assert!(scan.is_ok(), "check_message passed a body scan refuses");
    if let (Ok(scan), Ok(values)) = (scan, rml_amf0::deserialize(&mut Cursor::new(amf))) {
        assert!(scan.complete, "rml_amf0 decoded a body the scan thought incomplete");
        assert_eq!(scan.values, values.len());
        assert!(depth(&values) <= scan.depth.min(MAX_DEPTH));
        if let Ok(bytes) = rml_amf0::serialize(&values) {
            let again = rml_amf0::deserialize(&mut Cursor::new(&bytes));
            assert!(
                again.is_ok_and(|again| same_list(&values, &again)),
                "AMF0 round trip changed the values"
            );
        }
    }
    let payload = MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id,
        message_stream_id: 0,
        data: Bytes::copy_from_slice(body),
    };
    let _ = payload.to_rtmp_message();
}

/// Container nesting of a decoded list (recursion is bounded: only called within MAX_DEPTH).
fn depth(values: &[Amf0Value]) -> usize {
    values
        .iter()
        .map(|v| match v {
            Amf0Value::Object(m) => 1 + m.values().map(|v| depth(std::slice::from_ref(v))).max().unwrap_or(0),
            Amf0Value::StrictArray(a) => 1 + depth(a),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fn same_list(a: &[Amf0Value], b: &[Amf0Value]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
}

/// Equality with NaN equal to itself (by bits), which `Amf0Value`'s `PartialEq` lacks.
fn same(a: &Amf0Value, b: &Amf0Value) -> bool {
    match (a, b) {
        (Amf0Value::Number(x), Amf0Value::Number(y)) => x.to_bits() == y.to_bits(),
        (Amf0Value::Object(x), Amf0Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Amf0Value::StrictArray(x), Amf0Value::StrictArray(y)) => same_list(x, y),
        _ => a == b,
    }
}

/// FLV tag body: `[kind, body...]`, kind bit 0 audio else video; legacy and enhanced headers.
/// A parsed tag must serialize back to a tag that parses to the same value, and every tag goes
/// through the ingest demuxer (with a configuration in force, so frames are built).
pub fn flv_tag(data: &[u8]) {
    let [kind, body @ ..] = data else { return };
    let body = Bytes::copy_from_slice(body);
    let ts = RtmpTimestamp::new(u32::from(*kind) << 24);
    let mut demuxer = FlvDemuxer::new(Arc::new(configured_tracks()));
    if kind & 1 == 0 {
        relay(demuxer.video(body.clone(), ts));
        let parsed = flv::parse_video_tag(body);
        let written = match &parsed {
            Ok(VideoTag::SequenceHeader(cfg)) => Some(flv::video_sequence_header(cfg)),
            Ok(VideoTag::Frame { codec, keyframe, cts_ms, data }) => {
                Some(flv::video_frame(*codec, *keyframe, *cts_ms, data))
            }
            _ => None,
        };
        if let Some(bytes) = written {
            assert_eq!(flv::parse_video_tag(bytes), parsed, "video tag round trip");
        }
    } else {
        relay(demuxer.audio(body.clone(), ts));
        let parsed = flv::parse_audio_tag(body);
        let written = match &parsed {
            Ok(AudioTag::SequenceHeader(cfg)) => Some(flv::audio_sequence_header(cfg)),
            Ok(AudioTag::Frame { codec, data }) => Some(flv::audio_frame(*codec, data)),
            _ => None,
        };
        if let Some(bytes) = written {
            assert_eq!(flv::parse_audio_tag(bytes), parsed, "audio tag round trip");
        }
    }
}

/// Tracks as after an H.264 + AAC publisher's sequence headers (from the test fixtures' shapes).
fn configured_tracks() -> Tracks {
    static TRACKS: OnceLock<Tracks> = OnceLock::new();
    TRACKS
        .get_or_init(|| Tracks {
            video: VideoConfig::from_avc_record(Bytes::from_static(&[1, 0x64, 0, 0x1f, 0xff, 0xe0, 0])).ok(),
            audio: AudioConfig::from_aac_asc(Bytes::from_static(&[0x12, 0x10])).ok(),
        })
        .clone()
}

/// Codec configuration record: `[parser, record...]` for avcC, hvcC, av1C, AudioSpecificConfig
/// and OpusHead. A record that parses is kept verbatim and names an RFC 6381 codec string.
pub fn codec_config(data: &[u8]) {
    let [parser, record @ ..] = data else { return };
    let bytes = Bytes::copy_from_slice(record);
    let (kept, codec_string) = match parser % 5 {
        0 => video(VideoConfig::from_avc_record(bytes)),
        1 => video(VideoConfig::from_hevc_record(bytes)),
        2 => video(VideoConfig::from_av1_record(bytes)),
        3 => audio(AudioConfig::from_aac_asc(bytes)),
        _ => audio(AudioConfig::from_opus_head(bytes)),
    };
    if let Some(kept) = kept {
        assert_eq!(kept, record, "the record must be kept verbatim");
        assert!(!codec_string.is_empty() && codec_string.is_ascii(), "codec string {codec_string:?}");
    }
}

fn video<E>(cfg: Result<VideoConfig, E>) -> (Option<Bytes>, String) {
    cfg.map_or((None, String::new()), |c| (Some(c.record), c.codec_string))
}

fn audio<E>(cfg: Result<AudioConfig, E>) -> (Option<Bytes>, String) {
    cfg.map_or((None, String::new()), |c| (Some(c.config), c.codec_string))
}

/// `_HLS_*` playlist query (any UTF-8; other bytes are lossily converted, as a query string
/// reaches us as text). What passes on to playlist URIs must parse back to the same parameters
/// and hold nothing that could break a playlist line or a quoted attribute.
pub fn hls_query(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let Ok(parsed) = parse_query(&query) else { return };
    let passed = parsed.passthrough_query();
    assert!(
        passed.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'#')),
        "passthrough query {passed:?} could break a playlist"
    );
    let again = parse_query(&passed);
    assert!(again.as_ref().is_ok_and(|q| q.other == parsed.other), "passthrough round trip: {again:?}");
}

/// HTTP request path: the route table's method lookup (the app's own table, with `/static/`)
/// and the LL-HLS media file name parser, whose answers must name back the same file.
pub fn http_path(data: &[u8]) {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    let path = String::from_utf8_lossy(data);
    let _ = TABLE.get_or_init(|| crate::http::route_table(true)).lookup(&path);
    let name = path.rsplit('/').next().unwrap_or_default();
    if let Some(file) = parse_file(name) {
        let canonical = match file {
            MediaFile::Init(r) => format!("init-{r}.mp4"),
            MediaFile::Segment(m) => format!("seg-{m}.m4s"),
            MediaFile::Part(m, i) => format!("part-{m}-{i}.m4s"),
        };
        assert_eq!(parse_file(&canonical), Some(file), "media file name round trip");
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn key_ring() -> KeyRing {
    KeyRing::parse(KEY_RING).expect("a valid fixed key ring")
}

/// JWT access token: `[mode, text...]`. Mode bit 0 clear: the text is the token. Set: the text
/// is `header JSON \n claims JSON`, encoded and signed with the fixed key, so the claims checks
/// behind the signature are reached too. Every token issued must verify to its claims.
pub fn jwt(data: &[u8]) {
    static KEYS: OnceLock<JwtKeys> = OnceLock::new();
    let keys = KEYS.get_or_init(|| JwtKeys::new(&key_ring(), Duration::from_secs(3600)));
    let [mode, rest @ ..] = data else { return };
    let text = String::from_utf8_lossy(rest);
    let token = if mode & 1 == 0 {
        text.into_owned()
    } else {
        let (header, claims) = text.split_once('\n').unwrap_or((r#"{"alg":"HS256","kid":"fz"}"#, &text));
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let tag = hmac(&key_ring().current().secret, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    };
    if let Ok(claims) = keys.verify(&token) {
        let _ = claims.user_id();
    }
    if mode & 2 != 0 {
        let user_id = i64::from_le_bytes(padded(rest));
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Ok((token, claims)) = keys.issue(user_id, mode & 4 != 0, now) {
            assert_eq!(keys.verify(&token).ok(), Some(claims.clone()), "issued token must verify");
            assert_eq!(claims.user_id().ok(), Some(user_id));
        }
    }
}

/// The first 8 bytes of `b`, zero-padded.
fn padded(b: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    let n = b.len().min(8);
    out[..n].copy_from_slice(&b[..n]);
    out
}

/// Playback token: `[mode, text...]`. Mode bit 0 clear: the text is the token; set: the text is
/// the payload, signed with the fixed key (reaching the field parsing behind the signature).
/// Bit 1 picks a video scope over a channel. A token signed for any expiry and user must verify
/// to the same claims exactly when it has not expired.
pub fn playback_token(data: &[u8]) {
    static KEYS: OnceLock<PlaybackKeys> = OnceLock::new();
    let keys = KEYS.get_or_init(|| PlaybackKeys::new(key_ring()));
    let [mode, rest @ ..] = data else { return };
    let scope = if mode & 2 == 0 { PlaybackScope::Channel("fz".into()) } else { PlaybackScope::Video(7) };
    let token = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let tag = hmac(&key_ring().current().secret, rest);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(rest), URL_SAFE_NO_PAD.encode(tag))
    };
    let _ = keys.verify(&token, &scope, NOW);
    let expires = u64::from_le_bytes(padded(rest));
    let user_id = (mode & 4 != 0).then(|| i64::from_le_bytes(padded(rest.get(8..).unwrap_or_default())));
    let signed = keys.sign_for(&scope, expires, user_id);
    let claims = keys.verify(&signed, &scope, NOW);
    assert_eq!(claims.is_ok(), expires > NOW, "signed token verification: {claims:?}");
    if let Ok(claims) = claims {
        assert_eq!((claims.expires, claims.user_id, claims.scope), (expires, user_id, scope));
    }
}

/// Stripe webhook: `[mode, header \n body]`. The `Stripe-Signature` header is checked against
/// the body with a fixed secret; a verified body is parsed as an event. Mode bit 0 appends a
/// valid signature for the header's own `t=` (or 0) so the body parser is reached.
pub fn stripe_signature(data: &[u8]) {
    const SECRET: &str = "whsec_fuzz";
    let [mode, rest @ ..] = data else { return };
    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let (header, body) = (String::from_utf8_lossy(&rest[..split]), rest.get(split + 1..).unwrap_or_default());
    let t = header
        .split(',')
        .find_map(|item| item.trim().strip_prefix("t=").and_then(|t| t.parse::<i64>().ok()))
        .unwrap_or(0);
    let header = if mode & 1 == 0 {
        header.into_owned()
    } else {
        format!("{header},t={t},v1={}", stripe::sign(SECRET, t, body))
    };
    let verified = stripe::verify_signature(SECRET, &header, body, t, Duration::from_secs(300));
    if verified.is_ok() {
        let _ = serde_json::from_slice::<stripe::StripeEvent>(body);
    }
}

/// The MPEG-TS demuxer (`protocols::ts`) on `[split seed, bytes]`: any split gives the same
/// frames as the whole input; DTS never goes backwards per track; `pts >= dts`; video payloads
/// are whole 4-byte length-prefixed NAL units; every frame has its track's configuration.
pub fn ts_demux(data: &[u8]) {
    let [seed, input @ ..] = data else { return };
    let run = |split: bool| {
        let mut d = TsDemuxer::new();
        let mut out = Vec::new();
        if split {
            for piece in pieces(input, *seed) {
                d.feed(piece, &mut out);
            }
        } else {
            d.feed(input, &mut out);
        }
        d.finish(&mut out);
        (out, d.stats())
    };
    let summary = |events: &[TsEvent]| -> Vec<(bool, i64, i64, Bytes)> {
        let frames = events.iter().filter_map(|e| if let TsEvent::Frame(f) = e { Some(f) } else { None });
        frames
            .map(|f| (f.track == crate::media::TrackKind::Video, f.dts.ticks, f.pts.ticks, f.data.clone()))
            .collect()
    };
    let (whole, stats) = run(false);
    let (split, split_stats) = run(true);
    assert_eq!(summary(&whole), summary(&split), "split changed the frames");
    assert_eq!(stats, split_stats, "split changed the counters");
    let mut last = [i64::MIN; 2];
    for e in &whole {
        let TsEvent::Frame(f) = e else { continue };
        let video = f.track == crate::media::TrackKind::Video;
        assert!(f.dts.ticks >= last[usize::from(video)], "DTS went backwards");
        last[usize::from(video)] = f.dts.ticks;
        assert!(f.pts >= f.dts, "pts before dts");
        if video {
            assert!(f.tracks.video.is_some(), "video frame without configuration");
            assert_length_prefixed(&f.data);
        } else {
            assert!(f.tracks.audio.is_some(), "audio frame without configuration");
        }
    }
}

/// Video leaves as whole 4-byte length-prefixed NAL units: the lengths add up exactly.
fn assert_length_prefixed(data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4-byte length")) as usize;
        rest = &rest[4 + len..];
    }
}

/// H.264 (x264, 320x240 High), H.265 (x265, 320x240 Main) and AAC-LC (48 kHz stereo) stream
/// parameters as an SDP's `fmtp` lines carry them, so the depacketizers start configured.
const H264_FMTP: &str =
    "packetization-mode=1;profile-level-id=64000d;sprop-parameter-sets=Z2QADazZQUH7ARAAAAMAEAAAAwMg8UKZYA==,aOvjyyLA";
const H265_FMTP: &str = "sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwA8lZgJ;\
    sprop-sps=QgEBAWAAAAMAkAAAAwAAAwA8oAoIDxZZWaSTK8BaAgAAAwACAAADADIQ;sprop-pps=RAHBcrRiQA==";
const AAC_FMTP: &str =
    "streamtype=5;profile-level-id=2;mode=AAC-hbr;config=1190;sizelength=13;indexlength=3;indexdeltalength=3";

/// RTSP pull's depacketizing, as `ingest/rtsp.rs` runs it: RTP payloads through retina's
/// H.264, H.265 or AAC depacketizer (`FrameFormat::MP4`), new parameters, sender reports and
/// the sender-report wait interleaved, into `protocols::rtsp::RtspDemux`. The first byte picks
/// the codec; then records of `[kind, length, payload]`: kind bits 0-1 pick RTP (marker in bit
/// 0), a sender report or a tick, bits 2-6 the timestamp step, bit 7 a lost packet. Never a
/// panic; what leaves has a track set, growing DTS, PTS >= DTS, and whole length-prefixed NAL
/// units.
pub fn rtsp_depacketize(data: &[u8]) {
    use retina::codec::{CodecItem, Depacketizer, FrameFormat};
    use retina::rtp::PacketMeta;
    use retina::testutil::DepacketizeBuf;

    use crate::protocols::rtsp::{RtspDemux, RtspEvent, Selected, SR_WAIT};

    let [which, input @ ..] = data else { return };
    let mut rest = input;
    let (media, encoding, clock, fmtp) = match which % 3 {
        0 => ("video", "h264", 90_000, H264_FMTP),
        1 => ("video", "h265", 90_000, H265_FMTP),
        _ => ("audio", "mpeg4-generic", 48_000, AAC_FMTP),
    };
    let video = media == "video";
    let channels = (!video).then(|| std::num::NonZeroU16::new(2).expect("2"));
    let mut dep =
        Depacketizer::new(media, encoding, clock, channels, Some(fmtp)).expect("the fmtp lines are valid");
    dep.set_frame_format(FrameFormat::MP4);
    let selected = Some(Selected { index: 0, clock_rate: clock });
    let t0 = std::time::Instant::now();
    let mut demux =
        if video { RtspDemux::new(selected, None, t0) } else { RtspDemux::new(None, selected, t0) };
    demux.set_parameters(0, dep.parameters()).expect("parameters from a valid fmtp");
    let mut buf = DepacketizeBuf::new(1 << 16);
    let mut out = Vec::new();
    let (mut seq, mut ts) = (0u16, 0i64);
    while let &[kind, len, ref tail @ ..] = rest {
        let (payload, next) = tail.split_at(usize::from(len).min(tail.len()));
        rest = next;
        ts += i64::from((kind >> 2) & 0x1f) * 300;
        match kind & 3 {
            0 | 1 => {
                let lost = kind & 0x80 != 0;
                seq = seq.wrapping_add(1 + u16::from(lost));
                let meta = PacketMeta {
                    ctx: retina::PacketContext::dummy(),
                    stream_id: 0,
                    timestamp: retina::Timestamp::new(ts, NonZeroU32::new(clock).expect("non-zero"), 0)
                        .expect("non-negative"),
                    sequence_number: seq,
                    ssrc: 0x5eed,
                    mark: kind & 1 != 0,
                    loss: u16::from(lost),
                };
                if buf.push(&mut dep, meta, payload).is_err() {
                    return; // the adapter ends the session on a depacketizer error
                }
                while let Some(item) = dep.pull() {
                    let Ok(item) = item else { return };
                    if matches!(&item, CodecItem::VideoFrame(f) if f.has_new_parameters())
                        && demux.set_parameters(0, dep.parameters()).is_err()
                    {
                        return;
                    }
                    demux.push(item, t0, &mut out);
                }
            }
            2 => {
                let ntp = payload.iter().fold(0u64, |n, b| n.rotate_left(8) ^ u64::from(*b));
                demux.sender_report(0, ts, ntp, t0, &mut out);
            }
            _ => demux.tick(t0 + SR_WAIT, &mut out),
        }
    }
    let mut last = i64::MIN;
    for e in &out {
        let RtspEvent::Frame(f) = e else { continue };
        assert!(f.dts.ticks > last, "DTS did not grow");
        last = f.dts.ticks;
        assert!(f.pts >= f.dts, "pts before dts");
        if video {
            assert!(f.tracks.video.is_some(), "video frame without configuration");
            assert_length_prefixed(&f.data);
        } else {
            assert!(f.tracks.audio.is_some(), "audio frame without configuration");
        }
    }
}

/// SRT stream ids (`protocols::srt::streamid::parse`) on the text: never a panic; what parses
/// never carries a control character, and a stream key never shows in `Debug` or the error.
pub fn srt_stream_id(data: &[u8]) {
    use crate::protocols::srt::streamid::{parse, StreamId};
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text) {
        Ok(StreamId::Publish { key }) => {
            assert!(!key.is_empty() && !key.bytes().any(|b| b.is_ascii_control()));
            // The exact redacted form (a key may itself be a piece of that text).
            let shown = format!("{:?}", StreamId::Publish { key: key.clone() });
            assert_eq!(shown, "Publish { key: <redacted> }", "key in Debug");
        }
        Ok(StreamId::Request { channel, token }) => {
            assert!(!channel.is_empty() && channel.len() <= 64);
            assert!(token.is_none_or(|t| !t.is_empty()));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_input_in_order() {
        let input: Vec<u8> = (0..=255).collect();
        for seed in 0..=255u8 {
            let joined: Vec<u8> = pieces(&input, seed).flatten().copied().collect();
            assert_eq!(joined, input, "seed {seed}");
        }
    }

    #[test]
    fn the_handshake_prefix_completes() {
        let mut conn = RtmpServerConn::new(LIMITS);
        conn.handle_input(&client_handshake(), &mut Vec::new(), &mut Vec::new()).unwrap();
        assert!(conn.handshake_done());
    }
}
