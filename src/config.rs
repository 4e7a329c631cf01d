//! Typed configuration: every tunable of the server, its default, and its validation.
//!
//! Where it sits: `main.rs` calls [`Config::load`] once at start-up, before anything binds a
//! socket or opens the database, and hands the sections to the subsystems that own them
//! (`server`, `log`, `http`, `rtmp`, `database`, `channel`, `metrics`). Nothing reads
//! configuration from anywhere else.
//!
//! Layers, lowest precedence first (CLI flags, handled in `main.rs`, sit on top of these):
//! 1. built-in defaults ([`Config::default`]);
//! 2. the TOML file given with `--config FILE` (`conf/default.toml` documents every key);
//! 3. environment variables `TIDECAST__<SECTION>__<KEY>`, e.g. `TIDECAST__HTTP__LISTEN=127.0.0.1:0`
//!    or `TIDECAST__CHANNEL__RECONNECT_GRACE=2s`.
//!
//! Invariants:
//! - `conf/default.toml` parses to exactly [`Config::default`] and names every field (tested).
//! - Unknown keys are errors in every layer (`deny_unknown_fields`), so a typo never silently
//!   falls back to a default.
//! - Durations are humantime strings (`"200ms"`, `"10s"`), sizes are [`Size`] strings
//!   (`"64KiB"`, `"8MiB"`; a bare integer means bytes). Both round-trip through their string form.
//! - [`Config::validate`] reports every problem at once, not just the first.
//! - No secrets live here; when some do, they come from the environment or a `*_file` path and
//!   are never logged.
//! - Every file in `conf/examples/` loads and validates (tested), so the examples cannot rot.
//!
//! Layout: this file holds the typed sections, their defaults, [`Config::load`] and
//! [`Config::validate`]; `units` the duration and [`Size`] value types; `env` the environment
//! layer; `tests` the tests.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod archive;
mod billing;
mod env;
mod pull;
mod restream;
#[cfg(test)]
mod tests;
mod transcode;
mod transport;
mod units;
mod webrtc;

pub use archive::ArchiveConfig;
pub use billing::{BillingConfig, BillingProvider, PlanConfig};
use env::EnvOverrides;
pub use env::ENV_PREFIX;
pub use pull::{RtspConfig, RtspSourceConfig};
pub use restream::RestreamConfig;
pub use transcode::TranscodeConfig;
pub use transport::{SrtConfig, TlsConfig};
use units::{duration_str, fmt_duration};
pub use units::{ParseSizeError, Size};
pub use webrtc::{IceServer, WebRtcConfig};

/// The largest payload an RTMP chunk or message header can describe: the message length field
/// is 24 bits (RTMP 1.0 spec §5.3.1.2.1), so neither a chunk nor a message can exceed this.
const RTMP_MAX_24BIT: u64 = 0xFF_FFFF;

/// The smallest chunk size RTMP allows (RTMP 1.0 spec §5.4.1: "the minimum is 128").
const RTMP_MIN_CHUNK: u64 = 128;

/// Why configuration could not be loaded or was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A layer could not be read or did not have the right shape: missing file, TOML syntax
    /// error, unknown key, wrong type, unparsable duration or size. `message` lists every
    /// problem figment found, one per line, each naming the key and the layer it came from.
    #[error("cannot load configuration:\n{message}")]
    Parse {
        message: String,
        #[source]
        source: Box<figment::Error>,
    },
    /// The configuration parsed but some values are out of range or inconsistent. Every
    /// problem is listed, one per line, each starting with the dotted key it is about.
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        let message = err
            .clone()
            .into_iter()
            // figment puts a line break before " in FILE" for I/O errors; keep one line each.
            .map(|e| e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("\n");
        ConfigError::Parse { message, source: Box::new(err) }
    }
}

/// The whole server configuration, one field per section of the TOML file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process-wide settings: where data lives, how we name ourselves, how we stop.
    pub server: ServerConfig,
    /// What is logged and in which format.
    pub log: LogConfig,
    /// The HTTP listener (API, HLS, metrics).
    pub http: HttpConfig,
    /// The RTMP listener and the limits that protect it from misbehaving peers.
    pub rtmp: RtmpConfig,
    /// The certificate of the TLS listeners (RTMPS, HTTPS); none configured, no TLS.
    pub tls: TlsConfig,
    /// The SRT listener (MPEG-TS over SRT ingest).
    pub srt: SrtConfig,
    /// Pulling channels from IP cameras over RTSP.
    pub rtsp: RtspConfig,
    /// WebRTC: WHIP ingest and WHEP play on one UDP port.
    pub webrtc: WebRtcConfig,
    /// Pushing live channels to the owners' destinations (RTMP, RTMPS, SRT).
    pub restream: RestreamConfig,
    /// The transcode ladder: lower renditions made by ffmpeg for every live channel.
    pub transcode: TranscodeConfig,
    /// Live-to-VOD: every live session recorded as a video.
    pub archive: ArchiveConfig,
    /// Where users, channels and videos are stored.
    pub database: DatabaseConfig,
    /// Life cycle and buffering of live channels.
    pub channel: ChannelConfig,
    /// Low-latency HLS packaging and delivery.
    pub hls: HlsConfig,
    /// Prometheus metrics options.
    pub metrics: MetricsConfig,
    /// Platform API: accounts, tokens, rate limits, watch history, comments.
    pub auth: AuthConfig,
    /// Optional Redis for ephemeral shared state (rate limits, revocation, viewer counts).
    pub redis: RedisConfig,
    /// Plans, subscriptions and the payment provider.
    pub billing: BillingConfig,
    /// Platform API limits and the watch-history writer.
    pub api: ApiConfig,
}

/// `[server]`: process-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Root directory for everything we write (SQLite database, archives, uploads), so a
    /// deployment has exactly one volume to mount and back up.
    pub data_dir: PathBuf,
    /// Host name (optionally `host:port`) printed in URLs we show to users (ingest URL,
    /// playback URL). Empty means "localhost"; set it when clients reach us by another name.
    pub public_host: String,
    /// How long a graceful shutdown waits for sessions to finish and archives to flush before
    /// the process exits anyway, so a stuck peer cannot block a restart forever.
    #[serde(with = "duration_str")]
    pub shutdown_timeout: Duration,
    /// Create a channel and print its stream key on first start when the database has none,
    /// so a fresh install can be published to without using the API first.
    pub create_default_channel: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            public_host: String::new(),
            shutdown_timeout: Duration::from_secs(10),
            create_default_channel: true,
        }
    }
}

/// `[log]`: logging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive (`"info"`, `"tidecast=debug,actix_web=warn"`),
    /// so verbosity can be raised per module without a rebuild.
    pub level: String,
    /// Human-readable lines for a terminal, or one JSON object per line for a log collector.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

/// Output format of log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, one event per line.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[http]`: the HTTP listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Socket address (`ip:port`) the HTTP server binds; port 0 picks a free port (tests).
    /// Empty turns plain HTTP off (then `tls_listen` must be active).
    pub listen: String,
    /// Socket address of HTTPS (same routes as `listen`), active only when `[tls]` names a
    /// certificate. Empty turns HTTPS off even then.
    pub tls_listen: String,
    /// Number of actix-web worker threads; 0 means one per CPU core.
    pub workers: usize,
    /// Origins allowed to fetch playlists and media from a browser (CORS). `["*"]` lets any
    /// page embed the streams; list origins to restrict embedding to your own sites.
    pub cors_origins: Vec<String>,
    /// Where the watch page loads hls.js from. A CDN by default; point it at a local copy
    /// (with `static_dir`) for offline or self-contained deployments.
    pub hlsjs_url: String,
    /// A directory served at `/static/` (e.g. a copy of hls.js). Empty serves nothing.
    pub static_dir: String,
    /// Open connections one client address may hold (an IPv6 client: its /64); further ones
    /// get 429 and are closed. An LL-HLS player holds 2-5 connections, so the default leaves
    /// room for ~100 players behind one NAT. 0 turns the limit off.
    pub max_connections_per_address: usize,
    /// Addresses or CIDR networks the per-address limit does not apply to: loopback by default
    /// (local tools, load tests); add a reverse proxy or CDN that connects on behalf of many.
    pub per_address_exempt: Vec<String>,
    /// Longest request line or header line (name, colon and value) accepted, like nginx's
    /// `large_client_header_buffers 4 8k`; a request head is also limited to four times this.
    /// Longer ones get 431 (a request line: 414).
    pub max_header_line: Size,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".to_owned(),
            tls_listen: "0.0.0.0:8443".to_owned(),
            workers: 0,
            cors_origins: vec!["*".to_owned()],
            hlsjs_url: "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js".to_owned(),
            static_dir: String::new(),
            max_connections_per_address: 500,
            per_address_exempt: loopback(),
            max_header_line: Size::kib(8),
        }
    }
}

/// The default exempt list of the per-address connection limits: IPv4 and IPv6 loopback.
fn loopback() -> Vec<String> {
    vec!["127.0.0.0/8".to_owned(), "::1".to_owned()]
}

/// `[hls]`: LL-HLS packaging (RFC 8216bis) and delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Target duration of a part (`EXT-X-PART-INF:PART-TARGET`). Shorter parts lower latency
    /// and raise request rates (players fetch every part).
    #[serde(with = "duration_str")]
    pub part_target: Duration,
    /// Segments are cut at the first key frame at or after this duration. Should be a
    /// multiple of the encoder's GOP; longer segments mean fewer, larger files.
    #[serde(with = "duration_str")]
    pub segment_target: Duration,
    /// How long complete segments stay available (the live window / DVR depth).
    #[serde(with = "duration_str")]
    pub window: Duration,
    /// How long a blocking playlist reload or preload-hinted part request may wait before a
    /// 503 (RFC 8216bis suggests three target durations).
    #[serde(with = "duration_str")]
    pub block_timeout: Duration,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(2),
            window: Duration::from_secs(30),
            block_timeout: Duration::from_secs(6),
        }
    }
}

/// `[rtmp]`: the RTMP listener and per-connection limits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Socket address (`ip:port`) the RTMP server binds; port 0 picks a free port (tests).
    /// Empty turns plain RTMP off (then `tls_listen` must be active).
    pub listen: String,
    /// Socket address of RTMPS (RTMP inside TLS, `rtmps://`), active only when `[tls]` names a
    /// certificate. Same limits and session path as `listen`; empty turns RTMPS off even then.
    pub tls_listen: String,
    /// Connections (publishers and players together) accepted at once; further ones are
    /// refused at accept time, so a flood cannot exhaust file descriptors or memory.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 client: its /64) may hold at once; further ones
    /// get the same `NetConnection.Connect.Rejected` as over `max_connections`, so one client
    /// cannot take every slot. 0 turns the limit off.
    pub max_connections_per_address: usize,
    /// Addresses or CIDR networks `max_connections_per_address` does not apply to: loopback by
    /// default (local tools, load tests); add a relay that connects on behalf of many.
    pub per_address_exempt: Vec<String>,
    /// Time a new connection has to complete the RTMP handshake, so idle or half-open sockets
    /// do not hold a connection slot.
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
    /// Largest `SetChunkSize` a peer may announce. Bigger chunks mean bigger buffers per
    /// connection; a hostile peer could otherwise make us allocate 2 GiB per chunk.
    pub max_chunk_size: Size,
    /// Largest RTMP message (one frame) accepted; larger ones close the connection. The RTMP
    /// length field is 24 bits, so at most 16 MiB - 1.
    pub max_message_size: Size,
    /// Longest stream name (stream key plus any query string) accepted in `publish`/`play`.
    pub max_stream_name_len: usize,
    /// Chunk size we announce and send with. Larger chunks cost fewer header bytes and
    /// syscalls; smaller ones interleave audio and video more finely.
    pub out_chunk_size: Size,
    /// A viewer whose socket accepts nothing for this long is cut off, so a dead client does
    /// not pin memory or a task.
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    /// A viewer further behind live than this skips to the newest key frame instead of
    /// falling further behind. Lower keeps latency down; higher tolerates jittery links.
    #[serde(with = "duration_str")]
    pub viewer_max_lag: Duration,
    /// Skips allowed within one minute before the viewer is cut off: a link that keeps
    /// falling behind cannot carry the stream and only wastes our upload.
    pub viewer_max_skips: u32,
    /// Kernel send buffer of each viewer socket (SO_SNDBUF). Bounds what one viewer can have
    /// in flight; loopback and LAN autotuning would otherwise let a stalled viewer hold
    /// megabytes and delay its cut-off. 0 leaves the kernel's autotuning on.
    pub viewer_send_buffer: Size,
    /// Merged writes: after sending a viewer media, wait this long before sending it more, so
    /// the frames of the window leave in one write. Fewer, larger writes are most of what a
    /// viewer costs the server; the price is at most this much added latency. 0 sends each
    /// frame as soon as it arrives.
    #[serde(with = "duration_str")]
    pub viewer_merge_write: Duration,
    /// One writer per channel sends each frame to every viewer that keeps up (plain RTMP), in
    /// place of a wake-up per viewer and frame; false gives every viewer its own writer.
    pub viewer_fanout: bool,
    /// A publisher that sends nothing for this long is dropped, so a dead encoder frees the
    /// channel for a reconnect.
    #[serde(with = "duration_str")]
    pub publish_idle_timeout: Duration,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:1935".to_owned(),
            tls_listen: "0.0.0.0:1936".to_owned(),
            max_connections: 2000,
            max_connections_per_address: 100,
            per_address_exempt: loopback(),
            handshake_timeout: Duration::from_secs(10),
            max_chunk_size: Size::kib(64),
            max_message_size: Size::mib(8),
            max_stream_name_len: 256,
            out_chunk_size: Size::kib(4),
            write_timeout: Duration::from_secs(5),
            viewer_max_lag: Duration::from_secs(2),
            viewer_max_skips: 3,
            viewer_send_buffer: Size::kib(512),
            viewer_merge_write: Duration::ZERO,
            viewer_fanout: true,
            publish_idle_timeout: Duration::from_secs(15),
        }
    }
}

/// `[database]`: the metadata store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// sqlx connection URL: `sqlite://PATH` (created if missing) for a single node, or
    /// `postgres://user@host/db` for PostgreSQL when several nodes share one store.
    pub url: String,
    /// Upper bound of the connection pool, so a burst of API calls cannot exhaust the
    /// database's own connection limit.
    pub max_connections: u32,
    /// How long a query waits for a pooled connection before it fails with 503. Short, so that
    /// requests fail fast while the database is down instead of stalling with it.
    #[serde(with = "duration_str")]
    pub acquire_timeout: Duration,
    /// Consecutive "database unreachable" failures that open the circuit breaker; while it is
    /// open queries fail at once.
    pub breaker_failures: u32,
    /// How long the circuit stays open before one query probes the database again.
    #[serde(with = "duration_str")]
    pub breaker_cooldown: Duration,
    /// How long cached channel records, admin flags and active plans (refreshed every few
    /// seconds while the database answers) keep serving LL-HLS and API entitlement checks
    /// while it does not: the bound on how stale an access decision may be during an outage.
    #[serde(with = "duration_str")]
    pub cache_max_stale: Duration,
    /// How often each node loads the token revocations (logouts) other nodes stored, so a
    /// logout holds everywhere within this even when Redis lost it.
    #[serde(with = "duration_str")]
    pub revocation_sync_interval: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://./data/tidecast.db".to_owned(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(1),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(2),
            cache_max_stale: Duration::from_secs(15 * 60),
            revocation_sync_interval: Duration::from_secs(10),
        }
    }
}

impl DatabaseConfig {
    /// The store's outage behaviour from these settings.
    pub fn store_settings(&self) -> crate::store::StoreSettings {
        crate::store::StoreSettings {
            max_connections: self.max_connections,
            acquire_timeout: self.acquire_timeout,
            breaker: crate::store::BreakerSettings {
                failures: self.breaker_failures,
                cooldown: self.breaker_cooldown,
            },
        }
    }
}

/// `[channel]`: life cycle and buffering of a live channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// After the publisher disconnects, how long the channel (and its viewers) waits for it to
    /// come back before the session ends, so an encoder's reconnect does not end the session.
    #[serde(with = "duration_str")]
    pub reconnect_grace: Duration,
    /// How long a channel actor with no publisher and no viewers stays alive before it stops,
    /// so idle channels cost nothing.
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// Media kept in the channel's frame ring. Longer lets late joiners start at a key frame
    /// further back and slow viewers lag more, at the cost of memory.
    #[serde(with = "duration_str")]
    pub ring_duration: Duration,
    /// Hard cap on the ring's memory, whatever its duration, so a very high bitrate cannot
    /// exhaust memory.
    pub ring_max_bytes: Size,
    /// How many times a crashed channel actor is restarted within `restart_window` before it
    /// is given up on, so a crash loop does not spin forever.
    pub max_restarts: u32,
    /// The sliding window `max_restarts` is counted in.
    #[serde(with = "duration_str")]
    pub restart_window: Duration,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            reconnect_grace: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ring_duration: Duration::from_secs(8),
            ring_max_bytes: Size::mib(64),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// `[metrics]`: Prometheus metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Add a `channel` label to per-channel metrics. Off by default: each channel adds a time
    /// series per metric, which can overwhelm Prometheus on servers with many channels.
    pub per_channel_labels: bool,
}

/// `[auth]`: accounts, access tokens and playback tokens.
///
/// Secrets (`jwt_secret`, `playback_secret`, `storage_secret`) are key rings: `kid:secret` pairs separated by
/// commas, the first one signs and every one verifies, so a key is rotated by prepending a new
/// pair and dropping the old one after the longest token lifetime. Set them through the
/// environment (`TIDECAST__AUTH__JWT_SECRET`) or a `*_file`; never in a committed file. Empty
/// means "generate one on first start and keep it under `server.data_dir/secrets/`".
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// JWT signing key ring (`kid:secret,...`; secrets at least 32 bytes). Empty: use the file.
    pub jwt_secret: String,
    /// File holding the JWT key ring. Empty: `data_dir/secrets/jwt.keys`, created if missing.
    pub jwt_secret_file: PathBuf,
    /// Lifetime of an access token. Shorter limits a stolen token; longer logs in less often.
    #[serde(with = "duration_str")]
    pub access_token_ttl: Duration,
    /// Playback token key ring (`kid:secret,...`). Empty: use the file.
    pub playback_secret: String,
    /// File holding the playback key ring. Empty: `data_dir/secrets/playback.keys`.
    pub playback_secret_file: PathBuf,
    /// Lifetime of a playback token: long enough for a long live session or film.
    #[serde(with = "duration_str")]
    pub playback_token_ttl: Duration,
    /// Key ring (`kid:secret,...`) sealing the secrets the server stores to send on (restream
    /// stream keys, camera credentials). Empty: use the file.
    pub storage_secret: String,
    /// File holding the storage key ring. Empty: `data_dir/secrets/storage.keys`.
    pub storage_secret_file: PathBuf,
    /// Password hashes computed at once (each takes 19 MiB and tens of ms of one core), so a
    /// login flood queues instead of exhausting memory.
    pub max_concurrent_hashes: usize,
    /// Failed logins allowed per account and client address within `login_window`; past it,
    /// that address gets 429 for that account whatever the password.
    pub login_max_failures: u32,
    /// Failed logins allowed per account from all addresses within `login_window`; past it,
    /// only addresses with fewer than 3 failures on that account may still try (so a correct
    /// password from elsewhere still signs in: nobody can lock an account they do not hold).
    pub login_max_account_failures: u32,
    /// Login attempts allowed per client IP within `login_window`.
    pub login_max_per_ip: u32,
    /// The rate-limit window for logins.
    #[serde(with = "duration_str")]
    pub login_window: Duration,
    /// Shortest password accepted at registration, in characters.
    pub min_password_len: usize,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &redact(&self.jwt_secret))
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("playback_secret", &redact(&self.playback_secret))
            .field("playback_secret_file", &self.playback_secret_file)
            .field("playback_token_ttl", &self.playback_token_ttl)
            .field("storage_secret", &redact(&self.storage_secret))
            .field("storage_secret_file", &self.storage_secret_file)
            .field("max_concurrent_hashes", &self.max_concurrent_hashes)
            .field("login_max_failures", &self.login_max_failures)
            .field("login_max_account_failures", &self.login_max_account_failures)
            .field("login_max_per_ip", &self.login_max_per_ip)
            .field("login_window", &self.login_window)
            .field("min_password_len", &self.min_password_len)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: String::new(),
            jwt_secret_file: PathBuf::new(),
            access_token_ttl: Duration::from_secs(3600),
            playback_secret: String::new(),
            playback_secret_file: PathBuf::new(),
            playback_token_ttl: Duration::from_secs(6 * 3600),
            storage_secret: String::new(),
            storage_secret_file: PathBuf::new(),
            max_concurrent_hashes: 4,
            login_max_failures: 10,
            login_max_account_failures: 50,
            login_max_per_ip: 100,
            login_window: Duration::from_secs(15 * 60),
            min_password_len: 8,
        }
    }
}

/// `[redis]`: optional shared state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://host:port/db`; empty means no Redis: the state lives in this process.
    pub url: String,
    /// Prefix of every key we write, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: String::new(), key_prefix: "tidecast:".to_owned() }
    }
}

/// `[api]`: Platform API limits and the watch-history writer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest JSON request body accepted.
    pub max_body: Size,
    /// Longest comment, in characters.
    pub comment_max_len: usize,
    /// Watch-progress updates are buffered and written in one batch this often. A crash loses
    /// at most this much acknowledged progress; a graceful shutdown loses none.
    #[serde(with = "duration_str")]
    pub watch_flush_interval: Duration,
    /// A batch is also written as soon as this many distinct (user, video) updates wait.
    pub watch_flush_batch: usize,
    /// Updates buffered beyond this are refused with 503 until a flush catches up.
    pub watch_max_pending: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body: Size::kib(64),
            comment_max_len: 2000,
            watch_flush_interval: Duration::from_secs(1),
            watch_flush_batch: 5000,
            watch_max_pending: 200_000,
        }
    }
}

impl Config {
    /// Loads the configuration: defaults, then `file` (which must exist if given), then the
    /// process's `TIDECAST__SECTION__KEY` environment variables; then validates it.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // Variables whose name or value is not Unicode cannot be ours; skip them rather than fail.
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::load_with_env(file, &env)
    }

    /// Like [`Config::load`], but reads environment overrides from `env` instead of the
    /// process environment, so tests need not mutate (and race on) process-wide state.
    /// Pairs whose name does not start with `TIDECAST__` are ignored.
    pub fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(EnvOverrides::new(env));
        // Lossy extraction: every environment value is a string, and lossy lets `"5"` fill an
        // integer and `"true"` a bool, while strings such as `127.0.0.1:0` or `2s` stay strings.
        let config: Config = figment.extract_lossy()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and cross-field consistency, reporting every problem at once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                problems.push(msg);
            }
        };

        // [server]
        let s = &self.server;
        check(!s.data_dir.as_os_str().is_empty(), "server.data_dir: must not be empty".to_owned());
        check(
            !s.public_host.contains("://")
                && !s.public_host.contains('/')
                && !s.public_host.chars().any(char::is_whitespace),
            format!(
                "server.public_host: {:?} must be a bare host or host:port (no scheme, path or spaces)",
                s.public_host
            ),
        );
        check(!s.shutdown_timeout.is_zero(), "server.shutdown_timeout: must be greater than 0".to_owned());

        // [log]
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            check(false, format!("log.level: {:?} is not a valid filter directive: {e}", self.log.level));
        }

        // [http]
        let tls = self.tls.enabled();
        check_listeners(&mut check, "http", &self.http.listen, &self.http.tls_listen, tls);
        check_exempt(&mut check, "http.per_address_exempt", &self.http.per_address_exempt);
        check(
            (Size::kib(1)..=Size::kib(32)).contains(&self.http.max_header_line),
            format!(
                "http.max_header_line: {} must be between 1KiB and 32KiB (actix-http refuses request \
                 heads over 128KiB itself, and the head may hold four lines of this length)",
                self.http.max_header_line
            ),
        );

        // [hls]
        let h = &self.hls;
        check(
            h.part_target >= Duration::from_millis(50) && h.part_target <= Duration::from_secs(5),
            "hls.part_target: must be between 50ms and 5s".to_owned(),
        );
        check(
            h.segment_target >= h.part_target,
            "hls.segment_target: must be at least hls.part_target".to_owned(),
        );
        check(
            h.window >= h.segment_target * 3,
            "hls.window: must hold at least three segment targets".to_owned(),
        );
        check(!h.block_timeout.is_zero(), "hls.block_timeout: must be greater than 0".to_owned());

        // [srt]
        check_listen(&mut check, "srt.listen", &self.srt.listen);
        self.srt.validate(&mut check);
        // [rtsp]
        self.rtsp.validate(&mut check);
        // [webrtc]
        self.webrtc.validate(&mut check);
        // [transcode]
        self.transcode.validate(&mut check);
        // [archive]
        self.archive.validate(&mut check);
        // [rtmp]
        let r = &self.rtmp;
        check_listeners(&mut check, "rtmp", &r.listen, &r.tls_listen, tls);
        check(r.max_connections > 0, "rtmp.max_connections: must be greater than 0".to_owned());
        check_exempt(&mut check, "rtmp.per_address_exempt", &r.per_address_exempt);
        check(!r.handshake_timeout.is_zero(), "rtmp.handshake_timeout: must be greater than 0".to_owned());
        for (key, size) in
            [("rtmp.max_chunk_size", r.max_chunk_size), ("rtmp.out_chunk_size", r.out_chunk_size)]
        {
            check(
                (RTMP_MIN_CHUNK..=RTMP_MAX_24BIT).contains(&size.bytes()),
                format!(
                    "{key}: {size} must be between {} and {} (RTMP limits)",
                    Size(RTMP_MIN_CHUNK),
                    Size(RTMP_MAX_24BIT)
                ),
            );
        }
        check(
            (Size::kib(64).bytes()..=RTMP_MAX_24BIT).contains(&r.max_message_size.bytes()),
            format!(
                "rtmp.max_message_size: {} must be between 64KiB (one video key frame needs more) \
                 and {} (RTMP's 24-bit message length)",
                r.max_message_size,
                Size(RTMP_MAX_24BIT)
            ),
        );
        check(
            (1..=4096).contains(&r.max_stream_name_len),
            format!("rtmp.max_stream_name_len: {} must be between 1 and 4096", r.max_stream_name_len),
        );
        check(!r.write_timeout.is_zero(), "rtmp.write_timeout: must be greater than 0".to_owned());
        check(!r.viewer_max_lag.is_zero(), "rtmp.viewer_max_lag: must be greater than 0".to_owned());
        check(
            r.viewer_max_lag < self.channel.ring_duration,
            format!(
                "rtmp.viewer_max_lag: {} must be shorter than channel.ring_duration ({}), or a slow \
                 viewer falls out of the ring before it is told to skip",
                fmt_duration(r.viewer_max_lag),
                fmt_duration(self.channel.ring_duration)
            ),
        );
        check(
            r.viewer_merge_write <= Duration::from_secs(1),
            format!(
                "rtmp.viewer_merge_write: {} must be at most 1s (it is latency added to every viewer)",
                fmt_duration(r.viewer_merge_write)
            ),
        );
        check(
            !r.publish_idle_timeout.is_zero(),
            "rtmp.publish_idle_timeout: must be greater than 0".to_owned(),
        );

        // [tls]
        let t = &self.tls;
        check(
            t.cert.is_empty() == t.key.is_empty(),
            "tls.cert and tls.key: set both (a certificate chain and its key) or neither".to_owned(),
        );
        check(!t.reload_interval.is_zero(), "tls.reload_interval: must be greater than 0".to_owned());

        // [database]
        let d = &self.database;
        let url = d.url.to_ascii_lowercase();
        check(
            ["sqlite:", "postgres:", "postgresql:"].iter().any(|scheme| url.starts_with(scheme)),
            format!("database.url: {:?} must start with sqlite:, postgres: or postgresql:", d.url),
        );
        check(d.max_connections > 0, "database.max_connections: must be greater than 0".to_owned());
        check(!d.acquire_timeout.is_zero(), "database.acquire_timeout: must be greater than 0".to_owned());
        check(d.breaker_failures > 0, "database.breaker_failures: must be greater than 0".to_owned());
        check(!d.breaker_cooldown.is_zero(), "database.breaker_cooldown: must be greater than 0".to_owned());
        check(
            !d.revocation_sync_interval.is_zero(),
            "database.revocation_sync_interval: must be greater than 0".to_owned(),
        );

        // [channel]
        let c = &self.channel;
        check(
            c.ring_duration >= Duration::from_secs(1),
            format!("channel.ring_duration: {} must be at least 1s", fmt_duration(c.ring_duration)),
        );
        check(
            c.ring_max_bytes >= Size::mib(1),
            format!("channel.ring_max_bytes: {} must be at least 1MiB", c.ring_max_bytes),
        );
        check(!c.idle_timeout.is_zero(), "channel.idle_timeout: must be greater than 0".to_owned());
        check(!c.restart_window.is_zero(), "channel.restart_window: must be greater than 0".to_owned());

        // [auth], [redis], [billing], [api]
        let a = &self.auth;
        check(!a.access_token_ttl.is_zero(), "auth.access_token_ttl: must be greater than 0".to_owned());
        check(!a.playback_token_ttl.is_zero(), "auth.playback_token_ttl: must be greater than 0".to_owned());
        check(a.max_concurrent_hashes > 0, "auth.max_concurrent_hashes: must be greater than 0".to_owned());
        check(!a.login_window.is_zero(), "auth.login_window: must be greater than 0".to_owned());
        check(
            self.redis.url.is_empty()
                || self.redis.url.starts_with("redis://")
                || self.redis.url.starts_with("rediss://"),
            "redis.url: must be empty or start with redis:// or rediss://".to_owned(),
        );
        let b = &self.billing;
        for (i, p) in b.plans.iter().enumerate() {
            let id_ok = !p.id.is_empty()
                && p.id.len() <= 64
                && p.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            check(
                id_ok,
                format!("billing.plans[{i}].id: {:?} must be 1-64 characters of a-z, 0-9, _ or -", p.id),
            );
            check(p.price_cents >= 0, format!("billing.plans[{i}].price_cents: must not be negative"));
            check(!p.period.is_zero(), format!("billing.plans[{i}].period: must be greater than 0"));
            check(!p.channels.is_empty(), format!("billing.plans[{i}].channels: list channels or \"*\""));
            check(
                b.provider != BillingProvider::Stripe || !p.stripe_price_id.is_empty(),
                format!("billing.plans[{i}].stripe_price_id: required with the stripe provider"),
            );
            check(
                !b.plans[..i].iter().any(|q| q.id == p.id),
                format!("billing.plans[{i}].id: {:?} is used twice", p.id),
            );
        }
        check(!b.webhook_tolerance.is_zero(), "billing.webhook_tolerance: must be greater than 0".to_owned());
        let api = &self.api;
        check(api.max_body >= Size::kib(1), "api.max_body: must be at least 1KiB".to_owned());
        check(api.comment_max_len > 0, "api.comment_max_len: must be greater than 0".to_owned());
        check(
            !api.watch_flush_interval.is_zero(),
            "api.watch_flush_interval: must be greater than 0".to_owned(),
        );
        check(api.watch_flush_batch > 0, "api.watch_flush_batch: must be greater than 0".to_owned());
        check(
            api.watch_max_pending >= api.watch_flush_batch,
            "api.watch_max_pending: must be at least api.watch_flush_batch".to_owned(),
        );

        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The database URL to hand to sqlx. Returned unchanged today; the single place to
    /// resolve relative paths or `*_file` secrets later.
    pub fn resolved_database_url(&self) -> String {
        self.database.url.clone()
    }

    /// The host to print in user-facing URLs: `server.public_host`, or `"localhost"` if empty.
    pub fn public_host(&self) -> &str {
        if self.server.public_host.is_empty() {
            "localhost"
        } else {
            &self.server.public_host
        }
    }
}

fn check_exempt(check: &mut impl FnMut(bool, String), key: &str, entries: &[String]) {
    for (i, entry) in entries.iter().enumerate() {
        if let Err(e) = crate::admission::parse_network(entry) {
            check(false, format!("{key}[{i}]: {e}"));
        }
    }
}

/// A protocol's plain and TLS listen addresses: each empty (off) or an `ip:port`, and at least
/// one of them active (the TLS one is active only with a certificate).
fn check_listeners(check: &mut impl FnMut(bool, String), section: &str, plain: &str, tls: &str, cert: bool) {
    if !plain.is_empty() {
        check_listen(check, &format!("{section}.listen"), plain);
    }
    if !tls.is_empty() {
        check_listen(check, &format!("{section}.tls_listen"), tls);
    }
    check(
        !plain.is_empty() || (cert && !tls.is_empty()),
        if cert {
            format!("{section}.listen and {section}.tls_listen: both empty; at least one must listen")
        } else {
            format!(
                "{section}.listen: empty, and {section}.tls_listen needs tls.cert; at least one must listen"
            )
        },
    );
}

fn check_listen(check: &mut impl FnMut(bool, String), key: &str, value: &str) {
    if let Err(e) = value.parse::<SocketAddr>() {
        check(false, format!("{key}: {value:?} is not an ip:port socket address: {e}"));
    }
}
