//! Fuzz target `json_out`: see `fuzz/checks/json_out.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::json_out::check(data));
