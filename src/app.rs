//! Server assembly: store, actors, listeners, and the shutdown cancellation tree.
//!
//! Start order: store (connect, migrate, first-run channel) -> ChannelRegistry -> RTMP listener
//! on the media runtime -> HTTP. Shutdown reverses it: stop accepting, tell every session to
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

use crate::actors::channel::{ChannelDeps, ChannelSettings};
use crate::actors::hls::{HlsDirectory, HlsSettings};
use crate::actors::listen::rtmp::{self, RtmpContext};
use crate::actors::registry::{ChannelRegistry, StopAll, SupervisionSettings};
use crate::actors::supervise::Backoff;
use crate::actors::viewer::ViewerPolicy;
use crate::admission::PerAddressLimit;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::media::clock::Clock;
use crate::media::ring::RingLimits;
use crate::protocols::rtmp::RtmpLimits;
use crate::store::{NewChannel, Store, Visibility};

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
    let deps =
        ChannelDeps { hls: hls_directory.clone(), media: media.clone(), clock, backoff: Backoff::default() };
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

    // SRT viewers share the RTMP viewer policy (lag, skips, write timeout).
    let rtmp_ctx_viewer = ViewerPolicy {
        max_lag: config.rtmp.viewer_max_lag,
        max_skips: config.rtmp.viewer_max_skips,
        write_timeout: config.rtmp.write_timeout,
        merge_write: config.rtmp.viewer_merge_write,
    };
    // RTMP: bind here so a bad address fails the start, then accept on the media runtime.
    let rtmp_ctx = Arc::new(RtmpContext {
        registry: registry.clone(),
        limits: RtmpLimits {
            max_chunk_size: config.rtmp.max_chunk_size.bytes() as u32,
            max_message_size: config.rtmp.max_message_size.as_usize(),
            max_name_len: config.rtmp.max_stream_name_len,
            out_chunk_size: config.rtmp.out_chunk_size.bytes() as u32,
        },
        handshake_timeout: config.rtmp.handshake_timeout,
        viewer: ViewerPolicy {
            max_lag: config.rtmp.viewer_max_lag,
            max_skips: config.rtmp.viewer_max_skips,
            write_timeout: config.rtmp.write_timeout,
            merge_write: config.rtmp.viewer_merge_write,
        },
        viewer_send_buffer: config.rtmp.viewer_send_buffer.as_usize(),
        publish_idle_timeout: config.rtmp.publish_idle_timeout,
        max_connections: config.rtmp.max_connections,
        per_address: per_address_limit(
            config.rtmp.max_connections_per_address,
            &config.rtmp.per_address_exempt,
        ),
        clock,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });
    let listen = config.rtmp.listen.clone();
    let (listener, rtmp_addr) = media
        .spawn(async move { rtmp::bind(&listen).await })
        .await
        .map_err(|e| Error::internal(format!("media runtime: {e}")))?
        .map_err(|e| {
            Error::with_source(
                crate::ErrorKind::Unavailable,
                format!("cannot bind RTMP on {}", config.rtmp.listen),
                e,
            )
        })?;
    let rtmp_task = media.spawn(rtmp::serve(listener, rtmp_ctx));

    // SRT: bound the same way; refusals happen in the handshake, before any media.
    let srt_ctx = Arc::new(crate::actors::listen::srt::SrtContext {
        registry: registry.clone(),
        publish_idle_timeout: config.srt.publish_idle_timeout,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        viewer: rtmp_ctx_viewer,
        clock,
    });
    let (srt_listen, srt_latency) = (config.srt.listen.clone(), config.srt.latency);
    let (srt_listener, srt_incoming, _srt_addr) = media
        .spawn(async move { crate::actors::listen::srt::bind(&srt_listen, srt_latency).await })
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

    let api = actix_web::web::Data::new(crate::http::api::ApiContext::build(&config, store.clone()).await?);
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
    };
    let (http, http_addr) = crate::http::start_with_limits(http_opts, limits, app_state).map_err(|e| {
        Error::with_source(
            crate::ErrorKind::Unavailable,
            format!("cannot bind HTTP on {}", config.http.listen),
            e,
        )
    })?;
    let http_handle = http.handle();
    let http_task = actix_web::rt::spawn(http);

    if config.server.create_default_channel {
        first_run_channel(&store, &config, rtmp_addr, http_addr).await?;
    }
    info!("tidecast is running");

    wait_for_signal().await;
    info!("shutting down");
    shutdown.cancel();
    let _ = rtmp_task.await;
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
/// publish to it and watch it. The stream key is printed once, here, and never logged.
async fn first_run_channel(store: &Store, config: &Config, rtmp: SocketAddr, http: SocketAddr) -> Result<()> {
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
    let rtmp_host = url_host(config, rtmp);
    let http_host = url_host(config, http);
    let banner = format!(
        "\n\
         tidecast is ready. Publish from OBS (Settings > Stream > Custom):\n\
         \x20 Server:     rtmp://{rtmp_host}/live\n\
         \x20 Stream Key: {key}\n\
         or from ffmpeg:  ffmpeg -re -i INPUT -c:v libx264 -c:a aac -f flv rtmp://{rtmp_host}/live/{key}\n\
         Watch:           http://{http_host}/watch/{name}\n\
         \x20                LL-HLS http://{http_host}/live/{name}/index.m3u8 · RTMP rtmp://{rtmp_host}/live/{name}\n\
         Metrics:         http://{http_host}/metrics\n\
         The stream key is shown only now; `tidecast channel rotate-key {name}` makes a new one.\n",
        key = key.expose(),
        name = channel.name,
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
    Ok(())
}
