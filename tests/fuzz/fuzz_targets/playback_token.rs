//! Fuzz target `playback_token`: the body is `tidecast::fuzzing::playback_token`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::playback_token(data));
