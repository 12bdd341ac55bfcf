//! Respond: an issued token, the "not mine" answer or a refusal, written as the route's format:
//! the token routes' JSON body, git's credential format, or RFC 8693's JSON.
#![forbid(unsafe_code)]

use serde::Serialize;

use super::ask::{Reply, Route};
use super::credential::{self, CredentialRequest};
use super::exchange::{ACCESS_TOKEN_TYPE, ErrorCode};
use super::mint::Issued;
use super::refusal::Refusal;
use crate::buffers;
use crate::http::{Response, json_string};
use crate::json;
use crate::time;

/// A route's answer format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Json,
    Git,
    Exchange,
}

impl Style {
    /// The format of `route`'s answers.
    pub fn of(route: Route) -> Style {
        match route {
            Route::PipelineGit | Route::OrgGit => Style::Git,
            Route::Exchange => Style::Exchange,
            Route::PipelineToken | Route::OrgToken => Style::Json,
        }
    }
}

/// A token handed out. `organization_slug` is the verified caller's.
pub fn issued(reply: &Reply, organization_slug: &str, issued: &Issued, now: u64) -> Response {
    match reply {
        Reply::Json => json(organization_slug, issued),
        Reply::Git(cred) => git(cred, issued),
        Reply::Exchange => exchange(issued, now),
    }
}

/// The "not mine" answer: 200 with an empty body, or `invalid_target` on the exchange.
pub fn not_mine(style: Style) -> Response {
    match style {
        Style::Json => Response::new(200, "application/json", Vec::new()),
        Style::Git => Response::new(200, "text/plain", Vec::new()),
        Style::Exchange => oauth_error(
            400,
            ErrorCode::InvalidTarget,
            "the resource is not available to this subject",
        ),
    }
}

/// A refusal, answered as [`Refusal::answer`] says, with `Retry-After` when known.
pub fn refused(style: Style, refusal: &Refusal) -> Response {
    let answer = refusal.answer();
    let response = match (style, refusal) {
        (Style::Exchange, _) => oauth_error(
            answer.oauth_status(),
            answer.oauth_error,
            answer.oauth_description,
        ),
        (Style::Json, Refusal::MissingAuthorization) => {
            Response::json(401, r#"{"error":"invalid_token"}"#)
                .with_header("WWW-Authenticate", r#"Bearer realm="kitebridge""#)
        }
        (Style::Json, _) if answer.status == 401 => Response::json(
            401,
            r#"{"error":"invalid_token","error_description":"The access token is invalid"}"#,
        )
        .with_header("WWW-Authenticate", INVALID_TOKEN_CHALLENGE),
        (Style::Git, _) if answer.status == 401 => {
            Response::new(401, "text/plain", "invalid token\n")
                .with_header("WWW-Authenticate", INVALID_TOKEN_CHALLENGE)
        }
        (Style::Json, _) => Response::json_error(answer.status, answer.message),
        (Style::Git, _) => {
            Response::new(answer.status, "text/plain", format!("{}\n", answer.message))
        }
    };
    match refusal.retry_after_secs() {
        Some(secs) => response.with_header("Retry-After", secs.max(1).to_string()),
        None => response,
    }
}

const INVALID_TOKEN_CHALLENGE: &str = r#"Bearer realm="kitebridge", error="invalid_token""#;

/// The JSON body of the token routes (key order as the README's Routes section lists it).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody<'a> {
    organization_slug: &'a str,
    profile: &'a str,
    repository_url: &'a str,
    repositories: &'a [String],
    repository_selection: &'a str,
    permissions: &'a [String],
    token: &'a str,
    hashed_token: &'a str,
    expiry: &'a str,
    expires_at: &'a str,
}

fn json(organization_slug: &str, issued: &Issued) -> Response {
    let expiry = time::rfc3339(issued.end_of_life);
    let body = TokenBody {
        organization_slug,
        profile: &issued.profile,
        repository_url: &issued.repository_url,
        repositories: issued.repositories(),
        repository_selection: issued.repository_selection(),
        permissions: &issued.permissions,
        token: issued.minted.token.expose(),
        hashed_token: &issued.minted.hashed_token,
        expiry: &expiry,
        expires_at: &expiry,
    };
    serialized(&body)
}

fn git(cred: &CredentialRequest, issued: &Issued) -> Response {
    let expiry = issued.end_of_life.to_string();
    let body = credential::format_pairs(&[
        ("protocol", &cred.protocol),
        ("host", &cred.host),
        ("path", &cred.path),
        ("username", "x-access-token"),
        ("password", issued.minted.token.expose()),
        ("password_expiry_utc", &expiry),
    ]);
    Response::new(200, "text/plain", body)
}

/// RFC 8693 §2.2.1's response, plus the covered repositories and `hashed_token`.
fn exchange(issued: &Issued, now: u64) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        access_token: &'a str,
        issued_token_type: &'static str,
        token_type: &'static str,
        expires_in: u64,
        scope: String,
        repositories: &'a [String],
        hashed_token: &'a str,
    }
    let body = Body {
        access_token: issued.minted.token.expose(),
        issued_token_type: ACCESS_TOKEN_TYPE,
        token_type: "Bearer",
        expires_in: issued.end_of_life.saturating_sub(now),
        scope: issued.permissions.join(" "),
        repositories: issued.repositories(),
        hashed_token: &issued.minted.hashed_token,
    };
    serialized(&body).with_header("Pragma", "no-cache")
}

fn serialized(body: &impl Serialize) -> Response {
    // A token answer is usually under 1 KiB: room for it at once, in one of the thread's
    // buffers; a longer one (many repositories) grows without leaving the token in freed memory,
    // and one that fails half-written is wiped on drop. The server wipes and keeps the buffer
    // once the answer is written.
    let mut bytes = buffers::Wiping::with_capacity(1024);
    match json::to_writer(&mut bytes, body) {
        Ok(()) => Response::json(200, bytes.into_inner()),
        Err(_) => Response::json_error(500, "internal error"),
    }
}

/// RFC 6749 §5.2's error body.
fn oauth_error(status: u16, code: ErrorCode, description: &str) -> Response {
    let body = format!(
        "{{\"error\":\"{}\",\"error_description\":{}}}",
        code.as_str(),
        json_string(description)
    );
    Response::json(status, body).with_header("Pragma", "no-cache")
}
