//! Fuzz target `peer_frames`: see `ferrite_fuzzing::peer_frames` for what it drives and
//! the input format.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrite_fuzzing::peer_frames(data));
