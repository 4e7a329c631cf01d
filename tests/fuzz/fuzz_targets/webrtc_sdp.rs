//! Fuzz target `webrtc_sdp`: the body is `tidecast::fuzzing::webrtc_sdp`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::webrtc_sdp(data));
