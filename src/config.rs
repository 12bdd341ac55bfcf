//! Configuration: every environment variable kitebridge reads, parsed and validated at once.
//!
//! [`Config::from_env`] reads the process environment, [`Config::from_vars`] a map (for tests).
//! Validation is complete: every problem found is collected into one [`ConfigError`], each naming
//! the variable, what is wrong and what is expected. A variable that is set but empty counts as unset
//! for optional values and as an error for required ones.
//!
//! Problems never contain a variable's value (an operator may paste a secret into the wrong
//! variable); they name file paths, which are not secret. Secrets are held in [`Secret`], whose
//! `Debug` and `Display` print `[redacted]`.
//!
//! Keywords (`on`, `off`, `stdout`, `stderr`, log levels) are matched ASCII case-insensitively;
//! everything else is strict: numbers are plain decimal digits, nothing is trimmed except the
//! trailing whitespace of secrets.
//!
//! The systemd variables (`LISTEN_FDS`, `LISTEN_PID`, `NOTIFY_SOCKET`, `WATCHDOG_USEC`) are read by
//! the `systemd` module, not here.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use log::LevelFilter;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::audit::OnFailure;
use crate::cidr::CidrSet;
use crate::secret::Secret;
use crate::{audit, buildkite, github, http, oidc, profiles, shared, token};

/// `SERVER_HOST`'s default: loopback only.
pub const DEFAULT_SERVER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// `SERVER_PORT`'s default.
pub const DEFAULT_SERVER_PORT: u16 = 8080;
/// `RATE_LIMIT_PER_PIPELINE`'s default.
pub const DEFAULT_RATE_LIMIT_PER_PIPELINE: RateLimit = RateLimit::Limit {
    count: 120,
    window_secs: 60,
};
/// `RATE_LIMIT_PER_SOURCE`'s default.
pub const DEFAULT_RATE_LIMIT_PER_SOURCE: RateLimit = RateLimit::Limit {
    count: 600,
    window_secs: 60,
};
/// `RATE_LIMIT_MINTS`'s default: GitHub mints across all pipelines.
pub const DEFAULT_RATE_LIMIT_MINTS: RateLimit = RateLimit::Limit {
    count: 300,
    window_secs: 60,
};
/// `METRICS`'s default.
pub const DEFAULT_METRICS: Metrics = Metrics::On;
/// `AUDIT_LOG`'s default.
pub const DEFAULT_AUDIT_LOG: AuditTarget = AuditTarget::Stdout;
/// `LOG_LEVEL`'s default.
pub const DEFAULT_LOG_LEVEL: LevelFilter = LevelFilter::Info;

/// The largest secret file read (a 4096-bit PEM key is about 3.3 KiB).
const SECRET_FILE_LIMIT: u64 = 64 * 1024;
/// The largest static JWKS document, the same bound as a fetched one.
const JWKS_LIMIT: u64 = 64 * 1024;
/// The largest CA bundle read from `SSL_CERT_FILE`.
const CA_BUNDLE_LIMIT: u64 = 4 * 1024 * 1024;
/// The longest rate-limit window (one day).
const RATE_WINDOW_MAX_SECS: u64 = 86_400;

/// Where the Buildkite OIDC signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// Fetched from this base URL (`JWT_JWKS_URL`, default [`oidc::DEFAULT_JWKS_URL`]), trailing
    /// `/` trimmed.
    Url(String),
    /// A fixed JWKS document (`JWT_JWKS_STATIC`, or the contents of `JWT_JWKS_STATIC_FILE`): a JSON
    /// object with a `keys` array, at most 64 KiB. The keys themselves are checked by `oidc`.
    Static(Vec<u8>),
}

pub use crate::profiles::ProfileSource;

/// A token-bucket rate limit.
///
/// Grammar (`RATE_LIMIT_PER_PIPELINE`, `RATE_LIMIT_PER_SOURCE`): `off`, or `COUNT/WINDOW` where
/// `COUNT` is a whole number from 1 to 4294967295 (also the burst) and `WINDOW` is a whole number ≥ 1
/// immediately followed by a unit, `s`, `m` or `h`, totalling at most 24 hours: `120/60s`, `10/1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// No limit.
    Off,
    /// At most `count` requests per `window_secs` seconds.
    Limit {
        /// Requests allowed per window, and the burst size.
        count: u32,
        /// The window length in seconds (1–86400).
        window_secs: u64,
    },
}

/// Where `/metrics` is served (`METRICS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metrics {
    /// `on`: on the main listener, under the base path.
    On,
    /// `off`: not served at all.
    Off,
    /// `HOST:PORT` (an IP address; IPv6 in brackets): a separate listener.
    Listen(SocketAddr),
}

/// Where audit records go (`AUDIT_LOG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// `stdout`.
    Stdout,
    /// `stderr`.
    Stderr,
    /// An absolute file path, appended to.
    File(PathBuf),
}

/// One configuration problem: the variable and what is wrong with it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The environment variable at fault.
    pub variable: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

/// Every problem found in the configuration, reported together.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// The problems, in the order the variables are read.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        write!(f, "invalid configuration: {count} {noun}")?;
        for problem in &self.problems {
            write!(f, "\n  {}: {}", problem.variable, problem.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration. A value of this type exists only if every variable was valid.
#[derive(Debug)]
#[non_exhaustive]
pub struct Config {
    /// `JWT_BUILDKITE_ORGANIZATION_SLUG` (required): the organization whose tokens are accepted.
    pub organization_slug: String,
    /// `JWT_BUILDKITE_ORGANIZATION_ID` (default unset): if set, `organization_id` must match too.
    pub organization_id: Option<String>,
    /// `JWT_AUDIENCE` (required): the `aud` clients request.
    pub audience: String,
    /// `JWT_ISSUER_URL` (default [`oidc::DEFAULT_ISSUER`]): the expected `iss`, compared byte for
    /// byte, so kept exactly as given.
    pub issuer: String,
    /// `JWT_JWKS_URL` (default [`oidc::DEFAULT_JWKS_URL`]), or `JWT_JWKS_STATIC` /
    /// `JWT_JWKS_STATIC_FILE` (default unset; at most one of the three).
    pub jwks: JwksSource,
    /// `JWT_LEEWAY_SECS` (default [`oidc::DEFAULT_LEEWAY_SECS`], 0–60): clock skew allowed on
    /// `exp`/`nbf`/`iat`.
    pub leeway_secs: u64,
    /// `JWT_MAX_LIFETIME_SECS` (default [`oidc::DEFAULT_MAX_LIFETIME_SECS`], 1–7200): the longest
    /// accepted `exp − iat`.
    pub max_lifetime_secs: u64,
    /// `JWT_CACHE_MAX_ENTRIES` (default [`oidc::reuse::DEFAULT_MAX_ENTRIES`], 0–1000000): verified
    /// tokens remembered (by SHA-256, claims only) so the same bytes are not verified again; 0
    /// verifies every presentation.
    pub jwt_cache_max_entries: usize,
    /// `BUILDKITE_API_TOKEN` (+`_FILE`, or `$CREDENTIALS_DIRECTORY/buildkite-api-token`; default
    /// unset). Without it pipeline profiles cannot resolve their repository: such requests are
    /// answered 500 and the server warns at start.
    pub buildkite_api_token: Option<Secret>,
    /// `BUILDKITE_API_URL` (default [`buildkite::DEFAULT_API_URL`]), trailing `/` trimmed.
    pub buildkite_api_url: String,
    /// `GITHUB_APP_ID` (required): the numeric App ID or the client ID (`A-Z a-z 0-9 . _ -`).
    pub github_app_id: String,
    /// `GITHUB_APP_PRIVATE_KEY` (+`_FILE`, or `$CREDENTIALS_DIRECTORY/github-app-private-key`;
    /// required): the PEM text of an RSA key, PKCS#1 or PKCS#8, checked to load with `ring`.
    pub github_app_private_key: Secret,
    /// `GITHUB_APP_INSTALLATION_ID` (required, ≥ 1): the installation tokens are minted from.
    pub github_installation_id: u64,
    /// `GITHUB_API_URL` (default [`github::DEFAULT_API_URL`]), trailing `/` trimmed.
    pub github_api_url: String,
    /// `GITHUB_HOST` (default [`github::DEFAULT_HOST`]): `HOST[:PORT]` in git URLs, lowercased.
    pub github_host: String,
    /// `PROFILES_FILE` or `GITHUB_ORG_PROFILE` (default neither: [`ProfileSource::Builtin`]).
    pub profiles: ProfileSource,
    /// `PROFILES_REFRESH_SECS` (default [`profiles::DEFAULT_REFRESH_SECS`], 10–86400): re-fetch
    /// interval for `GITHUB_ORG_PROFILE`.
    pub profiles_refresh_secs: u64,
    /// `PROFILES_MAX_BYTES` (default [`profiles::DEFAULT_MAX_FILE_BYTES`], 1024–268435456): the
    /// largest profile file accepted.
    pub profiles_max_bytes: usize,
    /// `SERVER_HOST` (default [`DEFAULT_SERVER_HOST`]): the listen address, an IP address.
    pub server_host: IpAddr,
    /// `SERVER_PORT` (default [`DEFAULT_SERVER_PORT`]; 0 picks an ephemeral port).
    pub server_port: u16,
    /// `SERVER_BASE_PATH` (default unset): route prefix, normalised to a leading `/` and no
    /// trailing `/`; `/` alone means none. Segments are non-empty unreserved URL characters
    /// (`A-Z a-z 0-9 - . _ ~`), never `.` or `..`.
    pub server_base_path: Option<String>,
    /// `SERVER_WORKERS` (default [`http::DEFAULT_WORKERS`], 1–1024): requests handled at once
    /// (request-handling permits).
    pub server_workers: usize,
    /// `SERVER_MAX_CONNECTIONS` (default [`http::DEFAULT_MAX_CONNECTIONS`], 1–65536): at the
    /// cap the connection waiting longest without a complete request makes room, or (all busy)
    /// the newcomer is closed.
    pub max_connections: usize,
    /// `SERVER_MAX_CONNECTIONS_PER_SOURCE` (default
    /// [`http::DEFAULT_MAX_CONNECTIONS_PER_SOURCE`], 1–65536, or `off`: `None`): open
    /// connections of one remote address; loopback is exempt.
    pub max_connections_per_source: Option<usize>,
    /// `SERVER_HEADER_TIMEOUT_SECS` (default [`http::DEFAULT_TIMEOUT_HEADER_SECS`], 1–3600): time
    /// to receive the request head.
    pub timeout_header_secs: u64,
    /// `SERVER_BODY_TIMEOUT_SECS` (default [`http::DEFAULT_TIMEOUT_BODY_SECS`], 1–3600): time to
    /// receive the body.
    pub timeout_body_secs: u64,
    /// `SERVER_IDLE_TIMEOUT_SECS` (default [`http::DEFAULT_TIMEOUT_IDLE_SECS`], 1–3600): keep-alive
    /// idle time.
    pub timeout_idle_secs: u64,
    /// `SERVER_SHUTDOWN_TIMEOUT_SECS` (default [`http::DEFAULT_SHUTDOWN_TIMEOUT_SECS`], 1–3600):
    /// drain time on SIGTERM.
    pub timeout_shutdown_secs: u64,
    /// `SERVER_QUEUE_TIMEOUT_SECS` (default [`http::DEFAULT_TIMEOUT_QUEUE_SECS`], 1–3600): the
    /// longest wait for a request-handling permit, then 503 with `Retry-After`.
    pub timeout_queue_secs: u64,
    /// `TOKEN_MIN_REMAINING_SECS` (default [`token::DEFAULT_MIN_REMAINING_SECS`], 0–3300): a cached token is served only while it has at least
    /// this long to live (GitHub tokens live about 3600 s).
    pub token_min_remaining_secs: u64,
    /// `TOKEN_CACHE_MAX_ENTRIES` (default [`token::DEFAULT_CACHE_MAX_ENTRIES`], 1–1000000): the most tokens cached.
    pub token_cache_max_entries: usize,
    /// `PIPELINE_CACHE_SECS` (default [`buildkite::DEFAULT_CACHE_SECS`], 0–86400): pipeline →
    /// repository cache life; 0 disables.
    pub pipeline_cache_secs: u64,
    /// `RATE_LIMIT_PER_PIPELINE` (default [`DEFAULT_RATE_LIMIT_PER_PIPELINE`]): see [`RateLimit`]
    /// for the grammar.
    pub rate_limit_per_pipeline: RateLimit,
    /// `RATE_LIMIT_PER_SOURCE` (default [`DEFAULT_RATE_LIMIT_PER_SOURCE`]): see [`RateLimit`] for
    /// the grammar.
    pub rate_limit_per_source: RateLimit,
    /// `RATE_LIMIT_MINTS` (default [`DEFAULT_RATE_LIMIT_MINTS`]): GitHub mints (cache misses)
    /// across all pipelines, per instance, fleet-wide with `CACHE_URL`; see [`RateLimit`].
    pub rate_limit_mints: RateLimit,
    /// `GITHUB_RATELIMIT_RESERVE` (default [`github::DEFAULT_RATELIMIT_RESERVE`], 0–1000000):
    /// while GitHub reports fewer requests remaining, misses wait for its reset.
    pub github_ratelimit_reserve: u64,
    /// `SERVER_ALLOWED_SOURCES` (default unset: any): comma-separated CIDRs; a request whose
    /// client address is outside is refused before any JWT work.
    pub allowed_sources: Option<CidrSet>,
    /// `SERVER_TRUSTED_PROXIES` (default unset: none): comma-separated CIDRs of the peers whose
    /// `X-Forwarded-For` / `Forwarded` is believed.
    pub trusted_proxies: Option<CidrSet>,
    /// `METRICS` (default [`DEFAULT_METRICS`]).
    pub metrics: Metrics,
    /// `AUDIT_LOG` (default [`DEFAULT_AUDIT_LOG`]).
    pub audit_log: AuditTarget,
    /// `AUDIT_ON_FAILURE` (default [`audit::DEFAULT_ON_FAILURE`]): `refuse` (no token leaves
    /// without its audit record) or `serve` (availability first; every failure is logged).
    pub audit_on_failure: OnFailure,
    /// `LOG_LEVEL` (default [`DEFAULT_LOG_LEVEL`]): `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: LevelFilter,
    /// `SSL_CERT_FILE` (default unset): an extra PEM CA bundle, checked to hold a certificate.
    pub ssl_cert_file: Option<PathBuf>,
    /// `HTTPS_PROXY`, else `https_proxy` (default unset): `http://HOST:PORT`, without credentials.
    pub https_proxy: Option<String>,
    /// `NO_PROXY`, else `no_proxy` (default unset): hosts that bypass the proxy, as given.
    pub no_proxy: Option<String>,
    /// `CACHE_URL` (default unset: the in-process cache only): `redis://HOST:PORT[/DB]` or
    /// `rediss://HOST:PORT[/DB]` (TLS), without user information, query or fragment.
    pub cache_url: Option<shared::Endpoint>,
    /// `CACHE_USERNAME` (default unset): the ACL user `AUTH` logs in as; needs `CACHE_PASSWORD`.
    pub cache_username: Option<String>,
    /// `CACHE_PASSWORD` (+`_FILE`, or `$CREDENTIALS_DIRECTORY/cache-password`; default unset).
    pub cache_password: Option<Secret>,
    /// `CACHE_ENCRYPTION_KEYS` (+`_FILE`, or `$CREDENTIALS_DIRECTORY/cache-encryption-keys`;
    /// required with `CACHE_URL`): whitespace-separated standard base64 32-byte keys, checked to
    /// parse ([`shared::seal::Keys::parse`]); the first encrypts, all decrypt.
    pub cache_encryption_keys: Option<Secret>,
    /// `CACHE_PREFIX` (default [`shared::DEFAULT_PREFIX`]): visible ASCII, at most 64 bytes.
    pub cache_prefix: String,
    /// `CACHE_TIMEOUT_MS` (default [`shared::DEFAULT_TIMEOUT_MS`], 1–10000): the budget of one
    /// shared-cache operation, connecting included.
    pub cache_timeout_ms: u64,
    /// One warning for each chinmina-bridge variable that is set but not read here, naming the
    /// equivalent ([`chinmina_warnings`]); logged at start, never an error.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads the process environment. A non-UTF-8 value of a variable read here is a problem;
    /// variables not read here are ignored.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut vars = BTreeMap::new();
        let mut not_utf8 = BTreeSet::new();
        for (name, value) in std::env::vars_os() {
            let Ok(name) = name.into_string() else {
                continue; // no variable of ours has a non-UTF-8 name
            };
            match value.into_string() {
                Ok(value) => {
                    vars.insert(name, value);
                }
                Err(_) => {
                    not_utf8.insert(name);
                }
            }
        }
        Reader::new(&vars, &not_utf8).config()
    }

    /// Reads the variables from a map. `_FILE` paths and `$CREDENTIALS_DIRECTORY` (taken from the
    /// map) are read from disk.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        Reader::new(vars, &BTreeSet::new()).config()
    }

    /// The name of every variable read here, sorted (so the documentation can be checked
    /// against it).
    pub fn variables() -> Vec<&'static str> {
        let (vars, not_utf8) = (BTreeMap::new(), BTreeSet::new());
        let mut reader = Reader::new(&vars, &not_utf8);
        reader.read(); // with nothing set, every variable is looked up and no file is read
        reader.looked_up.into_iter().collect()
    }
}

/// A variable as found, before parsing.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Unset,
    Empty,
    /// Not UTF-8; the problem is already recorded.
    Invalid,
    Value(&'a str),
}

/// Where a secret came from, for problem messages.
struct SecretOrigin {
    variable: &'static str,
    file: Option<PathBuf>,
}

impl SecretOrigin {
    /// A problem message about the secret: names the file, if any, never the content.
    fn message(&self, what: &str) -> String {
        match &self.file {
            Some(path) => format!("file {path:?}: {what}"),
            None => what.to_string(),
        }
    }
}

/// The names one secret may be given under.
struct SecretNames {
    value: &'static str,
    file: &'static str,
    credential: &'static str,
}

const GITHUB_KEY_NAMES: SecretNames = SecretNames {
    value: "GITHUB_APP_PRIVATE_KEY",
    file: "GITHUB_APP_PRIVATE_KEY_FILE",
    credential: "github-app-private-key",
};

const BUILDKITE_TOKEN_NAMES: SecretNames = SecretNames {
    value: "BUILDKITE_API_TOKEN",
    file: "BUILDKITE_API_TOKEN_FILE",
    credential: "buildkite-api-token",
};

const CACHE_PASSWORD_NAMES: SecretNames = SecretNames {
    value: "CACHE_PASSWORD",
    file: "CACHE_PASSWORD_FILE",
    credential: "cache-password",
};

const CACHE_KEYS_NAMES: SecretNames = SecretNames {
    value: "CACHE_ENCRYPTION_KEYS",
    file: "CACHE_ENCRYPTION_KEYS_FILE",
    credential: "cache-encryption-keys",
};

/// The longest `CACHE_PREFIX`.
const CACHE_PREFIX_MAX: usize = 64;

/// The shared-cache variables.
struct Cache {
    url: Option<shared::Endpoint>,
    username: Option<String>,
    password: Option<Secret>,
    encryption_keys: Option<Secret>,
    prefix: String,
    timeout_ms: u64,
}

/// Reads variables and collects every problem.
struct Reader<'a> {
    vars: &'a BTreeMap<String, String>,
    not_utf8: &'a BTreeSet<String>,
    problems: Vec<Problem>,
    /// The name of every variable looked up so far.
    looked_up: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    fn new(vars: &'a BTreeMap<String, String>, not_utf8: &'a BTreeSet<String>) -> Reader<'a> {
        Reader {
            vars,
            not_utf8,
            problems: Vec::new(),
            looked_up: BTreeSet::new(),
        }
    }

    /// The configuration, or every problem found.
    fn config(mut self) -> Result<Config, ConfigError> {
        let config = self.read();
        if self.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }

    /// Parses every variable. Required values missing are given placeholders, which never escape:
    /// a missing value is a problem, and any problem turns [`Reader::config`] into an error.
    fn read(&mut self) -> Config {
        let credentials = self.optional("CREDENTIALS_DIRECTORY", |text| Ok(PathBuf::from(text)));
        let cache = self.cache(credentials.as_deref());
        Config {
            organization_slug: self.required(
                "JWT_BUILDKITE_ORGANIZATION_SLUG",
                "the Buildkite organization slug",
                identifier,
            ),
            organization_id: self.optional("JWT_BUILDKITE_ORGANIZATION_ID", identifier),
            audience: self.required(
                "JWT_AUDIENCE",
                "the audience clients request their OIDC token for",
                identifier,
            ),
            issuer: self.or(
                "JWT_ISSUER_URL",
                oidc::DEFAULT_ISSUER.to_string(),
                identifier,
            ),
            jwks: self.jwks(),
            leeway_secs: self.number("JWT_LEEWAY_SECS", oidc::DEFAULT_LEEWAY_SECS, 0, 60),
            max_lifetime_secs: self.number(
                "JWT_MAX_LIFETIME_SECS",
                oidc::DEFAULT_MAX_LIFETIME_SECS,
                1,
                7200,
            ),
            jwt_cache_max_entries: self.number(
                "JWT_CACHE_MAX_ENTRIES",
                oidc::reuse::DEFAULT_MAX_ENTRIES,
                0,
                1_000_000,
            ),
            buildkite_api_token: self.buildkite_api_token(credentials.as_deref()),
            buildkite_api_url: self.url("BUILDKITE_API_URL", buildkite::DEFAULT_API_URL),
            github_app_id: self.required("GITHUB_APP_ID", "the GitHub App ID or client ID", app_id),
            github_app_private_key: self.github_app_private_key(credentials.as_deref()),
            github_installation_id: self.required(
                "GITHUB_APP_INSTALLATION_ID",
                "the numeric installation ID",
                |text| whole(text, 1, u64::MAX),
            ),
            github_api_url: self.url("GITHUB_API_URL", github::DEFAULT_API_URL),
            github_host: self.or("GITHUB_HOST", github::DEFAULT_HOST.to_string(), github_host),
            profiles: self.profiles(),
            profiles_refresh_secs: self.number(
                "PROFILES_REFRESH_SECS",
                profiles::DEFAULT_REFRESH_SECS,
                10,
                86_400,
            ),
            profiles_max_bytes: self.number(
                "PROFILES_MAX_BYTES",
                profiles::DEFAULT_MAX_FILE_BYTES,
                1024,
                256 * 1024 * 1024,
            ),
            server_host: self.or("SERVER_HOST", DEFAULT_SERVER_HOST, ip_address),
            server_port: self.number("SERVER_PORT", DEFAULT_SERVER_PORT, 0, 65_535),
            server_base_path: self.optional("SERVER_BASE_PATH", base_path).flatten(),
            server_workers: self.number("SERVER_WORKERS", http::DEFAULT_WORKERS, 1, 1024),
            max_connections: self.number(
                "SERVER_MAX_CONNECTIONS",
                http::DEFAULT_MAX_CONNECTIONS,
                1,
                65_536,
            ),
            max_connections_per_source: self.or(
                "SERVER_MAX_CONNECTIONS_PER_SOURCE",
                Some(http::DEFAULT_MAX_CONNECTIONS_PER_SOURCE),
                |text| off_or_whole(text, 1, 65_536),
            ),
            timeout_header_secs: self.timeout(
                "SERVER_HEADER_TIMEOUT_SECS",
                http::DEFAULT_TIMEOUT_HEADER_SECS,
            ),
            timeout_body_secs: self
                .timeout("SERVER_BODY_TIMEOUT_SECS", http::DEFAULT_TIMEOUT_BODY_SECS),
            timeout_idle_secs: self
                .timeout("SERVER_IDLE_TIMEOUT_SECS", http::DEFAULT_TIMEOUT_IDLE_SECS),
            timeout_shutdown_secs: self.timeout(
                "SERVER_SHUTDOWN_TIMEOUT_SECS",
                http::DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            ),
            timeout_queue_secs: self.timeout(
                "SERVER_QUEUE_TIMEOUT_SECS",
                http::DEFAULT_TIMEOUT_QUEUE_SECS,
            ),
            token_min_remaining_secs: self.number(
                "TOKEN_MIN_REMAINING_SECS",
                token::DEFAULT_MIN_REMAINING_SECS,
                0,
                3300,
            ),
            token_cache_max_entries: self.number(
                "TOKEN_CACHE_MAX_ENTRIES",
                token::DEFAULT_CACHE_MAX_ENTRIES,
                1,
                1_000_000,
            ),
            pipeline_cache_secs: self.number(
                "PIPELINE_CACHE_SECS",
                buildkite::DEFAULT_CACHE_SECS,
                0,
                86_400,
            ),
            rate_limit_per_pipeline: self.or(
                "RATE_LIMIT_PER_PIPELINE",
                DEFAULT_RATE_LIMIT_PER_PIPELINE,
                rate_limit,
            ),
            rate_limit_per_source: self.or(
                "RATE_LIMIT_PER_SOURCE",
                DEFAULT_RATE_LIMIT_PER_SOURCE,
                rate_limit,
            ),
            rate_limit_mints: self.or("RATE_LIMIT_MINTS", DEFAULT_RATE_LIMIT_MINTS, rate_limit),
            github_ratelimit_reserve: self.number(
                "GITHUB_RATELIMIT_RESERVE",
                github::DEFAULT_RATELIMIT_RESERVE,
                0,
                1_000_000,
            ),
            allowed_sources: self.optional("SERVER_ALLOWED_SOURCES", cidr_list),
            trusted_proxies: self.optional("SERVER_TRUSTED_PROXIES", cidr_list),
            metrics: self.or("METRICS", DEFAULT_METRICS, metrics),
            audit_log: self.or("AUDIT_LOG", DEFAULT_AUDIT_LOG, audit_target),
            audit_on_failure: self.or(
                "AUDIT_ON_FAILURE",
                audit::DEFAULT_ON_FAILURE,
                audit_on_failure,
            ),
            log_level: self.or("LOG_LEVEL", DEFAULT_LOG_LEVEL, log_level),
            ssl_cert_file: self.optional("SSL_CERT_FILE", ca_bundle),
            https_proxy: self.either_case("HTTPS_PROXY", "https_proxy", proxy_url),
            no_proxy: self.either_case("NO_PROXY", "no_proxy", |text| Ok(text.to_string())),
            warnings: chinmina_warnings(self.vars),
            cache_url: cache.url,
            cache_username: cache.username,
            cache_password: cache.password,
            cache_encryption_keys: cache.encryption_keys,
            cache_prefix: cache.prefix,
            cache_timeout_ms: cache.timeout_ms,
        }
    }

    /// The shared-cache variables. Without `CACHE_URL` every other one must be unset (so a
    /// forgotten URL is not mistaken for a working shared cache), and the systemd credentials of
    /// the cache are not read.
    fn cache(&mut self, credentials: Option<&Path>) -> Cache {
        let url = self.optional("CACHE_URL", cache_url);
        let configured = self.is_set("CACHE_URL");
        let credentials = credentials.filter(|_| configured);
        let username = self.optional("CACHE_USERNAME", identifier);
        let password = self
            .secret(&CACHE_PASSWORD_NAMES, credentials, false)
            .map(|(password, _)| password);
        let encryption_keys = match self.secret(&CACHE_KEYS_NAMES, credentials, false) {
            Some((keys, origin)) => {
                if let Err(e) = shared::seal::Keys::parse(keys.expose()) {
                    let what = format!(
                        "{e}; expected one or more standard base64 32-byte keys, \
                                        whitespace-separated (head -c 32 /dev/urandom | base64)"
                    );
                    self.problem(origin.variable, origin.message(&what));
                }
                Some(keys)
            }
            None => None,
        };
        let prefix = self.or(
            "CACHE_PREFIX",
            shared::DEFAULT_PREFIX.to_string(),
            cache_prefix,
        );
        let timeout_ms = self.number("CACHE_TIMEOUT_MS", shared::DEFAULT_TIMEOUT_MS, 1, 10_000);
        if configured {
            let keys_given = self.is_set(CACHE_KEYS_NAMES.value)
                || self.is_set(CACHE_KEYS_NAMES.file)
                || encryption_keys.is_some();
            if !keys_given {
                self.problem(
                    CACHE_KEYS_NAMES.value,
                    format!(
                        "required with CACHE_URL, not set; expected {} (a file), {} or the \
                         systemd credential $CREDENTIALS_DIRECTORY/{}",
                        CACHE_KEYS_NAMES.file, CACHE_KEYS_NAMES.value, CACHE_KEYS_NAMES.credential
                    ),
                );
            }
            if username.is_some()
                && password.is_none()
                && !self.is_set("CACHE_PASSWORD")
                && !self.is_set("CACHE_PASSWORD_FILE")
            {
                self.problem(
                    "CACHE_USERNAME",
                    "set without CACHE_PASSWORD; expected the ACL user's password too".to_string(),
                );
            }
        } else {
            for name in [
                "CACHE_USERNAME",
                CACHE_PASSWORD_NAMES.value,
                CACHE_PASSWORD_NAMES.file,
                CACHE_KEYS_NAMES.value,
                CACHE_KEYS_NAMES.file,
                "CACHE_PREFIX",
                "CACHE_TIMEOUT_MS",
            ] {
                if self.is_set(name) {
                    self.problem(
                        name,
                        "set without CACHE_URL; expected CACHE_URL too (or leave this unset)"
                            .to_string(),
                    );
                }
            }
        }
        Cache {
            url,
            username,
            password,
            encryption_keys,
            prefix,
            timeout_ms,
        }
    }

    fn problem(&mut self, variable: &'static str, message: String) {
        self.problems.push(Problem { variable, message });
    }

    /// Looks a variable up; a non-UTF-8 value is recorded as a problem here.
    fn raw(&mut self, name: &'static str) -> Raw<'a> {
        self.looked_up.insert(name);
        if self.not_utf8.contains(name) {
            self.problem(name, "not valid UTF-8; expected UTF-8 text".to_string());
            return Raw::Invalid;
        }
        match self.vars.get(name) {
            None => Raw::Unset,
            Some(value) if value.is_empty() => Raw::Empty,
            Some(value) => Raw::Value(value),
        }
    }

    /// Records a parse failure as a problem of `name`.
    fn check<T>(&mut self, name: &'static str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(message) => {
                self.problem(name, message);
                None
            }
        }
    }

    /// An optional variable: `None` when unset, empty or malformed (a problem).
    fn optional<T>(
        &mut self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.raw(name) {
            Raw::Value(text) => self.check(name, parse(text)),
            Raw::Unset | Raw::Empty | Raw::Invalid => None,
        }
    }

    /// An optional variable with a default (also returned, beside the problem, when malformed).
    fn or<T>(
        &mut self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.optional(name, parse).unwrap_or(default)
    }

    /// A required variable; unset, empty or malformed is a problem and yields a placeholder.
    fn required<T: Default>(
        &mut self,
        name: &'static str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        let parsed = match self.raw(name) {
            Raw::Unset => Err(format!("required, not set; expected {expected}")),
            Raw::Empty => Err(format!("required, set but empty; expected {expected}")),
            Raw::Invalid => return T::default(),
            Raw::Value(text) => parse(text),
        };
        self.check(name, parsed).unwrap_or_default()
    }

    /// An optional variable read under its upper-case name, else its lower-case one.
    fn either_case<T>(
        &mut self,
        upper: &'static str,
        lower: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.raw(upper) {
            Raw::Value(text) => self.check(upper, parse(text)),
            Raw::Invalid => None,
            Raw::Unset | Raw::Empty => self.optional(lower, parse),
        }
    }

    /// An upstream base URL with a default.
    fn url(&mut self, name: &'static str, default: &str) -> String {
        self.or(name, default.to_string(), upstream_url)
    }

    /// A whole number in `min..=max` with a default.
    fn number<T: TryFrom<u64>>(&mut self, name: &'static str, default: T, min: u64, max: u64) -> T {
        self.or(name, default, |text| whole(text, min, max))
    }

    /// A server timeout in seconds, 1–3600.
    fn timeout(&mut self, name: &'static str, default: u64) -> u64 {
        self.number(name, default, 1, 3600)
    }

    /// `JWT_JWKS_URL`, `JWT_JWKS_STATIC`, `JWT_JWKS_STATIC_FILE`: at most one may be set.
    fn jwks(&mut self) -> JwksSource {
        let url = self.optional("JWT_JWKS_URL", upstream_url);
        let inline = self.optional("JWT_JWKS_STATIC", |text| jwks_document(text.as_bytes()));
        let file = self.optional("JWT_JWKS_STATIC_FILE", |text| {
            let path = Path::new(text);
            let bytes = read_file(path, JWKS_LIMIT)
                .map_err(|e| format!("cannot read {path:?}: {e}; expected a readable JWKS file"))?;
            jwks_document(&bytes).map_err(|message| format!("file {path:?}: {message}"))
        });
        if self.is_set("JWT_JWKS_STATIC") && self.is_set("JWT_JWKS_STATIC_FILE") {
            self.conflict("JWT_JWKS_STATIC", "JWT_JWKS_STATIC_FILE");
        }
        if self.is_set("JWT_JWKS_URL")
            && (self.is_set("JWT_JWKS_STATIC") || self.is_set("JWT_JWKS_STATIC_FILE"))
        {
            self.problem(
                "JWT_JWKS_URL",
                "set together with a static JWKS; expected only one of JWT_JWKS_URL, \
                 JWT_JWKS_STATIC and JWT_JWKS_STATIC_FILE"
                    .to_string(),
            );
        }
        match (inline.or(file), url) {
            (Some(document), _) => JwksSource::Static(document),
            (None, Some(url)) => JwksSource::Url(url),
            (None, None) => JwksSource::Url(oidc::DEFAULT_JWKS_URL.to_string()),
        }
    }

    /// `PROFILES_FILE` or `GITHUB_ORG_PROFILE`, not both.
    fn profiles(&mut self) -> ProfileSource {
        let file = self.optional("PROFILES_FILE", |text| Ok(PathBuf::from(text)));
        let github = self.optional("GITHUB_ORG_PROFILE", github_profile);
        if self.is_set("PROFILES_FILE") && self.is_set("GITHUB_ORG_PROFILE") {
            self.conflict("GITHUB_ORG_PROFILE", "PROFILES_FILE");
        }
        match (file, github) {
            (Some(path), _) => ProfileSource::File(path),
            (None, Some(source)) => source,
            (None, None) => ProfileSource::Builtin,
        }
    }

    /// Whether a variable is set to a non-empty value (UTF-8 or not); records nothing.
    fn is_set(&self, name: &str) -> bool {
        self.not_utf8.contains(name) || self.vars.get(name).is_some_and(|v| !v.is_empty())
    }

    fn conflict(&mut self, name: &'static str, other: &str) {
        self.problem(
            name,
            format!("set together with {other}; expected only one of them"),
        );
    }

    /// The GitHub App key: required, and must load as an RSA key.
    fn github_app_private_key(&mut self, credentials: Option<&Path>) -> Secret {
        let Some((key, origin)) = self.secret(&GITHUB_KEY_NAMES, credentials, true) else {
            return Secret::new(String::new());
        };
        if let Err(what) = rsa_private_key(key.expose()) {
            self.problem(origin.variable, origin.message(&what));
        }
        key
    }

    /// The Buildkite API token: optional, and must fit in an HTTP header.
    fn buildkite_api_token(&mut self, credentials: Option<&Path>) -> Option<Secret> {
        let (token, origin) = self.secret(&BUILDKITE_TOKEN_NAMES, credentials, false)?;
        if !token.expose().bytes().all(|b| b.is_ascii_graphic()) {
            let what = "contains whitespace, control or non-ASCII characters; expected a \
                        single-line API token";
            self.problem(origin.variable, origin.message(what));
        }
        Some(token)
    }

    /// A secret from `NAME_FILE`, else `NAME`, else `$CREDENTIALS_DIRECTORY/credential`; setting
    /// both `NAME_FILE` and `NAME` is a problem. Trailing whitespace is trimmed. `None` when not
    /// given (a problem if `required`) or when unusable (a problem).
    fn secret(
        &mut self,
        names: &SecretNames,
        credentials: Option<&Path>,
        required: bool,
    ) -> Option<(Secret, SecretOrigin)> {
        let value = self.raw(names.value);
        let file = self.raw(names.file);
        match (file, value) {
            (Raw::Invalid, _) | (_, Raw::Invalid) => None,
            (Raw::Value(_), Raw::Value(_)) => {
                self.conflict(names.value, names.file);
                None
            }
            (Raw::Value(path), _) => self.secret_file(names.file, Path::new(path)),
            (_, Raw::Value(text)) => {
                let origin = SecretOrigin {
                    variable: names.value,
                    file: None,
                };
                self.secret_text(origin, text)
            }
            (file, value) => match credentials.map(|dir| dir.join(names.credential)) {
                // Read unless surely absent, so an unreadable credential is reported, not skipped.
                Some(path) if !matches!(path.try_exists(), Ok(false)) => {
                    self.secret_file("CREDENTIALS_DIRECTORY", &path)
                }
                _ if required => {
                    let empty = matches!(file, Raw::Empty) || matches!(value, Raw::Empty);
                    let state = if empty { "set but empty" } else { "not set" };
                    self.problem(
                        names.value,
                        format!(
                            "required, {state}; expected {} (a file), {} or the systemd \
                             credential $CREDENTIALS_DIRECTORY/{}",
                            names.file, names.value, names.credential
                        ),
                    );
                    None
                }
                _ => None,
            },
        }
    }

    /// Reads a secret file; problems name the path, never the content.
    fn secret_file(
        &mut self,
        variable: &'static str,
        path: &Path,
    ) -> Option<(Secret, SecretOrigin)> {
        let origin = SecretOrigin {
            variable,
            file: Some(path.to_path_buf()),
        };
        match read_file(path, SECRET_FILE_LIMIT).map(String::from_utf8) {
            Ok(Ok(text)) => self.secret_text(origin, &text),
            Ok(Err(_)) => {
                self.problem(variable, origin.message("not valid UTF-8; expected text"));
                None
            }
            Err(e) => {
                self.problem(
                    variable,
                    format!("cannot read {path:?}: {e}; expected a readable file"),
                );
                None
            }
        }
    }

    /// A secret with its trailing whitespace (a file's final newline) trimmed; empty is a problem.
    fn secret_text(&mut self, origin: SecretOrigin, text: &str) -> Option<(Secret, SecretOrigin)> {
        match text.trim_end() {
            "" => {
                self.problem(
                    origin.variable,
                    origin.message("empty; expected the secret"),
                );
                None
            }
            secret => Some((Secret::new(secret.to_string()), origin)),
        }
    }
}

/// Reads at most `limit` bytes of a file; a longer file is an error.
fn read_file(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > limit) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// A whole number in `min..=max`, plain decimal digits only (no sign, no spaces).
fn whole<T: TryFrom<u64>>(text: &str, min: u64, max: u64) -> Result<T, String> {
    let expected = format!("expected a whole number from {min} to {max}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("not a whole number; {expected}"));
    }
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => {
            T::try_from(n).map_err(|_| format!("out of range; {expected}"))
        }
        _ => Err(format!("out of range; {expected}")),
    }
}

/// Free text used as an identifier or compared byte for byte (slug, audience, issuer).
fn identifier(text: &str) -> Result<String, String> {
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "contains whitespace or control characters; expected a value without them".to_string(),
        );
    }
    Ok(text.to_string())
}

/// A GitHub App ID (numeric) or client ID (`Iv23li…`).
fn app_id(text: &str) -> Result<String, String> {
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(
            "contains characters other than A-Z a-z 0-9 . _ -; expected a numeric App ID \
                    or a client ID such as Iv23li..."
                .to_string(),
        );
    }
    Ok(text.to_string())
}

/// Checks that PEM text holds an RSA private key `ring` can sign with. The messages are fixed:
/// they never carry any of the key.
fn rsa_private_key(pem: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "expected -----BEGIN RSA PRIVATE KEY----- (PKCS#1) or -----BEGIN PRIVATE KEY----- (PKCS#8)";
    let loaded = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs1(der)) => {
            ring::signature::RsaKeyPair::from_der(der.secret_pkcs1_der()).map(drop)
        }
        Ok(PrivateKeyDer::Pkcs8(der)) => {
            ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map(drop)
        }
        Ok(_) => return Err(format!("an EC key, not RSA; {EXPECTED} holding an RSA key")),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(format!("no PEM private key found; {EXPECTED}"));
        }
        Err(_) => return Err(format!("malformed PEM; {EXPECTED}")),
    };
    loaded.map_err(|_| {
        format!("not a usable RSA private key; {EXPECTED} holding an RSA key of 2048 to 8192 bits")
    })
}

/// A static JWKS document: at most 64 KiB, a JSON object with a `keys` array.
fn jwks_document(bytes: &[u8]) -> Result<Vec<u8>, String> {
    const EXPECTED: &str = "expected a JWKS document, a JSON object {\"keys\": [...]}";
    if u64::try_from(bytes.len()).map_or(true, |len| len > JWKS_LIMIT) {
        return Err(format!("larger than {JWKS_LIMIT} bytes; {EXPECTED}"));
    }
    let document: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e}); {EXPECTED}"))?;
    if !document
        .get("keys")
        .is_some_and(serde_json::Value::is_array)
    {
        return Err(format!("no \"keys\" array; {EXPECTED}"));
    }
    Ok(bytes.to_vec())
}

/// An upstream base URL: `https://HOST[:PORT][/PATH]`, or `http://` for a loopback host; no user
/// information, query or fragment. Trailing `/` is trimmed.
fn upstream_url(text: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected https://HOST[:PORT][/PATH] (http:// only for 127.0.0.0/8, \
                            [::1] or localhost)";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("not a URL; {EXPECTED}"));
    };
    if rest.contains(['?', '#']) {
        return Err(format!("has a query or fragment; {EXPECTED}"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(format!("has user information (user@); {EXPECTED}"));
    }
    let (host, _port) = host_port(authority).map_err(|what| format!("{what}; {EXPECTED}"))?;
    match scheme {
        "https" => {}
        "http" if crate::upstream::is_loopback(host) => {}
        "http" => {
            return Err(format!(
                "plain http:// to a host that is not loopback; {EXPECTED}"
            ));
        }
        _ => return Err(format!("scheme is not https; {EXPECTED}")),
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "path has whitespace, control or non-ASCII characters; {EXPECTED}"
        ));
    }
    match path.trim_end_matches('/') {
        "" => Ok(format!("{scheme}://{authority}")),
        path => Ok(format!("{scheme}://{authority}/{path}")),
    }
}

/// Splits `HOST[:PORT]` (IPv6 in brackets) into the host (without brackets) and the port.
/// A host name is dot-separated non-empty labels of `A-Z a-z 0-9 -`; a port is 1–65535.
fn host_port(authority: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err("unclosed [ in the host");
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("not an IPv6 address in [ ]");
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or("junk after ]")?)),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if !authority.starts_with('[') && !host.split('.').all(label_ok) {
        return Err("the host is not a host name (dot-separated A-Z a-z 0-9 - labels)");
    }
    let port = match port {
        None => None,
        Some(port) => match whole::<u16>(port, 1, 65_535) {
            Ok(port) => Some(port),
            Err(_) => return Err("the port is not a whole number from 1 to 65535"),
        },
    };
    Ok((host, port))
}

/// `GITHUB_HOST`: `HOST[:PORT]`, lowercased.
fn github_host(text: &str) -> Result<String, String> {
    if text.contains("://") {
        return Err("has a URL scheme; expected HOST[:PORT] such as github.com".to_string());
    }
    host_port(text).map_err(|what| format!("{what}; expected HOST[:PORT] such as github.com"))?;
    Ok(text.to_ascii_lowercase())
}

/// `GITHUB_ORG_PROFILE`: `OWNER:REPO:PATH[@REF]`; see [`ProfileSource::GitHub`].
fn github_profile(text: &str) -> Result<ProfileSource, String> {
    const EXPECTED: &str =
        "expected OWNER:REPO:PATH[@REF] such as acme:kitebridge-config:profiles.json@main";
    let parts = text.split_once(':').and_then(|(owner, rest)| {
        let (repo, rest) = rest.split_once(':')?;
        Some((owner, repo, rest))
    });
    let Some((owner, repo, rest)) = parts else {
        return Err(format!("not three :-separated parts; {EXPECTED}"));
    };
    let (path, git_ref) = match rest.split_once('@') {
        Some((path, git_ref)) => (path, Some(git_ref)),
        None => (rest, None),
    };
    let wrong = github_owner(owner)
        .and_then(|()| github_repo(repo))
        .and_then(|()| repository_path(path))
        .and_then(|()| git_ref.map_or(Ok(()), git_reference));
    wrong.map_err(|what| format!("{what}; {EXPECTED}"))?;
    Ok(ProfileSource::GitHub {
        owner: owner.to_string(),
        repo: repo.to_string(),
        path: path.to_string(),
        git_ref: git_ref.map(str::to_string),
    })
}

fn github_owner(owner: &str) -> Result<(), &'static str> {
    match owner {
        "" => Err("OWNER is empty"),
        _ if crate::github::is_valid_owner(owner) => Ok(()),
        _ => Err(
            "OWNER is not a GitHub account name (A-Z a-z 0-9 - _, not starting with -, at most 100)",
        ),
    }
}

fn github_repo(repo: &str) -> Result<(), &'static str> {
    match repo {
        "" => Err("REPO is empty"),
        "." | ".." => Err("REPO is . or .."),
        _ if crate::github::is_valid_repo_name(repo) => Ok(()),
        _ => Err(
            "REPO is not a GitHub repository name (A-Z a-z 0-9 - _ ., at most 100, not ending in .git)",
        ),
    }
}

fn repository_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("PATH is empty");
    }
    if path.starts_with('/') {
        return Err("PATH starts with /");
    }
    for segment in path.split('/') {
        match segment {
            "" => return Err("PATH has an empty segment"),
            "." | ".." => return Err("PATH has a . or .. segment"),
            _ if !segment.bytes().all(is_name_byte) => {
                return Err("PATH has characters other than A-Z a-z 0-9 - _ . /");
            }
            _ => {}
        }
    }
    Ok(())
}

fn git_reference(git_ref: &str) -> Result<(), &'static str> {
    if git_ref.is_empty() {
        return Err("REF after @ is empty");
    }
    if git_ref.contains("..") || git_ref.split('/').any(str::is_empty) {
        return Err("REF has .. or an empty /-segment");
    }
    if !git_ref.bytes().all(|b| is_name_byte(b) || b == b'/') {
        return Err("REF has characters other than A-Z a-z 0-9 - _ . /");
    }
    Ok(())
}

/// `A-Z a-z 0-9 - _ .`
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// `CACHE_URL`: `redis://HOST:PORT[/DB]` or `rediss://HOST:PORT[/DB]`.
fn cache_url(text: &str) -> Result<shared::Endpoint, String> {
    const EXPECTED: &str =
        "expected redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB] (DB 0-65535)";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("not a URL; {EXPECTED}"));
    };
    let tls = match scheme {
        "redis" => false,
        "rediss" => true,
        _ => return Err(format!("scheme is not redis:// or rediss://; {EXPECTED}")),
    };
    if rest.contains(['?', '#']) {
        return Err(format!("has a query or fragment; {EXPECTED}"));
    }
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(format!(
            "has user information (user@): credentials go in CACHE_USERNAME and CACHE_PASSWORD; \
             {EXPECTED}"
        ));
    }
    let (host, port) = host_port(authority).map_err(|what| format!("{what}; {EXPECTED}"))?;
    let Some(port) = port else {
        return Err(format!("has no port; {EXPECTED}"));
    };
    let db = match db {
        "" => 0,
        db => whole::<u16>(db, 0, 65_535)
            .map_err(|_| format!("DB is not a whole number from 0 to 65535; {EXPECTED}"))?,
    };
    Ok(shared::Endpoint {
        host: host.to_ascii_lowercase(),
        port,
        db,
        tls,
    })
}

/// `CACHE_PREFIX`: visible ASCII, at most 64 bytes.
fn cache_prefix(text: &str) -> Result<String, String> {
    if text.len() > CACHE_PREFIX_MAX || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "not visible ASCII of at most {CACHE_PREFIX_MAX} bytes; expected a key namespace such \
             as kitebridge:"
        ));
    }
    Ok(text.to_string())
}

/// `SERVER_HOST`: an IP address.
fn ip_address(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|_| {
        "not an IP address; expected an address such as 127.0.0.1, 0.0.0.0 or ::1".to_string()
    })
}

/// `SERVER_BASE_PATH`, normalised: `Some("/a/b")`, or `None` for `/`.
fn base_path(text: &str) -> Result<Option<String>, String> {
    const EXPECTED: &str = "expected a path such as /bridge, of segments of A-Z a-z 0-9 - . _ ~";
    let inner = text.strip_prefix('/').unwrap_or(text);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Ok(None);
    }
    for segment in inner.split('/') {
        let wrong = match segment {
            "" => "has an empty segment (//)",
            "." | ".." => "has a . or .. segment",
            _ if !segment.bytes().all(|b| is_name_byte(b) || b == b'~') => {
                "has characters other than A-Z a-z 0-9 - . _ ~ /"
            }
            _ => continue,
        };
        return Err(format!("{wrong}; {EXPECTED}"));
    }
    Ok(Some(format!("/{inner}")))
}

/// `RATE_LIMIT_PER_*`: `off` or `COUNT/WINDOW`; see [`RateLimit`].
fn rate_limit(text: &str) -> Result<RateLimit, String> {
    const EXPECTED: &str = "expected COUNT/WINDOW such as 120/60s (WINDOW in s, m or h, at most \
                            24h) or off";
    if text.eq_ignore_ascii_case("off") {
        return Ok(RateLimit::Off);
    }
    let Some((count, window)) = text.split_once('/') else {
        return Err(format!("not COUNT/WINDOW; {EXPECTED}"));
    };
    let count = whole::<u32>(count, 1, u64::from(u32::MAX)).map_err(|_| {
        format!(
            "COUNT is not a whole number from 1 to {}; {EXPECTED}",
            u32::MAX
        )
    })?;
    let (number, unit_secs) = if let Some(number) = window.strip_suffix('s') {
        (number, 1)
    } else if let Some(number) = window.strip_suffix('m') {
        (number, 60)
    } else if let Some(number) = window.strip_suffix('h') {
        (number, 3600)
    } else {
        return Err(format!("WINDOW has no unit s, m or h; {EXPECTED}"));
    };
    let window_secs = whole::<u64>(number, 1, RATE_WINDOW_MAX_SECS)
        .ok()
        .and_then(|n| n.checked_mul(unit_secs))
        .filter(|secs| *secs <= RATE_WINDOW_MAX_SECS)
        .ok_or_else(|| format!("WINDOW is not from 1s to 24h; {EXPECTED}"))?;
    Ok(RateLimit::Limit { count, window_secs })
}

/// `SERVER_ALLOWED_SOURCES`, `SERVER_TRUSTED_PROXIES`: comma-separated CIDRs (every bad entry
/// named by its position, never by its text).
fn cidr_list(text: &str) -> Result<CidrSet, String> {
    CidrSet::parse_list(text).map_err(|errors| {
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "{}; expected comma-separated address ranges such as 10.0.0.0/8, 2001:db8::/32",
            shown.join(", ")
        )
    })
}

/// `METRICS`: `on`, `off` or `HOST:PORT`.
fn metrics(text: &str) -> Result<Metrics, String> {
    if text.eq_ignore_ascii_case("on") {
        return Ok(Metrics::On);
    }
    if text.eq_ignore_ascii_case("off") {
        return Ok(Metrics::Off);
    }
    text.parse().map(Metrics::Listen).map_err(|_| {
        "neither on, off nor an IP HOST:PORT; expected on, off, or an address such as \
         127.0.0.1:9090 or [::1]:9090"
            .to_string()
    })
}

/// `AUDIT_LOG`: `stdout`, `stderr` or an absolute path.
fn audit_target(text: &str) -> Result<AuditTarget, String> {
    if text.eq_ignore_ascii_case("stdout") {
        return Ok(AuditTarget::Stdout);
    }
    if text.eq_ignore_ascii_case("stderr") {
        return Ok(AuditTarget::Stderr);
    }
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(
            "a relative path; expected stdout, stderr or an absolute file path".to_string(),
        );
    }
    Ok(AuditTarget::File(path))
}

/// `AUDIT_ON_FAILURE`: `refuse` or `serve`.
fn audit_on_failure(text: &str) -> Result<OnFailure, String> {
    match text.to_ascii_lowercase().as_str() {
        "refuse" => Ok(OnFailure::Refuse),
        "serve" => Ok(OnFailure::Serve),
        _ => Err("neither refuse nor serve; expected refuse or serve".to_string()),
    }
}

/// `off` (no limit: `None`) or a whole number in `min..=max`.
fn off_or_whole(text: &str, min: u64, max: u64) -> Result<Option<usize>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    whole(text, min, max)
        .map(Some)
        .map_err(|message| format!("{message}, or off"))
}

/// `LOG_LEVEL`: one of the five level names.
fn log_level(text: &str) -> Result<LevelFilter, String> {
    match text.to_ascii_lowercase().as_str() {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err("not a log level; expected error, warn, info, debug or trace".to_string()),
    }
}

/// `SSL_CERT_FILE`: a readable file of PEM certificates.
fn ca_bundle(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let bytes = read_file(&path, CA_BUNDLE_LIMIT)
        .map_err(|e| format!("cannot read {path:?}: {e}; expected a readable PEM CA bundle"))?;
    let mut certificates = 0;
    for certificate in CertificateDer::pem_slice_iter(&bytes) {
        if certificate.is_err() {
            return Err(format!(
                "file {path:?}: malformed PEM; expected a PEM CA bundle"
            ));
        }
        certificates += 1;
    }
    if certificates == 0 {
        return Err(format!(
            "file {path:?}: no -----BEGIN CERTIFICATE-----; expected a PEM CA bundle"
        ));
    }
    Ok(path)
}

/// `HTTPS_PROXY`: `http://HOST:PORT` (a trailing `/` is dropped); credentials are refused, so the
/// value is never secret.
fn proxy_url(text: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected http://HOST:PORT such as http://proxy.example:3128";
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(format!("scheme is not http://; {EXPECTED}"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(format!(
            "has credentials (user@), which are not supported; {EXPECTED}"
        ));
    }
    match host_port(authority) {
        Ok((_, Some(_))) => Ok(format!("http://{authority}")),
        Ok((_, None)) => Err(format!("has no port; {EXPECTED}")),
        Err(what) => Err(format!("{what}; {EXPECTED}")),
    }
}

/// chinmina-bridge variables kitebridge does not read, each with what to do instead. The rest
/// of chinmina-bridge's configuration has the same names and meaning here.
const CHINMINA_ONLY: &[(&str, &str)] = &[
    ("CACHE_TYPE", "use CACHE_URL for a shared cache"),
    (
        "VALKEY_ADDRESS",
        "use CACHE_URL (redis://HOST:PORT or rediss://HOST:PORT)",
    ),
    ("VALKEY_TLS", "use a rediss:// CACHE_URL"),
    ("VALKEY_USERNAME", "use CACHE_USERNAME"),
    ("VALKEY_PASSWORD", "use CACHE_PASSWORD"),
    (
        "VALKEY_IAM_ENABLED",
        "IAM authentication is not supported: use CACHE_USERNAME and CACHE_PASSWORD",
    ),
    (
        "VALKEY_IAM_CACHE_NAME",
        "IAM authentication is not supported",
    ),
    (
        "VALKEY_IAM_SERVERLESS",
        "IAM authentication is not supported",
    ),
    ("CACHE_ENCRYPTION_ENABLED", "use CACHE_ENCRYPTION_KEYS"),
    ("CACHE_ENCRYPTION_KEYSET_URI", "use CACHE_ENCRYPTION_KEYS"),
    (
        "CACHE_ENCRYPTION_KMS_ENVELOPE_KEY_URI",
        "use CACHE_ENCRYPTION_KEYS",
    ),
    (
        "CACHE_ENCRYPTION_KEYSET_FILE",
        "use CACHE_ENCRYPTION_KEYS_FILE",
    ),
    (
        "GITHUB_APP_PRIVATE_KEY_ARN",
        "KMS signing is not supported: use a systemd credential (github-app-private-key)",
    ),
    (
        "SERVER_OUTGOING_MAX_IDLE_CONNS",
        "outbound connections are not tuned by configuration",
    ),
    (
        "SERVER_OUTGOING_MAX_CONNS_PER_HOST",
        "outbound connections are not tuned by configuration",
    ),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "use /metrics (METRICS)"),
];

/// chinmina-bridge's OpenTelemetry settings all start so; kitebridge serves `/metrics` instead.
const CHINMINA_OBSERVE_PREFIX: &str = "OBSERVE_";

/// One warning for each chinmina-bridge variable of `vars` that is set (not empty) but that
/// kitebridge does not read, naming the equivalent; sorted by name. Values are never shown.
pub fn chinmina_warnings(vars: &BTreeMap<String, String>) -> Vec<String> {
    vars.iter()
        .filter(|(_, value)| !value.is_empty())
        .filter_map(|(name, _)| {
            let advice = CHINMINA_ONLY
                .iter()
                .find(|(known, _)| known == name)
                .map(|(_, advice)| *advice)
                .or_else(|| {
                    name.starts_with(CHINMINA_OBSERVE_PREFIX)
                        .then_some("OpenTelemetry is not supported: use /metrics (METRICS)")
                })?;
            Some(format!(
                "{name} is a chinmina-bridge variable kitebridge does not read: {advice}"
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinmina_variables_are_warned_about_with_the_equivalent() {
        let vars: BTreeMap<String, String> = [
            ("VALKEY_PASSWORD", "hunter2-not-shown"),
            ("CACHE_TYPE", "valkey"),
            ("OBSERVE_ENABLED", "true"),
            ("GITHUB_APP_PRIVATE_KEY_ARN", "arn:aws:kms:not-shown"),
            ("VALKEY_TLS", ""),
            ("CACHE_ENCRYPTION_KEYS", "kitebridge's own"),
            ("JWT_AUDIENCE", "shared with chinmina-bridge"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let warnings = chinmina_warnings(&vars);
        assert_eq!(
            warnings,
            [
                "CACHE_TYPE is a chinmina-bridge variable kitebridge does not read: use \
                 CACHE_URL for a shared cache",
                "GITHUB_APP_PRIVATE_KEY_ARN is a chinmina-bridge variable kitebridge does not \
                 read: KMS signing is not supported: use a systemd credential \
                 (github-app-private-key)",
                "OBSERVE_ENABLED is a chinmina-bridge variable kitebridge does not read: \
                 OpenTelemetry is not supported: use /metrics (METRICS)",
                "VALKEY_PASSWORD is a chinmina-bridge variable kitebridge does not read: use \
                 CACHE_PASSWORD",
            ]
        );
        assert!(!warnings.concat().contains("not-shown"));
        for (name, _) in CHINMINA_ONLY {
            assert!(
                !Config::variables().contains(name),
                "{name} is read by kitebridge"
            );
        }
    }

    #[test]
    fn whole_numbers() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("0", Ok(0)),
            ("60", Ok(60)),
            ("007", Ok(7)),
            ("61", Err("out of range")),
            ("", Err("not a whole number")),
            ("+5", Err("not a whole number")),
            ("-1", Err("not a whole number")),
            (" 5", Err("not a whole number")),
            ("5 ", Err("not a whole number")),
            ("5s", Err("not a whole number")),
            ("1e3", Err("not a whole number")),
            ("99999999999999999999999", Err("out of range")),
        ];
        for (text, expected) in cases {
            let parsed = whole::<u64>(text, 0, 60);
            match expected {
                Ok(n) => assert_eq!(parsed, Ok(*n), "{text:?}"),
                Err(what) => {
                    let message = parsed.unwrap_err();
                    assert!(message.starts_with(what), "{text:?}: {message}");
                    assert!(
                        message.ends_with("expected a whole number from 0 to 60"),
                        "{message}"
                    );
                }
            }
        }
        assert!(
            whole::<u16>("65536", 0, 70_000).is_err(),
            "does not fit the type"
        );
    }

    #[test]
    fn upstream_urls() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("https://api.github.com", Ok("https://api.github.com")),
            ("https://api.github.com/", Ok("https://api.github.com")),
            (
                "https://ghe.example.com/api/v3/",
                Ok("https://ghe.example.com/api/v3"),
            ),
            (
                "https://ghe.example.com:8443/api/v3",
                Ok("https://ghe.example.com:8443/api/v3"),
            ),
            ("http://127.0.0.1:8080", Ok("http://127.0.0.1:8080")),
            ("http://127.1.2.3/x", Ok("http://127.1.2.3/x")),
            ("http://localhost:9000/", Ok("http://localhost:9000")),
            ("http://[::1]:9000", Ok("http://[::1]:9000")),
            ("https://[2001:db8::1]/", Ok("https://[2001:db8::1]")),
            (
                "http://api.github.com",
                Err("plain http:// to a host that is not loopback"),
            ),
            (
                "http://10.0.0.1",
                Err("plain http:// to a host that is not loopback"),
            ),
            (
                "http://[2001:db8::1]",
                Err("plain http:// to a host that is not loopback"),
            ),
            (
                "http://localhost.evil.com",
                Err("plain http:// to a host that is not loopback"),
            ),
            ("ftp://api.github.com", Err("scheme is not https")),
            ("HTTPS://api.github.com", Err("scheme is not https")),
            ("api.github.com", Err("not a URL")),
            (
                "https://user:pw@api.github.com",
                Err("has user information"),
            ),
            (
                "https://api.github.com/?x=1",
                Err("has a query or fragment"),
            ),
            ("https://api.github.com#top", Err("has a query or fragment")),
            ("https://", Err("the host is not a host name")),
            (
                "https://api..github.com",
                Err("the host is not a host name"),
            ),
            ("https://api_github.com", Err("the host is not a host name")),
            (
                "https://api.github.com:0",
                Err("the port is not a whole number"),
            ),
            (
                "https://api.github.com:x",
                Err("the port is not a whole number"),
            ),
            (
                "https://api.github.com:",
                Err("the port is not a whole number"),
            ),
            ("https://[::1", Err("unclosed [")),
            ("https://[nope]", Err("not an IPv6 address")),
            ("https://[::1]x", Err("junk after ]")),
            ("https://api.github.com/a b", Err("path has whitespace")),
        ];
        for (text, expected) in cases {
            match (upstream_url(text), expected) {
                (Ok(url), Ok(want)) => assert_eq!(url, *want, "{text:?}"),
                (Err(message), Err(what)) => {
                    assert!(message.starts_with(what), "{text:?}: {message}")
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn base_paths() {
        let cases: &[(&str, Result<Option<&str>, &str>)] = &[
            ("/", Ok(None)),
            ("/bridge", Ok(Some("/bridge"))),
            ("/bridge/", Ok(Some("/bridge"))),
            ("bridge", Ok(Some("/bridge"))),
            ("/a/b-c_d.e~f", Ok(Some("/a/b-c_d.e~f"))),
            ("/a//b", Err("has an empty segment")),
            ("/bridge//", Err("has an empty segment")),
            ("/a/../b", Err("has a . or .. segment")),
            ("/.", Err("has a . or .. segment")),
            ("/a b", Err("has characters other than")),
            ("/a%20b", Err("has characters other than")),
            ("/a?b", Err("has characters other than")),
        ];
        for (text, expected) in cases {
            match (base_path(text), expected) {
                (Ok(path), Ok(want)) => assert_eq!(path.as_deref(), *want, "{text:?}"),
                (Err(message), Err(what)) => {
                    assert!(message.starts_with(what), "{text:?}: {message}")
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn rate_limits() {
        let limit = |count, window_secs| Ok(RateLimit::Limit { count, window_secs });
        let cases: &[(&str, Result<RateLimit, &str>)] = &[
            ("120/60s", limit(120, 60)),
            ("10/1m", limit(10, 60)),
            ("1/1s", limit(1, 1)),
            ("5/2h", limit(5, 7200)),
            ("4294967295/24h", limit(u32::MAX, 86_400)),
            ("off", Ok(RateLimit::Off)),
            ("OFF", Ok(RateLimit::Off)),
            ("120", Err("not COUNT/WINDOW")),
            ("", Err("not COUNT/WINDOW")),
            ("0/60s", Err("COUNT is not")),
            ("/60s", Err("COUNT is not")),
            ("4294967296/60s", Err("COUNT is not")),
            ("x/60s", Err("COUNT is not")),
            ("120/60", Err("WINDOW has no unit")),
            ("120/60S", Err("WINDOW has no unit")),
            ("120/60d", Err("WINDOW has no unit")),
            ("120/0s", Err("WINDOW is not from 1s to 24h")),
            ("120/s", Err("WINDOW is not from 1s to 24h")),
            ("120/25h", Err("WINDOW is not from 1s to 24h")),
            ("120/86401s", Err("WINDOW is not from 1s to 24h")),
            ("120/ 60s", Err("WINDOW is not from 1s to 24h")),
            ("120/1/60s", Err("WINDOW is not from 1s to 24h")),
        ];
        for (text, expected) in cases {
            match (rate_limit(text), expected) {
                (Ok(limit), Ok(want)) => assert_eq!(limit, *want, "{text:?}"),
                (Err(message), Err(what)) => {
                    assert!(message.starts_with(what), "{text:?}: {message}")
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn github_profiles() {
        let source = |owner: &str, repo: &str, path: &str, git_ref: Option<&str>| {
            Ok(ProfileSource::GitHub {
                owner: owner.to_string(),
                repo: repo.to_string(),
                path: path.to_string(),
                git_ref: git_ref.map(str::to_string),
            })
        };
        let cases: &[(&str, Result<ProfileSource, &str>)] = &[
            (
                "acme:config:profiles.json",
                source("acme", "config", "profiles.json", None),
            ),
            (
                "acme-inc:kb.config:.buildkite/profiles.json@release/v1",
                source(
                    "acme-inc",
                    "kb.config",
                    ".buildkite/profiles.json",
                    Some("release/v1"),
                ),
            ),
            ("acme:config", Err("not three :-separated parts")),
            ("acme", Err("not three :-separated parts")),
            (":config:p.json", Err("OWNER is empty")),
            (
                "-acme:config:p.json",
                Err("OWNER is not a GitHub account name"),
            ),
            (
                "ac me:config:p.json",
                Err("OWNER is not a GitHub account name"),
            ),
            ("acme::p.json", Err("REPO is empty")),
            ("acme:..:p.json", Err("REPO is . or ..")),
            (
                "acme:con fig:p.json",
                Err("REPO is not a GitHub repository name"),
            ),
            ("acme:config:", Err("PATH is empty")),
            ("acme:config:@main", Err("PATH is empty")),
            ("acme:config:/etc/p.json", Err("PATH starts with /")),
            ("acme:config:a//p.json", Err("PATH has an empty segment")),
            ("acme:config:dir/", Err("PATH has an empty segment")),
            ("acme:config:../p.json", Err("PATH has a . or .. segment")),
            ("acme:config:a/./p.json", Err("PATH has a . or .. segment")),
            ("acme:config:a:b.json", Err("PATH has characters")),
            ("acme:config:p.json@", Err("REF after @ is empty")),
            ("acme:config:p.json@a..b", Err("REF has .. or an empty")),
            ("acme:config:p.json@/main", Err("REF has .. or an empty")),
            ("acme:config:p.json@main@x", Err("REF has characters")),
            ("acme:config:p.json@ma in", Err("REF has characters")),
        ];
        for (text, expected) in cases {
            match (github_profile(text), expected) {
                (Ok(source), Ok(want)) => assert_eq!(source, *want, "{text:?}"),
                (Err(message), Err(what)) => {
                    assert!(message.starts_with(what), "{text:?}: {message}")
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn proxy_urls() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            (
                "http://proxy.internal:3128",
                Ok("http://proxy.internal:3128"),
            ),
            (
                "http://proxy.internal:3128/",
                Ok("http://proxy.internal:3128"),
            ),
            ("http://[::1]:3128", Ok("http://[::1]:3128")),
            ("proxy.internal:3128", Err("scheme is not http://")),
            ("https://proxy.internal:3128", Err("scheme is not http://")),
            ("http://user:pw@proxy.internal:3128", Err("has credentials")),
            ("http://proxy.internal", Err("has no port")),
            ("http://proxy.internal:3128/x", Err("the port is not")),
        ];
        for (text, expected) in cases {
            match (proxy_url(text), expected) {
                (Ok(url), Ok(want)) => assert_eq!(url, *want, "{text:?}"),
                (Err(message), Err(what)) => {
                    assert!(message.starts_with(what), "{text:?}: {message}");
                    assert!(!message.contains("pw"), "{message}");
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn cache_urls() {
        let endpoint = |host: &str, port, db, tls| {
            Ok(shared::Endpoint {
                host: host.to_string(),
                port,
                db,
                tls,
            })
        };
        let cases: &[(&str, Result<shared::Endpoint, &str>)] = &[
            (
                "redis://127.0.0.1:6379",
                endpoint("127.0.0.1", 6379, 0, false),
            ),
            (
                "redis://127.0.0.1:6379/",
                endpoint("127.0.0.1", 6379, 0, false),
            ),
            (
                "redis://cache.internal:6380/3",
                endpoint("cache.internal", 6380, 3, false),
            ),
            (
                "rediss://Cache.Example.com:6379/0",
                endpoint("cache.example.com", 6379, 0, true),
            ),
            (
                "rediss://[::1]:6379/65535",
                endpoint("::1", 6379, 65535, true),
            ),
            (
                "http://cache:6379",
                Err("scheme is not redis:// or rediss://"),
            ),
            (
                "REDIS://cache:6379",
                Err("scheme is not redis:// or rediss://"),
            ),
            ("cache:6379", Err("not a URL")),
            ("redis://:pw@cache:6379", Err("has user information")),
            ("redis://user:pw@cache:6379/0", Err("has user information")),
            (
                "redis://cache:6379/0?timeout=1",
                Err("has a query or fragment"),
            ),
            ("redis://cache:6379#x", Err("has a query or fragment")),
            ("redis://cache", Err("has no port")),
            ("redis://cache:0", Err("the port is not a whole number")),
            ("redis://cache:99999", Err("the port is not a whole number")),
            ("redis://ca_che:6379", Err("the host is not a host name")),
            ("redis://:6379", Err("the host is not a host name")),
            ("redis://cache:6379/65536", Err("DB is not a whole number")),
            ("redis://cache:6379/x", Err("DB is not a whole number")),
            ("redis://cache:6379/0/1", Err("DB is not a whole number")),
        ];
        for (text, expected) in cases {
            match (cache_url(text), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text:?}"),
                (Err(message), Err(what)) => {
                    assert!(message.starts_with(what), "{text:?}: {message}");
                    assert!(!message.contains("pw"), "{message}");
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn cache_prefixes() {
        assert_eq!(cache_prefix("kitebridge:"), Ok("kitebridge:".to_string()));
        assert_eq!(cache_prefix("a{b}:"), Ok("a{b}:".to_string()));
        assert!(cache_prefix("has space").is_err());
        assert!(cache_prefix("tab\t").is_err());
        assert!(cache_prefix("é").is_err());
        assert!(cache_prefix(&"x".repeat(65)).is_err());
        assert!(cache_prefix(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(metrics("OFF"), Ok(Metrics::Off));
        assert_eq!(metrics("On"), Ok(Metrics::On));
        assert_eq!(audit_target("STDERR"), Ok(AuditTarget::Stderr));
        assert_eq!(log_level("Debug"), Ok(LevelFilter::Debug));
        assert!(
            log_level("off").is_err(),
            "off is not one of the five levels"
        );
    }

    #[test]
    fn address_range_lists() {
        let set = cidr_list("10.0.0.0/8, ::1/128").unwrap();
        assert_eq!(set.to_string(), "10.0.0.0/8, ::1/128");
        let message = cidr_list("10.0.0.0/8,secret-value,10.1.0.0/8").unwrap_err();
        assert_eq!(
            message,
            "entry 2: not an ip address, entry 3: address has bits set beyond the prefix length; \
             expected comma-separated address ranges such as 10.0.0.0/8, 2001:db8::/32"
        );
        assert!(!message.contains("secret-value"), "never the value");
    }

    #[test]
    fn audit_on_failure_and_per_source_cap() {
        assert_eq!(audit_on_failure("refuse"), Ok(OnFailure::Refuse));
        assert_eq!(audit_on_failure("SERVE"), Ok(OnFailure::Serve));
        for bad in ["", "drop", "refuse ", "off"] {
            let message = audit_on_failure(bad).unwrap_err();
            assert!(message.starts_with("neither refuse nor serve"), "{bad:?}");
        }
        let cases: &[(&str, Result<Option<usize>, &str>)] = &[
            ("off", Ok(None)),
            ("OFF", Ok(None)),
            ("1", Ok(Some(1))),
            ("64", Ok(Some(64))),
            ("65536", Ok(Some(65_536))),
            (
                "0",
                Err("out of range; expected a whole number from 1 to 65536, or off"),
            ),
            ("65537", Err("out of range")),
            ("none", Err("not a whole number")),
            ("-1", Err("not a whole number")),
        ];
        for (text, want) in cases {
            match (off_or_whole(text, 1, 65_536), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{text:?}"),
                (Err(message), Err(start)) => assert!(message.starts_with(start), "{message}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn non_utf8_value_is_one_problem() {
        let vars = BTreeMap::new();
        let not_utf8 = BTreeSet::from(["JWT_AUDIENCE".to_string(), "SERVER_PORT".to_string()]);
        let error = Reader::new(&vars, &not_utf8).config().unwrap_err();
        let about = |name: &str| -> Vec<&Problem> {
            error
                .problems()
                .iter()
                .filter(|p| p.variable == name)
                .collect()
        };
        assert_eq!(about("JWT_AUDIENCE").len(), 1, "{error}");
        assert_eq!(
            about("JWT_AUDIENCE")[0].message,
            "not valid UTF-8; expected UTF-8 text"
        );
        assert_eq!(
            about("SERVER_PORT")[0].message,
            "not valid UTF-8; expected UTF-8 text"
        );
    }

    #[test]
    fn secret_is_redacted() {
        let secret = Secret::new("hunter2".to_string());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2");
    }
}
