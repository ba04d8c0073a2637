//! Fuzz target `nbd_server`: see `ferrite_fuzzing::nbd_server` for what it drives and
//! the input format.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferrite_fuzzing::nbd_server(data));
