//! Fuzz target `token_exchange`: see `fuzz/checks/token_exchange.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::token_exchange::check(data));
