//! Why a token request was refused: one variant per violated rule, carrying its data.
//!
//! [`Refusal::answer`] is the one table that says how each refusal is answered: the HTTP status,
//! the fixed client message, and the OAuth error code and description of `POST /oauth/token`.
//! `Display` is the precise reason for the audit record (untrusted strings escaped); it is never
//! sent to the client. No refusal is ever recognised by its text.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

use super::credential::CredentialError;
use super::exchange::{ErrorCode, ExchangeError};
use crate::forwarded::ForwardedError;
use crate::http::form::FormError;
use crate::oidc::{self, Rejected};
use crate::profiles::{Permission, ProfileRef, RefError};
use crate::upstream::Failure;

/// Which rate limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `RATE_LIMIT_PER_SOURCE`: by client address (IPv6 by /64).
    Source,
    /// `RATE_LIMIT_PER_PIPELINE`: by the verified `organization/pipeline`.
    Pipeline,
}

impl Limit {
    /// `source` or `pipeline` (the metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Source => "source",
            Limit::Pipeline => "pipeline",
        }
    }
}

/// What is wrong with the `repository-scope` query.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryProblem {
    /// The query string does not decode.
    Undecodable(FormError),
    /// `repository-scope` appears more than once.
    RepeatedScope,
    /// `repository-scope` is not a bare GitHub repository name.
    ScopeNotARepositoryName,
}

/// A refused token request. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A rate limit is exhausted; the caller may retry after the given time.
    RateLimited { limit: Limit, retry_after_secs: u64 },
    /// Profiles, key set or installation account not loaded yet.
    NotReady,
    /// No `Authorization` header.
    MissingAuthorization,
    /// Several `Authorization` headers, one over 8 KiB, a scheme other than `Bearer`, or no token.
    MalformedAuthorization,
    /// The caller's token failed verification (what was read before the failure comes along for
    /// the audit record).
    InvalidToken(Box<Rejected>),
    /// The `{profile}` path segment is malformed.
    MalformedProfileRef(RefError),
    /// The query is malformed.
    MalformedQuery(QueryProblem),
    /// The git credential input is malformed.
    MalformedCredential(CredentialError),
    /// The token-exchange form breaks RFC 8693's rules.
    MalformedExchange(ExchangeError),
    /// No profile of this name.
    ProfileNotFound { profile: ProfileRef },
    /// The profile exists but failed validation (quarantined).
    ProfileUnavailable { profile: ProfileRef, reason: String },
    /// The profile's match rules do not admit the caller's claims.
    RulesNotMet { profile: ProfileRef, reason: String },
    /// The exchange's `scope` asks for a permission the profile does not give.
    ScopeBeyondProfile {
        profile: ProfileRef,
        permission: Permission,
    },
    /// A caller-scoped organization profile was asked without a repository.
    RepositoryScopeRequired,
    /// An organization profile without a repository list (cannot happen for a validated file).
    ProfileWithoutRepositories,
    /// A pipeline profile was asked but no `BUILDKITE_API_TOKEN` is configured.
    NoBuildkiteToken,
    /// The pipeline's repository belongs to another account than the installation's.
    ForeignRepository { repository: String, account: String },
    /// An upstream (GitHub, Buildkite) failed or refused.
    Upstream(Failure),
    /// A verified token whose `organization_slug` or `pipeline_slug` (the claim named) is not a
    /// Buildkite slug: not a token Buildkite issues.
    InvalidSlug { claim: &'static str },
    /// The client closed its connection before the token was minted: no mint was started.
    ClientGone,
    /// The token's audit record could not be written, so the token was withheld (`withdrawn`
    /// says what became of it).
    AuditUnavailable { reason: String, withdrawn: String },
    /// The client's address is outside `SERVER_ALLOWED_SOURCES`.
    SourceNotAllowed { source: IpAddr },
    /// A trusted proxy's `X-Forwarded-For` / `Forwarded` does not tell the client's address.
    MalformedForwarding(ForwardedError),
    /// The client's address is outside the profile's `sources`.
    SourceNotInProfile { profile: ProfileRef, source: IpAddr },
    /// `RATE_LIMIT_MINTS` is spent: no GitHub mint until the given time.
    MintBudgetExhausted { retry_after_secs: u64 },
    /// GitHub reports fewer requests remaining than `GITHUB_RATELIMIT_RESERVE`: no mint until its
    /// reset.
    GitHubReserve {
        remaining: u64,
        reserve: u64,
        retry_after_secs: u64,
    },
}

/// How a refusal is answered: one row of [`Refusal::answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status of the JSON and git routes.
    pub status: u16,
    /// The fixed client message (never request input).
    pub message: &'static str,
    /// The OAuth error code of `POST /oauth/token`.
    pub oauth_error: ErrorCode,
    /// Its fixed `error_description`.
    pub oauth_description: &'static str,
}

impl Answer {
    /// The status of `POST /oauth/token`: 429 and 5xx as they are, every other 4xx is RFC 6749's 400.
    pub fn oauth_status(&self) -> u16 {
        match self.status {
            429 | 500..=599 => self.status,
            _ => 400,
        }
    }
}

/// `Retry-After` while audit records cannot be written (they are retried every second).
const AUDIT_RETRY_AFTER_SECS: u64 = 1;

const SUBJECT_INVALID: &str = "the subject token is invalid";
const AUDIENCE_UNAVAILABLE: &str = "the audience is not available to this subject";

/// A row whose OAuth answer is `invalid_request` with the client message.
const fn plain(status: u16, message: &'static str) -> Answer {
    let oauth_error = match status {
        429 | 503 => ErrorCode::TemporarilyUnavailable,
        500..=599 => ErrorCode::ServerError,
        _ => ErrorCode::InvalidRequest,
    };
    Answer {
        status,
        message,
        oauth_error,
        oauth_description: message,
    }
}

/// A row with its own OAuth code and description.
const fn oauth(
    status: u16,
    message: &'static str,
    oauth_error: ErrorCode,
    oauth_description: &'static str,
) -> Answer {
    Answer {
        status,
        message,
        oauth_error,
        oauth_description,
    }
}

impl Refusal {
    /// The one table: status, client message, OAuth code and description.
    pub fn answer(&self) -> Answer {
        use ErrorCode::{InvalidScope, InvalidTarget};
        match self {
            Refusal::RateLimited { .. } => plain(429, "rate limited"),
            Refusal::NotReady => plain(503, "not ready"),
            Refusal::MissingAuthorization => oauth(
                401,
                "missing authorization",
                ErrorCode::InvalidRequest,
                SUBJECT_INVALID,
            ),
            Refusal::MalformedAuthorization | Refusal::InvalidToken(_) => oauth(
                401,
                "invalid token",
                ErrorCode::InvalidRequest,
                SUBJECT_INVALID,
            ),
            Refusal::MalformedProfileRef(_) => plain(400, "malformed profile reference"),
            Refusal::MalformedQuery(_) => plain(400, "malformed query"),
            Refusal::MalformedCredential(_) => plain(400, "malformed git credential request"),
            Refusal::MalformedExchange(e) => oauth(400, e.description, e.code, e.description),
            Refusal::ProfileNotFound { .. } => oauth(
                404,
                "profile not found",
                InvalidTarget,
                AUDIENCE_UNAVAILABLE,
            ),
            Refusal::ProfileUnavailable { .. } => oauth(
                404,
                "profile unavailable",
                InvalidTarget,
                AUDIENCE_UNAVAILABLE,
            ),
            Refusal::RulesNotMet { .. } => {
                oauth(403, "forbidden", InvalidTarget, AUDIENCE_UNAVAILABLE)
            }
            Refusal::ScopeBeyondProfile { .. } => oauth(
                400,
                "invalid scope",
                InvalidScope,
                "the scope is beyond the profile",
            ),
            Refusal::RepositoryScopeRequired => oauth(
                400,
                "repository-scope required",
                InvalidTarget,
                AUDIENCE_UNAVAILABLE,
            ),
            Refusal::ProfileWithoutRepositories
            | Refusal::NoBuildkiteToken
            | Refusal::ForeignRepository { .. } => plain(500, "internal error"),
            Refusal::Upstream(Failure::RateLimited { .. } | Failure::Unavailable { .. }) => {
                plain(503, "upstream unavailable")
            }
            Refusal::Upstream(Failure::Unusable { .. }) => plain(502, "upstream error"),
            Refusal::Upstream(_) => plain(500, "internal error"),
            Refusal::InvalidSlug { .. } => oauth(
                401,
                "invalid token",
                ErrorCode::InvalidRequest,
                SUBJECT_INVALID,
            ),
            // Nobody reads this answer; the status is the audit record's.
            Refusal::ClientGone => plain(499, "client closed request"),
            Refusal::AuditUnavailable { .. } => plain(503, "audit unavailable"),
            Refusal::SourceNotAllowed { .. } => plain(403, "source not allowed"),
            Refusal::MalformedForwarding(_) => plain(400, "malformed forwarding header"),
            Refusal::SourceNotInProfile { .. } => {
                oauth(403, "forbidden", InvalidTarget, AUDIENCE_UNAVAILABLE)
            }
            Refusal::MintBudgetExhausted { .. } => plain(503, "mint budget exhausted"),
            Refusal::GitHubReserve { .. } => plain(503, "upstream unavailable"),
        }
    }

    /// Seconds for a `Retry-After` header, when known.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            Refusal::Upstream(failure) => failure.retry_after_secs(),
            Refusal::AuditUnavailable { .. } => Some(AUDIT_RETRY_AFTER_SECS),
            Refusal::MintBudgetExhausted { retry_after_secs }
            | Refusal::GitHubReserve {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl From<Failure> for Refusal {
    fn from(failure: Failure) -> Self {
        Refusal::Upstream(failure)
    }
}

impl From<oidc::Error> for Refusal {
    /// A refusal of the `Authorization` header itself (nothing of the token was read).
    fn from(error: oidc::Error) -> Self {
        match error {
            oidc::Error::MissingAuthorization => Refusal::MissingAuthorization,
            oidc::Error::MalformedAuthorization => Refusal::MalformedAuthorization,
            error => Refusal::InvalidToken(Box::new(Rejected {
                error,
                kid: None,
                claims: None,
            })),
        }
    }
}

impl fmt::Display for QueryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryProblem::Undecodable(e) => write!(f, "{e}"),
            QueryProblem::RepeatedScope => f.write_str("repository-scope given more than once"),
            QueryProblem::ScopeNotARepositoryName => {
                f.write_str("repository-scope is not a bare repository name")
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::RateLimited { limit, .. } => {
                write!(f, "per-{} rate limit exceeded", limit.as_str())
            }
            Refusal::NotReady => {
                f.write_str("not ready (profiles, key set or installation account not loaded yet)")
            }
            Refusal::MissingAuthorization => oidc::Error::MissingAuthorization.fmt(f),
            Refusal::MalformedAuthorization => oidc::Error::MalformedAuthorization.fmt(f),
            Refusal::InvalidToken(rejected) => rejected.error.fmt(f),
            Refusal::MalformedProfileRef(e) => write!(f, "profile reference: {e}"),
            Refusal::MalformedQuery(problem) => write!(f, "query: {problem}"),
            Refusal::MalformedCredential(e) => e.fmt(f),
            Refusal::MalformedExchange(e) => e.fmt(f),
            Refusal::ProfileNotFound { profile } => {
                write!(f, "profile {}: not found", profile.name())
            }
            Refusal::ProfileUnavailable { profile, reason } => {
                write!(f, "profile {}: unavailable: {reason}", profile.name())
            }
            Refusal::RulesNotMet { profile, reason } => {
                write!(f, "profile {}: {reason}", profile.name())
            }
            Refusal::ScopeBeyondProfile {
                profile,
                permission,
            } => write!(f, "scope {permission} is beyond profile {profile}"),
            Refusal::RepositoryScopeRequired => {
                f.write_str("caller-scoped profile without repository-scope")
            }
            Refusal::ProfileWithoutRepositories => {
                f.write_str("organization profile without repositories")
            }
            Refusal::NoBuildkiteToken => f.write_str("pipeline profiles need BUILDKITE_API_TOKEN"),
            Refusal::ForeignRepository {
                repository,
                account,
            } => write!(
                f,
                "pipeline repository {repository} is not owned by the installation's account {account:?}"
            ),
            Refusal::Upstream(failure) => failure.fmt(f),
            Refusal::InvalidSlug { claim } => {
                write!(f, "jwt: {claim} is not a buildkite slug")
            }
            Refusal::ClientGone => {
                f.write_str("client closed the connection before the mint; no mint started")
            }
            Refusal::AuditUnavailable { reason, withdrawn } => {
                write!(f, "audit unavailable: {reason}; {withdrawn}")
            }
            Refusal::SourceNotAllowed { source } => {
                write!(f, "source {source} is outside SERVER_ALLOWED_SOURCES")
            }
            Refusal::MalformedForwarding(e) => write!(f, "trusted proxy's {e}"),
            Refusal::SourceNotInProfile { profile, source } => write!(
                f,
                "profile {}: source {source} is not in the profile's sources",
                profile.name()
            ),
            Refusal::MintBudgetExhausted { retry_after_secs } => write!(
                f,
                "RATE_LIMIT_MINTS exhausted: no github mint for {retry_after_secs}s"
            ),
            Refusal::GitHubReserve {
                remaining,
                reserve,
                retry_after_secs,
            } => write!(
                f,
                "github reports {remaining} requests remaining, under GITHUB_RATELIMIT_RESERVE \
                 {reserve}: no github mint for {retry_after_secs}s (until the reset)"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    /// (refusal, status, client message, OAuth code, Retry-After, audit reason)
    type Row = (
        Refusal,
        u16,
        &'static str,
        ErrorCode,
        Option<u64>,
        &'static str,
    );

    #[test]
    fn rows_of_the_pressure_and_fault_refusals() {
        let withheld = Refusal::AuditUnavailable {
            reason: "audit write failed: No space left on device (os error 28)".into(),
            withdrawn: "the token minted for it (hashedToken x) was revoked".into(),
        };
        let cases: &[Row] = &[
            (
                Refusal::InvalidSlug {
                    claim: "pipeline_slug",
                },
                401,
                "invalid token",
                ErrorCode::InvalidRequest,
                None,
                "jwt: pipeline_slug is not a buildkite slug",
            ),
            (
                Refusal::ClientGone,
                499,
                "client closed request",
                ErrorCode::InvalidRequest,
                None,
                "client closed the connection before the mint; no mint started",
            ),
            (
                withheld,
                503,
                "audit unavailable",
                ErrorCode::TemporarilyUnavailable,
                Some(1),
                "audit unavailable: audit write failed: No space left on device (os error 28); \
                 the token minted for it (hashedToken x) was revoked",
            ),
        ];
        for (refusal, status, message, code, retry, reason) in cases {
            check(refusal, *status, message, *code, *retry, reason);
        }
    }

    #[test]
    fn rows_of_the_source_and_budget_refusals() {
        let source: IpAddr = "203.0.113.9".parse().unwrap();
        let profile =
            crate::profiles::parse_profile_ref(crate::profiles::Family::Pipeline, "x").unwrap();
        let cases: &[Row] = &[
            (
                Refusal::SourceNotAllowed { source },
                403,
                "source not allowed",
                ErrorCode::InvalidRequest,
                None,
                "source 203.0.113.9 is outside SERVER_ALLOWED_SOURCES",
            ),
            (
                Refusal::MalformedForwarding(ForwardedError::Malformed {
                    header: "forwarded",
                }),
                400,
                "malformed forwarding header",
                ErrorCode::InvalidRequest,
                None,
                "trusted proxy's forwarded: malformed",
            ),
            (
                Refusal::SourceNotInProfile { profile, source },
                403,
                "forbidden",
                ErrorCode::InvalidTarget,
                None,
                "profile x: source 203.0.113.9 is not in the profile's sources",
            ),
            (
                Refusal::MintBudgetExhausted {
                    retry_after_secs: 7,
                },
                503,
                "mint budget exhausted",
                ErrorCode::TemporarilyUnavailable,
                Some(7),
                "RATE_LIMIT_MINTS exhausted: no github mint for 7s",
            ),
            (
                Refusal::GitHubReserve {
                    remaining: 12,
                    reserve: 100,
                    retry_after_secs: 600,
                },
                503,
                "upstream unavailable",
                ErrorCode::TemporarilyUnavailable,
                Some(600),
                "github reports 12 requests remaining, under GITHUB_RATELIMIT_RESERVE 100: \
                 no github mint for 600s (until the reset)",
            ),
        ];
        for (refusal, status, message, code, retry, reason) in cases {
            check(refusal, *status, message, *code, *retry, reason);
        }
    }

    fn check(
        refusal: &Refusal,
        status: u16,
        message: &str,
        code: ErrorCode,
        retry: Option<u64>,
        reason: &str,
    ) {
        {
            let answer = refusal.answer();
            assert_eq!(
                (answer.status, answer.message, answer.oauth_error),
                (status, message, code),
                "{refusal:?}"
            );
            assert_eq!(refusal.retry_after_secs(), retry, "{refusal:?}");
            assert_eq!(refusal.to_string(), reason);
        }
    }
}
