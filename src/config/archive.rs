//! `[archive]`: live-to-VOD. Every live session is recorded as a video while it streams
//! (`actors::archive`), from the same CMAF media the LL-HLS output made.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{duration_str, Size};
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
    }
}
