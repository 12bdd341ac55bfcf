//! Fuzz target `resp_reply`: see `fuzz/checks/resp_reply.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::resp_reply::check(data));
