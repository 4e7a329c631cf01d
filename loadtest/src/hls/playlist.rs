//! Just enough of an HLS media playlist reader for a load client: media sequence numbers,
//! `EXT-X-SKIP`, program date-times, parts, segment URIs and the preload hint. Not a validator
//! (tidecast's own `protocols::hls` has one); unknown tags are ignored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Default, Clone)]
pub struct Part {
    pub duration: f64,
}

#[derive(Debug, Default, Clone)]
pub struct Segment {
    pub msn: u64,
    /// `EXT-X-PROGRAM-DATE-TIME`, or extrapolated from the previous segment.
    pub pdt: Option<SystemTime>,
    pub parts: Vec<Part>,
    /// `EXTINF` duration, once complete.
    pub duration: Option<f64>,
    /// Segment URI, once complete.
    pub uri: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Playlist {
    pub media_sequence: u64,
    /// Complete segments first, then (when listed) the one in progress (`uri == None`).
    pub segments: Vec<Segment>,
    pub preload_hint: Option<String>,
    pub ended: bool,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = line;
    loop {
        let i = rest.find(name)?;
        // Match the whole attribute name (after ':' or ','), not a suffix of another one.
        let ok = i == 0 || matches!(rest.as_bytes()[i - 1], b':' | b',');
        let after = &rest[i + name.len()..];
        if ok && after.starts_with('=') {
            let v = &after[1..];
            return Some(match v.strip_prefix('"') {
                Some(q) => &q[..q.find('"').unwrap_or(q.len())],
                None => &v[..v.find(',').unwrap_or(v.len())],
            });
        }
        rest = after;
    }
}

pub fn parse(text: &str) -> Result<Playlist, String> {
    if !text.starts_with("#EXTM3U") {
        return Err("not a playlist (no #EXTM3U)".into());
    }
    let mut pl = Playlist::default();
    let mut skipped = 0u64;
    let mut cur = Segment::default();
    let mut have_cur = false;
    let mut complete = 0u64;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            pl.media_sequence = v.parse().map_err(|_| format!("bad media sequence '{v}'"))?;
        } else if line.starts_with("#EXT-X-SKIP:") {
            skipped = attr(line, "SKIPPED-SEGMENTS").and_then(|v| v.parse().ok()).ok_or("bad EXT-X-SKIP")?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            cur.pdt = Some(parse_pdt(v).ok_or_else(|| format!("bad date-time '{v}'"))?);
            have_cur = true;
        } else if line.starts_with("#EXT-X-PART:") {
            let d =
                attr(line, "DURATION").and_then(|v| v.parse().ok()).ok_or("EXT-X-PART without DURATION")?;
            cur.parts.push(Part { duration: d });
            have_cur = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().and_then(|d| d.parse().ok()).ok_or("bad EXTINF")?;
            cur.duration = Some(d);
            have_cur = true;
        } else if line.starts_with("#EXT-X-PRELOAD-HINT:") {
            if attr(line, "TYPE") == Some("PART") {
                pl.preload_hint = attr(line, "URI").map(str::to_string);
            }
        } else if line == "#EXT-X-ENDLIST" {
            pl.ended = true;
        } else if !line.starts_with('#') {
            cur.msn = pl.media_sequence + skipped + complete;
            cur.uri = Some(line.to_string());
            pl.segments.push(std::mem::take(&mut cur));
            have_cur = false;
            complete += 1;
        }
    }
    if have_cur && !cur.parts.is_empty() {
        cur.msn = pl.media_sequence + skipped + complete;
        pl.segments.push(cur);
    }
    // Extrapolate missing date-times (the renderer may date only some segments).
    for i in 1..pl.segments.len() {
        if pl.segments[i].pdt.is_none() {
            let prev = &pl.segments[i - 1];
            let d = prev.duration.unwrap_or_else(|| prev.parts.iter().map(|p| p.duration).sum());
            pl.segments[i].pdt = prev.pdt.map(|t| t + Duration::from_secs_f64(d));
        }
    }
    Ok(pl)
}

impl Playlist {
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    /// Wall-clock instant at which part `(msn, part)` was complete according to the playlist's
    /// date-times: the segment's PDT plus the durations of its parts up to and including that
    /// one. A part index one past the last part of a complete segment means part 0 of the next
    /// segment (RFC 8216bis §6.2.5.2), which is what a blocking reload for it waits for.
    pub fn part_completion(&self, msn: u64, part: u32) -> Option<SystemTime> {
        let s = self.segment(msn)?;
        let i = part as usize;
        if i < s.parts.len() {
            let d: f64 = s.parts[..=i].iter().map(|p| p.duration).sum();
            return s.pdt.map(|t| t + Duration::from_secs_f64(d));
        }
        if s.uri.is_some() && i == s.parts.len() {
            let n = self.segment(msn + 1)?;
            let d = n.parts.first()?.duration;
            return n.pdt.map(|t| t + Duration::from_secs_f64(d));
        }
        None
    }
}

/// `part-M-I.m4s` (tidecast's part naming) at the end of a URI.
pub fn part_of_uri(uri: &str) -> Option<(u64, u32)> {
    let name = uri.rsplit('/').next()?.split('?').next()?;
    let (m, i) = name.strip_prefix("part-")?.strip_suffix(".m4s")?.split_once('-')?;
    Some((m.parse().ok()?, i.parse().ok()?))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)` (RFC 3339 as HLS writes it). Offsets other than UTC
/// are applied.
pub fn parse_pdt(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, sec) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        let frac = &f[..digits];
        nanos = format!("{frac:0<9}")[..9].parse().ok()?;
        rest = &f[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::new(secs as u64, nanos as u32))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const LL: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n\
#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-MAP:URI=\"s/init-1.mp4\"\n\
#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:04.000Z\n\
#EXT-X-PART:DURATION=0.20000,URI=\"s/part-12-0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=0.20000,URI=\"s/part-12-1.m4s\"\n#EXTINF:0.40000,\ns/seg-12.m4s\n\
#EXT-X-PART:DURATION=0.20000,URI=\"s/part-13-0.m4s\",INDEPENDENT=YES\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s/part-13-1.m4s\"\n";

    #[test]
    fn parses_an_ll_hls_delta() {
        let pl = parse(LL).unwrap();
        assert_eq!(pl.segments.len(), 2);
        assert_eq!(pl.segments[0].msn, 12);
        assert_eq!(pl.segments[1].msn, 13);
        assert!(pl.segments[1].uri.is_none());
        assert_eq!(pl.preload_hint.as_deref(), Some("s/part-13-1.m4s"));
        assert_eq!(part_of_uri("s/part-13-1.m4s"), Some((13, 1)));
        let t0 = parse_pdt("2024-01-01T00:00:04.000Z").unwrap();
        assert_eq!(pl.part_completion(12, 1).unwrap(), t0 + Duration::from_millis(400));
        // One past the last part of a complete segment: part 0 of the next one.
        assert_eq!(pl.part_completion(12, 2).unwrap(), t0 + Duration::from_millis(600));
        assert_eq!(pl.part_completion(13, 1), None);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_pdt("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_pdt("2024-03-01T12:00:00.5+01:00"),
            Some(UNIX_EPOCH + Duration::from_millis(1_709_290_800_500))
        );
    }
}
