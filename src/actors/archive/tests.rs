//! The archive writer against a real channel (packager, windows) and a real store, on storage
//! that fails on demand: the live output never notices, the recording gets a gap and resumes.

use std::sync::atomic::Ordering;

use actix::Actor;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::storage::FullDisk;
use super::*;
use crate::actors::channel::{AddPublisher, Channel, ChannelDeps, ChannelSettings, PublisherLeft};
use crate::actors::hls::HlsSettings;
use crate::actors::supervise::Backoff;
use crate::media::frame::{Frame, TrackKind};
use crate::media::ring::{RingLimits, RingWriter};
use crate::media::time::MediaTime;
use crate::store::testing::TestDb;
use crate::store::{NewChannel, NewRecording, RecordingSettings, Visibility};

fn settings() -> ChannelSettings {
    ChannelSettings {
        reconnect_grace: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(60),
        ring: RingLimits { max_duration: Duration::from_secs(4), max_bytes: 1 << 20 },
        hls: HlsSettings {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            window: Duration::from_secs(30),
            block_timeout: Duration::from_secs(1),
        },
    }
}

/// Push `secs` of 30 fps video (a key frame every second) in half-second bursts, in real time.
async fn push(writer: &mut RingWriter, secs: u32, t: &mut i64) {
    let tracks = crate::actors::hls::tests::video_tracks();
    for _ in 0..secs * 2 {
        for _ in 0..15 {
            let ts = MediaTime::from_millis(*t * 1000 / 30);
            writer.push(Frame::new(
                TrackKind::Video,
                ts,
                ts,
                *t % 30 == 0,
                Bytes::from(vec![7u8; 900]),
                tracks.clone(),
            ));
            *t += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 10 s: {what}");
}

#[actix::test]
async fn a_full_disk_costs_the_recording_a_gap_and_never_the_live_output() {
    let db = TestDb::sqlite().await;
    db.store
        .create_channel(NewChannel {
            name: "studio".into(),
            title: Some("Studio".into()),
            owner_id: None,
            visibility: Visibility::Public,
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(FullDisk { inner: LocalStorage::new(dir.path()), full: AtomicBool::new(false) });
    let archive = Archive::with_storage(
        ArchiveSettings { dir: dir.path().into(), ..ArchiveSettings::default() },
        Some(db.store.clone()),
        disk.clone(),
        "local",
    );
    let deps = ChannelDeps {
        backoff: Backoff { initial: Duration::from_millis(50), ..Backoff::default() },
        archive: archive.clone(),
        ..ChannelDeps::current()
    };
    let hls = deps.hls.clone();
    let channel = Channel::new("studio".into(), settings(), Arc::new(DashMap::new()), deps).start();
    let grant = channel
        .send(AddPublisher {
            session_id: 1,
            cancel: CancellationToken::new(),
            visibility: Visibility::Public,
        })
        .await
        .unwrap()
        .unwrap();
    let mut writer = grant.writer;
    let mut t = 0;
    let gaps_before = metrics().archive_gaps.get();

    push(&mut writer, 3, &mut t).await;
    let live = hls.get("studio").unwrap().rendition(SOURCE).unwrap();
    let index = {
        let mut found = None;
        for _ in 0..100 {
            if let Some(i) = archive.index(1).await {
                found = Some(i);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.expect("the recording's index")
    };
    let recorded =
        |index: &RecordingIndex| index.with_rendition(SOURCE, |r| r.listed(false).count()).unwrap_or(0);
    eventually("two recorded segments", || recorded(&index) >= 2).await;

    // The disk fills up: the live window goes on, the archive records nothing.
    disk.full.store(true, Ordering::Release);
    let live_before = live.window().segments.back().unwrap().msn;
    let recorded_before = recorded(&index);
    push(&mut writer, 3, &mut t).await;
    let live_after = live.window().segments.back().unwrap().msn;
    assert!(
        live_after >= live_before + 2,
        "live output kept cutting segments ({live_before} -> {live_after})"
    );
    assert!(
        recorded(&index) <= recorded_before + 1,
        "nothing new is recorded on a full disk (the open segment may end)"
    );
    assert_eq!(metrics().archive_gaps.get() - gaps_before, 1, "one gap for the outage, however long");

    // Space again: recording resumes at the next segment, after a discontinuity.
    disk.full.store(false, Ordering::Release);
    push(&mut writer, 3, &mut t).await;
    eventually("recording resumed", || {
        index
            .with_rendition(SOURCE, |r| r.listed(false).any(|s| s.discontinuity && s.msn > live_after))
            .unwrap_or(false)
    })
    .await;

    drop(writer);
    channel.send(PublisherLeft { session_id: 1 }).await.unwrap();
    let mut rec = None;
    for _ in 0..200 {
        rec = db.store.recording(1).await.unwrap().filter(|r| r.state != RecordingState::Recording);
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rec = rec.expect("the recording finished after the session ended");
    assert_eq!((rec.state, rec.gaps), (RecordingState::Ready, 1));
    let playlist = std::fs::read_to_string(dir.path().join("1/source/index.m3u8")).unwrap();
    assert_eq!(playlist.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{playlist}");
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"));
    // Every listed segment is whole on disk: its file is as long as its journaled parts.
    index
        .with_rendition(SOURCE, |r| {
            for s in r.listed(true) {
                let len =
                    std::fs::metadata(dir.path().join(format!("1/source/seg-{}.m4s", s.msn))).unwrap().len();
                assert_eq!(len, s.bytes, "segment {}", s.msn);
            }
        })
        .unwrap();
}

#[test]
fn recovery_cuts_a_torn_journal_line_and_unnamed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path());
    let d = "5/source";
    let lines = [
        journal::Entry::Init {
            version: 0,
            codecs: "avc1.64001f".into(),
            resolution: Some((640, 360)),
            frame_rate: Some(30.0),
        },
        journal::Entry::Segment {
            msn: 0,
            pdt_ms: 1,
            discontinuity: false,
            init_version: 0,
            gap: false,
            start: Some(0),
            shift: 0,
        },
        journal::Entry::Part { msn: 0, duration: Duration::from_millis(500), independent: true, end: 10 },
    ];
    for e in &lines {
        storage.append(&format!("{d}/journal"), e.line().as_bytes()).unwrap();
    }
    storage.append(&format!("{d}/journal"), b"P 0 5000").unwrap(); // torn by the crash
    storage.append(&format!("{d}/seg-0.m4s"), &[1u8; 25]).unwrap(); // 15 bytes never named
    storage.write_atomic(&format!("{d}/init-0.mp4"), b"init").unwrap();
    let index = load_index_repairing(&storage, 5).unwrap();
    assert_eq!(storage.len(&format!("{d}/seg-0.m4s")).unwrap(), 10, "unnamed bytes are cut");
    let text = String::from_utf8(storage.read(&format!("{d}/journal")).unwrap()).unwrap();
    assert!(
        text.ends_with("E 0 0\n") && !text.contains("P 0 5000\n"),
        "torn line cut, segment ended:\n{text}"
    );
    let listed =
        index.with_rendition(SOURCE, |r| r.listed(false).map(|s| (s.msn, s.bytes)).collect::<Vec<_>>());
    assert_eq!(listed, Some(vec![(0, 10)]));
    write_playlists(&storage, 5, &index).unwrap();
    let pl = String::from_utf8(storage.read("5/source/index.m3u8").unwrap()).unwrap();
    assert!(pl.contains("#EXTINF:0.500,\nseg-0.m4s\n#EXT-X-ENDLIST\n"), "{pl}");
    assert!(String::from_utf8(storage.read("5/index.m3u8").unwrap()).unwrap().contains("RESOLUTION=640x360"));
}

#[tokio::test]
async fn retention_deletes_recordings_past_the_channels_age_or_size_media_first() {
    let db = TestDb::sqlite().await;
    let store = &db.store;
    let (channel, _) = store
        .create_channel(NewChannel {
            name: "keep".into(),
            title: None,
            owner_id: None,
            visibility: Visibility::Public,
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive =
        Archive::new(ArchiveSettings { dir: dir.path().into(), ..ArchiveSettings::default() }, store.clone())
            .unwrap();
    // Three finished recordings of 400 bytes each, oldest first, with media on disk.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let rec = store
            .create_recording(NewRecording {
                channel_id: channel.id,
                owner_id: None,
                title: "t".into(),
                visibility: Visibility::Public,
                backend: "local".into(),
            })
            .await
            .unwrap();
        let p = RecordingProgress { duration_ms: 1000, size_bytes: 400, gaps: 0 };
        store.finish_recording(rec.video_id, RecordingState::Ready, &p, 1, None).await.unwrap();
        std::fs::create_dir_all(dir.path().join(format!("{}/source", rec.video_id))).unwrap();
        std::fs::write(dir.path().join(format!("{}/source/seg-0.m4s", rec.video_id)), [0u8; 400]).unwrap();
        ids.push(rec.video_id);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let now = crate::store::now_ms();
    assert_eq!(archive.enforce_retention(store, now).await.unwrap(), 0, "the defaults keep everything");

    // Size: the newest 900 bytes stay (two recordings); the oldest goes, media and row.
    let own = |days, bytes| RecordingSettings { record: true, keep_days: days, keep_bytes: bytes };
    archive.set_channel("keep", Some(own(None, Some(900))));
    assert_eq!(archive.enforce_retention(store, now).await.unwrap(), 1);
    assert!(!dir.path().join(ids[0].to_string()).exists(), "its media are gone");
    assert!(store.video_by_id(ids[0]).await.unwrap().is_none(), "and its video");
    assert!(dir.path().join(ids[1].to_string()).exists() && dir.path().join(ids[2].to_string()).exists());

    // Age: two days on, a one-day policy takes the rest.
    archive.set_channel("keep", Some(own(Some(1), None)));
    assert_eq!(archive.enforce_retention(store, now).await.unwrap(), 0, "younger than a day");
    assert_eq!(archive.enforce_retention(store, now + 2 * 86_400_000).await.unwrap(), 2);
    assert!(store.finished_recordings(channel.id).await.unwrap().is_empty());
    assert!(metrics().archive_retention_deletions.get() >= 3);

    // The settings in force: the owner's over the defaults, and back.
    let s = archive.channel_settings("keep");
    assert_eq!((s.record, s.keep_days, s.keep_bytes, s.custom), (true, 1, 0, true));
    archive.set_channel("keep", Some(RecordingSettings { record: false, keep_days: None, keep_bytes: None }));
    assert!(!archive.records("keep"), "the owner turned recording off");
    archive.set_channel("keep", None);
    assert!(archive.records("keep") && !archive.channel_settings("keep").custom);
}
