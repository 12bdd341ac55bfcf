//! Fuzz target `jwt_verify`: see `fuzz/checks/jwt_verify.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::jwt_verify::check(data));
