//! Fuzz target `git_credential`: see `fuzz/checks/git_credential.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::git_credential::check(data));
