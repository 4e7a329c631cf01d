//! Server assembly: store, actors, listeners, and the shutdown cancellation tree.
//!
//! Start order: store (connect, migrate, first-run channel) -> ChannelRegistry -> the TLS
//! certificate (when `[tls]` names one; a bad file fails the start) -> pulled sources (RTSP)
//! -> RTMP and RTMPS listeners on the media runtime -> SRT -> HTTP and HTTPS -> the configured
//! pull sources. Shutdown reverses it: stop accepting, tell every session to
//! finish politely (viewers get `NetStream.Play.UnpublishNotify`-style stop), stop the channels,
//! wait for sessions up to `server.shutdown_timeout`, stop HTTP, close the store.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::{Addr, Supervisor};
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::actors::archive::Archive;
use crate::actors::channel::{ChannelDeps, ChannelSettings};
use crate::actors::hls::{HlsDirectory, HlsSettings};
use crate::actors::listen::rtmp::{self, RtmpContext, PROTOCOL, PROTOCOL_TLS};
use crate::actors::pull::{PullSource, Pulls};
use crate::actors::registry::{ChannelRegistry, StopAll, SupervisionSettings};
use crate::actors::restream::Restream;
use crate::actors::supervise::Backoff;
use crate::actors::transcode::Transcoder;
use crate::actors::viewer::ViewerPolicy;
use crate::admission::PerAddressLimit;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::media::clock::Clock;
use crate::media::ring::RingLimits;
use crate::protocols::rtmp::RtmpLimits;
use crate::store::{NewChannel, Store, Visibility};
use crate::tls::ReloadingCert;

/// Name of the channel created on the first start with an empty database.
pub const DEFAULT_CHANNEL: &str = "main";

/// Open the store named by the config and apply migrations.
pub async fn open_store(config: &Config) -> Result<Store> {
    let store = Store::connect_with(&config.database.url, config.database.store_settings()).await?;
    store.migrate().await?;
    Ok(store)
}

/// Run the server until SIGINT/SIGTERM. Must be called inside an actix `System`; connection
/// tasks run on `media`, a multi-threaded tokio runtime.
pub async fn serve(config: Config, media: tokio::runtime::Handle) -> Result<()> {
    // The object store's HTTP client (reqwest 0.13, `rustls-no-provider`) takes rustls's process
    // default: ring, as everything else here. A second call (tests) finds it installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(&config).await?;
    info!(backend = ?store.backend(), "store ready");

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let directory = Arc::new(DashMap::new());
    let settings = ChannelSettings {
        reconnect_grace: config.channel.reconnect_grace,
        idle_timeout: config.channel.idle_timeout,
        ring: RingLimits {
            max_duration: config.channel.ring_duration,
            max_bytes: config.channel.ring_max_bytes.as_usize(),
        },
        hls: HlsSettings {
            part_target: config.hls.part_target,
            segment_target: config.hls.segment_target,
            window: config.hls.window,
            block_timeout: config.hls.block_timeout,
        },
    };
    let hls_directory: HlsDirectory = Arc::new(DashMap::new());
    let clock = Clock::system();
    let restream = Restream::new(config.restream.settings()?);
    let transcoder = Transcoder::new(config.transcode.settings());
    // Live-to-VOD. Recordings a crash left unfinished are finished in the background (their
    // videos become playable); new sessions record meanwhile.
    let archive = if config.archive.enabled {
        let archive = Archive::new(config.archive.settings(&config.server.data_dir), store.clone())?;
        media.spawn(archive.clone().run_mover(shutdown.clone()));
        let recovering = archive.clone();
        media.spawn(async move {
            match recovering.recover().await {
                Ok(0) => {}
                Ok(n) => info!(recordings = n, "finished the recordings an earlier run left unfinished"),
                Err(e) => warn!(error = %e, "cannot look for unfinished recordings"),
            }
        });
        archive
    } else {
        Archive::disabled()
    };
    if config.archive.enabled {
        crate::actors::archive::retention::load_all(&store, &archive).await?;
        media.spawn(archive.clone().run_retention(shutdown.clone()));
    }
    let deps = ChannelDeps {
        hls: hls_directory.clone(),
        media: media.clone(),
        clock,
        backoff: Backoff::default(),
        restream: restream.clone(),
        transcoder: transcoder.clone(),
        archive: archive.clone(),
    };
    let supervision = SupervisionSettings {
        max_restarts: config.channel.max_restarts,
        restart_window: config.channel.restart_window,
    };
    let registry_store = store.clone();
    let registry_dir = directory.clone();
    let registry: Addr<ChannelRegistry> = Supervisor::start(move |_| {
        ChannelRegistry::new(
            registry_store.clone(),
            settings,
            supervision,
            registry_dir.clone(),
            deps.clone(),
        )
    });

    // Pulled sources (RTSP cameras): publishers the server connects to itself.
    let pulls = Pulls::new(
        config.rtsp.settings(),
        registry.clone(),
        media.clone(),
        shutdown.clone(),
        tracker.clone(),
    );

    // SRT viewers share the RTMP viewer policy (lag, skips, write timeout).
    let rtmp_ctx_viewer = ViewerPolicy {
        max_lag: config.rtmp.viewer_max_lag,
        max_skips: config.rtmp.viewer_max_skips,
        write_timeout: config.rtmp.write_timeout,
        merge_write: config.rtmp.viewer_merge_write,
    };
    // TLS: one reloading certificate for RTMPS and HTTPS.
    let cert = if config.tls.enabled() {
        let cert = ReloadingCert::load(config.tls.cert.as_ref(), config.tls.key.as_ref()).map_err(|e| {
            Error::with_source(crate::ErrorKind::FailedPrecondition, "cannot load the TLS certificate", e)
        })?;
        info!(cert = %config.tls.cert, "TLS certificate loaded");
        media.spawn(crate::tls::watch(cert.clone(), config.tls.reload_interval, shutdown.clone()));
        Some(cert)
    } else {
        None
    };

    // RTMP and RTMPS: bind here so a bad address fails the start, then accept on the media
    // runtime. One context each (the label differs); the per-address limit is shared.
    let rtmp_ctx = RtmpContext {
        protocol: PROTOCOL,
        registry: registry.clone(),
        limits: RtmpLimits {
            max_chunk_size: config.rtmp.max_chunk_size.bytes() as u32,
            max_message_size: config.rtmp.max_message_size.as_usize(),
            max_name_len: config.rtmp.max_stream_name_len,
            out_chunk_size: config.rtmp.out_chunk_size.bytes() as u32,
        },
        handshake_timeout: config.rtmp.handshake_timeout,
        viewer: rtmp_ctx_viewer,
        viewer_send_buffer: config.rtmp.viewer_send_buffer.as_usize(),
        publish_idle_timeout: config.rtmp.publish_idle_timeout,
        max_connections: config.rtmp.max_connections,
        per_address: per_address_limit(
            config.rtmp.max_connections_per_address,
            &config.rtmp.per_address_exempt,
        ),
        clock,
        pulls: pulls.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        fanouts: config.rtmp.viewer_fanout.then(|| {
            let fanout = crate::actors::viewer::rtmp::FanoutConfig {
                chunk_size: config.rtmp.out_chunk_size.bytes() as u32,
                max_lag: config.rtmp.viewer_max_lag,
                merge_write: config.rtmp.viewer_merge_write,
            };
            Arc::new(crate::actors::viewer::rtmp::Fanouts::new(fanout, PROTOCOL, clock, tracker.clone()))
        }),
    };
    let mut rtmp_tasks = Vec::new();
    let mut bound = Bound::default();
    if !config.rtmp.listen.is_empty() {
        let (task, addr) = start_rtmp(&media, &config.rtmp.listen, rtmp_ctx.clone(), None).await?;
        rtmp_tasks.push(task);
        bound.rtmp = Some(addr);
    }
    if let Some(cert) = cert.as_ref().filter(|_| !config.rtmp.tls_listen.is_empty()) {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config(&[]));
        // RTMPS viewers write through rustls: no channel writer.
        let ctx = RtmpContext { protocol: PROTOCOL_TLS, fanouts: None, ..rtmp_ctx.clone() };
        let (task, addr) = start_rtmp(&media, &config.rtmp.tls_listen, ctx, Some(acceptor)).await?;
        rtmp_tasks.push(task);
        bound.rtmps = Some(addr);
    }

    // The API's context: also the playback-token check of SRT play, and the restream
    // destinations' editor (loaded from the store before any channel goes live).
    let mut api_ctx = crate::http::api::ApiContext::build(&config, store.clone()).await?;
    api_ctx.restream = restream.clone();
    api_ctx.transcoder = transcoder.clone();
    api_ctx.archive = archive.clone();
    api_ctx.pulls = Some(pulls.clone());
    crate::http::api::destinations::load_all(&store, &restream, &api_ctx.sealer).await?;
    crate::http::api::sources::load_all(&store, &pulls, &api_ctx.sealer).await?;
    crate::http::api::ladder::load_all(&store, &transcoder).await?;
    let api = actix_web::web::Data::new(api_ctx);

    // SRT: bound the same way; refusals happen in the handshake, before any media.
    let srt_ctx = Arc::new(crate::actors::listen::srt::SrtContext {
        registry: registry.clone(),
        access: api.clone().into_inner(),
        publish_idle_timeout: config.srt.publish_idle_timeout,
        max_connections: config.srt.max_connections,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        viewer: rtmp_ctx_viewer,
        clock,
        pulls: pulls.clone(),
    });
    let srt_config = config.srt.clone();
    let (srt_listener, srt_incoming, _srt_addr) = media
        .spawn(async move { crate::actors::listen::srt::bind(&srt_config).await })
        .await
        .map_err(|e| Error::internal(format!("media runtime: {e}")))?
        .map_err(|e| {
            Error::with_source(
                crate::ErrorKind::Unavailable,
                format!("cannot bind SRT on {}", config.srt.listen),
                e,
            )
        })?;
    media.spawn(crate::actors::listen::srt::serve(srt_listener, srt_incoming, srt_ctx));

    // WebRTC: the shared media ports, bound on the media runtime (sessions run there).
    let webrtc = if config.webrtc.enabled {
        let (cfg, sd, tr) = (config.webrtc.clone(), shutdown.clone(), tracker.clone());
        let rtc = media
            .spawn(async move { crate::actors::webrtc::WebRtc::start(&cfg, sd, tr).await })
            .await
            .map_err(|e| Error::internal(format!("media runtime: {e}")))??;
        bound.webrtc_udp = Some(rtc.udp_addr());
        Some(crate::http::webrtc::WebRtcService {
            rtc,
            registry: registry.clone(),
            pulls: pulls.clone(),
            // WebRTC viewers share the RTMP viewer policy (lag, skips); nothing is merged (the
            // lowest latency is the point) and no write waits (UDP).
            viewer: ViewerPolicy { merge_write: std::time::Duration::ZERO, ..rtmp_ctx_viewer },
            clock,
        })
    } else {
        None
    };

    let http_opts = crate::http::HttpOptions {
        listen: config.http.listen.clone(),
        workers: config.http.workers,
        cors_origins: config.http.cors_origins.clone(),
        static_dir: config.http.static_dir.clone(),
    };
    let limits = crate::http::HttpLimits {
        per_address: per_address_limit(
            config.http.max_connections_per_address,
            &config.http.per_address_exempt,
        ),
        max_header_line: config.http.max_header_line.as_usize(),
    };
    let app_state = crate::http::AppState {
        store: store.clone(),
        hls: hls_directory.clone(),
        hls_settings: settings.hls,
        hlsjs_url: config.http.hlsjs_url.clone(),
        api: api.clone(),
        pulls: pulls.clone(),
        archive: archive.clone(),
        webrtc,
    };
    let https = cert.as_ref().filter(|_| !config.http.tls_listen.is_empty()).map(|cert| {
        crate::http::HttpsOptions { listen: config.http.tls_listen.clone(), tls: cert.server_config(&[]) }
    });
    let (http, http_bound) =
        crate::http::start_with_tls(http_opts, limits, app_state, https).map_err(|e| {
            Error::with_source(
                crate::ErrorKind::Unavailable,
                format!(
                    "cannot bind HTTP on {:?} / HTTPS on {:?}",
                    config.http.listen, config.http.tls_listen
                ),
                e,
            )
        })?;
    bound.http = http_bound.http;
    bound.https = http_bound.https;
    let http_handle = http.handle();
    let http_task = actix_web::rt::spawn(http);

    if config.server.create_default_channel {
        first_run_channel(&store, &config, bound).await?;
    }
    config_sources(&store, &config, &pulls).await?;
    info!("tidecast is running");

    wait_for_signal().await;
    info!("shutting down");
    shutdown.cancel();
    pulls.stop_all();
    for task in rtmp_tasks {
        let _ = task.await;
    }
    let _ = registry.send(StopAll).await;
    tracker.close();
    if tokio::time::timeout(config.server.shutdown_timeout, tracker.wait()).await.is_err() {
        warn!(remaining = tracker.len(), "sessions still open at the shutdown timeout");
    }
    http_handle.stop(true).await;
    let _ = http_task.await;
    // After HTTP: no new watch updates can arrive, and every acknowledged one is written.
    api.shutdown().await;
    store.close().await;
    info!("stopped");
    Ok(())
}

/// Start the `[[rtsp.sources]]` of the config, creating each missing channel (public, without an
/// owner). A channel whose source was set through the API keeps that one.
async fn config_sources(store: &Store, config: &Config, pulls: &Pulls) -> Result<()> {
    for s in &config.rtsp.sources {
        let channel = match store.channel_by_name(&s.channel).await? {
            Some(c) => c,
            None => {
                let (c, _key) = store
                    .create_channel(NewChannel {
                        name: s.channel.clone(),
                        title: None,
                        owner_id: None,
                        visibility: Visibility::Public,
                    })
                    .await?;
                info!(channel = %c.name, "created the channel of a configured pull source");
                c
            }
        };
        if store.source(channel.id).await?.is_some() {
            info!(channel = %channel.name, "the channel's source set through the API wins over the configured one");
            continue;
        }
        let url = crate::protocols::rtsp::SourceUrl::parse(&s.url).map_err(Error::invalid)?;
        pulls.set(&channel.name, Some(PullSource { url, transport: s.transport, on_demand: s.on_demand }));
    }
    Ok(())
}

/// Bind an RTMP (or, with `tls`, RTMPS) listener on the media runtime and start accepting.
async fn start_rtmp(
    media: &tokio::runtime::Handle,
    listen: &str,
    ctx: RtmpContext,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<(tokio::task::JoinHandle<()>, SocketAddr)> {
    let protocol = ctx.protocol;
    let addr_text = listen.to_owned();
    let (listener, addr) = media
        .spawn(async move { rtmp::bind(&addr_text, protocol).await })
        .await
        .map_err(|e| Error::internal(format!("media runtime: {e}")))?
        .map_err(|e| {
            Error::with_source(
                crate::ErrorKind::Unavailable,
                format!("cannot bind {} on {listen}", protocol.to_uppercase()),
                e,
            )
        })?;
    Ok((media.spawn(rtmp::serve(listener, Arc::new(ctx), tls)), addr))
}

/// The addresses the listeners bound (`None`: that listener is off).
#[derive(Clone, Copy, Debug, Default)]
struct Bound {
    rtmp: Option<SocketAddr>,
    rtmps: Option<SocketAddr>,
    http: Option<SocketAddr>,
    https: Option<SocketAddr>,
    webrtc_udp: Option<SocketAddr>,
}

/// A per-address connection limit from its config keys (validated, so every entry parses).
fn per_address_limit(limit: usize, exempt: &[String]) -> Arc<PerAddressLimit> {
    let exempt = exempt.iter().filter_map(|e| crate::admission::parse_network(e).ok()).collect();
    PerAddressLimit::new(limit, exempt)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The host part of a URL we print: the configured public host, with the bound port.
fn url_host(config: &Config, addr: SocketAddr) -> String {
    let host = config.public_host();
    if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{}", addr.port())
    }
}

/// On the first start with an empty database, create a channel and tell the operator how to
/// publish to it and watch it (over TLS too, when those listeners are on). The stream key is
/// printed once, here, and never logged.
async fn first_run_channel(store: &Store, config: &Config, bound: Bound) -> Result<()> {
    if store.count_channels().await? > 0 {
        return Ok(());
    }
    let (channel, key) = store
        .create_channel(NewChannel {
            name: DEFAULT_CHANNEL.to_string(),
            title: Some("My first channel".to_string()),
            owner_id: None,
            visibility: Visibility::Public,
        })
        .await?;
    info!(channel = %channel.name, "created the default channel");
    let name = &channel.name;
    let key = key.expose();
    let url =
        |scheme: &str, addr: Option<SocketAddr>| addr.map(|a| format!("{scheme}://{}", url_host(config, a)));
    let rtmp = url("rtmp", bound.rtmp);
    let rtmps = url("rtmps", bound.rtmps);
    // Watch links prefer HTTPS when it is on.
    let web = url("https", bound.https)
        .or_else(|| url("http", bound.http))
        .expect("validated: HTTP or HTTPS listens");
    let mut banner = String::from("\ntidecast is ready. Publish from OBS (Settings > Stream > Custom):\n");
    let ingest = rtmp.as_ref().or(rtmps.as_ref()).expect("validated: RTMP or RTMPS listens");
    banner.push_str(&format!("  Server:     {ingest}/live\n"));
    if let (Some(_), Some(rtmps)) = (&rtmp, &rtmps) {
        banner.push_str(&format!("  (or RTMPS: {rtmps}/live)\n"));
    }
    banner.push_str(&format!("  Stream Key: {key}\n"));
    banner.push_str(&format!(
        "or from ffmpeg:  ffmpeg -re -i INPUT -c:v libx264 -c:a aac -f flv {ingest}/live/{key}\n"
    ));
    if config.webrtc.enabled {
        banner.push_str(&format!(
            "or over WHIP:    OBS Service \"WHIP\", Server {web}/whip/{name}, Bearer Token: the stream key\n"
        ));
    }
    banner.push_str(&format!("Watch:           {web}/watch/{name}\n"));
    banner.push_str(&format!(
        "                 LL-HLS {web}/live/{name}/index.m3u8 · RTMP {ingest}/live/{name}\n"
    ));
    if config.webrtc.enabled {
        banner.push_str(&format!(
            "                 WHEP {web}/whep/{name} (the watch page's Real-time mode)\n"
        ));
    }
    if let (Some(http), Some(https)) = (url("http", bound.http), url("https", bound.https)) {
        banner.push_str(&format!("                 (HTTPS {https}, plain HTTP {http})\n"));
    }
    banner.push_str(&format!("Metrics:         {web}/metrics\n"));
    banner.push_str(&format!(
        "The stream key is shown only now; `tidecast channel rotate-key {name}` makes a new one.\n"
    ));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
    Ok(())
}
