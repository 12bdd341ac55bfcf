//! A profile's `ttl`, through the one schema both file formats share: read on pipeline and
//! organization profiles and on `pipeline.defaults`, a bad one quarantining its profile (or, on
//! the defaults, failing the file), and shown by `check` and `explain`.
#![forbid(unsafe_code)]

use kitebridge::{
    DEFAULT_TTL_SECS, Generation, Lookup, Profile, ProfileTtl, ProfileTtlError,
    check_profile_file as check, explain_profile as explain,
};
use serde_json::{Map, json};

fn found(lookup: Lookup<'_>) -> &Profile {
    match lookup {
        Lookup::Found(profile) => profile,
        other => panic!("expected a profile, got {other:?}"),
    }
}

const JSON: &str = r#"{
  "pipeline": {
    "defaults": {"permissions": ["contents:read"], "ttl": "15m"},
    "profiles": [
      {"name": "short", "permissions": ["contents:read"], "ttl": "90s"},
      {"name": "plain", "permissions": ["contents:read"]}
    ]
  },
  "organization": {
    "profiles": [{"name": "deploy", "repositories": ["r"], "permissions": ["contents:write"], "ttl": "1h"}]
  }
}"#;

const YAML: &str = "pipeline:
  defaults:
    permissions: [contents:read]
    ttl: 15m
  profiles:
    - name: short
      permissions: [contents:read]
      ttl: 90s
    - name: plain
      permissions: [contents:read]
organization:
  profiles:
    - name: deploy
      repositories: [r]
      permissions: [contents:write]
      ttl: 1h
";

#[test]
fn json_and_yaml_read_the_same_ttls() {
    for text in [JSON, YAML] {
        let generation = Generation::parse(text.as_bytes()).unwrap();
        let ttl = |lookup| found(lookup).ttl();
        assert_eq!(ttl(generation.pipeline("default")).secs(), 900, "{text}");
        assert_eq!(ttl(generation.pipeline("short")).secs(), 90);
        assert_eq!(ttl(generation.organization("deploy")).secs(), 3600);
        assert!(ttl(generation.organization("deploy")).given());
        let plain = ttl(generation.pipeline("plain"));
        assert_eq!((plain.secs(), plain.given()), (DEFAULT_TTL_SECS, false));
    }
    assert_eq!(ProfileTtl::parse("2m").map(ProfileTtl::secs), Ok(120));
    assert_eq!(
        ProfileTtl::parse("59s"),
        Err(ProfileTtlError::OutOfRange { secs: 59 })
    );
}

#[test]
fn a_bad_ttl_quarantines_its_profile_only() {
    let rows = [
        ("30s", "ttl of 30 s is outside 60..=3600 s"),
        ("2h", "ttl of 7200 s is outside 60..=3600 s"),
        (
            "1.5h",
            "ttl is not whole seconds, minutes or hours (\"90s\", \"15m\", \"1h\")",
        ),
        (
            "90",
            "ttl is not whole seconds, minutes or hours (\"90s\", \"15m\", \"1h\")",
        ),
    ];
    for (ttl, why) in rows {
        let document = json!({
            "pipeline": {"profiles": [
                {"name": "good", "permissions": ["contents:read"], "ttl": "5m"},
                {"name": "bad", "permissions": ["contents:read"], "ttl": ttl}
            ]},
            "organization": {"profiles": [
                {"name": "bad", "repositories": ["r"], "permissions": ["contents:read"], "ttl": ttl}
            ]}
        });
        let generation = Generation::parse(document.to_string().as_bytes()).unwrap();
        assert_eq!(
            generation.pipeline("bad"),
            Lookup::Unavailable(&format!("$.pipeline.profiles[1].ttl: {why}")),
            "{ttl}"
        );
        assert_eq!(
            generation.organization("bad"),
            Lookup::Unavailable(&format!("$.organization.profiles[0].ttl: {why}"))
        );
        assert_eq!(found(generation.pipeline("good")).ttl().secs(), 300);
    }
}

#[test]
fn a_bad_default_ttl_or_a_ttl_of_the_wrong_type_fails_the_file() {
    let bad_default =
        json!({"pipeline": {"defaults": {"permissions": ["contents:read"], "ttl": "10s"}}});
    assert_eq!(
        Generation::parse(bad_default.to_string().as_bytes())
            .unwrap_err()
            .problems(),
        ["$.pipeline.defaults.ttl: ttl of 10 s is outside 60..=3600 s"]
    );
    let both = json!({"pipeline": {"defaults": {"permissions": [], "ttl": "1d"}}});
    assert_eq!(
        Generation::parse(both.to_string().as_bytes())
            .unwrap_err()
            .problems(),
        [
            "$.pipeline.defaults.permissions: empty (the default profile needs permissions)",
            "$.pipeline.defaults.ttl: ttl is not whole seconds, minutes or hours (\"90s\", \"15m\", \"1h\")"
        ]
    );
    let number = json!({"pipeline": {"profiles": [{"name": "n", "permissions": ["contents:read"], "ttl": 90}]}});
    assert_eq!(
        Generation::parse(number.to_string().as_bytes())
            .unwrap_err()
            .problems(),
        ["$.pipeline.profiles[0].ttl: expected a string, found a number"]
    );
    let yaml = "pipeline:\n  defaults:\n    permissions: [contents:read]\n    ttl: 5h\n";
    assert_eq!(
        Generation::parse(yaml.as_bytes()).unwrap_err().problems(),
        ["$.pipeline.defaults.ttl (line 4, column 5): ttl of 18000 s is outside 60..=3600 s"]
    );
}

#[test]
fn check_validates_and_shows_ttls() {
    let summary = check(JSON.as_bytes()).unwrap();
    assert!(
        summary.contains("pipeline:short: contents:read metadata:read; the requesting pipeline's own repository; no rules; ttl 90s\n"),
        "{summary}"
    );
    assert!(summary.contains("pipeline:default: contents:read metadata:read; the requesting pipeline's own repository; no rules; ttl 15m (900 s)\n"), "{summary}");
    assert!(
        summary.contains("; no rules\n"),
        "no ttl, nothing shown: {summary}"
    );
    let bad = JSON.replace("\"90s\"", "\"9s\"");
    assert_eq!(
        check(bad.as_bytes()).unwrap_err(),
        [
            "$.pipeline.profiles[0].ttl: ttl of 9 s is outside 60..=3600 s (pipeline profile \"short\" is unavailable)"
        ]
    );
}

#[test]
fn explain_shows_the_ttl_verdict() {
    let generation = Generation::parse(YAML.as_bytes()).unwrap();
    let short = explain(&generation, "short", &Map::new());
    assert!(
        short.contains("\nttl: 90s: the token is revoked 90 s after it is minted (or earlier, by a shorter expires_in on /oauth/token)\n"),
        "{short}"
    );
    let plain = explain(&generation, "plain", &Map::new());
    assert!(
        plain.contains("\nttl: none (GitHub's hour): the token lives until GitHub's expiry, no early revocation\n"),
        "{plain}"
    );
}
