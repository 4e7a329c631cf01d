//! Fuzz target `flv_tag`: the body is `tidecast::fuzzing::flv_tag`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::flv_tag(data));
