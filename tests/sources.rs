//! Where requests may come from, through the running process: `SERVER_ALLOWED_SOURCES` before
//! any JWT work, per-profile `sources` beside the match rules (before the cache), and
//! `SERVER_TRUSTED_PROXIES` with `X-Forwarded-For` / `Forwarded` deciding the client address
//! that both check and the per-source rate limit counts; a spoofed header from a peer that is
//! not a trusted proxy is ignored. IPv6 client addresses are tested through a trusted proxy over
//! IPv4 loopback, and on an `::1` listener when the machine has one (else SKIP).
#![forbid(unsafe_code)]

mod support;

use std::net::TcpListener;
use std::process::Command;

use serde_json::Value;
use support::kitebridge::{HttpResponse, Process, Upstreams, assert_json_error};
use support::util::{TempDir, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// Pipeline profiles `office` (two ranges) and `broken` (a malformed range), organization
/// profile `lab` (loopback only).
const PROFILES: &str = r#"{
  "pipeline": {"profiles": [
    {"name": "office", "permissions": ["contents:read"], "sources": ["192.0.2.0/24", "2001:db8::/32"]},
    {"name": "broken", "permissions": ["contents:read"], "sources": ["192.0.2.1/8"]}
  ]},
  "organization": {"profiles": [
    {"name": "lab", "repositories": ["gears"], "permissions": ["contents:read"], "sources": ["127.0.0.1"]}
  ]}
}"#;

fn profiles_file() -> (TempDir, String) {
    let dir = temp_dir("sources");
    let file = dir.join("profiles.json");
    std::fs::write(&file, PROFILES).unwrap();
    let path = file.to_str().unwrap().to_owned();
    (dir, path)
}

/// A token request with `jwt` and the extra header lines.
fn post(p: &Process, path: &str, jwt: &str, headers: &[&str]) -> HttpResponse {
    let authorization = format!("Authorization: Bearer {jwt}");
    let mut lines = vec![authorization.as_str(), "User-Agent: sources-test"];
    lines.extend_from_slice(headers);
    p.post_with(path, &lines, b"")
}

fn source_ips(audit: &Value) -> (&str, &str) {
    (
        audit["sourceIp"].as_str().unwrap(),
        audit["peerIp"].as_str().unwrap(),
    )
}

#[test]
fn the_allow_list_refuses_outsiders_before_any_jwt_work_and_ignores_an_untrusted_peers_headers() {
    let up = Upstreams::start();
    // Trusted proxies are configured, but loopback (the test's peer) is not one of them.
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[
            ("SERVER_ALLOWED_SOURCES", "10.0.0.0/8, 2001:db8::/32"),
            ("SERVER_TRUSTED_PROXIES", "192.0.2.0/24"),
        ]),
    );
    let cases: &[&[&str]] = &[
        &[],
        &["X-Forwarded-For: 10.1.2.3"],
        &["Forwarded: for=10.1.2.3"],
        &[
            "X-Forwarded-For: 2001:db8::1",
            "Forwarded: for=\"[2001:db8::1]\"",
        ],
        &["X-Forwarded-For: not an address at all"],
    ];
    for headers in cases {
        for jwt in ["not-a-jwt", &up.token()] {
            let r = post(&p, "/token", jwt, headers);
            assert_json_error(&r, 403, "source not allowed");
            let audit = p.audit_of(&r);
            assert_eq!(
                source_ips(&audit),
                ("127.0.0.1", "127.0.0.1"),
                "{headers:?}"
            );
            assert_eq!(
                audit["error"], "source 127.0.0.1 is outside SERVER_ALLOWED_SOURCES",
                "{audit}"
            );
            assert_eq!(audit["jwt"], Value::Null, "no JWT work: {audit}");
            assert_eq!(audit["status"], 403);
        }
    }
    // The token exchange answers in RFC 6749's terms, the reason still in the audit record.
    let form = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={}\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt",
        up.token()
    );
    let r = p.post_with(
        "/oauth/token",
        &["Content-Type: application/x-www-form-urlencoded"],
        form.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_request");
    assert_eq!(r.json()["error_description"], "source not allowed");
    assert_eq!(
        p.audit_of(&r)["error"],
        "source 127.0.0.1 is outside SERVER_ALLOWED_SOURCES"
    );
    assert_eq!(up.github.mints(), 0);

    // Loopback admitted: the same requests are served.
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[("SERVER_ALLOWED_SOURCES", "10.0.0.0/8, 127.0.0.0/8")]),
    );
    let r = post(&p, "/token", &up.token(), &["X-Forwarded-For: 10.1.2.3"]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(source_ips(&p.audit_of(&r)), ("127.0.0.1", "127.0.0.1"));
}

#[test]
fn behind_a_trusted_proxy_the_forwarded_client_is_what_the_allow_list_sees() {
    let up = Upstreams::start();
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[
            ("SERVER_ALLOWED_SOURCES", "192.0.2.0/24, 2001:db8::/32"),
            ("SERVER_TRUSTED_PROXIES", "127.0.0.1/32, 10.0.0.0/8"),
        ]),
    );
    // (headers, status, sourceIp, audit error)
    type Case<'a> = (&'a [&'a str], u16, &'a str, Option<&'a str>);
    let outside = |ip: &str| format!("source {ip} is outside SERVER_ALLOWED_SOURCES");
    let (outside_a, outside_b, outside_lo) = (
        outside("198.51.100.7"),
        outside("2001:db9::1"),
        outside("127.0.0.1"),
    );
    let cases: &[Case<'_>] = &[
        (&["X-Forwarded-For: 192.0.2.10"], 200, "192.0.2.10", None),
        // What the client wrote itself (left of the proxy's hop) is never read.
        (
            &["X-Forwarded-For: 198.51.100.7, 192.0.2.10"],
            200,
            "192.0.2.10",
            None,
        ),
        (
            &["X-Forwarded-For: 192.0.2.10, 198.51.100.7"],
            403,
            "198.51.100.7",
            Some(&outside_a),
        ),
        // Hops that are trusted proxies are skipped; header lines count in order.
        (
            &["X-Forwarded-For: 192.0.2.10", "X-Forwarded-For: 10.0.0.5"],
            200,
            "192.0.2.10",
            None,
        ),
        // An IPv6 client behind an IPv4 proxy.
        (&["X-Forwarded-For: 2001:db8::7"], 200, "2001:db8::7", None),
        (
            &["Forwarded: for=\"[2001:db8::8]:4711\";proto=https, for=10.0.0.5"],
            200,
            "2001:db8::8",
            None,
        ),
        (
            &["X-Forwarded-For: 2001:db9::1"],
            403,
            "2001:db9::1",
            Some(&outside_b),
        ),
        (
            &["Forwarded: for=192.0.2.11", "X-Forwarded-For: 192.0.2.11"],
            200,
            "192.0.2.11",
            None,
        ),
        // No header: the proxy itself is the client.
        (&[], 403, "127.0.0.1", Some(&outside_lo)),
        // A client address that cannot be told is refused, not guessed.
        (
            &["X-Forwarded-For: 192.0.2.10, unknown"],
            400,
            "127.0.0.1",
            Some("trusted proxy's x-forwarded-for: hop 1 from the right is not an ip address"),
        ),
        (
            &["X-Forwarded-For: 192.0.2.10", "Forwarded: for=192.0.2.11"],
            400,
            "127.0.0.1",
            Some("trusted proxy's x-forwarded-for names 192.0.2.10 but forwarded names 192.0.2.11"),
        ),
    ];
    let mut vended = 0;
    for (headers, status, source, error) in cases {
        let r = post(&p, "/token", &up.token(), headers);
        match status {
            200 => {
                assert_eq!(r.status, 200, "{headers:?}: {}", r.text());
                vended += 1;
            }
            403 => assert_json_error(&r, 403, "source not allowed"),
            _ => assert_json_error(&r, 400, "malformed forwarding header"),
        }
        let audit = p.audit_of(&r);
        assert_eq!(source_ips(&audit), (*source, "127.0.0.1"), "{headers:?}");
        assert_eq!(audit["error"].as_str(), *error, "{headers:?}: {audit}");
    }
    assert_eq!(vended, 6);
    assert_eq!(up.github.mints(), 1, "one pipeline, one cached token");
}

#[test]
fn the_per_source_rate_limit_counts_the_derived_client_and_only_behind_trusted_proxies() {
    let up = Upstreams::start();
    let limits = [
        ("RATE_LIMIT_PER_PIPELINE", "off"),
        ("RATE_LIMIT_PER_SOURCE", "1/3600s"),
    ];
    let trusting = Process::spawn(
        BIN,
        &up.env_with(&[&limits[..], &[("SERVER_TRUSTED_PROXIES", "127.0.0.1")]].concat()),
    );
    let a = "X-Forwarded-For: 192.0.2.1";
    let b = "X-Forwarded-For: 192.0.2.2";
    assert_eq!(post(&trusting, "/token", &up.token(), &[a]).status, 200);
    assert_json_error(
        &post(&trusting, "/token", &up.token(), &[a]),
        429,
        "rate limited",
    );
    assert_eq!(
        post(&trusting, "/token", &up.token(), &[b]).status,
        200,
        "another client"
    );

    // Not a trusted proxy: every request is the peer's, whatever the header claims.
    let plain = Process::spawn(BIN, &up.env_with(&limits));
    assert_eq!(post(&plain, "/token", &up.token(), &[a]).status, 200);
    let r = post(&plain, "/token", &up.token(), &[b]);
    assert_json_error(&r, 429, "rate limited");
    assert_eq!(source_ips(&plain.audit_of(&r)), ("127.0.0.1", "127.0.0.1"));
}

#[test]
fn profile_sources_admit_only_their_ranges_and_are_checked_before_the_cache() {
    let up = Upstreams::start();
    let (_dir, file) = profiles_file();
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[
            ("PROFILES_FILE", &file),
            ("SERVER_TRUSTED_PROXIES", "127.0.0.1/32"),
        ]),
    );
    let jwt = up.token();
    let r = post(&p, "/token/office", &jwt, &["X-Forwarded-For: 192.0.2.5"]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.audit_of(&r)["vended"]["cache"], "miss");

    // The same token's cache key, from outside the profile's sources: refused, not served.
    let r = post(&p, "/token/office", &jwt, &["X-Forwarded-For: 203.0.113.5"]);
    assert_json_error(&r, 403, "forbidden");
    let audit = p.audit_of(&r);
    assert_eq!(
        audit["error"],
        "profile office: source 203.0.113.5 is not in the profile's sources"
    );
    assert_eq!(audit["vended"], Value::Null);
    assert_eq!(audit["profile"], "pipeline:office");
    assert_eq!(source_ips(&audit), ("203.0.113.5", "127.0.0.1"));

    let r = post(&p, "/token/office", &jwt, &["X-Forwarded-For: 2001:db8::1"]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.audit_of(&r)["vended"]["cache"], "hit", "an IPv6 client");
    assert_json_error(&post(&p, "/token/office", &jwt, &[]), 403, "forbidden");
    // The git route answers a source miss like a failed rule too.
    let r = p.post_with(
        "/git-credentials/office",
        &[
            &format!("Authorization: Bearer {jwt}"),
            "X-Forwarded-For: 203.0.113.5",
        ],
        support::kitebridge::GIT_BODY.as_bytes(),
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // A malformed range quarantines its profile.
    let r = post(&p, "/token/broken", &jwt, &["X-Forwarded-For: 192.0.2.5"]);
    assert_json_error(&r, 404, "profile unavailable");
    let error = p.audit_of(&r)["error"].as_str().unwrap().to_owned();
    assert!(
        error.ends_with(
            "$.pipeline.profiles[1].sources[0]: address has bits set beyond the prefix length"
        ),
        "{error}"
    );

    // Organization profiles too; the TCP peer is the client without a header.
    assert_eq!(post(&p, "/organization/token/lab", &jwt, &[]).status, 200);
    let r = post(
        &p,
        "/organization/token/lab",
        &jwt,
        &["X-Forwarded-For: 192.0.2.5"],
    );
    assert_json_error(&r, 403, "forbidden");
    assert_eq!(up.github.mints(), 2, "office once, lab once");
}

#[test]
fn an_ipv6_listener_admits_by_ipv6_ranges() {
    if TcpListener::bind("[::1]:0").is_err() {
        println!("SKIP: this machine has no IPv6 loopback (::1) to listen on");
        return;
    }
    let up = Upstreams::start();
    let (_dir, file) = profiles_file();
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[
            ("SERVER_HOST", "::1"),
            ("SERVER_ALLOWED_SOURCES", "::1/128"),
            ("PROFILES_FILE", &file),
        ]),
    );
    let r = post(&p, "/token", &up.token(), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(source_ips(&p.audit_of(&r)), ("::1", "::1"));
    // `office` admits 2001:db8::/32 only.
    let r = post(&p, "/token/office", &up.token(), &[]);
    assert_json_error(&r, 403, "forbidden");
    assert_eq!(
        p.audit_of(&r)["error"],
        "profile office: source ::1 is not in the profile's sources"
    );

    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[
            ("SERVER_HOST", "::1"),
            ("SERVER_ALLOWED_SOURCES", "2001:db8::/32, 127.0.0.0/8"),
        ]),
    );
    let r = post(&p, "/token", &up.token(), &[]);
    assert_json_error(&r, 403, "source not allowed");
    assert_eq!(
        p.audit_of(&r)["error"],
        "source ::1 is outside SERVER_ALLOWED_SOURCES"
    );
}

#[test]
fn bad_ranges_in_the_configuration_are_one_startup_problem() {
    let up = Upstreams::start();
    let mut env = up.env_with(&[
        ("SERVER_ALLOWED_SOURCES", "10.0.0.0/8, 10.1.0.0/8"),
        ("SERVER_TRUSTED_PROXIES", "proxy.internal"),
        ("RATE_LIMIT_MINTS", "many"),
        ("GITHUB_RATELIMIT_RESERVE", "-1"),
    ]);
    env.insert("AUDIT_LOG".into(), "stderr".into());
    let out = support::util::command_with_env(BIN, &env).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "SERVER_ALLOWED_SOURCES: entry 2: address has bits set beyond the prefix length",
        "SERVER_TRUSTED_PROXIES: entry 1: not an ip address",
        "RATE_LIMIT_MINTS: not COUNT/WINDOW",
        "GITHUB_RATELIMIT_RESERVE: not a whole number",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    assert!(
        !stderr.contains("proxy.internal"),
        "never the value:\n{stderr}"
    );
}

#[test]
fn profiles_check_and_explain_show_sources() {
    let (dir, file) = profiles_file();
    let out = Command::new(BIN)
        .args(["profiles", "check", &file])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "$.pipeline.profiles[1].sources[0]: address has bits set beyond the prefix length \
             (pipeline profile \"broken\" is unavailable)"
        ),
        "{stderr}"
    );

    let good = dir.join("good.json");
    std::fs::write(&good, PROFILES.replace("192.0.2.1/8", "192.0.2.1")).unwrap();
    let good = good.to_str().unwrap();
    let out = Command::new(BIN)
        .args(["profiles", "check", good])
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("pipeline:office: contents:read metadata:read; the requesting pipeline's own repository; no rules; sources 192.0.2.0/24, 2001:db8::/32"),
        "{stdout}"
    );

    let claims = dir.join("claims.json");
    std::fs::write(&claims, r#"{"pipeline_slug": "widgets"}"#).unwrap();
    let explain = |source: Option<&str>| {
        let mut args = vec![
            "profiles",
            "explain",
            "--profile",
            "office",
            "--claims",
            claims.to_str().unwrap(),
            "--profiles",
            good,
        ];
        if let Some(source) = source {
            args.extend(["--source", source]);
        }
        let out = Command::new(BIN).args(&args).env_clear().output().unwrap();
        // explain exits 0 when the verdict is "admitted", 1 otherwise.
        let admitted = String::from_utf8_lossy(&out.stdout).ends_with("verdict: admitted\n");
        assert_eq!(
            out.status.code(),
            Some(if admitted { 0 } else { 1 }),
            "{out:?}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = explain(Some("2001:db8::5"));
    assert!(
        text.contains("sources: 192.0.2.0/24, 2001:db8::/32: holds: 2001:db8::5 is inside them"),
        "{text}"
    );
    assert!(text.ends_with("verdict: admitted\n"), "{text}");
    let text = explain(Some("203.0.113.5"));
    assert!(
        text.contains("sources: 192.0.2.0/24, 2001:db8::/32: FAILS: 203.0.113.5 is outside them"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "verdict: denied: source 203.0.113.5 is outside the profile's sources, the server \
             answers 403 (forbidden)\n"
        ),
        "{text}"
    );
    let text = explain(None);
    assert!(
        text.contains(
            "sources: 192.0.2.0/24, 2001:db8::/32 (not checked: give --source ADDRESS to check one)"
        ),
        "{text}"
    );
}

#[test]
fn trusting_every_address_as_a_proxy_is_warned_about() {
    let up = Upstreams::start();
    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[("SERVER_TRUSTED_PROXIES", "0.0.0.0/0, ::/0")]),
    );
    assert!(
        p.stderr().contains(
            "SERVER_TRUSTED_PROXIES holds a /0 range: any client can name its own address"
        ),
        "{}",
        p.stderr()
    );
    // Which is why: any peer's header is then believed.
    let r = post(
        &p,
        "/token",
        &up.token(),
        &["X-Forwarded-For: 198.51.100.99"],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(source_ips(&p.audit_of(&r)), ("198.51.100.99", "127.0.0.1"));

    let p = Process::spawn(
        BIN,
        &up.env_with_no_rate_limits(&[("SERVER_TRUSTED_PROXIES", "127.0.0.1")]),
    );
    assert!(!p.stderr().contains("/0 range"), "{}", p.stderr());
}
