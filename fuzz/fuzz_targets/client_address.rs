//! Fuzz target `client_address`: see `fuzz/checks/client_address.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::client_address::check(data));
