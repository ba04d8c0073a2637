//! Fuzz target `wal_recovery`: see `ferrite_fuzzing::wal_recovery` for what it drives and
//! the input format.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrite_fuzzing::wal_recovery(data));
