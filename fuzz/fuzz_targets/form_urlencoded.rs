//! Fuzz target `form_urlencoded`: see `fuzz/checks/form_urlencoded.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::form_urlencoded::check(data));
