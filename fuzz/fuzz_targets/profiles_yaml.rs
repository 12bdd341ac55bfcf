//! Fuzz target `profiles_yaml`: see `fuzz/checks/profiles_yaml.rs` for the property.
#![no_main]
#![forbid(unsafe_code)]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kitebridge_fuzz::checks::profiles_yaml::check(data));
