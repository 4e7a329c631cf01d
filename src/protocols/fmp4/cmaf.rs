//! `CmafMuxer`: media-model parts in, CMAF init segments and fragments out.
//!
//! The one Frame-to-CMAF writer: the HLS packager (`actors::hls`) and the archive writer share
//! it. Sans-IO: a [`Part`] from `media::segmenter` in, `Bytes` out; it keeps only what spans
//! parts: the fragment sequence number (`mfhd`, ISO/IEC 14496-12 §8.8.5), the audio timeline,
//! and which track set the current init segment describes.
//!
//! Audio durations are nominal (1024 samples per AAC frame, 960 per 20 ms Opus frame): RTMP's
//! millisecond timestamps would make them jitter by a sample or more per frame, which players
//! report as gaps. The nominal timeline is resynced to the frames' own timestamps when they
//! drift by more than a frame (a gap in the source, a publisher resuming).

use std::sync::Arc;

use bytes::Bytes;

use super::{audio_timescale, fragment, init_segment, Fmp4Error, Sample, TrackRun};
use super::{AUDIO_TRACK_ID, VIDEO_TIMESCALE, VIDEO_TRACK_ID};
use crate::media::codec::{AudioCodec, Tracks};
use crate::media::frame::{Frame, TrackKind};
use crate::media::segmenter::Part;
use crate::media::time::MediaTime;

/// Muxing state that spans parts.
#[derive(Debug, Default)]
pub struct CmafMuxer {
    /// `mfhd` sequence number of the last fragment.
    sequence: u32,
    /// Next audio decode time in the audio timescale.
    audio_next: Option<u64>,
    /// The track set of the current init segment.
    tracks: Option<Arc<Tracks>>,
    /// Bumped with every new init segment (`EXT-X-MAP` changes with it).
    init_version: u32,
}

impl CmafMuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Continue after an earlier muxer of the same output: fragment sequence numbers and init
    /// versions keep growing. The next segment gets a new init segment.
    pub fn resume(sequence: u32, init_version: u32) -> Self {
        CmafMuxer { sequence, audio_next: None, tracks: None, init_version }
    }

    /// The version of the init segment the last fragment needs.
    pub fn init_version(&self) -> u32 {
        self.init_version
    }

    /// The `mfhd` sequence number of the last fragment.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// A new init segment when `part` starts a segment whose track set differs from the
    /// current init's (`init_version` then grows). Only segment starts may switch: a segment
    /// has one init.
    pub fn init_for(&mut self, part: &Part) -> Result<Option<Bytes>, Fmp4Error> {
        let Some(first) = part.frames.first() else { return Ok(None) };
        let tracks = &first.tracks;
        if part.index != 0 || self.tracks.as_ref().is_some_and(|t| **t == **tracks) {
            return Ok(None);
        }
        let init = init_segment(tracks)?;
        self.init_version += 1;
        self.tracks = Some(tracks.clone());
        Ok(Some(init))
    }

    /// Samples per audio frame.
    fn audio_frame_samples(tracks: &Tracks) -> u64 {
        match tracks.audio.as_ref().map(|a| a.codec) {
            Some(AudioCodec::Opus) => 960,
            _ => 1024,
        }
    }

    /// One movie fragment (`moof` + `mdat`) with the part's video and audio runs.
    pub fn fragment(&mut self, part: &Part) -> Bytes {
        let Some(first) = part.frames.first() else { return Bytes::new() };
        let tracks = first.tracks.clone();
        let video: Vec<&Arc<Frame>> = part.frames.iter().filter(|f| f.track == TrackKind::Video).collect();
        let audio: Vec<&Arc<Frame>> = part.frames.iter().filter(|f| f.track == TrackKind::Audio).collect();
        let ticks = |t: MediaTime, scale: u32| t.rescale(scale).ticks.max(0) as u64;

        let mut vsamples = Vec::with_capacity(video.len());
        let mut vdata = Vec::with_capacity(video.len());
        for (i, f) in video.iter().enumerate() {
            let dts = ticks(f.dts, VIDEO_TIMESCALE);
            let next =
                video.get(i + 1).map_or(ticks(part.end, VIDEO_TIMESCALE), |n| ticks(n.dts, VIDEO_TIMESCALE));
            vsamples.push(Sample {
                duration: next.saturating_sub(dts) as u32,
                size: f.data.len() as u32,
                sync: f.keyframe,
                cts_offset: f.cts().rescale(VIDEO_TIMESCALE).ticks as i32,
            });
            vdata.push(f.data.clone());
        }
        let mut asamples = Vec::with_capacity(audio.len());
        let mut adata = Vec::with_capacity(audio.len());
        let mut abase = 0;
        if let Some(cfg) = &tracks.audio {
            let scale = audio_timescale(cfg);
            let nominal = Self::audio_frame_samples(&tracks);
            for (i, f) in audio.iter().enumerate() {
                let real = ticks(f.dts, scale);
                let next = match self.audio_next {
                    Some(n) if n.abs_diff(real) <= nominal => n,
                    // First frame, or drifted by more than a frame (gap, resume): resync.
                    _ => real,
                };
                if i == 0 {
                    abase = next;
                }
                self.audio_next = Some(next + nominal);
                asamples.push(Sample {
                    duration: nominal as u32,
                    size: f.data.len() as u32,
                    sync: true,
                    cts_offset: 0,
                });
                adata.push(f.data.clone());
            }
        }
        let mut runs = Vec::with_capacity(2);
        if let Some(first) = video.first() {
            runs.push(TrackRun {
                track_id: VIDEO_TRACK_ID,
                base_media_decode_time: ticks(first.dts, VIDEO_TIMESCALE),
                samples: &vsamples,
                data: &vdata,
            });
        }
        if !asamples.is_empty() {
            runs.push(TrackRun {
                track_id: AUDIO_TRACK_ID,
                base_media_decode_time: abase,
                samples: &asamples,
                data: &adata,
            });
        }
        self.sequence = self.sequence.wrapping_add(1);
        fragment(self.sequence, &runs)
    }
}
