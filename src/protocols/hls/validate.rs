//! A structural LL-HLS playlist checker and reader: [`validate_media_playlist`],
//! [`parse_media_playlist`], [`check_reload_continuity`] and [`validate_multivariant`].
//!
//! Test support, not part of the serving path: nothing in the server parses or validates the
//! playlists it serves. The unit tests hold the renderer to it, and the integration tests
//! (`tests/hls_live.rs`, `tests/hevc_live.rs`, `tests/common/mod.rs`) use it as an oracle on
//! what a running server answers, which is why it is public and compiled into the library.
//!
//! Spec: draft-pantos-hls-rfc8216bis §4.2 (attribute lists, decimal types), §4.4 (tags and their
//! placement), §6.2.1 and §6.2.2 (live playlist rules), §6.2.5.1 (delta updates), §8 (versions).
//!
//! Invariant: every violation is reported (not just the first), each message starting with a
//! rule tag in brackets so tests assert on the rule, not the prose.

use std::time::{Duration, SystemTime};

use super::model::{VERSION_DECIMAL_EXTINF, VERSION_GAP, VERSION_MAP, VERSION_SKIP};

/// A media playlist as the validator read it. Sequence numbers are computed, not read: `msn` of a
/// segment is `EXT-X-MEDIA-SEQUENCE + SKIPPED-SEGMENTS + index`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedMediaPlaylist {
    pub version: Option<u32>,
    pub target_duration: Option<u64>,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub part_target: Option<f64>,
    pub can_block_reload: bool,
    pub part_hold_back: Option<f64>,
    pub can_skip_until: Option<f64>,
    pub skipped_segments: u64,
    /// Complete segments, in order.
    pub segments: Vec<ParsedSegment>,
    /// Parts after the last `EXTINF`: the segment in progress, MSN `next_msn()`.
    pub trailing_parts: Vec<ParsedPart>,
    pub preload_hints: Vec<String>,
    pub rendition_reports: Vec<ParsedRenditionReport>,
    pub ended: bool,
}

impl ParsedMediaPlaylist {
    /// MSN of the segment after the last complete one (the one the trailing parts belong to).
    pub fn next_msn(&self) -> u64 {
        self.media_sequence + self.skipped_segments + self.segments.len() as u64
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedSegment {
    pub msn: u64,
    pub duration: f64,
    pub uri: String,
    pub discontinuity: bool,
    pub map_uri: Option<String>,
    pub program_date_time: Option<SystemTime>,
    pub parts: Vec<ParsedPart>,
    /// Marked `EXT-X-GAP`.
    pub gap: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedPart {
    pub duration: f64,
    pub uri: String,
    pub independent: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedRenditionReport {
    pub uri: String,
    pub last_msn: Option<u64>,
    pub last_part: Option<u64>,
}

/// Slack for comparing durations written with five truncated decimals.
const PART_TOLERANCE_SECS: f64 = 1e-6;
/// Slack for a segment's `EXTINF` against the sum of its parts, plus 10 µs per part (truncation).
const SUM_TOLERANCE_SECS: f64 = 1e-3;
/// §6.2.1 MAY: "small (sub-second) overlaps" between successive program date-times.
const PDT_OVERLAP_SECS: f64 = 1.0;

/// Structural LL-HLS checks on a rendered media playlist; returns every violation found.
///
/// Each message starts with a rule tag in brackets (`[part-duration]`, `[skip]`, ...) followed by
/// the line number, so tests can assert on the rule without matching prose. Rules: `extm3u`,
/// `syntax`, `version`, `target-duration`, `extinf-over-target`, `part-inf`, `part-duration`,
/// `server-control`, `part-hold-back`, `can-skip-until`, `part-sum`, `preload-hint`, `skip`,
/// `msn`, `independent`, `pdt`, `rendition-report`, `map`, `discontinuity-sequence`, `endlist`.
pub fn validate_media_playlist(text: &str) -> Result<(), Vec<String>> {
    parse_media_playlist(text).map(|_| ())
}

/// [`validate_media_playlist`], returning what was read when the playlist is valid.
pub fn parse_media_playlist(text: &str) -> Result<ParsedMediaPlaylist, Vec<String>> {
    let mut v = MediaValidator::default();
    v.run(text);
    if v.errors.is_empty() {
        Ok(v.pl)
    } else {
        Err(v.errors)
    }
}

/// Checks between two successive versions of one media playlist (e.g. two reloads): MSNs and
/// discontinuity sequence numbers never go back, the target duration never changes, and a segment
/// present in both has the same URI and duration (§6.2.1, §6.2.2).
pub fn check_reload_continuity(
    prev: &ParsedMediaPlaylist,
    next: &ParsedMediaPlaylist,
) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if next.media_sequence < prev.media_sequence {
        errors.push(format!(
            "[msn] EXT-X-MEDIA-SEQUENCE went back from {} to {}",
            prev.media_sequence, next.media_sequence
        ));
    }
    if next.discontinuity_sequence < prev.discontinuity_sequence {
        errors.push(format!(
            "[discontinuity-sequence] went back from {} to {}",
            prev.discontinuity_sequence, next.discontinuity_sequence
        ));
    }
    if prev.target_duration != next.target_duration {
        errors.push(format!(
            "[target-duration] changed from {:?} to {:?}",
            prev.target_duration, next.target_duration
        ));
    }
    if next.next_msn() < prev.next_msn() {
        errors.push(format!("[msn] live edge went back from {} to {}", prev.next_msn(), next.next_msn()));
    }
    for seg in &next.segments {
        if let Some(old) = prev.segments.iter().find(|s| s.msn == seg.msn) {
            if old.uri != seg.uri || (old.duration - seg.duration).abs() > PART_TOLERANCE_SECS {
                errors.push(format!(
                    "[msn] segment {} changed: {} ({}) became {} ({})",
                    seg.msn, old.uri, old.duration, seg.uri, seg.duration
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Validate a multivariant playlist: `#EXTM3U` first, at least one `EXT-X-STREAM-INF`, each with
/// a decimal-integer `BANDWIDTH` and a quoted `CODECS`, well-formed `RESOLUTION`/`FRAME-RATE`
/// when present, and followed by a URI line; no media playlist tags.
pub fn validate_multivariant(text: &str) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.first().map(|l| l.trim_end()) != Some("#EXTM3U") {
        errors.push("[extm3u] line 1: playlist must start with #EXTM3U".to_owned());
    }
    let mut variants = 0;
    let mut i = 1;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let n = i + 1;
        i += 1;
        if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            variants += 1;
            match parse_attributes(attrs) {
                Err(e) => errors.push(format!("[syntax] line {n}: {e}")),
                Ok(a) => {
                    match attr(&a, "BANDWIDTH") {
                        Some(v) if !v.quoted && is_decimal_integer(&v.value) => {}
                        Some(_) => errors.push(format!("[stream-inf] line {n}: BANDWIDTH is not an integer")),
                        None => errors.push(format!("[stream-inf] line {n}: BANDWIDTH missing")),
                    }
                    if let Some(v) = attr(&a, "AVERAGE-BANDWIDTH") {
                        if v.quoted || !is_decimal_integer(&v.value) {
                            errors
                                .push(format!("[stream-inf] line {n}: AVERAGE-BANDWIDTH is not an integer"));
                        }
                    }
                    match attr(&a, "CODECS") {
                        Some(v) if v.quoted && !v.value.is_empty() => {}
                        _ => errors.push(format!("[stream-inf] line {n}: CODECS missing or not quoted")),
                    }
                    if let Some(v) = attr(&a, "RESOLUTION") {
                        let ok = v
                            .value
                            .split_once('x')
                            .is_some_and(|(w, h)| is_decimal_integer(w) && is_decimal_integer(h));
                        if !ok || v.quoted {
                            errors.push(format!("[stream-inf] line {n}: RESOLUTION is not WxH"));
                        }
                    }
                    if let Some(v) = attr(&a, "FRAME-RATE") {
                        if v.quoted || parse_decimal_float(&v.value).is_none() {
                            errors.push(format!("[stream-inf] line {n}: FRAME-RATE is not a number"));
                        }
                    }
                }
            }
            // The URI is the next line that is neither blank nor a comment/tag.
            match lines[i..].iter().position(|l| !l.trim().is_empty()) {
                Some(off) if !lines[i + off].starts_with('#') => i += off + 1,
                _ => errors.push(format!("[stream-inf] line {n}: no URI line follows")),
            }
        } else if line.starts_with("#EXTINF")
            || line.starts_with("#EXT-X-TARGETDURATION")
            || line.starts_with("#EXT-X-PART")
            || line.starts_with("#EXT-X-MEDIA-SEQUENCE")
        {
            errors.push(format!("[syntax] line {n}: media playlist tag in a multivariant playlist"));
        } else if !line.is_empty() && !line.starts_with('#') {
            errors.push(format!("[syntax] line {n}: URI line without EXT-X-STREAM-INF"));
        }
    }
    if variants == 0 {
        errors.push("[stream-inf] no EXT-X-STREAM-INF".to_owned());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Tags that apply to the next segment, collected until its `EXTINF` (or first part) arrives.
#[derive(Default)]
struct Pending {
    discontinuity: bool,
    map_uri: Option<String>,
    pdt: Option<SystemTime>,
    parts: Vec<ParsedPart>,
    extinf: Option<(f64, usize)>,
    gap: bool,
    /// A tag of this segment has been seen (tags must not dangle before the preload hint).
    any_tag: bool,
}

#[derive(Default)]
struct MediaValidator {
    pl: ParsedMediaPlaylist,
    errors: Vec<String>,
    pending: Pending,
    /// A segment tag, part or URI has been seen (header tags must come before).
    in_body: bool,
    /// A PRELOAD-HINT has been seen (no part or segment may follow).
    hint_line: Option<usize>,
    saw_media_sequence: bool,
    saw_target_duration: bool,
    saw_part_inf: bool,
    saw_server_control: bool,
    saw_skip_line: Option<usize>,
    any_part: bool,
    any_map: bool,
    decimal_extinf: bool,
    /// Last program date-time and the media time elapsed since it.
    last_pdt: Option<(SystemTime, f64)>,
    /// Uris seen, to catch a segment or part listed twice.
    uris: std::collections::HashSet<String>,
    /// `(line, DURATION)` of every part, checked against PART-TARGET at the end.
    part_lines: Vec<(usize, f64)>,
    /// `EXTINF` line of every complete segment, parallel to `pl.segments`.
    segment_lines: Vec<usize>,
}

impl MediaValidator {
    fn err(&mut self, rule: &str, line: usize, msg: impl std::fmt::Display) {
        self.errors.push(format!("[{rule}] line {line}: {msg}"));
    }

    fn run(&mut self, text: &str) {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end()));
        match lines.next() {
            Some((_, "#EXTM3U")) => {}
            _ => self.err("extm3u", 1, "playlist must start with #EXTM3U"),
        }
        for (n, line) in lines {
            if line.is_empty() {
                continue;
            }
            if self.pl.ended {
                self.err("endlist", n, "content after EXT-X-ENDLIST");
            }
            if !line.starts_with('#') {
                self.uri_line(n, line);
                continue;
            }
            let (tag, value) = line.split_once(':').unwrap_or((line, ""));
            match tag {
                "#EXT-X-VERSION" => match value.parse() {
                    Ok(v) if self.pl.version.is_none() => self.pl.version = Some(v),
                    Ok(_) => self.err("version", n, "EXT-X-VERSION repeated"),
                    Err(_) => self.err("version", n, "EXT-X-VERSION is not an integer"),
                },
                "#EXT-X-TARGETDURATION" => {
                    self.header_tag(n, tag);
                    if std::mem::replace(&mut self.saw_target_duration, true) {
                        self.err("target-duration", n, "EXT-X-TARGETDURATION repeated");
                    }
                    match value.parse() {
                        Ok(v) if is_decimal_integer(value) => self.pl.target_duration = Some(v),
                        _ => self.err("target-duration", n, "EXT-X-TARGETDURATION is not an integer"),
                    }
                }
                "#EXT-X-MEDIA-SEQUENCE" => {
                    self.header_tag(n, tag);
                    if std::mem::replace(&mut self.saw_media_sequence, true) {
                        self.err("msn", n, "EXT-X-MEDIA-SEQUENCE repeated");
                    }
                    match value.parse() {
                        Ok(v) if is_decimal_integer(value) => self.pl.media_sequence = v,
                        _ => self.err("msn", n, "EXT-X-MEDIA-SEQUENCE is not an integer"),
                    }
                }
                "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                    if self.in_body {
                        self.err("discontinuity-sequence", n, "must appear before the first segment");
                    }
                    match value.parse() {
                        Ok(v) if is_decimal_integer(value) => self.pl.discontinuity_sequence = v,
                        _ => self.err("discontinuity-sequence", n, "not an integer"),
                    }
                }
                "#EXT-X-PART-INF" => {
                    self.header_tag(n, tag);
                    self.saw_part_inf = true;
                    let a = self.attrs(n, value);
                    match attr(&a, "PART-TARGET").and_then(|v| parse_decimal_float(&v.value)) {
                        Some(t) if t > 0.0 => self.pl.part_target = Some(t),
                        _ => self.err("part-inf", n, "PART-TARGET missing or not a positive number"),
                    }
                }
                "#EXT-X-SERVER-CONTROL" => {
                    self.header_tag(n, tag);
                    self.saw_server_control = true;
                    let a = self.attrs(n, value);
                    self.pl.can_block_reload =
                        attr(&a, "CAN-BLOCK-RELOAD").is_some_and(|v| v.value == "YES" && !v.quoted);
                    self.pl.part_hold_back = self.float_attr(n, &a, "PART-HOLD-BACK", "part-hold-back");
                    self.pl.can_skip_until = self.float_attr(n, &a, "CAN-SKIP-UNTIL", "can-skip-until");
                    if !self.pl.can_block_reload {
                        self.err("server-control", n, "CAN-BLOCK-RELOAD=YES missing");
                    }
                }
                "#EXT-X-SKIP" => {
                    if self.saw_skip_line.is_some() {
                        self.err("skip", n, "EXT-X-SKIP repeated");
                    }
                    if self.in_body {
                        self.err("skip", n, "EXT-X-SKIP must be the first media tag after the header");
                    }
                    self.saw_skip_line = Some(n);
                    let a = self.attrs(n, value);
                    match attr(&a, "SKIPPED-SEGMENTS") {
                        Some(v) if !v.quoted && is_decimal_integer(&v.value) => {
                            self.pl.skipped_segments = v.value.parse().unwrap_or(u64::MAX);
                        }
                        _ => self.err("skip", n, "SKIPPED-SEGMENTS missing or not an integer"),
                    }
                    self.in_body = true;
                }
                "#EXT-X-MAP" => {
                    self.body_tag();
                    self.any_map = true;
                    let a = self.attrs(n, value);
                    match attr(&a, "URI") {
                        Some(u) if u.quoted && !u.value.is_empty() => {
                            self.pending.map_uri = Some(u.value.clone())
                        }
                        _ => self.err("map", n, "EXT-X-MAP without a quoted URI"),
                    }
                    self.check_not_after_parts(n, "EXT-X-MAP");
                }
                "#EXT-X-DISCONTINUITY" => {
                    self.body_tag();
                    self.pending.discontinuity = true;
                    self.check_not_after_parts(n, "EXT-X-DISCONTINUITY");
                }
                "#EXT-X-PROGRAM-DATE-TIME" => {
                    self.body_tag();
                    self.check_not_after_parts(n, "EXT-X-PROGRAM-DATE-TIME");
                    match humantime::parse_rfc3339(value) {
                        Ok(t) => {
                            if let Some((prev, elapsed)) = self.last_pdt {
                                let expected = prev + Duration::from_secs_f64(elapsed);
                                let earliest = expected
                                    .checked_sub(Duration::from_secs_f64(PDT_OVERLAP_SECS))
                                    .unwrap_or(SystemTime::UNIX_EPOCH);
                                if t <= prev || t < earliest {
                                    self.err(
                                        "pdt",
                                        n,
                                        format!("PROGRAM-DATE-TIME {value} goes back in time"),
                                    );
                                }
                            }
                            self.last_pdt = Some((t, 0.0));
                            self.pending.pdt = Some(t);
                        }
                        Err(_) => self.err("pdt", n, format!("unparseable PROGRAM-DATE-TIME {value:?}")),
                    }
                }
                "#EXT-X-PART" => self.part(n, value),
                "#EXTINF" => {
                    self.body_tag();
                    let dur = value.split_once(',').map_or(value, |(d, _)| d);
                    match parse_decimal_float(dur) {
                        Some(d) => {
                            if dur.contains('.') {
                                self.decimal_extinf = true;
                            }
                            if self.pending.extinf.replace((d, n)).is_some() {
                                self.err("syntax", n, "two EXTINF tags for one segment");
                            }
                        }
                        None => self.err("syntax", n, format!("EXTINF duration {dur:?} is not a number")),
                    }
                    if let Some(h) = self.hint_line {
                        self.err("preload-hint", h, "EXT-X-PRELOAD-HINT is followed by a segment");
                    }
                }
                "#EXT-X-PRELOAD-HINT" => {
                    let a = self.attrs(n, value);
                    if !attr(&a, "TYPE").is_some_and(|t| t.value == "PART" || t.value == "MAP") {
                        self.err("preload-hint", n, "TYPE must be PART or MAP");
                    }
                    match attr(&a, "URI") {
                        Some(u) if u.quoted && !u.value.is_empty() => {
                            if self.uris.contains(&u.value) {
                                self.err("preload-hint", n, "hints a resource already listed");
                            }
                            self.pl.preload_hints.push(u.value.clone());
                        }
                        _ => self.err("preload-hint", n, "URI missing or not quoted"),
                    }
                    if self.pl.preload_hints.len() > 1 {
                        self.err("preload-hint", n, "more than one EXT-X-PRELOAD-HINT");
                    }
                    if self.pending.any_tag && self.pending.parts.is_empty() {
                        self.err("preload-hint", n, "segment tags are left dangling before the hint");
                    }
                    self.hint_line.get_or_insert(n);
                }
                "#EXT-X-RENDITION-REPORT" => {
                    let a = self.attrs(n, value);
                    let uri = attr(&a, "URI").filter(|u| u.quoted && !u.value.is_empty());
                    let int = |k: &str| {
                        attr(&a, k)
                            .filter(|v| is_decimal_integer(&v.value))
                            .and_then(|v| v.value.parse().ok())
                    };
                    let report = ParsedRenditionReport {
                        uri: uri.map(|u| u.value.clone()).unwrap_or_default(),
                        last_msn: int("LAST-MSN"),
                        last_part: int("LAST-PART"),
                    };
                    if uri.is_none() {
                        self.err("rendition-report", n, "URI missing or not quoted");
                    }
                    if report.last_msn.is_none() {
                        self.err("rendition-report", n, "LAST-MSN missing or not an integer");
                    }
                    if report.last_part.is_none() && self.saw_part_inf {
                        self.err("rendition-report", n, "LAST-PART missing or not an integer");
                    }
                    self.pl.rendition_reports.push(report);
                }
                "#EXT-X-ENDLIST" => self.pl.ended = true,
                "#EXT-X-GAP" => {
                    self.body_tag();
                    self.pending.gap = true;
                }
                "#EXT-X-INDEPENDENT-SEGMENTS"
                | "#EXT-X-PLAYLIST-TYPE"
                | "#EXT-X-START"
                | "#EXT-X-DEFINE"
                | "#EXT-X-DATERANGE"
                | "#EXT-X-BITRATE"
                | "#EXT-X-KEY"
                | "#EXT-X-BYTERANGE" => {}
                "#EXT-X-STREAM-INF" | "#EXT-X-MEDIA" | "#EXT-X-I-FRAME-STREAM-INF" => {
                    self.err("syntax", n, format!("multivariant tag {tag} in a media playlist"))
                }
                _ => {} // Comments and tags we do not know are ignored, as clients do.
            }
        }
        self.finish();
    }

    fn header_tag(&mut self, n: usize, tag: &str) {
        if self.in_body {
            self.err("syntax", n, format!("{tag} after the first segment"));
        }
    }

    fn body_tag(&mut self) {
        self.in_body = true;
        self.pending.any_tag = true;
    }

    /// Segment-level tags must precede the segment's first part (§4.4.4.9).
    fn check_not_after_parts(&mut self, n: usize, tag: &str) {
        if !self.pending.parts.is_empty() {
            self.err("syntax", n, format!("{tag} after the first EXT-X-PART of its segment"));
        }
    }

    fn attrs(&mut self, n: usize, value: &str) -> Vec<(String, AttrValue)> {
        parse_attributes(value).unwrap_or_else(|e| {
            self.err("syntax", n, e);
            Vec::new()
        })
    }

    fn float_attr(&mut self, n: usize, a: &[(String, AttrValue)], key: &str, rule: &str) -> Option<f64> {
        let v = attr(a, key)?;
        let f = parse_decimal_float(&v.value).filter(|_| !v.quoted);
        if f.is_none() {
            self.err(rule, n, format!("{key} is not a number"));
        }
        f
    }

    fn part(&mut self, n: usize, value: &str) {
        self.body_tag();
        self.any_part = true;
        if let Some(h) = self.hint_line {
            self.err("preload-hint", h, "EXT-X-PRELOAD-HINT is not after the last part");
        }
        if self.pending.extinf.is_some() {
            self.err("syntax", n, "EXT-X-PART between EXTINF and its URI");
        }
        let a = self.attrs(n, value);
        let duration = attr(&a, "DURATION").filter(|v| !v.quoted).and_then(|v| parse_decimal_float(&v.value));
        let uri = attr(&a, "URI").filter(|v| v.quoted && !v.value.is_empty()).map(|v| v.value.clone());
        let independent = attr(&a, "INDEPENDENT").is_some_and(|v| v.value == "YES");
        if duration.is_none() {
            self.err("syntax", n, "EXT-X-PART DURATION missing or not a number");
        }
        let Some(uri) = uri else {
            self.err("syntax", n, "EXT-X-PART URI missing or not quoted");
            return;
        };
        if !self.uris.insert(uri.clone()) {
            self.err("msn", n, format!("{uri} is listed twice"));
        }
        if self.pending.parts.is_empty() && !independent {
            self.err("independent", n, "first part of a segment lacks INDEPENDENT=YES");
        }
        let duration = duration.unwrap_or(0.0);
        self.pending.parts.push(ParsedPart { duration, uri, independent });
        self.pending.any_tag = true;
        // Duration against PART-TARGET is checked at the end, when PART-INF is certainly known.
        self.part_lines.push((n, duration));
    }

    fn uri_line(&mut self, n: usize, uri: &str) {
        self.in_body = true;
        if let Some(h) = self.hint_line {
            self.err("preload-hint", h, "EXT-X-PRELOAD-HINT is followed by a segment");
        }
        let Some((duration, extinf_line)) = self.pending.extinf.take() else {
            self.err("syntax", n, "URI line without EXTINF");
            return;
        };
        if !self.uris.insert(uri.to_owned()) {
            self.err("msn", n, format!("{uri} is listed twice"));
        }
        let pending = std::mem::take(&mut self.pending);
        if let Some((_, elapsed)) = &mut self.last_pdt {
            *elapsed += duration;
        }
        let msn = self.pl.media_sequence + self.pl.skipped_segments + self.pl.segments.len() as u64;
        self.pl.segments.push(ParsedSegment {
            msn,
            duration,
            uri: uri.to_owned(),
            discontinuity: pending.discontinuity,
            map_uri: pending.map_uri,
            program_date_time: pending.pdt,
            parts: pending.parts,
            gap: pending.gap,
        });
        self.segment_lines.push(extinf_line);
    }

    fn finish(&mut self) {
        if let Some((_, n)) = self.pending.extinf {
            self.err("syntax", n, "EXTINF without a URI line");
        }
        let trailing_has_map = self.pending.map_uri.is_some();
        self.pl.trailing_parts = std::mem::take(&mut self.pending.parts);

        let Some(td) = self.pl.target_duration else {
            self.errors.push("[target-duration] EXT-X-TARGETDURATION missing".to_owned());
            return;
        };
        if !self.saw_media_sequence && !self.pl.segments.is_empty() {
            // Absent means 0, which is legal, but a live LL-HLS playlist removes segments and so
            // MUST carry it (§6.2.2).
            self.errors.push("[msn] EXT-X-MEDIA-SEQUENCE missing".to_owned());
        }
        if self.pl.media_sequence.checked_add(self.pl.skipped_segments).is_none() {
            self.errors.push("[skip] SKIPPED-SEGMENTS overflows the media sequence".to_owned());
        }

        // Segment durations against the target (§4.4.3.1: rounded to the nearest integer).
        for (seg, &line) in self.pl.segments.iter().zip(&self.segment_lines) {
            if seg.duration.round() > td as f64 {
                self.errors.push(format!(
                    "[extinf-over-target] line {line}: EXTINF {} rounds above EXT-X-TARGETDURATION {td}",
                    seg.duration
                ));
            }
        }

        // Parts.
        if self.any_part && !self.saw_part_inf {
            self.errors.push("[part-inf] EXT-X-PART used without EXT-X-PART-INF".to_owned());
        }
        if let Some(pt) = self.pl.part_target {
            for &(line, d) in &self.part_lines {
                if d > pt + PART_TOLERANCE_SECS {
                    self.errors.push(format!(
                        "[part-duration] line {line}: EXT-X-PART DURATION {d} exceeds PART-TARGET {pt}"
                    ));
                }
            }
            match self.pl.part_hold_back {
                None => self.errors.push("[part-hold-back] PART-HOLD-BACK missing".to_owned()),
                Some(phb) if phb + PART_TOLERANCE_SECS < 2.0 * pt => self.errors.push(format!(
                    "[part-hold-back] PART-HOLD-BACK {phb} is less than twice PART-TARGET {pt}"
                )),
                Some(_) => {}
            }
        }
        for (seg, &line) in self.pl.segments.iter().zip(&self.segment_lines) {
            if seg.parts.is_empty() {
                continue;
            }
            let sum: f64 = seg.parts.iter().map(|p| p.duration).sum();
            let tolerance = SUM_TOLERANCE_SECS + 1e-5 * seg.parts.len() as f64;
            if (sum - seg.duration).abs() > tolerance {
                self.errors.push(format!(
                    "[part-sum] line {line}: parts add up to {sum:.5}, EXTINF says {}",
                    seg.duration
                ));
            }
        }

        // Server control.
        if !self.saw_server_control {
            self.errors.push("[server-control] EXT-X-SERVER-CONTROL missing".to_owned());
        }
        if let Some(csu) = self.pl.can_skip_until {
            if csu + PART_TOLERANCE_SECS < 6.0 * td as f64 {
                self.errors.push(format!(
                    "[can-skip-until] CAN-SKIP-UNTIL {csu} is less than six target durations ({})",
                    6 * td
                ));
            }
        }

        // Delta update consistency.
        if let Some(line) = self.saw_skip_line {
            match self.pl.can_skip_until {
                None => self.err("skip", line, "EXT-X-SKIP without CAN-SKIP-UNTIL"),
                Some(boundary) => {
                    let kept: f64 = self.pl.segments.iter().map(|s| s.duration).sum();
                    let first = self.pl.segments.first().map_or(0.0, |s| s.duration);
                    let slack = SUM_TOLERANCE_SECS + 1e-5 * self.pl.segments.len() as f64;
                    if self.pl.skipped_segments > 0 && kept + slack < boundary {
                        self.err(
                            "skip",
                            line,
                            format!("skipped segments are within CAN-SKIP-UNTIL: only {kept:.3}s kept"),
                        );
                    }
                    if kept - first > boundary + slack {
                        self.err(
                            "skip",
                            line,
                            format!("first kept segment lies beyond CAN-SKIP-UNTIL ({kept:.3}s kept)"),
                        );
                    }
                }
            }
            if self.pl.ended {
                self.err("skip", line, "delta update of an ended playlist");
            }
        }

        // Preload hint.
        if self.pl.ended && !self.pl.preload_hints.is_empty() {
            self.errors.push("[preload-hint] EXT-X-PRELOAD-HINT in an ended playlist".to_owned());
        }

        // Init section: if any EXT-X-MAP is used, the first listed media must have one in force.
        if self.any_map {
            let first_has_map = match self.pl.segments.first() {
                Some(seg) => seg.map_uri.is_some(),
                None => trailing_has_map,
            };
            if !first_has_map && (!self.pl.segments.is_empty() || !self.pl.trailing_parts.is_empty()) {
                self.errors.push("[map] first segment has no EXT-X-MAP in force".to_owned());
            }
        }

        // Version (§8).
        let mut required = 1;
        if self.decimal_extinf {
            required = VERSION_DECIMAL_EXTINF;
        }
        if self.any_map {
            required = VERSION_MAP;
        }
        if self.pl.segments.iter().any(|s| s.gap) {
            required = required.max(VERSION_GAP);
        }
        if self.saw_skip_line.is_some() {
            required = VERSION_SKIP;
        }
        let declared = self.pl.version.unwrap_or(1);
        if declared < required {
            self.errors.push(format!("[version] EXT-X-VERSION {declared} is below the required {required}"));
        }
    }
}

/// One attribute value: its text, unquoted, and whether it was a quoted-string.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AttrValue {
    value: String,
    quoted: bool,
}

fn attr<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> Option<&'a AttrValue> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Parse an attribute-list (§4.2): `NAME=value` pairs separated by commas, where a value is either
/// a quoted-string (which may contain commas) or a run of characters without commas.
fn parse_attributes(s: &str) -> Result<Vec<(String, AttrValue)>, String> {
    let mut out: Vec<(String, AttrValue)> = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or_else(|| format!("attribute without '=' in {s:?}"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!("bad attribute name {name:?}"));
        }
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').ok_or_else(|| format!("unterminated quoted-string for {name}"))?;
            (AttrValue { value: q[..end].to_owned(), quoted: true }, &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (AttrValue { value: after[..end].to_owned(), quoted: false }, &after[end..])
        };
        if out.iter().any(|(k, _)| k == name) {
            return Err(format!("attribute {name} repeated"));
        }
        out.push((name.to_owned(), value));
        rest = match tail.strip_prefix(',') {
            Some(t) if !t.is_empty() => t,
            Some(_) => return Err("trailing comma in attribute list".to_owned()),
            None if tail.is_empty() => "",
            None => return Err(format!("junk after attribute {name}")),
        };
    }
    Ok(out)
}

fn is_decimal_integer(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A decimal-floating-point (§4.2): digits, optionally a point and more digits; no sign, no
/// exponent (which `f64::from_str` would accept).
fn parse_decimal_float(s: &str) -> Option<f64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if digits(int) && digits(frac) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
