//! `[archive]`: live-to-VOD. Every live session is recorded as a video while it streams
//! (`actors::archive`), from the same CMAF media the LL-HLS output made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{duration_str, Size};
use crate::actors::archive::remote::{Delivery, S3Settings};
use crate::actors::archive::{ArchiveSettings, SyncPolicy};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Record every live session as a video. Off: nothing is recorded.
    pub enabled: bool,
    /// Where recordings are written. Empty: `<server.data_dir>/archive`.
    pub dir: String,
    /// When written media is forced to the disk (`fsync`): `segment` (each segment as it
    /// completes, and its journal), `part` (every part: at most one part is lost even on a power
    /// cut, at many more flushes) or `none` (the kernel's own pace). A crash of the server alone
    /// never loses a completed part, whatever this says: the kernel has it.
    pub sync: SyncPolicy,
    /// How often a recording's duration and size are written to its video while it records.
    #[serde(with = "duration_str")]
    pub progress_interval: Duration,
    /// How far back a live channel's DVR playlist (`/live/<channel>/dvr.m3u8`) reaches.
    #[serde(with = "duration_str")]
    pub dvr_window: Duration,
    /// Keep recordings this many days (0: forever); channel owners may set their own.
    pub keep_days: u64,
    /// Keep each channel's newest recordings up to this size in all (0: no limit).
    pub keep_bytes: Size,
    /// How often the retention job runs.
    #[serde(with = "duration_str")]
    pub retention_interval: Duration,
    /// Make a poster (a JPEG of the first key frame) for each recording, with ffmpeg.
    pub posters: bool,
    /// ffmpeg for posters: a path, or a name on `PATH`. Never downloaded.
    pub ffmpeg: String,
    /// S3-compatible object storage that finished recordings move to.
    pub s3: S3Config,
}

/// `[archive.s3]`: where finished recordings move (off when `bucket` is empty).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The bucket; empty: recordings stay on the local disk.
    pub bucket: String,
    /// The service's URL (`https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    /// Secret: set it in the environment (`TIDECAST__ARCHIVE__S3__SECRET_ACCESS_KEY`) rather than
    /// in the file. Never logged.
    pub secret_access_key: String,
    /// `endpoint/bucket/key` URLs (MinIO, most self-hosted stores) instead of `bucket.endpoint/key`.
    pub path_style: bool,
    /// Object names start with this (`recordings/<video id>/...`).
    pub prefix: String,
    /// `proxy` (the server reads the object, byte ranges included) or `redirect` (a 302 to a
    /// presigned URL: the bucket serves players directly).
    pub delivery: Delivery,
    /// How long a presigned URL is valid.
    #[serde(with = "duration_str")]
    pub presign_ttl: Duration,
    /// How often a move that failed (the store away) is tried again.
    #[serde(with = "duration_str")]
    pub move_retry: Duration,
}

/// Without the secret: a config printed for debugging must not carry it.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &if self.secret_access_key.is_empty() { "" } else { "<redacted>" })
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("delivery", &self.delivery)
            .field("presign_ttl", &self.presign_ttl)
            .field("move_retry", &self.move_retry)
            .finish()
    }
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".to_owned(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            prefix: "recordings".to_owned(),
            delivery: Delivery::Proxy,
            presign_ttl: Duration::from_secs(600),
            move_retry: Duration::from_secs(30),
        }
    }
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        let s = ArchiveSettings::default();
        ArchiveConfig {
            enabled: s.enabled,
            dir: String::new(),
            sync: s.sync,
            progress_interval: s.progress_interval,
            dvr_window: s.dvr_window,
            keep_days: s.keep_days,
            keep_bytes: Size::b(s.keep_bytes),
            retention_interval: s.retention_interval,
            posters: s.posters,
            ffmpeg: s.ffmpeg,
            s3: S3Config::default(),
        }
    }
}

impl ArchiveConfig {
    /// The settings, with the archive directory resolved against `data_dir`.
    pub fn settings(&self, data_dir: &Path) -> ArchiveSettings {
        let dir =
            if self.dir.trim().is_empty() { data_dir.join("archive") } else { PathBuf::from(&self.dir) };
        ArchiveSettings {
            enabled: self.enabled,
            dir,
            sync: self.sync,
            progress_interval: self.progress_interval,
            dvr_window: self.dvr_window,
            keep_days: self.keep_days,
            keep_bytes: self.keep_bytes.bytes(),
            retention_interval: self.retention_interval,
            posters: self.posters,
            ffmpeg: self.ffmpeg.clone(),
            s3: (!self.s3.bucket.is_empty()).then(|| S3Settings {
                endpoint: self.s3.endpoint.clone(),
                bucket: self.s3.bucket.clone(),
                region: self.s3.region.clone(),
                access_key_id: self.s3.access_key_id.clone(),
                secret_access_key: self.s3.secret_access_key.clone(),
                path_style: self.s3.path_style,
                prefix: self.s3.prefix.clone(),
                delivery: self.s3.delivery,
                presign_ttl: self.s3.presign_ttl,
            }),
            move_retry: self.s3.move_retry,
        }
    }

    /// Report every problem of `[archive]`.
    pub(super) fn validate(&self, check: &mut impl FnMut(bool, String)) {
        check(!self.progress_interval.is_zero(), "archive.progress_interval: must be greater than 0".into());
        check(!self.dvr_window.is_zero(), "archive.dvr_window: must be greater than 0".into());
        check(
            !self.retention_interval.is_zero(),
            "archive.retention_interval: must be greater than 0".into(),
        );
        check(!self.ffmpeg.trim().is_empty(), "archive.ffmpeg: must name a binary".into());
        let s3 = &self.s3;
        if !s3.bucket.is_empty() {
            check(
                s3.endpoint.starts_with("https://") || s3.endpoint.starts_with("http://"),
                "archive.s3.endpoint: an http:// or https:// URL".into(),
            );
            check(!s3.region.is_empty(), "archive.s3.region: must not be empty".into());
            check(!s3.presign_ttl.is_zero(), "archive.s3.presign_ttl: must be greater than 0".into());
            check(!s3.move_retry.is_zero(), "archive.s3.move_retry: must be greater than 0".into());
        }
    }
}
