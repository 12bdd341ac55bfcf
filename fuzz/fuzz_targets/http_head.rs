//! Fuzz target `http_head`: see `fuzz/checks/http_head.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::http_head::check(data));
