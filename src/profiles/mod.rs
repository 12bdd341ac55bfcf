//! Profiles: who may get which token.
//!
//! The core is pure: bytes in, a [`Generation`] out; claims in, a [`Verdict`](rules::Verdict)
//! out. [`store`] loads generations (a local file watched for changes and re-read on SIGHUP, or
//! the GitHub contents API) and swaps them atomically ([`start`]); the HTTP routes live in `app`.
//!
//! - [`Generation::parse`] reads a profile file: strict JSON (`json.rs`: duplicate keys are
//!   errors), a hand-walked schema (any unknown key, missing key or wrong type fails the whole
//!   file, every problem named by its JSON path), then per-profile validation (a bad profile is
//!   quarantined alone and answers "profile unavailable").
//! - [`Generation::pipeline`] / [`Generation::organization`] / [`Generation::lookup`] find a
//!   profile; [`Profile::evaluate`] tests its match rules against a [`ClaimSource`].
//! - [`parse_profile_ref`] applies the routes' prefix rules; [`check`] and [`explain`] are the
//!   offline tools.
#![forbid(unsafe_code)]

mod compile;
mod generation;
pub mod glob;
mod json;
pub mod pattern;
pub mod permissions;
mod profile;
pub mod rules;
mod schema;
pub mod store;
mod tools;
mod tree;
mod ttl;
mod yaml;

pub use generation::{DEFAULT_MAX_FILE_BYTES, FileError, Generation, Lookup};
pub use pattern::{MAX_PATTERN_BYTES, Pattern, PatternError};
pub use permissions::Permission;
pub use profile::{
    Family, Profile, ProfileRef, RefError, RepositoryScope, parse_profile_ref,
    parse_qualified_profile_ref,
};
pub use rules::{ClaimSource, Matcher, Rule, RuleMatch};
pub use store::{LoadError, ProfileSource, Store, start, start_with};
pub use tools::{check, explain, explain_with_source};
pub use ttl::{DEFAULT_TTL_SECS, MAX_TTL_SECS, MIN_TTL_SECS, Ttl, TtlError};
pub use yaml::{Position, YamlError, YamlProblem, parse as parse_yaml};

/// Default re-fetch interval of a GitHub profile file, in seconds: the `refresh_secs` given to
/// [`start`] (`PROFILES_REFRESH_SECS`).
pub const DEFAULT_REFRESH_SECS: u64 = 300;
