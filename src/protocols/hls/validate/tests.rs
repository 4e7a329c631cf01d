//! Validator tests: one test per rule, each breaking the golden playlist in exactly one way,
//! plus reload continuity between two versions of one playlist.

use super::*;
use crate::protocols::hls::test_playlists::*;

#[test]
fn validator_extm3u() {
    assert_rule(&SMALL.replacen("#EXTM3U\n", "", 1), "extm3u");
}

#[test]
fn validator_target_duration() {
    assert_rule(&SMALL.replace("#EXT-X-TARGETDURATION:2\n", ""), "target-duration");
    assert_rule(
        &SMALL.replace("#EXT-X-TARGETDURATION:2\n", "#EXT-X-TARGETDURATION:2.5\n"),
        "target-duration",
    );
}

#[test]
fn validator_extinf_over_target() {
    assert_rule(&SMALL.replace("#EXTINF:1.980,", "#EXTINF:2.600,"), "extinf-over-target");
}

#[test]
fn validator_part_inf() {
    assert_rule(&SMALL.replace("#EXT-X-PART-INF:PART-TARGET=1.000\n", ""), "part-inf");
}

#[test]
fn validator_part_duration() {
    assert_rule(&SMALL.replace("DURATION=0.980", "DURATION=1.010"), "part-duration");
}

#[test]
fn validator_server_control() {
    assert_rule(&SMALL.replace("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO"), "server-control");
    let without = SMALL.lines().filter(|l| !l.starts_with("#EXT-X-SERVER-CONTROL")).collect::<Vec<_>>();
    assert_rule(&without.join("\n"), "server-control");
}

#[test]
fn validator_part_hold_back() {
    assert_rule(&SMALL.replace("PART-HOLD-BACK=3.000", "PART-HOLD-BACK=1.500"), "part-hold-back");
    assert_rule(&SMALL.replace("PART-HOLD-BACK=3.000,", ""), "part-hold-back");
}

#[test]
fn validator_can_skip_until() {
    assert_rule(&SMALL.replace("CAN-SKIP-UNTIL=12.000", "CAN-SKIP-UNTIL=11.000"), "can-skip-until");
}

#[test]
fn validator_part_sum() {
    assert_rule(&SMALL.replace("#EXTINF:2.000,", "#EXTINF:1.900,"), "part-sum");
}

#[test]
fn validator_preload_hint() {
    let hint = "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p12.1.m4s\"\n";
    // Twice.
    assert_rule(&SMALL.replace(hint, &format!("{hint}{}", hint.replace("p12.1", "p12.2"))), "preload-hint");
    // Before the last part.
    let moved = SMALL.replace(hint, "").replace(
        "#EXT-X-PART:DURATION=1.000,URI=\"p12.0.m4s\"",
        &format!("{hint}#EXT-X-PART:DURATION=1.000,URI=\"p12.0.m4s\""),
    );
    assert_rule(&moved, "preload-hint");
    // In an ended playlist.
    assert_rule(&format!("{SMALL}#EXT-X-ENDLIST\n"), "preload-hint");
    // Without TYPE.
    assert_rule(&SMALL.replace("TYPE=PART,", ""), "preload-hint");
}

#[test]
fn validator_skip() {
    let good = delta(&long(12));
    assert_valid(&good);
    // Not first: after a segment.
    let late = good
        .replace("#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n", "")
        .replace("s105.m4s\n", "s105.m4s\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n");
    assert_rule(&late, "skip");
    // Skips more than the boundary allows: too little left.
    let too_many = good.replace("SKIPPED-SEGMENTS=5", "SKIPPED-SEGMENTS=7").replacen(
        "#EXTINF:2.000,\ns105.m4s\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:12.000Z\n#EXTINF:2.000,\ns106.m4s\n",
        "",
        1,
    );
    assert_rule(&too_many, "skip");
    // Skips too little: the first kept segment should have been skipped.
    let full_text = full(&long(12));
    let too_few = full_text
        .replace("#EXT-X-MEDIA-SEQUENCE:100\n", "#EXT-X-MEDIA-SEQUENCE:100\n#EXT-X-SKIP:SKIPPED-SEGMENTS=0\n")
        .replace("#EXT-X-VERSION:6", "#EXT-X-VERSION:9");
    assert_rule(&too_few, "skip");
    // Without CAN-SKIP-UNTIL.
    assert_rule(&good.replace(",CAN-SKIP-UNTIL=12.000", ""), "skip");
    // Twice.
    assert_rule(
        &good.replace("SKIPPED-SEGMENTS=5\n", "SKIPPED-SEGMENTS=5\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n"),
        "skip",
    );
}

#[test]
fn validator_msn() {
    assert_rule(&SMALL.replace("\ns11.m4s\n", "\ns10.m4s\n"), "msn");
    assert_rule(&SMALL.replace("URI=\"p11.1.m4s\"", "URI=\"p11.0.m4s\""), "msn");
    assert_rule(
        &SMALL.replace("#EXT-X-MEDIA-SEQUENCE:10\n", "#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-MEDIA-SEQUENCE:11\n"),
        "msn",
    );
    assert_rule(&SMALL.replace("#EXT-X-MEDIA-SEQUENCE:10\n", ""), "msn");
}

#[test]
fn validator_independent() {
    assert_rule(&SMALL.replace("URI=\"p11.0.m4s\",INDEPENDENT=YES", "URI=\"p11.0.m4s\""), "independent");
}

#[test]
fn validator_pdt() {
    assert_rule(&SMALL.replace("00:00:03.980Z", "00:00:01.500Z"), "pdt");
    assert_rule(&SMALL.replace("00:00:02.000Z", "00:00:00.000Z"), "pdt");
    assert_rule(&SMALL.replace("2024-01-01T00:00:02.000Z", "yesterday"), "pdt");
    // A small overlap is allowed (§6.2.1), so is a jump forward.
    assert_valid(&SMALL.replace("00:00:02.000Z", "00:00:01.500Z"));
    assert_valid(&SMALL.replace("00:00:03.980Z", "00:01:00.000Z"));
}

#[test]
fn validator_rendition_report() {
    assert_rule(&SMALL.replace(",LAST-MSN=12", ""), "rendition-report");
    assert_rule(&SMALL.replace(",LAST-PART=0", ""), "rendition-report");
    assert_rule(
        &SMALL.replace("RENDITION-REPORT:URI=\"../audio/index.m3u8\",", "RENDITION-REPORT:"),
        "rendition-report",
    );
}

#[test]
fn validator_version() {
    assert_rule(&SMALL.replace("#EXT-X-VERSION:6", "#EXT-X-VERSION:5"), "version");
    assert_rule(&delta(&long(12)).replace("#EXT-X-VERSION:9", "#EXT-X-VERSION:8"), "version");
}

#[test]
fn validator_map() {
    let moved = SMALL
        .replace("#EXT-X-MAP:URI=\"init.mp4\"\n", "")
        .replace("s10.m4s\n", "s10.m4s\n#EXT-X-MAP:URI=\"init.mp4\"\n");
    assert_rule(&moved, "map");
}

#[test]
fn validator_tags_after_parts() {
    let late = SMALL.replace(
        "#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:02.000Z\n#EXT-X-PART:DURATION=1.000,URI=\"p11.0.m4s\",INDEPENDENT=YES\n",
        "#EXT-X-PART:DURATION=1.000,URI=\"p11.0.m4s\",INDEPENDENT=YES\n#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:02.000Z\n",
    );
    assert_rule(&late, "syntax");
    assert_rule(&SMALL.replace("#EXTINF:2.000,\n", ""), "syntax");
}

#[test]
fn validator_discontinuity_sequence() {
    assert_rule(
        &SMALL.replace("s10.m4s\n", "s10.m4s\n#EXT-X-DISCONTINUITY-SEQUENCE:2\n"),
        "discontinuity-sequence",
    );
}

#[test]
fn validator_reports_every_violation() {
    let broken = SMALL
        .replace("CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO")
        .replace("DURATION=0.980", "DURATION=1.010");
    let errors = validate_media_playlist(&broken).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("[server-control]")));
    assert!(errors.iter().any(|e| e.starts_with("[part-duration]")));
    assert!(errors.iter().all(|e| e.starts_with('[')), "{errors:#?}");
}

#[test]
fn reload_continuity() {
    let a = long(8);
    let mut b = long(9);
    b.segments.remove(0);
    b.media_sequence = 101;
    b.segments[0].map_uri = Some("init.mp4".into());
    let pa = parse_media_playlist(&full(&a)).unwrap();
    let pb = parse_media_playlist(&full(&b)).unwrap();
    check_reload_continuity(&pa, &pb).unwrap();
    let errors = check_reload_continuity(&pb, &pa).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("[msn]")), "{errors:#?}");
    let mut c = b.clone();
    c.segments[1].uri = "other.m4s".into();
    let pc = parse_media_playlist(&full(&c)).unwrap();
    assert!(check_reload_continuity(&pa, &pc).is_err());
}
