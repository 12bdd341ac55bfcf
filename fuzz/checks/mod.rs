//! The property each fuzz target checks, one module per target, shared by the fuzz targets
//! (`fuzz/src/lib.rs`) and the corpus replay (`tests/fuzz_corpus.rs`) so both run the same
//! assertions. Every `check` takes the raw fuzz input and panics on a violated property.
#![forbid(unsafe_code)]

pub mod claims;
pub mod client_address;
pub mod form_urlencoded;
pub mod git_credential;
pub mod http_chunked;
pub mod http_head;
pub mod json_out;
pub mod jwks;
pub mod jwt_verify;
pub mod pem_key;
pub mod profiles_file;
pub mod profiles_yaml;
pub mod repository_url;
pub mod resp_reply;
pub mod token_exchange;
