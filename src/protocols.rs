//! Sans-IO wire formats and thin adapters over the design-card protocol crates.

pub mod dash;
pub mod flv;
pub mod fmp4;
pub mod hls;
pub mod rtmp;
pub mod rtsp;
pub mod srt;
pub mod ts;
pub mod webrtc;
