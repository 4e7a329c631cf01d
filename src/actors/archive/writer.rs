//! One rendition's archive writer: a cursor on the rendition's LL-HLS window (the CMAF the live
//! output made) that appends each completed part to its segment's file and then names it in the
//! journal. It never holds up the live output: it copies what the window has (the part bytes are
//! shared, not copied) under the window's read lock and writes on the blocking pool, and when
//! it falls behind the window (storage slower than the stream) or a write fails (full disk), it
//! drops the segment it was on, counts a gap, and starts again at the next segment after a
//! discontinuity.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{info, warn};

use super::journal::{init_file, segment_file, Entry, RecordedRendition, JOURNAL};
use super::storage::Storage;
use super::SyncPolicy;
use crate::actors::hls::{HlsRendition, Window};
use crate::metrics::metrics;
use crate::protocols::fmp4::{first_composition_offset, first_decode_time, AUDIO_TRACK_ID, VIDEO_TRACK_ID};

/// The presentation time of a segment's first sample and its composition offset, from its first
/// fragment: the video track's, else the audio's.
fn presentation_start(fragment: &[u8]) -> Option<(u64, u64)> {
    [VIDEO_TRACK_ID, AUDIO_TRACK_ID].into_iter().find_map(|track| {
        let dts = first_decode_time(fragment, track)?;
        let shift = first_composition_offset(fragment, track).unwrap_or(0).max(0) as u64;
        Some((dts + shift, shift))
    })
}

/// One write the window asks for.
enum Op {
    Init {
        version: u32,
        data: Bytes,
        entry: Entry,
    },
    Start(Entry),
    Part {
        msn: u64,
        data: Bytes,
        duration: Duration,
        independent: bool,
    },
    End(Entry),
    /// The segment being written is gone from the window: end it with the parts it has.
    Abandon {
        msn: u64,
    },
    /// Segments went by in the window before the archive got to them.
    Lost,
}

/// Where the writer is.
pub(super) struct RenditionWriter {
    pub storage: Arc<dyn Storage>,
    /// `<video id>/<rendition>`.
    pub dir: String,
    pub index: Arc<RwLock<RecordedRendition>>,
    pub sync: SyncPolicy,
    pub backend: &'static str,
    /// The segment being written and how many of its parts are.
    open: Option<(u64, u32)>,
    /// The lowest MSN not started yet; `None` before the first.
    next_msn: Option<u64>,
    /// The next segment written gets a discontinuity (something was lost before it).
    lost: bool,
    /// In a storage outage (one log line each way).
    failing: bool,
    pub gaps: u64,
}

impl RenditionWriter {
    /// A writer for `dir`, continuing what its journal says (a restarted writer, or the same
    /// recording after a supervised restart): a torn journal line and a segment's bytes past
    /// its last journaled part are cut off first.
    pub fn resume(
        storage: Arc<dyn Storage>,
        dir: String,
        index: Arc<RwLock<RecordedRendition>>,
        sync: SyncPolicy,
        backend: &'static str,
    ) -> std::io::Result<Self> {
        let (replayed, open) = repair(storage.as_ref(), &dir)?;
        let next_msn = replayed.segments.last().map(|s| s.msn + 1);
        *index.write().unwrap_or_else(|p| p.into_inner()) = replayed;
        Ok(RenditionWriter {
            storage,
            dir,
            index,
            sync,
            backend,
            open,
            next_msn,
            lost: false,
            failing: false,
            gaps: 0,
        })
    }

    /// Write what the window has that the archive does not; `true` when the rendition is
    /// over (its window ended and everything in it is written or lost).
    pub async fn catch_up(&mut self, rendition: &HlsRendition) -> bool {
        let (ops, ended) = {
            let w = rendition.window();
            (self.collect(&w), w.ended)
        };
        if !ops.is_empty() {
            self.execute(ops).await;
        }
        if ended {
            let rest = {
                let w = rendition.window();
                self.collect(&w)
            };
            if rest.is_empty() {
                if let Some((msn, _)) = self.open {
                    // The session ended in the middle of a segment the window never completed.
                    self.execute(vec![Op::Abandon { msn }]).await;
                }
                return true;
            }
            self.execute(rest).await;
        }
        false
    }

    /// The writes that bring the archive up to the window.
    fn collect(&self, w: &Window) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut open = self.open;
        let mut next = self.next_msn;
        let mut inits: Vec<u32> =
            self.index.read().unwrap_or_else(|p| p.into_inner()).inits.iter().map(|i| i.version).collect();
        if let Some((msn, written)) = open {
            match w.segment(msn) {
                Some(seg) => {
                    for p in seg.parts.iter().skip(written as usize) {
                        ops.push(Op::Part {
                            msn,
                            data: p.data.clone(),
                            duration: p.duration,
                            independent: p.independent,
                        });
                    }
                    if seg.complete() {
                        ops.push(Op::End(Entry::End { msn, video_frames: seg.video_frames }));
                        open = None;
                    } else {
                        return ops;
                    }
                }
                None => {
                    ops.push(Op::Abandon { msn });
                    open = None;
                }
            }
        }
        let _ = open;
        let first = next;
        for seg in w.segments.iter().filter(|s| first.is_none_or(|n| s.msn >= n)) {
            if !seg.gap && (seg.parts.len() as u32) < seg.part_count {
                // Its first parts are no longer listed (cannot happen while parts stay as long
                // as their segment); skip it rather than write half a segment.
                continue;
            }
            if next.is_some_and(|n| seg.msn > n) {
                ops.push(Op::Lost);
            }
            if !seg.gap && !inits.contains(&seg.init_version) {
                let Some(data) = w.init(seg.init_version) else { continue };
                ops.push(Op::Init {
                    version: seg.init_version,
                    data: data.clone(),
                    entry: Entry::Init {
                        version: seg.init_version,
                        codecs: w.codecs.clone(),
                        resolution: w.resolution,
                        frame_rate: w.frame_rate,
                    },
                });
                inits.push(seg.init_version);
            }
            let pdt_ms = seg.program_date_time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            ops.push(Op::Start(Entry::Segment {
                msn: seg.msn,
                pdt_ms,
                // Filled in by `execute` when something was lost before it.
                discontinuity: seg.discontinuity,
                init_version: seg.init_version,
                gap: seg.gap,
                start: seg.parts.first().and_then(|p| presentation_start(&p.data)).map(|(t, _)| t),
                shift: seg.parts.first().and_then(|p| presentation_start(&p.data)).map_or(0, |(_, s)| s),
            }));
            next = Some(seg.msn + 1);
            if seg.gap {
                continue;
            }
            for p in &seg.parts {
                ops.push(Op::Part {
                    msn: seg.msn,
                    data: p.data.clone(),
                    duration: p.duration,
                    independent: p.independent,
                });
            }
            if !seg.complete() {
                break;
            }
            ops.push(Op::End(Entry::End { msn: seg.msn, video_frames: seg.video_frames }));
        }
        ops
    }

    /// Run the writes in order on the blocking pool. The first that fails ends the batch: the
    /// segment it was for is dropped (a gap) and writing starts again at the next segment.
    async fn execute(&mut self, ops: Vec<Op>) {
        let started = Instant::now();
        let storage = self.storage.clone();
        let dir = self.dir.clone();
        let sync = self.sync;
        let index = self.index.clone();
        let mut state =
            Cursor { open: self.open, next_msn: self.next_msn, lost: self.lost, bytes: 0, overrun: 0 };
        let result = tokio::task::spawn_blocking(move || {
            let r = run_ops(storage.as_ref(), &dir, sync, &index, &mut state, ops);
            (state, r)
        })
        .await;
        let m = metrics();
        m.archive_write_seconds.observe(started.elapsed().as_secs_f64());
        let (state, result) = match result {
            Ok(done) => done,
            Err(e) => {
                warn!(dir = %self.dir, error = %e, "archive write task failed");
                return;
            }
        };
        m.archive_bytes.with_label_values(&[self.backend]).inc_by(state.bytes);
        self.next_msn = state.next_msn;
        if state.overrun > 0 && !self.failing {
            self.gaps += state.overrun;
            m.archive_gaps.inc_by(state.overrun);
            warn!(dir = %self.dir, "the archive fell behind the live window (storage slower than the stream); recording a gap");
        }
        match result {
            Ok(()) => {
                self.open = state.open;
                self.lost = state.lost;
                if std::mem::replace(&mut self.failing, false) {
                    info!(dir = %self.dir, "archive writes succeed again; recording resumed after a gap");
                }
            }
            Err((msn, e)) => {
                // The segment that failed is given up: its journaled parts stay (they are whole),
                // the rest of it is a gap, and the next segment starts after a discontinuity.
                self.open = None;
                self.lost = true;
                if let Some(msn) = msn {
                    self.next_msn = Some(self.next_msn.unwrap_or(0).max(msn + 1));
                }
                if !std::mem::replace(&mut self.failing, true) {
                    // One gap (and one line) per outage, however many segments it takes.
                    self.gaps += 1;
                    m.archive_gaps.inc();
                    warn!(dir = %self.dir, error = %e, "archive write failed; recording a gap until writes succeed (live output is not affected)");
                }
            }
        }
    }
}

/// The writer's cursor as the blocking side moves it.
struct Cursor {
    open: Option<(u64, u32)>,
    next_msn: Option<u64>,
    lost: bool,
    bytes: u64,
    /// `Op::Lost` seen: stretches the window moved past.
    overrun: u64,
}

/// Append one journal line and apply it to the index.
fn journal(
    storage: &dyn Storage,
    dir: &str,
    index: &RwLock<RecordedRendition>,
    e: &Entry,
) -> std::io::Result<()> {
    storage.append(&format!("{dir}/{JOURNAL}"), e.line().as_bytes())?;
    index.write().unwrap_or_else(|p| p.into_inner()).apply(e);
    Ok(())
}

fn run_ops(
    storage: &dyn Storage,
    dir: &str,
    sync: SyncPolicy,
    index: &RwLock<RecordedRendition>,
    c: &mut Cursor,
    ops: Vec<Op>,
) -> Result<(), (Option<u64>, std::io::Error)> {
    let journal_path = format!("{dir}/{JOURNAL}");
    for op in ops {
        match op {
            Op::Init { version, data, entry } => {
                storage
                    .write_atomic(&format!("{dir}/{}", init_file(version)), &data)
                    .map_err(|e| (None, e))?;
                journal(storage, dir, index, &entry).map_err(|e| (None, e))?;
            }
            Op::Start(mut entry) => {
                let Entry::Segment { msn, discontinuity, gap, .. } = &mut entry else { continue };
                let (msn, gap) = (*msn, *gap);
                *discontinuity |= c.lost;
                journal(storage, dir, index, &entry).map_err(|e| (Some(msn), e))?;
                c.lost = false;
                c.next_msn = Some(msn + 1);
                if !gap {
                    c.open = Some((msn, 0));
                }
            }
            Op::Part { msn, data, duration, independent } => {
                let path = format!("{dir}/{}", segment_file(msn));
                let end = storage.append(&path, &data).map_err(|e| (Some(msn), e))?;
                if sync == SyncPolicy::Part {
                    storage.sync(&path).map_err(|e| (Some(msn), e))?;
                }
                journal(storage, dir, index, &Entry::Part { msn, duration, independent, end }).map_err(
                    |e| {
                        // The bytes are there but unnamed: cut them so the file ends at its last part.
                        let _ = storage.truncate(&path, end - data.len() as u64);
                        (Some(msn), e)
                    },
                )?;
                c.bytes += data.len() as u64;
                if let Some((_, n)) = &mut c.open {
                    *n += 1;
                }
            }
            Op::End(entry) => {
                let Entry::End { msn, .. } = entry else { continue };
                if sync != SyncPolicy::None {
                    storage.sync(&format!("{dir}/{}", segment_file(msn))).map_err(|e| (Some(msn), e))?;
                }
                journal(storage, dir, index, &entry).map_err(|e| (Some(msn), e))?;
                if sync != SyncPolicy::None {
                    storage.sync(&journal_path).map_err(|e| (Some(msn), e))?;
                }
                c.open = None;
            }
            Op::Lost => {
                c.lost = true;
                c.overrun += 1;
            }
            Op::Abandon { msn } => {
                // Ends with what it has: the parts journaled so far.
                journal(storage, dir, index, &Entry::End { msn, video_frames: 0 })
                    .map_err(|e| (Some(msn), e))?;
                c.open = None;
                c.lost = true;
            }
        }
    }
    Ok(())
}

/// Make a rendition's files agree with its journal: cut a torn last line, and cut the last
/// segment's file to its last journaled part (bytes after it were never named). Returns the
/// index and the open segment (MSN, parts) if the journal ends inside one.
pub(super) fn repair(
    storage: &dyn Storage,
    dir: &str,
) -> std::io::Result<(RecordedRendition, Option<(u64, u32)>)> {
    let path = format!("{dir}/{JOURNAL}");
    let text = match storage.read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&text);
    let (mut r, valid) = RecordedRendition::replay(&text);
    if valid < text.len() {
        storage.truncate(&path, valid as u64)?;
    }
    let mut open = None;
    if let Some(last) = r.segments.last_mut().filter(|s| !s.gap) {
        let seg = format!("{dir}/{}", segment_file(last.msn));
        let on_disk = match storage.len(&seg) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        if on_disk > last.bytes {
            storage.truncate(&seg, last.bytes)?;
        } else if on_disk < last.bytes {
            // Journaled bytes the file does not have (a power cut under `sync = "none"`): the
            // segment cannot be trusted; it is not listed.
            last.parts = 0;
            last.bytes = 0;
            last.complete = true;
        }
        if !last.complete {
            open = Some((last.msn, last.parts));
        }
    }
    Ok((r, open))
}
