//! Fuzz target `wal_recovery`: see `ferrite_fuzzing::wal_recovery` for what it drives and
//! the input format.
#![no_main]

/// Turns an allocation sized by an unchecked length into a crash.
#[global_allocator]
static ALLOCATOR: ferrite_fuzzing::Bounded = ferrite_fuzzing::Bounded;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrite_fuzzing::wal_recovery(data));
