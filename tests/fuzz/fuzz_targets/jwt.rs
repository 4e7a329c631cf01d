//! Fuzz target `jwt`: the body is `tidecast::fuzzing::jwt`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::jwt(data));
