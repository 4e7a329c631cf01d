//! Fuzz target `codec_config`: the body is `tidecast::fuzzing::codec_config`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::codec_config(data));
