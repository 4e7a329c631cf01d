//! Fuzz target `whip_depacketize`: the body is `tidecast::fuzzing::whip_depacketize`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::whip_depacketize(data));
