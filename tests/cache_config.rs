//! The shared cache's variables: parsed with the rest, every problem at once, secrets from a file,
//! a value or systemd credentials and never in a message, and exit status 2 before listening.
#![forbid(unsafe_code)]

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;

use kitebridge::{Config, ConfigError};
use support::util::{command_with_env, temp_dir};

const KEY_PKCS1: &str = include_str!("fixtures/test-github-app-key.pkcs1.pem");
const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let base = [
        ("JWT_BUILDKITE_ORGANIZATION_SLUG", "acme"),
        ("JWT_AUDIENCE", "kitebridge"),
        ("GITHUB_APP_ID", "123456"),
        ("GITHUB_APP_PRIVATE_KEY", KEY_PKCS1),
        ("GITHUB_APP_INSTALLATION_ID", "7654321"),
    ];
    base.iter()
        .chain(pairs)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn error(vars: &BTreeMap<String, String>) -> ConfigError {
    match Config::from_vars(vars) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    }
}

fn problems(vars: &BTreeMap<String, String>) -> Vec<(String, String)> {
    error(vars)
        .problems()
        .iter()
        .map(|p| (p.variable.to_string(), p.message.clone()))
        .collect()
}

#[test]
fn unset_means_the_in_process_cache_only() {
    let config = Config::from_vars(&with(&[])).unwrap();
    assert_eq!(config.cache_url, None);
    assert_eq!(config.cache_prefix, "kitebridge:");
    assert_eq!(config.cache_timeout_ms, 200);
    assert!(config.cache_encryption_keys.is_none() && config.cache_password.is_none());
}

#[test]
fn a_full_shared_cache_configuration() {
    let keys = format!("{KEY_B}\n{KEY_A}\n");
    let config = Config::from_vars(&with(&[
        ("CACHE_URL", "rediss://cache.internal:6380/2"),
        ("CACHE_USERNAME", "kitebridge"),
        ("CACHE_PASSWORD", "pw-not-a-secret"),
        ("CACHE_ENCRYPTION_KEYS", &keys),
        ("CACHE_PREFIX", "ci:"),
        ("CACHE_TIMEOUT_MS", "50"),
    ]))
    .unwrap();
    let url = config.cache_url.as_ref().unwrap();
    assert_eq!(url.to_string(), "rediss://cache.internal:6380/2");
    assert!(url.tls);
    assert_eq!(config.cache_username.as_deref(), Some("kitebridge"));
    assert_eq!(
        config.cache_password.as_ref().unwrap().expose(),
        "pw-not-a-secret"
    );
    assert_eq!(config.cache_prefix, "ci:");
    assert_eq!(config.cache_timeout_ms, 50);
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("pw-not-a-secret") && !debug.contains(KEY_A),
        "{debug}"
    );
}

#[test]
fn the_url_needs_encryption_keys_and_a_user_needs_a_password() {
    let found = problems(&with(&[
        ("CACHE_URL", "redis://127.0.0.1:6379"),
        ("CACHE_USERNAME", "kitebridge"),
    ]));
    let variables: Vec<&str> = found.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        variables,
        ["CACHE_ENCRYPTION_KEYS", "CACHE_USERNAME"],
        "{found:?}"
    );
    assert!(
        found[0].1.starts_with("required with CACHE_URL"),
        "{found:?}"
    );
}

#[test]
fn cache_settings_without_the_url_are_each_a_problem() {
    let found = problems(&with(&[
        ("CACHE_USERNAME", "u"),
        ("CACHE_PASSWORD", "p"),
        ("CACHE_ENCRYPTION_KEYS", KEY_A),
        ("CACHE_PREFIX", "x:"),
        ("CACHE_TIMEOUT_MS", "100"),
    ]));
    let variables: Vec<&str> = found.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        variables,
        [
            "CACHE_USERNAME",
            "CACHE_PASSWORD",
            "CACHE_ENCRYPTION_KEYS",
            "CACHE_PREFIX",
            "CACHE_TIMEOUT_MS"
        ]
    );
    assert!(
        found
            .iter()
            .all(|(_, m)| m.starts_with("set without CACHE_URL"))
    );
}

#[test]
fn malformed_values_are_precise_problems_that_never_repeat_a_secret() {
    let secretish = "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LWlzLXNob3J0";
    let found = problems(&with(&[
        ("CACHE_URL", "redis://user:hunter2@cache:6379"),
        ("CACHE_ENCRYPTION_KEYS", &format!("{KEY_A} {secretish}")),
        ("CACHE_PREFIX", "has space"),
        ("CACHE_TIMEOUT_MS", "0"),
    ]));
    let text = format!("{found:?}");
    assert!(!text.contains("hunter2") && !text.contains(secretish) && !text.contains(KEY_A));
    let message = |name: &str| {
        found
            .iter()
            .find(|(v, _)| v == name)
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("no problem for {name}: {found:?}"))
    };
    assert!(message("CACHE_URL").starts_with("has user information"));
    assert!(message("CACHE_ENCRYPTION_KEYS").starts_with("key 2 is 33 bytes, not 32"));
    assert!(message("CACHE_PREFIX").starts_with("not visible ASCII"));
    assert!(message("CACHE_TIMEOUT_MS").contains("from 1 to 10000"));
    assert_eq!(found.len(), 4, "{found:?}");
}

#[test]
fn secrets_come_from_files_and_systemd_credentials() {
    let dir = temp_dir("cache-credentials");
    std::fs::write(dir.join("cache-password"), "from-credential\n").unwrap();
    std::fs::write(dir.join("cache-encryption-keys"), format!("{KEY_A}\n")).unwrap();
    let credentials = dir.display().to_string();
    let config = Config::from_vars(&with(&[
        ("CACHE_URL", "redis://127.0.0.1:6379"),
        ("CREDENTIALS_DIRECTORY", &credentials),
    ]))
    .unwrap();
    assert_eq!(config.cache_password.unwrap().expose(), "from-credential");
    assert_eq!(config.cache_encryption_keys.unwrap().expose(), KEY_A);
    // Without CACHE_URL the cache's credentials are not read (a generic unit may ship them).
    let config = Config::from_vars(&with(&[("CREDENTIALS_DIRECTORY", &credentials)])).unwrap();
    assert!(config.cache_password.is_none() && config.cache_encryption_keys.is_none());
    // A file wins over the credential; both a file and a value is a problem.
    let file = dir.join("keys-file");
    std::fs::write(&file, format!("{KEY_B}\n")).unwrap();
    let file = file.display().to_string();
    let config = Config::from_vars(&with(&[
        ("CACHE_URL", "redis://127.0.0.1:6379"),
        ("CREDENTIALS_DIRECTORY", &credentials),
        ("CACHE_ENCRYPTION_KEYS_FILE", &file),
    ]))
    .unwrap();
    assert_eq!(config.cache_encryption_keys.unwrap().expose(), KEY_B);
    let found = problems(&with(&[
        ("CACHE_URL", "redis://127.0.0.1:6379"),
        ("CACHE_ENCRYPTION_KEYS_FILE", &file),
        ("CACHE_ENCRYPTION_KEYS", KEY_A),
    ]));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "CACHE_ENCRYPTION_KEYS");
    // A bad key file names the file, never its content.
    std::fs::write(dir.join("bad-keys"), "not base64 at all\n").unwrap();
    let bad = dir.join("bad-keys").display().to_string();
    let found = problems(&with(&[
        ("CACHE_URL", "redis://127.0.0.1:6379"),
        ("CACHE_ENCRYPTION_KEYS_FILE", &bad),
    ]));
    assert!(
        found[0]
            .1
            .starts_with(&format!("file {bad:?}: key 1 is not standard base64")),
        "{found:?}"
    );
    assert!(!found[0].1.contains("at all"));
}

#[test]
fn the_server_exits_2_with_every_cache_problem_before_listening() {
    let vars = with(&[
        ("CACHE_URL", "redis://cache"),
        ("CACHE_PASSWORD", "pw-never-printed"),
        ("CACHE_PREFIX", "bad prefix"),
        ("SERVER_PORT", "0"),
    ]);
    let out = command_with_env(env!("CARGO_BIN_EXE_kitebridge"), &vars)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in [
        "CACHE_URL: has no port",
        "CACHE_ENCRYPTION_KEYS: required",
        "CACHE_PREFIX:",
    ] {
        assert!(stderr.contains(name), "{name} in {stderr}");
    }
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(!stderr.contains("pw-never-printed"));
    assert!(!stderr.contains("listening"));
}
