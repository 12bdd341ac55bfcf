//! Fuzz target `claims`: see `fuzz/checks/claims.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::claims::check(data));
