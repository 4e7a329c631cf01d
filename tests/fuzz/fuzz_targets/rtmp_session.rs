//! Fuzz target `rtmp_session`: the body is `tidecast::fuzzing::rtmp_session`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::rtmp_session(data));
