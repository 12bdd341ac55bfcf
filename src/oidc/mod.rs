//! Verifying Buildkite OIDC tokens (compact JWS, RS256) by hand on `ring`.
//!
//! [`Verifier::verify`] runs the checks in this order,
//! and **no byte of the token drives a decision before its signature is verified**:
//!
//! 1. [`bearer_token`]: exactly one `Authorization` header, at most 8 KiB, scheme `Bearer`
//!    (case-insensitive), non-empty token.
//! 2. Size: the token is at most 8 KiB before any decoding ([`jws::MAX_TOKEN_LEN`]).
//! 3. Exactly three segments, none empty; each strictly base64url without padding
//!    ([`jws::UnverifiedToken::parse`]).
//! 4. Header: a JSON object without duplicate members; `alg` exactly `RS256`; no `jku`, `jwk`,
//!    `x5u`, `x5c`, `x5t`, `x5t#S256`, `crit` or `b64`; `kid` a string of at most 128 bytes; `typ`,
//!    if present, `JWT` (case-insensitive).
//! 5. Key: exact `kid` lookup in the [`KeyStore`]; an unknown `kid` costs at most one
//!    single-flight refresh per 30 s process-wide, then one more look. No fallback to other keys.
//! 6. Signature: its length equals the modulus length, then
//!    `ring::signature::RSA_PKCS1_2048_8192_SHA256` over the **received** `header.payload` bytes
//!    ([`verify_rs256`]). Only now is the payload released.
//! 7. Payload: one UTF-8 JSON object, no trailing bytes, no duplicate claims, nesting within
//!    serde_json's default depth, typed into [`Claims`] ([`Claims::from_json`]).
//! 8. Claims: issuer, audience, times with leeway, required claims, organization
//!    ([`Claims::validate`]).
//!
//! A token that passed all of this is remembered by the SHA-256 of its bytes ([`reuse`]): the
//! same bytes presented again skip steps 3–7 (the bytes are the ones whose signature was
//! verified) while the key that verified them is still in the key set and `exp` has not
//! passed; step 8 runs again on every use, at that request's time.
//!
//! Every failure is one [`Error`] variant named for the violated rule. Its `Display` is a short
//! lowercase line for the audit record and never contains the token; the few untrusted strings it
//! may name are escaped with `{:?}` and truncated. The HTTP layer answers every failure with the
//! same 401.
#![forbid(unsafe_code)]

pub mod claims;
pub mod jwks;
pub mod jws;
pub mod reuse;

use crate::scan;
use std::fmt;
use std::sync::Arc;

pub use claims::{Audience, Claims};
pub use jwks::{FetchedJwks, KeyPolicyViolation, KeySource, KeyStore, PublicKey, spawn_refresher};
pub use jws::{Segment, UnverifiedToken, verify_rs256};
pub use reuse::Reuse;

/// Buildkite's issuer, shared by every Buildkite organization.
pub const DEFAULT_ISSUER: &str = "https://agent.buildkite.com";
/// Buildkite's OIDC key set, where signing keys are fetched from by default (`JWT_JWKS_URL`).
pub const DEFAULT_JWKS_URL: &str = "https://agent.buildkite.com/.well-known/jwks";
/// Default clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Default longest accepted `exp − iat` (Buildkite's own maximum), in seconds.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 7200;
/// The longest `Authorization` header value accepted, in bytes.
pub const MAX_AUTHORIZATION_LEN: usize = 8 * 1024;

/// What a token must say to be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Expected `iss`, compared byte for byte. Default [`DEFAULT_ISSUER`].
    pub issuer: String,
    /// Expected `aud`: the string itself or an array whose only member it is. Required, no default.
    pub audience: String,
    /// Expected `organization_slug` (exact, case-sensitive). Required, no default: the issuer is
    /// shared by every Buildkite organization, so this is what binds a token to ours.
    pub organization_slug: String,
    /// Expected `organization_id`, checked only when set. Default `None`.
    pub organization_id: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`. Default [`DEFAULT_LEEWAY_SECS`].
    pub leeway_secs: u64,
    /// Longest accepted `exp − iat`. Default [`DEFAULT_MAX_LIFETIME_SECS`].
    pub max_lifetime_secs: u64,
    /// Verified tokens remembered for reuse ([`reuse`]); 0 verifies every presentation afresh.
    /// Default [`reuse::DEFAULT_MAX_ENTRIES`].
    pub reuse_max_entries: usize,
}

impl Settings {
    /// Settings with the defaults above for the given audience and organization.
    pub fn new(audience: impl Into<String>, organization_slug: impl Into<String>) -> Self {
        Settings {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: audience.into(),
            organization_slug: organization_slug.into(),
            organization_id: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
            reuse_max_entries: reuse::DEFAULT_MAX_ENTRIES,
        }
    }
}

/// Why a token (or a key set) was refused. One variant per violated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No `Authorization` header.
    MissingAuthorization,
    /// Several `Authorization` headers, one over 8 KiB, a scheme other than `Bearer`, or no token.
    MalformedAuthorization,
    /// The token is over [`jws::MAX_TOKEN_LEN`] bytes.
    TokenTooLarge { len: usize },
    /// The token does not have exactly three `.`-separated segments.
    SegmentCount,
    /// A segment is empty.
    EmptySegment { segment: Segment },
    /// A segment is not strict unpadded base64url.
    Base64 { segment: Segment },
    /// The header or payload is not UTF-8.
    InvalidUtf8 { segment: Segment },
    /// The header or payload is not well-formed JSON (syntax, trailing bytes, nesting too deep).
    /// `detail` is serde_json's syntax message, which never quotes the input.
    MalformedJson { segment: Segment, detail: String },
    /// The header or payload is JSON but not an object.
    NotJsonObject { segment: Segment },
    /// A member name appears twice in the header or payload (truncated to 64 bytes).
    DuplicateMember { segment: Segment, name: String },
    /// `alg` is missing or anything but exactly `RS256`.
    AlgorithmNotAllowed,
    /// The header carries a parameter that could redirect key selection or change processing.
    ForbiddenHeaderParameter(&'static str),
    /// `kid` is missing or null.
    MissingKid,
    /// `kid` is not a string.
    KidNotString,
    /// `kid` is longer than [`jws::MAX_KID_LEN`] bytes.
    KidTooLong { len: usize },
    /// `typ` is present but not `JWT`.
    TypeNotAllowed,
    /// No key with this `kid` in the key set, even after the allowed refresh.
    UnknownKid,
    /// No usable key set: never loaded, or the last good one is over 24 hours old.
    KeySetUnavailable,
    /// The signature is not exactly as long as the key's modulus.
    SignatureLength { expected: usize, actual: usize },
    /// The signature does not verify.
    BadSignature,
    /// A required claim is absent or null.
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type (e.g. a float or string time, a string `build_number`).
    ClaimType {
        name: &'static str,
        expected: &'static str,
    },
    /// A required string claim is empty.
    EmptyClaim(&'static str),
    /// `iss` is not the configured issuer.
    IssuerMismatch,
    /// `aud` is not the configured audience nor an array whose only member it is.
    AudienceMismatch,
    /// `now ≥ exp + leeway`.
    Expired { now: u64, exp: u64 },
    /// `nbf > now + leeway`.
    NotYetValid { now: u64, nbf: u64 },
    /// `iat > now + leeway`.
    IssuedInFuture { now: u64, iat: u64 },
    /// `exp ≤ iat`.
    ExpiresBeforeIssued { iat: u64, exp: u64 },
    /// `exp − iat` is over the configured maximum.
    LifetimeTooLong { lifetime: u64, max: u64 },
    /// `organization_slug` (or the configured `organization_id`) does not match.
    OrganizationMismatch,
    /// The key-set fetch failed (`detail` is the fetcher's message).
    JwksFetch { detail: String },
    /// The key-set document is not a JSON object with a `keys` array of objects.
    JwksMalformed { detail: String },
    /// The key set has more than [`jwks::MAX_KEYS`] keys.
    JwksTooManyKeys { count: usize },
    /// Every key in the set failed the key policy.
    JwksNoUsableKey,
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("jwt: ")?;
        match self {
            Error::MissingAuthorization => f.write_str("no authorization header"),
            Error::MalformedAuthorization => f.write_str("malformed authorization header"),
            Error::TokenTooLarge { len } => write!(f, "token of {len} bytes is too large"),
            Error::SegmentCount => f.write_str("token does not have exactly three segments"),
            Error::EmptySegment { segment } => write!(f, "empty {segment} segment"),
            Error::Base64 { segment } => write!(f, "{segment} is not strict base64url"),
            Error::InvalidUtf8 { segment } => write!(f, "{segment} is not utf-8"),
            Error::MalformedJson { segment, detail } => {
                write!(f, "{segment} is not valid json: {:?}", truncate(detail))
            }
            Error::NotJsonObject { segment } => write!(f, "{segment} is not a json object"),
            Error::DuplicateMember { segment, name } => {
                write!(f, "duplicate {segment} member {:?}", truncate(name))
            }
            Error::AlgorithmNotAllowed => f.write_str("algorithm not allowed (only RS256)"),
            Error::ForbiddenHeaderParameter(name) => {
                write!(f, "forbidden header parameter {name:?}")
            }
            Error::MissingKid => f.write_str("missing kid"),
            Error::KidNotString => f.write_str("kid is not a string"),
            Error::KidTooLong { len } => write!(f, "kid of {len} bytes is too long"),
            Error::TypeNotAllowed => f.write_str("typ is not JWT"),
            Error::UnknownKid => f.write_str("unknown kid"),
            Error::KeySetUnavailable => f.write_str("no usable key set"),
            Error::SignatureLength { expected, actual } => {
                write!(f, "signature is {actual} bytes, expected {expected}")
            }
            Error::BadSignature => f.write_str("bad signature"),
            Error::MissingClaim(name) => write!(f, "missing claim {name:?}"),
            Error::ClaimType { name, expected } => {
                write!(f, "claim {name:?} is not {expected}")
            }
            Error::EmptyClaim(name) => write!(f, "claim {name:?} is empty"),
            Error::IssuerMismatch => f.write_str("issuer mismatch"),
            Error::AudienceMismatch => f.write_str("audience mismatch"),
            Error::Expired { now, exp } => write!(f, "expired {}s ago", now.saturating_sub(*exp)),
            Error::NotYetValid { now, nbf } => {
                write!(f, "not valid for another {}s", nbf.saturating_sub(*now))
            }
            Error::IssuedInFuture { now, iat } => {
                write!(f, "issued {}s in the future", iat.saturating_sub(*now))
            }
            Error::ExpiresBeforeIssued { iat, exp } => {
                write!(f, "expires ({exp}) no later than issued ({iat})")
            }
            Error::LifetimeTooLong { lifetime, max } => {
                write!(f, "lifetime {lifetime}s exceeds {max}s")
            }
            Error::OrganizationMismatch => f.write_str("organization mismatch"),
            Error::JwksFetch { detail } => {
                write!(f, "key set fetch failed: {:?}", truncate(detail))
            }
            Error::JwksMalformed { detail } => {
                write!(f, "key set is malformed: {:?}", truncate(detail))
            }
            Error::JwksTooManyKeys { count } => write!(f, "key set has {count} keys"),
            Error::JwksNoUsableKey => f.write_str("key set has no usable key"),
        }
    }
}

/// The longest untrusted string an error or log line quotes, in bytes.
const MAX_QUOTED_LEN: usize = 64;

/// `s` cut to at most [`MAX_QUOTED_LEN`] bytes on a character boundary (for quoting in errors).
pub(crate) fn truncate(s: &str) -> &str {
    let mut end = s.len().min(MAX_QUOTED_LEN);
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default()
}

/// The token out of the request's `Authorization` header values (all of them, in order).
pub fn bearer_token<'a>(authorization: &[&'a [u8]]) -> Result<&'a [u8], Error> {
    let value = match authorization {
        [] => return Err(Error::MissingAuthorization),
        [one] => *one,
        _ => return Err(Error::MalformedAuthorization),
    };
    if value.len() > MAX_AUTHORIZATION_LEN {
        return Err(Error::MalformedAuthorization);
    }
    let value = value.trim_ascii();
    let space = value
        .iter()
        .position(|&b| b == b' ')
        .ok_or(Error::MalformedAuthorization)?;
    let (scheme, rest) = value.split_at(space);
    let token = rest.trim_ascii_start();
    let token_ok = !token.is_empty() && !has_whitespace(token);
    if !scheme.eq_ignore_ascii_case(b"Bearer") || !token_ok {
        return Err(Error::MalformedAuthorization);
    }
    Ok(token)
}

/// Whether `bytes` holds ASCII whitespace (a JWT is one or two kilobytes: tested eight bytes at
/// a time, every whitespace byte being below 0x21).
fn has_whitespace(bytes: &[u8]) -> bool {
    scan::position(
        bytes,
        |w| scan::any_below(w, 0x21),
        |b| b.is_ascii_whitespace(),
    )
    .is_some()
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `kid` of the key that verified the signature.
    pub kid: String,
    /// The validated claims (shared with the verified-token cache: a reuse copies no claim).
    pub claims: Arc<Claims>,
    /// Whether these exact bytes were verified before and only the claims were checked again
    /// ([`reuse`]).
    pub reused: bool,
}

/// A refused token, with what was read before the refusal (for the audit record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The violated rule.
    pub error: Error,
    /// The header's `kid`, once the header passed its checks. Untrusted: escape before writing.
    pub kid: Option<String>,
    /// The claims, only ever from a signature-verified payload (so only when `error` is a claim
    /// validation failure). Shared (with the audit record), which also keeps `Result<Verified,
    /// Rejected>` small.
    pub claims: Option<Arc<Claims>>,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Rejected {
    fn bare(error: Error) -> Self {
        Rejected {
            error,
            kid: None,
            claims: None,
        }
    }
}

/// Verifies tokens against [`Settings`] with keys from a shared [`KeyStore`].
pub struct Verifier {
    settings: Settings,
    keys: Arc<KeyStore>,
    reuse: Reuse,
}

impl Verifier {
    /// A verifier; `keys` is typically shared with [`spawn_refresher`].
    pub fn new(settings: Settings, keys: Arc<KeyStore>) -> Self {
        let reuse = Reuse::new(settings.reuse_max_entries);
        Verifier {
            settings,
            keys,
            reuse,
        }
    }

    /// Runs every check in the order of the module documentation at time `now` (Unix seconds),
    /// or, for the very bytes of a token verified before, only the claims checks (see [`reuse`]).
    pub fn verify(&self, token: &[u8], now: u64) -> Result<Verified, Rejected> {
        // Over the size limit: refused by the parse below, never hashed.
        let digest = (token.len() <= jws::MAX_TOKEN_LEN).then(|| reuse::digest(token));
        if let Some(digest) = &digest {
            let current = |kid: &str| self.keys.current(kid, now);
            if let Some((kid, claims)) = self.reuse.get(digest, now, current) {
                return match claims.validate(&self.settings, now) {
                    Ok(()) => Ok(Verified {
                        kid,
                        claims,
                        reused: true,
                    }),
                    Err(error) => {
                        self.reuse.forget(digest);
                        Err(Rejected {
                            error,
                            kid: Some(kid),
                            claims: Some(claims),
                        })
                    }
                };
            }
        }
        let unverified = UnverifiedToken::parse(token).map_err(Rejected::bare)?;
        let kid = unverified.kid().to_owned();
        let with_kid = |error| Rejected {
            error,
            kid: Some(kid.clone()),
            claims: None,
        };
        let key = self.keys.key(&kid, now).map_err(with_kid)?;
        let payload = unverified.verify(&key).map_err(with_kid)?;
        let claims = Claims::from_json(&payload).map_err(with_kid)?;
        match claims.validate(&self.settings, now) {
            Ok(()) => {
                let claims = Arc::new(claims);
                if let Some(digest) = digest {
                    self.reuse.put(digest, &kid, key, Arc::clone(&claims));
                }
                Ok(Verified {
                    kid,
                    claims,
                    reused: false,
                })
            }
            Err(error) => Err(Rejected {
                error,
                kid: Some(kid),
                claims: Some(Arc::new(claims)),
            }),
        }
    }
}
