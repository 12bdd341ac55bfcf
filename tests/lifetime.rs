//! Token lifetime through the running process and the GitHub stand-in: a profile's `ttl` and the
//! exchange's `expires_in` end tokens early, every response form reports that end of life, the
//! cache re-mints past half a short life, the revoker revokes at the end of life (retrying a
//! failure), SIGTERM carries out the revocations due within the drain, and with the shared cache
//! another instance carries out a revocation whose minting instance has gone.
//!
//! Real durations: the shortest ttl is 60 s, so each test takes about a minute (the two run side
//! by side).

mod support;

use serde_json::Value;
use std::time::Duration;
use support::github::{GitHubStandIn, Issued, Route};
use support::kitebridge::{GIT_BODY, Process, Upstreams, exchange, hashed_token, vended};
use support::redis::{Redis, Value as RedisValue};
use support::util::{TempDir, now, poll_for, signal, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");
const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange";
const JWT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt";

const PROFILES: &str = r#"{
  "pipeline": {"profiles": [
    {"name": "short", "permissions": ["contents:read"], "ttl": "60s"},
    {"name": "long", "permissions": ["contents:read"], "ttl": "10m"}
  ]},
  "organization": {"profiles": [
    {"name": "short-org", "repositories": ["gears"], "permissions": ["contents:read"], "ttl": "1m"}
  ]}
}"#;

/// The stand-ins and a ready kitebridge serving [`PROFILES`], with `extra` configuration.
fn serving(extra: &[(&str, &str)]) -> (Upstreams, Process, TempDir) {
    let up = Upstreams::start();
    let (p, dir) = another(&up, extra);
    (up, p, dir)
}

/// Another ready kitebridge for the same stand-ins, serving [`PROFILES`].
fn another(up: &Upstreams, extra: &[(&str, &str)]) -> (Process, TempDir) {
    let dir = temp_dir("lifetime");
    let file = dir.join("profiles.json");
    std::fs::write(&file, PROFILES).unwrap();
    let mut env = vec![("PROFILES_FILE", file.to_str().unwrap())];
    env.extend_from_slice(extra);
    let p = Process::spawn(BIN, &up.env_with_no_rate_limits(&env));
    (p, dir)
}

fn exchange_form(p: &Process, jwt: &str, extra: &str) -> support::kitebridge::HttpResponse {
    let body =
        format!("grant_type={GRANT}&subject_token={jwt}&subject_token_type={JWT_TYPE}{extra}");
    let raw = format!(
        "POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(p.addr, raw.as_bytes())
}

/// The `expiry` of a JSON token answer, checked equal to `expiresAt`, in Unix seconds.
fn expiry(r: &support::kitebridge::HttpResponse) -> u64 {
    let body = r.json();
    assert_eq!(body["expiry"], body["expiresAt"], "{body}");
    kitebridge::parse_rfc3339(body["expiry"].as_str().unwrap()).unwrap()
}

/// An exchange answer's token and `expires_in`.
fn exchanged(r: &support::kitebridge::HttpResponse) -> (String, u64) {
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["expires_in"].as_u64().unwrap(),
    )
}

fn issued(github: &GitHubStandIn, token: &str) -> Issued {
    github
        .issued()
        .into_iter()
        .find(|i| i.token == token)
        .expect("issued by the stand-in")
}

/// Waits (up to `within`) until the stand-in has revoked every one of `tokens`.
fn wait_revoked(github: &GitHubStandIn, tokens: &[&str], within: Duration) {
    let done = poll_for(within, || {
        tokens
            .iter()
            .all(|t| issued(github, t).revoked)
            .then_some(())
    });
    assert!(done.is_some(), "not all revoked within {within:?}");
}

/// The `vended` part of the audit record that first handed out `token`.
fn vended_record(p: &Process, token: &str) -> Value {
    let hashed = hashed_token(token);
    poll_for(Duration::from_secs(5), || {
        p.audit(0)
            .into_iter()
            .find(|l| l["vended"]["hashedToken"] == hashed.as_str())
    })
    .map(|l| l["vended"].clone())
    .unwrap_or_else(|| panic!("no audit record vending it; stderr:\n{}", p.stderr()))
}

/// A `vended` record's `expiry`, Unix seconds.
fn end_of(vended: &Value) -> u64 {
    kitebridge::parse_rfc3339(vended["expiry"].as_str().unwrap()).unwrap()
}

/// The revocation audit record of `token`.
fn revocation_record(p: &Process, token: &str) -> Value {
    let hashed = hashed_token(token);
    poll_for(Duration::from_secs(5), || {
        p.audit(0)
            .into_iter()
            .find(|l| l["type"] == "revocation" && l["hashedToken"] == hashed.as_str())
    })
    .unwrap_or_else(|| panic!("no revocation record; stderr:\n{}", p.stderr()))
}

/// Asserts that `token`, whose reported end of life is `end`, was revoked at the stand-in at
/// `end` or within `slack` seconds after it.
fn assert_revoked_at(github: &GitHubStandIn, token: &str, end: u64, slack: u64) {
    let at = issued(github, token).revoked_at.expect("revoked");
    assert!(
        (end * 1000..=(end + slack) * 1000).contains(&at),
        "revoked at {at} ms, end of life {end} s"
    );
}

#[test]
fn short_lives_are_reported_everywhere_cached_for_half_and_revoked_at_their_end() {
    let (up, p, _dir) = serving(&[]);
    let jwt = up.token();

    // A 60 s pipeline profile: JSON, git and exchange answers report one end of life.
    let before = now();
    let first = p.token("/token/short", &jwt);
    let a = vended(&first);
    let end_a = expiry(&first);
    assert!((before + 59..=now() + 60).contains(&end_a), "{end_a}");
    assert!(
        issued(&up.github, &a).expires_at > end_a,
        "before GitHub's hour"
    );
    let mint_audit = p.audit_of(&first);
    assert_eq!(mint_audit["vended"]["cache"], "miss");
    assert_eq!(mint_audit["vended"]["expiry"], kitebridge::rfc3339(end_a));
    assert_eq!(mint_audit["vended"]["revokeAt"], kitebridge::rfc3339(end_a));
    let git = p.git("/git-credentials/short", &jwt, GIT_BODY);
    assert_eq!(git.status, 200, "{}", git.text());
    let text = git.text();
    assert!(
        text.contains(&format!("password={a}\n")),
        "the cached token"
    );
    assert!(
        text.contains(&format!("password_expiry_utc={end_a}\n")),
        "{text}"
    );
    let (token, expires_in) = exchanged(&exchange_form(&p, &jwt, "&audience=pipeline%3Ashort"));
    assert_eq!(token, a, "the cached token");
    let left = end_a.saturating_sub(now());
    assert!(
        (left.saturating_sub(1)..=left + 1).contains(&expires_in),
        "{expires_in} vs {left}"
    );

    // A 1 m organization profile.
    let org = p.token("/organization/token/short-org", &jwt);
    let o = vended(&org);
    let end_o = expiry(&org);
    assert!((before + 59..=now() + 60).contains(&end_o), "{end_o}");

    // expires_in on the 3600 s default profile: capped, and a cached token is served only if it
    // ends no later than asked.
    let (c, in_c) = exchanged(&exchange_form(&p, &jwt, "&expires_in=120"));
    assert!((115..=120).contains(&in_c), "{in_c}");
    let c_vended = vended_record(&p, &c);
    assert_eq!(c_vended["revokeAt"], c_vended["expiry"]);
    assert!(end_of(&c_vended) <= now() + 120, "{c_vended}");
    let (d, in_d) = exchanged(&exchange_form(&p, &jwt, ""));
    assert_ne!(d, c, "GitHub's hour is not what the 120 s caller got");
    assert!(in_d > 3000, "{in_d}");
    assert!(
        vended_record(&p, &d).get("revokeAt").is_none(),
        "GitHub's expiry ends it"
    );
    let (f, in_f) = exchanged(&exchange_form(&p, &jwt, "&expires_in=60"));
    assert!(
        f != c && f != d,
        "the 120 s token outlives what this caller asked for"
    );
    assert!((55..=60).contains(&in_f), "{in_f}");
    let end_f = end_of(&vended_record(&p, &f));
    let (again, _) = exchanged(&exchange_form(&p, &jwt, "&expires_in=120"));
    assert_eq!(again, c, "cached for others asking the same");

    // Past half of its 60 s life the cached token is no longer served: a new one is minted.
    std::thread::sleep(Duration::from_secs((end_a - 29).saturating_sub(now())));
    let later = p.token("/token/short", &jwt);
    let b = vended(&later);
    assert_ne!(b, a, "re-minted past half its life");
    assert_eq!(p.audit_of(&later)["vended"]["cache"], "miss");

    // The revoker revokes at the end of life (one attempt failing first: retried).
    up.github.fail_revocations(1);
    wait_revoked(&up.github, &[&a, &o, &f], Duration::from_secs(100));
    assert_revoked_at(&up.github, &a, end_a, 5);
    assert_revoked_at(&up.github, &o, end_o, 5);
    assert_revoked_at(&up.github, &f, end_f, 6);
    for token in [&b, &c, &d] {
        assert!(!issued(&up.github, token).revoked, "not yet due");
    }
    let record = revocation_record(&p, &a);
    assert_eq!(record["requestId"], mint_audit["requestId"]);
    assert_eq!(record["scheduled"], kitebridge::rfc3339(end_a));
    assert_eq!(record["outcome"], "revoked");
    assert!(record["actual"].is_string(), "{record}");
    let attempts: Vec<u64> = [&a, &o, &f]
        .iter()
        .map(|t| revocation_record(&p, t)["attempts"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts.iter().sum::<u64>(), 4, "one retried: {attempts:?}");
    assert_eq!(up.github.calls(Route::Revoke), 4);
    let metrics = p.get("/metrics").text();
    for line in [
        "kitebridge_revocations_total{outcome=\"revoked\"} 3",
        "kitebridge_revocations_total{outcome=\"failed\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[test]
fn sigterm_carries_out_the_revocations_due_within_the_drain_and_counts_the_rest() {
    let (up, mut p, _dir) = serving(&[("SERVER_SHUTDOWN_TIMEOUT_SECS", "90")]);
    let jwt = up.token();
    let short = p.token("/token/short", &jwt);
    let (a, end_a) = (vended(&short), expiry(&short));
    let long = p.token("/token/long", &jwt);
    let (l, end_l) = (vended(&long), expiry(&long));
    assert!(end_l >= end_a + 500, "{end_a} {end_l}");
    // The first two attempts fail: retried after 1 s and 2 s, still inside the drain.
    up.github.fail_revocations(2);
    signal(p.pid(), "TERM");
    assert_eq!(
        p.wait_exit(Duration::from_secs(120)),
        Some(0),
        "{}",
        p.stderr()
    );
    assert_revoked_at(&up.github, &a, end_a, 8);
    assert!(!issued(&up.github, &l).revoked, "due after the drain");
    assert_eq!(up.github.calls(Route::Revoke), 3);
    let stderr = p.stderr();
    assert!(
        stderr.contains("(1 tokens left to GitHub's expiry)"),
        "{stderr}"
    );
    let done = revocation_record(&p, &a);
    assert_eq!(
        (done["outcome"].as_str(), done["attempts"].as_u64()),
        (Some("revoked"), Some(3))
    );
    let left = revocation_record(&p, &l);
    assert_eq!(left["outcome"], "left");
    assert_eq!(left["scheduled"], kitebridge::rfc3339(end_l));
    assert!(left["actual"].is_null(), "{left}");
    assert_eq!(left["requestId"], p.audit_of(&long)["requestId"]);
}

/// Test-only encryption key (bytes 0..32), protecting nothing.
const CACHE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The settings of an instance on the shared cache at `url`.
fn shared_cache(url: &str) -> [(&'static str, &str); 3] {
    [
        ("CACHE_URL", url),
        ("CACHE_ENCRYPTION_KEYS", CACHE_KEY),
        ("CACHE_TIMEOUT_MS", "1000"),
    ]
}

#[test]
fn with_the_shared_cache_another_instance_revokes_for_a_minter_that_is_gone() {
    let Some(redis) = Redis::start() else {
        return; // SKIP printed
    };
    let up = Upstreams::start();
    let url = redis.url();
    let fleet = shared_cache(&url);
    let (minter, _minter_dir) = another(&up, &fleet);
    let (survivor, _survivor_dir) = another(&up, &fleet);
    let jwt = up.token();
    let minted = minter.token("/token/short", &jwt);
    let (t, end_t) = (vended(&minted), expiry(&minted));
    let mint_request = minted.header("X-Request-Id").unwrap().to_owned();
    let shared = survivor.token("/token/short", &jwt);
    assert_eq!(vended(&shared), t, "served from the shared cache");
    assert_eq!(expiry(&shared), end_t);
    let own = survivor.token("/organization/token/short-org", &jwt);
    let (o, end_o) = (vended(&own), expiry(&own));
    let mut client = redis.client();
    assert_eq!(
        client.cmd(&["ZCARD", "kitebridge:v"]),
        RedisValue::Int(2),
        "both scheduled"
    );
    drop(minter); // killed: its revocation is left in the shared schedule

    wait_revoked(&up.github, &[&o, &t], Duration::from_secs(120));
    assert_revoked_at(&up.github, &o, end_o, 5);
    // Taken over once overdue by 10 s, looked for every 5 s.
    assert_revoked_at(&up.github, &t, end_t + 10, 8);
    let record = revocation_record(&survivor, &t);
    assert_eq!(record["requestId"], mint_request.as_str());
    assert_eq!(record["outcome"], "revoked");
    let own_records = survivor
        .audit(0)
        .into_iter()
        .filter(|l| l["type"] == "revocation" && l["hashedToken"] == hashed_token(&o).as_str())
        .count();
    assert_eq!(own_records, 1, "claimed by its minter, carried out once");
    assert_eq!(client.cmd(&["ZCARD", "kitebridge:v"]), RedisValue::Int(0));
    assert_eq!(up.github.calls(Route::Revoke), 2);
}

#[test]
fn a_revocation_the_shared_cache_lost_is_still_carried_out_by_its_minter() {
    let Some(redis) = Redis::start() else {
        return; // SKIP printed
    };
    let up = Upstreams::start();
    let url = redis.url();
    let fleet = shared_cache(&url);
    let (minter, _minter_dir) = another(&up, &fleet);
    let jwt = up.token();
    let minted = minter.token("/token/short", &jwt);
    let (t, end_t) = (vended(&minted), expiry(&minted));
    let mut client = redis.client();
    assert_eq!(client.cmd(&["ZCARD", "kitebridge:v"]), RedisValue::Int(1));
    // The server loses the schedule (a restart without persistence, a flush, eviction).
    assert_eq!(client.cmd(&["DEL", "kitebridge:v"]), RedisValue::Int(1));

    wait_revoked(&up.github, &[&t], Duration::from_secs(120));
    assert_revoked_at(&up.github, &t, end_t, 5);
    assert_eq!(revocation_record(&minter, &t)["outcome"], "revoked");
}
