//! `POST /oauth/token` (RFC 8693 token exchange) through the running process.

mod support;

use serde_json::Value;
use support::kitebridge::{Process, Upstreams, exchange, hashed_token, world_with};
use support::util::{TempDir, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");
const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
const JWT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";

fn post_form(p: &Process, content_type: &str, body: &str) -> support::kitebridge::HttpResponse {
    let raw = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(p.addr, raw.as_bytes())
}

fn form(jwt: &str, extra: &str) -> String {
    format!("grant_type={GRANT}&subject_token={jwt}&subject_token_type={JWT_TYPE}{extra}")
}

/// The stand-ins and a ready kitebridge serving a profile file (pipeline profile `writer`,
/// organization profile `shared`) from the returned directory.
fn serving_profiles() -> (Upstreams, Process, TempDir) {
    let dir = temp_dir("exchange");
    let file = dir.join("profiles.json");
    std::fs::write(
        &file,
        r#"{"pipeline":{"profiles":[{"name":"writer","permissions":["contents:write","issues:write"]}]},
            "organization":{"profiles":[{"name":"shared","repositories":["widgets","gears"],"permissions":["contents:read"]}]}}"#,
    )
    .unwrap();
    let (up, p) = world_with(BIN, &[("PROFILES_FILE", file.to_str().unwrap())]);
    (up, p, dir)
}

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn exchanges_a_buildkite_token_for_the_pipeline_default_profile() {
    let (up, p, _profiles) = serving_profiles();
    let r = post_form(&p, FORM, &form(&up.token(), ""));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    let body = r.json();
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "contents:read metadata:read");
    assert_eq!(body["repositories"], serde_json::json!(["acme/widgets"]));
    assert_eq!(body["hashed_token"], hashed_token(token));
    let expires_in = body["expires_in"].as_u64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{expires_in}");
    let audit = p.audit_of(&r);
    assert_eq!(audit["path"], "/oauth/token");
    assert_eq!(audit["vended"]["hashedToken"], hashed_token(token));
}

#[test]
fn scope_narrows_the_permissions_and_is_checked_against_the_profile() {
    let (up, p, _profiles) = serving_profiles();
    let r = post_form(
        &p,
        FORM,
        &form(
            &up.token(),
            "&audience=pipeline%3Awriter&scope=contents%3Aread",
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["scope"], "contents:read metadata:read");
    let minted: Vec<Value> = up.github.mint_bodies();
    assert_eq!(
        minted.last().unwrap()["permissions"],
        serde_json::json!({"contents": "read", "metadata": "read"})
    );
    let r = post_form(
        &p,
        FORM,
        &form(
            &up.token(),
            "&audience=pipeline%3Awriter&scope=pull_requests%3Awrite",
        ),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

#[test]
fn organization_audience_with_a_resource() {
    let (up, p, _profiles) = serving_profiles();
    let ok = post_form(
        &p,
        FORM,
        &form(
            &up.token(),
            "&audience=org%3Ashared&resource=https%3A%2F%2Fgithub.com%2Facme%2Fgears",
        ),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["repositories"], serde_json::json!(["acme/gears"]));
    let all = post_form(&p, FORM, &form(&up.token(), "&audience=org%3Ashared"));
    assert_eq!(
        all.json()["repositories"],
        serde_json::json!(["acme/gears", "acme/widgets"])
    );
    let outside = post_form(
        &p,
        FORM,
        &form(
            &up.token(),
            "&audience=org%3Ashared&resource=https%3A%2F%2Fgithub.com%2Facme%2Fcfg",
        ),
    );
    assert_eq!(
        (outside.status, outside.json()["error"].as_str()),
        (400, Some("invalid_target"))
    );
    let not_pipeline_repo = post_form(
        &p,
        FORM,
        &form(
            &up.token(),
            "&resource=https%3A%2F%2Fgithub.com%2Facme%2Fgears",
        ),
    );
    assert_eq!(
        (
            not_pipeline_repo.status,
            not_pipeline_repo.json()["error"].as_str()
        ),
        (400, Some("invalid_target"))
    );
}

#[test]
fn errors_follow_rfc_6749_and_8693() {
    let (up, p, _profiles) = serving_profiles();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "json body",
            "application/json".into(),
            400,
            "invalid_request",
        ),
        ("repeated parameter", FORM.into(), 400, "invalid_request"),
        ("wrong grant", FORM.into(), 400, "unsupported_grant_type"),
        ("expired subject token", FORM.into(), 400, "invalid_request"),
        ("unknown profile", FORM.into(), 400, "invalid_target"),
        ("actor token", FORM.into(), 400, "invalid_request"),
    ];
    let expired = up.token_with(|c| {
        c["iat"] = Value::from(1_000_000);
        c["nbf"] = Value::from(1_000_000);
        c["exp"] = Value::from(1_000_300);
    });
    for (name, content_type, status, error) in cases {
        let body = match name {
            "repeated parameter" => {
                form(&up.token(), "&audience=org%3Ashared&audience=org%3Ashared")
            }
            "wrong grant" => format!(
                "grant_type=client_credentials&subject_token={}&subject_token_type={JWT_TYPE}",
                up.token()
            ),
            "expired subject token" => form(&expired, ""),
            "unknown profile" => form(&up.token(), "&audience=org%3Anope"),
            "actor token" => form(&up.token(), "&actor_token=x&actor_token_type=y"),
            _ => form(&up.token(), ""),
        };
        let r = post_form(&p, &content_type, &body);
        assert_eq!(r.status, status, "{name}: {}", r.text());
        let json = r.json();
        assert_eq!(json["error"], error, "{name}");
        assert!(json["error_description"].is_string(), "{name}");
        assert!(!r.text().contains("nope"), "{name}: no input echoed");
    }
    assert_eq!(up.github.mints(), 0);
}
