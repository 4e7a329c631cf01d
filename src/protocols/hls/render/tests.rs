//! Renderer tests: a golden playlist, one test per rendering rule (part window, delta updates,
//! program date-times, discontinuities, URI queries), and the property that every well-formed
//! model renders to a playlist the validator accepts.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::protocols::hls::test_playlists::*;
use crate::protocols::hls::{
    check_reload_continuity, parse_media_playlist, validate_multivariant, PartEntry, PreloadHint,
    RenditionReport,
};

#[test]
fn renders_every_media_tag() {
    let text = full(&small());
    assert_eq!(text, SMALL);
    assert_valid(&text);
}

#[test]
fn a_gap_segment_is_marked_and_needs_version_8() {
    let mut pl = small();
    pl.segments[1].gap = true;
    pl.segments[1].parts.clear();
    let text = full(&pl);
    assert!(text.contains("#EXT-X-VERSION:8\n"), "{text}");
    assert!(text.contains("#EXT-X-GAP\n#EXTINF:1.980,\ns11.m4s\n"), "{text}");
    let parsed = parse_media_playlist(&text).unwrap();
    assert_eq!(parsed.segments.iter().map(|s| s.gap).collect::<Vec<_>>(), [false, true]);
    // The validator holds the version to it.
    let errors = parse_media_playlist(&text.replace("#EXT-X-VERSION:8", "#EXT-X-VERSION:6")).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("[version]")), "{errors:?}");
}

#[test]
fn ended_playlist_drops_hint_and_unfinished_segment() {
    let mut pl = small();
    pl.ended = true;
    let text = full(&pl);
    assert!(text.ends_with("LAST-PART=0\n#EXT-X-ENDLIST\n"), "{text}");
    assert!(!text.contains("PRELOAD-HINT") && !text.contains("p12.0"), "{text}");
    assert_valid(&text);
}

#[test]
fn durations_are_truncated_never_rounded_up() {
    assert_eq!(fmt_secs(Duration::from_nanos(333_333_333)), "0.33333");
    assert_eq!(fmt_secs(Duration::from_nanos(1_999_999_999)), "1.99999");
    assert_eq!(fmt_secs(ms(200)), "0.200");
    assert_eq!(fmt_secs(Duration::from_micros(4_000_080)), "4.00008");
    assert_eq!(fmt_secs(Duration::ZERO), "0.000");
}

#[test]
fn target_duration_rounds_up() {
    let pl = MediaPlaylist { target_duration: ms(2001), ..small() };
    assert!(full(&pl).contains("#EXT-X-TARGETDURATION:3\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000,CAN-SKIP-UNTIL=18.000\n"));
}

#[test]
fn uri_query_reaches_every_uri() {
    let mut pl = small();
    pl.segments[1].uri = "s11.m4s?v=1".into();
    let text = render_media(&pl, &RenderOptions { skip: SkipRequest::No, uri_query: "token=abc" });
    for needle in [
        "#EXT-X-MAP:URI=\"init.mp4?token=abc\"",
        "URI=\"p10.0.m4s?token=abc\",INDEPENDENT=YES",
        "URI=\"p11.1.m4s?token=abc\"",
        "\ns10.m4s?token=abc\n",
        "\ns11.m4s?v=1&token=abc\n",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.1.m4s?token=abc\"",
        "#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8?token=abc\",LAST-MSN=12",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    // Every URI, counted: 5 parts, 2 segments, map, hint, report.
    assert_eq!(text.matches("token=abc").count(), 10, "{text}");
    assert_valid(&text);
}

#[test]
fn uri_query_cannot_inject() {
    let text =
        render_media(&small(), &RenderOptions { skip: SkipRequest::No, uri_query: "t=\"x\n#EXT-X-ENDLIST" });
    assert!(text.contains("init.mp4?t=%22x%0A%23EXT-X-ENDLIST\""), "{text}");
    assert!(!text.contains("\n#EXT-X-ENDLIST"));
    assert_valid(&text);
}

#[test]
fn parts_listed_only_near_the_live_edge() {
    // Twelve 2 s segments: parts stay for segments ending within 6 s of the end.
    let text = full(&long(12));
    for msn in 100..108 {
        assert!(!text.contains(&format!("p{msn}.0")), "parts of {msn} listed\n{text}");
    }
    for msn in 108..112 {
        assert!(text.contains(&format!("p{msn}.0.m4s\",INDEPENDENT=YES")), "parts of {msn} missing");
    }
    assert_valid(&text);
}

#[test]
fn delta_update_skips_beyond_the_boundary() {
    // Boundary 12 s, 24 s of segments: the five ending before 12 s go.
    let pl = long(12);
    let text = delta(&pl);
    assert!(
        text.starts_with(
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.000,CAN-SKIP-UNTIL=12.000\n\
         #EXT-X-PART-INF:PART-TARGET=1.000\n#EXT-X-MEDIA-SEQUENCE:100\n\
         #EXT-X-SKIP:SKIPPED-SEGMENTS=5\n\
         #EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:10.000Z\n\
         #EXTINF:2.000,\ns105.m4s\n"
        ),
        "{text}"
    );
    let parsed = parse_media_playlist(&text).unwrap();
    assert_eq!(parsed.skipped_segments, 5);
    assert_eq!(parsed.segments.first().map(|s| s.msn), Some(105));
    assert_eq!(parsed.segments.last().map(|s| s.msn), Some(111));
    // v2 behaves as YES.
    assert_eq!(render_media(&pl, &RenderOptions { skip: SkipRequest::V2, uri_query: "" }), text);
}

#[test]
fn delta_update_of_a_short_playlist_is_the_full_playlist() {
    let pl = long(6);
    assert_eq!(delta(&pl), full(&pl));
    assert!(!delta(&pl).contains("EXT-X-SKIP"));
    assert!(full(&long(12)).contains("#EXT-X-VERSION:6\n"));
}

#[test]
fn delta_update_ignored_once_ended() {
    let mut pl = long(12);
    pl.ended = true;
    assert_eq!(delta(&pl), full(&pl));
}

#[test]
fn delta_update_extrapolates_program_date_time() {
    let mut pl = long(12);
    for s in &mut pl.segments[1..] {
        s.program_date_time = None;
    }
    let text = delta(&pl);
    assert!(
        text.contains("#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:10.000Z\n#EXTINF:2.000,\ns105.m4s"),
        "{text}"
    );
    assert_eq!(text.matches("PROGRAM-DATE-TIME").count(), 1);
    assert_valid(&text);
    // Not across a discontinuity: the timeline may have jumped.
    pl.segments[3].discontinuity = true;
    assert!(!delta(&pl).contains("PROGRAM-DATE-TIME"));
}

#[test]
fn delta_update_keeps_discontinuity_sequence() {
    let mut pl = long(12);
    pl.discontinuity_sequence = 4;
    pl.segments[2].discontinuity = true; // skipped: its tag goes with it
    pl.segments[8].discontinuity = true; // kept
    let text = delta(&pl);
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:4\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n"), "{text}");
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    assert_valid(&text);
}

#[test]
fn discontinuity_and_its_sequence() {
    let mut pl = small();
    pl.discontinuity_sequence = 3;
    pl.segments[1].discontinuity = true;
    pl.segments[1].map_uri = Some("init2.mp4".into());
    pl.segments[2].discontinuity = true;
    let text = full(&pl);
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-DISCONTINUITY-SEQUENCE:3\n#EXT-X-MAP"));
    assert!(
        text.contains(
            "s10.m4s\n#EXT-X-MAP:URI=\"init2.mp4\"\n#EXT-X-DISCONTINUITY\n\
         #EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:02.000Z\n#EXT-X-PART:DURATION=1.000,URI=\"p11.0.m4s\""
        ),
        "{text}"
    );
    // The segment in progress carries its tags before its first part.
    assert!(text.contains(
        "s11.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:03.980Z\n#EXT-X-PART"
    ));
    assert_valid(&text);
    assert!(full(&small()).lines().all(|l| !l.starts_with("#EXT-X-DISCONTINUITY")));
}

#[test]
fn empty_segment_in_progress_lists_nothing() {
    let mut pl = small();
    pl.segments[2].parts.clear();
    pl.segments[2].discontinuity = true;
    pl.preload_hint = Some(PreloadHint { uri: "p12.0.m4s".into() });
    let text = full(&pl);
    assert!(text.contains("s11.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.0.m4s\"\n"), "{text}");
    assert_valid(&text);
}

#[test]
fn multivariant() {
    let variants = [
        VariantStream {
            uri: "source/index.m3u8".into(),
            bandwidth: 6_000_000,
            average_bandwidth: Some(4_500_000),
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1920, 1080)),
            frame_rate: Some(29.97),
        },
        VariantStream {
            uri: "audio/index.m3u8".into(),
            bandwidth: 128_000,
            average_bandwidth: None,
            codecs: "mp4a.40.2".into(),
            resolution: None,
            frame_rate: None,
        },
    ];
    let text =
        render_multivariant(&variants, &RenderOptions { skip: SkipRequest::Yes, uri_query: "token=abc" });
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
         #EXT-X-STREAM-INF:BANDWIDTH=6000000,AVERAGE-BANDWIDTH=4500000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1920x1080,FRAME-RATE=29.970\n\
         source/index.m3u8?token=abc\n\
         #EXT-X-STREAM-INF:BANDWIDTH=128000,CODECS=\"mp4a.40.2\"\n\
         audio/index.m3u8?token=abc\n"
    );
    validate_multivariant(&text).unwrap();
    let bad = |t: &str| validate_multivariant(t).expect_err(t);
    bad(&text.replace("BANDWIDTH=128000,", ""));
    bad(&text.replace(",CODECS=\"mp4a.40.2\"", ""));
    bad(&text.replace("audio/index.m3u8?token=abc\n", ""));
    bad(&text.replace("RESOLUTION=1920x1080", "RESOLUTION=1920"));
    bad(&text.replace("#EXTM3U\n", ""));
    bad("#EXTM3U\n");
}

// --- property: well-formed models render to valid playlists ---------------------------------

#[derive(Debug, Clone)]
struct SegSpec {
    parts_us: Vec<u64>,
    discontinuity: bool,
    new_map: bool,
    dated: bool,
    gap_ms: u64,
}

fn arb_case() -> impl Strategy<Value = (MediaPlaylist, SkipRequest, &'static str)> {
    (1_000u64..=6_000, 100u64..=1_000)
        .prop_flat_map(|(td_ms, pt_ms)| {
            let pt_ms = pt_ms.min(td_ms);
            let max_parts = usize::try_from(td_ms / pt_ms).unwrap();
            let seg = (
                prop::collection::vec(pt_ms * 500..=pt_ms * 1_000, 1..=max_parts),
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.8),
                0u64..5_000,
            )
                .prop_map(|(parts_us, discontinuity, new_map, dated, gap_ms)| SegSpec {
                    parts_us,
                    discontinuity,
                    new_map,
                    dated,
                    gap_ms,
                });
            (
                Just(td_ms),
                Just(pt_ms),
                prop::collection::vec(seg, 0..40),
                prop::option::of(prop::collection::vec(pt_ms * 500..=pt_ms * 1_000, 0..=max_parts)),
                any::<bool>(),
                0usize..3,
                prop_oneof![Just(SkipRequest::No), Just(SkipRequest::Yes), Just(SkipRequest::V2)],
                prop_oneof![Just(""), Just("token=abc"), Just("a=b&c=d"), Just("x=\"y z\"")],
                0u64..1_000_000_000_000,
                0u64..100,
            )
        })
        .prop_map(|(td_ms, pt_ms, specs, in_progress, ended, reports, skip, query, ms0, dseq)| {
            let mut clock = at(0);
            let mut segments = Vec::new();
            for (i, spec) in specs.iter().enumerate() {
                let msn = ms0 + i as u64;
                if spec.discontinuity {
                    clock += ms(spec.gap_ms);
                }
                let parts: Vec<PartEntry> = spec
                    .parts_us
                    .iter()
                    .enumerate()
                    .map(|(j, &us)| PartEntry {
                        duration: Duration::from_micros(us),
                        uri: format!("p{msn}.{j}.m4s"),
                        independent: j == 0,
                    })
                    .collect();
                let duration = parts.iter().map(|p| p.duration).sum();
                segments.push(SegmentEntry {
                    msn,
                    duration,
                    uri: format!("s{msn}.m4s"),
                    program_date_time: (spec.dated || i == 0).then_some(clock),
                    discontinuity: spec.discontinuity && i > 0,
                    map_uri: (i == 0 || spec.new_map).then(|| format!("init{i}.mp4")),
                    parts,
                    complete: true,
                    gap: false,
                });
                clock += duration;
            }
            if let Some(parts_us) = in_progress {
                let msn = ms0 + segments.len() as u64;
                segments.push(SegmentEntry {
                    msn,
                    duration: Duration::ZERO,
                    uri: String::new(),
                    program_date_time: Some(clock),
                    discontinuity: false,
                    map_uri: segments.is_empty().then(|| "init.mp4".to_owned()),
                    parts: parts_us
                        .iter()
                        .enumerate()
                        .map(|(j, &us)| PartEntry {
                            duration: Duration::from_micros(us),
                            uri: format!("p{msn}.{j}.m4s"),
                            independent: j == 0,
                        })
                        .collect(),
                    complete: false,
                    gap: false,
                });
            }
            let next = segments.last().map_or(ms0, |s: &SegmentEntry| s.msn + u64::from(s.complete));
            let pl = MediaPlaylist {
                target_duration: ms(td_ms),
                part_target: ms(pt_ms),
                media_sequence: ms0,
                discontinuity_sequence: dseq,
                segments,
                preload_hint: Some(PreloadHint { uri: format!("hint{next}.m4s") }),
                rendition_reports: (0..reports)
                    .map(|r| RenditionReport {
                        uri: format!("../r{r}/index.m3u8"),
                        last_msn: next,
                        last_part: 0,
                    })
                    .collect(),
                ended,
            };
            (pl, skip, query)
        })
}

proptest! {
    #[test]
    fn rendered_models_validate((pl, skip, query) in arb_case()) {
        let text = render_media(&pl, &RenderOptions { skip, uri_query: query });
        let parsed = match parse_media_playlist(&text) {
            Ok(p) => p,
            Err(errors) => return Err(TestCaseError::fail(format!("{errors:#?}\n{text}"))),
        };
        // MSNs survive the round trip, skipped or not.
        let complete: Vec<u64> = pl.segments.iter().filter(|s| s.complete).map(|s| s.msn).collect();
        let listed: Vec<u64> = parsed.segments.iter().map(|s| s.msn).collect();
        prop_assert_eq!(&complete[complete.len() - listed.len()..], &listed[..]);
        prop_assert_eq!(parsed.media_sequence, pl.media_sequence);
        prop_assert_eq!(parsed.ended, pl.ended);
        if skip == SkipRequest::No || pl.ended {
            prop_assert_eq!(parsed.skipped_segments, 0);
        }
        // The full playlist and the delta update agree on what they both list.
        let full_text = render_media(&pl, &RenderOptions { skip: SkipRequest::No, uri_query: query });
        let whole = parse_media_playlist(&full_text).expect("full playlist validates");
        prop_assert!(check_reload_continuity(&whole, &parsed).is_ok());
    }
}
