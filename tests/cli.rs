//! The `kitebridge` binary: configuration errors (exit 2, every problem at once, before listening),
//! `--version` with the git commit, help, the `profiles` commands' exit statuses and YAML
//! positions, and serving `/healthcheck` on loopback.

mod support;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use support::util::{fixture, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

fn base_command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("JWT_BUILDKITE_ORGANIZATION_SLUG", "acme")
        .env("JWT_AUDIENCE", "chinmina:default")
        .env("GITHUB_APP_ID", "12345")
        .env(
            "GITHUB_APP_PRIVATE_KEY_FILE",
            fixture("test-github-app-key.pkcs1.pem"),
        )
        .env("GITHUB_APP_INSTALLATION_ID", "678")
        .env("JWT_JWKS_STATIC", r#"{"keys":[]}"#)
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary with `args` and nothing else in its environment.
fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn version_names_the_git_commit_it_was_built_from() {
    let out = run(&["--version"]);
    assert!(out.status.success());
    let line = text(&out.stdout);
    let prefix = format!("kitebridge {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = line
        .trim_end()
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `{prefix}COMMIT)`: {line:?}"));
    // Built from this repository (the tests run from it), so the commit is HEAD's — unless the
    // build environment named one, or there is no git at all.
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o.stdout).trim().to_owned());
    match (head, std::env::var("KITEBRIDGE_COMMIT")) {
        (_, Ok(named)) if !named.is_empty() => assert_eq!(commit, named),
        (Some(head), _) => assert_eq!(commit, head),
        (None, _) => assert_eq!(commit, "unknown"),
    }
    assert_eq!(text(&run(&["-V"]).stdout), line);
}

#[test]
fn help_in_every_spelling_exits_0() {
    let general = text(&run(&["--help"]).stdout);
    assert!(
        general.contains("docs/configuration.md")
            && general.contains("--version")
            && general.contains("kitebridge(8)"),
        "{general}"
    );
    for args in [&["help"][..], &["-h"]] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        assert_eq!(text(&out.stdout), general, "{args:?}");
    }
    let profiles = run(&["profiles", "--help"]);
    assert!(profiles.status.success());
    let profiles = text(&profiles.stdout);
    assert!(
        profiles.contains("profiles check FILE")
            && profiles.contains("profiles explain --profile REF")
            && profiles.contains("kitebridge-profiles(5)"),
        "{profiles}"
    );
    assert_ne!(profiles, general);
    for args in [
        &["profiles", "help"][..],
        &["profiles", "-h"],
        &["help", "profiles"],
        &["profiles", "check", "--help"],
        &["profiles", "explain", "--help"],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        assert_eq!(text(&out.stdout), profiles, "{args:?}");
    }
}

#[test]
fn unknown_arguments_exit_2_with_the_matching_help() {
    let out = run(&["--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.starts_with("kitebridge: unknown arguments\n"), "{err}");
    assert!(err.contains("USAGE"), "{err}");
    for args in [
        &["profiles"][..],
        &["profiles", "lint", "x"],
        &["profiles", "explain"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("kitebridge profiles —"), "{args:?}: {err}");
    }
}

/// `profiles explain` with `claims` against the README's example profile file.
fn explain(profile: &str, claims: &str, profiles: Option<&str>) -> std::process::Output {
    let dir = support::util::temp_dir("cli-explain");
    let path = dir.path().join("claims.json");
    std::fs::write(&path, claims).unwrap();
    let example = fixture("profiles/example.json");
    let profiles = profiles.unwrap_or(&example);
    run(&[
        "profiles",
        "explain",
        "--profile",
        profile,
        "--claims",
        path.to_str().unwrap(),
        "--profiles",
        profiles,
    ])
}

#[test]
fn profiles_explain_exits_1_unless_admitted() {
    let admitted = explain(
        "org:deploy",
        r#"{"pipeline_slug":"api-prod","build_branch":"main"}"#,
        None,
    );
    assert_eq!(admitted.status.code(), Some(0));
    assert!(text(&admitted.stdout).ends_with("verdict: admitted\n"));

    let denied = explain(
        "org:deploy",
        r#"{"pipeline_slug":"api-prod","build_branch":"dev"}"#,
        None,
    );
    assert_eq!(denied.status.code(), Some(1));
    let out = text(&denied.stdout);
    assert!(
        out.lines().last().unwrap().starts_with("verdict: denied"),
        "{out}"
    );

    let unknown = explain("org:no-such-profile", "{}", None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stdout).contains("verdict: not found"));

    let malformed = explain("org:", "{}", None);
    assert_eq!(malformed.status.code(), Some(1));

    let not_an_object = explain("org:deploy", "[]", None);
    assert_eq!(not_an_object.status.code(), Some(2));
}

#[test]
fn profiles_check_reports_yaml_problems_by_line_and_column() {
    let dir = support::util::temp_dir("cli-yaml");
    let path = dir.path().join("profiles.yaml");
    std::fs::write(
        &path,
        "organization:\n  profiles:\n    - name: deploy\n      repositories: [widgets]\n      permissions: [\"contents:read\"]\n      match:\n        - claim: pipeline_slug\n          valuePattern: \"(unclosed\"\n",
    )
    .unwrap();
    let out = run(&["profiles", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("$.organization.profiles[0].match[0].valuePattern (line 8, column 11)"),
        "{err}"
    );

    std::fs::write(&path, "organization:\n  profiles: &anchor []\n").unwrap();
    let out = run(&["profiles", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("line 2, column 13"), "{err}");
}

#[test]
fn bad_configuration_exits_2_with_every_problem_before_listening() {
    let port = free_port();
    let out = base_command()
        .env_remove("JWT_AUDIENCE")
        .env("SERVER_PORT", port.to_string())
        .env("SERVER_WORKERS", "many")
        .env("JWT_LEEWAY_SECS", "61")
        .env("GITHUB_API_URL", "http://example.com")
        .env(
            "GITHUB_APP_PRIVATE_KEY",
            "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0\n-----END RSA PRIVATE KEY-----",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    for var in [
        "JWT_AUDIENCE",
        "SERVER_WORKERS",
        "JWT_LEEWAY_SECS",
        "GITHUB_API_URL",
        "GITHUB_APP_PRIVATE_KEY",
    ] {
        assert!(err.contains(var), "{var} missing from: {err}");
    }
    assert!(err.contains("5 problems"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "no secret in the message");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "never listened"
    );
}

#[test]
fn a_static_key_set_without_usable_keys_exits_2() {
    let out = base_command().output().unwrap(); // JWT_JWKS_STATIC={"keys":[]}
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("JWT_JWKS_STATIC"), "{err}");
}

#[test]
fn serves_healthcheck_on_loopback_once_ready() {
    let (_up, p) = support::kitebridge::world(BIN);
    let r = p.get("/healthcheck");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let head = support::kitebridge::exchange(
        p.addr,
        b"HEAD /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert!(p.audit_text().is_empty(), "healthcheck is not audited");
}

#[test]
fn a_reader_that_goes_away_is_not_a_panic() {
    // `kitebridge help | head -0`: the pipe's read end is closed before the help is written.
    let mut child = Command::new(BIN)
        .arg("help")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
