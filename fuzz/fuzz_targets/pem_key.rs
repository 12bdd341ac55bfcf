//! Fuzz target `pem_key`: see `fuzz/checks/pem_key.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::pem_key::check(data));
