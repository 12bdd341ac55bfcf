//! Fuzz target `repository_url`: see `fuzz/checks/repository_url.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::repository_url::check(data));
