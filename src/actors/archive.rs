//! Live-to-VOD: the `ArchiveWriter` of each live session, and the index the VOD routes serve
//! recordings from.
//!
//! A live session's channel starts the archive as a supervised output (`run_session`) when
//! `[archive] enabled`. It makes the recording's video (`Store::create_recording`: a `videos`
//! row, source `live`, status `live`, and its `recordings` row) and runs one `RenditionWriter`
//! per rendition of the session's LL-HLS entry, the ladder's rungs included as they appear.
//! Each writer follows its rendition's window, so the archive holds the very CMAF the live
//! output served (no second muxer, no re-encoding, rungs cut in step with the source), and
//! writes each part as it completes: a crash loses at most the part being made.
//!
//! On disk (`[archive] dir`, one directory per video, `storage.rs`):
//! `<video id>/<rendition>/{journal, init-<v>.mp4, seg-<msn>.m4s}` while it records; when it
//! ends, `<rendition>/index.m3u8` (VOD) and `<video id>/index.m3u8` (multivariant) are written
//! too (temporary name, flush, rename), so the directory plays on its own. The journal
//! (`journal.rs`) is the truth: the VOD routes render playlists from it (tokens in every URI),
//! a supervised restart continues from it, and at start `recover` finishes what a crash left
//! (cuts a torn line and unnamed bytes, writes the playlists, marks the video ready).
//!
//! A publisher that reconnects within the grace period continues the live session, so its
//! windows and this recording continue too (the segment after the break carries the
//! discontinuity the packager gave it). Storage trouble never reaches the live output: a writer
//! that cannot write drops what it was writing, records a gap and resumes at the next segment.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::hls::{HlsChannel, HlsRendition, SOURCE};
use crate::metrics::metrics;
use crate::protocols::hls::{
    render_multivariant, render_recorded, RecordedKind, RecordedPlaylist, RecordedSegment, RenderOptions,
    VariantStream,
};
use crate::store::{NewRecording, Recording, RecordingProgress, RecordingSettings, RecordingState, Store};

pub mod journal;
mod manifest;
pub mod remote;
pub mod retention;
pub mod storage;
mod writer;

use journal::{init_file, segment_file, RecordedRendition};
use storage::{LocalStorage, Storage};
use writer::{repair, RenditionWriter};

/// When written media is forced to the disk (`[archive] sync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// Never: the kernel writes back at its own pace.
    None,
    /// Each segment (and the journal) as it completes.
    Segment,
    /// Every part.
    Part,
}

/// `[archive]`, resolved.
#[derive(Clone, Debug)]
pub struct ArchiveSettings {
    pub enabled: bool,
    pub dir: std::path::PathBuf,
    pub sync: SyncPolicy,
    pub progress_interval: Duration,
    /// How far back a live channel's DVR playlist reaches.
    pub dvr_window: Duration,
    /// Default retention: days a recording is kept (0: forever).
    pub keep_days: u64,
    /// Default retention: a channel's newest recordings up to this many bytes (0: no limit).
    pub keep_bytes: u64,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// A poster (JPEG of the first key frame) per recording, when ffmpeg is found.
    pub posters: bool,
    /// ffmpeg (for posters): a path or a name on `PATH`.
    pub ffmpeg: String,
    /// Where finished recordings move, when configured.
    pub s3: Option<remote::S3Settings>,
    /// How often a move that failed (the object store away) is tried again.
    pub move_retry: Duration,
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        ArchiveSettings {
            enabled: true,
            dir: std::path::PathBuf::from("./data/archive"),
            sync: SyncPolicy::Segment,
            progress_interval: Duration::from_secs(10),
            dvr_window: Duration::from_secs(2 * 3600),
            keep_days: 0,
            keep_bytes: 0,
            retention_interval: Duration::from_secs(600),
            posters: true,
            ffmpeg: "ffmpeg".to_owned(),
            s3: None,
            move_retry: Duration::from_secs(30),
        }
    }
}

/// How often a session checks for new renditions (a ladder's rungs) and for its end.
const SESSION_TICK: Duration = Duration::from_millis(500);
/// Finished recordings' indexes kept in memory for the VOD routes, at most (past this the cache
/// starts over; a miss costs reading the journals).
const FINISHED_CACHE_MAX: usize = 512;

/// One recording's renditions as their journals say, shared by its writers (while it records)
/// and the VOD routes.
pub struct RecordingIndex {
    recording: AtomicBool,
    renditions: RwLock<Vec<(String, Arc<RwLock<RecordedRendition>>)>>,
}

impl RecordingIndex {
    fn new(recording: bool) -> Self {
        RecordingIndex { recording: AtomicBool::new(recording), renditions: RwLock::new(Vec::new()) }
    }

    /// Still recording: playlists are EVENT, without an end.
    pub fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// Rendition names, `source` first, then by picture height, highest first.
    pub fn rendition_names(&self) -> Vec<String> {
        let list = self.renditions.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<(bool, u32, String)> = list
            .iter()
            .map(|(n, r)| {
                let r = r.read().unwrap_or_else(|p| p.into_inner());
                let h = r.current_init().and_then(|i| i.resolution).map_or(0, |(_, h)| h);
                (n != SOURCE, u32::MAX - h, n.clone())
            })
            .collect();
        names.sort();
        names.into_iter().map(|(_, _, n)| n).collect()
    }

    /// Read one rendition's index.
    pub fn with_rendition<T>(&self, name: &str, f: impl FnOnce(&RecordedRendition) -> T) -> Option<T> {
        let r = self.rendition(name)?;
        let r = r.read().unwrap_or_else(|p| p.into_inner());
        Some(f(&r))
    }

    fn rendition(&self, name: &str) -> Option<Arc<RwLock<RecordedRendition>>> {
        let list = self.renditions.read().unwrap_or_else(|p| p.into_inner());
        list.iter().find(|(n, _)| n == name).map(|(_, r)| r.clone())
    }

    fn add(&self, name: &str, r: RecordedRendition) -> Arc<RwLock<RecordedRendition>> {
        let mut list = self.renditions.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, existing)) = list.iter().find(|(n, _)| n == name) {
            return existing.clone();
        }
        let r = Arc::new(RwLock::new(r));
        list.push((name.to_owned(), r.clone()));
        r
    }

    /// Duration (the source's, or the longest rendition's), bytes, for the video's row.
    fn progress(&self, gaps: u64) -> RecordingProgress {
        let list = self.renditions.read().unwrap_or_else(|p| p.into_inner());
        let (mut duration, mut bytes) = (Duration::ZERO, 0u64);
        for (name, r) in list.iter() {
            let r = r.read().unwrap_or_else(|p| p.into_inner());
            let d = r.duration(true);
            if name == SOURCE || d > duration {
                duration = if name == SOURCE { d } else { duration.max(d) };
            }
            bytes += r.bytes();
        }
        RecordingProgress {
            duration_ms: duration.as_millis() as i64,
            size_bytes: bytes as i64,
            gaps: gaps as i64,
        }
    }

    /// The media playlist of one rendition: EVENT while recording (complete segments only), VOD
    /// after. URIs are relative to the rendition's directory.
    pub fn media_playlist(&self, name: &str, uri_query: &str) -> Option<String> {
        let view = View { finished: !self.is_recording(), window: None, prefix: "" };
        self.with_rendition(name, |r| render_media_playlist(r, &view, uri_query))
    }

    /// The DVR playlist of one rendition of a recording in progress: its newest `window` of
    /// complete segments (all of them, as an EVENT playlist, while it is shorter), media URIs
    /// under `dvr/` beside the live playlist.
    pub fn dvr_playlist(&self, name: &str, window: Duration, uri_query: &str) -> Option<String> {
        let view = View { finished: !self.is_recording(), window: Some(window), prefix: "dvr/" };
        self.with_rendition(name, |r| render_media_playlist(r, &view, uri_query))
    }

    /// The multivariant playlist; URIs `<rendition>/index.m3u8`.
    pub fn multivariant(&self, uri_query: &str) -> String {
        self.variants("index.m3u8", uri_query)
    }

    /// The DASH manifest (MPEG-DASH over the same CMAF files); `None` without video.
    pub fn mpd(&self, uri_query: &str) -> Option<String> {
        manifest::render(self, uri_query, SystemTime::now())
    }

    /// The DVR multivariant playlist; URIs `<rendition>/dvr.m3u8`.
    pub fn dvr_multivariant(&self, uri_query: &str) -> String {
        self.variants("dvr.m3u8", uri_query)
    }

    /// One variant per rendition with video (the source always), `playlist` in its directory.
    fn variants(&self, playlist: &str, uri_query: &str) -> String {
        let is_video = |codecs: &str| ["avc1", "avc3", "hvc1", "hev1"].iter().any(|c| codecs.contains(c));
        let variants: Vec<VariantStream> = self
            .rendition_names()
            .iter()
            .filter_map(|name| {
                self.with_rendition(name, |r| {
                    let init = r.current_init().filter(|i| name == SOURCE || is_video(&i.codecs))?;
                    let (peak, avg) = r.bandwidth();
                    Some(VariantStream {
                        uri: format!("{name}/{playlist}"),
                        bandwidth: peak.max(1),
                        average_bandwidth: (avg > 0).then_some(avg),
                        codecs: init.codecs.clone(),
                        resolution: init.resolution,
                        frame_rate: r.frame_rate(),
                    })
                })
                .flatten()
            })
            .collect();
        render_multivariant(&variants, &RenderOptions { uri_query, ..Default::default() })
    }

    /// Whether `file` (`init-<v>.mp4`, `seg-<msn>.m4s`) of rendition `name` may be served: an init
    /// the journal names, or a segment it lists as complete (or any listed one once finished).
    pub fn serves(&self, name: &str, file: &str) -> bool {
        let finished = !self.is_recording();
        self.with_rendition(name, |r| {
            if let Some(v) = file.strip_prefix("init-").and_then(|s| s.strip_suffix(".mp4")) {
                return v
                    .parse::<u32>()
                    .is_ok_and(|v| r.inits.iter().any(|i| i.version == v) && init_file(v) == file);
            }
            if let Some(n) = file.strip_prefix("seg-").and_then(|s| s.strip_suffix(".m4s")) {
                return n.parse::<u64>().is_ok_and(|msn| {
                    segment_file(msn) == file && r.listed(finished).any(|s| s.msn == msn && !s.gap)
                });
            }
            false
        })
        .unwrap_or(false)
    }
}

/// Which playlist of a recording.
struct View<'a> {
    /// The recording ended: VOD, and a trailing segment that never completed is listed.
    finished: bool,
    /// Only the newest this long (DVR).
    window: Option<Duration>,
    /// Before every media URI (`dvr/`).
    prefix: &'a str,
}

/// A media playlist from a rendition's index: the listed segments with their maps,
/// discontinuities and dates.
fn render_media_playlist(r: &RecordedRendition, view: &View, uri_query: &str) -> String {
    let listed: Vec<&journal::SegmentInfo> = r.listed(view.finished).collect();
    // A window keeps the newest segments that fit in it; the rest slid off its start.
    let skip = match view.window {
        Some(window) => {
            let mut kept = Duration::ZERO;
            let fit = listed
                .iter()
                .rev()
                .take_while(|s| {
                    kept += s.duration;
                    kept <= window
                })
                .count();
            listed.len() - fit
        }
        None => 0,
    };
    let discontinuity_sequence = listed[..skip].iter().filter(|s| s.discontinuity).count() as u64;
    let mut current_init = None;
    let segments = listed[skip..]
        .iter()
        .map(|s| {
            let map_uri = (!s.gap && current_init != Some(s.init_version)).then(|| {
                current_init = Some(s.init_version);
                format!("{}{}", view.prefix, init_file(s.init_version))
            });
            RecordedSegment {
                duration: s.duration,
                uri: format!("{}{}", view.prefix, segment_file(s.msn)),
                program_date_time: Some(s.program_date_time),
                discontinuity: s.discontinuity,
                map_uri,
                gap: s.gap,
            }
        })
        .collect();
    let kind = match (view.finished, skip) {
        (true, 0) => RecordedKind::Vod,
        (false, 0) => RecordedKind::Event,
        _ => RecordedKind::Sliding,
    };
    let pl = RecordedPlaylist {
        kind,
        target_duration: r.longest_segment(),
        media_sequence: skip as u64,
        discontinuity_sequence,
        segments,
    };
    render_recorded(&pl, &RenderOptions { uri_query, ..Default::default() })
}

/// The archive: settings, storage, the recordings being made, and recent finished ones.
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ArchiveSettings,
    storage: Arc<dyn Storage>,
    backend: &'static str,
    store: Option<Store>,
    active: DashMap<i64, Arc<RecordingIndex>>,
    /// The recording of each live channel's session (DVR).
    by_channel: DashMap<String, i64>,
    /// Channel owners' own recording settings, by channel name.
    channels: DashMap<String, RecordingSettings>,
    /// ffmpeg for posters, found at start.
    ffmpeg: Option<std::path::PathBuf>,
    /// The object store finished recordings move to.
    remote: Option<Arc<remote::Remote>>,
    finished: DashMap<i64, Arc<RecordingIndex>>,
}

impl Archive {
    /// The archive on the local filesystem under `settings.dir`, moving finished recordings to
    /// the object store of `settings.s3` when there is one.
    pub fn new(settings: ArchiveSettings, store: Store) -> crate::Result<Self> {
        let remote = settings.s3.as_ref().map(remote::Remote::new).transpose()?.map(Arc::new);
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(settings.dir.clone()));
        let mut archive = Self::with_storage(settings, Some(store), storage, "local");
        Arc::get_mut(&mut archive.inner).expect("not shared yet").remote = remote;
        Ok(archive)
    }

    pub(crate) fn with_storage(
        settings: ArchiveSettings,
        store: Option<Store>,
        storage: Arc<dyn Storage>,
        backend: &'static str,
    ) -> Self {
        let ffmpeg = if settings.enabled && settings.posters {
            crate::actors::transcode::find_binary(&settings.ffmpeg)
        } else {
            None
        };
        Archive {
            inner: Arc::new(Inner {
                settings,
                storage,
                backend,
                store,
                active: DashMap::new(),
                by_channel: DashMap::new(),
                channels: DashMap::new(),
                ffmpeg,
                remote: None,
                finished: DashMap::new(),
            }),
        }
    }

    /// No recording (tests of other parts, `[archive] enabled = false`).
    pub fn disabled() -> Self {
        let settings = ArchiveSettings { enabled: false, ..ArchiveSettings::default() };
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(settings.dir.clone()));
        Self::with_storage(settings, None, storage, "local")
    }

    pub fn enabled(&self) -> bool {
        self.inner.settings.enabled && self.inner.store.is_some()
    }

    /// The index of recording `video_id`: the one being made, a cached finished one, or read
    /// from its journals. `None` when there is no such recording on storage.
    pub async fn index(&self, video_id: i64) -> Option<Arc<RecordingIndex>> {
        if let Some(i) = self.inner.active.get(&video_id) {
            return Some(i.clone());
        }
        if let Some(i) = self.inner.finished.get(&video_id) {
            return Some(i.clone());
        }
        let storage = self.inner.storage.clone();
        let local = tokio::task::spawn_blocking(move || load_index(storage.as_ref(), video_id)).await.ok()?;
        let loaded = match (local, &self.inner.remote) {
            (Some(i), _) => i,
            (None, Some(remote)) => remote.load_index(video_id).await?,
            (None, None) => return None,
        };
        let loaded = Arc::new(loaded);
        if self.inner.finished.len() >= FINISHED_CACHE_MAX {
            self.inner.finished.clear();
        }
        // A recording that started meanwhile wins (its index is the live one).
        if let Some(i) = self.inner.active.get(&video_id) {
            return Some(i.clone());
        }
        self.inner.finished.insert(video_id, loaded.clone());
        Some(loaded)
    }

    /// Where a recording's file (`<rendition>/<file>`, or `<file>` for the poster) is: on the
    /// local disk, or in the object store it moved to.
    pub fn locate(&self, video_id: i64, rel: &str) -> Located {
        let rel = format!("{video_id}/{rel}");
        if let Some(p) = self.inner.storage.local_path(&rel).filter(|p| p.is_file()) {
            return Located::Local(p);
        }
        match &self.inner.remote {
            Some(r) => Located::Remote(r.clone(), rel),
            None => Located::Missing,
        }
    }

    /// Move finished recording `video_id` to the object store (if there is one): upload, mark
    /// its row, remove the local copy. Returns whether it moved.
    pub async fn move_to_remote(&self, store: &Store, video_id: i64) -> bool {
        let Some(remote) = self.inner.remote.clone() else { return false };
        let started = std::time::Instant::now();
        match remote.upload(self.inner.storage.clone(), video_id).await {
            Ok(bytes) => {
                if let Err(e) = store.set_recording_backend(video_id, "s3").await {
                    warn!(video_id, error = %e, "cannot mark the recording moved; the move will be repeated");
                    return false;
                }
                metrics().archive_bytes.with_label_values(&["s3"]).inc_by(bytes);
                metrics().archive_moves.with_label_values(&["ok"]).inc();
                let storage = self.inner.storage.clone();
                let removed =
                    tokio::task::spawn_blocking(move || storage.remove_dir(&video_id.to_string())).await;
                if let Ok(Err(e)) | Err(e) = removed.map_err(std::io::Error::other) {
                    warn!(video_id, error = %e, "moved to the object store; cannot remove the local copy");
                }
                info!(
                    video_id,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "recording moved to the object store"
                );
                true
            }
            Err(e) => {
                metrics().archive_moves.with_label_values(&["error"]).inc();
                warn!(video_id, error = %e, "cannot move the recording to the object store yet; it plays from the local disk meanwhile");
                false
            }
        }
    }

    /// Move every ready recording still on the local disk, every `move_retry`, until
    /// `shutdown` (nothing without an object store).
    pub async fn run_mover(self, shutdown: tokio_util::sync::CancellationToken) {
        let (Some(store), Some(_)) = (self.inner.store.clone(), self.inner.remote.clone()) else { return };
        let mut tick = tokio::time::interval(self.inner.settings.move_retry);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let waiting = match store.recordings_on(self.inner.backend).await {
                Ok(list) => list,
                Err(e) => {
                    warn!(error = %e, "cannot list recordings to move");
                    continue;
                }
            };
            for rec in waiting {
                if !self.move_to_remote(&store, rec.video_id).await {
                    break;
                }
            }
        }
    }

    /// Record one live session of `channel` (a supervised output of the channel: a restart
    /// continues the same recording, which `recording` holds).
    pub async fn run_session(self, channel: String, entry: Arc<HlsChannel>, recording: Arc<OnceCell<i64>>) {
        let Some(store) = self.inner.store.clone() else { return };
        let video_id = match self.create(&store, &channel, &entry, &recording).await {
            Some(id) => id,
            None => return,
        };
        let index =
            self.inner.active.entry(video_id).or_insert_with(|| Arc::new(RecordingIndex::new(true))).clone();
        self.inner.by_channel.insert(channel.clone(), video_id);
        metrics().archive_recordings_active.inc();
        let _active = scopeguard(|| metrics().archive_recordings_active.dec());
        let mut writers = tokio::task::JoinSet::new();
        let mut started: HashSet<String> = HashSet::new();
        let gaps = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut last_progress = tokio::time::Instant::now();
        loop {
            for r in entry.renditions().iter() {
                if started.insert(r.name.clone()) {
                    writers.spawn(self.clone().run_rendition(
                        video_id,
                        r.clone(),
                        index.clone(),
                        gaps.clone(),
                    ));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SESSION_TICK) => {}
                done = writers.join_next(), if !writers.is_empty() => {
                    if let Some(Err(e)) = done {
                        if e.is_panic() {
                            std::panic::resume_unwind(e.into_panic());
                        }
                    }
                }
            }
            let ended = entry.renditions().iter().all(|r| r.progress().ended);
            if ended && writers.is_empty() && *entry.subscribe_settled().borrow() {
                break;
            }
            if last_progress.elapsed() >= self.inner.settings.progress_interval {
                last_progress = tokio::time::Instant::now();
                let p = index.progress(gaps.load(Ordering::Relaxed));
                if let Err(e) = store.update_recording(video_id, &p).await {
                    warn!(%channel, video_id, error = %e, "cannot update the recording's progress");
                }
            }
        }
        self.finish(&store, video_id, &index, gaps.load(Ordering::Relaxed), &channel).await;
    }

    /// The recording's video, made once per live session (kept across supervised restarts).
    /// Retried while the store is away; gives up when the session ends first.
    async fn create(
        &self,
        store: &Store,
        channel: &str,
        entry: &HlsChannel,
        recording: &OnceCell<i64>,
    ) -> Option<i64> {
        let mut delay = Duration::from_millis(500);
        let mut warned = false;
        loop {
            let made = recording
                .get_or_try_init(|| async {
                    let c = store.channel_by_name(channel).await?.ok_or_else(|| {
                        crate::Error::not_found(format!("channel '{channel}' is not in the store"))
                    })?;
                    let rec = store
                        .create_recording(NewRecording {
                            channel_id: c.id,
                            owner_id: c.owner_id,
                            title: c.title,
                            visibility: c.visibility,
                            backend: self.inner.backend.to_owned(),
                        })
                        .await?;
                    info!(%channel, video_id = rec.video_id, "recording the live session");
                    Ok::<i64, crate::Error>(rec.video_id)
                })
                .await;
            match made {
                Ok(id) => return Some(*id),
                Err(e) if e.kind == crate::ErrorKind::NotFound => {
                    // A channel only the config knows (tests, pulled sources without a row).
                    info!(%channel, "not recorded: the channel has no row in the store");
                    return None;
                }
                Err(e) => {
                    if !std::mem::replace(&mut warned, true) {
                        warn!(%channel, error = %e, "cannot create the recording's video yet; retrying (the live window is kept meanwhile)");
                    }
                }
            }
            if entry.renditions().iter().all(|r| r.progress().ended) {
                return None;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// One rendition's writer, until its window ends.
    async fn run_rendition(
        self,
        video_id: i64,
        rendition: Arc<HlsRendition>,
        index: Arc<RecordingIndex>,
        gaps: Arc<std::sync::atomic::AtomicU64>,
    ) {
        let dir = format!("{video_id}/{}", rendition.name);
        let shared = index.add(&rendition.name, RecordedRendition::default());
        let storage = self.inner.storage.clone();
        let sync = self.inner.settings.sync;
        let backend = self.inner.backend;
        let resumed = {
            let (dir, shared) = (dir.clone(), shared.clone());
            tokio::task::spawn_blocking(move || RenditionWriter::resume(storage, dir, shared, sync, backend))
                .await
        };
        let mut writer = match resumed {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => {
                warn!(%dir, error = %e, "cannot open the rendition's archive; not recording it");
                metrics().archive_gaps.inc();
                gaps.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let mut progress = rendition.subscribe();
        loop {
            let before = writer.gaps;
            let over = writer.catch_up(&rendition).await;
            gaps.fetch_add(writer.gaps - before, Ordering::Relaxed);
            if over {
                return;
            }
            if progress.changed().await.is_err() {
                // The rendition is gone without an end (cannot happen while the entry holds it).
                let _ = writer.catch_up(&rendition).await;
                return;
            }
        }
    }

    /// The session is over: write the playlists, mark the video ready (or failed when nothing
    /// was recorded), hand the index to the finished cache.
    async fn finish(
        &self,
        store: &Store,
        video_id: i64,
        index: &Arc<RecordingIndex>,
        gaps: u64,
        channel: &str,
    ) {
        index.recording.store(false, Ordering::Release);
        let storage = self.inner.storage.clone();
        let idx = index.clone();
        let written =
            tokio::task::spawn_blocking(move || write_playlists(storage.as_ref(), video_id, &idx)).await;
        if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
            warn!(%channel, video_id, error = %e, "cannot write the recording's playlists (it is served from its journal)");
        }
        self.make_poster(video_id, index).await;
        let p = index.progress(gaps);
        let (state, reason) = outcome(index, &p);
        let finished = store.finish_recording(video_id, state, &p, crate::store::now_ms(), reason).await;
        match &finished {
            Ok(()) => {
                info!(%channel, video_id, duration_ms = p.duration_ms, bytes = p.size_bytes, gaps, state = state.as_str(), "recording finished")
            }
            Err(e) => {
                warn!(%channel, video_id, error = %e, "cannot mark the recording finished; the next start will")
            }
        }
        self.inner.finished.insert(video_id, index.clone());
        self.inner.active.remove(&video_id);
        self.inner.by_channel.remove_if(channel, |_, id| *id == video_id);
        if finished.is_ok() && state == RecordingState::Ready {
            self.move_to_remote(store, video_id).await;
        }
    }

    /// The recording of `channel`'s live session, if it is being recorded: its video id and
    /// index (the DVR routes).
    pub fn live_recording(&self, channel: &str) -> Option<(i64, Arc<RecordingIndex>)> {
        let id = *self.inner.by_channel.get(channel)?;
        Some((id, self.inner.active.get(&id)?.clone()))
    }

    /// How far back DVR playlists reach.
    pub fn dvr_window(&self) -> Duration {
        self.inner.settings.dvr_window
    }

    /// Finish every recording a crash (or a lost store) left unfinished: make its files agree
    /// with its journals, write its playlists, and mark its video ready. Returns how many.
    pub async fn recover(&self) -> crate::Result<usize> {
        let Some(store) = self.inner.store.clone() else { return Ok(0) };
        let open = store.unfinished_recordings().await?;
        let mut n = 0;
        for rec in open {
            if self.inner.active.contains_key(&rec.video_id) {
                continue;
            }
            self.recover_one(&store, &rec).await;
            n += 1;
        }
        Ok(n)
    }

    async fn recover_one(&self, store: &Store, rec: &Recording) {
        let storage = self.inner.storage.clone();
        let id = rec.video_id;
        let repaired = tokio::task::spawn_blocking(move || {
            let index = load_index_repairing(storage.as_ref(), id)?;
            write_playlists(storage.as_ref(), id, &index)?;
            Ok::<RecordingIndex, std::io::Error>(index)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        let (state, p, reason) = match &repaired {
            Ok(index) => {
                let p = index.progress(rec.gaps.max(0) as u64);
                let (state, reason) = outcome(index, &p);
                (state, p, reason.map(str::to_owned))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
                RecordingState::Failed,
                RecordingProgress::default(),
                Some("no media was recorded".to_owned()),
            ),
            Err(e) => {
                warn!(video_id = id, error = %e, "cannot recover the recording's files");
                (RecordingState::Failed, RecordingProgress::default(), Some(format!("recovery failed: {e}")))
            }
        };
        if let Ok(index) = &repaired {
            self.make_poster(id, index).await;
        }
        let ended = rec.started_at_ms + p.duration_ms;
        match store.finish_recording(id, state, &p, ended, reason.as_deref()).await {
            Ok(()) => {
                metrics().archive_recoveries.inc();
                info!(
                    video_id = id,
                    duration_ms = p.duration_ms,
                    state = state.as_str(),
                    "unfinished recording recovered"
                );
            }
            Err(e) => warn!(video_id = id, error = %e, "cannot finish the recovered recording"),
        }
        if let Ok(index) = repaired {
            self.inner.finished.insert(id, Arc::new(index));
            if state == RecordingState::Ready {
                self.move_to_remote(store, id).await;
            }
        }
    }
}

/// Where a recording's file is (`Archive::locate`).
pub enum Located {
    Local(std::path::PathBuf),
    /// In the object store, under this name relative to its prefix.
    Remote(Arc<remote::Remote>, String),
    Missing,
}

/// Ready with media, failed without.
fn outcome(index: &RecordingIndex, p: &RecordingProgress) -> (RecordingState, Option<&'static str>) {
    let any = index
        .rendition_names()
        .iter()
        .any(|n| index.with_rendition(n, |r| r.listed(true).any(|s| !s.gap)) == Some(true));
    if any && p.size_bytes > 0 {
        (RecordingState::Ready, None)
    } else {
        (RecordingState::Failed, Some("no media was recorded"))
    }
}

/// Read a finished recording's index from its journals (no changes to storage).
fn load_index(storage: &dyn Storage, video_id: i64) -> Option<RecordingIndex> {
    let names = storage.list(&video_id.to_string()).ok()?;
    let index = RecordingIndex::new(false);
    let mut any = false;
    for name in names {
        let Ok(text) = storage.read(&format!("{video_id}/{name}/{}", journal::JOURNAL)) else { continue };
        let (r, _) = RecordedRendition::replay(&String::from_utf8_lossy(&text));
        index.add(&name, r);
        any = true;
    }
    any.then_some(index)
}

/// Read a recording's index, repairing each rendition's files first (recovery).
fn load_index_repairing(storage: &dyn Storage, video_id: i64) -> std::io::Result<RecordingIndex> {
    let names = storage.list(&video_id.to_string())?;
    let index = RecordingIndex::new(false);
    for name in names {
        let dir = format!("{video_id}/{name}");
        if storage.len(&format!("{dir}/{}", journal::JOURNAL)).is_err() {
            continue;
        }
        let (mut r, open) = repair(storage, &dir)?;
        if let Some((msn, _)) = open {
            // The segment a crash interrupted ends with its journaled parts.
            let end = journal::Entry::End { msn, video_frames: 0 };
            storage.append(&format!("{dir}/{}", journal::JOURNAL), end.line().as_bytes())?;
            r.apply(&end);
        }
        index.add(&name, r);
    }
    Ok(index)
}

/// The playlists of a finished recording as files beside its media (no tokens: for players
/// reading the directory itself), each written atomically.
fn write_playlists(storage: &dyn Storage, video_id: i64, index: &RecordingIndex) -> std::io::Result<()> {
    for name in index.rendition_names() {
        let view = View { finished: true, window: None, prefix: "" };
        if let Some(text) = index.with_rendition(&name, |r| render_media_playlist(r, &view, "")) {
            storage.write_atomic(&format!("{video_id}/{name}/index.m3u8"), text.as_bytes())?;
        }
    }
    storage.write_atomic(&format!("{video_id}/index.m3u8"), index.multivariant("").as_bytes())
}

/// Run `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests;
