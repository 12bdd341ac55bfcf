//! kitebridge — short-lived GitHub App installation tokens for Buildkite jobs.
//!
//! A job presents its Buildkite OIDC token (a JWT). kitebridge verifies it by hand on `ring`
//! ([`oidc`]), checks the requested profile's match rules ([`profiles`]), and mints a GitHub App
//! installation token limited to the profile's repositories and permissions ([`github`]),
//! caching and coalescing mints ([`vend`]). Every token-route request leaves one audit record
//! ([`audit`]).
//!
//! Data flows one way: [`http`] (the edge) → [`routes`] → [`oidc`] (verify) → [`profiles`]
//! (authorize) → [`vend`] (cache, then [`github`] / [`buildkite`] to mint) → the response and its
//! [`audit`] record. [`app`] builds the shared state and runs the process; [`systemd`] is the only
//! module allowed `unsafe`.
//!
//! The specification lives in `shared/spec/`; the README says what was chosen where it is silent.
// No unwrap, expect, panic or indexing outside tests: untrusted input must not be able to panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]
#![deny(unsafe_code)] // every module but `systemd` forbids it outright; see each file's first line

pub mod app;
pub mod audit;
pub mod buildkite;
pub mod cache;
pub mod config;
pub mod github;
pub mod http;
pub mod metrics;
pub mod oidc;
pub mod profiles;
pub mod ratelimit;
pub mod readiness;
pub mod routes;
pub mod secret;
pub mod serve;
pub mod shared;
pub mod systemd;
pub mod time;
pub mod token;
pub mod upstream;

pub use token::{credential, exchange};

/// The version reported by `kitebridge --version` and in the upstream `User-Agent`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
