//! The GitHub App client: the installation's account, minting installation tokens (checked
//! against what was asked, revoked when GitHub grants more), early revocation, and reading a
//! file through the contents API.
//!
//! Every call carries `Authorization: Bearer …`, `Accept`, `X-GitHub-Api-Version: 2022-11-28`
//! and the shared client's `User-Agent`. App calls use an App JWT re-used for about 8 minutes.
//! A rate-limit answer (403/429 with `retry-after`, or `x-ratelimit-remaining: 0`) opens a
//! circuit: until the given time every call fails fast with [`Failure::RateLimited`].
//! Every failure is an [`upstream::Failure`] of [`Service::GitHub`].
//! Time is always a parameter (`now`, Unix seconds). Errors never carry a token or JWT.
#![forbid(unsafe_code)]

mod app_jwt;
mod grant;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::secret::Secret;
use crate::upstream::{
    self, Backoff, Failure, Method, Response, Service, json_error, percent_encode,
};

pub use app_jwt::AppKey;

/// `GITHUB_API_URL`'s default.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// `GITHUB_HOST`'s default: the host in git URLs.
pub const DEFAULT_HOST: &str = "github.com";
/// `GITHUB_RATELIMIT_RESERVE`'s default: below this many remaining GitHub requests, cache misses
/// wait for GitHub's reset instead of minting.
pub const DEFAULT_RATELIMIT_RESERVE: u64 = 100;
/// The REST API version sent on every call.
pub const API_VERSION: &str = "2022-11-28";

const ACCEPT_JSON: &str = "application/vnd.github+json";
const ACCEPT_RAW: &str = "application/vnd.github.raw+json";

/// What GitHub's latest answer said about our rate limit (`x-ratelimit-remaining`,
/// `x-ratelimit-reset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitState {
    /// Requests left in the current window.
    pub remaining: u64,
    /// When the window resets, Unix seconds.
    pub reset: u64,
}

impl RateLimitState {
    /// The state an answer reports: both headers present and decimal, else `None`.
    pub fn of(response: &Response) -> Option<RateLimitState> {
        let number = |name: &str| {
            let text = response.header(name)?.trim();
            let digits =
                !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| text.parse::<u64>().ok()).flatten()
        };
        Some(RateLimitState {
            remaining: number("x-ratelimit-remaining")?,
            reset: number("x-ratelimit-reset")?,
        })
    }
}

/// Where and as whom to call GitHub.
#[derive(Clone, Debug)]
pub struct Settings {
    /// API base, e.g. [`DEFAULT_API_URL`] or `https://ghe.example.com/api/v3` (GitHub
    /// Enterprise Server); paths are appended to it, a trailing `/` is ignored.
    pub api_url: String,
    /// The App ID or client ID: the App JWT's `iss`.
    pub app_id: String,
    /// The installation tokens are minted from.
    pub installation_id: u64,
}

/// What to mint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintRequest {
    /// Repository names without owner (at most [`MAX_REPOSITORIES`](grant::MAX_REPOSITORIES),
    /// never empty); `None` only for an all-repositories profile.
    pub repositories: Option<Vec<String>>,
    /// Permission name (underscores: `pull_requests`) → `read`, `write` or `admin`. Never
    /// empty; GitHub adds `metadata: read` to every token, so ask for it too.
    pub permissions: BTreeMap<String, String>,
}

/// A token GitHub minted, checked to grant no more than asked.
#[derive(Clone, Debug)]
pub struct Minted {
    /// The token (opaque: any visible ASCII, any length).
    pub token: Secret,
    /// [`hashed_token`] of it, computed once per mint (cache hits reuse it).
    pub hashed_token: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// What GitHub granted (a subset of what was asked).
    pub permissions: BTreeMap<String, String>,
    /// `owner/name` (GitHub's `full_name`) of each repository; empty for all-repositories.
    pub repositories: Vec<String>,
    /// `selected` or `all`.
    pub repository_selection: String,
}

/// What a revocation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// 204: the token was live and is revoked now.
    Revoked,
    /// 401: the token was already revoked or expired.
    AlreadyGone,
}

/// A contents API answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contents {
    /// 304: the file has the ETag that was sent.
    Unchanged,
    /// The file's bytes and its ETag.
    File {
        /// The decoded file.
        bytes: Vec<u8>,
        /// For the next call's `If-None-Match`.
        etag: Option<String>,
    },
}

/// Standard padded base64 of the token's SHA-256: what GitHub's audit log shows for it.
pub fn hashed_token(token: &str) -> String {
    use base64::Engine;
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Whether `login` can be a GitHub account (user or organization) name.
pub fn is_valid_owner(login: &str) -> bool {
    (1..=100).contains(&login.len())
        && !login.starts_with('-')
        && login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `name` can be a GitHub repository name (without owner).
pub fn is_valid_repo_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name != "."
        && name != ".."
        && strip_git_suffix(name).len() == name.len()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `name` without one trailing `.git` (any case), as git URLs carry it. GitHub refuses repository
/// names that end in `.git`, so [`is_valid_repo_name`] refuses what is left if it still does.
pub fn strip_git_suffix(name: &str) -> &str {
    let cut = name.len().saturating_sub(4);
    match (name.get(..cut), name.get(cut..)) {
        (Some(stem), Some(suffix)) if suffix.eq_ignore_ascii_case(".git") => stem,
        _ => name,
    }
}

/// The GitHub App client.
pub struct Client {
    http: Arc<upstream::Client>,
    api_url: String,
    installation_id: u64,
    jwt: app_jwt::AppJwt,
    backoff: Backoff,
    /// What the latest answer carrying rate-limit headers said.
    rate_limit: Mutex<Option<RateLimitState>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("github::Client")
            .field("api_url", &self.api_url)
            .field("installation_id", &self.installation_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for one App installation.
    pub fn new(http: Arc<upstream::Client>, settings: Settings, key: AppKey) -> Client {
        Client {
            http,
            api_url: settings.api_url.trim_end_matches('/').to_owned(),
            installation_id: settings.installation_id,
            jwt: app_jwt::AppJwt::new(settings.app_id, key),
            backoff: Backoff::new(Service::GitHub),
            rate_limit: Mutex::new(None),
        }
    }

    /// What GitHub's latest answer said about our rate limit; `None` before any said anything.
    pub fn rate_limit(&self) -> Option<RateLimitState> {
        *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `GET /app/installations/{id}` → `account.login`, the owner of every repository it covers.
    pub fn installation_account(&self, now: u64) -> Result<String, Failure> {
        let path = format!("/app/installations/{}", self.installation_id);
        let jwt = self.app_jwt(now)?;
        let response = self.call(Call::new(Method::Get, &path, &jwt, ACCEPT_JSON), now)?;
        if response.status != 200 {
            return Err(self.failure(&response, "installation"));
        }
        let value: serde_json::Value = parse_json(&response.body, "installation")?;
        let login = value
            .pointer("/account/login")
            .and_then(serde_json::Value::as_str);
        match login {
            Some(login) if is_valid_owner(login) => Ok(login.to_owned()),
            Some(login) => Err(Service::GitHub.unusable(format!(
                "installation account login {login:?} is not a github login"
            ))),
            None => Err(Service::GitHub.unusable("installation has no account.login")),
        }
    }

    /// Mints an installation token for `request`. A token granting more than asked is revoked
    /// and refused.
    pub fn mint(&self, request: &MintRequest, now: u64) -> Result<Minted, Failure> {
        grant::check_request(request).map_err(|why| Service::GitHub.refused(why))?;
        let path = format!("/app/installations/{}/access_tokens", self.installation_id);
        let body = grant::request_body(request);
        let jwt = self.app_jwt(now)?;
        let call = Call {
            body: Some(&body),
            ..Call::new(Method::Post, &path, &jwt, ACCEPT_JSON)
        };
        let response = self.call(call, now)?;
        if response.status != 201 {
            return Err(self.failure(&response, "mint"));
        }
        let value: serde_json::Value = parse_json(&response.body, "mint")?;
        let token = value
            .get("token")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| Secret::header_safe(t.to_owned()))
            .ok_or_else(|| Service::GitHub.unusable("mint: no usable token in the 201 answer"))?;
        let checked = serde_json::from_value(value)
            .map_err(|e| json_error(&e))
            .and_then(|raw| grant::check_grant(request, raw, now));
        match checked {
            Ok(grant) => Ok(Minted {
                hashed_token: hashed_token(token.expose()),
                token,
                expires_at: grant.expires_at,
                permissions: grant.permissions,
                repositories: grant.repositories,
                repository_selection: grant.repository_selection,
            }),
            Err(why) => {
                self.revoke_refused(&token, now);
                Err(Service::GitHub.unusable(format!("mint: {why}")))
            }
        }
    }

    /// The one `DELETE /installation/token` call, authenticated with the token itself; the two
    /// callers below read its answer differently.
    fn delete_token(&self, token: &Secret, now: u64) -> Result<Response, Failure> {
        let call = Call::new(
            Method::Delete,
            "/installation/token",
            token.expose(),
            ACCEPT_JSON,
        );
        self.call(call, now)
    }

    /// `DELETE /installation/token`, authenticated with the token itself (204).
    pub fn revoke(&self, token: &Secret, now: u64) -> Result<(), Failure> {
        let response = self.delete_token(token, now)?;
        match response.status {
            204 => Ok(()),
            _ => Err(self.failure(&response, "revoke")),
        }
    }

    /// `DELETE /installation/token` for a token that may already be gone: 204 is
    /// [`Ended::Revoked`], 401 [`Ended::AlreadyGone`] (GitHub's answer for a revoked or expired
    /// token); anything else is a failure to retry.
    pub fn revoke_if_live(&self, token: &Secret, now: u64) -> Result<Ended, Failure> {
        let response = self.delete_token(token, now)?;
        match response.status {
            204 => Ok(Ended::Revoked),
            401 => Ok(Ended::AlreadyGone),
            status => Err(Service::GitHub.unusable(format!(
                "revoke: github answered {status} {}",
                github_message(&response.body)
            ))),
        }
    }

    /// Reads `owner/repo`'s file at `path` (at `git_ref`, default branch when `None`) with an
    /// installation token. With `etag` from a previous answer, 304 gives [`Contents::Unchanged`].
    #[allow(clippy::too_many_arguments)] // each is one part of the GitHub request
    pub fn contents(
        &self,
        token: &Secret,
        owner: &str,
        repo: &str,
        path: &str,
        git_ref: Option<&str>,
        etag: Option<&str>,
        now: u64,
    ) -> Result<Contents, Failure> {
        let path = contents_path(owner, repo, path, git_ref)
            .map_err(|why| Service::GitHub.refused(why))?;
        let call = Call {
            if_none_match: etag,
            ..Call::new(Method::Get, &path, token.expose(), ACCEPT_RAW)
        };
        let response = self.call(call, now)?;
        match response.status {
            304 => Ok(Contents::Unchanged),
            200 => Ok(Contents::File {
                etag: response.header("etag").map(str::to_owned),
                bytes: file_bytes(&response)?,
            }),
            _ => Err(self.failure(&response, "contents")),
        }
    }

    fn app_jwt(&self, now: u64) -> Result<String, Failure> {
        self.jwt
            .get(now)
            .ok_or_else(|| Service::GitHub.refused("signing the app jwt failed"))
    }

    /// One GitHub call through the circuit; a rate-limit answer opens it.
    fn call(&self, call: Call<'_>, now: u64) -> Result<Response, Failure> {
        self.backoff.check(now)?;
        let authorization = format!("Bearer {}", call.bearer);
        let mut headers = vec![
            ("Authorization", authorization.as_str()),
            ("Accept", call.accept),
            ("X-GitHub-Api-Version", API_VERSION),
        ];
        if call.body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(etag) = call.if_none_match {
            headers.push(("If-None-Match", etag));
        }
        let url = format!("{}{}", self.api_url, call.path);
        let response = self
            .http
            .send(call.method, &url, &headers, call.body)
            .map_err(|e| Failure::from_transport(Service::GitHub, e))?;
        if let Some(state) = RateLimitState::of(&response) {
            *self.rate_limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(state);
        }
        self.backoff.observe(&response, now)?;
        Ok(response)
    }

    /// Classifies a non-success answer (rate limits are already handled).
    fn failure(&self, response: &Response, what: &str) -> Failure {
        let status = response.status;
        let message = github_message(&response.body);
        let why = match status {
            401 => {
                self.jwt.forget();
                "credentials rejected: app key, app id or clock skew"
            }
            403 => "forbidden: installation suspended or access denied",
            404 => "not found: unknown installation, wrong app, or missing resource",
            422 => {
                "validation failed: repository not in the installation or permission not granted"
            }
            500..=599 => {
                return Failure::Unavailable {
                    service: Service::GitHub,
                    detail: format!("{what}: github answered {status} {message}"),
                };
            }
            _ => {
                return Service::GitHub
                    .unusable(format!("{what}: unexpected status {status} {message}"));
            }
        };
        Service::GitHub.refused(format!(
            "{what}: github answered {status} ({why}) {message}"
        ))
    }

    /// Best-effort revocation of a token being refused; the refusal stands either way.
    fn revoke_refused(&self, token: &Secret, now: u64) {
        match self.revoke(token, now) {
            Ok(()) => log::warn!("revoked a github token that was refused"),
            Err(e) => log::error!("could not revoke a refused github token: {e}"),
        }
    }
}

/// One GitHub request's parts.
struct Call<'a> {
    method: Method,
    path: &'a str,
    bearer: &'a str,
    accept: &'a str,
    body: Option<&'a [u8]>,
    if_none_match: Option<&'a str>,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str, bearer: &'a str, accept: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            bearer,
            accept,
            body: None,
            if_none_match: None,
        }
    }
}

/// `/repos/{owner}/{repo}/contents/{path}?ref={ref}` with every part checked and encoded.
fn contents_path(
    owner: &str,
    repo: &str,
    path: &str,
    git_ref: Option<&str>,
) -> Result<String, String> {
    if !is_valid_owner(owner) || !is_valid_repo_name(repo) {
        return Err(format!("invalid repository {owner:?}/{repo:?}"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let bad_segment =
        |s: &&str| s.is_empty() || *s == "." || *s == ".." || s.chars().any(char::is_control);
    if segments.iter().any(bad_segment) {
        return Err(format!("invalid file path {path:?}"));
    }
    let encoded: Vec<String> = segments.iter().map(|s| percent_encode(s)).collect();
    let mut url = format!("/repos/{owner}/{repo}/contents/{}", encoded.join("/"));
    if let Some(git_ref) = git_ref {
        if git_ref.is_empty() || git_ref.chars().any(char::is_control) {
            return Err(format!("invalid ref {git_ref:?}"));
        }
        url.push_str(&format!("?ref={}", percent_encode(git_ref)));
    }
    Ok(url)
}

/// The file from a 200: raw bytes, or the JSON form (`application/json`) decoded.
fn file_bytes(response: &Response) -> Result<Vec<u8>, Failure> {
    let content_type = response.header("content-type").unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Ok(response.body.clone());
    }
    let value: serde_json::Value = parse_json(&response.body, "contents")?;
    decode_file_object(&value).map_err(|why| Service::GitHub.refused(format!("contents: {why}")))
}

/// `{"type":"file","encoding":"base64","content":"…\n…"}` → bytes. A directory (array) or
/// another `type` is refused.
fn decode_file_object(value: &serde_json::Value) -> Result<Vec<u8>, String> {
    if value.is_array() {
        return Err("the path is a directory, not a file".into());
    }
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    match field("type") {
        Some("file") => {}
        other => return Err(format!("the path is not a file (type {other:?})")),
    }
    if field("encoding") != Some("base64") {
        return Err(format!(
            "unsupported encoding {:?} (file over 1 MiB?)",
            field("encoding")
        ));
    }
    let content: String = field("content")
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD
        .decode(content)
        .map_err(|e| format!("content is not base64: {e}"))
}

/// GitHub's `message`, escaped and truncated, for error text.
fn github_message(body: &[u8]) -> String {
    let value: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match value
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(serde_json::Value::as_str)
    {
        Some(message) => format!("{:?}", message.chars().take(200).collect::<String>()),
        None => "(no message)".into(),
    }
}

fn parse_json(body: &[u8], what: &str) -> Result<serde_json::Value, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| Service::GitHub.unusable(format!("{what}: {}", json_error(&e))))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_limit_headers() {
        let state = |headers: &[(&str, &str)]| {
            let response = Response {
                status: 201,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: Vec::new(),
            };
            super::RateLimitState::of(&response).map(|s| (s.remaining, s.reset))
        };
        let (remaining, reset) = ("x-ratelimit-remaining", "x-ratelimit-reset");
        assert_eq!(
            state(&[(remaining, "42"), (reset, "1700000000")]),
            Some((42, 1_700_000_000))
        );
        assert_eq!(state(&[(remaining, " 0 "), (reset, "5")]), Some((0, 5)));
        assert_eq!(state(&[(remaining, "42")]), None, "both or nothing");
        assert_eq!(state(&[(reset, "5")]), None);
        assert_eq!(state(&[(remaining, "-1"), (reset, "5")]), None);
        assert_eq!(state(&[(remaining, "+1"), (reset, "5")]), None);
        assert_eq!(state(&[(remaining, "1e3"), (reset, "5")]), None);
        assert_eq!(
            state(&[(remaining, "99999999999999999999999"), (reset, "5")]),
            None
        );
        assert_eq!(state(&[]), None);
    }

    #[test]
    fn hashed_token_is_standard_base64_of_sha256() {
        // echo -n ghs_test | openssl dgst -sha256 -binary | base64
        assert_eq!(
            super::hashed_token("ghs_test"),
            "+ap9b45KaFoq9FYVnxBIoSlD6sFaJaJ040tydS0EIxw="
        );
    }

    use super::*;

    /// (owner, repo, path, ref, expected request path)
    type PathCase = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn contents_paths_are_encoded() {
        let cases: &[PathCase] = &[
            (
                "acme",
                "cfg",
                "kitebridge.json",
                None,
                Some("/repos/acme/cfg/contents/kitebridge.json"),
            ),
            (
                "acme",
                "cfg",
                "a/b c.json",
                Some("main"),
                Some("/repos/acme/cfg/contents/a/b%20c.json?ref=main"),
            ),
            (
                "acme",
                "cfg",
                "p.json",
                Some("feature/x&y=1"),
                Some("/repos/acme/cfg/contents/p.json?ref=feature%2Fx%26y%3D1"),
            ),
            ("acme", "cfg", "../secrets", None, None),
            ("acme", "cfg", "a//b", None, None),
            ("acme", "cfg", "/abs", None, None),
            (
                "acme",
                "cfg",
                "a?b",
                None,
                Some("/repos/acme/cfg/contents/a%3Fb"),
            ),
            ("ac/me", "cfg", "p", None, None),
            ("acme", "..", "p", None, None),
            ("acme", "cfg", "p", Some(""), None),
            ("acme", "cfg", "p\n", None, None),
        ];
        for (owner, repo, path, git_ref, want) in cases {
            assert_eq!(
                contents_path(owner, repo, path, *git_ref).ok().as_deref(),
                *want,
                "{path:?} {git_ref:?}"
            );
        }
    }

    #[test]
    fn file_objects() {
        let file =
            serde_json::json!({"type": "file", "encoding": "base64", "content": "aGVs\nbG8=\n"});
        assert_eq!(decode_file_object(&file).unwrap(), b"hello");
        let refused = [
            serde_json::json!([{"type": "file"}]),
            serde_json::json!({"type": "dir"}),
            serde_json::json!({"type": "symlink", "target": "x"}),
            serde_json::json!({"type": "file", "encoding": "none", "content": ""}),
            serde_json::json!({"type": "file", "encoding": "base64", "content": "!!"}),
        ];
        for value in refused {
            assert!(decode_file_object(&value).is_err(), "{value}");
        }
    }

    #[test]
    fn messages_are_escaped() {
        assert_eq!(
            github_message(br#"{"message":"Bad \"x\"\n"}"#),
            r#""Bad \"x\"\n""#
        );
        assert_eq!(github_message(b"<html>"), "(no message)");
    }
}
