//! What happens to recordings after they are made: channel owners' settings (record or not,
//! how long to keep), retention (the oldest recordings of a channel go once they are older than
//! its `keep_days` or past its `keep_bytes`), deletion (a video's media and its row), and the
//! poster (a JPEG of the first key frame, made by ffmpeg when a recording finishes).

use tracing::{info, warn};

use super::journal::{init_file, segment_file};
use super::{Archive, RecordingIndex};
use crate::actors::hls::SOURCE;
use crate::metrics::metrics;
use crate::store::{RecordingSettings, Store};

/// The poster's file name in a recording's directory.
pub const POSTER: &str = "poster.jpg";

/// A channel's recording settings in force: its owner's, over the server's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct EffectiveRecording {
    /// Its live sessions are recorded.
    pub record: bool,
    /// Recordings are kept this many days (0: forever).
    pub keep_days: u64,
    /// The channel's newest recordings are kept up to this many bytes in all (0: no limit).
    pub keep_bytes: u64,
    /// The owner changed the server's defaults.
    pub custom: bool,
}

impl Archive {
    /// Set (or, with `None`, drop) a channel owner's recording settings; they apply from its next
    /// live session (recording) and the next retention run.
    pub fn set_channel(&self, channel: &str, settings: Option<RecordingSettings>) {
        match settings {
            Some(s) => {
                self.inner.channels.insert(channel.to_owned(), s);
            }
            None => {
                self.inner.channels.remove(channel);
            }
        }
    }

    /// The recording settings in force for `channel`.
    pub fn channel_settings(&self, channel: &str) -> EffectiveRecording {
        let d = &self.inner.settings;
        let own = self.inner.channels.get(channel).map(|s| *s);
        let pick = |v: Option<i64>, default: u64| v.map_or(default, |n| n.max(0) as u64);
        EffectiveRecording {
            record: self.enabled() && own.is_none_or(|s| s.record),
            keep_days: pick(own.and_then(|s| s.keep_days), d.keep_days),
            keep_bytes: pick(own.and_then(|s| s.keep_bytes), d.keep_bytes),
            custom: own.is_some(),
        }
    }

    /// Whether `channel`'s next live session is recorded.
    pub fn records(&self, channel: &str) -> bool {
        self.channel_settings(channel).record
    }

    /// Whether video `id` is being recorded right now.
    pub fn is_recording(&self, video_id: i64) -> bool {
        self.inner.active.contains_key(&video_id)
    }

    /// Remove a recording's media (all renditions, playlists, poster), local and in the object
    /// store.
    pub async fn delete_media(&self, video_id: i64) -> std::io::Result<()> {
        self.inner.finished.remove(&video_id);
        if let Some(remote) = &self.inner.remote {
            remote.delete(video_id).await?;
        }
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || storage.remove_dir(&video_id.to_string()))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Enforce every channel's retention every `retention_interval` until `shutdown`.
    pub async fn run_retention(self, shutdown: tokio_util::sync::CancellationToken) {
        let Some(store) = self.inner.store.clone() else { return };
        let mut tick = tokio::time::interval(self.inner.settings.retention_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.enforce_retention(&store, crate::store::now_ms()).await {
                warn!(error = %e, "recording retention run failed; retrying at the next one");
            }
        }
    }

    /// One retention run: per channel, its finished recordings newest first; those started
    /// more than `keep_days` ago, and those past `keep_bytes` counted from the newest, go.
    /// Returns how many were deleted.
    pub async fn enforce_retention(&self, store: &Store, now_ms: i64) -> crate::Result<usize> {
        let mut deleted = 0;
        for (channel_id, name) in store.channels_with_recordings().await? {
            let policy = self.channel_settings(&name);
            if policy.keep_days == 0 && policy.keep_bytes == 0 {
                continue;
            }
            let oldest_kept = now_ms - (policy.keep_days as i64).saturating_mul(86_400_000);
            let mut bytes = 0u64;
            for rec in store.finished_recordings(channel_id).await? {
                bytes += rec.size_bytes.max(0) as u64;
                let too_old = policy.keep_days > 0 && rec.started_at_ms < oldest_kept;
                let too_big = policy.keep_bytes > 0 && bytes > policy.keep_bytes;
                if !(too_old || too_big) {
                    continue;
                }
                // Media first: a row without media would be a video that cannot play, media
                // without a row are found by nothing (and cost only disk until removed by hand).
                if let Err(e) = self.delete_media(rec.video_id).await {
                    warn!(video_id = rec.video_id, error = %e, "cannot delete an expired recording's media");
                    continue;
                }
                store.delete_video(rec.video_id).await?;
                metrics().archive_retention_deletions.inc();
                info!(channel = %name, video_id = rec.video_id, too_old, too_big, "recording deleted by retention");
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Make the poster of a finished recording: the first frame of its source's first segment,
    /// scaled to 640 pixels wide. Best effort: without ffmpeg, or when it fails, no poster.
    pub(super) async fn make_poster(&self, video_id: i64, index: &RecordingIndex) {
        let Some(ffmpeg) = self.inner.ffmpeg.clone() else { return };
        let first = index
            .with_rendition(SOURCE, |r| r.listed(true).find(|s| !s.gap).map(|s| (s.init_version, s.msn)))
            .flatten();
        let Some((init, msn)) = first else { return };
        let storage = self.inner.storage.clone();
        let made = tokio::task::spawn_blocking(move || -> std::io::Result<bool> {
            let dir = format!("{video_id}/{SOURCE}");
            let (Some(init_path), Some(seg_path), Some(out)) = (
                storage.local_path(&format!("{dir}/{}", init_file(init))),
                storage.local_path(&format!("{dir}/{}", segment_file(msn))),
                storage.local_path(&format!("{video_id}/{POSTER}")),
            ) else {
                return Ok(false);
            };
            // A fragment is only readable after its init segment: hand ffmpeg both, in order.
            let concat = format!("concat:{}|{}", init_path.display(), seg_path.display());
            let tmp = out.with_extension("tmp.jpg");
            let status = std::process::Command::new(&ffmpeg)
                .args(["-hide_banner", "-nostdin", "-v", "error", "-y", "-protocol_whitelist", "file,concat"])
                .args(["-i", &concat, "-frames:v", "1", "-vf", "scale=640:-2", "-timelimit", "20"])
                .arg(&tmp)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()?;
            if !status.success() {
                let _ = std::fs::remove_file(&tmp);
                return Ok(false);
            }
            std::fs::rename(&tmp, &out)?;
            Ok(true)
        })
        .await;
        match made {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => warn!(video_id, "ffmpeg could not make the recording's poster"),
            Ok(Err(e)) => warn!(video_id, error = %e, "cannot make the recording's poster"),
            Err(e) => warn!(video_id, error = %e, "poster task failed"),
        }
    }

    /// Whether the recording has a poster: on the local disk, or moved with it (`backend`).
    pub fn has_poster(&self, video_id: i64, backend: Option<&str>) -> bool {
        let local =
            self.inner.storage.local_path(&format!("{video_id}/{POSTER}")).is_some_and(|p| p.is_file());
        local || (backend == Some("s3") && self.inner.remote.is_some() && self.inner.ffmpeg.is_some())
    }
}

/// Load every channel's own recording settings into the archive (server start).
pub async fn load_all(store: &Store, archive: &Archive) -> crate::Result<()> {
    for (name, s) in store.all_recording_settings().await? {
        archive.set_channel(&name, Some(s));
    }
    Ok(())
}
