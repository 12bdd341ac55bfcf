//! A chinmina-bridge YAML profile file through the running kitebridge: served by the GitHub
//! stand-in through `GITHUB_ORG_PROFILE`, loaded, and vending (and denying, and quarantining)
//! as its `valuePattern` rules say; `profiles check` on YAML; the start-up warnings for
//! chinmina-bridge variables kitebridge does not read.
#![forbid(unsafe_code)]

mod support;

use serde_json::json;
use std::process::Command;
use std::time::Duration;
use support::kitebridge::{GIT_BODY, Process, Upstreams, assert_json_error, audit_error, vended};
use support::util::{fixture, poll_until, sha256_hex};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

fn served_yaml() -> Vec<u8> {
    std::fs::read(fixture("profiles/chinmina/served.yaml")).unwrap()
}

#[test]
fn a_chinmina_yaml_file_from_github_vends_by_its_patterns() {
    let up = Upstreams::start();
    let yaml = served_yaml();
    up.github.set_contents(&yaml);
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[("GITHUB_ORG_PROFILE", "acme:cfg:profiles/chinmina.yaml")]),
    );
    let jwt = up.token();

    // `widgets` matches `widg(et|it)s`.
    let r = p.token("/organization/token/shared-read", &jwt);
    vended(&r);
    assert_eq!(r.json()["repositories"], json!(["acme/cfg", "acme/gears"]));
    let audit = p.audit_of(&r);
    assert_eq!(audit["profileDigest"], sha256_hex(&yaml));
    assert_eq!(
        audit["matches"],
        json!([{"claim": "pipeline_slug", "value": "widgets"}])
    );

    // The pattern is anchored: `widgets-2` is not admitted.
    let other = up.token_with(|c| c["pipeline_slug"] = json!("widgets-2"));
    let denied = p.token("/organization/token/shared-read", &other);
    assert_json_error(&denied, 403, "forbidden");
    assert_eq!(
        audit_error(&p.audit_of(&denied)),
        r#"profile shared-read: pipeline_slug "widgets-2" does not match valuePattern "widg(et|it)s""#
    );
    let denied = p.token("/organization/token/release-publisher", &jwt);
    assert_json_error(&denied, 403, "forbidden");

    // A pattern that does not compile quarantines its profile alone, naming path and place.
    let r = p.token("/organization/token/broken-pattern", &jwt);
    assert_json_error(&r, 404, "profile unavailable");
    let reason = audit_error(&p.audit_of(&r));
    assert!(
        reason.contains("$.organization.profiles[3].match[0].valuePattern (line 32, column 11)")
            && reason.contains("pattern does not compile"),
        "{reason}"
    );

    let r = p.token("/organization/token/issue-reader", &jwt);
    vended(&r);
    assert_eq!(r.json()["repositorySelection"], "all");

    // Pipeline profile: `main` matches `main|master`, on both token routes.
    let r = p.token("/token/pr-commenter", &jwt);
    vended(&r);
    assert_eq!(
        r.json()["permissions"],
        json!(["contents:read", "metadata:read", "pull_requests:write"])
    );
    let git = p.git("/git-credentials/pr-commenter", &jwt, GIT_BODY);
    assert_eq!(git.status, 200, "{}", git.text());
    assert!(git.text().contains("password="), "{}", git.text());
    let feature = up.token_with(|c| c["build_branch"] = json!("mainline"));
    assert_json_error(&p.token("/token/pr-commenter", &feature), 403, "forbidden");

    assert!(
        p.stderr()
            .contains("organization profile \"broken-pattern\" unavailable"),
        "the quarantine is logged:\n{}",
        p.stderr()
    );
}

#[test]
fn a_broken_yaml_file_is_not_loaded_and_says_where() {
    let up = Upstreams::start();
    up.github.set_contents(
        b"pipeline:\n  profiles:\n    - name: &a x\n      permissions: [contents:read]\n",
    );
    let p = Process::spawn_unready(
        BIN,
        &up.env_with(&[("GITHUB_ORG_PROFILE", "acme:cfg:profiles.yaml")]),
    );
    assert!(
        poll_until(Duration::from_secs(10), || p.stderr().contains(
            "invalid yaml: line 3, column 13: anchors (&) are not supported"
        )),
        "{}",
        p.stderr()
    );
    assert_eq!(
        p.get("/healthcheck").status,
        503,
        "not ready without profiles"
    );
}

#[test]
fn profiles_check_reads_yaml() {
    let run = |path: &str| {
        Command::new(BIN)
            .args(["profiles", "check", path])
            .env_clear()
            .output()
            .unwrap()
    };
    let good = fixture("profiles/chinmina/matching.yaml");
    let out = run(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("pipeline:tagged-releases"), "{stdout}");

    let served = fixture("profiles/chinmina/served.yaml");
    let out = run(&served);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a quarantined profile fails the check"
    );
    assert!(
        stderr.contains("(line 32, column 11): pattern does not compile")
            && stderr.contains("organization profile \"broken-pattern\" is unavailable"),
        "{stderr}"
    );
}

#[test]
fn chinmina_variables_are_warned_about_at_start() {
    let up = Upstreams::start();
    let p = Process::spawn(
        BIN,
        &up.env_with(&[
            ("CACHE_TYPE", "valkey"),
            ("VALKEY_ADDRESS", "cache.internal:6379"),
            ("VALKEY_PASSWORD", "valkey-password-not-to-log"),
            (
                "GITHUB_APP_PRIVATE_KEY_ARN",
                "arn:aws:kms:us-east-1:1:key/not-to-log",
            ),
            ("OBSERVE_ENABLED", "true"),
            (
                "CACHE_ENCRYPTION_KEYSET_URI",
                "aws-secretsmanager://not-to-log",
            ),
        ]),
    );
    let stderr = p.stderr();
    for line in [
        "CACHE_TYPE is a chinmina-bridge variable kitebridge does not read: use CACHE_URL",
        "VALKEY_ADDRESS is a chinmina-bridge variable kitebridge does not read: use CACHE_URL",
        "VALKEY_PASSWORD is a chinmina-bridge variable kitebridge does not read: use CACHE_PASSWORD",
        "GITHUB_APP_PRIVATE_KEY_ARN is a chinmina-bridge variable kitebridge does not read: KMS \
         signing is not supported: use a systemd credential",
        "OBSERVE_ENABLED is a chinmina-bridge variable kitebridge does not read: OpenTelemetry is \
         not supported: use /metrics",
        "CACHE_ENCRYPTION_KEYSET_URI is a chinmina-bridge variable kitebridge does not read: use \
         CACHE_ENCRYPTION_KEYS",
    ] {
        assert!(stderr.contains(line), "{line:?} not in:\n{stderr}");
    }
    assert!(
        !stderr.contains("not-to-log"),
        "a value was logged:\n{stderr}"
    );
    assert!(stderr.matches("WARN").count() >= 6, "{stderr}");
    // Warnings, not errors: the server serves.
    assert_eq!(p.get("/healthcheck").status, 200);
}
