//! SRT, the sans-IO parts: what a caller's stream id asks for ([`streamid`]). The socket side
//! (srt-tokio listener, ingest and play adapters) lives in `actors/`.

pub mod streamid;
