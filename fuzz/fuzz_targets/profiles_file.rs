//! Fuzz target `profiles_file`: see `fuzz/checks/profiles_file.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::profiles_file::check(data));
