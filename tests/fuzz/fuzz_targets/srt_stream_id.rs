//! Fuzz target `srt_stream_id`: the body is `tidecast::fuzzing::srt_stream_id`, shared with the
//! stable replay test (`tests/fuzz_replay.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tidecast::fuzzing::srt_stream_id(data));
