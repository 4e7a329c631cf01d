//! `[tls]` and `[srt]`: the certificate of the TLS listeners and the SRT listener.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{duration_str, Size};

/// `[tls]`: the certificate of RTMPS (`rtmp.tls_listen`) and HTTPS (`http.tls_listen`). One
/// certificate for both: they serve the same host names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first (e.g. Let's Encrypt's `fullchain.pem`).
    /// Empty (the default): no TLS listener starts.
    pub cert: String,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// How often the two files are checked for changes (modification time and size). A
    /// changed pair is loaded for new handshakes without a restart; a pair that fails to load
    /// is logged at WARN and the previous certificate stays.
    #[serde(with = "duration_str")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self { cert: String::new(), key: String::new(), reload_interval: Duration::from_secs(10) }
    }
}

impl TlsConfig {
    /// Whether a certificate is configured, so that the TLS listeners start.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty()
    }
}

/// `[srt]`: the SRT listener (MPEG-TS over SRT in live mode).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    /// UDP socket address (`ip:port`) the SRT listener binds; port 0 picks a free port (tests).
    pub listen: String,
    /// SRT latency (TSBPD delay) offered in the handshake; the larger of ours and the caller's
    /// wins. Loss is repaired by retransmission only within it: higher survives lossier links,
    /// lower keeps glass-to-glass latency down.
    #[serde(with = "duration_str")]
    pub latency: Duration,
    /// A publisher that sends nothing for this long is dropped, so a dead encoder frees the
    /// channel for a reconnect.
    #[serde(with = "duration_str")]
    pub publish_idle_timeout: Duration,
    /// SRT encryption passphrase (10 to 79 characters). Set: every publisher and player must
    /// use it (AES, key length `pbkeylen`) and a caller without it, or with another, is refused
    /// in the handshake. Empty (the default): no encryption. A secret: set it through the
    /// environment (`TIDECAST__SRT__PASSPHRASE`), never in a committed file.
    pub passphrase: String,
    /// AES key length in bytes when `passphrase` is set: 16 (AES-128), 24 (AES-192) or 32
    /// (AES-256). Callers must use the same (ffmpeg `pbkeylen`).
    pub pbkeylen: u16,
    /// SRT connections (publishers and players) at once; past it, callers are refused in the
    /// handshake (`tidecast_connections_rejected_total{protocol="srt"}`).
    pub max_connections: usize,
    /// Receiving, skip packets SRT could not repair within the latency (libsrt's TLPKTDROP).
    /// Off (the default): delivery waits for the repair, so a bad link makes a publisher's media
    /// late rather than damaged. On: the loss reaches the TS demuxer, which drops the damaged
    /// frames and counts a gap; but a loss of exactly 16 (or 32, ...) packets of one stream
    /// leaves no trace in MPEG-TS's 4-bit continuity counter, and such a frame passes damaged.
    pub drop_too_late: bool,
    /// Kernel receive and send buffer of the SRT UDP socket, which every SRT connection shares.
    /// The kernel caps it at `net.core.rmem_max`/`wmem_max` (a warning says so at start).
    pub udp_buffer: Size,
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8890".to_owned(),
            latency: Duration::from_millis(200),
            publish_idle_timeout: Duration::from_secs(15),
            passphrase: String::new(),
            pbkeylen: 16,
            max_connections: 1000,
            drop_too_late: false,
            udp_buffer: Size::mib(8),
        }
    }
}

impl SrtConfig {
    /// Report every problem of `[srt]` (except `listen`, checked with the other listeners).
    pub(super) fn validate(&self, check: &mut impl FnMut(bool, String)) {
        check(
            self.latency <= Duration::from_secs(10),
            format!("srt.latency: {:?} must be at most 10s", self.latency),
        );
        check(
            !self.publish_idle_timeout.is_zero(),
            "srt.publish_idle_timeout: must be greater than 0".to_owned(),
        );
        // The SRT specification's bounds (libsrt refuses others the same way).
        let len = self.passphrase.chars().count();
        check(
            self.passphrase.is_empty() || (10..=79).contains(&len),
            format!("srt.passphrase: {len} characters; it must be 10 to 79 (or empty: no encryption)"),
        );
        check(
            matches!(self.pbkeylen, 16 | 24 | 32),
            format!("srt.pbkeylen: {} must be 16, 24 or 32 (AES-128, -192, -256)", self.pbkeylen),
        );
        check(self.max_connections > 0, "srt.max_connections: must be greater than 0".to_owned());
        check(
            (Size::kib(64)..=Size::mib(256)).contains(&self.udp_buffer),
            format!("srt.udp_buffer: {} must be between 64KiB and 256MiB", self.udp_buffer),
        );
    }
}

impl std::fmt::Debug for SrtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtConfig")
            .field("listen", &self.listen)
            .field("latency", &self.latency)
            .field("publish_idle_timeout", &self.publish_idle_timeout)
            .field("passphrase", &if self.passphrase.is_empty() { "" } else { "<redacted>" })
            .field("pbkeylen", &self.pbkeylen)
            .field("max_connections", &self.max_connections)
            .field("drop_too_late", &self.drop_too_late)
            .field("udp_buffer", &self.udp_buffer)
            .finish()
    }
}
