//! Faults through the real binary: answers from GitHub and Buildkite that cannot be used are
//! 502; a verified token whose organization or pipeline slug is not a Buildkite slug is 401
//! before any upstream call; a client that has gone before its mint starts gets no mint.

mod support;

use serde_json::json;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use support::buildkite::BkFail;
use support::github::Fail;
use support::kitebridge::{Process, Upstreams, assert_json_error, audit_error, vended, world};
use support::util::poll_for;

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

#[test]
fn unusable_github_mint_answers_are_502() {
    let (up, p) = world(BIN);
    let expires = kitebridge::rfc3339(support::util::now() + 3600);
    let perms = json!({"contents": "read", "metadata": "read"});
    let answers: &[(&str, u16, Vec<u8>)] = &[
        ("200 where 201 is the contract", 200, json!({"token": "ghs_x", "expires_at": expires, "permissions": perms}).to_string().into_bytes()),
        ("not JSON", 201, b"{\"token\": \"ghs_".to_vec()),
        ("no token", 201, json!({"expires_at": expires, "permissions": perms}).to_string().into_bytes()),
        ("a token that is not a string", 201, json!({"token": 7, "expires_at": expires, "permissions": perms}).to_string().into_bytes()),
        ("a malformed expires_at", 201, json!({"token": "ghs_x", "expires_at": "tomorrow", "permissions": perms, "repository_selection": "selected", "repositories": [{"name": "widgets", "full_name": "acme/widgets"}]}).to_string().into_bytes()),
        ("an HTML page", 201, b"<html>oops</html>".to_vec()),
    ];
    for (what, status, body) in answers {
        up.github.set_fail(Fail::Body(*status, body.clone()));
        let r = p.token("/token", &up.token());
        assert_json_error(&r, 502, "upstream error");
        let audit = p.audit_of(&r);
        assert!(
            audit_error(&audit).starts_with("github answer unusable"),
            "{what}: {audit}"
        );
    }
    up.github.set_fail(Fail::None);
    vended(&p.token("/token", &up.token()));
}

#[test]
fn unusable_buildkite_answers_are_502() {
    let (up, p) = world(BIN);
    let answers: &[(&str, u16, &[u8])] = &[
        ("not JSON", 200, b"{\"repository\": "),
        ("no repository", 200, b"{\"slug\": \"widgets\"}"),
        (
            "a repository that is not a string",
            200,
            b"{\"repository\": 42}",
        ),
        ("an array", 200, b"[]"),
        ("204 where 200 is the contract", 204, b""),
    ];
    for (what, status, body) in answers {
        up.buildkite.set_fail(BkFail::Body(*status, body.to_vec()));
        let r = p.token("/token", &up.token());
        assert_json_error(&r, 502, "upstream error");
        let audit = p.audit_of(&r);
        assert!(
            audit_error(&audit).starts_with("buildkite answer unusable"),
            "{what}: {audit}"
        );
    }
    assert_eq!(
        up.github.mints(),
        0,
        "nothing minted on an unusable pipeline answer"
    );
}

#[test]
fn a_verified_token_with_an_invalid_slug_is_401_before_any_upstream_call() {
    let (up, p) = world(BIN);
    let calls = up.buildkite.calls();
    let long = "x".repeat(101);
    for (claim, value) in [
        ("pipeline_slug", "../widgets"),
        ("pipeline_slug", "wid gets"),
        ("pipeline_slug", long.as_str()),
        ("pipeline_slug", "a/b"),
    ] {
        let jwt = up.token_with(|c| c[claim] = value.into());
        let r = p.token("/token", &jwt);
        assert_eq!(r.status, 401, "{claim}={value:?}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"error": "invalid_token", "error_description": "The access token is invalid"})
        );
        let audit = p.audit_of(&r);
        assert_eq!(
            audit_error(&audit),
            format!("jwt: {claim} is not a buildkite slug"),
            "{audit}"
        );
        assert_eq!(audit["authorized"], false);
    }
    assert_eq!(up.buildkite.calls(), calls, "no Buildkite call");
    assert_eq!(up.github.mints(), 0, "no mint");
}

#[test]
fn a_client_gone_before_its_mint_starts_gets_no_mint() {
    let up = Upstreams::start();
    up.buildkite
        .set_fail(BkFail::Delay(Duration::from_millis(1500)));
    let p = Process::spawn(BIN, &up.env());
    let raw = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 0\r\n\r\n",
        up.token()
    );
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the pipeline lookup is under way
    drop(s); // the client gives up
    let audit = poll_for(Duration::from_secs(10), || p.audit(1).pop())
        .unwrap_or_else(|| panic!("no audit record; stderr:\n{}", p.stderr()));
    assert_eq!(audit["status"], 499, "{audit}");
    assert!(audit_error(&audit).contains("no mint started"), "{audit}");
    assert_eq!(up.buildkite.calls(), 1, "the lookup had started");
    assert_eq!(up.github.mints(), 0, "no mint for a client that has gone");
    up.buildkite.set_fail(BkFail::None);
    vended(&p.token("/token", &up.token()));
}
