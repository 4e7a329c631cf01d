//! srt-tokio's listener against a real libsrt sender (ffmpeg 5.1), before any server wiring:
//! the stream id arrives intact and parses, the listener can refuse at the handshake with an
//! SRT reject code, and what arrives demuxes with `protocols::ts` into frames without a single
//! continuity gap. This is the interop floor the SRT ingest adapter stands on; INTEROP-NOTES
//! warns that srt-tokio 0.4.4 may make libsrt senders use payloads below 1316 bytes, so the
//! payload sizes are recorded too.

use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::SrtListener;
use tidecast::media::TrackKind;
use tidecast::protocols::srt::streamid::{self, StreamId};
use tidecast::protocols::ts::{TsDemuxer, TsEvent};
use tokio::process::Command;
use tokio::time::timeout;

fn have(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// ffmpeg publishing 3 s of `testsrc2` H.264 + AAC as MPEG-TS over SRT with `pkt_size=1316`.
fn publisher(port: u16, stream_id: &str) -> tokio::process::Child {
    let url = format!("srt://127.0.0.1:{port}?streamid={stream_id}&pkt_size=1316&latency=200000");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac"])
        .args(["-f", "mpegts", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg")
}

#[tokio::test]
async fn ffmpeg_publishes_ts_over_srt_to_srt_tokio() {
    if !have("ffmpeg") {
        eprintln!("SKIPPED: ffmpeg not installed (apt-get install -y ffmpeg); tests/run.sh installs it");
        return;
    }
    // Port 0 through our own socket: the listener's settings do not report the bound port.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = udp.local_addr().unwrap().port();
    let (_listener, mut incoming) = SrtListener::builder()
        .latency(Duration::from_millis(200))
        .socket(udp)
        .bind(format!("127.0.0.1:{port}").as_str())
        .await
        .unwrap();

    // A wrong form first: refused at the handshake with a server reject code.
    let mut refused = publisher(port, "#!::m=publish");
    let req = timeout(Duration::from_secs(10), incoming.incoming().next()).await.unwrap().unwrap();
    let id = req.stream_id().map(|s| s.to_string()).unwrap_or_default();
    assert_eq!(streamid::parse(&id), Err(streamid::StreamIdError::NoResource));
    req.reject(RejectReason::Server(ServerRejectReason::BadRequest)).await.unwrap();
    let status = timeout(Duration::from_secs(10), refused.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "ffmpeg should fail on a refused connection");

    let mut ffmpeg = publisher(port, "#!::r=live/k3y,m=publish,u=obs");
    let req = timeout(Duration::from_secs(10), incoming.incoming().next()).await.unwrap().unwrap();
    let id = req.stream_id().map(|s| s.to_string()).unwrap_or_default();
    assert_eq!(streamid::parse(&id), Ok(StreamId::Publish { key: "k3y".into() }), "raw id {id:?}");
    let mut socket = req.accept(None).await.unwrap();

    let mut demux = TsDemuxer::new();
    let (mut events, mut video, mut audio, mut sizes) = (Vec::new(), 0, 0, Vec::new());
    while let Ok(Some(Ok((_, payload)))) = timeout(Duration::from_secs(5), socket.next()).await {
        sizes.push(payload.len());
        demux.feed(&payload, &mut events);
        for e in events.drain(..) {
            if let TsEvent::Frame(f) = e {
                match f.track {
                    TrackKind::Video => video += 1,
                    TrackKind::Audio => audio += 1,
                }
            }
        }
    }
    let _ = ffmpeg.wait().await;
    let stats = demux.stats();
    let max = sizes.iter().max().copied().unwrap_or(0);
    eprintln!(
        "srt payloads: {} datagrams, max {max} bytes; video {video}, audio {audio}; {stats:?}",
        sizes.len()
    );
    assert_eq!(stats.cc_gaps, 0);
    assert!(video >= 70, "{video} video frames in 3 s at 25 fps");
    // 3 s at 48 kHz is about 140 AAC frames, but ffmpeg packs several into one PES and the
    // last PES is only complete when the next one starts: allow for the tail (and a busy machine).
    assert!(audio >= 90, "{audio} AAC frames in 3 s at 48 kHz");
    assert_eq!(max, 1316, "libsrt sender payload size");
}
