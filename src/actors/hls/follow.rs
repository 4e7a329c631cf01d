//! The packager of a rendition cut in step with another (a transcode ladder rung following the
//! source): frames go through a `media::follow::Follower` that cuts where the source's packager
//! cut, instead of through a `Segmenter`. Parts get the source's MSNs, part indexes and program
//! date times; source segments the rung has no media for are published as gap segments.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{HlsPackager, HlsRendition, Publisher, SegmentData};
use crate::media::follow::{Followed, Follower};
use crate::media::ring::RingReader;
use crate::metrics::metrics;
use crate::protocols::fmp4::CmafMuxer;

impl HlsPackager {
    pub(super) async fn run_following(self, source: Arc<HlsRendition>, mut reader: RingReader) {
        let HlsPackager { channel, rendition, settings, clock, .. } = self;
        // A restarted packager continues the window: MSNs come from the source anyway, so only
        // the fragment numbering and init versions carry over.
        let mut muxer = match rendition.seal_for_resume(clock.now()) {
            Some(r) => CmafMuxer::resume(r.fragment_sequence, r.init_version),
            None => CmafMuxer::new(),
        };
        let mut follower = Follower::with_part_target(settings.part_target);
        let mut out = Vec::new();
        let mut changes = source.subscribe_boundaries();
        let publisher =
            Publisher { rendition: &rendition, settings: &settings, clock, target_from: Some(&source) };
        let dropped = metrics().frames_dropped.with_label_values(&["hls"]);
        let mut reported = follower.stats();
        let mut last_published = None;
        debug!(%channel, rendition = %rendition.name, following = %source.name, "packager started");
        loop {
            tokio::select! {
                next = reader.next() => match next {
                    Some(Ok(frame)) => follower.push(frame, &mut out),
                    Some(Err(lag)) => {
                        dropped.inc_by(lag.skipped);
                        warn!(%channel, rendition = %rendition.name, skipped = lag.skipped, "HLS packager lapped; inserting a gap");
                        follower.break_off(&mut out);
                    }
                    None => {
                        source.with_boundaries(|log| follower.finish(log, &mut out));
                        publish(&publisher, &mut muxer, &mut out, follower.frame_interval(), None).await;
                        rendition.update(|w| w.ended = true);
                        info!(%channel, rendition = %rendition.name, "packager finished");
                        return;
                    }
                },
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The source's window is gone (the session ended): cut by what is logged.
                        changes = tokio::sync::watch::channel(0).1;
                    }
                }
            }
            source.with_boundaries(|log| follower.drive(log, &mut out));
            publish(&publisher, &mut muxer, &mut out, follower.frame_interval(), Some(&mut last_published))
                .await;
            let stats = follower.stats();
            if stats.misaligned > reported.misaligned {
                warn!(
                    %channel,
                    rendition = %rendition.name,
                    "a transcoded rendition had no key frame where the source's segment starts; it resumes at the next one"
                );
                metrics().transcode_misaligned_segments.inc_by(stats.misaligned - reported.misaligned);
            }
            reported = stats;
        }
    }
}

/// Publish what the follower emitted: parts at least half a part target apart, as the source's
/// packager does (hls.js 1.7.4 mishandles a segment completing while it still appends the
/// previous part; see `HlsPackager::run_segmenting`), since a rung catching up after its ffmpeg
/// restarted sends a burst. At the session's end (`pace` is `None`) all at once.
async fn publish(
    p: &Publisher<'_>,
    muxer: &mut CmafMuxer,
    out: &mut Vec<Followed>,
    frame_interval: Option<Duration>,
    mut pace: Option<&mut Option<Instant>>,
) {
    for o in std::mem::take(out) {
        match o {
            Followed::Part { part, program_date_time } => {
                if let Some(last) = pace.as_deref_mut() {
                    let due = last.map(|at| at + p.settings.part_target / 2);
                    if let Some(due) = due.filter(|d| *d > p.clock.now()) {
                        p.clock.sleep_until(due).await;
                    }
                    *last = Some(p.clock.now());
                }
                p.publish_part(muxer, part, program_date_time, frame_interval)
            }
            Followed::Gap { msn, duration, program_date_time } => {
                p.publish_gap(msn, duration, program_date_time)
            }
        }
    }
}

impl Publisher<'_> {
    /// A complete segment without media (`EXT-X-GAP`), keeping MSNs consecutive.
    fn publish_gap(&self, msn: u64, duration: Duration, program_date_time: SystemTime) {
        let now = self.clock.now();
        self.rendition.update(|w| {
            if w.segments.back().is_some_and(|s| s.msn >= msn) {
                return;
            }
            let init_version = w.inits.last().map_or(0, |(v, _)| *v);
            w.segments.push_back(SegmentData {
                msn,
                parts: Vec::new(),
                part_count: 0,
                data: Some(bytes::Bytes::new()),
                duration,
                program_date_time,
                discontinuity: false,
                init_version,
                bytes: 0,
                video_frames: 0,
                completed_at: Some(now),
                gap: true,
            });
            super::prune(w, self.settings, now);
        });
    }
}
