//! kitebridge — short-lived GitHub App installation tokens for Buildkite jobs.
//!
//! A job presents its Buildkite OIDC token (a JWT). kitebridge verifies it by hand on `ring`
//! ([`oidc`]), checks the requested profile's match rules ([`profiles`]), and mints a GitHub App
//! installation token limited to the profile's repositories and permissions ([`github`]),
//! caching and coalescing mints ([`cache`]). Every token-route request leaves one audit record
//! ([`audit`]).
//!
//! Data flows one way: [`http`] (the edge) → [`routes`] → [`token::handle`], in typed steps:
//! ask (what the request asks for) → admit (rate limits, readiness, the JWT verified by
//! [`oidc`]) → authorize (against [`profiles`]) → mint ([`github`], with [`buildkite`] for the
//! pipeline's repository, through the [`cache`]) → respond, with the audit trail written once the
//! response is sent ([`audit`]). [`app`] builds the shared state, [`serve`] runs the process
//! lifecycle, and [`systemd`] is the only module allowed `unsafe`.
//!
//! Every module is private: the `pub use` lines below are the whole interface, exactly what the
//! binary, the integration tests, the examples and the fuzz targets use.
// The docs are read with `--document-private-items`: an exported item's docs may link into the
// private modules (a default, a limit, the step that uses it).
#![allow(rustdoc::private_intra_doc_links)]
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

mod app;
mod audit;
mod buffers;
mod buildkite;
mod cache;
mod cidr;
mod config;
mod forwarded;
mod github;
mod http;
mod json;
mod lru;
mod metrics;
mod oidc;
mod profiles;
mod ratelimit;
mod readiness;
mod revoke;
mod routes;
mod scan;
mod secret;
mod serve;
mod shared;
mod systemd;
mod time;
mod token;
mod upstream;

// The running server: its state, its lifecycle and systemd.
pub use app::{App, StartError};
pub use audit::OnFailure as AuditOnFailure;
pub use serve::{Lifecycle, Running, bind, spawn_watchdog, start, start_with};
pub use systemd::{
    Notifier, Signal, block_signals, spawn_signal_thread, take_listener, watchdog_interval,
};

// Its HTTP edge, the edge's parsers and limits.
pub use http::chunked::{ChunkError, ChunkedDecoder};
pub use http::form::parse_urlencoded;
pub use http::head::{Framing, parse_head};
pub use http::{
    ErrorStyle, Limits, MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_URI_BYTES, Method as HttpMethod, Pool,
    Request, Response, Router, Server, ServerHandle,
};

// Configuration.
pub use config::{
    AuditTarget, Config, ConfigError, JwksSource, Metrics as MetricsSetting, ProfileSource,
    RateLimit,
};

// The token path and its parsers.
pub use token::Refusal;
pub use token::credential::{
    CredentialError, MAX_INPUT as MAX_CREDENTIAL_INPUT, format_pairs as format_credential_pairs,
    parse_pairs as parse_credential_pairs, parse_request as parse_credential_request,
};
pub use token::exchange::{GRANT_TYPE, parse_request as parse_exchange_request};

// Verification.
pub use oidc::jwks::{
    MAX_KEYS as MAX_JWKS_KEYS, MAX_MODULUS_BITS, MIN_MODULUS_BITS, ParsedJwks, parse_jwks,
};
pub use oidc::jws::MAX_KID_LEN;
pub use oidc::{
    Audience, Claims, Error as JwtError, FetchedJwks, KeyPolicyViolation, KeySource, KeyStore,
    PublicKey, Rejected, Segment, Settings as VerifierSettings, Verified, Verifier, bearer_token,
    verify_rs256,
};

// Profiles.
pub use profiles::glob::Glob;
pub use profiles::store::spawn_refresher as spawn_profile_refresher;
pub use profiles::{
    DEFAULT_MAX_FILE_BYTES as DEFAULT_PROFILES_MAX_BYTES, Family, FileError, Generation, LoadError,
    Lookup, Matcher, Profile, ProfileRef, RefError, RepositoryScope, Rule, Store,
    check as check_profile_file, explain as explain_profile,
    explain_with_source as explain_profile_with_source, parse_profile_ref,
    parse_qualified_profile_ref, start_with as start_profiles_with,
};

// Profile files in YAML, and valuePattern.
pub use profiles::{
    MAX_PATTERN_BYTES, Pattern, PatternError, Position, YamlError, YamlProblem, parse_yaml,
};

// A profile's token lifetime.
pub use profiles::{
    DEFAULT_TTL_SECS, MAX_TTL_SECS, MIN_TTL_SECS, Ttl as ProfileTtl, TtlError as ProfileTtlError,
};

// Upstream clients.
pub use buildkite::{
    Client as BuildkiteClient, RepoUrlError, Settings as BuildkiteSettings, parse_repository_url,
};
pub use github::{
    AppKey, Client as GitHubClient, Contents, MintRequest, Settings as GitHubSettings,
    is_valid_owner, is_valid_repo_name,
};
pub use upstream::{
    Client as UpstreamClient, Error as TransportError, Failure, MAX_JWKS_BODY,
    Method as UpstreamMethod, Service, Settings as UpstreamSettings,
};

// The JSON writer of the audit line and the token answer (fuzzed against serde_json).
pub use json::{Error as JsonError, to_writer as write_json};

// The shared cache's reply parser (fuzzed).
pub use shared::resp::{
    MAX_BULK as MAX_RESP_BULK, MAX_DEPTH as MAX_RESP_DEPTH, MAX_ELEMENTS as MAX_RESP_ELEMENTS,
    MAX_REPLY as MAX_RESP_REPLY, Parsed as RespParsed, Reply as RespReply,
    encode as encode_resp_reply, parse as parse_resp_reply,
};

// Addresses: ranges and the client behind trusted proxies.
pub use cidr::{Cidr, CidrError, CidrSet, ListError as CidrListError};
pub use forwarded::{ForwardedError, client_address};

// Utilities.
pub use secret::Secret;
pub use time::{now_unix, parse_rfc3339, rfc3339};

/// The version reported by `kitebridge --version` and in the upstream `User-Agent`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
