//! The token routes through the running kitebridge process, against the upstream stand-ins:
//! every status code these routes produce, caused the way production causes it.
#![forbid(unsafe_code)]

mod support;

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::buildkite::BkFail;
use support::github::{APP_KEY_PEM, Fail, Route};
use support::kitebridge::{
    BUILDKITE_TOKEN, GIT_BODY, HttpResponse, ORG, PIPELINE, Process, Upstreams,
    assert_json_error_no_store, audit_error, exchange, hashed_token, plugin_post, vended, world,
    world_with,
};
use support::oidc::Signer;
use support::server::{Request, Response, Server};
use support::util::{all_at_once, now};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// A valid token for `acme/<pipeline>`.
fn token_for(up: &Upstreams, pipeline: &str) -> String {
    up.signer.token(&up.claims(pipeline))
}

/// `Retry-After`, which must be whole seconds, at least 1.
fn retry_after(r: &HttpResponse) -> u64 {
    let value = r
        .header("Retry-After")
        .unwrap_or_else(|| panic!("no Retry-After on {}: {:?}", r.status, r.headers));
    let secs: u64 = value.parse().unwrap();
    assert!(secs >= 1, "Retry-After {secs}");
    secs
}

/// A 503 may carry `Retry-After`; if it does it is numeric.
fn assert_retry_after_absent_or_numeric(r: &HttpResponse) {
    if r.header("Retry-After").is_some() {
        retry_after(r);
    }
}

#[test]
fn json_token_routes_answer_the_documented_body() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    for (i, path) in ["/token", "/token/pipeline:default"].iter().enumerate() {
        let r = p.token(path, &jwt);
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), p.stderr());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        let issued = up.github.issued();
        assert_eq!(issued.len(), 1, "the second route is served from the cache");
        let token = &issued[0].token;
        let expiry = r.json()["expiry"].as_str().unwrap().to_owned();
        let expected = format!(
            concat!(
                r#"{{"organizationSlug":"acme","profile":"pipeline:default","#,
                r#""repositoryUrl":"https://github.com/acme/widgets","repositories":["acme/widgets"],"#,
                r#""repositorySelection":"selected","permissions":["contents:read","metadata:read"],"#,
                r#""token":"{}","hashedToken":"{}","expiry":"{}","expiresAt":"{}"}}"#
            ),
            token,
            hashed_token(token),
            expiry,
            expiry
        );
        assert_eq!(
            r.text(),
            expected,
            "{path}: body and key order of the documented answer"
        );
        let expires_at = kitebridge::parse_rfc3339(&expiry).unwrap();
        assert!(expiry.ends_with('Z'));
        assert!(
            (now() + 3500..=now() + 3600).contains(&expires_at),
            "{expiry}"
        );
        let audit = p.audit_of(&r); // found by the X-Request-Id header
        assert_eq!(p.audit(i + 1).len(), i + 1, "one audit line per request");
        assert_eq!(audit["status"], 200);
        assert_eq!(audit["path"], *path);
        assert_eq!(audit["vended"]["hashedToken"], hashed_token(token));
        assert_eq!(
            audit["vended"]["cache"],
            if i == 0 { "miss" } else { "hit" }
        );
    }
}

#[test]
fn git_token_routes_answer_the_documented_body() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    for (i, path) in ["/git-credentials", "/git-credentials/pipeline:default"]
        .iter()
        .enumerate()
    {
        let r = p.git(path, &jwt, GIT_BODY);
        assert_eq!(r.status, 200, "{path}: {}\n{}", r.text(), p.stderr());
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(r.header("Cache-Control"), Some("no-store"));
        let issued = up.github.issued();
        assert_eq!(issued.len(), 1);
        let text = r.text();
        assert!(
            text.starts_with(&format!(
                "{GIT_BODY}\nusername=x-access-token\npassword={}\npassword_expiry_utc=",
                issued[0].token
            )),
            "{text}"
        );
        assert!(text.ends_with("\n\n"), "{text:?}");
        let audit = p.audit_of(&r); // found by the X-Request-Id header
        assert_eq!(p.audit(i + 1).len(), i + 1, "one audit line per request");
        assert_eq!(audit["requestedRepository"], "acme/widgets");
        assert_eq!(
            audit["vended"]["cache"],
            if i == 0 { "miss" } else { "hit" }
        );
    }
}

#[test]
fn the_long_token_passes_through_intact() {
    let (up, p) = world(BIN);
    let r = p.token("/token", &up.token());
    let token = vended(&r);
    let issued = up.github.issued();
    assert_eq!(token, issued[0].token);
    assert!(token.len() >= 500, "{}", token.len());
    assert!(token.contains('.') && token.contains('_') && token.contains('-'));
    let git = p.git("/git-credentials", &up.token(), GIT_BODY);
    assert!(
        git.text().contains(&format!("\npassword={token}\n")),
        "{}",
        git.text()
    );
}

#[test]
fn missing_authorization_is_a_bare_401_challenge() {
    let (up, p) = world(BIN);
    let r = p.post_with(
        "/token",
        &["Content-Type: text/plain", "Accept: application/json"],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), r#"{"error":"invalid_token"}"#);
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some(r#"Bearer realm="kitebridge""#)
    );
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    let audit = p.audit_of(&r);
    assert_eq!(audit["status"], 401);
    assert!(audit_error(&audit).contains("no authorization header"));
    assert_eq!(up.github.mints(), 0);
}

#[test]
fn every_invalid_token_gets_the_same_401_and_the_audit_names_the_cause() {
    let (up, p) = world(BIN);
    let t = now();
    let expired = up.token_with(|c| {
        c["iat"] = json!(t - 400);
        c["nbf"] = json!(t - 400);
        c["exp"] = json!(t - 100);
    });
    let wrong_audience = up.token_with(|c| c["aud"] = json!("chinmina:other"));
    let other_org = up.token_with(|c| c["organization_slug"] = json!("evilcorp"));
    let claims = up.claims(PIPELINE).to_string();
    let bad_signature = Signer::b().token_from_parts(&up.signer.header(), claims.as_bytes());
    let valid = up.token();
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "expired",
            vec![format!("Authorization: Bearer {expired}")],
            "expired",
        ),
        (
            "wrong audience",
            vec![format!("Authorization: Bearer {wrong_audience}")],
            "audience mismatch",
        ),
        (
            "other organization",
            vec![format!("Authorization: Bearer {other_org}")],
            "organization mismatch",
        ),
        (
            "bad signature",
            vec![format!("Authorization: Bearer {bad_signature}")],
            "bad signature",
        ),
        (
            "garbage",
            vec!["Authorization: Bearer not-a-jwt".to_owned()],
            "three segments",
        ),
        (
            "basic scheme",
            vec![format!("Authorization: Basic {valid}")],
            "malformed authorization header",
        ),
        (
            "two authorization headers",
            vec![
                format!("Authorization: Bearer {valid}"),
                format!("Authorization: Bearer {valid}"),
            ],
            "malformed authorization header",
        ),
    ];
    for (name, auth, cause) in &cases {
        let mut lines: Vec<&str> = auth.iter().map(String::as_str).collect();
        lines.push("Content-Type: text/plain");
        let r = p.post_with("/token", &lines, b"");
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert_eq!(
            r.text(),
            r#"{"error":"invalid_token","error_description":"The access token is invalid"}"#,
            "{name}"
        );
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some(r#"Bearer realm="kitebridge", error="invalid_token""#),
            "{name}"
        );
        let audit = p.audit_of(&r);
        assert_eq!(audit["status"], 401, "{name}");
        assert_eq!(audit["vended"], Value::Null, "{name}");
        let error = audit_error(&audit);
        assert!(error.contains(cause), "{name}: audit error {error:?}");
    }
    assert_eq!(up.github.mints(), 0);
}

#[test]
fn malformed_or_unknown_profiles_and_bad_git_input() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    let r = p.token("/token/org:x", &jwt);
    assert_json_error_no_store(&r, 400, "malformed profile reference");
    assert!(audit_error(&p.audit_of(&r)).contains("profile reference"));
    let r = p.token("/token/nope", &jwt);
    assert_json_error_no_store(&r, 404, "profile not found");
    assert!(audit_error(&p.audit_of(&r)).contains("not found"));
    let r = p.git("/git-credentials", &jwt, "protocol=https\nhost=github.com");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert!(audit_error(&p.audit_of(&r)).contains("lacks path"));
    assert_eq!(up.github.mints(), 0);
}

#[test]
fn buildkite_failures_map_to_the_documented_statuses() {
    let (up, p) = world(BIN);
    let jwt = up.token();

    up.buildkite.set_fail(BkFail::Status(500));
    let r = p.token("/token", &jwt);
    assert_json_error_no_store(&r, 503, "upstream unavailable");
    assert_retry_after_absent_or_numeric(&r);
    assert!(audit_error(&p.audit_of(&r)).contains("buildkite"));

    up.buildkite.set_fail(BkFail::Status(404));
    let r = p.token("/token", &jwt);
    assert_json_error_no_store(&r, 500, "internal error");
    assert!(audit_error(&p.audit_of(&r)).contains("pipeline not found"));

    up.buildkite.set_fail(BkFail::None);
    up.buildkite
        .set_pipeline(ORG, PIPELINE, "git@gitlab.com:acme/widgets.git");
    let r = p.token("/token", &jwt);
    assert_json_error_no_store(&r, 500, "internal error");
    assert!(audit_error(&p.audit_of(&r)).contains("not on GitHub"));

    up.buildkite.set_fail(BkFail::RateLimited { reset: 30 });
    let r = p.token("/token", &jwt);
    assert_json_error_no_store(&r, 503, "upstream unavailable");
    assert!((1..=30).contains(&retry_after(&r)));
    let calls = up.buildkite.calls();
    up.buildkite.set_fail(BkFail::None);
    let r = p.token("/token", &jwt);
    assert_eq!(r.status, 503, "the circuit is open: {}", r.text());
    retry_after(&r);
    assert_eq!(
        up.buildkite.calls(),
        calls,
        "no call while the circuit is open"
    );
    assert_eq!(up.github.mints(), 0);
}

#[test]
fn a_hanging_buildkite_is_a_503_within_the_upstream_timeout() {
    let (up, p) = world(BIN);
    up.buildkite.set_fail(BkFail::Hang(Duration::from_secs(28)));
    let started = Instant::now();
    let r = p.token("/token", &up.token());
    let took = started.elapsed();
    assert_json_error_no_store(&r, 503, "upstream unavailable");
    assert_retry_after_absent_or_numeric(&r);
    assert!(took < Duration::from_secs(25), "took {took:?}");
}

#[test]
fn github_failures_map_to_the_documented_statuses() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    up.github.set_fail(Fail::Status(500));
    let r = p.token("/token", &jwt);
    assert_json_error_no_store(&r, 503, "upstream unavailable");
    assert_retry_after_absent_or_numeric(&r);
    assert!(audit_error(&p.audit_of(&r)).contains("github"));

    up.github.set_fail(Fail::Status422);
    let r = p.token("/token", &jwt);
    assert_json_error_no_store(&r, 500, "internal error");
    assert!(audit_error(&p.audit_of(&r)).contains("422"));
    assert_eq!(up.github.mints(), 0);
}

#[test]
fn a_github_rate_limit_opens_the_circuit_and_cached_tokens_keep_being_served() {
    let (up, p) = world(BIN);
    up.buildkite
        .set_pipeline(ORG, "gears", "git@github.com:acme/gears.git");
    up.buildkite
        .set_pipeline(ORG, "cfg", "https://github.com/acme/cfg.git");
    let widgets = up.token();
    let cached = vended(&p.token("/token", &widgets));

    up.github.set_fail(Fail::RateLimited { retry_after: 120 });
    let r = p.token("/token", &token_for(&up, "gears"));
    assert_json_error_no_store(&r, 503, "upstream unavailable");
    assert!((1..=120).contains(&retry_after(&r)));

    up.github.set_fail(Fail::None);
    let calls = up.github.calls(Route::Mint);
    let r = p.token("/token", &token_for(&up, "cfg"));
    assert_json_error_no_store(&r, 503, "upstream unavailable");
    assert!((1..=120).contains(&retry_after(&r)));
    assert_eq!(up.github.calls(Route::Mint), calls, "GitHub was not called");
    assert_eq!(up.github.mints(), 1);

    let r = p.token("/token", &widgets);
    assert_eq!(vended(&r), cached);
    assert_eq!(p.audit_of(&r)["vended"]["cache"], "hit");
}

#[test]
fn a_token_granting_more_than_asked_is_refused_and_revoked() {
    let (up, p) = world(BIN);
    up.github.set_fail(Fail::GrantMore);
    let r = p.token("/token", &up.token());
    assert_json_error_no_store(&r, 502, "upstream error");
    let issued = up.github.issued();
    assert_eq!(issued.len(), 1);
    assert!(issued[0].revoked, "the over-granted token is revoked");
    assert!(!r.text().contains(&issued[0].token));

    up.github.set_fail(Fail::None);
    let token = vended(&p.token("/token", &up.token()));
    assert_ne!(token, issued[0].token, "the refused token was not cached");
    assert_eq!(up.github.mints(), 2);
}

#[test]
fn a_second_identical_request_is_a_cache_hit() {
    let (up, p) = world(BIN);
    let (r1, r2) = (
        p.token("/token", &up.token()),
        p.token("/token", &up.token()),
    );
    assert_eq!(vended(&r1), vended(&r2));
    assert_eq!(up.github.mints(), 1);
    assert_eq!(p.audit_of(&r1)["vended"]["cache"], "miss");
    assert_eq!(p.audit_of(&r2)["vended"]["cache"], "hit");
}

#[test]
fn concurrent_identical_requests_on_a_cold_cache_mint_once() {
    const N: usize = 50;
    let (up, p) = world(BIN);
    up.github.set_fail(Fail::Delay(Duration::from_millis(800)));
    let jwt = up.token();
    let addr = p.addr;
    let responses = all_at_once(N, move || plugin_post(addr, "/token", &jwt));
    let tokens: Vec<String> = responses.iter().map(vended).collect();
    assert_eq!(up.github.mints(), 1);
    assert_eq!(up.github.calls(Route::Mint), 1);
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    let audit = p.audit(N);
    let count = |outcome: &str| {
        audit
            .iter()
            .filter(|a| a["vended"]["cache"] == outcome)
            .count()
    };
    assert_eq!(count("miss"), 1);
    assert_eq!(count("miss") + count("coalesced") + count("hit"), N);
    assert!(count("coalesced") >= 1, "waiters shared the one mint");
}

/// A GitHub in front of the stand-in whose tokens live `lifetime_secs` instead of an hour.
fn short_lived_github(up: &Upstreams, lifetime_secs: u64) -> Server {
    let target: SocketAddr = up
        .github
        .api_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    Server::start(move |request| {
        let mut response = forward(target, request);
        if request.path.ends_with("/access_tokens") && response.status == 201 {
            let mut body: Value = serde_json::from_slice(&response.body).unwrap();
            body["expires_at"] = json!(kitebridge::rfc3339(now() + lifetime_secs));
            response.body = body.to_string().into_bytes();
        }
        response
    })
}

fn forward(target: SocketAddr, request: &Request) -> Response {
    let query = if request.query.is_empty() {
        String::new()
    } else {
        format!("?{}", request.query)
    };
    let mut raw = format!("{} {}{query} HTTP/1.1\r\n", request.method, request.path);
    for (name, value) in &request.headers {
        if name != "connection" && name != "content-length" {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    raw.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(&request.body);
    let answer = exchange(target, &raw);
    let mut response = Response::empty(answer.status).with_body(answer.body);
    for (name, value) in answer.headers {
        let framing =
            ["content-length", "connection"].contains(&name.to_ascii_lowercase().as_str());
        if !framing {
            response = response.with_header(&name, &value);
        }
    }
    response
}

#[test]
fn a_token_with_less_than_the_minimum_left_is_not_served() {
    const MIN: u64 = 3300;
    let up = Upstreams::start();
    let github = short_lived_github(&up, MIN + 5);
    let env = up.env_with(&[
        ("TOKEN_MIN_REMAINING_SECS", "3300"),
        ("GITHUB_API_URL", &github.url()),
    ]);
    let p = Process::spawn(BIN, &env);

    let r = p.token("/token", &up.token());
    let first = vended(&r);
    let expires_at = kitebridge::parse_rfc3339(r.json()["expiresAt"].as_str().unwrap()).unwrap();
    assert!(expires_at.saturating_sub(now()) >= MIN + 2, "slow start");
    assert_eq!(
        vended(&p.token("/token", &up.token())),
        first,
        "at least TOKEN_MIN_REMAINING_SECS left: served from the cache"
    );
    assert_eq!(up.github.mints(), 1);

    while expires_at.saturating_sub(now()) >= MIN {
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = p.token("/token", &up.token());
    assert_ne!(
        vended(&r),
        first,
        "less than TOKEN_MIN_REMAINING_SECS left: minted anew"
    );
    assert_eq!(up.github.mints(), 2);
    assert_eq!(p.audit_of(&r)["vended"]["cache"], "miss");
}

#[test]
fn a_failed_mint_is_not_cached() {
    let (up, p) = world(BIN);
    up.github.set_fail(Fail::Status(500));
    assert_eq!(p.token("/token", &up.token()).status, 503);
    up.github.set_fail(Fail::None);
    let token = vended(&p.token("/token", &up.token()));
    assert_eq!(up.github.calls(Route::Mint), 2);
    assert_eq!(up.github.mints(), 1);
    assert_eq!(token, up.github.issued()[0].token);
}

#[test]
fn the_body_limit_applies_on_token_routes() {
    let (up, p) = world(BIN);
    let auth = format!("Authorization: Bearer {}", up.token());
    let r = exchange(
        p.addr,
        format!(
            "POST /token HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 20481\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_json_error_no_store(&r, 413, "request body too large");
    assert_eq!(r.header("Connection"), Some("close"));
    let r = p.post_with("/token", &[&auth], &[b'x'; 20480]);
    assert_eq!(r.status, 200, "20480 bytes are allowed: {}", r.text());
    assert_eq!(up.github.mints(), 1);
}

#[test]
fn get_on_a_token_route_is_405_with_allow_post() {
    let (_up, p) = world(BIN);
    let r = p.get("/token");
    assert_json_error_no_store(&r, 405, "method not allowed");
    assert_eq!(r.header("Allow"), Some("POST"));
}

#[test]
fn the_per_pipeline_rate_limit_answers_429() {
    let (up, p) = world_with(BIN, &[("RATE_LIMIT_PER_PIPELINE", "2/60s")]);
    up.buildkite
        .set_pipeline(ORG, "gears", "git@github.com:acme/gears.git");
    let jwt = up.token();
    vended(&p.token("/token", &jwt));
    vended(&p.token("/token", &jwt));
    let r = p.token("/token", &jwt);
    assert_json_error_no_store(&r, 429, "rate limited");
    assert!((1..=60).contains(&retry_after(&r)));
    assert!(audit_error(&p.audit_of(&r)).contains("per-pipeline"));
    vended(&p.token("/token", &token_for(&up, "gears")));
    assert_eq!(up.github.mints(), 2, "the limited request minted nothing");
}

#[test]
fn the_per_source_rate_limit_answers_429_before_any_jwt_work() {
    let (up, p) = world_with(BIN, &[("RATE_LIMIT_PER_SOURCE", "3/60s")]);
    for _ in 0..3 {
        assert_eq!(p.token("/token", "garbage").status, 401);
    }
    let r = p.token("/token", "garbage");
    assert_json_error_no_store(&r, 429, "rate limited");
    assert!((1..=60).contains(&retry_after(&r)));
    let audit = p.audit_of(&r);
    assert!(audit_error(&audit).contains("per-source"));
    assert_eq!(audit["jwt"], Value::Null, "the JWT was not looked at");
    let r = p.token("/token", &up.token());
    assert_json_error_no_store(&r, 429, "rate limited");
    assert_eq!(up.buildkite.calls(), 0);
    assert_eq!(up.github.mints(), 0);
}

#[test]
fn not_ready_while_the_installation_lookup_fails() {
    let up = Upstreams::start();
    up.github.set_fail(Fail::Status(500));
    let p = Process::spawn_unready(BIN, &up.env());
    std::thread::sleep(Duration::from_millis(500));
    let r = p.get("/healthcheck");
    assert_eq!((r.status, r.text().as_str()), (503, "not ready"));
    let r = p.token("/token", &up.token());
    assert_json_error_no_store(&r, 503, "not ready");
    assert!(up.github.calls(Route::Installation) >= 1);

    up.github.set_fail(Fail::None);
    p.wait_ready(Duration::from_secs(10));
    vended(&p.token("/token", &up.token()));
}

#[test]
fn no_secret_reaches_the_log_the_audit_or_a_body() {
    let (up, p) = world_with(BIN, &[("LOG_LEVEL", "trace")]);
    up.buildkite
        .set_pipeline(ORG, "gears", "git@github.com:acme/gears.git");
    up.buildkite
        .set_pipeline(ORG, "cfg", "git@github.com:acme/cfg.git");
    let t = now();
    let valid = up.token();
    let expired = up.token_with(|c| {
        c["iat"] = json!(t - 400);
        c["exp"] = json!(t - 100);
    });
    let claims = up.claims(PIPELINE).to_string();
    let bad_signature = Signer::b().token_from_parts(&up.signer.header(), claims.as_bytes());
    let (gears, cfg, unknown) = (
        token_for(&up, "gears"),
        token_for(&up, "cfg"),
        token_for(&up, "unknown"),
    );
    let garbage = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ".to_owned();

    let mut responses = vec![
        p.token("/token", &valid),
        p.token("/token", &valid),
        p.git("/git-credentials", &valid, GIT_BODY),
        p.git(
            "/git-credentials",
            &valid,
            "protocol=https\nhost=github.com\npath=acme/other.git",
        ),
        p.git("/git-credentials", &valid, "protocol=https"),
        p.token("/token/nope", &valid),
        p.token("/token", &expired),
        p.token("/token", &bad_signature),
        p.token("/token", &garbage),
        p.token("/token", &unknown),
    ];
    up.github.set_fail(Fail::GrantMore);
    responses.push(p.token("/token", &gears));
    up.github.set_fail(Fail::Status(500));
    responses.push(p.token("/token", &cfg));
    up.github.set_fail(Fail::None);
    responses.push(p.token("/token", &cfg));
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            200, 200, 200, 200, 400, 404, 401, 401, 401, 500, 502, 503, 200
        ]
    );
    assert_eq!(up.github.mints(), 3);

    let mut secrets = vec![BUILDKITE_TOKEN.to_owned()];
    for jwt in [
        &valid,
        &expired,
        &bad_signature,
        &gears,
        &cfg,
        &unknown,
        &garbage,
    ] {
        secrets.push(jwt.clone());
        secrets.push(jwt.rsplit('.').next().unwrap().to_owned()); // the signature alone
    }
    secrets.extend(
        APP_KEY_PEM
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .map(str::to_owned),
    );
    let tokens: Vec<String> = up.github.issued().into_iter().map(|i| i.token).collect();
    let token_prefixes: Vec<&str> = tokens.iter().map(|t| &t[..24]).collect();

    // Wait for every audit line before reading the logs.
    assert_eq!(p.audit(responses.len()).len(), responses.len());
    let (stderr, audit) = (p.stderr(), p.audit_text());
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "{stderr}"
    );
    for (place, text) in [("stderr", &stderr), ("audit", &audit)] {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{place} holds {secret:?}");
        }
        for token in &token_prefixes {
            assert!(!text.contains(token), "{place} holds a token ({token}…)");
        }
    }
    for r in &responses {
        let body = r.text();
        for secret in &secrets {
            assert!(
                !body.contains(secret.as_str()),
                "{} body holds {secret:?}",
                r.status
            );
        }
        let own = match r.header("Content-Type") {
            Some("application/json") if r.status == 200 => {
                r.json()["token"].as_str().map(str::to_owned)
            }
            _ => body
                .lines()
                .find_map(|l| l.strip_prefix("password="))
                .map(str::to_owned),
        };
        for (token, prefix) in tokens.iter().zip(&token_prefixes) {
            if own.as_ref() != Some(token) {
                assert!(
                    !body.contains(prefix),
                    "{} body holds another token",
                    r.status
                );
            }
        }
    }
}

#[test]
fn a_base_path_serves_every_route_under_it_only() {
    let up = Upstreams::start();
    let p = Process::spawn_unready(BIN, &up.env_with(&[("SERVER_BASE_PATH", "/bridge")]));
    p.wait_ready_at("/bridge/healthcheck", Duration::from_secs(15));
    let token = vended(&p.token("/bridge/token", &up.token()));
    assert_eq!(token, up.github.issued()[0].token);
    assert_json_error_no_store(&p.token("/token", &up.token()), 404, "not found");
    assert_eq!(p.get("/healthcheck").status, 404);
    assert_eq!(up.github.mints(), 1);
}
