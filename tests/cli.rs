//! The `kitebridge` binary: configuration errors (exit 2, every problem at once, before listening),
//! `--version`, `--help`, and serving `/healthcheck` on loopback.

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

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("kitebridge {}", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        help.contains("README") && help.contains("--version"),
        "{help}"
    );
    let out = Command::new(BIN).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
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
