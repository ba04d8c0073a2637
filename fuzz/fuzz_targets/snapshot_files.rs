//! Fuzz target `snapshot_files`: see `ferrite_fuzzing::snapshot_files` for what it drives and
//! the input format.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrite_fuzzing::snapshot_files(data));
