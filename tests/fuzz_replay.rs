//! Replays every stored fuzz input on stable: each target's minimised corpus
//! (`tests/fuzz/corpus/<target>/`) and every crasher kept as a regression input
//! (`tests/fuzz/artifacts/<target>/`) go through the same target body the `cargo fuzz` binaries
//! run (`tidecast::fuzzing`), so plain `cargo test` holds every fix the fuzzers led to.
//!
//! Also the seed writer: `cargo test --test fuzz_replay -- --ignored write_seeds` regenerates the
//! hand-made seeds (`seed-*` files) from the test fixtures and rml_rtmp's own serializers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::{self, Amf0Value};
use rml_rtmp::time::RtmpTimestamp;
use tidecast::auth::keys::KeyRing;
use tidecast::auth::playback::{PlaybackKeys, PlaybackScope};
use tidecast::fuzzing::{client_handshake, TARGETS};
use tidecast::media::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};
use tidecast::protocols::flv;
use tidecast::protocols::rtmp::amf0::nested_connect;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

fn stored_inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "artifacts"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else { continue };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()));
    }
    files.sort();
    files
}

#[test]
fn every_stored_fuzz_input_replays_cleanly() {
    let mut failed = Vec::new();
    for (name, target) in TARGETS {
        let files = stored_inputs(name);
        assert!(!files.is_empty(), "target {name} has no stored corpus");
        for file in files {
            let data = std::fs::read(&file).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failed.push(file);
            }
        }
    }
    assert!(failed.is_empty(), "fuzz inputs that panic: {failed:#?}");
}

#[test]
fn every_fuzz_binary_is_a_listed_target() {
    let mut binaries: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    binaries.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(binaries, listed);
}

fn fixture(name: &str) -> Bytes {
    Bytes::from(
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap(),
    )
}

fn string(s: &str) -> Amf0Value {
    Amf0Value::Utf8String(s.into())
}

fn object(props: &[(&str, Amf0Value)]) -> Amf0Value {
    Amf0Value::Object(props.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<HashMap<_, _>>())
}

fn command(name: &str, txn: f64, object: Amf0Value, args: Vec<Amf0Value>) -> RtmpMessage {
    RtmpMessage::Amf0Command {
        command_name: name.into(),
        transaction_id: txn,
        command_object: object,
        additional_arguments: args,
    }
}

/// The chunk stream of a client session after the handshake: ffmpeg's SetChunkSize, connect,
/// then `rest` (each message with its stream id), serialized by rml_rtmp as a client would.
fn client_chunks(rest: Vec<(u32, RtmpMessage)>) -> Vec<u8> {
    let mut ser = ChunkSerializer::new();
    let mut out = ser.set_max_chunk_size(4096, RtmpTimestamp::new(0)).unwrap().bytes;
    let connect = command(
        "connect",
        1.0,
        object(&[
            ("app", string("live")),
            ("type", string("nonprivate")),
            ("flashVer", string("FMLE/3.0 (compatible; FMSc/1.0)")),
            ("tcUrl", string("rtmp://127.0.0.1/live")),
        ]),
        vec![],
    );
    for (i, (stream, msg)) in [(0, connect)].into_iter().chain(rest).enumerate() {
        let payload = msg.into_message_payload(RtmpTimestamp::new(i as u32 * 40), stream).unwrap();
        out.extend(ser.serialize(&payload, false, false).unwrap().bytes);
    }
    out
}

fn media(type_id: u8, body: Bytes) -> RtmpMessage {
    match type_id {
        8 => RtmpMessage::AudioData { data: body },
        _ => RtmpMessage::VideoData { data: body },
    }
}

fn publish_session() -> Vec<u8> {
    let avc = VideoConfig::from_avc_record(fixture("ffmpeg-5.1_flv_h264_seqhdr.bin").slice(5..)).unwrap();
    let aac = fixture("ffmpeg-5.1_flv_aac_seqhdr.bin");
    let meta = RtmpMessage::Amf0Data {
        values: vec![
            string("@setDataFrame"),
            string("onMetaData"),
            object(&[("width", Amf0Value::Number(320.0)), ("videocodecid", Amf0Value::Number(7.0))]),
        ],
    };
    client_chunks(vec![
        (0, command("releaseStream", 2.0, Amf0Value::Null, vec![string("key")])),
        (0, command("FCPublish", 3.0, Amf0Value::Null, vec![string("key")])),
        (0, command("createStream", 4.0, Amf0Value::Null, vec![])),
        (1, command("publish", 5.0, Amf0Value::Null, vec![string("key"), string("live")])),
        (1, meta),
        (1, media(9, flv::video_sequence_header(&avc))),
        (1, media(8, aac)),
        (1, media(9, flv::video_frame(VideoCodec::H264, true, 80, &[0, 0, 0, 2, 0x65, 0x88]))),
        (1, media(8, flv::audio_frame(AudioCodec::Aac, &[0x21, 0x10]))),
        (1, command("FCUnpublish", 6.0, Amf0Value::Null, vec![string("key")])),
        (0, command("deleteStream", 7.0, Amf0Value::Null, vec![Amf0Value::Number(1.0)])),
    ])
}

fn play_session() -> Vec<u8> {
    client_chunks(vec![
        (0, command("createStream", 2.0, Amf0Value::Null, vec![])),
        (1, command("play", 3.0, Amf0Value::Null, vec![string("chan"), Amf0Value::Number(-2000.0)])),
        (1, command("closeStream", 4.0, Amf0Value::Null, vec![])),
    ])
}

/// The attack of issue 10: a connect nested 40 levels deep, in one chunk-stream message.
fn nested_session(kind: u8) -> Vec<u8> {
    let mut ser = ChunkSerializer::new();
    let mut out = ser.set_max_chunk_size(4096, RtmpTimestamp::new(0)).unwrap().bytes;
    let payload = rml_rtmp::messages::MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id: 20,
        message_stream_id: 0,
        data: Bytes::from(nested_connect(kind, 40)),
    };
    out.extend(ser.serialize(&payload, false, false).unwrap().bytes);
    out
}

fn with_prefix(prefix: &[u8], body: &[u8]) -> Vec<u8> {
    [prefix, body].concat()
}

fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let h264 = fixture("ffmpeg-5.1_flv_h264_seqhdr.bin");
    let aac = fixture("ffmpeg-5.1_flv_aac_seqhdr.bin");
    let hvcc = fixture("ffmpeg-5.1_mp4_libx265_hvcC.bin");
    let av1c = fixture("ffmpeg-5.1_mp4_libsvtav1_av1C.bin");
    let opus = fixture("ffmpeg-5.1_ogg_libopus_OpusHead.bin");
    let ts_h264 = fixture("ffmpeg-5.1_ts_h264_aac.ts");
    let ts_hevc = fixture("ffmpeg-5.1_ts_hevc.ts");
    let hevc = VideoConfig::from_hevc_record(hvcc.clone()).unwrap();
    let av1 = VideoConfig::from_av1_record(av1c.clone()).unwrap();
    let opus_cfg = AudioConfig::from_opus_head(opus.clone()).unwrap();
    let publish = publish_session();
    let play = play_session();
    let connect_body = rml_amf0::serialize(&vec![
        string("connect"),
        Amf0Value::Number(1.0),
        object(&[("app", string("live")), ("tcUrl", string("rtmp://h/live"))]),
    ])
    .unwrap();
    let metadata = rml_amf0::serialize(&vec![
        string("@setDataFrame"),
        string("onMetaData"),
        object(&[
            ("width", Amf0Value::Number(320.0)),
            ("list", Amf0Value::StrictArray(vec![Amf0Value::Null])),
        ]),
    ])
    .unwrap();
    let handshake = client_handshake();
    let keys = PlaybackKeys::new(KeyRing::parse("fz:0123456789abcdef0123456789abcdef").unwrap());
    let event = br#"{"id":"evt_1","type":"checkout.session.completed","data":{"object":{"id":"cs_1","client_reference_id":"7","metadata":{"plan":"pro"}}}}"#;
    let signed = tidecast::billing::stripe::sign("whsec_fuzz", 1_800_000_000, event);
    vec![
        // [flags: 1 handshake, 2 accept, 4 finish play; split seed], then bytes.
        ("rtmp_session", "publish-accept", with_prefix(&[3, 3], &publish)),
        ("rtmp_session", "publish-whole", with_prefix(&[3, 5], &publish)),
        ("rtmp_session", "publish-reject-split", with_prefix(&[1, 1], &publish)),
        ("rtmp_session", "play-accept-finish", with_prefix(&[7, 3], &play)),
        (
            "rtmp_session",
            "raw-handshake-then-play",
            with_prefix(&[2, 4], &[handshake.as_slice(), &play].concat()),
        ),
        ("rtmp_session", "nested-object", with_prefix(&[3, 5], &nested_session(3))),
        ("rtmp_session", "nested-strict-array", with_prefix(&[3, 2], &nested_session(0x0A))),
        ("rtmp_chunk_watch", "publish", with_prefix(&[5], &publish)),
        ("rtmp_chunk_watch", "play-split", with_prefix(&[1], &play)),
        ("rtmp_chunk_watch", "nested-ecma", with_prefix(&[3], &nested_session(8))),
        // [selector: 0 type 15, 1 type 17, 2 type 18, 3 type 20], then the body.
        ("amf0", "connect", with_prefix(&[3], &connect_body)),
        ("amf0", "connect-amf3", with_prefix(&[1, 0], &connect_body)),
        ("amf0", "metadata", with_prefix(&[2], &metadata)),
        ("amf0", "nested-32-object", with_prefix(&[3], &nested_connect(3, 32))),
        ("amf0", "nested-33-ecma", with_prefix(&[3], &nested_connect(8, 33))),
        ("amf0", "nested-32-strict", with_prefix(&[0], &nested_connect(0x0A, 32))),
        // [kind: even video, odd audio], then the tag body.
        ("flv_tag", "h264-seqhdr", with_prefix(&[0], &h264)),
        (
            "flv_tag",
            "h264-frame",
            with_prefix(&[0], &flv::video_frame(VideoCodec::H264, true, -40, &[0, 0, 0, 1, 0x65])),
        ),
        ("flv_tag", "hevc-seqhdr", with_prefix(&[0], &flv::video_sequence_header(&hevc))),
        (
            "flv_tag",
            "hevc-frame",
            with_prefix(&[2], &flv::video_frame(VideoCodec::H265, false, 33, &[0, 0, 0, 1, 2])),
        ),
        ("flv_tag", "av1-seqhdr", with_prefix(&[0], &flv::video_sequence_header(&av1))),
        ("flv_tag", "av1-frame", with_prefix(&[0], &flv::video_frame(VideoCodec::Av1, true, 0, &[0x12, 0]))),
        ("flv_tag", "aac-seqhdr", with_prefix(&[1], &aac)),
        ("flv_tag", "aac-frame", with_prefix(&[1], &flv::audio_frame(AudioCodec::Aac, &[0x21, 0x10, 4]))),
        ("flv_tag", "opus-seqhdr", with_prefix(&[1], &flv::audio_sequence_header(&opus_cfg))),
        ("flv_tag", "opus-frame", with_prefix(&[3], &flv::audio_frame(AudioCodec::Opus, &[0xfc, 1, 2]))),
        // [parser: 0 avcC, 1 hvcC, 2 av1C, 3 AudioSpecificConfig, 4 OpusHead], then the record.
        ("codec_config", "avcC", with_prefix(&[0], &h264[5..])),
        ("codec_config", "hvcC", with_prefix(&[1], &hvcc)),
        ("codec_config", "av1C", with_prefix(&[2], &av1c)),
        ("codec_config", "asc", with_prefix(&[3], &aac[2..])),
        ("codec_config", "opushead", with_prefix(&[4], &opus)),
        ("hls_query", "msn-part-token", b"_HLS_msn=12&_HLS_part=3&token=abc%2Bd.e_f".to_vec()),
        ("hls_query", "skip", b"_HLS_skip=YES&_HLS_msn=4&x=y+z&&flag".to_vec()),
        ("hls_query", "skip-v2", b"token=%E2%9C%93&_HLS_skip=v2&_HLS_push=1".to_vec()),
        ("http_path", "part", b"/live/chan/source/1/part-12-4.m4s".to_vec()),
        ("http_path", "init", b"/live/chan/720p/3/init-2.mp4".to_vec()),
        ("http_path", "segment", b"/live/chan/source/9/seg-18446744073709551615.m4s".to_vec()),
        ("http_path", "playlist", b"/live/chan/index.m3u8".to_vec()),
        ("http_path", "api", b"/api/v1/videos/12/progress".to_vec()),
        ("http_path", "static", b"/static/js/app.min.js".to_vec()),
        // [mode: bit 0 sign the text, bit 1 issue and verify], then the token text.
        ("jwt", "garbage-token", b"\x00eyJhbGciOiJIUzI1NiIsImtpZCI6ImZ6In0.eyJzdWIiOiIxIn0.c2ln".to_vec()),
        (
            "jwt",
            "signed-claims",
            with_prefix(
                &[3],
                br#"{"alg":"HS256","kid":"fz","typ":"JWT"}
{"sub":"42","adm":true,"iat":1,"exp":99999999999,"jti":"ab"}"#,
            ),
        ),
        ("jwt", "alg-none", with_prefix(&[1], b"{\"alg\":\"none\"}\n{\"sub\":\"1\"}")),
        // [mode: bit 0 sign the text, bit 1 video scope, bit 2 with user], then token or payload.
        (
            "playback_token",
            "channel",
            with_prefix(
                &[4],
                keys.sign_for(&PlaybackScope::Channel("fz".into()), 1_900_000_000, Some(5)).as_bytes(),
            ),
        ),
        ("playback_token", "video-payload", with_prefix(&[3], b"v1|fz|v:7|1900000000")),
        ("playback_token", "channel-payload-user", with_prefix(&[1], b"v1|fz|c:fz|1900000000|-9")),
        // [mode: bit 0 append a valid signature], then header \n body.
        (
            "stripe_signature",
            "signed",
            [&[0u8][..], format!("t=1800000000,v1={signed}\n").as_bytes(), event].concat(),
        ),
        ("stripe_signature", "self-signed", [&[1u8][..], b"t=1800000000,v0=00\n", event].concat()),
        // [split seed], then transport stream bytes (the head of ffmpeg's files: PAT, PMT, a GOP start).
        ("ts_demux", "h264-aac", with_prefix(&[4], &ts_h264[..188 * 60])),
        ("ts_demux", "hevc", with_prefix(&[1], &ts_hevc)),
        // The stream id text as sent in the SRT handshake.
        ("srt_stream_id", "publish-ac", b"#!::r=live/k3y,m=publish,u=obs".to_vec()),
        ("srt_stream_id", "publish-prefix", b"publish:live/k3y".to_vec()),
        ("srt_stream_id", "request-token", b"#!::r=main,m=request,token=a.b".to_vec()),
        ("srt_stream_id", "read", b"read:main?token=t".to_vec()),
        // [codec: 0 H.264, 1 H.265, 2 AAC], then [kind, length, payload] records: kind 2 a
        // sender report, 3 the end of the report wait, else RTP (bit 0 marker, bits 2-6 the
        // timestamp step in 300-tick units).
        (
            "rtsp_depacketize",
            "h264",
            [
                &[0u8, 2, 8][..],
                &[1, 2, 3, 4, 5, 6, 7, 8],
                &[1, 5],
                &[0x65, 0x88, 0x84, 0x00, 0x33],
                &[0x30, 4],
                &[0x7c, 0x81, 0x9a, 0x01],
                &[0x01, 4],
                &[0x7c, 0x41, 0x02, 0x03],
                &[3, 0],
            ]
            .concat(),
        ),
        (
            "rtsp_depacketize",
            "h265",
            [
                &[1u8, 3, 0][..],
                &[1, 4],
                &[0x26, 0x01, 0xaf, 0x10],
                &[0x31, 4],
                &[0x2a, 0x01, 0xaf, 0x20],
                &[0x31, 4],
                &[0x02, 0x01, 0xd0, 0x30],
                &[2, 8],
                &[9, 9, 9, 9, 9, 9, 9, 9],
            ]
            .concat(),
        ),
        (
            "rtsp_depacketize",
            "aac",
            [
                &[2u8, 2, 8][..],
                &[1, 2, 3, 4, 5, 6, 7, 8],
                &[0x0d, 9],
                &[0x00, 0x10, 0x00, 0x28, 0x21, 0x10, 0x04, 0x60, 0x8c],
                &[0x0d, 9],
                &[0x00, 0x10, 0x00, 0x28, 0x21, 0x10, 0x04, 0x60, 0x8c],
            ]
            .concat(),
        ),
    ]
}

/// Writes the hand-made seeds. Run after changing a target's input layout.
#[test]
#[ignore = "writes tests/fuzz/corpus; run by hand"]
fn write_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    }
}

/// The hand-made seeds do what their names say: the RTMP ones reach the session's events.
#[test]
fn seeds_reach_the_session() {
    use tidecast::protocols::rtmp::{ConnEvent, RtmpServerConn};
    let mut conn = RtmpServerConn::new(tidecast::protocols::rtmp::RtmpLimits {
        max_chunk_size: 65536,
        max_message_size: 1 << 20,
        max_name_len: 256,
        out_chunk_size: 4096,
    });
    let (mut out, mut events) = (Vec::new(), Vec::new());
    conn.handle_input(&client_handshake(), &mut out, &mut events).unwrap();
    conn.handle_input(&publish_session(), &mut out, &mut events).unwrap();
    let Some(ConnEvent::ConnectRequested { request_id, .. }) = events.first().cloned() else {
        panic!("no connect: {events:?}")
    };
    conn.accept(request_id, &mut out).unwrap();
    assert!(seeds().iter().all(|(t, _, _)| TARGETS.iter().any(|(n, _)| n == t)));
}
