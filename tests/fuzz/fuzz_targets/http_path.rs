//! Fuzz target `http_path`: the body is `tidecast::fuzzing::http_path`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::http_path(data));
