//! The fuzz targets' checks, compiled once for every target. The same files are replayed over the
//! checked-in corpus by `tests/fuzz_corpus.rs` in the main crate.
#![forbid(unsafe_code)]

#[path = "../checks/mod.rs"]
pub mod checks;
