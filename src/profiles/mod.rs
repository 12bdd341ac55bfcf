//! Profiles: who may get which token.
//!
//! The core is pure: bytes in, a [`Generation`] out; claims in, a [`Verdict`] out. [`store`]
//! loads generations (a local file watched for changes and re-read on SIGHUP, or the GitHub
//! contents API) and swaps them atomically ([`start`]); the HTTP routes live in `app`.
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
mod yaml;

pub use compile::{
    ALL_REPOSITORIES, ALL_REPOSITORIES_ALIAS, CALLER_SCOPED_REPOSITORY, MAX_REPOSITORY_BYTES,
    Problem, ProfileProblem, Quarantined, is_repository_name,
};
pub use generation::{BUILTIN_DOCUMENT, FileError, Generation, Lookup, MAX_FILE_BYTES, is_json};
pub use pattern::{MAX_PATTERN_BYTES, Pattern, PatternError};
pub use permissions::{Level, Permission, PermissionError};
pub use profile::{
    DEFAULT_PROFILE, Family, MAX_NAME_BYTES, Profile, ProfileRef, RefError, RepositoryScope,
    is_valid_name, parse_profile_ref, parse_qualified_profile_ref,
};
pub use rules::{ClaimSource, Matcher, Rule, RuleFailure, RuleMatch, Verdict};
pub use schema::SchemaError;
pub use store::{
    DEFAULT_WATCH_INTERVAL, LoadError, ProfileSource, RETRY_INTERVAL, Store,
    TOKEN_MIN_REMAINING_SECS, start, start_with,
};
pub use tools::{check, explain};
pub use yaml::{
    MAX_DEPTH as MAX_YAML_DEPTH, Position, YamlDocument, YamlError, YamlProblem,
    parse as parse_yaml,
};

/// Default re-fetch interval of a GitHub profile file, in seconds: the `refresh_secs` given to
/// [`start`] (`PROFILES_REFRESH_SECS`).
pub const DEFAULT_REFRESH_SECS: u64 = 300;
