//! `[tls]` and `[srt]`: the certificate of the TLS listeners and the SRT listener.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration_str;

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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8890".to_owned(),
            latency: Duration::from_millis(200),
            publish_idle_timeout: Duration::from_secs(15),
        }
    }
}
