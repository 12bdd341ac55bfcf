//! Profiles through the running kitebridge process (profile files and the organization routes):
//! named pipeline and organization profiles, match rules, quarantined and unknown profiles,
//! prefixes, `repository-scope`, the "not mine" answers, authorization before the token cache
//! (GHSA-4c7c-j34f-h9q6), generations (file watcher, broken file, swaps under load, the cache
//! namespaced by digest), readiness before the first load, a GitHub-hosted profile file, the
//! audit record, and the `profiles check` / `profiles explain` commands.
#![forbid(unsafe_code)]

mod support;

use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::kitebridge::{
    GIT_BODY, HttpResponse, ORG, PIPELINE, Process, Upstreams, assert_json_error, audit_error,
    vended,
};
use support::util::{fixture, poll_until, sha256_hex, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// A pipeline profile the swap test's first version has and its second lacks, and vice versa.
const ALPHA: &str = r#"{"organization":{"profiles":[
  {"name":"alpha","repositories":["widgets"],"permissions":["contents:read"]}]}}"#;
const BETA: &str = r#"{"organization":{"profiles":[
  {"name":"beta","repositories":["widgets"],"permissions":["contents:read"]}]}}"#;

fn profiles_fixture(name: &str) -> PathBuf {
    fixture(&format!("profiles/{name}")).into()
}

/// The stand-ins and a ready kitebridge serving `tests/fixtures/profiles/server.json`.
fn serving_fixture() -> (Upstreams, Process) {
    let up = Upstreams::start();
    let file = profiles_fixture("server.json");
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[("PROFILES_FILE", file.to_str().unwrap())]),
    );
    (up, p)
}

/// Replaces `path` by `bytes` in one step (write aside, rename over), so the watcher never
/// reads half a file.
fn replace_file(path: &Path, bytes: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, bytes).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The "not mine" answer: 200 with an empty body.
fn assert_not_mine(r: &HttpResponse) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty(), "expected an empty body: {:?}", r.text());
    assert_eq!(r.header("Content-Length"), Some("0"));
}

/// The `password` of a 200 git-credential body.
fn git_password(r: &HttpResponse) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap_or_else(|| panic!("no password line: {text:?}"));
    line.to_owned()
}

/// The last mint request body the GitHub stand-in received.
fn last_mint_body(up: &Upstreams) -> Value {
    up.github.mint_bodies().pop().expect("a mint request")
}

/// `repositories` of a JSON token body as a set.
fn repositories_of(r: &HttpResponse) -> BTreeSet<String> {
    r.json()["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn set_of(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

/// The mint body's `repositories` as a set (`None` when the key is absent).
fn minted_repositories(body: &Value) -> Option<BTreeSet<String>> {
    body.get("repositories").map(|list| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Pipeline profiles
// ---------------------------------------------------------------------------------------------

#[test]
fn named_pipeline_profile_on_token_and_git_routes() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    let r = p.token("/token/pr-commenter", &jwt);
    let token = vended(&r);
    let body = r.json();
    assert_eq!(body["profile"], "pipeline:pr-commenter");
    assert_eq!(body["repositoryUrl"], "https://github.com/acme/widgets");
    assert_eq!(body["repositories"], json!(["acme/widgets"]));
    assert_eq!(body["repositorySelection"], "selected");
    assert_eq!(
        body["permissions"],
        json!(["contents:read", "metadata:read", "pull_requests:write"]),
        "the profile's permissions, metadata:read added, sorted"
    );
    assert_eq!(
        up.github.mint_bodies(),
        vec![json!({
            "repositories": ["widgets"],
            "permissions": {"contents": "read", "metadata": "read", "pull_requests": "write"}
        })],
        "GitHub is asked for exactly the pipeline's repository and the profile's permissions"
    );

    let git = p.git("/git-credentials/pr-commenter", &jwt, GIT_BODY);
    assert_eq!(git.header("Content-Type"), Some("text/plain"));
    assert_eq!(
        git_password(&git),
        token,
        "same profile, same pipeline: cached"
    );
    assert!(git.text().contains("username=x-access-token\n"));
    assert_eq!(up.github.mints(), 1);

    // The default profile is another cache entry with other permissions.
    let default = p.token("/token", &jwt);
    assert_ne!(vended(&default), token);
    assert_eq!(
        last_mint_body(&up),
        json!({"repositories": ["widgets"], "permissions": {"contents": "read", "metadata": "read"}})
    );

    let other_repo = "protocol=https\nhost=github.com\npath=acme/gears.git";
    assert_not_mine(&p.git("/git-credentials/pr-commenter", &jwt, other_repo));
    assert_eq!(up.github.mints(), 2);
}

#[test]
fn pipeline_prefixes_are_accepted_and_org_is_refused() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    let first = vended(&p.token("/token/pipeline:pr-commenter", &jwt));
    let r = p.token("/token/repo:pr-commenter", &jwt);
    assert_eq!(
        vended(&r),
        first,
        "the same profile after stripping the prefix"
    );
    assert_eq!(r.json()["profile"], "pipeline:pr-commenter");
    let git = p.git("/git-credentials/repo:pr-commenter", &jwt, GIT_BODY);
    assert_eq!(git_password(&git), first);
    assert_eq!(up.github.mints(), 1);

    let r = p.token("/token/org:shared", &jwt);
    assert_json_error(&r, 400, "malformed profile reference");
    let git = p.git("/git-credentials/org:shared", &jwt, GIT_BODY);
    assert_eq!(git.status, 400, "{}", git.text());
    assert_eq!(up.github.mints(), 1);
}

#[test]
fn match_rules_admit_and_deny_naming_the_failed_rule() {
    let (up, p) = serving_fixture();
    let admitted = p.token("/token/release", &up.token());
    vended(&admitted);
    assert_eq!(
        admitted.json()["permissions"],
        json!(["contents:write", "metadata:read"])
    );
    let audit = p.audit_of(&admitted);
    assert_eq!(
        audit["matches"],
        json!([{"claim": "build_branch", "value": "main"}])
    );
    assert_eq!(
        last_mint_body(&up)["permissions"],
        json!({"contents": "write", "metadata": "read"})
    );

    let dev = up.token_with(|c| c["build_branch"] = json!("dev\"x"));
    let denied = p.token("/token/release", &dev);
    assert_json_error(&denied, 403, "forbidden");
    assert!(!denied.text().contains("dev"), "no claim value echoed");
    let audit = p.audit_of(&denied);
    assert_eq!(audit["status"], 403);
    assert_eq!(audit["authorized"], false);
    assert_eq!(audit["vended"], Value::Null);
    assert_eq!(
        audit_error(&audit),
        r#"profile release: build_branch "dev\"x" does not match value "main""#,
        "the failed rule, the claim and its escaped value"
    );

    let git = p.git("/git-credentials/release", &dev, GIT_BODY);
    assert_eq!(git.status, 403, "{}", git.text());
    assert_eq!(git.text(), "forbidden\n");

    // `build_tag` is null in the fixture claims: an absent claim never matches.
    let denied = p.token("/token/tagged", &up.token());
    assert_json_error(&denied, 403, "forbidden");
    assert_eq!(
        audit_error(&p.audit_of(&denied)),
        r#"profile tagged: build_tag is absent or null, so valueIn ["v1", "v2"] cannot match"#
    );
    assert_eq!(up.github.mints(), 1, "denials mint nothing");
    let tagged = up.token_with(|c| c["build_tag"] = json!("v2"));
    let r = p.token("/token/tagged", &tagged);
    vended(&r);
    assert_eq!(
        p.audit_of(&r)["matches"],
        json!([{"claim": "build_tag", "value": "v2"}])
    );
}

#[test]
fn unavailable_and_unknown_profiles_are_404() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    let r = p.token("/token/broken", &jwt);
    assert_json_error(&r, 404, "profile unavailable");
    let error = audit_error(&p.audit_of(&r));
    assert!(
        error.starts_with("profile broken: unavailable: ") && error.contains("fly"),
        "the quarantine reason is on the audit record: {error}"
    );
    let git = p.git("/git-credentials/broken", &jwt, GIT_BODY);
    assert_eq!(git.status, 404);
    assert_eq!(git.text(), "profile unavailable\n");
    assert!(audit_error(&p.audit_of(&git)).contains("fly"));
    assert_eq!(
        p.stderr()
            .matches(r#"profile "broken" unavailable"#)
            .count(),
        1,
        "the reason is logged once per load, not per request; stderr:\n{}",
        p.stderr()
    );

    let r = p.token("/organization/token/broken-org", &jwt);
    assert_json_error(&r, 404, "profile unavailable");
    assert!(
        audit_error(&p.audit_of(&r)).starts_with("profile broken-org: unavailable: "),
        "{}",
        p.audit_of(&r)
    );

    let r = p.token("/token/nonesuch", &jwt);
    assert_json_error(&r, 404, "profile not found");
    assert_eq!(audit_error(&p.audit_of(&r)), "profile nonesuch: not found");
    let r = p.token("/organization/token/nonesuch", &jwt);
    assert_json_error(&r, 404, "profile not found");
    // A name of the other family is not found in this one.
    assert_json_error(
        &p.token("/organization/token/pr-commenter", &jwt),
        404,
        "profile not found",
    );
    assert_json_error(&p.token("/token/shared", &jwt), 404, "profile not found");
    assert_eq!(up.github.mints(), 0);
}

// ---------------------------------------------------------------------------------------------
// Organization profiles: /organization/token
// ---------------------------------------------------------------------------------------------

#[test]
fn organization_named_list_without_and_with_scope() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    let r = p.token("/organization/token/shared", &jwt);
    let whole = vended(&r);
    let body = r.json();
    assert_eq!(body["organizationSlug"], ORG);
    assert_eq!(body["profile"], "org:shared");
    assert_eq!(body["repositoryUrl"], "");
    assert_eq!(body["repositorySelection"], "selected");
    assert_eq!(
        body["permissions"],
        json!(["contents:read", "metadata:read"])
    );
    assert_eq!(body["expiresAt"], body["expiry"]);
    assert_eq!(repositories_of(&r), set_of(&["acme/widgets", "acme/gears"]));
    let mint = last_mint_body(&up);
    assert_eq!(
        minted_repositories(&mint),
        Some(set_of(&["widgets", "gears"]))
    );
    assert_eq!(
        mint["permissions"],
        json!({"contents": "read", "metadata": "read"})
    );

    let r = p.token("/organization/token/shared?repository-scope=gears", &jwt);
    let narrowed = vended(&r);
    assert_ne!(narrowed, whole, "a narrower token is another cache entry");
    assert_eq!(r.json()["repositories"], json!(["acme/gears"]));
    assert_eq!(last_mint_body(&up)["repositories"], json!(["gears"]));
    assert_eq!(p.audit_of(&r)["requestedRepository"], "gears");
    assert_eq!(up.github.mints(), 2);

    let r = p.token("/organization/token/shared?repository-scope=cfg", &jwt);
    assert_not_mine(&r);
    let audit = p.audit_of(&r);
    assert_eq!(audit["status"], 200);
    assert_eq!(audit["vended"], Value::Null);
    assert_eq!(
        audit_error(&audit),
        "requested repository is not in the profile's list"
    );
    // A valid name of exactly 100 bytes is well-formed: not in the list, so not mine.
    let hundred = "a".repeat(100);
    assert_not_mine(&p.token(
        &format!("/organization/token/shared?repository-scope={hundred}"),
        &jwt,
    ));
    assert_eq!(up.github.mints(), 2, "not-mine answers mint nothing");
}

#[test]
fn organization_all_repositories_and_caller_scoped() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    let r = p.token("/organization/token/everything", &jwt);
    vended(&r);
    assert_eq!(r.json()["repositorySelection"], "all");
    assert_eq!(r.json()["repositories"], json!([]));
    assert_eq!(
        r.json()["permissions"],
        json!(["issues:read", "metadata:read"])
    );
    assert_eq!(
        last_mint_body(&up),
        json!({"permissions": {"issues": "read", "metadata": "read"}}),
        "an all-repositories mint names no repositories"
    );

    let r = p.token("/organization/token/everything?repository-scope=cfg", &jwt);
    vended(&r);
    assert_eq!(r.json()["repositorySelection"], "selected");
    assert_eq!(r.json()["repositories"], json!(["acme/cfg"]));
    assert_eq!(last_mint_body(&up)["repositories"], json!(["cfg"]));

    let r = p.token("/organization/token/any-one", &jwt);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"].is_string());
    assert_eq!(up.github.mints(), 2);

    let r = p.token(
        "/organization/token/org:any-one?repository-scope=widgets",
        &jwt,
    );
    vended(&r);
    assert_eq!(r.json()["profile"], "org:any-one");
    assert_eq!(r.json()["repositories"], json!(["acme/widgets"]));
    assert_eq!(
        last_mint_body(&up),
        json!({"repositories": ["widgets"], "permissions": {"contents": "read", "metadata": "read"}})
    );
    assert_eq!(up.github.mints(), 3);
}

#[test]
fn malformed_repository_scope_is_400() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    let long = "a".repeat(101);
    let queries = [
        "repository-scope=a/b".to_owned(),
        "repository-scope=a%2Fb".to_owned(),
        "repository-scope=".to_owned(),
        format!("repository-scope={long}"),
        "repository-scope=a%20b".to_owned(),
        "repository-scope=a+b".to_owned(),
        "repository-scope=a%09b".to_owned(),
        "repository-scope=gears&repository-scope=gears".to_owned(),
    ];
    for query in &queries {
        for profile in ["shared", "everything", "any-one"] {
            let path = format!("/organization/token/{profile}?{query}");
            let r = p.token(&path, &jwt);
            assert_json_error(&r, 400, "malformed query");
            assert!(
                audit_error(&p.audit_of(&r)).starts_with("query: "),
                "{path}: {}",
                p.audit_of(&r)
            );
        }
    }
    assert_eq!(up.github.mints(), 0);
}

#[test]
fn organization_prefixes() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    for prefixed in ["pipeline:shared", "repo:shared"] {
        let r = p.token(&format!("/organization/token/{prefixed}"), &jwt);
        assert_json_error(&r, 400, "malformed profile reference");
        let body = "protocol=https\nhost=github.com\npath=acme/gears.git";
        let git = p.git(
            &format!("/organization/git-credentials/{prefixed}"),
            &jwt,
            body,
        );
        assert_eq!(git.status, 400, "{prefixed}: {}", git.text());
    }
    assert_eq!(up.github.mints(), 0);
    let r = p.token("/organization/token/org:shared", &jwt);
    vended(&r);
    assert_eq!(r.json()["profile"], "org:shared");
    let git = p.git(
        "/organization/git-credentials/org:shared",
        &jwt,
        &git_body("acme/gears.git"),
    );
    git_password(&git);
    assert_eq!(p.audit_of(&git)["profile"], "org:shared");
}

// ---------------------------------------------------------------------------------------------
// Organization profiles: /organization/git-credentials
// ---------------------------------------------------------------------------------------------

fn git_body(path: &str) -> String {
    format!("protocol=https\nhost=github.com\npath={path}")
}

#[test]
fn organization_git_credentials() {
    let (up, p) = serving_fixture();
    let jwt = up.token();
    let r = p.git(
        "/organization/git-credentials/shared",
        &jwt,
        &git_body("acme/gears.git"),
    );
    let token = git_password(&r);
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert!(
        r.text()
            .starts_with("protocol=https\nhost=github.com\npath=acme/gears.git\n")
    );
    assert_eq!(last_mint_body(&up)["repositories"], json!(["gears"]));
    assert_eq!(p.audit_of(&r)["requestedRepository"], "acme/gears");

    // The owner is compared case-insensitively with the installation's account.
    let r = p.git(
        "/organization/git-credentials/shared",
        &jwt,
        &git_body("ACME/gears.git"),
    );
    assert_eq!(git_password(&r), token, "same repository, same cache entry");
    assert_eq!(up.github.mints(), 1);

    for not_mine in ["other/gears.git", "acme/cfg.git", "acmex/widgets"] {
        let r = p.git(
            "/organization/git-credentials/shared",
            &jwt,
            &git_body(not_mine),
        );
        assert_not_mine(&r);
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert!(p.audit_of(&r)["error"].is_string(), "{not_mine}");
    }
    assert_eq!(up.github.mints(), 1);

    let r = p.git(
        "/organization/git-credentials/everything",
        &jwt,
        &git_body("acme/cfg.git"),
    );
    git_password(&r);
    assert_eq!(
        last_mint_body(&up),
        json!({"repositories": ["cfg"], "permissions": {"issues": "read", "metadata": "read"}}),
        "all-repositories: narrowed to the requested repository"
    );
    let r = p.git(
        "/organization/git-credentials/any-one",
        &jwt,
        &git_body("acme/widgets.git"),
    );
    git_password(&r);
    assert_eq!(last_mint_body(&up)["repositories"], json!(["widgets"]));
    assert_not_mine(&p.git(
        "/organization/git-credentials/everything",
        &jwt,
        &git_body("elsewhere/cfg.git"),
    ));
    assert_eq!(up.github.mints(), 3);
}

// ---------------------------------------------------------------------------------------------
// Authorization before cache; the audit record
// ---------------------------------------------------------------------------------------------

#[test]
fn match_rules_are_checked_before_the_cache() {
    let (up, p) = serving_fixture();
    up.buildkite
        .set_pipeline(ORG, "gadgets", "git@github.com:acme/gears.git");
    let a = up.token();
    let warmed = p.token("/organization/token/deploy", &a);
    let token = vended(&warmed);
    assert_eq!(up.github.mints(), 1);
    assert_eq!(
        vended(&p.token("/organization/token/deploy", &a)),
        token,
        "A is served from the cache"
    );

    let b = up.signer.token(&up.claims("gadgets"));
    let r = p.token("/organization/token/deploy", &b);
    assert_json_error(&r, 403, "forbidden");
    assert!(!r.text().contains(&token));
    let error = audit_error(&p.audit_of(&r));
    assert!(
        error.contains(r#"pipeline_slug "gadgets" does not match valueGlob "widg*""#),
        "{error}"
    );
    let git = p.git(
        "/organization/git-credentials/deploy",
        &b,
        &git_body("acme/gears.git"),
    );
    assert_eq!(git.status, 403, "{}", git.text());
    assert!(!git.text().contains(&token));

    // Same pipeline, same cache key for a pipeline profile, but a branch the rules refuse.
    vended(&p.token("/token/release", &a));
    let dev = up.token_with(|c| c["build_branch"] = json!("dev"));
    assert_json_error(&p.token("/token/release", &dev), 403, "forbidden");
    assert_eq!(
        p.git("/git-credentials/release", &dev, GIT_BODY).status,
        403
    );
    assert_eq!(up.github.mints(), 2, "no token minted or served for B");
}

#[test]
fn audit_record_on_success_names_profile_digest_and_matches() {
    let (up, p) = serving_fixture();
    let digest = sha256_hex(&std::fs::read(profiles_fixture("server.json")).unwrap());
    let r = p.token("/organization/token/deploy", &up.token());
    let token = vended(&r);
    let audit = p.audit_of(&r);
    assert_eq!(audit["status"], 200);
    assert_eq!(audit["authorized"], true);
    assert_eq!(audit["profile"], "org:deploy");
    assert_eq!(audit["profileDigest"], digest.as_str());
    assert_eq!(
        audit["matches"],
        json!([
            {"claim": "pipeline_slug", "value": PIPELINE},
            {"claim": "build_branch", "value": "main"}
        ])
    );
    assert_eq!(audit["vended"]["repositories"], json!(["acme/gears"]));
    assert_eq!(
        audit["vended"]["permissions"],
        json!(["contents:write", "metadata:read"])
    );
    assert_eq!(audit["error"], Value::Null);
    assert!(
        !p.audit_text().contains(&token),
        "no token in the audit log"
    );

    let r = p.token("/token/pr-commenter", &up.token());
    vended(&r);
    let audit = p.audit_of(&r);
    assert_eq!(audit["profile"], "pipeline:pr-commenter");
    assert_eq!(audit["profileDigest"], digest.as_str());
    assert_eq!(audit["matches"], json!([]), "no rules, no matches");
    assert_eq!(audit["requestedRepository"], "acme/widgets");
}

// ---------------------------------------------------------------------------------------------
// Generations
// ---------------------------------------------------------------------------------------------

/// A kitebridge serving the local file `dir/profiles.json`, which holds `bytes` at start.
fn serving_file(bytes: &[u8]) -> (Upstreams, Process, PathBuf) {
    let up = Upstreams::start();
    let file = temp_dir("profiles").keep().join("profiles.json");
    std::fs::write(&file, bytes).unwrap();
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[("PROFILES_FILE", file.to_str().unwrap())]),
    );
    (up, p, file)
}

#[test]
fn a_changed_file_is_a_new_generation_and_a_broken_one_is_kept_out() {
    let (up, p, file) = serving_file(ALPHA.as_bytes());
    let jwt = up.token();
    let r = p.token("/organization/token/alpha", &jwt);
    let first = vended(&r);
    assert_eq!(
        p.audit_of(&r)["profileDigest"],
        sha256_hex(ALPHA.as_bytes())
    );
    assert_eq!(vended(&p.token("/organization/token/alpha", &jwt)), first);
    assert_eq!(up.github.mints(), 1);

    // The second version keeps alpha unchanged and adds beta.
    let both = r#"{"organization":{"profiles":[
      {"name":"alpha","repositories":["widgets"],"permissions":["contents:read"]},
      {"name":"beta","repositories":["widgets"],"permissions":["contents:read"]}]}}"#;
    replace_file(&file, both.as_bytes());
    assert!(
        poll_until(Duration::from_secs(8), || p
            .token("/organization/token/beta", &jwt)
            .status
            == 200),
        "the new file was not picked up; stderr:\n{}",
        p.stderr()
    );
    let r = p.token("/organization/token/alpha", &jwt);
    let second = vended(&r);
    let audit = p.audit_of(&r);
    assert_eq!(audit["profileDigest"], sha256_hex(both.as_bytes()));
    assert_eq!(audit["vended"]["cache"], "miss");
    assert_ne!(
        second, first,
        "a new generation never serves the old one's token"
    );
    let mints = up.github.mints();

    // A file with an unknown key fails whole: the previous generation stays.
    let broken = r#"{"organization":{"profiles":[
      {"name":"gamma","repositories":["widgets"],"permissions":["contents:read"],"colour":"red"}]}}"#;
    replace_file(&file, broken.as_bytes());
    let kept = format!("keeping digest {}", sha256_hex(both.as_bytes()));
    assert!(
        poll_until(Duration::from_secs(8), || p.stderr().contains(&kept)),
        "the broken file was not reported; stderr:\n{}",
        p.stderr()
    );
    assert!(p.stderr().contains("colour"), "the unknown key is named");
    let r = p.token("/organization/token/alpha", &jwt);
    assert_eq!(vended(&r), second, "same generation, same cache entry");
    assert_eq!(p.audit_of(&r)["profileDigest"], sha256_hex(both.as_bytes()));
    assert_eq!(p.token("/organization/token/beta", &jwt).status, 200);
    assert_json_error(
        &p.token("/organization/token/gamma", &jwt),
        404,
        "profile not found",
    );
    assert_eq!(up.github.mints(), mints);
}

/// What one request of the swap test saw.
struct Seen {
    profile: &'static str,
    response: HttpResponse,
}

#[test]
fn generation_swaps_under_load_answer_consistently() {
    let (up, p, file) = serving_file(ALPHA.as_bytes());
    let (alpha, beta) = (sha256_hex(ALPHA.as_bytes()), sha256_hex(BETA.as_bytes()));
    let p = Arc::new(p);
    let stop = Arc::new(AtomicBool::new(false));
    let jwt = up.token();
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (p, stop, jwt) = (Arc::clone(&p), Arc::clone(&stop), jwt.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut n = i;
                while !stop.load(Ordering::SeqCst) {
                    let profile = if n % 2 == 0 { "alpha" } else { "beta" };
                    n += 1;
                    let response = p.token(&format!("/organization/token/{profile}"), &jwt);
                    seen.push(Seen { profile, response });
                    std::thread::sleep(Duration::from_millis(30));
                }
                seen
            })
        })
        .collect();
    for bytes in [BETA, ALPHA, BETA, ALPHA] {
        std::thread::sleep(Duration::from_millis(2500));
        replace_file(&file, bytes.as_bytes());
    }
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<Seen> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();

    let audit: HashMap<String, Value> = p
        .audit(seen.len())
        .into_iter()
        .map(|line| (line["requestId"].as_str().unwrap().to_owned(), line))
        .collect();
    let mut digests = BTreeSet::new();
    for Seen { profile, response } in &seen {
        let id = response.header("X-Request-Id").unwrap();
        let line = &audit[id];
        let digest = line["profileDigest"].as_str().unwrap();
        digests.insert(digest.to_owned());
        let has = match digest {
            d if d == alpha => "alpha",
            d if d == beta => "beta",
            other => panic!("unknown digest {other}"),
        };
        if *profile == has {
            assert_eq!(response.status, 200, "{profile} in its generation: {line}");
            assert_eq!(line["profile"], format!("org:{profile}"));
        } else {
            assert_json_error(response, 404, "profile not found");
        }
    }
    assert_eq!(
        digests,
        BTreeSet::from([alpha, beta]),
        "both generations served"
    );
    assert!(seen.len() >= 200, "only {} requests", seen.len());
    // One mint per generation and profile (coalesced), never one per request.
    assert!(
        up.github.mints() <= 5,
        "{} mints for 5 generations",
        up.github.mints()
    );
}

#[test]
fn not_ready_until_the_first_profile_file_loads() {
    let up = Upstreams::start();
    let dir = temp_dir("profiles-late");
    let file = dir.join("profiles.json");
    let p = Process::spawn_unready(
        BIN,
        &up.env_with_no_rate_limits(&[("PROFILES_FILE", file.to_str().unwrap())]),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let health = p.get("/healthcheck");
    assert_eq!(health.status, 503);
    assert_eq!(health.text(), "not ready");
    let jwt = up.token();
    assert_eq!(p.token("/token", &jwt).status, 503);
    assert_eq!(p.token("/organization/token/alpha", &jwt).status, 503);
    assert_eq!(p.git("/git-credentials", &jwt, GIT_BODY).status, 503);
    assert_eq!(up.github.mints(), 0);

    std::fs::write(&file, ALPHA).unwrap();
    p.wait_ready(Duration::from_secs(15));
    let r = p.token("/organization/token/alpha", &jwt);
    vended(&r);
    assert_eq!(
        p.audit_of(&r)["profileDigest"],
        sha256_hex(ALPHA.as_bytes())
    );
}

// ---------------------------------------------------------------------------------------------
// A profile file hosted on GitHub
// ---------------------------------------------------------------------------------------------

fn serving_github(up: &Upstreams) -> Process {
    Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[
            ("GITHUB_ORG_PROFILE", "acme:cfg:profiles.json"),
            ("PROFILES_REFRESH_SECS", "10"),
        ]),
    )
}

#[test]
fn github_hosted_profiles_raw_form_and_refresh() {
    let up = Upstreams::start();
    up.github.set_contents(ALPHA.as_bytes());
    let p = serving_github(&up);
    let jwt = up.token();
    let r = p.token("/organization/token/alpha", &jwt);
    vended(&r);
    assert_eq!(
        p.audit_of(&r)["profileDigest"],
        sha256_hex(ALPHA.as_bytes())
    );
    assert_json_error(
        &p.token("/organization/token/beta", &jwt),
        404,
        "profile not found",
    );

    up.github.set_contents(BETA.as_bytes());
    assert!(
        poll_until(Duration::from_secs(25), || p
            .token("/organization/token/beta", &jwt)
            .status
            == 200),
        "the changed file was not fetched; stderr:\n{}",
        p.stderr()
    );
    let r = p.token("/organization/token/beta", &jwt);
    vended(&r);
    assert_eq!(p.audit_of(&r)["profileDigest"], sha256_hex(BETA.as_bytes()));
    assert_json_error(
        &p.token("/organization/token/alpha", &jwt),
        404,
        "profile not found",
    );
}

#[test]
fn github_hosted_profiles_base64_form() {
    let up = Upstreams::start();
    up.github.set_raw_media_type(false);
    let bytes = std::fs::read(profiles_fixture("server.json")).unwrap();
    assert!(bytes.len() > 100, "long enough for several base64 lines");
    up.github.set_contents(&bytes);
    let p = serving_github(&up);
    let r = p.token("/token/pr-commenter", &up.token());
    vended(&r);
    assert_eq!(p.audit_of(&r)["profileDigest"], sha256_hex(&bytes));
    assert_eq!(
        r.json()["permissions"],
        json!(["contents:read", "metadata:read", "pull_requests:write"])
    );
}

// ---------------------------------------------------------------------------------------------
// `kitebridge profiles check` and `kitebridge profiles explain`
// ---------------------------------------------------------------------------------------------

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_clear().output().unwrap()
}

/// The README's example profile file with `edit` applied, written to a temporary file.
fn example_variant(edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut doc: Value =
        serde_json::from_slice(&std::fs::read(profiles_fixture("example.json")).unwrap()).unwrap();
    edit(&mut doc);
    let path = temp_dir("check").keep().join("profiles.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    path
}

#[test]
fn profiles_check_accepts_the_example_and_names_each_problem_path() {
    let example = profiles_fixture("example.json");
    let out = run(&["profiles", "check", example.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("org:deploy"), "{stdout}");

    type Edit = fn(&mut Value);
    let variants: [(Edit, &str); 4] = [
        (
            |d| {
                let rule = &mut d["pipeline"]["profiles"][1]["match"][0];
                let value = rule["value"].take();
                let rule = rule.as_object_mut().unwrap();
                rule.remove("value");
                rule.insert("valueRegex".into(), value);
            },
            "$.pipeline.profiles[1].match[0].valueRegex",
        ),
        (
            |d| {
                let org = d["organization"].take();
                let doc = d.as_object_mut().unwrap();
                doc.remove("organization");
                doc.insert("organisation".into(), org);
            },
            "$.organisation",
        ),
        (
            |d| d["pipeline"]["profiles"][0]["repositories"] = json!(["widgets"]),
            "$.pipeline.profiles[0].repositories",
        ),
        (
            |d| {
                let copy = d["organization"]["profiles"][1].clone();
                d["organization"]["profiles"]
                    .as_array_mut()
                    .unwrap()
                    .push(copy);
            },
            "$.organization.profiles[4].name",
        ),
    ];
    for (edit, path) in variants {
        let file = example_variant(edit);
        let out = run(&["profiles", "check", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path}: accepted");
        assert!(
            stderr.contains(&format!("{path}:")),
            "{path} not in:\n{stderr}"
        );
    }
}

#[test]
fn profiles_check_reports_both_duplicates() {
    let file = example_variant(|d| {
        let copy = d["organization"]["profiles"][1].clone();
        d["organization"]["profiles"]
            .as_array_mut()
            .unwrap()
            .push(copy);
    });
    let out = run(&["profiles", "check", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for path in [
        "$.organization.profiles[1].name",
        "$.organization.profiles[4].name",
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("{path} not in:\n{stderr}"));
        assert!(line.contains("duplicate"), "{line}");
        assert!(line.contains("deploy"), "{line}");
    }
}

#[test]
fn profiles_explain_prints_each_rule_and_the_verdict() {
    let dir = temp_dir("explain");
    let example = profiles_fixture("example.json");
    let explain = |claims: Value| -> (bool, String) {
        let path = dir.join("claims.json");
        std::fs::write(&path, claims.to_string()).unwrap();
        let out = run(&[
            "profiles",
            "explain",
            "--profile",
            "org:deploy",
            "--claims",
            path.to_str().unwrap(),
            "--profiles",
            example.to_str().unwrap(),
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (ok, text) = explain(json!({"pipeline_slug": "api-prod", "build_branch": "main"}));
    assert!(ok, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"profile: org:deploy"), "{text}");
    assert!(
        lines.contains(
            &r#"rule 1 of 2: pipeline_slug valueGlob "*-prod": holds: pipeline_slug is "api-prod""#
        ),
        "{text}"
    );
    assert!(
        lines.contains(&r#"rule 2 of 2: build_branch value "main": holds: build_branch is "main""#),
        "{text}"
    );
    assert_eq!(lines.last(), Some(&"verdict: admitted"), "{text}");

    let (ok, text) = explain(json!({"pipeline_slug": "api-prod", "build_branch": "dev"}));
    assert!(!ok, "a denied verdict exits 1: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.contains(
            &r#"rule 2 of 2: build_branch value "main": FAILS: build_branch "dev" does not match value "main""#
        ),
        "{text}"
    );
    let verdict = lines.last().unwrap();
    assert!(verdict.starts_with("verdict: denied"), "{text}");
    assert!(
        verdict.contains("1 of 2 rules failed") && verdict.contains("403"),
        "{text}"
    );
}
