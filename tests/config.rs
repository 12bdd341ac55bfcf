//! `Config::from_vars`: defaults, required variables, every kind of malformed value, secret
//! sources and their precedence, all problems at once, and secrets kept out of errors and `Debug`.
#![forbid(unsafe_code)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use kitebridge::{
    AuditTarget, Config, ConfigError, JwksSource, MetricsSetting as Metrics, ProfileSource,
    RateLimit,
};
use log::LevelFilter;
use support::util::temp_dir;

const KEY_PKCS1: &str = include_str!("fixtures/test-github-app-key.pkcs1.pem");
const KEY_PKCS8: &str = include_str!("fixtures/test-github-app-key.pkcs8.pem");
const BUILDKITE_TOKEN: &str = "bkua_0123456789abcdef0123456789abcdef01234567";
const JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}"#;

/// The required variables, all valid.
fn base() -> BTreeMap<String, String> {
    vars(&[
        ("JWT_BUILDKITE_ORGANIZATION_SLUG", "acme"),
        ("JWT_AUDIENCE", "kitebridge"),
        ("GITHUB_APP_ID", "123456"),
        ("GITHUB_APP_PRIVATE_KEY", KEY_PKCS1),
        ("GITHUB_APP_INSTALLATION_ID", "7654321"),
    ])
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `base()` with these variables set (an empty value sets the variable to "").
fn with(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map = base();
    map.extend(vars(pairs));
    map
}

/// `base()` without the plain key, then with these variables set.
fn without_key(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map = base();
    map.remove("GITHUB_APP_PRIVATE_KEY");
    map.extend(vars(pairs));
    map
}

fn config(map: &BTreeMap<String, String>) -> Config {
    match Config::from_vars(map) {
        Ok(config) => config,
        Err(error) => panic!("{error}"),
    }
}

fn error(map: &BTreeMap<String, String>) -> ConfigError {
    match Config::from_vars(map) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(error) => error,
    }
}

/// (variable, message) of every problem.
fn problems(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let error = error(map);
    error
        .problems()
        .iter()
        .map(|p| (p.variable.to_string(), p.message.clone()))
        .collect()
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn defaults_are_those_of_config_md() {
    let config = config(&base());
    assert_eq!(config.organization_slug, "acme");
    assert_eq!(config.organization_id, None);
    assert_eq!(config.audience, "kitebridge");
    assert_eq!(config.issuer, "https://agent.buildkite.com");
    assert_eq!(
        config.jwks,
        JwksSource::Url("https://agent.buildkite.com/.well-known/jwks".to_string())
    );
    assert_eq!(config.leeway_secs, 5);
    assert_eq!(config.max_lifetime_secs, 7200);
    assert!(config.buildkite_api_token.is_none());
    assert_eq!(config.buildkite_api_url, "https://api.buildkite.com");
    assert_eq!(config.github_app_id, "123456");
    assert_eq!(config.github_app_private_key.expose(), KEY_PKCS1.trim_end());
    assert_eq!(config.github_installation_id, 7_654_321);
    assert_eq!(config.github_api_url, "https://api.github.com");
    assert_eq!(config.github_host, "github.com");
    assert_eq!(config.profiles, ProfileSource::Builtin);
    assert_eq!(config.profiles_refresh_secs, 300);
    assert_eq!(config.server_host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(config.server_port, 8080);
    assert_eq!(config.server_base_path, None);
    assert_eq!(config.server_workers, 16);
    assert_eq!(config.max_connections, 512);
    assert_eq!(config.timeout_header_secs, 10);
    assert_eq!(config.timeout_body_secs, 10);
    assert_eq!(config.timeout_idle_secs, 30);
    assert_eq!(config.timeout_shutdown_secs, 25);
    assert_eq!(config.token_min_remaining_secs, 900);
    assert_eq!(config.token_cache_max_entries, 10_000);
    assert_eq!(config.pipeline_cache_secs, 600);
    let limit = |count, window_secs| RateLimit::Limit { count, window_secs };
    assert_eq!(config.rate_limit_per_pipeline, limit(120, 60));
    assert_eq!(config.rate_limit_per_source, limit(600, 60));
    assert_eq!(config.metrics, Metrics::On);
    assert_eq!(config.audit_log, AuditTarget::Stdout);
    assert_eq!(config.log_level, LevelFilter::Info);
    assert_eq!(config.ssl_cert_file, None);
    assert_eq!(config.https_proxy, None);
    assert_eq!(config.no_proxy, None);
}

#[test]
fn every_missing_required_variable_is_named() {
    let problems = problems(&BTreeMap::new());
    let required = [
        "JWT_BUILDKITE_ORGANIZATION_SLUG",
        "JWT_AUDIENCE",
        "GITHUB_APP_ID",
        "GITHUB_APP_PRIVATE_KEY",
        "GITHUB_APP_INSTALLATION_ID",
    ];
    let named: Vec<&str> = problems
        .iter()
        .map(|(variable, _)| variable.as_str())
        .collect();
    assert_eq!(named, required);
    for (variable, message) in &problems {
        assert!(
            message.starts_with("required, not set; expected "),
            "{variable}: {message}"
        );
    }
}

#[test]
fn a_required_variable_set_but_empty_is_an_error() {
    for name in [
        "JWT_BUILDKITE_ORGANIZATION_SLUG",
        "JWT_AUDIENCE",
        "GITHUB_APP_ID",
        "GITHUB_APP_INSTALLATION_ID",
    ] {
        let problems = problems(&with(&[(name, "")]));
        assert_eq!(problems.len(), 1, "{name}: {problems:?}");
        assert_eq!(problems[0].0, name);
        assert!(
            problems[0]
                .1
                .starts_with("required, set but empty; expected "),
            "{problems:?}"
        );
    }
    for name in ["GITHUB_APP_PRIVATE_KEY", "GITHUB_APP_PRIVATE_KEY_FILE"] {
        let problems = problems(&without_key(&[(name, "")]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "GITHUB_APP_PRIVATE_KEY");
        assert!(
            problems[0]
                .1
                .starts_with("required, set but empty; expected "),
            "{problems:?}"
        );
    }
}

#[test]
fn an_optional_variable_set_but_empty_counts_as_unset() {
    let optional = [
        "JWT_BUILDKITE_ORGANIZATION_ID",
        "JWT_ISSUER_URL",
        "JWT_JWKS_URL",
        "JWT_JWKS_STATIC",
        "JWT_JWKS_STATIC_FILE",
        "JWT_LEEWAY_SECS",
        "JWT_MAX_LIFETIME_SECS",
        "JWT_CACHE_MAX_ENTRIES",
        "BUILDKITE_API_TOKEN",
        "BUILDKITE_API_TOKEN_FILE",
        "BUILDKITE_API_URL",
        "GITHUB_APP_PRIVATE_KEY_FILE",
        "GITHUB_API_URL",
        "GITHUB_HOST",
        "PROFILES_FILE",
        "GITHUB_ORG_PROFILE",
        "PROFILES_REFRESH_SECS",
        "PROFILES_MAX_BYTES",
        "SERVER_HOST",
        "SERVER_PORT",
        "SERVER_BASE_PATH",
        "SERVER_WORKERS",
        "SERVER_MAX_CONNECTIONS",
        "SERVER_HEADER_TIMEOUT_SECS",
        "SERVER_BODY_TIMEOUT_SECS",
        "SERVER_IDLE_TIMEOUT_SECS",
        "SERVER_SHUTDOWN_TIMEOUT_SECS",
        "TOKEN_MIN_REMAINING_SECS",
        "TOKEN_CACHE_MAX_ENTRIES",
        "PIPELINE_CACHE_SECS",
        "RATE_LIMIT_PER_PIPELINE",
        "RATE_LIMIT_PER_SOURCE",
        "METRICS",
        "AUDIT_LOG",
        "LOG_LEVEL",
        "SSL_CERT_FILE",
        "HTTPS_PROXY",
        "https_proxy",
        "NO_PROXY",
        "no_proxy",
        "CREDENTIALS_DIRECTORY",
    ];
    let empty: Vec<(&str, &str)> = optional.iter().map(|name| (*name, "")).collect();
    let config = config(&with(&empty));
    let defaults = self::config(&base());
    assert_eq!(format!("{config:?}"), format!("{defaults:?}"));
}

/// One row per variable and kind of malformation: (variable, value, start of the message).
#[rustfmt::skip]
const MALFORMED: &[(&str, &str, &str)] = &[
    ("JWT_BUILDKITE_ORGANIZATION_SLUG", "acme inc", "contains whitespace"),
    ("JWT_BUILDKITE_ORGANIZATION_ID", "a\tb", "contains whitespace"),
    ("JWT_AUDIENCE", "kite\nbridge", "contains whitespace"),
    ("JWT_ISSUER_URL", "https://agent.buildkite.com ", "contains whitespace"),
    ("JWT_JWKS_URL", "http://agent.buildkite.com/.well-known/jwks", "plain http://"),
    ("JWT_JWKS_URL", "ftp://agent.buildkite.com", "scheme is not https"),
    ("JWT_JWKS_STATIC", "{\"keys\":[1,", "not valid JSON"),
    ("JWT_JWKS_STATIC", "[]", "no \"keys\" array"),
    ("JWT_JWKS_STATIC", "{\"keys\":{}}", "no \"keys\" array"),
    ("JWT_JWKS_STATIC_FILE", "/nonexistent/kitebridge/jwks.json", "cannot read \"/nonexistent"),
    ("JWT_LEEWAY_SECS", "five", "not a whole number"),
    ("JWT_LEEWAY_SECS", "61", "out of range; expected a whole number from 0 to 60"),
    ("JWT_MAX_LIFETIME_SECS", "0", "out of range; expected a whole number from 1 to 7200"),
    ("JWT_MAX_LIFETIME_SECS", "7201", "out of range"),
    ("BUILDKITE_API_TOKEN", "two words", "contains whitespace"),
    ("BUILDKITE_API_TOKEN_FILE", "/nonexistent/kitebridge/token", "cannot read \"/nonexistent"),
    ("BUILDKITE_API_URL", "https://user@api.buildkite.com", "has user information"),
    ("BUILDKITE_API_URL", "https://api.buildkite.com/v2?x=1", "has a query or fragment"),
    ("BUILDKITE_API_URL", "api.buildkite.com", "not a URL"),
    ("GITHUB_APP_ID", "Iv23li/abc", "contains characters other than"),
    ("GITHUB_APP_PRIVATE_KEY", "not a key", "no PEM private key found"),
    ("GITHUB_APP_INSTALLATION_ID", "0", "out of range"),
    ("GITHUB_APP_INSTALLATION_ID", "12a", "not a whole number"),
    ("GITHUB_APP_INSTALLATION_ID", "-1", "not a whole number"),
    ("GITHUB_API_URL", "http://ghe.example.com/api/v3", "plain http://"),
    ("GITHUB_API_URL", "https://ghe.example.com:99999/api/v3", "the port is not"),
    ("GITHUB_HOST", "https://github.com", "has a URL scheme"),
    ("GITHUB_HOST", "github.com:x", "the port is not"),
    ("GITHUB_HOST", "github.com/acme", "the host is not a host name"),
    ("GITHUB_ORG_PROFILE", "acme:config", "not three :-separated parts"),
    ("GITHUB_ORG_PROFILE", ":config:profiles.json", "OWNER is empty"),
    ("GITHUB_ORG_PROFILE", "acme::profiles.json", "REPO is empty"),
    ("GITHUB_ORG_PROFILE", "acme:config:", "PATH is empty"),
    ("GITHUB_ORG_PROFILE", "acme:config:/profiles.json", "PATH starts with /"),
    ("GITHUB_ORG_PROFILE", "acme:config:../profiles.json", "PATH has a . or .. segment"),
    ("GITHUB_ORG_PROFILE", "acme:config:profiles.json@", "REF after @ is empty"),
    ("PROFILES_REFRESH_SECS", "9", "out of range; expected a whole number from 10 to 86400"),
    ("SERVER_HOST", "localhost", "not an IP address"),
    ("SERVER_HOST", "[::1]", "not an IP address"),
    ("SERVER_PORT", "65536", "out of range"),
    ("SERVER_PORT", "80 ", "not a whole number"),
    ("SERVER_BASE_PATH", "/a//b", "has an empty segment"),
    ("SERVER_BASE_PATH", "/bridge/..", "has a . or .. segment"),
    ("SERVER_BASE_PATH", "/bri dge", "has characters other than"),
    ("SERVER_WORKERS", "0", "out of range; expected a whole number from 1 to 1024"),
    ("SERVER_WORKERS", "1025", "out of range"),
    ("SERVER_MAX_CONNECTIONS", "65537", "out of range"),
    ("SERVER_HEADER_TIMEOUT_SECS", "0", "out of range; expected a whole number from 1 to 3600"),
    ("SERVER_BODY_TIMEOUT_SECS", "3601", "out of range"),
    ("SERVER_IDLE_TIMEOUT_SECS", "1.5", "not a whole number"),
    ("SERVER_SHUTDOWN_TIMEOUT_SECS", "25s", "not a whole number"),
    ("TOKEN_MIN_REMAINING_SECS", "3301", "out of range; expected a whole number from 0 to 3300"),
    ("TOKEN_CACHE_MAX_ENTRIES", "0", "out of range"),
    ("TOKEN_CACHE_MAX_ENTRIES", "1000001", "out of range"),
    ("PIPELINE_CACHE_SECS", "86401", "out of range"),
    ("JWT_CACHE_MAX_ENTRIES", "1000001", "out of range"),
    ("JWT_CACHE_MAX_ENTRIES", "-1", "not a whole number"),
    ("PROFILES_MAX_BYTES", "1023", "out of range"),
    ("PROFILES_MAX_BYTES", "8MiB", "not a whole number"),
    ("RATE_LIMIT_PER_PIPELINE", "120", "not COUNT/WINDOW"),
    ("RATE_LIMIT_PER_PIPELINE", "0/60s", "COUNT is not"),
    ("RATE_LIMIT_PER_PIPELINE", "100/30", "WINDOW has no unit"),
    ("RATE_LIMIT_PER_SOURCE", "600/0s", "WINDOW is not from 1s to 24h"),
    ("RATE_LIMIT_PER_SOURCE", "none", "not COUNT/WINDOW"),
    ("METRICS", "yes", "neither on, off nor an IP HOST:PORT"),
    ("METRICS", "localhost:9090", "neither on, off nor an IP HOST:PORT"),
    ("METRICS", "10.1.2.3", "neither on, off nor an IP HOST:PORT"),
    ("AUDIT_LOG", "audit.log", "a relative path"),
    ("AUDIT_LOG", "./audit.log", "a relative path"),
    ("LOG_LEVEL", "verbose", "not a log level"),
    ("SSL_CERT_FILE", "/nonexistent/kitebridge/ca.pem", "cannot read \"/nonexistent"),
    ("HTTPS_PROXY", "proxy.internal:3128", "scheme is not http://"),
    ("HTTPS_PROXY", "http://proxy.internal", "has no port"),
    ("https_proxy", "http://user:secret@proxy.internal:3128", "has credentials"),
];

#[test]
fn each_malformed_value_is_one_precise_problem() {
    for (variable, value, start) in MALFORMED {
        let problems = problems(&with(&[(variable, value)]));
        assert_eq!(problems.len(), 1, "{variable}={value:?}: {problems:?}");
        let (named, message) = &problems[0];
        assert_eq!(named, variable, "{value:?}: {message}");
        assert!(
            message.starts_with(start),
            "{variable}={value:?}: {message}"
        );
        assert!(
            message.contains("expected"),
            "{variable}={value:?}: {message}"
        );
        if value.len() > 5 && !variable.ends_with("_FILE") {
            assert!(
                !message.contains(value),
                "{variable}: the value is echoed: {message}"
            );
        }
    }
}

#[test]
fn valid_values_are_parsed_and_normalised() {
    let dir = temp_dir("valid");
    let jwks_file = write(&dir, "jwks.json", JWKS);
    let config = config(&with(&[
        (
            "JWT_BUILDKITE_ORGANIZATION_ID",
            "0190c5a4-5b2c-4b9a-9a2e-6b8a9d1e2f30",
        ),
        ("JWT_ISSUER_URL", "https://agent.buildkite.com/"),
        ("JWT_JWKS_STATIC_FILE", &jwks_file),
        ("JWT_LEEWAY_SECS", "0"),
        ("GITHUB_APP_ID", "Iv23li.client_ID-1"),
        ("GITHUB_API_URL", "https://GHE.example.com:8443/api/v3/"),
        ("BUILDKITE_API_URL", "http://127.0.0.1:9000/"),
        ("GITHUB_HOST", "GHE.Example.com:8443"),
        (
            "GITHUB_ORG_PROFILE",
            "acme:kitebridge-config:profiles.json@main",
        ),
        ("SERVER_HOST", "::"),
        ("SERVER_PORT", "0"),
        ("SERVER_BASE_PATH", "bridge/"),
        ("RATE_LIMIT_PER_PIPELINE", "10/1m"),
        ("RATE_LIMIT_PER_SOURCE", "off"),
        ("METRICS", "[::1]:9090"),
        ("AUDIT_LOG", "/var/log/kitebridge/audit.log"),
        ("LOG_LEVEL", "DEBUG"),
        ("https_proxy", "http://proxy.internal:3128/"),
        ("no_proxy", "localhost,.internal"),
    ]));
    assert_eq!(
        config.organization_id.as_deref(),
        Some("0190c5a4-5b2c-4b9a-9a2e-6b8a9d1e2f30")
    );
    assert_eq!(
        config.issuer, "https://agent.buildkite.com/",
        "kept byte for byte"
    );
    assert_eq!(config.jwks, JwksSource::Static(JWKS.as_bytes().to_vec()));
    assert_eq!(config.leeway_secs, 0);
    assert_eq!(config.github_app_id, "Iv23li.client_ID-1");
    assert_eq!(config.github_api_url, "https://GHE.example.com:8443/api/v3");
    assert_eq!(config.buildkite_api_url, "http://127.0.0.1:9000");
    assert_eq!(config.github_host, "ghe.example.com:8443");
    assert_eq!(
        config.profiles,
        ProfileSource::GitHub {
            owner: "acme".to_string(),
            repo: "kitebridge-config".to_string(),
            path: "profiles.json".to_string(),
            git_ref: Some("main".to_string()),
        }
    );
    assert_eq!(config.server_host, "::".parse::<IpAddr>().unwrap());
    assert_eq!(config.server_port, 0);
    assert_eq!(config.server_base_path.as_deref(), Some("/bridge"));
    assert_eq!(
        config.rate_limit_per_pipeline,
        RateLimit::Limit {
            count: 10,
            window_secs: 60
        }
    );
    assert_eq!(config.rate_limit_per_source, RateLimit::Off);
    assert_eq!(
        config.metrics,
        Metrics::Listen("[::1]:9090".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        config.audit_log,
        AuditTarget::File(PathBuf::from("/var/log/kitebridge/audit.log"))
    );
    assert_eq!(config.log_level, LevelFilter::Debug);
    assert_eq!(
        config.https_proxy.as_deref(),
        Some("http://proxy.internal:3128")
    );
    assert_eq!(config.no_proxy.as_deref(), Some("localhost,.internal"));
}

#[test]
fn upper_case_proxy_variables_win_over_lower_case() {
    let config = config(&with(&[
        ("HTTPS_PROXY", "http://upper.internal:3128"),
        ("https_proxy", "not even a URL"),
        ("NO_PROXY", "upper"),
        ("no_proxy", "lower"),
    ]));
    assert_eq!(
        config.https_proxy.as_deref(),
        Some("http://upper.internal:3128")
    );
    assert_eq!(config.no_proxy.as_deref(), Some("upper"));
}

#[test]
fn inline_static_jwks_and_local_profiles_file() {
    let config = config(&with(&[
        ("JWT_JWKS_STATIC", JWKS),
        ("PROFILES_FILE", "/etc/kitebridge/profiles.json"),
    ]));
    assert_eq!(config.jwks, JwksSource::Static(JWKS.as_bytes().to_vec()));
    assert_eq!(
        config.profiles,
        ProfileSource::File(PathBuf::from("/etc/kitebridge/profiles.json"))
    );
}

#[test]
fn exclusive_variables_set_together_are_a_problem() {
    let dir = temp_dir("exclusive");
    let jwks_file = write(&dir, "jwks.json", JWKS);
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("PROFILES_FILE", "/etc/kitebridge/profiles.json"),
                ("GITHUB_ORG_PROFILE", "a:b:c"),
            ],
            "GITHUB_ORG_PROFILE",
        ),
        (
            &[
                ("JWT_JWKS_STATIC", JWKS),
                ("JWT_JWKS_STATIC_FILE", &jwks_file),
            ],
            "JWT_JWKS_STATIC",
        ),
        (
            &[
                ("JWT_JWKS_URL", "https://example.com/jwks"),
                ("JWT_JWKS_STATIC", JWKS),
            ],
            "JWT_JWKS_URL",
        ),
        (
            &[
                ("BUILDKITE_API_TOKEN", "t"),
                ("BUILDKITE_API_TOKEN_FILE", "/x"),
            ],
            "BUILDKITE_API_TOKEN",
        ),
        (
            &[("GITHUB_APP_PRIVATE_KEY_FILE", "/x")],
            "GITHUB_APP_PRIVATE_KEY",
        ),
    ];
    for (pairs, variable) in cases {
        let problems = problems(&with(pairs));
        assert_eq!(problems.len(), 1, "{pairs:?}: {problems:?}");
        assert_eq!(problems[0].0, *variable, "{problems:?}");
        assert!(
            problems[0].1.starts_with("set together with"),
            "{problems:?}"
        );
    }
}

#[test]
fn github_app_key_pkcs8_is_accepted_and_file_is_trimmed() {
    let dir = temp_dir("pkcs8");
    let path = write(&dir, "key.pem", &format!("{KEY_PKCS8}\n\n"));
    let config = config(&without_key(&[("GITHUB_APP_PRIVATE_KEY_FILE", &path)]));
    assert_eq!(config.github_app_private_key.expose(), KEY_PKCS8.trim_end());
}

#[test]
fn github_app_key_must_be_a_usable_rsa_key() {
    let ec = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    let not_rsa = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    let truncated = KEY_PKCS1.replace("-----END RSA PRIVATE KEY-----", "");
    let corrupted = corrupt(KEY_PKCS1);
    let certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let cases: &[(&str, &str)] = &[
        (ec, "an EC key, not RSA"),
        (not_rsa, "not a usable RSA private key"),
        (&truncated, "malformed PEM"),
        (&corrupted, "not a usable RSA private key"),
        (certificate, "no PEM private key found"),
    ];
    for (key, start) in cases {
        let error = error(&with(&[("GITHUB_APP_PRIVATE_KEY", key)]));
        let problems = error.problems();
        assert_eq!(problems.len(), 1, "{error}");
        assert_eq!(problems[0].variable, "GITHUB_APP_PRIVATE_KEY");
        assert!(problems[0].message.starts_with(start), "{error}");
        assert_no_key_material(&error.to_string(), key);
    }
}

/// The PKCS#1 key with one base64 character of its body changed (still valid base64).
fn corrupt(pem: &str) -> String {
    let mut lines: Vec<String> = pem.lines().map(str::to_string).collect();
    let line = &mut lines[5];
    let flipped = if line.starts_with('A') { "B" } else { "A" };
    line.replace_range(0..1, flipped);
    lines.join("\n")
}

/// No base64 line of the key (nor any 16-character piece of it) appears in `text`.
fn assert_no_key_material(text: &str, key: &str) {
    for line in key.lines().filter(|line| !line.starts_with("-----")) {
        for piece in line.as_bytes().chunks(16).filter(|piece| piece.len() == 16) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!text.contains(piece), "key material {piece:?} in {text}");
        }
    }
}

#[test]
fn secret_file_problems_name_the_path_never_the_content() {
    let dir = temp_dir("secret-files");
    let empty = write(&dir, "empty", "\n");
    let wrong_key = write(&dir, "wrong.pem", "not a key\n");
    let big = write(&dir, "big", &"x".repeat(64 * 1024 + 1));
    let spaced = write(&dir, "token", "bkua_abc def\n");
    let dir_path = dir.to_str().unwrap();
    let missing = "/nonexistent/kitebridge/key.pem";
    let cases: &[(&str, String)] = &[
        (&empty, format!("file {empty:?}: empty")),
        (
            &wrong_key,
            format!("file {wrong_key:?}: no PEM private key found"),
        ),
        (
            &big,
            format!("cannot read {big:?}: larger than 65536 bytes"),
        ),
        (dir_path, format!("cannot read {dir_path:?}: ")),
        (missing, format!("cannot read {missing:?}: No such file")),
    ];
    for (path, start) in cases {
        let problems = problems(&without_key(&[("GITHUB_APP_PRIVATE_KEY_FILE", path)]));
        assert_eq!(problems.len(), 1, "{path}: {problems:?}");
        assert_eq!(problems[0].0, "GITHUB_APP_PRIVATE_KEY_FILE");
        assert!(problems[0].1.starts_with(start.as_str()), "{problems:?}");
    }
    let problems = problems(&with(&[("BUILDKITE_API_TOKEN_FILE", &spaced)]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "BUILDKITE_API_TOKEN_FILE");
    assert!(
        problems[0]
            .1
            .starts_with(&format!("file {spaced:?}: contains whitespace"))
    );
    assert!(!problems[0].1.contains("bkua_abc"), "{problems:?}");
}

#[test]
fn secret_sources_in_order_of_precedence() {
    let dir = temp_dir("precedence");
    let credentials = dir.join("credentials");
    fs::create_dir(&credentials).unwrap();
    let credentials_dir = credentials.to_str().unwrap().to_string();
    write(&credentials, "github-app-private-key", KEY_PKCS8);
    write(&credentials, "buildkite-api-token", "from-credentials\n");
    let key_file = write(&dir, "key.pem", KEY_PKCS1);
    let token_file = write(&dir, "token", "from-file\n");

    // Only $CREDENTIALS_DIRECTORY: its files are used.
    let config = config(&without_key(&[("CREDENTIALS_DIRECTORY", &credentials_dir)]));
    assert_eq!(config.github_app_private_key.expose(), KEY_PKCS8.trim_end());
    assert_eq!(
        config.buildkite_api_token.unwrap().expose(),
        "from-credentials"
    );

    // NAME_FILE beats $CREDENTIALS_DIRECTORY.
    let config = self::config(&without_key(&[
        ("CREDENTIALS_DIRECTORY", &credentials_dir),
        ("GITHUB_APP_PRIVATE_KEY_FILE", &key_file),
        ("BUILDKITE_API_TOKEN_FILE", &token_file),
    ]));
    assert_eq!(config.github_app_private_key.expose(), KEY_PKCS1.trim_end());
    assert_eq!(config.buildkite_api_token.unwrap().expose(), "from-file");

    // NAME beats $CREDENTIALS_DIRECTORY.
    let config = self::config(&with(&[
        ("CREDENTIALS_DIRECTORY", &credentials_dir),
        ("BUILDKITE_API_TOKEN", "from-env"),
    ]));
    assert_eq!(config.github_app_private_key.expose(), KEY_PKCS1.trim_end());
    assert_eq!(config.buildkite_api_token.unwrap().expose(), "from-env");

    // NAME and NAME_FILE together: an error, whatever $CREDENTIALS_DIRECTORY holds.
    let problems = problems(&with(&[
        ("CREDENTIALS_DIRECTORY", &credentials_dir),
        ("GITHUB_APP_PRIVATE_KEY_FILE", &key_file),
    ]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "GITHUB_APP_PRIVATE_KEY");
}

#[test]
fn credentials_directory_without_the_files_leaves_the_secrets_unset() {
    let dir = temp_dir("empty-credentials");
    let problems = problems(&without_key(&[(
        "CREDENTIALS_DIRECTORY",
        dir.to_str().unwrap(),
    )]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "GITHUB_APP_PRIVATE_KEY");
    assert!(
        problems[0]
            .1
            .contains("$CREDENTIALS_DIRECTORY/github-app-private-key"),
        "{problems:?}"
    );
}

#[test]
fn a_bad_credential_file_is_a_problem_of_credentials_directory() {
    let dir = temp_dir("bad-credentials");
    let key = write(&dir, "github-app-private-key", "not a key\n");
    let problems = problems(&without_key(&[(
        "CREDENTIALS_DIRECTORY",
        dir.to_str().unwrap(),
    )]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "CREDENTIALS_DIRECTORY");
    assert!(
        problems[0]
            .1
            .starts_with(&format!("file {key:?}: no PEM private key")),
        "{problems:?}"
    );
}

#[test]
fn ssl_cert_file_must_hold_a_pem_certificate() {
    let dir = temp_dir("ca");
    let not_pem = write(&dir, "ca.txt", "hello\n");
    let problems = problems(&with(&[("SSL_CERT_FILE", &not_pem)]));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].0, "SSL_CERT_FILE");
    assert!(
        problems[0].1.contains("no -----BEGIN CERTIFICATE-----"),
        "{problems:?}"
    );

    let bundle = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let ca = write(&dir, "ca.pem", bundle);
    let config = config(&with(&[("SSL_CERT_FILE", &ca)]));
    assert_eq!(config.ssl_cert_file, Some(PathBuf::from(ca)));
}

#[test]
fn every_problem_is_reported_at_once() {
    let map = with(&[
        ("JWT_AUDIENCE", ""),
        ("JWT_LEEWAY_SECS", "61"),
        ("JWT_JWKS_URL", "http://example.com/jwks"),
        ("SERVER_PORT", "http"),
        ("AUDIT_LOG", "audit.log"),
    ]);
    let error = error(&map);
    let named: Vec<&str> = error.problems().iter().map(|p| p.variable).collect();
    assert_eq!(
        named,
        [
            "JWT_AUDIENCE",
            "JWT_JWKS_URL",
            "JWT_LEEWAY_SECS",
            "SERVER_PORT",
            "AUDIT_LOG"
        ]
    );
    let display = error.to_string();
    let mut lines = display.lines();
    assert_eq!(lines.next(), Some("invalid configuration: 5 problems"));
    for (line, problem) in lines.zip(error.problems()) {
        assert_eq!(line, format!("  {}: {}", problem.variable, problem.message));
    }
    assert_eq!(display.lines().count(), 6);
}

#[test]
fn one_problem_is_singular() {
    let error = error(&with(&[("SERVER_PORT", "x")]));
    assert!(
        error
            .to_string()
            .starts_with("invalid configuration: 1 problem\n  SERVER_PORT: ")
    );
}

#[test]
fn secrets_never_appear_in_debug_or_errors() {
    let config = config(&with(&[("BUILDKITE_API_TOKEN", BUILDKITE_TOKEN)]));
    let debug = format!("{config:?}");
    assert!(!debug.contains(BUILDKITE_TOKEN), "{debug}");
    assert_no_key_material(&debug, KEY_PKCS1);
    assert!(
        debug.contains("github_app_private_key: [redacted]"),
        "{debug}"
    );
    assert!(
        debug.contains("buildkite_api_token: Some([redacted])"),
        "{debug}"
    );

    // A secret pasted into a non-secret variable is not echoed either.
    let error = error(&with(&[
        ("BUILDKITE_API_TOKEN", &format!("{BUILDKITE_TOKEN} x")),
        ("GITHUB_APP_ID", KEY_PKCS1),
        ("SERVER_PORT", BUILDKITE_TOKEN),
    ]));
    assert_eq!(error.problems().len(), 3, "{error}");
    let text = format!("{error} {error:?}");
    assert!(!text.contains(BUILDKITE_TOKEN), "{text}");
    assert_no_key_material(&text, KEY_PKCS1);
}
