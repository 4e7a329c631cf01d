//! Fuzz target `rtmp_chunk_watch`: the body is `tidecast::fuzzing::rtmp_chunk_watch`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::rtmp_chunk_watch(data));
