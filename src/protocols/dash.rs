//! MPEG-DASH manifests (MPD) over the recorded CMAF files: a sans-IO model and its renderer.
//! Numbers and strings in, XML text out: no clocks, no files, no sockets.
//!
//! Data flow: a recording keeps, per rendition, the init segments (`init-<v>.mp4`) and media
//! segments (`seg-<msn>.m4s`) that `protocols::fmp4::CmafMuxer` wrote, the same bytes LL-HLS
//! serves. The VOD layer (`/vod/<video_id>/manifest.mpd`) describes them with a [`Manifest`]:
//! [`plan_periods`] cuts the recorded segment list into periods, the caller fills in one
//! [`Representation`] per rendition and period, and [`render_mpd`] writes the XML.
//!
//! Spec: ISO/IEC 23009-1 (DASH) §5.3.1.2 MPD attributes, §5.3.2 Period, §5.3.9.4
//! SegmentTemplate, §5.3.9.6 SegmentTimeline (`S@t`, `@d`, `@r`), §5.3.9.4.4 template
//! identifiers (`$Number$`, `$$`), §5.3.9.2 `presentationTimeOffset`; the live profile
//! (`urn:mpeg:dash:profile:isoff-live:2011`) and the CMAF profile
//! (`urn:mpeg:dash:profile:cmaf:2019`, ISO/IEC 23000-19 Annex); XML 1.0 §2.3/§2.4 (attribute
//! values, `&` and `<` escaped).
//!
//! Decisions:
//! - **Muxed representations.** Our segments carry video and audio in one `moof`/`mdat`. DASH-IF
//!   IOP forbids that and dash.js refuses an AdaptationSet it *recognises* as muxed (more than one
//!   `ContentComponent`: "Multiplexed representations are intentionally not supported",
//!   dash.js `Stream._isMediaSupported`, 5.2.1). It classifies an AdaptationSet without
//!   `ContentComponent` by `codecs` and `mimeType` instead, audio before video
//!   (`DashManifestModel.getIsTypeOf`): `mimeType="video/mp4"` with
//!   `codecs="avc1.64001f,mp4a.40.2"` is a video set, its SourceBuffer is created with both
//!   codecs, and Chromium's MSE demuxes both tracks from one SourceBuffer. So a representation
//!   with a picture is written as `video/mp4` with the combined codecs and no
//!   `ContentComponent`; an audio-only rendition is `audio/mp4`. A muxed representation has no
//!   `@frameRate`: with it, dash.js checks the codecs with Media Capabilities, which refuses two
//!   codecs in a video type (see `render_representation`). The DASH-IF way round it, the same
//!   files named by a video-only and an audio-only AdaptationSet, does not play: Chromium 156
//!   refuses a muxed init segment in a SourceBuffer made for one codec
//!   (`CHUNK_DEMUXER_ERROR_APPEND_FAILED: audio object type 0x40 does not match what is
//!   specified in the mimetype`); only separate audio and video files would. `tests/browser/
//!   dash.mjs` holds dash.js to all of it.
//! - **Timescale.** The timeline is in the declared track's timescale (the video track's 90 kHz
//!   for muxed segments, the sample rate for audio-only), and `S@t` equals the fragment's `tfdt`
//!   of that track. `presentationTimeOffset` is the first segment's `tfdt`, so every period
//!   starts at 0 on its own timeline whatever the recording's timestamps were.
//! - **Gaps.** `$Number$` is `startNumber` plus the index of the segment in the timeline
//!   (§5.3.9.6.4): an `S` with an explicit `@t` after a hole does *not* skip a number, and dash.js
//!   5.2.1 has no `S@n`. So a missing MSN ends the period and the next period starts at the MSN
//!   after the hole with its own `startNumber`. The hole stays in the presentation timeline (the
//!   next period starts where its media really starts), so a dynamic manifest's availability
//!   times stay true; players jump it as a gap at the period boundary.
//! - **Discontinuities.** Timestamps restart, so a new period starts at the end of the previous
//!   period's last segment, with the new timeline's `presentationTimeOffset`.
//! - **Access tokens.** Players do not resend headers, so the caller's `uri_query` rides on every
//!   URL we write (BaseURL, initialization, media). It is percent-encoded where a query may not
//!   hold a byte literally, `$` included (a `$` in a template attribute starts an identifier),
//!   and then XML-escaped like every attribute value.
//! - **Durations** are `xs:duration` seconds with up to nine decimals, trailing zeros trimmed:
//!   `Period@start` agrees with the tick timeline to the nanosecond.
//!
//! Invariants: `render_mpd` writes well-formed XML for any model (every attribute value and text
//! node is escaped); within a period, the n-th `S` (after expanding `@r`) is the segment with MSN
//! `startNumber + n`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// The DASH profiles we conform to: live (SegmentTemplate) and CMAF.
pub const PROFILES: &str = "urn:mpeg:dash:profile:isoff-live:2011,urn:mpeg:dash:profile:cmaf:2019";

/// A whole media presentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub kind: ManifestKind,
    /// In presentation order; each period's `start` is at or after the previous one's end.
    pub periods: Vec<Period>,
    /// `MPD@minBufferTime`: how much a player must buffer before it starts; the longest segment
    /// is a safe value for segments that each start with a key frame.
    pub min_buffer_time: Duration,
    /// `MPD@maxSegmentDuration`, when known.
    pub max_segment_duration: Option<Duration>,
    /// An optional `BaseURL` (absolute, or relative to the MPD); the URI query is appended.
    pub base_url: Option<String>,
}

/// Static (a finished recording) or dynamic (a recording still growing, for DVR).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    Static {
        /// `MPD@mediaPresentationDuration`: the end of the last period's last segment.
        duration: Duration,
    },
    Dynamic {
        /// `MPD@availabilityStartTime`: the wall-clock instant of presentation time 0.
        availability_start: SystemTime,
        /// `MPD@publishTime`: when this version of the manifest was made.
        publish_time: SystemTime,
        /// `MPD@minimumUpdatePeriod`: how soon a player should fetch the manifest again.
        minimum_update_period: Duration,
        /// `MPD@timeShiftBufferDepth`: how far back a player may seek (the DVR window); `None`
        /// keeps the whole recording seekable.
        time_shift_buffer_depth: Option<Duration>,
    },
}

/// One period: a run of consecutive MSNs on one continuous timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Period {
    /// `Period@id`, unique in the manifest and stable across updates of a dynamic one.
    pub id: String,
    /// `Period@start` on the presentation timeline.
    pub start: Duration,
    /// One per rendition, in the order players should list them (`source` first).
    pub representations: Vec<Representation>,
}

/// A frame rate as a fraction (`30`, `30000/1001`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRate {
    pub num: u32,
    pub den: u32,
}

/// One rendition within one period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Representation {
    /// `Representation@id`: the rendition name (`source`, `480p`).
    pub id: String,
    /// Peak bits per second (`@bandwidth`, required by DASH).
    pub bandwidth: u64,
    /// RFC 6381 codecs of every track in the segments, comma-separated
    /// (`avc1.64001f,mp4a.40.2`).
    pub codecs: String,
    /// Picture size; a representation with a picture is a video (or muxed) one.
    pub video: Option<VideoInfo>,
    /// `@audioSamplingRate`, when the segments carry audio.
    pub audio_sampling_rate: Option<u32>,
    /// Init segment URI, relative to the MPD (or BaseURL); no template identifiers.
    pub init_uri: String,
    /// Media URI template with `$Number$` (`source/seg-$Number$.m4s`).
    pub media_template: String,
    /// Ticks per second of the timeline (the declared track's `mdhd` timescale).
    pub timescale: u32,
    /// The period's segments, MSNs consecutive, times in `timescale`.
    pub segments: Vec<TimelineSegment>,
}

/// The picture of a video (or muxed) representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<FrameRate>,
}

/// One media segment of a representation's timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSegment {
    pub msn: u64,
    /// Decode time of the first sample of the declared track (`tfdt`), in the timescale.
    pub start: u64,
    /// Ticks until the next segment's start.
    pub duration: u64,
}

/// One recorded segment, as [`plan_periods`] sees it (one reference rendition's list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedSegment {
    pub msn: u64,
    /// `tfdt` of the declared track, in the timescale given to [`plan_periods`].
    pub start: u64,
    pub duration: u64,
    /// The publisher reconnected before this segment: its timestamps do not follow on.
    pub discontinuity: bool,
    /// The init segment it needs. A period has one init segment per representation, so a change
    /// starts a period; with several renditions, pass a number that changes whenever any
    /// rendition's init version does.
    pub init_version: u32,
}

/// Where a period begins and which segments it holds, from [`plan_periods`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodPlan {
    /// `Period@start` on the presentation timeline.
    pub start: Duration,
    /// Consecutive MSNs, the first one is the period's `startNumber`.
    pub segments: Vec<TimelineSegment>,
    /// The init version of all its segments.
    pub init_version: u32,
}

impl PeriodPlan {
    /// The presentation time just after the period's last segment.
    pub fn end(&self, timescale: u32) -> Duration {
        let media = match (self.segments.first(), self.segments.last()) {
            (Some(first), Some(last)) => (last.start + last.duration).saturating_sub(first.start),
            _ => 0,
        };
        self.start + ticks_to_duration(media, timescale)
    }
}

/// Cut a recorded segment list (MSN order, gaps being missing MSNs) into periods: a new one at
/// each discontinuity (starting where the previous one ends), after each gap and at each init
/// change (starting where its media starts, `start - first start` after the current period's
/// origin, so a hole stays a hole). Segments out of MSN order or going back in time also start
/// a new period, where the previous one ends.
pub fn plan_periods(segments: &[RecordedSegment], timescale: u32) -> Vec<PeriodPlan> {
    let mut plans: Vec<PeriodPlan> = Vec::new();
    // The current period's first and last segments.
    let mut bounds: Option<(TimelineSegment, TimelineSegment)> = None;
    for s in segments {
        let seg = TimelineSegment { msn: s.msn, start: s.start, duration: s.duration };
        let (start, first) = match (bounds, plans.last_mut()) {
            (Some((first, last)), Some(cur)) => {
                let same_init = s.init_version == cur.init_version;
                if s.msn == last.msn + 1 && !s.discontinuity && same_init && s.start >= last.start {
                    cur.segments.push(seg);
                    bounds = Some((first, seg));
                    continue;
                }
                let start = if !s.discontinuity && s.msn > last.msn && s.start >= last.start + last.duration {
                    // Same timeline (a gap, a new init): keep any hole.
                    cur.start + ticks_to_duration(s.start - first.start, timescale)
                } else {
                    cur.end(timescale)
                };
                (start, seg)
            }
            _ => (Duration::ZERO, seg),
        };
        plans.push(PeriodPlan { start, segments: vec![seg], init_version: s.init_version });
        bounds = Some((first, seg));
    }
    plans
}

/// Ticks to a `Duration`, exact to the nanosecond (rounded down).
pub fn ticks_to_duration(ticks: u64, timescale: u32) -> Duration {
    if timescale == 0 {
        return Duration::ZERO;
    }
    let ts = u64::from(timescale);
    let nanos = (u128::from(ticks % ts) * 1_000_000_000 / u128::from(ts)) as u32;
    Duration::new(ticks / ts, nanos)
}

/// Bytes percent-encoded in the URI query: those RFC 3986 §3.4 does not allow literally in a
/// query, and `$`, which starts a template identifier in `@media` and `@initialization`
/// (§5.3.9.4.4). `%` is left alone: the query is already encoded.
const QUERY: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'$');

/// Append the (encoded) query to a URI with `?` or `&`, before any fragment.
fn with_query(uri: &str, query: &str) -> String {
    if query.is_empty() {
        return uri.to_owned();
    }
    let (base, fragment) = uri.split_at(uri.find('#').unwrap_or(uri.len()));
    let sep = match base.find('?') {
        None => "?",
        Some(i) if i + 1 == base.len() || base.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{base}{sep}{query}{fragment}")
}

/// `$` doubled: a literal `$` in a URI that DASH reads as a template (§5.3.9.4.4).
fn template_literal(s: &str) -> String {
    s.replace('$', "$$")
}

/// XML attribute value or text escaped (XML 1.0 §2.4); C0 controls other than tab, LF and CR
/// cannot appear in XML 1.0 at all and are dropped.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// `xs:duration` in seconds (`PT12.5S`, `PT0S`).
fn xs_duration(d: Duration) -> String {
    let mut s = format!("PT{}", d.as_secs());
    if d.subsec_nanos() != 0 {
        let frac = format!("{:09}", d.subsec_nanos());
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('S');
    s
}

/// `xs:dateTime` in UTC with milliseconds (`2026-12-04T11:46:43.123Z`).
fn xs_date_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Render the manifest. `uri_query` (an access token, `token=abc`) is appended to every URL.
pub fn render_mpd(m: &Manifest, uri_query: &str) -> String {
    let query = utf8_percent_encode(uri_query, QUERY).to_string();
    let mut x = String::with_capacity(1024 + 256 * m.periods.len());
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\"");
    attr(&mut x, "profiles", PROFILES);
    match &m.kind {
        ManifestKind::Static { duration } => {
            attr(&mut x, "type", "static");
            attr(&mut x, "mediaPresentationDuration", &xs_duration(*duration));
        }
        ManifestKind::Dynamic {
            availability_start,
            publish_time,
            minimum_update_period,
            time_shift_buffer_depth,
        } => {
            attr(&mut x, "type", "dynamic");
            attr(&mut x, "availabilityStartTime", &xs_date_time(*availability_start));
            attr(&mut x, "publishTime", &xs_date_time(*publish_time));
            attr(&mut x, "minimumUpdatePeriod", &xs_duration(*minimum_update_period));
            if let Some(depth) = time_shift_buffer_depth {
                attr(&mut x, "timeShiftBufferDepth", &xs_duration(*depth));
            }
        }
    }
    if let Some(max) = m.max_segment_duration {
        attr(&mut x, "maxSegmentDuration", &xs_duration(max));
    }
    attr(&mut x, "minBufferTime", &xs_duration(m.min_buffer_time));
    x.push_str(">\n");
    if let Some(base) = &m.base_url {
        let _ = writeln!(x, "  <BaseURL>{}</BaseURL>", xml_escape(&with_query(base, &query)));
    }
    for p in &m.periods {
        render_period(&mut x, p, &query);
    }
    x.push_str("</MPD>\n");
    x
}

/// ` name="value"`, the value escaped.
fn attr(x: &mut String, name: &str, value: &str) {
    let _ = write!(x, " {name}=\"{}\"", xml_escape(value));
}

fn render_period(x: &mut String, p: &Period, query: &str) {
    x.push_str("  <Period");
    attr(x, "id", &p.id);
    attr(x, "start", &xs_duration(p.start));
    x.push_str(">\n");
    // One AdaptationSet per content type, so ABR switches only between like representations;
    // ids are fixed per type so dash.js matches sets across periods.
    let sets = [(0, "video/mp4", "video"), (1, "audio/mp4", "audio")];
    for (set_id, mime, content_type) in sets {
        let reps: Vec<&Representation> =
            p.representations.iter().filter(|r| r.video.is_some() == (content_type == "video")).collect();
        if reps.is_empty() {
            continue;
        }
        x.push_str("    <AdaptationSet");
        attr(x, "id", &set_id.to_string());
        attr(x, "mimeType", mime);
        attr(x, "segmentAlignment", "true");
        attr(x, "startWithSAP", "1");
        x.push_str(">\n");
        for r in reps {
            render_representation(x, r, query);
        }
        x.push_str("    </AdaptationSet>\n");
    }
    x.push_str("  </Period>\n");
}

fn render_representation(x: &mut String, r: &Representation, query: &str) {
    x.push_str("      <Representation");
    attr(x, "id", &r.id);
    attr(x, "bandwidth", &r.bandwidth.to_string());
    attr(x, "codecs", &r.codecs);
    if let Some(v) = &r.video {
        attr(x, "width", &v.width.to_string());
        attr(x, "height", &v.height.to_string());
        // dash.js 5.2.1 checks a video representation with Media Capabilities
        // (`decodingInfo`) when it knows width, height, bandwidth *and* frame rate, and
        // Chromium 156 refuses a video `contentType` with two codecs ("Failed to parse video
        // contentType"), so dash.js drops the muxed representation: "No streams to play".
        // Without `@frameRate` it asks `MediaSource.isTypeSupported`, which accepts both
        // codecs. So a muxed representation goes without `@frameRate` (it is optional).
        let muxed = r.codecs.contains(',');
        if let Some(f) = v.frame_rate.filter(|_| !muxed) {
            let rate = if f.den == 1 { f.num.to_string() } else { format!("{}/{}", f.num, f.den) };
            attr(x, "frameRate", &rate);
        }
    }
    if let Some(rate) = r.audio_sampling_rate {
        attr(x, "audioSamplingRate", &rate.to_string());
    }
    x.push_str(">\n        <SegmentTemplate");
    attr(x, "timescale", &r.timescale.to_string());
    let first = r.segments.first();
    attr(x, "presentationTimeOffset", &first.map_or(0, |s| s.start).to_string());
    attr(x, "startNumber", &first.map_or(1, |s| s.msn).to_string());
    attr(x, "initialization", &with_query(&template_literal(&r.init_uri), query));
    attr(x, "media", &with_query(&r.media_template, query));
    x.push_str(">\n          <SegmentTimeline>\n");
    render_timeline(x, &r.segments);
    x.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n");
}

/// `S` elements: `@t` on the first and wherever time does not follow on from the previous
/// segment's end, `@r` for runs of equal durations.
fn render_timeline(x: &mut String, segments: &[TimelineSegment]) {
    let mut i = 0;
    let mut expected_start: Option<u64> = None;
    while i < segments.len() {
        let s = segments[i];
        let mut run = 1;
        while let Some(n) = segments.get(i + run) {
            let prev = segments[i + run - 1];
            if n.duration != s.duration || n.start != prev.start + prev.duration {
                break;
            }
            run += 1;
        }
        x.push_str("            <S");
        if expected_start != Some(s.start) {
            attr(x, "t", &s.start.to_string());
        }
        attr(x, "d", &s.duration.to_string());
        if run > 1 {
            attr(x, "r", &(run - 1).to_string());
        }
        x.push_str("/>\n");
        let last = segments[i + run - 1];
        expected_start = Some(last.start + last.duration);
        i += run;
    }
}

#[cfg(test)]
mod tests;
