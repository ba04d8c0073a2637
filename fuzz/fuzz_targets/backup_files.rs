//! Fuzz target `backup_files`: see `ferrite_fuzzing::backup_files` for what it drives and
//! the input format.
#![no_main]

/// Turns an allocation sized by an unchecked length into a crash.
#[global_allocator]
static ALLOCATOR: ferrite_fuzzing::Bounded = ferrite_fuzzing::Bounded;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrite_fuzzing::backup_files(data));
