use super::*;
use crate::media::frame::Frame;

/// H.264 video only, 64x36.
pub(crate) fn video_tracks() -> Arc<Tracks> {
    use crate::media::codec::{VideoCodec, VideoConfig};
    Arc::new(Tracks {
        video: Some(VideoConfig {
            codec: VideoCodec::H264,
            record: Bytes::from_static(b"\x01\x64\x00\x1f\xff"),
            width: 64,
            height: 36,
            codec_string: "avc1.64001f".into(),
        }),
        audio: None,
    })
}

fn rendition() -> Arc<HlsRendition> {
    Arc::new(HlsRendition::new(
        SOURCE,
        &HlsSettings {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(2),
            window: Duration::from_secs(30),
            block_timeout: Duration::from_secs(6),
        },
    ))
}

#[tokio::test]
async fn held_parts_are_released_once_the_reloads_blocked_on_the_same_part_are_answered() {
    let r = rendition();
    let seen = r.progress();
    let hold = r.hold_playlist(&seen);
    let mut media = r.subscribe_media();
    r.update(|w| w.codecs = "avc1.64001f".into());
    let published = r.progress();
    assert!(published.seq > seen.seq, "every publication has a newer seq");
    // Playlists see it at once; held part requests do not while the reload is held.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(media.borrow().seq, seen.seq, "parts released before the held reload was answered");
    drop(hold);
    tokio::time::timeout(Duration::from_millis(20), media.changed())
        .await
        .expect("parts released when the last held reload is answered")
        .expect("sender alive");
    assert_eq!(media.borrow().seq, published.seq);
}

#[tokio::test]
async fn held_parts_wait_at_most_the_cap_for_reloads() {
    let r = rendition();
    let _never_answered = r.hold_playlist(&r.progress());
    let mut media = r.subscribe_media();
    let start = std::time::Instant::now();
    r.update(|w| w.codecs = "avc1.64001f".into());
    tokio::time::timeout(Duration::from_secs(1), media.changed())
        .await
        .expect("parts released after the cap")
        .expect("sender alive");
    let waited = start.elapsed();
    assert!(waited >= MEDIA_RELEASE_CAP - Duration::from_millis(2), "released after {waited:?}");
    assert_eq!(media.borrow().seq, r.progress().seq);
}

#[tokio::test]
async fn with_no_reload_held_parts_are_released_with_the_playlists() {
    let r = rendition();
    let media = r.subscribe_media();
    r.update(|w| w.codecs = "avc1.64001f".into());
    // Nothing to wait for: published in the same call, no task spawned.
    assert_eq!(media.borrow().seq, r.progress().seq);
}

#[tokio::test]
async fn a_burst_of_frames_is_published_as_paced_parts() {
    use crate::media::ring::{FrameRing, RingLimits};

    let tracks = video_tracks();
    let ring = FrameRing::new(RingLimits { max_duration: Duration::from_secs(10), max_bytes: 1 << 20 });
    let mut writer = ring.writer(false);
    // 1.2 s of 30 fps video arriving at once: five 200 ms parts complete immediately.
    for i in 0..37 {
        let t = MediaTime::from_millis((i as f64 * 1000.0 / 30.0).round() as i64);
        writer.push(Frame::new(TrackKind::Video, t, t, i == 0, Bytes::from_static(b"frame"), tracks.clone()));
    }
    let r = rendition();
    let mut rx = r.subscribe();
    let settings = HlsSettings {
        part_target: Duration::from_millis(200),
        segment_target: Duration::from_secs(2),
        window: Duration::from_secs(30),
        block_timeout: Duration::from_secs(6),
    };
    let packager = HlsPackager {
        channel: "main".into(),
        rendition: r.clone(),
        settings,
        clock: Clock::system(),
        follow: None,
    };
    let packager = tokio::spawn(packager.run(ring.reader()));
    let mut seen = Vec::new();
    while seen.len() < 5 {
        tokio::time::timeout(Duration::from_secs(2), rx.changed()).await.expect("a part").expect("alive");
        let p = *rx.borrow_and_update();
        if p.parts > seen.last().map_or(0, |(n, _)| *n) {
            seen.push((p.parts, std::time::Instant::now()));
        }
    }
    let counts: Vec<u32> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5], "one part per publication");
    for w in seen.windows(2) {
        let gap = w[1].1 - w[0].1;
        assert!(gap >= Duration::from_millis(90), "parts published {gap:?} apart (want >= 100 ms)");
    }
    ring.close();
    packager.await.unwrap();
    assert!(r.progress().ended);
}

#[test]
fn target_duration_is_fixed_by_the_first_segment_and_parts_live_with_their_segment() {
    let tracks = video_tracks();
    let settings = HlsSettings {
        part_target: Duration::from_millis(200),
        segment_target: Duration::from_secs(2),
        window: Duration::from_secs(60),
        block_timeout: Duration::from_secs(6),
    };
    let r = rendition();
    let mut segmenter = Segmenter::new(SegmenterConfig {
        part_target: settings.part_target,
        segment_target: settings.segment_target,
    });
    let mut muxer = CmafMuxer::new();
    let out = Publisher { rendition: &r, settings: &settings, clock: Clock::system(), target_from: None };
    let mut parts = Vec::new();
    let mut targets = Vec::new();
    // 30 fps; key frames 3.33 s apart, then one 5 s gap, then 3.33 s again.
    let keys = [0, 100, 250, 350, 450];
    for i in 0..=450 {
        let t = MediaTime::from_millis((i as f64 * 1000.0 / 30.0).round() as i64);
        let frame =
            Frame::new(TrackKind::Video, t, t, keys.contains(&i), Bytes::from_static(b"f"), tracks.clone());
        segmenter.push(Arc::new(frame), &mut parts);
        for part in parts.drain(..) {
            out.publish_part(&mut muxer, part, SystemTime::now(), segmenter.frame_interval());
            let w = r.window();
            if w.segments.iter().any(|s| s.complete()) {
                targets.push(w.target_duration);
            }
        }
    }
    let w = r.window();
    // In tenths of a second (frame times are rounded to whole milliseconds).
    let durations: Vec<u64> = w
        .segments
        .iter()
        .filter(|s| s.complete())
        .map(|s| (s.duration.as_millis() as u64 + 50) / 100)
        .collect();
    assert_eq!(durations, [33, 50, 33, 33], "segments cut at the key frames");
    // From the first segment (3.33 s rounds to 3, over the 2 s segment target) on, 3 s.
    assert!(!targets.is_empty() && targets.iter().all(|t| *t == Duration::from_secs(3)), "{targets:?}");
    assert!(w.target_fixed && w.over_target_reported, "the 5 s segment was reported");

    // Parts stay as long as their segment (here all of them: 60 s window), as slices of
    // the segment's own buffer.
    for seg in w.segments.iter().filter(|s| s.complete()) {
        let data = seg.data.as_ref().expect("a complete segment has its bytes");
        assert!(!seg.parts.is_empty(), "segment {} lost its parts", seg.msn);
        let joined: Vec<u8> = seg.parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        assert_eq!(&joined[..], &data[..], "segment {} is its parts back to back", seg.msn);
        let range = data.as_ptr_range();
        assert!(
            seg.parts.iter().all(|p| range.contains(&p.data.as_ptr())),
            "parts share the segment's buffer"
        );
    }
}

#[test]
fn outside_a_runtime_parts_are_published_at_once() {
    let r = rendition();
    let _held = r.hold_playlist(&r.progress());
    r.update(|w| w.ended = true);
    assert_eq!(r.subscribe_media().borrow().seq, r.progress().seq);
    assert!(r.subscribe_media().borrow().ended);
}
