//! The ladder's plan (which rungs, from what the source is) and the ffmpeg arguments that make
//! it. Pure: no process, no I/O, so both are unit tested.
//!
//! One ffmpeg per channel decodes the source once, scales it once per rung (`split`) and
//! encodes every rung; each rung leaves as its own MPEG-TS stream on its own pipe (file
//! descriptors 3, 4, ...), with the audio: the source's AAC copied, or AAC made from Opus. An
//! `opus` output (audio only) is made for WebRTC viewers when the source's audio is AAC.
//!
//! Alignment (what `media::follow` relies on): `-copyts` keeps the source's timestamps,
//! `-fps_mode passthrough` keeps every frame at its time, `-force_key_frames source` puts a key
//! frame wherever the source has one, `-enc_time_base 1:90000` keeps frame times off the
//! encoder's frame-rate grid, and scene-cut key frames are off (`-sc_threshold 0`,
//! a long `-g`). No B-frames (`-bf 0`): WebRTC cannot carry them and a rung's decode times are
//! then its presentation times.

use serde::{Deserialize, Serialize};

use crate::media::AudioCodec;

/// The video encoder ffmpeg uses for the rungs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoder {
    /// Software: libx264 (libx265 for H.265 rungs).
    #[default]
    X264,
    /// Intel/AMD through VA-API (`h264_vaapi`), scaled on the GPU.
    Vaapi,
    /// NVIDIA (`h264_nvenc`).
    Nvenc,
    /// Intel Quick Sync (`h264_qsv`).
    Qsv,
}

/// The rungs' video codec (a channel setting). H.264 plays everywhere (and over WebRTC);
/// H.265 halves the bits for players that have it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    #[default]
    H264,
    H265,
}

/// One `[[transcode.rungs]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungSpec {
    /// The rendition name in URLs (`/live/<channel>/<name>/index.m3u8`).
    pub name: String,
    /// Picture height; the width keeps the source's aspect ratio.
    pub height: u32,
    /// Video bitrate (kbit/s), capped at the source's.
    pub video_kbps: u32,
}

/// The default ladder: 1080p, 720p, 480p and 360p at common streaming bitrates.
pub fn default_rungs() -> Vec<RungSpec> {
    [("1080p", 1080, 5000), ("720p", 720, 2800), ("480p", 480, 1400), ("360p", 360, 800)]
        .into_iter()
        .map(|(name, height, video_kbps)| RungSpec { name: name.into(), height, video_kbps })
        .collect()
}

/// What the ladder knows of the source when it plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    /// Video bitrate measured over the first second or so (kbit/s); 0 when unknown.
    pub video_kbps: u32,
    pub audio: Option<AudioCodec>,
}

/// One rung to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rung {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub video_kbps: u32,
}

/// How the rungs get their audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RungAudio {
    None,
    /// The source's AAC, as it is.
    Copy,
    /// AAC encoded from the source's Opus.
    Aac,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub rungs: Vec<Rung>,
    pub audio: RungAudio,
    /// Make the `opus` rendition.
    pub opus: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.rungs.is_empty() && !self.opus
    }

    /// The speed metric's label: the class of the highest encoded rung.
    pub fn rung_class(&self) -> &'static str {
        match self.rungs.first().map_or(0, |r| r.height) {
            h if h >= 1080 => "1080p",
            h if h >= 720 => "720p",
            h if h >= 480 => "480p",
            h if h >= 360 => "360p",
            _ => "other",
        }
    }
}

/// The rungs below the source's height, highest first, at most `max_rungs`, never above the
/// source's bitrate; the audio each needs; and the Opus rendition when the source's audio is
/// AAC.
pub fn plan(specs: &[RungSpec], max_rungs: usize, opus: bool, source: &SourceInfo) -> Plan {
    let mut specs: Vec<&RungSpec> = specs.iter().filter(|s| s.height < source.height).collect();
    specs.sort_by_key(|s| std::cmp::Reverse(s.height));
    specs.truncate(max_rungs);
    let rungs = specs
        .into_iter()
        .map(|s| {
            // Even dimensions (4:2:0), the source's aspect ratio.
            let width =
                (u64::from(source.width) * u64::from(s.height) / u64::from(source.height.max(1))) as u32;
            let width = (width + 1) & !1;
            let video_kbps =
                if source.video_kbps > 0 { s.video_kbps.min(source.video_kbps) } else { s.video_kbps };
            Rung { name: s.name.clone(), width: width.max(2), height: s.height, video_kbps }
        })
        .collect();
    let audio = match source.audio {
        None => RungAudio::None,
        Some(AudioCodec::Aac) => RungAudio::Copy,
        Some(AudioCodec::Opus) => RungAudio::Aac,
    };
    Plan { rungs, audio, opus: opus && source.audio == Some(AudioCodec::Aac) }
}

/// Encoder settings the arguments need (from `[transcode]`).
#[derive(Clone, Debug)]
pub struct EncoderSettings<'a> {
    pub encoder: Encoder,
    pub codec: Codec,
    pub preset: &'a str,
    pub tune: &'a str,
    pub vaapi_device: &'a str,
    pub aac_kbps: u32,
    pub opus_kbps: u32,
}

/// The first file descriptor of the outputs in the child (0-2 are stdio).
pub const FIRST_OUTPUT_FD: i32 = 3;

/// A key frame at most every 20 s of its own accord (x264's `keyint`): in practice never, since
/// the source's key frames come far more often and are forced.
const MAX_GOP_FRAMES: &str = "600";

/// ffmpeg's arguments (after the program name) for `plan`: MPEG-TS on stdin, one MPEG-TS output
/// per rung on fds 3, 4, ... and then the Opus output. Only the pipe protocol is allowed, so
/// nothing in a stream can make ffmpeg open a file or a URL.
pub fn ffmpeg_args(plan: &Plan, enc: &EncoderSettings<'_>) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    // Progress ("frame= ... speed=1.0x") once a second on stderr, for the speed metric.
    push(&["-hide_banner", "-nostdin", "-stats", "-stats_period", "1"]);
    if enc.encoder == Encoder::Vaapi {
        push(&["-vaapi_device", enc.vaapi_device]);
    }
    // The input: our own MPEG-TS, with the parameter sets at every key frame; probe little.
    // (`-fflags +nobuffer` would drop the first seconds of frames.)
    push(&["-protocol_whitelist", "pipe", "-probesize", "500000"]);
    // The decoder uses slice threads only: frame threads hold one frame per thread (two at
    // least here), and every frame held is that much more latency on every rung.
    push(&["-analyzeduration", "500000", "-thread_type", "slice", "-f", "mpegts", "-i", "pipe:0", "-copyts"]);
    let n = plan.rungs.len();
    if n > 0 {
        let scale = |r: &Rung| match enc.encoder {
            Encoder::Vaapi => format!("format=nv12,hwupload,scale_vaapi=w={}:h={}", r.width, r.height),
            _ => format!("scale={}:{}", r.width, r.height),
        };
        let graph = if n == 1 {
            format!("[0:v:0]{}[v0]", scale(&plan.rungs[0]))
        } else {
            let splits: String = (0..n).map(|i| format!("[s{i}]")).collect();
            let scaled: Vec<String> =
                plan.rungs.iter().enumerate().map(|(i, r)| format!("[s{i}]{}[v{i}]", scale(r))).collect();
            format!("[0:v:0]split={n}{splits};{}", scaled.join(";"))
        };
        a.extend(["-filter_complex".to_string(), graph]);
    }
    let mut fd = FIRST_OUTPUT_FD;
    for (i, r) in plan.rungs.iter().enumerate() {
        a.extend(["-map".to_string(), format!("[v{i}]")]);
        if plan.audio != RungAudio::None {
            a.extend(["-map".to_string(), "0:a:0".to_string()]);
        }
        a.extend(video_codec(r, enc));
        match plan.audio {
            RungAudio::None => {}
            RungAudio::Copy => a.extend(["-c:a", "copy"].map(String::from)),
            RungAudio::Aac => {
                a.extend(["-c:a", "aac", "-ar", "48000", "-b:a"].map(String::from));
                a.push(format!("{}k", enc.aac_kbps));
            }
        }
        a.extend(ts_output(fd));
        fd += 1;
    }
    if plan.opus {
        a.extend(["-map", "0:a:0", "-vn", "-c:a", "libopus", "-ar", "48000", "-b:a"].map(String::from));
        a.push(format!("{}k", enc.opus_kbps));
        a.extend(ts_output(fd));
    }
    a
}

fn video_codec(r: &Rung, enc: &EncoderSettings<'_>) -> Vec<String> {
    let kbps = r.video_kbps;
    let strs = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let mut v: Vec<String> = match (enc.encoder, enc.codec) {
        (Encoder::X264, Codec::H265) => {
            let mut v = strs(&["-c:v", "libx265", "-preset", enc.preset]);
            // x265 knows fewer tunes than x264 (no film, no stillimage): those are left out.
            if ["zerolatency", "fastdecode", "animation", "grain", "psnr", "ssim"].contains(&enc.tune) {
                v.extend(strs(&["-tune", enc.tune]));
            }
            // x265 takes key frame and B-frame rules in its own parameters; `hvc1` is what
            // Apple's players want.
            v.extend(strs(&[
                "-x265-params",
                "bframes=0:scenecut=0:keyint=600:repeat-headers=1:log-level=error",
                "-pix_fmt",
                "yuv420p",
                "-tag:v",
                "hvc1",
            ]));
            v
        }
        (Encoder::Vaapi, Codec::H265) => strs(&["-c:v", "hevc_vaapi"]),
        (Encoder::Nvenc, Codec::H265) => {
            strs(&["-c:v", "hevc_nvenc", "-tune", "ll", "-forced-idr", "1", "-no-scenecut", "1"])
        }
        (Encoder::Qsv, Codec::H265) => strs(&["-c:v", "hevc_qsv", "-forced_idr", "1"]),
        (Encoder::X264, Codec::H264) => vec![
            "-c:v".into(),
            "libx264".into(),
            "-preset".into(),
            enc.preset.into(),
            "-tune".into(),
            enc.tune.into(),
            "-profile:v".into(),
            "high".into(),
            "-pix_fmt".into(),
            "yuv420p".into(),
            "-sc_threshold".into(),
            "0".into(),
        ],
        (Encoder::Vaapi, Codec::H264) => vec!["-c:v".into(), "h264_vaapi".into()],
        (Encoder::Nvenc, Codec::H264) => vec![
            "-c:v".into(),
            "h264_nvenc".into(),
            "-tune".into(),
            "ll".into(),
            "-forced-idr".into(),
            "1".into(),
            "-no-scenecut".into(),
            "1".into(),
        ],
        (Encoder::Qsv, Codec::H264) => {
            vec!["-c:v".into(), "h264_qsv".into(), "-forced_idr".into(), "1".into()]
        }
    };
    v.extend(["-bf".into(), "0".into(), "-g".into(), MAX_GOP_FRAMES.into()]);
    v.extend(["-force_key_frames".into(), "source".into(), "-fps_mode".into(), "passthrough".into()]);
    // The encoder's time base is 1/frame rate by default, which moves every frame onto that
    // grid (a frame at 21 ms leaves at 33.3 ms): keep the source's 90 kHz times exactly.
    v.extend(["-enc_time_base".into(), "1:90000".into()]);
    v.extend([
        "-b:v".into(),
        format!("{kbps}k"),
        "-maxrate".into(),
        format!("{}k", kbps + kbps / 5),
        "-bufsize".into(),
        format!("{}k", kbps * 2),
    ]);
    v
}

/// An MPEG-TS output on file descriptor `fd`, written as soon as each packet is muxed.
fn ts_output(fd: i32) -> Vec<String> {
    ["-muxdelay", "0", "-muxpreload", "0", "-flush_packets", "1", "-f", "mpegts"]
        .into_iter()
        .map(String::from)
        .chain([format!("pipe:{fd}")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(height: u32, kbps: u32, audio: Option<AudioCodec>) -> SourceInfo {
        SourceInfo { width: height * 16 / 9, height, video_kbps: kbps, audio }
    }

    #[test]
    fn a_720p_source_gets_480p_and_360p() {
        let p = plan(&default_rungs(), 3, true, &source(720, 3000, Some(AudioCodec::Aac)));
        let names: Vec<&str> = p.rungs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["480p", "360p"]);
        assert_eq!((p.rungs[0].width, p.rungs[0].height), (854, 480));
        assert_eq!((p.rungs[1].width, p.rungs[1].height), (640, 360));
        assert_eq!(p.audio, RungAudio::Copy);
        assert!(p.opus);
        assert_eq!(p.rung_class(), "480p");
    }

    #[test]
    fn rungs_never_exceed_the_source_bitrate_or_the_rung_cap() {
        let p = plan(&default_rungs(), 1, false, &source(1080, 1000, Some(AudioCodec::Opus)));
        assert_eq!(p.rungs.len(), 1);
        assert_eq!(p.rungs[0].name, "720p");
        assert_eq!(p.rungs[0].video_kbps, 1000);
        assert_eq!(p.audio, RungAudio::Aac);
        assert!(!p.opus, "an Opus source needs no Opus rendition");
    }

    #[test]
    fn a_small_source_without_audio_needs_nothing() {
        let p = plan(&default_rungs(), 3, true, &source(360, 500, None));
        assert!(p.is_empty());
    }

    #[test]
    fn arguments_map_each_rung_to_its_own_pipe_with_aligned_key_frames() {
        let p = plan(&default_rungs(), 3, true, &source(720, 3000, Some(AudioCodec::Aac)));
        let enc = EncoderSettings {
            encoder: Encoder::X264,
            codec: Codec::H264,
            preset: "veryfast",
            tune: "zerolatency",
            vaapi_device: "",
            aac_kbps: 128,
            opus_kbps: 96,
        };
        let args = ffmpeg_args(&p, &enc);
        let text = args.join(" ");
        assert!(text.contains("-protocol_whitelist pipe"));
        assert!(text.contains("-thread_type slice -f mpegts -i pipe:0 -copyts"));
        assert!(text.contains("[0:v:0]split=2[s0][s1];[s0]scale=854:480[v0];[s1]scale=640:360[v1]"));
        assert_eq!(text.matches("-force_key_frames source").count(), 2);
        assert_eq!(text.matches("-bf 0").count(), 2);
        assert_eq!(text.matches("-c:a copy").count(), 2);
        for fd in ["pipe:3", "pipe:4", "pipe:5"] {
            assert!(args.iter().any(|a| a == fd), "{fd} in {text}");
        }
        assert!(text.contains("-vn -c:a libopus -ar 48000 -b:a 96k"));
        // Nothing but pipes: no file or URL an input could name.
        assert!(!args.iter().any(|a| a.contains("://") || a.starts_with('/')), "{text}");
        // H.265 rungs: libx265 with the same alignment rules.
        let h265 = ffmpeg_args(&p, &EncoderSettings { codec: Codec::H265, ..enc }).join(" ");
        assert_eq!(h265.matches("-c:v libx265").count(), 2);
        assert_eq!(h265.matches("bframes=0:scenecut=0").count(), 2);
        assert_eq!(h265.matches("-force_key_frames source").count(), 2);
        assert_eq!(h265.matches("-enc_time_base 1:90000").count(), 2);
    }
}
