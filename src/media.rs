//! The codec-neutral media model every protocol converts into and out of.
//!
//! Ingest adapters (RTMP today; SRT, WHIP and RTSP later) turn wire packets into [`Frame`]s with
//! the codec configuration in force ([`Tracks`]); they push them into one [`ring::FrameRing`] per
//! rendition, and every consumer (RTMP viewers, the LL-HLS packager, the archive writer, the
//! ffmpeg feeder) reads them back through a [`ring::RingReader`].

pub mod clock;
pub mod codec;
pub mod follow;
pub mod frame;
pub mod ring;
pub mod segmenter;
pub mod time;

pub use clock::Clock;
pub use codec::{AudioCodec, AudioConfig, Tracks, VideoCodec, VideoConfig};
pub use frame::{Frame, TrackKind, WireCache, WireSlot};
pub use ring::{Batch, FrameRing, Lagged, ReadResult, RingLimits, RingReader, RingWriter};
pub use time::MediaTime;
