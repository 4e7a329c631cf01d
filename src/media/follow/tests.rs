use std::time::UNIX_EPOCH;

use bytes::Bytes;

use super::*;
use crate::media::codec::{Tracks, VideoCodec, VideoConfig};
use crate::media::segmenter::{Segmenter, SegmenterConfig};

fn tracks() -> Arc<Tracks> {
    Arc::new(Tracks {
        video: Some(VideoConfig {
            codec: VideoCodec::H264,
            record: Bytes::new(),
            width: 0,
            height: 0,
            codec_string: String::new(),
        }),
        audio: None,
    })
}

fn cfg() -> SegmenterConfig {
    SegmenterConfig { part_target: Duration::from_millis(200), segment_target: Duration::from_secs(2) }
}

/// Presentation time of frame `i` at 30 fps, rounded to milliseconds as FLV does.
fn ms(i: i64) -> i64 {
    (i as f64 * 1000.0 / 30.0).round() as i64
}

/// A source with B-frames: decode order I P B B P B B ..., each P two frames ahead of its
/// Bs, DTS two frames behind PTS at the key frame (x264's default pyramid shape, simplified).
/// Returns (dts_ms, pts_ms, key) in decode order.
fn source_frames(n: i64, gop: i64) -> Vec<(i64, i64, bool)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let dts = |k: i64| ms(k) - ms(2);
        if i % gop == 0 {
            out.push((dts(i), ms(i), true));
            i += 1;
            continue;
        }
        // A P frame shown two frames later, then the two B frames before it.
        if i + 2 < n && (i + 2) % gop != 0 && (i + 1) % gop != 0 {
            out.push((dts(i), ms(i + 2), false));
            out.push((dts(i + 1), ms(i), false));
            out.push((dts(i + 2), ms(i + 1), false));
            i += 3;
        } else {
            out.push((dts(i), ms(i), false));
            i += 1;
        }
    }
    out
}

fn frame(kind: TrackKind, dts: MediaTime, pts: MediaTime, key: bool, t: &Arc<Tracks>) -> Arc<Frame> {
    Arc::new(Frame::new(kind, dts, pts, key, Bytes::from_static(b"x"), t.clone()))
}

/// Run the source through a segmenter, logging its cuts as the packager does.
fn source_log(frames: &[(i64, i64, bool)]) -> (Vec<Part>, BoundaryLog) {
    let t = tracks();
    let mut seg = Segmenter::new(cfg());
    let mut rec = Recorder::default();
    let mut log = BoundaryLog::default();
    let mut parts = Vec::new();
    let pdt = |start: MediaTime| UNIX_EPOCH + Duration::from_secs(1_000_000) + start.as_duration();
    for &(d, p, key) in frames {
        let f = frame(
            TrackKind::Video,
            MediaTime::from_millis(d + 100),
            MediaTime::from_millis(p + 100),
            key,
            &t,
        );
        let before = parts.len();
        seg.push(f.clone(), &mut parts);
        rec.after_push(&f, &parts[before..], seg.open_part(), pdt, &mut log);
    }
    (parts, log)
}

/// The rung: B-frame-free, on the 90 kHz clock, key frames where the source's are shown, and
/// AAC audio riding along.
fn rung_frames(frames: &[(i64, i64, bool)]) -> Vec<Arc<Frame>> {
    let t = tracks();
    let mut pts: Vec<(i64, bool)> = frames.iter().map(|&(_, p, k)| (p + 100, k)).collect();
    pts.sort();
    let mut out = Vec::new();
    for (p, k) in pts {
        let at = MediaTime::new(p * 90, 90_000);
        out.push(frame(TrackKind::Video, at, at, k, &t));
        out.push(frame(TrackKind::Audio, at.plus(MediaTime::from_millis(3)), at, false, &t));
    }
    out
}

fn follow_all(rung: &[Arc<Frame>], log: &BoundaryLog) -> (Vec<Followed>, Follower) {
    let mut f = Follower::new();
    let mut out = Vec::new();
    for fr in rung {
        f.push(fr.clone(), &mut out);
        f.drive(log, &mut out);
    }
    (out, f)
}

fn parts_of(out: &[Followed]) -> Vec<&Part> {
    out.iter().filter_map(|o| if let Followed::Part { part, .. } = o { Some(part) } else { None }).collect()
}

#[test]
fn a_rung_is_cut_with_the_sources_numbers_durations_and_dates() {
    let src = source_frames(600, 60);
    let (source_parts, log) = source_log(&src);
    let (out, f) = follow_all(&rung_frames(&src), &log);
    let rung = parts_of(&out);
    // The source's last part is still open (no frame after it); so is the rung's.
    assert_eq!(rung.len(), source_parts.len(), "{:?}", f.stats());
    for (r, s) in rung.iter().zip(&source_parts) {
        assert_eq!(
            (r.msn, r.index, r.ends_segment, r.independent),
            (s.msn, s.index, s.ends_segment, s.independent)
        );
        let (rd, sd) = (r.duration().as_secs_f64(), s.duration().as_secs_f64());
        assert!((rd - sd).abs() < 0.0015, "part {}.{}: rung {rd} source {sd}", r.msn, r.index);
        assert!(r.frames[0].track == TrackKind::Video);
        if r.index == 0 {
            assert!(r.frames[0].keyframe, "segment {} starts on a key frame", r.msn);
        }
    }
    // Program date times: the source's segment start, from the log.
    for o in &out {
        if let Followed::Part { part, program_date_time } = o {
            let b = log.find(part.msn, 0).unwrap();
            assert_eq!(*program_date_time, b.program_date_time);
        }
    }
    assert_eq!(f.stats(), FollowStats::default());
}

#[test]
fn a_rung_that_starts_late_begins_at_the_next_source_segment() {
    let src = source_frames(400, 60);
    let (_, log) = source_log(&src);
    let rung = rung_frames(&src);
    // The encoder's first output is 1.5 s in (mid-segment 0, not a key frame).
    let late: Vec<_> = rung.into_iter().filter(|f| f.dts >= MediaTime::from_millis(1600)).collect();
    let (out, f) = follow_all(&late, &log);
    let parts = parts_of(&out);
    assert_eq!(parts[0].msn, 1);
    assert_eq!(parts[0].index, 0);
    assert!(parts[0].frames[0].keyframe);
    assert!(!parts[0].discontinuity, "a late start is not a discontinuity");
    assert!(!out.iter().any(|o| matches!(o, Followed::Gap { .. })));
    assert!(f.stats().dropped_frames > 0);
}

#[test]
fn a_restart_leaves_gap_segments_and_a_discontinuity() {
    let src = source_frames(600, 60);
    let (_, log) = source_log(&src);
    let rung = rung_frames(&src);
    // Output stops in segment 2 and comes back with the encoder restarted mid-segment 4.
    let mut frames: Vec<Arc<Frame>> = Vec::new();
    for f in rung {
        let t = f.dts.as_millis();
        if (4500..8900).contains(&t) {
            continue;
        }
        let restart = t >= 8900 && !frames.iter().any(|g| g.dts.as_millis() >= 8900);
        let mut g = Frame::new(f.track, f.dts, f.pts, f.keyframe, f.data.clone(), f.tracks.clone());
        g.discontinuity = restart;
        frames.push(Arc::new(g));
    }
    let (out, f) = follow_all(&frames, &log);
    let gaps: Vec<u64> = out
        .iter()
        .filter_map(|o| if let Followed::Gap { msn, .. } = o { Some(*msn) } else { None })
        .collect();
    assert_eq!(gaps, vec![3, 4]);
    for o in &out {
        if let Followed::Gap { duration, .. } = o {
            assert_eq!(*duration, Duration::from_secs(2));
        }
    }
    let parts = parts_of(&out);
    let after = parts.iter().find(|p| p.msn == 5).expect("segment 5");
    assert!(after.discontinuity && after.index == 0 && after.frames[0].keyframe);
    // Segment 2 was cut short where the output stopped, and ends the segment.
    let last2 = parts.iter().rfind(|p| p.msn == 2).unwrap();
    assert!(last2.ends_segment);
    // MSNs are consecutive across parts and gaps.
    let mut msns: Vec<u64> = parts.iter().map(|p| p.msn).chain(gaps).collect();
    msns.sort();
    msns.dedup();
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    assert_eq!(f.stats().gaps, 2);
}

#[test]
fn a_frame_waits_until_the_source_has_reached_it() {
    let src = source_frames(200, 60);
    let (_, full) = source_log(&src);
    let (_, partial) = source_log(&src[..100]);
    let rung = rung_frames(&src);
    let mut f = Follower::new();
    let mut out = Vec::new();
    for fr in &rung {
        f.push(fr.clone(), &mut out);
        f.drive(&partial, &mut out);
    }
    let held_back = parts_of(&out).len();
    f.drive(&full, &mut out);
    let caught_up = parts_of(&out).len();
    assert!(held_back > 0 && caught_up > held_back, "{held_back} then {caught_up}");
    // Nothing was dropped while waiting.
    assert_eq!(f.stats().dropped_frames, 0);
}

#[test]
fn a_part_cut_short_never_ends_past_the_part_target() {
    let src = source_frames(200, 60);
    let (_, log) = source_log(&src);
    let mut f = Follower::with_part_target(Duration::from_millis(200));
    let mut out = Vec::new();
    // Frames until 1.1 s, then a jump of 0.5 s with no frames: the open part ends, predicted
    // or at the next frame, at most one part target after it started.
    for fr in
        rung_frames(&src).into_iter().filter(|fr| fr.dts.as_millis() < 1100 || fr.dts.as_millis() >= 1600)
    {
        f.push(fr, &mut out);
        f.drive(&log, &mut out);
    }
    f.finish(&log, &mut out);
    for p in parts_of(&out) {
        assert!(
            p.duration() <= Duration::from_millis(200) + Duration::from_micros(20),
            "part {}.{} {:?}",
            p.msn,
            p.index,
            p.duration()
        );
    }
}

#[test]
fn a_missing_forced_key_frame_ends_the_segment_and_waits_for_the_next() {
    let src = source_frames(400, 60);
    let (_, log) = source_log(&src);
    // The encoder did not make a key frame where source segment 2 starts (4 s).
    let rung: Vec<Arc<Frame>> = rung_frames(&src)
        .into_iter()
        .map(|f| {
            let key = f.keyframe && f.pts.as_millis() != 4100;
            Arc::new(Frame::new(f.track, f.dts, f.pts, key, f.data.clone(), f.tracks.clone()))
        })
        .collect();
    let (out, f) = follow_all(&rung, &log);
    assert_eq!(f.stats().misaligned, 1);
    let parts = parts_of(&out);
    assert!(parts.iter().rfind(|p| p.msn == 1).unwrap().ends_segment);
    assert!(!parts.iter().any(|p| p.msn == 2));
    let gaps: Vec<u64> = out
        .iter()
        .filter_map(|o| if let Followed::Gap { msn, .. } = o { Some(*msn) } else { None })
        .collect();
    assert_eq!(gaps, vec![2]);
    assert!(parts.iter().find(|p| p.msn == 3).unwrap().discontinuity);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever a rung loses (encoder restarts, missing forced key frames), what the follower
        /// emits is a valid LL-HLS timeline: segments in consecutive MSNs (media or gap), each
        /// starting on a key frame, parts numbered from 0 without holes, never ending before
        /// they start.
        #[test]
        fn a_rung_with_losses_still_makes_a_consecutive_timeline(
            gop in prop::sample::select(vec![30i64, 60, 90]),
            cuts in prop::collection::vec((0i64..600, 1i64..200), 0..4),
            unforced in prop::collection::vec(0i64..20, 0..3),
        ) {
            let src = source_frames(600, gop);
            let (_, log) = source_log(&src);
            let mut frames = Vec::new();
            let mut resumed = false;
            for f in rung_frames(&src) {
                let i = ((f.pts.as_millis() - 100) as f64 * 30.0 / 1000.0).round() as i64;
                if cuts.iter().any(|&(at, len)| (at..at + len).contains(&i)) {
                    resumed = true;
                    continue;
                }
                let key = f.keyframe && !unforced.contains(&(i / gop));
                let mut g = Frame::new(f.track, f.dts, f.pts, key, f.data.clone(), f.tracks.clone());
                g.discontinuity = std::mem::take(&mut resumed);
                frames.push(Arc::new(g));
            }
            let (mut out, mut follower) = follow_all(&frames, &log);
            follower.finish(&log, &mut out);
            let mut last: Option<(u64, u32)> = None;
            for o in &out {
                match o {
                    Followed::Gap { msn, .. } => {
                        if let Some((m, _)) = last { prop_assert_eq!(*msn, m + 1); }
                        last = Some((*msn, u32::MAX));
                    }
                    Followed::Part { part, .. } => {
                        prop_assert!(part.end >= part.start);
                        match last {
                            Some((m, i)) if m == part.msn => prop_assert_eq!(part.index, i + 1),
                            Some((m, _)) => {
                                prop_assert_eq!(part.msn, m + 1);
                                prop_assert_eq!(part.index, 0);
                            }
                            None => prop_assert_eq!(part.index, 0),
                        }
                        if part.index == 0 {
                            prop_assert!(part.frames[0].keyframe && part.frames[0].track == TrackKind::Video);
                        }
                        last = Some((part.msn, part.index));
                    }
                }
            }
        }
    }
}
