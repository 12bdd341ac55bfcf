//! Real HTTP stand-ins for kitebridge's upstreams (GitHub, Buildkite, the JWKS endpoint), run on
//! 127.0.0.1 inside the test process, and the small helpers the tests share (`util`). Shared by
//! the integration tests and `examples/sandbox.rs` (`#[path = "../tests/support/mod.rs"] mod
//! support;`).
#![forbid(unsafe_code)]
#![allow(dead_code)]

pub mod buildkite;
pub mod github;
pub mod jwks;
pub mod kitebridge;
pub mod oidc;
pub mod redis;
pub mod server;
pub mod util;
