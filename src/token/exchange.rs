//! RFC 8693 token exchange (`POST /oauth/token`): the standard OAuth 2.0 interface to the same
//! vending, for any client with an OAuth library. This module reads and checks the request's form;
//! [`crate::token`] then runs the same admit → authorize → mint steps as the other routes.
#![forbid(unsafe_code)]

use crate::http::form::parse_urlencoded;
use crate::profiles::{
    MAX_TTL_SECS, MIN_TTL_SECS, Permission, ProfileRef, parse_qualified_profile_ref,
};
use std::fmt;

/// The only `grant_type`.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The `subject_token_type`s accepted for a Buildkite OIDC token.
pub const SUBJECT_TOKEN_TYPES: [&str; 2] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];
/// The only `requested_token_type`, and the `issued_token_type`.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 6749 §5.2 / RFC 8693 §2.2.2 error codes, and RFC 6749 §4.1.2.1's two for server-side
/// failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    UnsupportedGrantType,
    InvalidTarget,
    InvalidScope,
    TemporarilyUnavailable,
    ServerError,
}

impl ErrorCode {
    /// The code as written in the `error` member.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// A refused exchange request: the code, and a fixed description that never echoes input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeError {
    pub code: ErrorCode,
    pub description: &'static str,
}

impl fmt::Display for ExchangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token exchange: {}: {}",
            self.code.as_str(),
            self.description
        )
    }
}

impl std::error::Error for ExchangeError {}

fn refuse(code: ErrorCode, description: &'static str) -> ExchangeError {
    ExchangeError { code, description }
}

/// A checked exchange request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRequest {
    /// The Buildkite OIDC JWT (verified later, like a bearer token).
    pub subject_token: String,
    /// The profile; `pipeline:default` when `audience` is absent.
    pub profile: ProfileRef,
    /// `resource`: the `(owner, name)` of `https://HOST/OWNER/NAME`.
    pub resource: Option<(String, String)>,
    /// `scope`: the permissions asked for, when narrower than the profile's.
    pub scope: Option<Vec<Permission>>,
    /// `expires_in`: the longest life the caller wants, in seconds (60–3600).
    pub expires_in: Option<u64>,
}

/// Reads a token-exchange request: `content_type` must be `application/x-www-form-urlencoded`,
/// each parameter at most once, unknown parameters ignored (RFC 6749 §3.2).
pub fn parse_request(
    content_type: Option<&[u8]>,
    body: &[u8],
    github_host: &str,
) -> Result<ExchangeRequest, ExchangeError> {
    use ErrorCode::*;
    let form = content_type
        .and_then(|ct| ct.split(|&b| b == b';').next())
        .is_some_and(|media| {
            media
                .trim_ascii()
                .eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        });
    if !form {
        return Err(refuse(
            InvalidRequest,
            "content type must be application/x-www-form-urlencoded",
        ));
    }
    let pairs =
        parse_urlencoded(body).map_err(|_| refuse(InvalidRequest, "malformed form body"))?;
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in &pairs {
        if seen.contains(&name.as_str()) {
            return Err(refuse(InvalidRequest, "a parameter is repeated"));
        }
        seen.push(name);
    }
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    match get("grant_type") {
        Some(GRANT_TYPE) => {}
        Some(_) => {
            return Err(refuse(
                UnsupportedGrantType,
                "only token exchange is supported",
            ));
        }
        None => return Err(refuse(InvalidRequest, "grant_type is required")),
    }
    if get("actor_token").is_some() || get("actor_token_type").is_some() {
        return Err(refuse(
            InvalidRequest,
            "delegation (actor_token) is not supported",
        ));
    }
    let subject_token = get("subject_token")
        .filter(|t| !t.is_empty())
        .ok_or(refuse(InvalidRequest, "subject_token is required"))?;
    if !get("subject_token_type").is_some_and(|t| SUBJECT_TOKEN_TYPES.contains(&t)) {
        return Err(refuse(
            InvalidRequest,
            "subject_token_type must be a jwt or id_token type",
        ));
    }
    if get("requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
        return Err(refuse(
            InvalidRequest,
            "only access tokens can be requested",
        ));
    }
    let profile = match get("audience") {
        None => ProfileRef::pipeline_default(),
        Some(a) if a.starts_with("pipeline:") || a.starts_with("org:") => {
            parse_qualified_profile_ref(a)
                .map_err(|_| refuse(InvalidTarget, "audience is not a profile reference"))?
        }
        Some(_) => {
            return Err(refuse(
                InvalidTarget,
                "audience must be pipeline:NAME or org:NAME",
            ));
        }
    };
    let resource = get("resource")
        .map(|r| parse_resource(r, github_host))
        .transpose()?;
    let scope = get("scope").map(parse_scope).transpose()?;
    let expires_in = get("expires_in").map(parse_expires_in).transpose()?;
    Ok(ExchangeRequest {
        subject_token: subject_token.to_owned(),
        profile,
        resource,
        scope,
        expires_in,
    })
}

/// `https://HOST/OWNER/NAME` on the configured GitHub host → `(OWNER, NAME)`.
fn parse_resource(resource: &str, github_host: &str) -> Result<(String, String), ExchangeError> {
    let bad = || {
        refuse(
            ErrorCode::InvalidTarget,
            "resource must be https://HOST/OWNER/NAME on the GitHub host",
        )
    };
    let rest = resource.strip_prefix("https://").ok_or_else(bad)?;
    let mut parts = rest.split('/');
    let (Some(host), Some(owner), Some(name), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if !host.eq_ignore_ascii_case(github_host)
        || !crate::github::is_valid_owner(owner)
        || !crate::github::is_valid_repo_name(name)
    {
        return Err(bad());
    }
    Ok((owner.to_owned(), name.to_owned()))
}

/// `expires_in`: decimal seconds (ASCII digits only, no sign), 60–3600.
fn parse_expires_in(value: &str) -> Result<u64, ExchangeError> {
    let secs =
        (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<u64>().ok())
            .flatten();
    match secs {
        Some(secs) if (MIN_TTL_SECS..=MAX_TTL_SECS).contains(&secs) => Ok(secs),
        _ => Err(refuse(
            ErrorCode::InvalidRequest,
            "expires_in must be decimal seconds from 60 to 3600",
        )),
    }
}

/// Space-separated `name:level` permissions.
fn parse_scope(scope: &str) -> Result<Vec<Permission>, ExchangeError> {
    let permissions: Result<Vec<Permission>, _> = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(Permission::parse)
        .collect();
    match permissions {
        Ok(list) if !list.is_empty() => Ok(list),
        _ => Err(refuse(
            ErrorCode::InvalidScope,
            "scope must be space-separated name:level permissions",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&[u8]> = Some(b"application/x-www-form-urlencoded; charset=utf-8");

    fn body(extra: &str) -> String {
        format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=eyJ.x.y&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt{extra}"
        )
    }

    fn parse(ct: Option<&[u8]>, extra: &str) -> Result<ExchangeRequest, ErrorCode> {
        parse_request(ct, body(extra).as_bytes(), "github.com").map_err(|e| e.code)
    }

    #[test]
    fn minimal_request_defaults_to_the_pipeline_default_profile() {
        let r = parse(FORM, "").unwrap();
        assert_eq!(r.subject_token, "eyJ.x.y");
        assert_eq!(r.profile.to_string(), "pipeline:default");
        assert_eq!((r.resource, r.scope, r.expires_in), (None, None, None));
    }

    #[test]
    fn full_request() {
        let r = parse(FORM, "&audience=org%3Adeploy&resource=https%3A%2F%2Fgithub.com%2Facme%2Fwidgets&scope=contents%3Aread+issues%3Awrite&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token").unwrap();
        assert_eq!(r.profile.to_string(), "org:deploy");
        assert_eq!(r.resource, Some(("acme".into(), "widgets".into())));
        let scope: Vec<String> = r.scope.unwrap().iter().map(ToString::to_string).collect();
        assert_eq!(scope, ["contents:read", "issues:write"]);
        for (given, secs) in [("60", 60), ("120", 120), ("3600", 3600), ("0300", 300)] {
            let r = parse(FORM, &format!("&expires_in={given}")).unwrap();
            assert_eq!(r.expires_in, Some(secs), "{given}");
        }
    }

    #[test]
    fn table_of_refusals() {
        use ErrorCode::*;
        let cases: &[(&str, Option<&[u8]>, &str, ErrorCode)] = &[
            (
                "json content type",
                Some(b"application/json"),
                "",
                InvalidRequest,
            ),
            ("no content type", None, "", InvalidRequest),
            (
                "repeated parameter",
                FORM,
                "&scope=a%3Aread&scope=b%3Aread",
                InvalidRequest,
            ),
            ("actor token", FORM, "&actor_token=x", InvalidRequest),
            (
                "other requested type",
                FORM,
                "&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token",
                InvalidRequest,
            ),
            (
                "audience not a reference",
                FORM,
                "&audience=https%3A%2F%2Fexample.com",
                InvalidTarget,
            ),
            (
                "audience bad name",
                FORM,
                "&audience=org%3Aa%2Fb",
                InvalidTarget,
            ),
            (
                "resource other host",
                FORM,
                "&resource=https%3A%2F%2Fgitlab.com%2Fa%2Fb",
                InvalidTarget,
            ),
            (
                "resource http",
                FORM,
                "&resource=http%3A%2F%2Fgithub.com%2Fa%2Fb",
                InvalidTarget,
            ),
            (
                "resource extra segment",
                FORM,
                "&resource=https%3A%2F%2Fgithub.com%2Fa%2Fb%2Fc",
                InvalidTarget,
            ),
            (
                "scope not name:level",
                FORM,
                "&scope=contents",
                InvalidScope,
            ),
            (
                "scope unknown permission",
                FORM,
                "&scope=bogus%3Aread",
                InvalidScope,
            ),
            ("scope empty", FORM, "&scope=", InvalidScope),
            ("expires_in empty", FORM, "&expires_in=", InvalidRequest),
            (
                "expires_in too short",
                FORM,
                "&expires_in=59",
                InvalidRequest,
            ),
            (
                "expires_in too long",
                FORM,
                "&expires_in=3601",
                InvalidRequest,
            ),
            (
                "expires_in signed",
                FORM,
                "&expires_in=%2B120",
                InvalidRequest,
            ),
            (
                "expires_in fraction",
                FORM,
                "&expires_in=120.5",
                InvalidRequest,
            ),
            ("expires_in unit", FORM, "&expires_in=2m", InvalidRequest),
            (
                "expires_in huge",
                FORM,
                "&expires_in=99999999999999999999",
                InvalidRequest,
            ),
        ];
        for (name, ct, extra, want) in cases {
            assert_eq!(parse(*ct, extra).err(), Some(*want), "{name}");
        }
        let no_grant = parse_request(FORM, b"subject_token=x", "github.com").unwrap_err();
        assert_eq!(no_grant.code, InvalidRequest);
        let other_grant =
            parse_request(FORM, b"grant_type=client_credentials", "github.com").unwrap_err();
        assert_eq!(other_grant.code, UnsupportedGrantType);
        let no_type = parse_request(
            FORM,
            format!(
                "grant_type={}&subject_token=x",
                "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
            )
            .as_bytes(),
            "github.com",
        )
        .unwrap_err();
        assert_eq!(no_type.code, InvalidRequest);
    }
}
