//! Fuzz target `amf0`: the body is `tidecast::fuzzing::amf0`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::amf0(data));
