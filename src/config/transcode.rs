//! `[transcode]`: the transcode ladder (`actors::transcode`): which renditions ffmpeg makes from
//! each live channel's source, with which encoder, and how many channels at once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::duration_str;
use crate::actors::transcode::{Encoder, RungSpec, TranscodeSettings};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    /// Give live channels an adaptive ladder when ffmpeg is found. Off: passthrough only.
    pub enabled: bool,
    /// The ffmpeg binary: a path, or a name looked up on `PATH`. Never downloaded.
    pub ffmpeg: String,
    /// Channels transcoded at once on this server; further channels run passthrough (and say
    /// why in their API status). One 720p ladder takes most of two cores with x264.
    pub max_transcodes: usize,
    /// Encoded rungs per channel at most (the source is always the top rung besides these).
    pub max_rungs: usize,
    /// `x264` (software, default), `vaapi`, `nvenc` or `qsv`.
    pub encoder: Encoder,
    /// x264 preset (`ultrafast` ... `veryslow`); hardware encoders use their own default.
    pub preset: String,
    /// x264 tune; `zerolatency` keeps the encoder's delay at a frame or two.
    pub tune: String,
    /// The VAAPI render node (`encoder = "vaapi"`).
    pub vaapi_device: String,
    /// ffmpeg that takes input but gives no output for this long is restarted.
    #[serde(with = "duration_str")]
    pub stall_timeout: Duration,
    /// First restart delay after ffmpeg died; doubles per failure up to `retry_max`.
    #[serde(with = "duration_str")]
    pub retry_initial: Duration,
    #[serde(with = "duration_str")]
    pub retry_max: Duration,
    /// Also make an Opus track from AAC audio, for WebRTC viewers (rendition `opus`).
    pub opus: bool,
    /// AAC bitrate (kbit/s) when the rungs need AAC made from an Opus source (WHIP).
    pub aac_kbps: u32,
    /// Opus bitrate (kbit/s) of the `opus` rendition.
    pub opus_kbps: u32,
    /// The rungs, as `[[transcode.rungs]]` tables; only those below the source's height are
    /// made, at most `max_rungs` of them, highest first.
    pub rungs: Vec<RungSpec>,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        let s = TranscodeSettings::default();
        TranscodeConfig {
            enabled: s.enabled,
            ffmpeg: s.ffmpeg.clone(),
            max_transcodes: s.max_transcodes,
            max_rungs: s.max_rungs,
            encoder: s.encoder,
            preset: s.preset.clone(),
            tune: s.tune.clone(),
            vaapi_device: s.vaapi_device.clone(),
            stall_timeout: s.stall_timeout,
            retry_initial: s.retry_initial,
            retry_max: s.retry_max,
            opus: s.opus,
            aac_kbps: s.aac_kbps,
            opus_kbps: s.opus_kbps,
            rungs: s.rungs,
        }
    }
}

impl TranscodeConfig {
    pub fn settings(&self) -> TranscodeSettings {
        TranscodeSettings {
            enabled: self.enabled,
            ffmpeg: self.ffmpeg.clone(),
            max_transcodes: self.max_transcodes,
            max_rungs: self.max_rungs,
            encoder: self.encoder,
            preset: self.preset.clone(),
            tune: self.tune.clone(),
            vaapi_device: self.vaapi_device.clone(),
            stall_timeout: self.stall_timeout,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max,
            opus: self.opus,
            aac_kbps: self.aac_kbps,
            opus_kbps: self.opus_kbps,
            rungs: self.rungs.clone(),
        }
    }

    /// Report every problem of `[transcode]`.
    pub(super) fn validate(&self, check: &mut impl FnMut(bool, String)) {
        check(!self.ffmpeg.trim().is_empty(), "transcode.ffmpeg: must name a binary".into());
        check(
            self.max_transcodes > 0,
            "transcode.max_transcodes: must be greater than 0 (set enabled = false to turn the ladder off)"
                .into(),
        );
        check(self.max_rungs > 0, "transcode.max_rungs: must be greater than 0".into());
        for (key, d) in [("stall_timeout", self.stall_timeout), ("retry_initial", self.retry_initial)] {
            check(!d.is_zero(), format!("transcode.{key}: must be greater than 0"));
        }
        check(
            self.retry_max >= self.retry_initial,
            "transcode.retry_max: must be at least retry_initial".into(),
        );
        check((16..=512).contains(&self.aac_kbps), "transcode.aac_kbps: must be 16 to 512".into());
        check((6..=510).contains(&self.opus_kbps), "transcode.opus_kbps: must be 6 to 510".into());
        let ok_word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        check(ok_word(&self.preset), "transcode.preset: letters, digits and '_' only".into());
        check(ok_word(&self.tune), "transcode.tune: letters, digits and '_' only".into());
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.rungs.iter().enumerate() {
            let name_ok = !r.name.is_empty()
                && r.name.len() <= 32
                && r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && r.name != crate::actors::hls::SOURCE
                && r.name != crate::actors::transcode::OPUS;
            check(
                name_ok,
                format!("transcode.rungs[{i}].name: 1 to 32 of [A-Za-z0-9_-], not 'source' or 'opus'"),
            );
            check(names.insert(&r.name), format!("transcode.rungs[{i}].name: {} is used twice", r.name));
            check(
                (72..=4320).contains(&r.height) && r.height % 2 == 0,
                format!("transcode.rungs[{i}].height: an even number from 72 to 4320"),
            );
            check(
                (50..=100_000).contains(&r.video_kbps),
                format!("transcode.rungs[{i}].video_kbps: 50 to 100000"),
            );
        }
    }
}
