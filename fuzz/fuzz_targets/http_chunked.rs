//! Fuzz target `http_chunked`: see `fuzz/checks/http_chunked.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::http_chunked::check(data));
