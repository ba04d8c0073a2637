//! Fuzz target `state_commands`: see `ferrite_fuzzing::state_commands` for what it drives and
//! the input format.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrite_fuzzing::state_commands(data));
