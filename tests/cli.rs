//! The `kitebridge` binary: configuration errors (exit 2, every problem at once, before listening),
//! `--version`, `--help`, and serving `/healthcheck` on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
fn serves_healthcheck_on_loopback() {
    let port = free_port();
    let mut child = base_command()
        .env("SERVER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            break out;
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    let _ = child.wait();
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(body.ends_with("\r\n\r\nOK"), "{body}");
}
