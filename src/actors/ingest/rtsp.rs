//! RTSP pull adapter: one connection to a camera, its media into the channel's `IngestSession`.
//!
//! Data flow: retina `Session` (DESCRIBE with Basic/Digest auth, SETUP over TCP-interleaved or
//! UDP, PLAY, keep-alives, RTCP) -> retina's depacketizers (`FrameFormat::MP4`) ->
//! `protocols::rtsp::RtspDemux` (sender-report timing, start at a key frame) ->
//! `IngestSession::push` -> the channel's ring. The first H.264 or H.265 video stream and the
//! first AAC audio stream are set up; other audio is dropped with one log line.
//!
//! The loop never awaits a consumer (backpressure rule 1); its awaits are the camera, the read
//! timeout and the channel's cancellation. Credentials go to retina in `SessionOptions::creds`,
//! never in the URL, so no error or log line carries them. `actors::pull` owns the retries.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use futures_util::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, Session, SessionOptions, SetupOptions,
    TcpTransportOptions, TeardownPolicy, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::actors::ingest::{IngestEnd, IngestSession};
use crate::actors::pull::{PullEntry, PullSettings, PullSource, PullState, PROTOCOL};
use crate::actors::registry::ChannelRegistry;
use crate::protocols::rtsp::{RtspDemux, RtspEvent, RtspTransport, Selected};

/// How often the demuxer's sender-report wait is checked while the camera is quiet.
const TICK: Duration = Duration::from_secs(1);
/// RTP timestamps that jump further than this end the session (it is reconnected, with a
/// discontinuity), rather than stretching the timeline.
const MAX_JUMP_SECS: u32 = 10;

/// Pull `source` into `channel` until the camera stops, fails or the channel cuts it off.
/// `Ok(())`: the camera ended the stream; `Err`: why it failed, without credentials.
pub(crate) async fn run(
    channel: &str,
    entry: &PullEntry,
    source: &PullSource,
    settings: &PullSettings,
    registry: &Addr<ChannelRegistry>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let creds = source.url.has_credentials().then(|| Credentials {
        username: source.url.username().to_owned(),
        password: source.url.password().to_owned(),
    });
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("tidecast/{}", env!("CARGO_PKG_VERSION")))
        .teardown(TeardownPolicy::Auto);
    let transport = match source.transport {
        RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
        RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
    };
    let connect = async {
        let mut session = Session::describe(source.url.url().clone(), options)
            .await
            .map_err(|e| format!("describe: {e}"))?;
        let (video, audio) = choose_streams(&session)?;
        for s in [video, audio].into_iter().flatten() {
            let setup = SetupOptions::default().transport(transport.clone()).frame_format(FrameFormat::MP4);
            session.setup(s.index, setup).await.map_err(|e| format!("setup: {e}"))?;
        }
        Ok::<_, String>((session, video, audio))
    };
    let (session, video, audio) =
        tokio::time::timeout(settings.connect_timeout, connect).await.map_err(|_| {
            format!("the camera did not answer DESCRIBE/SETUP within {:?}", settings.connect_timeout)
        })??;

    let mut ingest = IngestSession::start_pull(registry, PROTOCOL, channel, shutdown)
        .await
        .map_err(|e| format!("channel refused the pull: {}", e.msg))?;

    let play = PlayOptions::default()
        .initial_timestamp(InitialTimestampPolicy::Permissive)
        .enforce_timestamps_with_max_jump_secs(NonZeroU32::new(MAX_JUMP_SECS).expect("non-zero"));
    let playing = tokio::time::timeout(settings.connect_timeout, session.play(play))
        .await
        .map_err(|_| "the camera did not answer PLAY in time".to_string())?
        .map_err(|e| format!("play: {e}"))?;
    let mut demuxed = playing.demuxed().map_err(|e| format!("play: {e}"))?;

    let mut demux = RtspDemux::new(video, audio, std::time::Instant::now());
    for s in [video, audio].into_iter().flatten() {
        demux.set_parameters(s.index, demuxed.streams()[s.index].parameters())?;
    }
    // The pull's span lives across reconnects, so the session goes in this line, not the span.
    info!(
        session = ingest.session_id(),
        resumed = ingest.resumed(),
        video = video.is_some(),
        audio = audio.is_some(),
        "pulling"
    );
    let mut events = Vec::new();
    let mut live = false;
    let mut tick = tokio::time::interval(TICK);
    let mut read_deadline = Instant::now() + settings.read_timeout;
    let end: Result<IngestEnd, String> = loop {
        if !ingest.channel_alive() {
            break Ok(IngestEnd::ChannelGone);
        }
        let item = tokio::select! {
            _ = ingest.cancelled() => break Ok(IngestEnd::CutOff),
            _ = tick.tick() => {
                demux.tick(std::time::Instant::now(), &mut events);
                None
            }
            r = tokio::time::timeout_at(read_deadline, demuxed.next()) => match r {
                Err(_) => break Err(format!("no media from the camera for {:?}", settings.read_timeout)),
                Ok(None) => break Ok(IngestEnd::Disconnected),
                Ok(Some(Err(e))) => break Err(format!("camera stream: {e}")),
                Ok(Some(Ok(item))) => Some(item),
            },
        };
        if let Some(item) = item {
            if let CodecItem::VideoFrame(f) = &item {
                read_deadline = Instant::now() + settings.read_timeout;
                if f.has_new_parameters() {
                    let i = f.stream_id();
                    demux.set_parameters(i, demuxed.streams()[i].parameters())?;
                }
            } else if matches!(item, CodecItem::AudioFrame(_)) {
                read_deadline = Instant::now() + settings.read_timeout;
            }
            demux.push(item, std::time::Instant::now(), &mut events);
        }
        for e in events.drain(..) {
            match e {
                RtspEvent::Tracks(tracks) => {
                    log_tracks(&tracks);
                    ingest.set_tracks(tracks);
                }
                RtspEvent::Frame(frame) => {
                    ingest.received(frame.data.len());
                    ingest.push(frame);
                    if !live {
                        live = true;
                        info!(timing = ?demux.timing(), dropped_before_start = demux.dropped, "live");
                        entry.set_state(PullState::Live);
                    }
                }
            }
        }
    };
    match end {
        Ok(end) => {
            ingest.finish(&end);
            Ok(())
        }
        Err(reason) => {
            ingest.finish(&IngestEnd::Failed(reason.clone()));
            Err(reason)
        }
    }
}

fn log_tracks(tracks: &Arc<crate::media::Tracks>) {
    if let Some(v) = &tracks.video {
        info!(codec = %v.codec_string, width = v.width, height = v.height, "video configuration");
    }
    if let Some(a) = &tracks.audio {
        info!(codec = %a.codec_string, sample_rate = a.sample_rate, channels = a.channels, "audio configuration");
    }
}

/// The first H.264/H.265 video and the first AAC audio stream of the presentation.
fn choose_streams<S: retina::client::State>(
    session: &Session<S>,
) -> Result<(Option<Selected>, Option<Selected>), String> {
    let (mut video, mut audio) = (None, None);
    for (index, s) in session.streams().iter().enumerate() {
        let selected = Selected { index, clock_rate: s.clock_rate_hz() };
        match (s.media(), s.encoding_name()) {
            ("video", "h264" | "h265") if video.is_none() => video = Some(selected),
            ("audio", "mpeg4-generic") if audio.is_none() => audio = Some(selected),
            ("audio", other) => info!(codec = other, "camera audio is not AAC: dropped"),
            ("video", other) => info!(codec = other, "camera video stream is not H.264 or H.265: ignored"),
            _ => {}
        }
    }
    if video.is_none() && audio.is_none() {
        return Err("the camera offers no H.264/H.265 video and no AAC audio".into());
    }
    Ok((video, audio))
}
