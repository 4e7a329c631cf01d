//! Fuzz target `hls_query`: the body is `tidecast::fuzzing::hls_query`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::hls_query(data));
