//! RTMP play path: a viewer's command answers must reach it whole and in order, even while the
//! server is pushing media into a nearly full socket.
//!
//! A player is not only a sink: while playing it may send commands (`createStream`, pings, ...)
//! and rml_rtmp's `ServerSession` answers them. Those answers share the socket with the media
//! chunks, so each must be written completely before any other chunk: a dropped answer leaves
//! the player waiting forever, and half an answer followed by media chunks corrupts the chunk
//! stream for the rest of the connection (RTMP spec 1.0 §5.3: a chunk's header announces how
//! many payload bytes follow).
//!
//! How the test provokes it, deterministically enough to fail nearly every run on a server that
//! can drop a pending write: a real publisher (ffmpeg, 30 fps test pattern plus AAC, ~200 kB/s,
//! so the channel's ring wakes the viewer every ~15 ms), a server with the smallest
//! `rtmp.viewer_send_buffer` the kernel allows and a long `rtmp.write_timeout`, and a
//! hand-written client with a 4 KiB SO_RCVBUF that repeats: send a burst of `createStream`s
//! (each with its own transaction id), sleep, then read everything that is there. The server
//! reads commands 4 KiB at a time, so each read yields ~6 KB of `_result`s: more than the
//! socket holds, so the write must wait for the client, who is asleep while new frames reach
//! the ring. Draining between bursts lets the server catch up to live and go back to waiting
//! on both the socket and the ring, where the next burst finds it.
//!
//! Everything the server sends goes through rml_rtmp's `ChunkDeserializer`; the test fails on a
//! deserialization error, a message a correct server never sends (unknown type, undecodable
//! AMF0, media on the wrong stream, an answer to a command never sent or answered twice), or a
//! `createStream` without its `_result` once the client has caught up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;

const LIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// Each set-up step (connect, createStream, play) must be answered within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Transaction ids of the probe `createStream`s start here, clear of the set-up's 1..=3.
const FIRST_PROBE_TX: u32 = 1000;
/// Probe commands per burst: ~5 KB, more than one 4 KiB server read.
const BURST: usize = 200;
/// How long the client sleeps after each burst: several frame intervals.
const PAUSE: Duration = Duration::from_millis(60);
/// How long the client keeps sending bursts. A server that drops writes has nearly always
/// corrupted the stream within the first 6 bursts (~0.4 s).
const PROBE_PHASE: Duration = Duration::from_secs(1);
/// Reads per drain, each up to `READ_BUF` bytes; the drain stops earlier when nothing comes.
const DRAIN_READS: usize = 64;
const READ_BUF: usize = 64 * 1024;
/// After the probe phase the client reads as fast as it can; a correct server has answered
/// every probe by then (the backlog is at most `viewer_max_lag` of media).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Bytes received without a complete message: several times the largest frame of this stream
/// (key frames are tens of kB), so a parser stuck on a garbage length (a torn chunk) is
/// reported as such within the catch-up time instead of as lost answers.
const MAX_INCOMPLETE: usize = 512 << 10;

/// A hand-written RTMP player: raw chunks in both directions, so every byte the server sends is
/// checked rather than interpreted leniently by a client session.
struct Viewer {
    stream: TcpStream,
    ser: ChunkSerializer,
    de: ChunkDeserializer,
    /// Message stream id of our play (from the set-up `createStream`).
    play_stream: u32,
    next_tx: u32,
    /// Probe `createStream` transaction ids sent, and those answered by a `_result`.
    sent: BTreeSet<u32>,
    answered: BTreeSet<u32>,
    /// `_result`s of the set-up commands, by transaction id: their first extra argument.
    setup_results: BTreeMap<u32, Amf0Value>,
    /// `onStatus` codes, in order.
    statuses: Vec<String>,
    video: usize,
    audio: usize,
    /// Timestamp of the last video message, and the largest step between two of them.
    last_video_ms: Option<u32>,
    max_video_step_ms: u32,
    /// Bytes fed so far, to locate a fault.
    received: u64,
    /// Bytes fed since the last complete message.
    incomplete: usize,
}

impl Viewer {
    /// TCP connect with a 4 KiB receive buffer, RTMP handshake.
    fn connect(addr: SocketAddr) -> Viewer {
        let mut stream = tcp_connect(addr, true);
        let rest = rtmp_handshake(&mut stream);
        let mut v = Viewer {
            stream,
            ser: ChunkSerializer::new(),
            de: ChunkDeserializer::new(),
            play_stream: 0,
            next_tx: FIRST_PROBE_TX,
            sent: BTreeSet::new(),
            answered: BTreeSet::new(),
            setup_results: BTreeMap::new(),
            statuses: Vec::new(),
            video: 0,
            audio: 0,
            last_video_ms: None,
            max_video_step_ms: 0,
            received: 0,
            incomplete: 0,
        };
        v.feed(&rest).unwrap_or_else(|e| panic!("right after the handshake: {e}"));
        v
    }

    /// One AMF0 command as chunk bytes.
    fn command(
        &mut self,
        name: &str,
        tx: u32,
        object: Amf0Value,
        args: Vec<Amf0Value>,
        stream: u32,
    ) -> Vec<u8> {
        let msg = RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id: tx as f64,
            command_object: object,
            additional_arguments: args,
        };
        let payload = msg.into_message_payload(RtmpTimestamp::new(0), stream).unwrap();
        self.ser.serialize(&payload, false, false).unwrap().bytes
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to the server");
    }

    /// `connect` to app `live`, `createStream`, `play` `channel`; returns once the server said
    /// NetStream.Play.Start.
    fn play(&mut self, addr: SocketAddr, channel: &str) {
        let mut props = std::collections::HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        props.insert("tcUrl".to_string(), Amf0Value::Utf8String(format!("rtmp://{addr}/live")));
        props.insert("flashVer".to_string(), Amf0Value::Utf8String("LNX 9,0,124,2".into()));
        let bytes = self.command("connect", 1, Amf0Value::Object(props), vec![], 0);
        self.send(&bytes);
        self.read_until("connect's _result", |v| v.setup_results.contains_key(&1));

        let bytes = self.command("createStream", 2, Amf0Value::Null, vec![], 0);
        self.send(&bytes);
        self.read_until("createStream's _result", |v| v.setup_results.contains_key(&2));
        self.play_stream = match self.setup_results[&2] {
            Amf0Value::Number(id) => id as u32,
            ref other => panic!("createStream answered with {other:?}"),
        };

        let args = vec![Amf0Value::Utf8String(channel.to_string())];
        let bytes = self.command("play", 3, Amf0Value::Null, args, self.play_stream);
        self.send(&bytes);
        self.read_until("NetStream.Play.Start", |v| v.statuses.iter().any(|s| s == "NetStream.Play.Start"));
    }

    /// Read until `done` holds; panics after `STEP_TIMEOUT`, on EOF or on a corrupt stream.
    fn read_until(&mut self, what: &str, done: impl Fn(&Viewer) -> bool) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut buf = [0u8; 16 * 1024];
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "no {what} within {STEP_TIMEOUT:?}; statuses: {:?}",
                self.statuses
            );
            if let Err(e) = self.read_some(&mut buf) {
                panic!("waiting for {what}: {e}");
            }
        }
    }

    /// One socket read into `buf` (its length caps the bite) and parse it. A read timeout is
    /// not an error; EOF and a corrupt chunk stream are.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, String> {
        match self.stream.read(buf) {
            Ok(0) => Err(format!("the server closed the connection after {} bytes", self.received)),
            Ok(n) => self.feed(&buf[..n]).map(|()| n),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(0),
            Err(e) => Err(format!("reading after {} bytes: {e}", self.received)),
        }
    }

    /// A burst of probe `createStream`s, sent with one write.
    fn send_probes(&mut self, count: usize) {
        let mut bytes = Vec::new();
        for _ in 0..count {
            let tx = self.next_tx;
            self.next_tx += 1;
            bytes.extend(self.command("createStream", tx, Amf0Value::Null, vec![], 0));
            self.sent.insert(tx);
        }
        self.send(&bytes);
    }

    /// Parse what the server sent; an error describes the first thing a correct server would
    /// never have sent.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        let start = self.received;
        self.received += bytes.len() as u64;
        self.incomplete += bytes.len();
        let mut input = bytes;
        loop {
            let next = self
                .de
                .get_next_message(input)
                .map_err(|e| format!("chunk deserializer failed in bytes {start}..{}: {e}", self.received))?;
            input = &[];
            let Some(msg) = next else { break };
            self.incomplete = 0;
            self.on_message(msg).map_err(|e| format!("in bytes {start}..{}: {e}", self.received))?;
        }
        if self.incomplete > MAX_INCOMPLETE {
            return Err(format!(
                "{} bytes without a complete message (at byte {}): the parser is stuck on a \
                 garbage header",
                self.incomplete, self.received
            ));
        }
        Ok(())
    }

    fn on_message(&mut self, p: MessagePayload) -> Result<(), String> {
        let (type_id, stream_id, len) = (p.type_id, p.message_stream_id, p.data.len());
        let what = format!("message type {type_id} on stream {stream_id}, {len} bytes");
        match type_id {
            // SetChunkSize: the server announces its out_chunk_size (4 KiB) once.
            1 => {
                let Ok(RtmpMessage::SetChunkSize { size }) = p.to_rtmp_message() else {
                    return Err(format!("undecodable SetChunkSize: {what}"));
                };
                if !(128..=1 << 24).contains(&size) {
                    return Err(format!("SetChunkSize {size}"));
                }
                self.de.set_max_chunk_size(size as usize).map_err(|e| e.to_string())?;
            }
            // Acknowledgement, UserControl, WindowAcknowledgement, SetPeerBandwidth.
            3..=6 => {
                p.to_rtmp_message().map_err(|e| format!("undecodable control {what}: {e}"))?;
            }
            8 | 9 => {
                if stream_id != self.play_stream {
                    return Err(format!("media on the wrong stream: {what}"));
                }
                if type_id == 9 {
                    let ts = p.timestamp.value;
                    if let Some(last) = self.last_video_ms {
                        if ts < last {
                            return Err(format!("video timestamp went back from {last} to {ts} ms: {what}"));
                        }
                        self.max_video_step_ms = self.max_video_step_ms.max(ts - last);
                    }
                    self.last_video_ms = Some(ts);
                    self.video += 1;
                } else {
                    self.audio += 1;
                }
            }
            18 => match p.to_rtmp_message() {
                Ok(RtmpMessage::Amf0Data { .. }) => {}
                other => return Err(format!("undecodable data {what}: {other:?}")),
            },
            20 => self.on_command(p.to_rtmp_message(), &what)?,
            _ => return Err(format!("unexpected {what}")),
        }
        Ok(())
    }

    fn on_command(
        &mut self,
        msg: Result<RtmpMessage, rml_rtmp::messages::MessageDeserializationError>,
        what: &str,
    ) -> Result<(), String> {
        let (name, tx, args) = match msg {
            Ok(RtmpMessage::Amf0Command { command_name, transaction_id, additional_arguments, .. }) => {
                (command_name, transaction_id, additional_arguments)
            }
            other => return Err(format!("undecodable command {what}: {other:?}")),
        };
        match name.as_str() {
            "_result" => {
                if tx.fract() != 0.0 || !(1.0..=u32::MAX as f64).contains(&tx) {
                    return Err(format!("_result with transaction id {tx}"));
                }
                let tx = tx as u32;
                if tx < FIRST_PROBE_TX {
                    self.setup_results.insert(tx, args.into_iter().next().unwrap_or(Amf0Value::Null));
                } else if !self.sent.contains(&tx) {
                    return Err(format!("_result for transaction {tx}, which was never sent"));
                } else if !self.answered.insert(tx) {
                    return Err(format!("a second _result for transaction {tx}"));
                }
            }
            "onStatus" => {
                let code = args.into_iter().find_map(|a| match a {
                    Amf0Value::Object(mut o) => match o.remove("code") {
                        Some(Amf0Value::Utf8String(c)) => Some(c),
                        _ => None,
                    },
                    _ => None,
                });
                self.statuses.push(code.ok_or_else(|| format!("onStatus without a code: {what}"))?);
            }
            "onBWDone" => {}
            other => return Err(format!("unexpected command {other:?} (transaction {tx}): {what}")),
        }
        Ok(())
    }

    /// Probes sent but not answered, in order.
    fn unanswered(&self) -> Vec<u32> {
        self.sent.difference(&self.answered).copied().collect()
    }
}

/// Read whatever is there now (the socket has a short read timeout), up to `DRAIN_READS` reads.
fn drain(v: &mut Viewer, buf: &mut [u8]) {
    for _ in 0..DRAIN_READS {
        match v.read_some(buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => panic!("corrupted chunk stream: {e}"),
        }
    }
}

/// Ranges of consecutive ids, for a short failure message ("1003..=1010, 1042").
fn ranges(ids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j] + 1 {
            j += 1;
        }
        out.push(if i == j { ids[i].to_string() } else { format!("{}..={}", ids[i], ids[j]) });
        i = j + 1;
    }
    out.join(", ")
}

#[test]
fn command_answers_survive_media_writes_to_a_slow_viewer() {
    if !require_ffmpeg() {
        return;
    }
    let server = TestServer::start(&[
        // The kernel's floor (it doubles the request and enforces a minimum of ~4.5 KiB).
        ("TIDECAST__RTMP__VIEWER_SEND_BUFFER", "1KiB"),
        // The client sleeps between reads: it must be neither cut off as stalled nor
        // disconnected for skipping to the newest key frame too often.
        ("TIDECAST__RTMP__WRITE_TIMEOUT", "30s"),
        ("TIDECAST__RTMP__VIEWER_MAX_SKIPS", "1000"),
    ]);
    let _publisher = ffmpeg_publish(&server.publish_url(&server.key), 30);
    server.wait_live(LIVE_TIMEOUT);

    let mut v = Viewer::connect(server.rtmp);
    v.play(server.rtmp, "main");
    let setup_video = v.video;

    // Probe phase: burst, sleep, drain.
    let started = Instant::now();
    let mut buf = vec![0u8; READ_BUF];
    let mut fault = None;
    let mut bursts = 0;
    // Short read timeout: a drain ends once the socket has been empty for a moment. Writes
    // stay blocking (tcp_connect's 5 s timeout).
    v.stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    'probe: while started.elapsed() < PROBE_PHASE {
        bursts += 1;
        v.send_probes(BURST);
        thread::sleep(PAUSE);
        for _ in 0..DRAIN_READS {
            match v.read_some(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    fault = Some(e);
                    break 'probe;
                }
            }
        }
    }
    let probe_time = started.elapsed();
    let probe_video = v.video - setup_video;

    // Catch up: read until the last probe is answered (answers go out in order).
    v.stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let last = *v.sent.last().expect("probes were sent");
    let drain_started = Instant::now();
    while fault.is_none() && !v.answered.contains(&last) && drain_started.elapsed() < DRAIN_TIMEOUT {
        if let Err(e) = v.read_some(&mut buf) {
            fault = Some(e);
        }
    }
    let unanswered = v.unanswered();
    eprintln!(
        "{bursts} bursts, {} probes in {} ms; {} answered, {} unanswered; {} video messages during \
         the probe phase, {} video / {} audio in all; {} bytes received; catch-up {} ms",
        v.sent.len(),
        probe_time.as_millis(),
        v.answered.len(),
        unanswered.len(),
        probe_video,
        v.video,
        v.audio,
        v.received,
        drain_started.elapsed().as_millis(),
    );

    if let Some(fault) = fault {
        panic!(
            "corrupted chunk stream: {fault}\n({} of {} probes answered before it; unanswered: {})",
            v.answered.len(),
            v.sent.len(),
            ranges(&unanswered)
        );
    }
    assert!(
        unanswered.is_empty(),
        "lost command answers: {} of {} createStream commands got no _result within {DRAIN_TIMEOUT:?} \
         of the last one (unanswered: {}; {} bytes received since the last complete message)",
        unanswered.len(),
        v.sent.len(),
        ranges(&unanswered),
        v.incomplete
    );
    // The test only means something if media was flowing while the probes were answered.
    assert!(probe_video >= 10, "only {probe_video} video messages during the probe phase");
}

/// The channel writer (`rtmp.viewer_fanout`): viewers that keep up get every frame, in order,
/// from the one writer; a viewer whose socket keeps filling up is handed back to its own task
/// with the unsent rest of a write, finishes it, and comes back, and neither it nor the others
/// ever see a torn chunk, a message twice or time going backwards. With the writer off, the
/// same holds and nothing is handed back.
#[test]
fn a_slow_viewer_among_fast_ones_is_handed_back_whole() {
    if !require_ffmpeg() {
        return;
    }
    for fanout in ["true", "false"] {
        let server = TestServer::start(&[
            ("TIDECAST__RTMP__VIEWER_FANOUT", fanout),
            ("TIDECAST__RTMP__VIEWER_SEND_BUFFER", "1KiB"),
            ("TIDECAST__RTMP__WRITE_TIMEOUT", "30s"),
            ("TIDECAST__RTMP__VIEWER_MAX_SKIPS", "1000"),
        ]);
        let _publisher = ffmpeg_publish(&server.publish_url(&server.key), 30);
        server.wait_live(LIVE_TIMEOUT);
        let mut fast: Vec<Viewer> = (0..3).map(|_| Viewer::connect(server.rtmp)).collect();
        for v in &mut fast {
            v.play(server.rtmp, "main");
            v.stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        }
        let mut slow = Viewer::connect(server.rtmp);
        slow.play(server.rtmp, "main");
        slow.stream.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let start_video: Vec<usize> = fast.iter().map(|v| v.video).collect();

        // Three seconds: the fast viewers read all the time, the slow one reads once every
        // 150 ms (its 4 KiB receive buffer and the server's minimal send buffer are full long
        // before that, with a frame or more left over).
        let mut buf = vec![0u8; READ_BUF];
        let started = Instant::now();
        let mut last_slow = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            for v in &mut fast {
                drain(v, &mut buf);
            }
            if last_slow.elapsed() >= Duration::from_millis(150) {
                drain(&mut slow, &mut buf);
                last_slow = Instant::now();
            }
            thread::sleep(Duration::from_millis(2));
        }
        // Then the slow viewer catches up too.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            drain(&mut slow, &mut buf);
            for v in &mut fast {
                drain(v, &mut buf);
            }
        }

        let handbacks = server.metric(r#"tidecast_viewer_handbacks_total{protocol="rtmp"}"#);
        for (i, v) in fast.iter().enumerate() {
            let got = v.video - start_video[i];
            eprintln!(
                "fanout={fanout} fast viewer {i}: {got} video frames, largest step {} ms",
                v.max_video_step_ms
            );
            // 30 fps for ~5 s: a viewer that kept up got nearly all of them, without a skip.
            assert!(got >= 100, "fanout={fanout}: fast viewer {i} got only {got} video frames");
            assert!(
                v.max_video_step_ms <= 200,
                "fanout={fanout}: fast viewer {i} skipped {} ms of video",
                v.max_video_step_ms
            );
        }
        eprintln!("fanout={fanout}: slow viewer got {} video frames; {handbacks} hand-backs", slow.video);
        assert!(slow.video >= 30, "fanout={fanout}: the slow viewer got only {} video frames", slow.video);
        if fanout == "true" {
            assert!(handbacks >= 1.0, "the slow viewer was never handed back by the channel writer");
        } else {
            assert_eq!(handbacks, 0.0, "no channel writer, no hand-backs");
        }
        assert_eq!(server.metric(r#"tidecast_viewers{protocol="rtmp"}"#), 4.0, "fanout={fanout}");
    }
}
