//! The journal of one recorded rendition: an append-only text file, one line per fact, written
//! only after the media it names is in its file. It is the recording's source of truth: the
//! playlists (served while recording, written as files when it ends) are rendered from it, a
//! restarted writer continues where it says, and after a crash the recovery truncates media to
//! what it names. Pure: lines in, an index out; no files here.
//!
//! Lines (space-separated, ASCII):
//! - `I <version> <codecs> <width>x<height>|- <fps>|-`: init segment `init-<version>.mp4` is
//!   written (to a temporary name, then renamed).
//! - `S <msn> <program date time, unix ms> <discontinuity 0|1> <init version> <gap 0|1> <start>|-
//!   <shift>`: segment `seg-<msn>.m4s` starts (a gap segment has no file); `start` is the
//!   presentation time of its first video sample (`tfdt` plus its composition offset, 90 kHz; the
//!   audio's, in its sample rate, without video) and `shift` that offset (B-frames): the timeline
//!   of the DASH manifest.
//! - `P <msn> <duration ns> <independent 0|1> <end offset>`: a part of segment `msn` is appended;
//!   the segment file is `end offset` bytes long with it.
//! - `E <msn> <video frames>`: the segment is complete (and flushed, under `sync = "segment"`).
//!
//! A torn last line (a crash in the middle of an append) and anything after it that does not
//! parse is ignored by [`RecordedRendition::replay`], which says how much of the text is valid.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The journal's file name in a rendition's directory.
pub const JOURNAL: &str = "journal";

pub fn init_file(version: u32) -> String {
    format!("init-{version}.mp4")
}

pub fn segment_file(msn: u64) -> String {
    format!("seg-{msn}.m4s")
}

/// One journal line.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Init {
        version: u32,
        codecs: String,
        resolution: Option<(u32, u32)>,
        frame_rate: Option<f64>,
    },
    Segment {
        msn: u64,
        pdt_ms: i64,
        discontinuity: bool,
        init_version: u32,
        gap: bool,
        start: Option<u64>,
        shift: u64,
    },
    Part {
        msn: u64,
        duration: Duration,
        independent: bool,
        end: u64,
    },
    End {
        msn: u64,
        video_frames: u32,
    },
}

impl Entry {
    /// The line, with its newline.
    pub fn line(&self) -> String {
        let b = |v: bool| u8::from(v);
        let mut s = String::with_capacity(48);
        let _ = match self {
            Entry::Init { version, codecs, resolution, frame_rate } => {
                let res = resolution.map_or("-".to_owned(), |(w, h)| format!("{w}x{h}"));
                let fps = frame_rate.map_or("-".to_owned(), |f| format!("{f:.3}"));
                // Codec strings never hold spaces (RFC 6381); be safe anyway.
                writeln!(s, "I {version} {} {res} {fps}", codecs.replace(' ', ""))
            }
            Entry::Segment { msn, pdt_ms, discontinuity, init_version, gap, start, shift } => {
                let start = start.map_or("-".to_owned(), |t| t.to_string());
                writeln!(
                    s,
                    "S {msn} {pdt_ms} {} {init_version} {} {start} {shift}",
                    b(*discontinuity),
                    b(*gap)
                )
            }
            Entry::Part { msn, duration, independent, end } => {
                writeln!(s, "P {msn} {} {} {end}", duration.as_nanos(), b(*independent))
            }
            Entry::End { msn, video_frames } => writeln!(s, "E {msn} {video_frames}"),
        };
        s
    }

    /// Parse one line (without its newline); `None` when it is not a whole, valid line.
    pub fn parse(line: &str) -> Option<Entry> {
        let f: Vec<&str> = line.split(' ').collect();
        let flag = |s: &str| match s {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        match (f.first().copied()?, f.len()) {
            ("I", 5) => Some(Entry::Init {
                version: f[1].parse().ok()?,
                codecs: f[2].to_owned(),
                resolution: match f[3] {
                    "-" => None,
                    r => {
                        let (w, h) = r.split_once('x')?;
                        Some((w.parse().ok()?, h.parse().ok()?))
                    }
                },
                frame_rate: match f[4] {
                    "-" => None,
                    r => Some(r.parse().ok().filter(|v: &f64| v.is_finite())?),
                },
            }),
            ("S", 8) => Some(Entry::Segment {
                msn: f[1].parse().ok()?,
                pdt_ms: f[2].parse().ok()?,
                discontinuity: flag(f[3])?,
                init_version: f[4].parse().ok()?,
                gap: flag(f[5])?,
                start: match f[6] {
                    "-" => None,
                    t => Some(t.parse().ok()?),
                },
                shift: f[7].parse().ok()?,
            }),
            ("P", 5) => Some(Entry::Part {
                msn: f[1].parse().ok()?,
                duration: Duration::from_nanos(f[2].parse().ok()?),
                independent: flag(f[3])?,
                end: f[4].parse().ok()?,
            }),
            ("E", 3) => Some(Entry::End { msn: f[1].parse().ok()?, video_frames: f[2].parse().ok()? }),
            _ => None,
        }
    }
}

/// An init segment's facts.
#[derive(Clone, Debug, PartialEq)]
pub struct InitInfo {
    pub version: u32,
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
}

/// One recorded segment.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentInfo {
    pub msn: u64,
    pub program_date_time: SystemTime,
    pub discontinuity: bool,
    pub init_version: u32,
    pub gap: bool,
    /// Presentation time of its first video sample, when known.
    pub start: Option<u64>,
    /// How much later than decoded that sample is shown (B-frames), in the same ticks.
    pub shift: u64,
    /// The sum of its parts' durations.
    pub duration: Duration,
    /// Bytes in its file (the last part's end offset).
    pub bytes: u64,
    pub parts: u32,
    /// The first part starts on a key frame (always, for segments the packager cut).
    pub independent: bool,
    /// `E` seen; a segment without it is the one being made (or a crash's, until recovery).
    pub complete: bool,
    pub video_frames: u32,
}

/// One rendition as its journal describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedRendition {
    pub inits: Vec<InitInfo>,
    pub segments: Vec<SegmentInfo>,
}

impl RecordedRendition {
    /// The index of a journal's text, and where its last valid line ends (what a recovery keeps:
    /// a torn last line goes). A line that does not parse or does not fit what came before (a
    /// part of a segment that never started, say) is skipped: every line stands on its own, so
    /// one torn by a failed append in the middle costs that line only.
    pub fn replay(text: &str) -> (RecordedRendition, usize) {
        let mut r = RecordedRendition::default();
        let (mut at, mut valid) = (0, 0);
        for line in text.split_inclusive('\n') {
            at += line.len();
            let Some(body) = line.strip_suffix('\n') else { break };
            if Entry::parse(body).is_some_and(|e| r.apply(&e)) {
                valid = at;
            }
        }
        (r, valid)
    }

    /// Apply one entry; `false` (and no change) when it does not fit what came before.
    pub fn apply(&mut self, e: &Entry) -> bool {
        match e {
            Entry::Init { version, codecs, resolution, frame_rate } => {
                self.inits.retain(|i| i.version != *version);
                self.inits.push(InitInfo {
                    version: *version,
                    codecs: codecs.clone(),
                    resolution: *resolution,
                    frame_rate: *frame_rate,
                });
            }
            Entry::Segment { msn, pdt_ms, discontinuity, init_version, gap, start, shift } => {
                if self.segments.last().is_some_and(|s| s.msn >= *msn) {
                    return false;
                }
                // A segment left open (its writer lost it: storage trouble, the live window
                // moved on) ends with the parts it has.
                if let Some(open) = self.segments.last_mut().filter(|s| !s.complete) {
                    open.complete = true;
                }
                self.segments.push(SegmentInfo {
                    msn: *msn,
                    program_date_time: UNIX_EPOCH + Duration::from_millis((*pdt_ms).max(0) as u64),
                    discontinuity: *discontinuity,
                    init_version: *init_version,
                    gap: *gap,
                    start: *start,
                    shift: *shift,
                    duration: Duration::ZERO,
                    bytes: 0,
                    parts: 0,
                    independent: false,
                    complete: *gap,
                    video_frames: 0,
                });
            }
            Entry::Part { msn, duration, independent, end } => {
                let Some(s) = self.segments.last_mut().filter(|s| s.msn == *msn && !s.complete) else {
                    return false;
                };
                if *end < s.bytes {
                    return false;
                }
                if s.parts == 0 {
                    s.independent = *independent;
                }
                s.parts += 1;
                s.duration += *duration;
                s.bytes = *end;
            }
            Entry::End { msn, video_frames } => {
                let Some(s) = self.segments.last_mut().filter(|s| s.msn == *msn && !s.complete) else {
                    return false;
                };
                s.complete = true;
                s.video_frames = *video_frames;
            }
        }
        true
    }

    /// Segments with media or gaps to list: complete ones (a trailing open one only with
    /// `include_open`, as a finished recording lists what it has), never an empty one.
    pub fn listed(&self, include_open: bool) -> impl Iterator<Item = &SegmentInfo> {
        self.segments.iter().filter(move |s| (s.complete || include_open) && (s.gap || s.parts > 0))
    }

    /// Total duration of the listed segments (gaps included: they are time the stream had).
    pub fn duration(&self, include_open: bool) -> Duration {
        self.listed(include_open).map(|s| s.duration).sum()
    }

    /// Media bytes (segments; init segments are a few hundred bytes).
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The newest init segment's facts (codecs, size, frame rate for the multivariant).
    pub fn current_init(&self) -> Option<&InitInfo> {
        self.inits.last()
    }

    /// The video frame rate for the multivariant playlist: frames over time across the complete
    /// segments of the newest init, rounded to 1/1000. The init's line holds the packager's first
    /// estimate (from the first frame intervals, 29.678 for a 30 fps source is typical), which
    /// only stands in until a segment is complete.
    pub fn frame_rate(&self) -> Option<f64> {
        let init = self.current_init()?;
        let (frames, secs) = self
            .segments
            .iter()
            .filter(|s| s.complete && !s.gap && s.init_version == init.version && s.video_frames > 0)
            .fold((0u64, 0f64), |(f, d), s| (f + u64::from(s.video_frames), d + s.duration.as_secs_f64()));
        if frames > 0 && secs > 0.0 {
            Some((frames as f64 / secs * 1000.0).round() / 1000.0)
        } else {
            init.frame_rate
        }
    }

    /// Peak and average bitrate (bits per second) over complete segments with media.
    pub fn bandwidth(&self) -> (u64, u64) {
        let (mut peak, mut bytes, mut secs) = (0u64, 0u64, 0f64);
        for s in self.segments.iter().filter(|s| s.complete && !s.gap && s.parts > 0) {
            let d = s.duration.as_secs_f64();
            if d > 0.0 {
                peak = peak.max((s.bytes as f64 * 8.0 / d) as u64);
                bytes += s.bytes;
                secs += d;
            }
        }
        let avg = if secs > 0.0 { (bytes as f64 * 8.0 / secs) as u64 } else { 0 };
        (peak, avg)
    }

    /// The longest listed segment (the target duration of its playlist).
    pub fn longest_segment(&self) -> Duration {
        self.listed(true).map(|s| s.duration).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(entries: &[Entry]) -> String {
        entries.iter().map(Entry::line).collect()
    }

    fn start(msn: u64, disc: bool) -> Entry {
        Entry::Segment {
            msn,
            pdt_ms: 1_700_000_000_000 + msn as i64 * 2000,
            discontinuity: disc,
            init_version: 0,
            gap: false,
            start: Some(msn * 180_000),
            shift: 0,
        }
    }

    fn part(msn: u64, ms: u64, end: u64) -> Entry {
        Entry::Part { msn, duration: Duration::from_millis(ms), independent: true, end }
    }

    #[test]
    fn every_entry_round_trips_through_its_line() {
        let entries = [
            Entry::Init {
                version: 2,
                codecs: "avc1.64001f,mp4a.40.2".into(),
                resolution: Some((1280, 720)),
                frame_rate: Some(29.97),
            },
            Entry::Init { version: 3, codecs: "mp4a.40.2".into(), resolution: None, frame_rate: None },
            Entry::Segment {
                msn: 7,
                pdt_ms: 1_700_000_000_123,
                discontinuity: true,
                init_version: 2,
                gap: false,
                start: Some(1 << 33),
                shift: 6006,
            },
            Entry::Segment {
                msn: 8,
                pdt_ms: 1,
                discontinuity: false,
                init_version: 2,
                gap: true,
                start: None,
                shift: 0,
            },
            Entry::Part {
                msn: 7,
                duration: Duration::from_nanos(333_333_333),
                independent: false,
                end: 81_920,
            },
            Entry::End { msn: 7, video_frames: 60 },
        ];
        for e in entries {
            let line = e.line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(Entry::parse(line.trim_end_matches('\n')), Some(e));
        }
        for bad in ["", "S 1 2 3", "P 1 x 1 5", "E 1 2 3", "S 1 2 2 0 0 - 0", "I 0 avc1 12x 30.000", "Z 1"] {
            assert_eq!(Entry::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn replay_indexes_segments_and_stops_at_a_torn_line() {
        let mut text = journal(&[
            Entry::Init {
                version: 0,
                codecs: "avc1.64001f".into(),
                resolution: Some((640, 360)),
                frame_rate: Some(30.0),
            },
            start(0, false),
            part(0, 1000, 100),
            part(0, 1000, 250),
            Entry::End { msn: 0, video_frames: 60 },
            start(1, false),
            part(1, 500, 40),
        ]);
        let whole = text.len();
        text.push_str("P 1 500000000 0 9"); // torn: no newline
        let (r, valid) = RecordedRendition::replay(&text);
        assert_eq!(valid, whole, "the torn line is not valid");
        assert_eq!(r.segments.len(), 2);
        assert!(r.segments[0].complete && !r.segments[1].complete);
        assert_eq!(
            (r.segments[0].duration, r.segments[0].bytes, r.segments[0].parts),
            (Duration::from_secs(2), 250, 2)
        );
        assert_eq!(r.segments[1].bytes, 40);
        assert_eq!(r.listed(false).count(), 1, "the open segment is listed only when asked");
        assert_eq!(r.duration(true), Duration::from_millis(2500));
        assert_eq!(r.bandwidth(), (1000, 1000));
        assert_eq!(r.frame_rate(), Some(30.0), "60 frames in 2 s");
    }

    #[test]
    fn the_frame_rate_is_measured_over_the_recording_not_taken_from_the_first_estimate() {
        let init = |version| Entry::Init {
            version,
            codecs: "avc1.64001f".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(29.678),
        };
        let seg = |msn: u64, ms: u64, frames: u32| {
            let mut s = start(msn, false);
            if let Entry::Segment { init_version, .. } = &mut s {
                *init_version = if msn < 3 { 0 } else { 1 };
            }
            vec![s, part(msn, ms, 100), Entry::End { msn, video_frames: frames }]
        };
        let (r, _) = RecordedRendition::replay(&journal(&[init(0)]));
        assert_eq!(r.frame_rate(), Some(29.678), "no segment yet: the estimate");
        // Segments of 2.067 s and 1.933 s (key frames where they fall): 62 + 58 frames in 4 s.
        let mut entries = vec![init(0)];
        entries.extend(seg(0, 2067, 62));
        entries.extend(seg(1, 1933, 58));
        let (r, _) = RecordedRendition::replay(&journal(&entries));
        assert_eq!(r.frame_rate(), Some(30.0));
        // A new init (the publisher came back at 25 fps): its own segments only.
        entries.push(init(1));
        entries.extend(seg(3, 2000, 50));
        let (r, _) = RecordedRendition::replay(&journal(&entries));
        assert_eq!(r.frame_rate(), Some(25.0));
    }

    #[test]
    fn replay_refuses_entries_that_do_not_fit_and_closes_an_abandoned_segment() {
        // A part for a segment that never started, an offset going backwards, an MSN reused.
        for bad in [
            vec![part(3, 100, 10)],
            vec![start(0, false), part(0, 100, 10), part(0, 100, 5)],
            vec![start(2, false), start(2, false)],
        ] {
            let text = journal(&bad);
            let (_, valid) = RecordedRendition::replay(&text);
            assert!(valid < text.len(), "{bad:?}");
        }
        // A writer that lost its segment (storage trouble) starts the next after a discontinuity:
        // the abandoned one ends with the parts it has, an empty one is not listed.
        let text =
            journal(&[start(0, false), part(0, 300, 10), start(4, true), start(5, false), part(5, 200, 20)]);
        let (r, valid) = RecordedRendition::replay(&text);
        assert_eq!(valid, text.len());
        let listed: Vec<(u64, bool)> = r.listed(false).map(|s| (s.msn, s.discontinuity)).collect();
        assert_eq!(listed, vec![(0, false)]);
        let listed: Vec<u64> = r.listed(true).map(|s| s.msn).collect();
        assert_eq!(listed, vec![0, 5]);
        // A line torn by a failed append in the middle is skipped, the lines after it count.
        let text = format!("{}P 0 12\n{}", start(0, false).line(), part(0, 1, 2).line());
        let (r, valid) = RecordedRendition::replay(&text);
        assert_eq!((r.segments[0].parts, valid), (1, text.len()));
    }
}
