//! The DASH manifest of a recording (`/vod/<video_id>/manifest.mpd`): the same CMAF files its
//! HLS playlists name, described with `protocols::dash`. Periods are planned on the source's
//! segments (a new one at each discontinuity, gap or init change); every rendition with a
//! picture is a representation of each period it has all the segments of, on its own timeline
//! (the presentation time of each segment's first video sample, from the journal).
//!
//! Static once the recording ended; dynamic while it records (a player reloads it and may seek
//! anywhere in what is there). Renditions without video are left out: their timeline would be
//! in the audio's sample rate, which the journal does not keep.

use std::time::{Duration, SystemTime};

use super::journal::{init_file, RecordedRendition, SegmentInfo};
use super::RecordingIndex;
use crate::actors::hls::SOURCE;
use crate::protocols::dash::{
    plan_periods, render_mpd, ticks_to_duration, Manifest, ManifestKind, Period, RecordedSegment,
    Representation, TimelineSegment, VideoInfo,
};
use crate::protocols::fmp4::VIDEO_TIMESCALE;

/// How often a player reloads a dynamic manifest.
const UPDATE_PERIOD: Duration = Duration::from_secs(2);

fn is_video(codecs: &str) -> bool {
    ["avc1", "avc3", "hvc1", "hev1"].iter().any(|c| codecs.contains(c))
}

/// A rendition's segments with media and a known start, and their durations in ticks: to the
/// next segment's start where the timeline runs on, else the journaled duration.
fn timeline(r: &RecordedRendition, finished: bool) -> Vec<RecordedSegment> {
    let listed: Vec<&SegmentInfo> = r.listed(finished).filter(|s| !s.gap && s.start.is_some()).collect();
    let ticks = |d: Duration| (d.as_nanos() * u128::from(VIDEO_TIMESCALE) / 1_000_000_000) as u64;
    listed
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let start = s.start.unwrap_or_default();
            let duration = match listed.get(i + 1) {
                Some(n) if n.msn == s.msn + 1 && !n.discontinuity && n.start.unwrap_or(0) > start => {
                    n.start.unwrap_or(0) - start
                }
                _ => ticks(s.duration),
            };
            RecordedSegment {
                msn: s.msn,
                start,
                duration,
                discontinuity: s.discontinuity,
                init_version: s.init_version,
            }
        })
        .collect()
}

/// The manifest of `index`, with `uri_query` on every URL; `None` without video.
pub(super) fn render(index: &RecordingIndex, uri_query: &str, now: SystemTime) -> Option<String> {
    let finished = !index.is_recording();
    let reference = index.with_rendition(SOURCE, |r| timeline(r, finished))?;
    let first_pdt =
        index.with_rendition(SOURCE, |r| r.listed(finished).next().map(|s| s.program_date_time)).flatten()?;
    let plans = plan_periods(&reference, VIDEO_TIMESCALE);
    let names = index.rendition_names();
    let mut longest = Duration::ZERO;
    let periods: Vec<Period> = plans
        .iter()
        .filter_map(|plan| {
            let (lo, hi) = (plan.segments.first()?.msn, plan.segments.last()?.msn);
            let representations: Vec<Representation> = names
                .iter()
                .filter_map(|name| {
                    index
                        .with_rendition(name, |r| {
                            let init = r.current_init().filter(|i| is_video(&i.codecs))?;
                            let own: Vec<RecordedSegment> = timeline(r, finished)
                                .into_iter()
                                .filter(|s| (lo..=hi).contains(&s.msn))
                                .collect();
                            // All the period's segments, from one init segment, or none of it.
                            let complete = own.len() as u64 == hi - lo + 1
                                && own.iter().all(|s| s.init_version == own[0].init_version);
                            if !complete {
                                return None;
                            }
                            let (peak, _) = r.bandwidth();
                            let (width, height) = init.resolution.unwrap_or((0, 0));
                            Some(Representation {
                                id: name.clone(),
                                bandwidth: peak.max(1),
                                codecs: init.codecs.clone(),
                                // No frame rate: dash.js checks a muxed representation that has
                                // one with Media Capabilities, which refuses two codecs in a
                                // video type (see `protocols::dash`).
                                video: Some(VideoInfo { width, height, frame_rate: None }),
                                audio_sampling_rate: None,
                                init_uri: format!("{name}/{}", init_file(own[0].init_version)),
                                // `segment_file`'s name with the number as a template.
                                media_template: format!("{name}/seg-$Number$.m4s"),
                                timescale: VIDEO_TIMESCALE,
                                segments: own
                                    .iter()
                                    .map(|s| TimelineSegment {
                                        msn: s.msn,
                                        start: s.start,
                                        duration: s.duration,
                                    })
                                    .collect(),
                            })
                        })
                        .flatten()
                })
                .collect();
            for s in &plan.segments {
                longest = longest.max(ticks_to_duration(s.duration, VIDEO_TIMESCALE));
            }
            (!representations.is_empty()).then(|| Period {
                id: format!("p{lo}"),
                start: plan.start,
                representations,
            })
        })
        .collect();
    if periods.is_empty() {
        return None;
    }
    let end = plans.last().map_or(Duration::ZERO, |p| p.end(VIDEO_TIMESCALE));
    // Timelines are in presentation time (the first frame shown starts each period at 0), but
    // the media still run one B-frame delay past a period's last presented video frame (the
    // audio is not delayed, nor is the last frame's decode order): dash.js ends playback by its
    // own timer at the stated duration, before the media element's own end, and then stalls a
    // hair short of it without `ended` (seen in tests/browser_vod.rs). The presentation lasts
    // until the media end: the decode-time end.
    let shift =
        index.with_rendition(SOURCE, |r| r.listed(finished).next().map(|s| s.shift)).flatten().unwrap_or(0);
    let end = end + ticks_to_duration(shift, VIDEO_TIMESCALE);
    let kind = if finished {
        ManifestKind::Static { duration: end }
    } else {
        ManifestKind::Dynamic {
            availability_start: first_pdt,
            publish_time: now,
            minimum_update_period: UPDATE_PERIOD,
            time_shift_buffer_depth: None,
        }
    };
    let manifest = Manifest {
        kind,
        periods,
        min_buffer_time: longest.max(Duration::from_secs(1)),
        max_segment_duration: Some(longest),
        base_url: None,
    };
    Some(render_mpd(&manifest, uri_query))
}
