//! Fuzz target `jwks`: see `fuzz/checks/jwks.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::jwks::check(data));
