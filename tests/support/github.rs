//! A GitHub App API stand-in behaving like the parts of GitHub kitebridge uses:
//! App JWT checked on every App call (RS256, `iss`, `iat`/`exp` window), the installation,
//! token mints validated like GitHub (names without owner, known repositories, underscore
//! permission keys within the installation's), ~520-character `ghs_` tokens, revocation
//! (`DELETE /installation/token`: 204 for a live token, 401 once revoked; the time of each), and
//! the contents API (raw and base64 JSON forms, ETag/304). Counters and failure modes for tests.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::server::{Request, Response, Server};
use super::util::{hex, sha256_hex};

/// The test App key (PKCS#1, as GitHub hands it out). Not a secret.
pub const APP_KEY_PEM: &str = include_str!("../fixtures/test-github-app-key.pkcs1.pem");

/// The test App key's public half (PKCS#1 `RSAPublicKey` DER), for [`GitHubStandIn::start`].
pub fn app_public_key() -> Vec<u8> {
    let PrivateKeyDer::Pkcs1(der) = PrivateKeyDer::from_pem_slice(APP_KEY_PEM.as_bytes()).unwrap()
    else {
        panic!("fixture is PKCS#1");
    };
    let pair = RsaKeyPair::from_der(der.secret_pkcs1_der()).unwrap();
    ring::signature::KeyPair::public_key(&pair)
        .as_ref()
        .to_vec()
}

/// How the stand-in misbehaves (for every route but revocation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fail {
    /// Behave.
    None,
    /// Answer this status with a GitHub-style message.
    Status(u16),
    /// 422 "Validation Failed" as for a repository outside the installation.
    Status422,
    /// 403 with `retry-after` (a secondary rate limit).
    RateLimited {
        /// Seconds.
        retry_after: u64,
    },
    /// Never answer within the client's timeouts (sleeps this long, then closes).
    Hang(Duration),
    /// Answer normally after this delay.
    Delay(Duration),
    /// Mint tokens with an extra `administration: write` permission.
    GrantMore,
    /// Answer this status with this body (`application/json`), as it is: odd answers.
    Body(u16, Vec<u8>),
}

/// Routes, for [`GitHubStandIn::calls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /app/installations/{id}`
    Installation,
    /// `POST /app/installations/{id}/access_tokens`
    Mint,
    /// `DELETE /installation/token`
    Revoke,
    /// `GET /repos/{o}/{r}/contents/{path}`
    Contents,
}

/// An issued token.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The token value.
    pub token: String,
    /// Repository names it covers (`None`: all).
    pub repositories: Option<Vec<String>>,
    /// Granted permissions.
    pub permissions: BTreeMap<String, String>,
    /// Revoked through `DELETE /installation/token`.
    pub revoked: bool,
    /// When it was revoked, Unix milliseconds.
    pub revoked_at: Option<u64>,
    /// `expires_at` as answered, Unix seconds.
    pub expires_at: u64,
}

struct State {
    prefix: String,
    app_id: String,
    installation_id: u64,
    account: String,
    public_key: Vec<u8>,
    /// Repository names in the installation.
    repositories: Mutex<Vec<String>>,
    /// The installation's permissions (the most a token can get).
    permissions: Mutex<BTreeMap<String, String>>,
    fail: Mutex<Fail>,
    calls: Mutex<HashMap<Route, usize>>,
    jwts: Mutex<HashSet<String>>,
    issued: Mutex<Vec<Issued>>,
    mint_bodies: Mutex<Vec<Value>>,
    contents: Mutex<Vec<u8>>,
    contents_refs: Mutex<Vec<Option<String>>>,
    /// Unix seconds pinned for the JWT check; 0 = the real clock.
    now: AtomicU64,
    serial: AtomicU64,
    /// Whether `Accept: application/vnd.github.raw+json` gets raw bytes.
    raw_supported: AtomicBool,
    /// While true, mint requests wait (see [`GitHubStandIn::stall_mints`]).
    stall: Mutex<bool>,
    unstalled: Condvar,
    /// Mint requests waiting right now.
    stalled: AtomicUsize,
    /// Revocation requests still to answer 500 (see [`GitHubStandIn::fail_revocations`]).
    failing_revocations: AtomicUsize,
    /// `x-ratelimit-remaining` and `x-ratelimit-reset` on every answer, when set.
    rate_limit: Mutex<Option<(u64, u64)>>,
}

/// The running stand-in.
pub struct GitHubStandIn {
    server: Server,
    state: Arc<State>,
}

impl GitHubStandIn {
    /// GitHub.com style: the API at the root (`api_url()` = `http://127.0.0.1:PORT`).
    /// The installation holds `widgets`, `gears`, `cfg` and has `contents`, `issues`,
    /// `pull_requests`: write, `metadata`: read.
    pub fn start(
        app_id: &str,
        installation_id: u64,
        account_login: &str,
        app_public_key: Vec<u8>,
    ) -> GitHubStandIn {
        GitHubStandIn::start_at("", app_id, installation_id, account_login, app_public_key)
    }

    /// GitHub Enterprise Server style: the API only under `/api/v3`.
    pub fn start_enterprise(
        app_id: &str,
        installation_id: u64,
        account_login: &str,
        app_public_key: Vec<u8>,
    ) -> GitHubStandIn {
        GitHubStandIn::start_at(
            "/api/v3",
            app_id,
            installation_id,
            account_login,
            app_public_key,
        )
    }

    fn start_at(
        prefix: &str,
        app_id: &str,
        installation_id: u64,
        account: &str,
        public_key: Vec<u8>,
    ) -> GitHubStandIn {
        let permissions = [
            ("contents", "write"),
            ("issues", "write"),
            ("pull_requests", "write"),
            ("metadata", "read"),
        ];
        let state = Arc::new(State {
            prefix: prefix.to_owned(),
            app_id: app_id.to_owned(),
            installation_id,
            account: account.to_owned(),
            public_key,
            repositories: Mutex::new(vec!["widgets".into(), "gears".into(), "cfg".into()]),
            permissions: Mutex::new(
                permissions
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            fail: Mutex::new(Fail::None),
            calls: Mutex::new(HashMap::new()),
            jwts: Mutex::new(HashSet::new()),
            issued: Mutex::new(Vec::new()),
            mint_bodies: Mutex::new(Vec::new()),
            contents: Mutex::new(b"{}".to_vec()),
            contents_refs: Mutex::new(Vec::new()),
            now: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            raw_supported: AtomicBool::new(true),
            stall: Mutex::new(false),
            unstalled: Condvar::new(),
            stalled: AtomicUsize::new(0),
            failing_revocations: AtomicUsize::new(0),
            rate_limit: Mutex::new(None),
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start(move |request| answer(&handler_state, request));
        GitHubStandIn { server, state }
    }

    /// The base to configure as `GITHUB_API_URL`.
    pub fn api_url(&self) -> String {
        format!("{}{}", self.server.url(), self.state.prefix)
    }

    /// Replaces the installation's repository names.
    pub fn set_repositories(&self, names: &[&str]) {
        *self.state.repositories.lock().unwrap() = names.iter().map(|s| s.to_string()).collect();
    }

    /// Replaces the installation's permissions.
    pub fn set_permissions(&self, permissions: &[(&str, &str)]) {
        *self.state.permissions.lock().unwrap() = permissions
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Sets the failure mode.
    pub fn set_fail(&self, fail: Fail) {
        *self.state.fail.lock().unwrap() = fail;
    }

    /// Sets the file every contents path serves.
    pub fn set_contents(&self, bytes: &[u8]) {
        *self.state.contents.lock().unwrap() = bytes.to_vec();
    }

    /// Whether the raw media type is honoured (default); `false` always answers the base64
    /// JSON form with embedded newlines.
    pub fn set_raw_media_type(&self, supported: bool) {
        self.state.raw_supported.store(supported, Ordering::SeqCst);
    }

    /// Pins the clock the App JWT is checked against (`None`: the real clock).
    pub fn set_now(&self, now: Option<u64>) {
        self.state.now.store(now.unwrap_or(0), Ordering::SeqCst);
    }

    /// While `stall` is true, every mint request waits (holding its connection) until it is set
    /// false again; then they are answered as usual.
    pub fn stall_mints(&self, stall: bool) {
        *self.state.stall.lock().unwrap() = stall;
        self.state.unstalled.notify_all();
    }

    /// The next `count` revocation requests answer 500 (and revoke nothing).
    pub fn fail_revocations(&self, count: usize) {
        self.state
            .failing_revocations
            .store(count, Ordering::SeqCst);
    }

    /// Every answer carries `x-ratelimit-remaining: remaining` and `x-ratelimit-reset: reset`
    /// (Unix seconds), as GitHub's do; `None`: no rate-limit headers (the default).
    pub fn set_rate_limit(&self, headers: Option<(u64, u64)>) {
        *self.state.rate_limit.lock().unwrap() = headers;
    }

    /// Mint requests waiting in a stall right now.
    pub fn stalled_mints(&self) -> usize {
        self.state.stalled.load(Ordering::SeqCst)
    }

    /// Tokens issued and not revoked.
    pub fn unrevoked(&self) -> Vec<String> {
        let issued = self.state.issued.lock().unwrap();
        issued
            .iter()
            .filter(|i| !i.revoked)
            .map(|i| i.token.clone())
            .collect()
    }

    /// Calls received on `route` (whatever the answer).
    pub fn calls(&self, route: Route) -> usize {
        self.state
            .calls
            .lock()
            .unwrap()
            .get(&route)
            .copied()
            .unwrap_or(0)
    }

    /// Tokens issued.
    pub fn mints(&self) -> usize {
        self.state.issued.lock().unwrap().len()
    }

    /// Every token issued, in order.
    pub fn issued(&self) -> Vec<Issued> {
        self.state.issued.lock().unwrap().clone()
    }

    /// Every distinct App JWT seen (accepted or not).
    pub fn jwts(&self) -> Vec<String> {
        self.state.jwts.lock().unwrap().iter().cloned().collect()
    }

    /// Distinct App JWTs seen (accepted or not).
    pub fn distinct_jwts(&self) -> usize {
        self.state.jwts.lock().unwrap().len()
    }

    /// The JSON bodies of every mint request, in order.
    pub fn mint_bodies(&self) -> Vec<Value> {
        self.state.mint_bodies.lock().unwrap().clone()
    }

    /// The `ref` query of every contents request, in order.
    pub fn contents_refs(&self) -> Vec<Option<String>> {
        self.state.contents_refs.lock().unwrap().clone()
    }
}

fn answer(state: &State, request: &Request) -> Response {
    let response = route(state, request);
    match *state.rate_limit.lock().unwrap() {
        Some((remaining, reset)) => response
            .with_header("x-ratelimit-remaining", &remaining.to_string())
            .with_header("x-ratelimit-reset", &reset.to_string()),
        None => response,
    }
}

fn route(state: &State, request: &Request) -> Response {
    let Some(path) = request.path.strip_prefix(&state.prefix) else {
        return not_found();
    };
    let owned: Vec<String> = path
        .split('/')
        .skip(1)
        .map(super::server::percent_decode)
        .collect();
    let segments: Vec<&str> = owned.iter().map(String::as_str).collect();
    let installation = state.installation_id.to_string();
    let route = match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["app", "installations", id]) => (Route::Installation, *id == installation),
        ("POST", ["app", "installations", id, "access_tokens"]) => {
            (Route::Mint, *id == installation)
        }
        ("DELETE", ["installation", "token"]) => (Route::Revoke, true),
        ("GET", ["repos", _, _, "contents", ..]) => (Route::Contents, true),
        _ => return not_found(),
    };
    *state.calls.lock().unwrap().entry(route.0).or_default() += 1;
    if route.0 == Route::Mint {
        let mut stall = state.stall.lock().unwrap();
        if *stall {
            state.stalled.fetch_add(1, Ordering::SeqCst);
            while *stall {
                stall = state.unstalled.wait(stall).unwrap();
            }
            state.stalled.fetch_sub(1, Ordering::SeqCst);
        }
    }
    if route.0 != Route::Revoke {
        if let Some(failure) = failure(state) {
            return failure;
        }
    }
    match route {
        (Route::Installation | Route::Mint, false) => {
            app_jwt_error(state, request).unwrap_or_else(not_found)
        }
        (Route::Installation, true) => {
            app_jwt_error(state, request).unwrap_or_else(|| installation_body(state))
        }
        (Route::Mint, true) => {
            app_jwt_error(state, request).unwrap_or_else(|| mint(state, request))
        }
        (Route::Revoke, _) => revoke(state, request),
        (Route::Contents, _) => contents(state, request, &segments),
    }
}

/// The configured failure, if any (`Delay` sleeps and lets the request through).
fn failure(state: &State) -> Option<Response> {
    let fail = state.fail.lock().unwrap().clone();
    match fail {
        Fail::None | Fail::GrantMore => None,
        Fail::Status(status) => Some(Response::message(status, "Server Error")),
        Fail::Status422 => Some(Response::message(
            422,
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        )),
        Fail::RateLimited { retry_after } => Some(
            Response::message(403, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.")
                .with_header("retry-after", &retry_after.to_string()),
        ),
        Fail::Hang(duration) => {
            std::thread::sleep(duration);
            Some(Response::empty(504))
        }
        Fail::Delay(duration) => {
            std::thread::sleep(duration);
            None
        }
        Fail::Body(status, body) => Some(Response::bytes(status, "application/json", body)),
    }
}

fn not_found() -> Response {
    Response::message(404, "Not Found")
}

fn bad_credentials() -> Response {
    Response::message(401, "Bad credentials")
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn now(state: &State) -> u64 {
    match state.now.load(Ordering::SeqCst) {
        0 => kitebridge::now_unix(),
        pinned => pinned,
    }
}

/// GitHub's App JWT rules: RS256 by the App key, `iss` the App, `iat` not in the future (60 s
/// skew), `exp` in the future and at most 10 minutes after `iat`. `None` when acceptable.
fn app_jwt_error(state: &State, request: &Request) -> Option<Response> {
    let Some(jwt) = request.bearer() else {
        return Some(bad_credentials());
    };
    state.jwts.lock().unwrap().insert(jwt.to_owned());
    let Some(claims) = verify_jwt(&state.public_key, jwt) else {
        return Some(Response::message(
            401,
            "A JSON web token could not be decoded",
        ));
    };
    let iat = claims["iat"].as_u64().unwrap_or(u64::MAX);
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let iss = claims["iss"]
        .as_str()
        .map_or_else(|| claims["iss"].to_string(), str::to_owned);
    let now = now(state);
    if iss != state.app_id {
        return Some(Response::message(
            401,
            "'Issuer' claim ('iss') must be an Integer",
        ));
    }
    if iat > now + 60 {
        return Some(Response::message(
            401,
            "'Issued at' claim ('iat') must be an Integer representing a time in the past",
        ));
    }
    if exp <= now || exp.saturating_sub(iat) > 600 {
        return Some(Response::message(
            401,
            "'Expiration time' claim ('exp') is too far in the future",
        ));
    }
    None
}

/// The claims of a JWT correctly signed by `public_key` with RS256; `None` otherwise.
fn verify_jwt(public_key: &[u8], jwt: &str) -> Option<Value> {
    let mut parts = jwt.split('.');
    let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
    if header["alg"] != "RS256" {
        return None;
    }
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signed = format!("{}.{payload}", jwt.split('.').next()?);
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(signed.as_bytes(), &signature)
        .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn installation_body(state: &State) -> Response {
    let body = json!({
        "id": state.installation_id,
        "account": {"login": state.account, "id": 1001, "type": "Organization"},
        "app_id": state.app_id.parse::<u64>().ok(),
        "app_slug": "kitebridge-test",
        "target_type": "Organization",
        "repository_selection": "selected",
        "permissions": *state.permissions.lock().unwrap(),
        "suspended_at": null,
    });
    Response::json(200, &body)
}

fn validation_failed(message: &str) -> Response {
    Response::json(
        422,
        &json!({"message": message, "documentation_url": "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app"}),
    )
}

fn mint(state: &State, request: &Request) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return Response::message(400, "Problems parsing JSON");
    };
    state.mint_bodies.lock().unwrap().push(body.clone());
    let repositories = match mint_repositories(state, &body) {
        Ok(r) => r,
        Err(response) => return response,
    };
    let mut permissions = match mint_permissions(state, &body) {
        Ok(p) => p,
        Err(response) => return response,
    };
    permissions
        .entry("metadata".into())
        .or_insert_with(|| "read".into());
    if *state.fail.lock().unwrap() == Fail::GrantMore {
        permissions.insert("administration".into(), "write".into());
    }
    let token = new_token(state);
    let expires_at = now(state) + 3600;
    state.issued.lock().unwrap().push(Issued {
        token: token.clone(),
        repositories: repositories.clone(),
        permissions: permissions.clone(),
        revoked: false,
        revoked_at: None,
        expires_at,
    });
    let mut answer = json!({
        "token": token,
        "expires_at": kitebridge::rfc3339(expires_at),
        "permissions": permissions,
        "repository_selection": if repositories.is_some() { "selected" } else { "all" },
    });
    if let Some(names) = &repositories {
        let objects: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, name)| json!({"id": 5000 + i, "name": name, "full_name": format!("{}/{name}", state.account), "private": true}))
            .collect();
        answer["repositories"] = Value::Array(objects);
    }
    Response::json(201, &answer)
}

fn mint_repositories(state: &State, body: &Value) -> Result<Option<Vec<String>>, Response> {
    let Some(list) = body.get("repositories") else {
        return Ok(None);
    };
    let names: Vec<&str> = list
        .as_array()
        .ok_or_else(|| {
            validation_failed("Invalid request.\n\nFor 'properties/repositories', is not an array.")
        })?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| validation_failed("repositories must be strings"))
        })
        .collect::<Result<_, _>>()?;
    if names.len() > 500 {
        return Err(validation_failed("Too many repositories: at most 500"));
    }
    let known = state.repositories.lock().unwrap();
    let inside = |name: &&str| known.iter().any(|k| k.eq_ignore_ascii_case(name));
    if !names.iter().all(inside) {
        return Err(validation_failed(
            "There is at least one repository that does not exist or is not accessible to the parent installation.",
        ));
    }
    let canonical = names
        .iter()
        .filter_map(|n| known.iter().find(|k| k.eq_ignore_ascii_case(n)).cloned())
        .collect();
    Ok(Some(canonical))
}

fn mint_permissions(state: &State, body: &Value) -> Result<BTreeMap<String, String>, Response> {
    let installation = state.permissions.lock().unwrap().clone();
    let Some(asked) = body.get("permissions") else {
        return Ok(installation);
    };
    let asked = asked
        .as_object()
        .ok_or_else(|| validation_failed("permissions must be an object"))?;
    let rank = |level: &str| ["read", "write", "admin"].iter().position(|l| *l == level);
    let mut granted = BTreeMap::new();
    for (name, level) in asked {
        let level = level.as_str().unwrap_or("");
        let allowed = installation.get(name).and_then(|l| rank(l));
        match (rank(level), allowed) {
            (Some(want), Some(max)) if want <= max => {
                granted.insert(name.clone(), level.to_owned())
            }
            _ => {
                return Err(validation_failed(
                    "The permissions requested are not granted to this installation.",
                ));
            }
        };
    }
    Ok(granted)
}

/// A ~520-character `ghs_` token with `.`, `_` and `-` inside, unique per mint.
fn new_token(state: &State) -> String {
    let serial = state.serial.fetch_add(1, Ordering::SeqCst);
    let seed = format!("{serial}:{}", state.installation_id);
    let digest = ring::digest::digest(&ring::digest::SHA512, seed.as_bytes());
    let chunk = URL_SAFE_NO_PAD.encode(digest.as_ref()); // 86 chars of [A-Za-z0-9_-]
    let mut token = format!("ghs_{serial}.");
    while token.len() < 516 {
        token.push_str(&chunk);
        token.push('.');
    }
    token.truncate(516);
    token.push_str("_x-y");
    token
}

fn revoke(state: &State, request: &Request) -> Response {
    let failing = state
        .failing_revocations
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        return Response::message(500, "Server Error");
    }
    let mut issued = state.issued.lock().unwrap();
    let found = request
        .bearer()
        .and_then(|token| issued.iter_mut().find(|i| i.token == token && !i.revoked));
    match found {
        Some(entry) => {
            entry.revoked = true;
            entry.revoked_at = Some(now_millis());
            Response::empty(204)
        }
        None => bad_credentials(),
    }
}

/// Contents with an installation token covering the repository with `contents` access.
fn contents(state: &State, request: &Request, segments: &[&str]) -> Response {
    let (Some(owner), Some(repo)) = (segments.get(1), segments.get(2)) else {
        return not_found();
    };
    let Some(token) = request.bearer() else {
        return not_found(); // private repository, anonymous caller
    };
    let issued = state
        .issued
        .lock()
        .unwrap()
        .iter()
        .find(|i| i.token == token && !i.revoked)
        .cloned();
    let Some(issued) = issued else {
        return bad_credentials();
    };
    let covers = |names: &Vec<String>| names.iter().any(|n| n.eq_ignore_ascii_case(repo));
    let covered = owner.eq_ignore_ascii_case(&state.account)
        && issued.permissions.contains_key("contents")
        && issued.repositories.as_ref().is_none_or(covers);
    if !covered {
        return not_found();
    }
    state
        .contents_refs
        .lock()
        .unwrap()
        .push(request.query_param("ref"));
    let bytes = state.contents.lock().unwrap().clone();
    let etag = format!(
        "\"{}\"",
        hex(&ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..16])
    );
    if request.header("if-none-match") == Some(etag.as_str()) {
        return Response::empty(304).with_header("ETag", &etag);
    }
    let raw = state.raw_supported.load(Ordering::SeqCst)
        && request
            .header("accept")
            .is_some_and(|a| a.contains("vnd.github.raw"));
    let response = if raw {
        Response::bytes(200, "application/vnd.github.raw+json; charset=utf-8", bytes)
    } else {
        Response::json(200, &file_object(segments, &bytes))
    };
    response.with_header("ETag", &etag)
}

/// GitHub's JSON form: base64 with a newline every 60 characters.
fn file_object(segments: &[&str], bytes: &[u8]) -> Value {
    let encoded = STANDARD.encode(bytes);
    let mut content = String::new();
    for (i, c) in encoded.chars().enumerate() {
        if i > 0 && i % 60 == 0 {
            content.push('\n');
        }
        content.push(c);
    }
    content.push('\n');
    let path = segments.get(4..).unwrap_or_default().join("/");
    json!({
        "type": "file",
        "encoding": "base64",
        "size": bytes.len(),
        "name": segments.last(),
        "path": path,
        "content": content,
        "sha": sha256_hex(bytes),
    })
}
