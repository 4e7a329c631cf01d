//! Fuzz target `stripe_signature`: the body is `tidecast::fuzzing::stripe_signature`, shared with the stable replay
//! test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::stripe_signature(data));
