//! Fuzz target `ts_demux`: the body is `tidecast::fuzzing::ts_demux`, shared with the stable
//! replay test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::ts_demux(data));
