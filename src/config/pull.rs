//! `[rtsp]`: pulling channels from IP cameras (`actors::pull`), and the sources named in config.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration_str;
use crate::actors::pull::PullSettings;
use crate::protocols::rtsp::{RtspTransport, SourceUrl};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtspConfig {
    /// DESCRIBE, SETUP and PLAY must finish within this.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// A camera that sends no media for this long is dropped and reconnected.
    #[serde(with = "duration_str")]
    pub read_timeout: Duration,
    /// First retry delay after a failed pull; doubles per failure up to `retry_max`.
    #[serde(with = "duration_str")]
    pub retry_initial: Duration,
    /// Longest delay between retries.
    #[serde(with = "duration_str")]
    pub retry_max: Duration,
    /// An on-demand pull stops this long after its last viewer left.
    #[serde(with = "duration_str")]
    pub linger: Duration,
    /// The first viewer of an on-demand channel waits at most this for the camera.
    #[serde(with = "duration_str")]
    pub start_timeout: Duration,
    /// Sources pulled at once (config and API together); further ones wait.
    pub max_pulls: usize,
    /// Sources named here, as `[[rtsp.sources]]` tables.
    pub sources: Vec<RtspSourceConfig>,
}

/// One `[[rtsp.sources]]` table.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSourceConfig {
    /// The channel the camera publishes on (created, public and without an owner, if missing).
    pub channel: String,
    /// `rtsp://[user:pass@]host[:port]/path`.
    pub url: String,
    #[serde(default)]
    pub transport: RtspTransport,
    /// Pull only while someone watches (plus `linger`); otherwise always.
    #[serde(default)]
    pub on_demand: bool,
}

impl std::fmt::Debug for RtspSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url =
            SourceUrl::parse(&self.url).map(|u| u.masked().to_owned()).unwrap_or_else(|_| "<invalid>".into());
        f.debug_struct("RtspSourceConfig")
            .field("channel", &self.channel)
            .field("url", &url)
            .field("transport", &self.transport)
            .field("on_demand", &self.on_demand)
            .finish()
    }
}

impl Default for RtspConfig {
    fn default() -> Self {
        let s = PullSettings::default();
        RtspConfig {
            connect_timeout: s.connect_timeout,
            read_timeout: s.read_timeout,
            retry_initial: s.retry_initial,
            retry_max: s.retry_max,
            linger: s.linger,
            start_timeout: s.start_timeout,
            max_pulls: s.max_pulls,
            sources: Vec::new(),
        }
    }
}

impl RtspConfig {
    pub fn settings(&self) -> PullSettings {
        PullSettings {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            linger: self.linger,
            start_timeout: self.start_timeout,
            max_pulls: self.max_pulls,
        }
    }

    /// Report every problem of `[rtsp]`. Messages never echo a URL (it may hold a password).
    pub(super) fn validate(&self, check: &mut impl FnMut(bool, String)) {
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("read_timeout", self.read_timeout),
            ("retry_initial", self.retry_initial),
            ("linger", self.linger),
            ("start_timeout", self.start_timeout),
        ] {
            check(!d.is_zero(), format!("rtsp.{key}: must be greater than 0"));
        }
        check(self.retry_max >= self.retry_initial, "rtsp.retry_max: must be at least retry_initial".into());
        check(self.max_pulls > 0, "rtsp.max_pulls: must be greater than 0".into());
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            if let Err(e) = crate::store::validate_channel_name(&s.channel) {
                check(false, format!("rtsp.sources[{i}].channel: {}", e.msg));
            }
            check(
                seen.insert(&s.channel),
                format!("rtsp.sources[{i}].channel: {} has two sources", s.channel),
            );
            if let Err(e) = SourceUrl::parse(&s.url) {
                check(false, format!("rtsp.sources[{i}].url: {e}"));
            }
        }
    }
}
