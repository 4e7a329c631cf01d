use std::time::{Duration, SystemTime};

use super::*;

/// One element of the rendered XML: its name, attributes (unescaped) and nesting path.
#[derive(Debug)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    path: Vec<String>,
    text: String,
}

impl Element {
    fn get(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn unescape(s: &str) -> String {
    assert!(!s.contains('<'), "raw < in {s:?}");
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').unwrap_or_else(|| panic!("unterminated reference in {s:?}"));
        let entity = &rest[i + 1..i + end];
        out.push(match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with('#') => char::from_u32(e[1..].parse().unwrap()).unwrap(),
            e => panic!("unknown entity &{e}; in {s:?}"),
        });
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

/// A strict little checker for what `render_mpd` writes: one XML declaration, then elements
/// with double-quoted attributes, properly nested, no raw `&` or `<` in values or text, no
/// duplicate attributes. Panics on anything else; returns every element in document order.
fn parse_xml(xml: &str) -> Vec<Element> {
    let body = xml.strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n").expect("XML declaration");
    let mut out: Vec<Element> = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut rest = body;
    loop {
        let lt = match rest.find('<') {
            Some(i) => i,
            None => {
                assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
                break;
            }
        };
        let text = unescape(&rest[..lt]);
        if let Some((_, idx)) = open.last() {
            out[*idx].text.push_str(text.trim());
        } else {
            assert!(text.trim().is_empty(), "text outside the root: {text:?}");
        }
        rest = &rest[lt + 1..];
        let gt = rest.find('>').expect("unterminated tag");
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let (top, _) = open.pop().expect("close without open");
            assert_eq!(top, name, "mismatched close tag");
            if open.is_empty() {
                assert!(rest.trim().is_empty(), "content after the root element");
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name_end = tag.find(' ').unwrap_or(tag.len());
        let name = &tag[..name_end];
        assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()), "bad name {name:?}");
        assert!(!open.is_empty() || out.is_empty(), "second root element {name}");
        let mut attrs = Vec::new();
        let mut a = tag[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a.find("=\"").expect("attribute without =\"");
            let key = &a[..eq];
            assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == ':'), "bad attribute {key:?}");
            let value_end = a[eq + 2..].find('"').expect("unterminated value");
            let value = &a[eq + 2..eq + 2 + value_end];
            assert!(!attrs.iter().any(|(k, _): &(String, String)| k == key), "duplicate {key}");
            attrs.push((key.to_owned(), unescape(value)));
            a = a[eq + 2 + value_end + 1..].trim_start();
        }
        let path = open.iter().map(|(n, _)| n.clone()).collect();
        out.push(Element { name: name.to_owned(), attrs, path, text: String::new() });
        if !self_closing {
            open.push((name.to_owned(), out.len() - 1));
        } else if open.is_empty() {
            assert!(rest.trim().is_empty(), "content after the root element");
        }
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    out
}

/// A representation's id, startNumber and expanded timeline as (number, t, d).
type Expanded = (String, u64, Vec<(u64, u64, u64)>);

/// Per Representation (in document order): its timeline expanded the way a DASH client numbers
/// segments (§5.3.9.6).
fn expand_timelines(elements: &[Element]) -> Vec<Expanded> {
    let mut out: Vec<Expanded> = Vec::new();
    let mut next_t = 0;
    for e in elements {
        match e.name.as_str() {
            "Representation" => out.push((e.get("id").unwrap().to_owned(), 0, Vec::new())),
            "SegmentTemplate" => {
                let cur = out.last_mut().unwrap();
                cur.1 = e.get("startNumber").unwrap().parse().unwrap();
            }
            "S" => {
                let cur = out.last_mut().unwrap();
                let d: u64 = e.get("d").unwrap().parse().unwrap();
                let r: u64 = e.get("r").map_or(0, |r| r.parse().unwrap());
                let mut t = match e.get("t") {
                    Some(t) => t.parse().unwrap(),
                    None => {
                        assert!(!cur.2.is_empty(), "first S without t");
                        next_t
                    }
                };
                for _ in 0..=r {
                    let number = cur.1 + cur.2.len() as u64;
                    cur.2.push((number, t, d));
                    t += d;
                }
                next_t = t;
            }
            _ => {}
        }
    }
    out
}

fn rep(id: &str, segments: Vec<TimelineSegment>, init_version: u32) -> Representation {
    Representation {
        id: id.into(),
        bandwidth: 2_500_000,
        codecs: "avc1.64001f,mp4a.40.2".into(),
        video: Some(VideoInfo { width: 1280, height: 720, frame_rate: Some(FrameRate { num: 30, den: 1 }) }),
        audio_sampling_rate: Some(48_000),
        init_uri: format!("{id}/init-{init_version}.mp4"),
        media_template: format!("{id}/seg-$Number$.m4s"),
        timescale: 90_000,
        segments,
    }
}

fn seg(msn: u64, start: u64, duration: u64, discontinuity: bool) -> RecordedSegment {
    RecordedSegment { msn, start, duration, discontinuity, init_version: 1 + u32::from(msn >= 17) }
}

/// A recording: msn 10..=13 from t=900000 (2 s segments, the last 1.5 s), msn 14 missing,
/// msn 15..=16, then a reconnect (timestamps restart at 0) with msn 17..=18.
fn recording() -> Vec<RecordedSegment> {
    vec![
        seg(10, 900_000, 180_000, false),
        seg(11, 1_080_000, 180_000, false),
        seg(12, 1_260_000, 180_000, false),
        seg(13, 1_440_000, 135_000, false),
        seg(15, 1_755_000, 180_000, false),
        seg(16, 1_935_000, 180_000, false),
        seg(17, 0, 180_000, true),
        seg(18, 180_000, 90_000, false),
    ]
}

fn manifest_from(plans: &[PeriodPlan], kind: ManifestKind) -> Manifest {
    let periods = plans
        .iter()
        .enumerate()
        .map(|(i, p)| Period {
            id: format!("p{i}"),
            start: p.start,
            representations: vec![rep("source", p.segments.clone(), p.init_version), {
                let mut r = rep("480p", p.segments.clone(), p.init_version);
                r.video = Some(VideoInfo { width: 854, height: 480, frame_rate: None });
                r.bandwidth = 1_000_000;
                r
            }],
        })
        .collect();
    Manifest {
        kind,
        periods,
        min_buffer_time: Duration::from_secs(2),
        max_segment_duration: Some(Duration::from_secs(2)),
        base_url: None,
    }
}

fn static_kind(plans: &[PeriodPlan]) -> ManifestKind {
    ManifestKind::Static { duration: plans.last().unwrap().end(90_000) }
}

#[test]
fn periods_split_at_gaps_and_discontinuities() {
    let plans = plan_periods(&recording(), 90_000);
    assert_eq!(plans.len(), 3);
    let msns: Vec<Vec<u64>> = plans.iter().map(|p| p.segments.iter().map(|s| s.msn).collect()).collect();
    assert_eq!(msns, vec![vec![10, 11, 12, 13], vec![15, 16], vec![17, 18]]);
    // The first period starts at 0 whatever the recording's timestamps.
    assert_eq!(plans[0].start, Duration::ZERO);
    assert_eq!(plans[0].end(90_000), Duration::from_millis(7_500));
    // After the gap: where its media starts (1755000 - 900000 ticks = 9.5 s), the hole kept.
    assert_eq!(plans[1].start, Duration::from_millis(9_500));
    // After the discontinuity: where the previous period ends.
    assert_eq!(plans[2].start, Duration::from_millis(13_500));
    assert_eq!(plans[2].end(90_000), Duration::from_millis(16_500));
}

#[test]
fn time_going_back_without_a_flag_starts_a_period_at_the_previous_end() {
    let plans = plan_periods(&[seg(1, 500, 100, false), seg(2, 100, 100, false)], 100);
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[1].start, Duration::from_secs(1));
    assert!(plan_periods(&[], 90_000).is_empty());
}

#[test]
fn a_new_init_starts_a_period_on_the_same_timeline() {
    let mut segments = vec![seg(1, 0, 90, false), seg(2, 90, 90, false), seg(3, 180, 90, false)];
    segments[2].init_version = 2;
    let plans = plan_periods(&segments, 90);
    let msns: Vec<Vec<u64>> = plans.iter().map(|p| p.segments.iter().map(|s| s.msn).collect()).collect();
    assert_eq!(msns, vec![vec![1, 2], vec![3]]);
    assert_eq!(plans[1].start, Duration::from_secs(2));
    assert_eq!((plans[0].init_version, plans[1].init_version), (1, 2));
}

#[test]
fn static_manifest_is_well_formed_and_numbers_equal_msns() {
    let plans = plan_periods(&recording(), 90_000);
    let xml = render_mpd(&manifest_from(&plans, static_kind(&plans)), "");
    let elements = parse_xml(&xml);
    let mpd = &elements[0];
    assert_eq!(mpd.name, "MPD");
    assert_eq!(mpd.get("xmlns"), Some("urn:mpeg:dash:schema:mpd:2011"));
    assert_eq!(mpd.get("type"), Some("static"));
    assert_eq!(mpd.get("mediaPresentationDuration"), Some("PT16.5S"));
    assert_eq!(mpd.get("minBufferTime"), Some("PT2S"));
    assert!(mpd.get("profiles").unwrap().contains("urn:mpeg:dash:profile:isoff-live:2011"));
    for dynamic_only in
        ["availabilityStartTime", "publishTime", "minimumUpdatePeriod", "timeShiftBufferDepth"]
    {
        assert_eq!(mpd.get(dynamic_only), None, "{dynamic_only}");
    }
    let periods: Vec<&Element> = elements.iter().filter(|e| e.name == "Period").collect();
    let starts: Vec<&str> = periods.iter().map(|p| p.get("start").unwrap()).collect();
    assert_eq!(starts, ["PT0S", "PT9.5S", "PT13.5S"]);

    // Every representation of every period: $Number$ of each S equals the MSN, t equals tfdt.
    let timelines = expand_timelines(&elements);
    assert_eq!(timelines.len(), 6);
    for (i, (id, _, timeline)) in timelines.iter().enumerate() {
        let plan = &plans[i / 2];
        let want: Vec<(u64, u64, u64)> = plan.segments.iter().map(|s| (s.msn, s.start, s.duration)).collect();
        assert_eq!(timeline, &want, "representation {id} of period {}", i / 2);
    }
    // presentationTimeOffset: each period starts at 0 on its own timeline.
    let ptos: Vec<&str> = elements
        .iter()
        .filter(|e| e.name == "SegmentTemplate")
        .map(|e| e.get("presentationTimeOffset").unwrap())
        .collect();
    assert_eq!(ptos, ["900000", "900000", "1755000", "1755000", "0", "0"]);
    let inits: Vec<&str> = elements
        .iter()
        .filter(|e| e.name == "SegmentTemplate")
        .map(|e| e.get("initialization").unwrap())
        .collect();
    assert_eq!(inits[..2], ["source/init-1.mp4", "480p/init-1.mp4"]);
    assert_eq!(inits[4..], ["source/init-2.mp4", "480p/init-2.mp4"]);
}

#[test]
fn muxed_representation_is_a_video_set_without_content_components() {
    let plans = plan_periods(&recording(), 90_000);
    let xml = render_mpd(&manifest_from(&plans, static_kind(&plans)), "");
    let elements = parse_xml(&xml);
    assert!(!elements.iter().any(|e| e.name == "ContentComponent"));
    let set = elements.iter().find(|e| e.name == "AdaptationSet").unwrap();
    assert_eq!(set.get("mimeType"), Some("video/mp4"));
    let r = elements.iter().find(|e| e.name == "Representation").unwrap();
    assert_eq!(r.get("codecs"), Some("avc1.64001f,mp4a.40.2"));
    // No frameRate on a muxed representation (dash.js would check it with Media Capabilities,
    // which refuses two codecs); a video-only one keeps it.
    assert_eq!(r.get("frameRate"), None);
    let mut m = manifest_from(&plans, static_kind(&plans));
    m.periods[0].representations[0].codecs = "avc1.64001f".into();
    let elements = parse_xml(&render_mpd(&m, ""));
    let r = elements.iter().find(|e| e.name == "Representation").unwrap();
    assert_eq!(r.get("frameRate"), Some("30"));
    m.periods[0].representations[0].video.as_mut().unwrap().frame_rate =
        Some(FrameRate { num: 30_000, den: 1001 });
    let elements = parse_xml(&render_mpd(&m, ""));
    let r = elements.iter().find(|e| e.name == "Representation").unwrap();
    assert_eq!(r.get("frameRate"), Some("30000/1001"));
    assert_eq!(r.get("audioSamplingRate"), Some("48000"));
    assert_eq!(r.path, ["MPD", "Period", "AdaptationSet"]);
}

#[test]
fn audio_only_renditions_get_their_own_set() {
    let mut m = manifest_from(
        &plan_periods(&recording()[..2], 90_000),
        ManifestKind::Static { duration: Duration::from_secs(4) },
    );
    let mut audio = rep("audio", m.periods[0].representations[0].segments.clone(), 1);
    audio.video = None;
    audio.codecs = "opus".into();
    audio.timescale = 48_000;
    m.periods[0].representations.push(audio);
    let elements = parse_xml(&render_mpd(&m, ""));
    let sets: Vec<(&str, &str)> = elements
        .iter()
        .filter(|e| e.name == "AdaptationSet")
        .map(|e| (e.get("id").unwrap(), e.get("mimeType").unwrap()))
        .collect();
    assert_eq!(sets, [("0", "video/mp4"), ("1", "audio/mp4")]);
}

#[test]
fn dynamic_manifest_attributes() {
    let plans = plan_periods(&recording(), 90_000);
    let ast = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_384_803_123);
    let kind = ManifestKind::Dynamic {
        availability_start: ast,
        publish_time: ast + Duration::from_secs(20),
        minimum_update_period: Duration::from_secs(2),
        time_shift_buffer_depth: Some(Duration::from_secs(3600)),
    };
    let elements = parse_xml(&render_mpd(&manifest_from(&plans, kind), ""));
    let mpd = &elements[0];
    assert_eq!(mpd.get("type"), Some("dynamic"));
    assert_eq!(mpd.get("availabilityStartTime"), Some("2026-12-04T11:46:43.123Z"));
    assert_eq!(mpd.get("publishTime"), Some("2026-12-04T11:47:03.123Z"));
    assert_eq!(mpd.get("minimumUpdatePeriod"), Some("PT2S"));
    assert_eq!(mpd.get("timeShiftBufferDepth"), Some("PT3600S"));
    assert_eq!(mpd.get("mediaPresentationDuration"), None);

    let no_depth = ManifestKind::Dynamic {
        availability_start: ast,
        publish_time: ast,
        minimum_update_period: Duration::from_millis(500),
        time_shift_buffer_depth: None,
    };
    let elements = parse_xml(&render_mpd(&manifest_from(&plans, no_depth), ""));
    assert_eq!(elements[0].get("timeShiftBufferDepth"), None);
    assert_eq!(elements[0].get("minimumUpdatePeriod"), Some("PT0.5S"));
}

#[test]
fn query_reaches_every_url_escaped() {
    let plans = plan_periods(&recording(), 90_000);
    let mut m = manifest_from(&plans, static_kind(&plans));
    m.base_url = Some("https://cdn.example/vod/v1/?x=1".into());
    let query = "token=a.b&sig=\"<x>\" $Number$&q=%41";
    let xml = render_mpd(&m, query);
    assert!(!xml.contains("$Number$&"), "a query $ must not form a template identifier: {xml}");
    let elements = parse_xml(&xml);
    // What a client reads (after XML unescaping): the query, percent-encoded where a query may
    // not hold a byte, `$` included; `%41` stays as it was.
    let encoded = "token=a.b&sig=%22%3Cx%3E%22%20%24Number%24&q=%41";
    let base = elements.iter().find(|e| e.name == "BaseURL").unwrap();
    assert_eq!(base.text, format!("https://cdn.example/vod/v1/?x=1&{encoded}"));
    let templates: Vec<&Element> = elements.iter().filter(|e| e.name == "SegmentTemplate").collect();
    assert_eq!(templates.len(), 6);
    for t in templates {
        let init = t.get("initialization").unwrap();
        let media = t.get("media").unwrap();
        assert!(init.ends_with(&format!(".mp4?{encoded}")), "{init}");
        assert!(media.ends_with(&format!("seg-$Number$.m4s?{encoded}")), "{media}");
        // Exactly one template identifier in media, none in initialization.
        assert_eq!(media.matches('$').count(), 2, "{media}");
        assert_eq!(init.matches('$').count(), 0, "{init}");
    }
    // No query: URLs unchanged.
    let elements = parse_xml(&render_mpd(&m, ""));
    let t = elements.iter().find(|e| e.name == "SegmentTemplate").unwrap();
    assert_eq!(t.get("initialization"), Some("source/init-1.mp4"));
    assert_eq!(t.get("media"), Some("source/seg-$Number$.m4s"));
}

#[test]
fn hostile_names_stay_inside_their_attributes() {
    let plans = plan_periods(&recording()[..1], 90_000);
    let mut m = manifest_from(&plans, static_kind(&plans));
    let r = &mut m.periods[0].representations[0];
    r.id = "a\"b<c>&d'e\u{1}".into();
    r.init_uri = "we$ird/init-1.mp4".into();
    m.periods[0].id = "p\"0".into();
    let elements = parse_xml(&render_mpd(&m, ""));
    let r = elements.iter().find(|e| e.name == "Representation").unwrap();
    assert_eq!(r.get("id"), Some("a\"b<c>&d'e"));
    let t = elements.iter().find(|e| e.name == "SegmentTemplate").unwrap();
    assert_eq!(t.get("initialization"), Some("we$$ird/init-1.mp4"));
    assert_eq!(elements.iter().find(|e| e.name == "Period").unwrap().get("id"), Some("p\"0"));
}

#[test]
fn timeline_uses_r_and_explicit_t_only_where_needed() {
    let segments = vec![
        TimelineSegment { msn: 1, start: 1000, duration: 10 },
        TimelineSegment { msn: 2, start: 1010, duration: 10 },
        TimelineSegment { msn: 3, start: 1020, duration: 10 },
        TimelineSegment { msn: 4, start: 1030, duration: 7 },
        // Not contiguous (a few ticks of drift): explicit t, same number sequence.
        TimelineSegment { msn: 5, start: 1040, duration: 10 },
    ];
    let mut x = String::new();
    render_timeline(&mut x, &segments);
    let lines: Vec<&str> = x.lines().map(str::trim).collect();
    assert_eq!(lines, [r#"<S t="1000" d="10" r="2"/>"#, r#"<S d="7"/>"#, r#"<S t="1040" d="10"/>"#]);
}

#[test]
fn durations_and_ticks() {
    assert_eq!(xs_duration(Duration::ZERO), "PT0S");
    assert_eq!(xs_duration(Duration::from_millis(12_500)), "PT12.5S");
    assert_eq!(xs_duration(Duration::new(1, 1)), "PT1.000000001S");
    assert_eq!(ticks_to_duration(90_000 * 3 + 3_003, 90_000), Duration::new(3, 33_366_666));
    assert_eq!(ticks_to_duration(5, 0), Duration::ZERO);
    assert_eq!(with_query("a/b.mp4", ""), "a/b.mp4");
    assert_eq!(with_query("a/b.mp4?", "t=1"), "a/b.mp4?t=1");
    assert_eq!(with_query("a/b.mp4#f", "t=1"), "a/b.mp4?t=1#f");
}
