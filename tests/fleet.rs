//! Many kitebridge processes sharing one real `redis-server`: one GitHub mint for the whole fleet,
//! a lock owner that dies, the cache server stopped and started under load, entries tampered
//! with, swapped and replayed under another prefix, key rotation, the fleet-wide pipeline limit,
//! a cache server that is unreachable, silent or not Redis at all, TLS with a test CA, and every
//! key and value on the server scanned for tokens, repository names and pipeline slugs.
//!
//! Each test starts its own `redis-server` on a free loopback port; without the binary it prints
//! SKIP with the reason (CI installs Debian's `redis-server`).
#![forbid(unsafe_code)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::github::{Fail, Route};
use support::kitebridge::{ORG, PIPELINE, Process, Upstreams, hashed_token, vended};
use support::redis::{Redis, Value};
use support::util::{all_at_once, fixture, poll_until};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");
/// Test-only encryption keys (bytes 0..32 and 32..64), protecting nothing.
const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

/// The stand-ins' configuration with the shared cache at `url`, rate limits off, then `extra`.
/// The operation budget is 1 s rather than 200 ms: these tests count mints exactly, and on a
/// loaded 2-core machine a scheduling pause must not count as a cache failure (the tests of
/// failures set their own).
fn fleet_env(up: &Upstreams, url: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let base = [
        ("CACHE_URL", url),
        ("CACHE_ENCRYPTION_KEYS", KEY_A),
        ("CACHE_TIMEOUT_MS", "1000"),
    ];
    up.env_with_no_rate_limits(&[&base[..], extra].concat())
}

fn spawn(up: &Upstreams, url: &str, extra: &[(&str, &str)]) -> Process {
    Process::spawn(BIN, &fleet_env(up, url, extra))
}

/// A sample's value from `/metrics` (`series` is the name with its labels), if present.
fn metric(p: &Process, series: &str) -> Option<f64> {
    let text = p.get("/metrics").text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn backend_up(p: &Process) -> Option<f64> {
    metric(p, "kitebridge_cache_backend_up")
}

/// A token for pipeline `acme/<slug>`.
fn jwt_for(up: &Upstreams, slug: &str) -> String {
    up.signer.token(&up.claims(slug))
}

/// `count` pipelines `p0…` at the Buildkite stand-in, all building `acme/widgets`.
fn pipelines(up: &Upstreams, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let slug = format!("p{i}");
            up.buildkite
                .set_pipeline(ORG, &slug, "git@github.com:acme/widgets.git");
            slug
        })
        .collect()
}

#[test]
fn three_instances_twenty_concurrent_identical_misses_mint_once() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstreams::start();
    // The property is the fleet's single flight: a generous operation budget, so a starved
    // machine's slow cache operation (past it a request goes on without the shared cache, by
    // design) cannot pass for a second flight.
    let fleet: Vec<Arc<Process>> = (0..3)
        .map(|_| Arc::new(spawn(&up, &redis.url(), &[("CACHE_TIMEOUT_MS", "5000")])))
        .collect();
    for p in &fleet {
        assert_eq!(backend_up(p), Some(1.0), "{}", p.stderr());
    }
    // A slow GitHub, so all 60 requests are in flight while the one mint runs.
    up.github.set_fail(Fail::Delay(Duration::from_millis(500)));
    let jwt = up.token();
    let next = Arc::new(AtomicUsize::new(0));
    let targets = fleet.clone();
    let answers = all_at_once(60, move || {
        let p = &targets[next.fetch_add(1, Ordering::SeqCst) % 3];
        let r = p.token("/token", &jwt);
        (
            r.status,
            r.text(),
            p.audit_of(&r)["vended"]["cache"].clone(),
        )
    });
    let tokens: BTreeSet<String> = answers
        .iter()
        .map(|(status, body, _)| {
            assert_eq!(*status, 200, "{body}");
            serde_json::from_str::<serde_json::Value>(body).unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let flights = || {
        let text: Vec<String> = fleet
            .iter()
            .map(|p| {
                p.get("/metrics")
                    .text()
                    .lines()
                    .filter(|l| l.starts_with("kitebridge_cache_"))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        text.join("\n--\n")
    };
    assert_eq!(
        up.github.mints(),
        1,
        "one mint for the whole fleet:\n{}",
        flights()
    );
    assert_eq!(up.github.calls(Route::Mint), 1);
    assert_eq!(tokens.len(), 1, "every request got the one token");
    let outcomes: Vec<String> = answers
        .iter()
        .map(|(_, _, cache)| cache.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "miss").count(), 1);
    assert_eq!(
        outcomes.iter().filter(|o| *o == "shared").count(),
        2,
        "one shared-cache flight in each other instance: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| ["miss", "shared", "coalesced", "hit"].contains(&o.as_str())),
        "{outcomes:?}"
    );
    // Hits now come from each instance's own cache.
    for p in &fleet {
        let r = p.token("/token", &up.token());
        assert_eq!(p.audit_of(&r)["vended"]["cache"], "hit");
    }
    assert_eq!(up.github.mints(), 1);
}

#[test]
fn an_owner_killed_holding_the_lock_delays_the_others_but_fails_none() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstreams::start();
    let owner = spawn(&up, &redis.url(), &[]);
    let others: Vec<Arc<Process>> = (0..2)
        .map(|_| Arc::new(spawn(&up, &redis.url(), &[])))
        .collect();
    up.github.set_fail(Fail::Delay(Duration::from_secs(2)));
    let jwt = up.token();
    let owner_jwt = jwt.clone();
    let owner_addr = owner.addr;
    // Its connection dies with it: no answer is expected.
    let doomed = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(owner_addr).unwrap();
        let raw = format!(
            "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {owner_jwt}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = s.write_all(raw.as_bytes());
        let _ = s.read_to_end(&mut Vec::new());
    });
    assert!(
        poll_until(Duration::from_secs(10), || up.github.calls(Route::Mint)
            == 1),
        "the owner's mint did not start"
    );
    let mut lock = redis.client();
    let locks: Vec<String> = lock
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("kitebridge:l:"))
        .collect();
    assert_eq!(locks.len(), 1, "the owner holds the key's lock");
    let started = Instant::now();
    let waiters: Vec<_> = others
        .iter()
        .map(|p| {
            let (p, jwt) = (Arc::clone(p), jwt.clone());
            std::thread::spawn(move || {
                let r = p.token("/token", &jwt);
                (r.status, r.text())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(owner); // SIGKILL, lock held
    let _ = doomed.join();
    let answers: Vec<(u16, String)> = waiters.into_iter().map(|h| h.join().unwrap()).collect();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert_eq!(answers[0].1, answers[1].1, "the same token for both");
    assert_eq!(
        up.github.calls(Route::Mint),
        2,
        "the dead owner's mint, then one for the other two"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "the others waited for the lock to expire ({:?})",
        started.elapsed()
    );
}

#[test]
fn the_cache_server_stopped_under_load_and_started_again_fails_no_request() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = Upstreams::start();
    let slugs = pipelines(&up, 40);
    // The fleet-wide pipeline limit is on (and generous), so every request uses the server.
    let extra = [("RATE_LIMIT_PER_PIPELINE", "100000/1s")];
    let fleet: Vec<Arc<Process>> = (0..3)
        .map(|_| Arc::new(spawn(&up, &redis.url(), &extra)))
        .collect();
    let jwts: Arc<Vec<String>> = Arc::new(slugs.iter().map(|s| jwt_for(&up, s)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..6)
        .map(|t| {
            let (fleet, jwts, stop, failures, sent) = (
                fleet.clone(),
                Arc::clone(&jwts),
                Arc::clone(&stop),
                Arc::clone(&failures),
                Arc::clone(&sent),
            );
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::SeqCst) {
                    let p = &fleet[i % 3];
                    let r = p.token("/token", &jwts[(i * 7) % jwts.len()]);
                    sent.fetch_add(1, Ordering::SeqCst);
                    if r.status != 200 {
                        failures.lock().unwrap().push((r.status, r.text()));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    redis.stop();
    let stopped_at = sent.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        fleet.iter().all(|p| backend_up(p) == Some(0.0)),
        "every instance noticed the outage"
    );
    redis.start_again();
    let restarted_at = sent.load(Ordering::SeqCst);
    assert!(
        poll_until(Duration::from_secs(15), || fleet
            .iter()
            .all(|p| backend_up(p) == Some(1.0))),
        "sharing did not resume"
    );
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    for h in load {
        h.join().unwrap();
    }
    let total = sent.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(
        restarted_at > stopped_at,
        "requests were served during the outage"
    );
    println!(
        "{total} requests, {} during the outage, 0 failed",
        restarted_at - stopped_at
    );
    for p in fleet.iter() {
        assert!(p.stderr().contains("unavailable"), "{}", p.stderr());
        assert!(p.stderr().contains("available (after"), "{}", p.stderr());
    }
    // Sharing resumed: a key none has seen is minted once for all three.
    up.buildkite
        .set_pipeline(ORG, "fresh", "git@github.com:acme/widgets.git");
    let before = up.github.mints();
    let jwt = jwt_for(&up, "fresh");
    up.github.set_fail(Fail::Delay(Duration::from_millis(300)));
    let targets = fleet.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let statuses = all_at_once(6, move || {
        targets[next.fetch_add(1, Ordering::SeqCst) % 3]
            .token("/token", &jwt)
            .status
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(up.github.mints(), before + 1);
}

/// The `t:` keys on the server.
fn entries(redis: &Redis, prefix: &str) -> Vec<String> {
    redis
        .client()
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("{prefix}t:")))
        .collect()
}

/// The one new `t:` key after `before`.
fn new_entry(redis: &Redis, before: &[String]) -> String {
    let now = entries(redis, "kitebridge:");
    let fresh: Vec<&String> = now.iter().filter(|k| !before.contains(k)).collect();
    assert_eq!(fresh.len(), 1, "{now:?}");
    fresh[0].clone()
}

#[test]
fn tampered_swapped_and_replayed_entries_are_never_served() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstreams::start();
    up.buildkite
        .set_pipeline(ORG, "gadgets", "git@github.com:acme/gears.git");
    let first = spawn(&up, &redis.url(), &[]);
    let widgets = vended(&first.token("/token", &up.token()));
    let widgets_key = new_entry(&redis, &[]);
    let gadgets = vended(&first.token("/token", &jwt_for(&up, "gadgets")));
    let gadgets_key = new_entry(&redis, std::slice::from_ref(&widgets_key));
    let mut client = redis.client();
    let widgets_entry = client.get(&widgets_key).unwrap();
    let gadgets_entry = client.get(&gadgets_key).unwrap();

    // An untouched entry is served to another instance: the baseline.
    let reader = spawn(&up, &redis.url(), &[]);
    let r = reader.token("/token", &up.token());
    assert_eq!(vended(&r), widgets);
    assert_eq!(reader.audit_of(&r)["vended"]["cache"], "shared");
    assert_eq!(up.github.mints(), 2);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "tampered",
            {
                let mut e = widgets_entry.clone();
                let last = e.len() - 1;
                e[last] ^= 1;
                e
            },
            "authentication",
        ),
        ("swapped", gadgets_entry.clone(), "authentication"),
        ("truncated", widgets_entry[..10].to_vec(), "truncated"),
    ];
    for (what, value, reason) in cases {
        client.set(&widgets_key, &value);
        let fresh = spawn(&up, &redis.url(), &[]);
        let mints = up.github.mints();
        let r = fresh.token("/token", &up.token());
        let token = vended(&r);
        assert_ne!(token, widgets, "{what}: not the stored token");
        assert_ne!(token, gadgets, "{what}: not the other pipeline's token");
        assert_eq!(up.github.mints(), mints + 1, "{what}: minted anew");
        assert_eq!(fresh.audit_of(&r)["vended"]["cache"], "miss", "{what}");
        assert_eq!(
            metric(
                &fresh,
                &format!("kitebridge_cache_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{what}"
        );
        let rewritten = client.get(&widgets_key).unwrap();
        assert_ne!(rewritten, value, "{what}: overwritten by the fresh mint");
        assert!(fresh.stderr().contains("was not served"), "{what}");
    }

    // Replayed under another deployment's prefix: the same hash, another namespace.
    let replayed_key = widgets_key.replacen("kitebridge:", "other:", 1);
    client.set(&replayed_key, &widgets_entry);
    client.cmd(&["PEXPIRE", &replayed_key, "600000"]);
    let other = spawn(&up, &redis.url(), &[("CACHE_PREFIX", "other:")]);
    let mints = up.github.mints();
    let r = other.token("/token", &up.token());
    assert_ne!(vended(&r), widgets, "replayed: not served");
    assert_eq!(up.github.mints(), mints + 1);
    assert_eq!(
        metric(
            &other,
            "kitebridge_cache_rejected_total{reason=\"authentication\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn rotation_entries_written_under_the_old_first_key_still_read() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstreams::start();
    up.buildkite
        .set_pipeline(ORG, "gadgets", "git@github.com:acme/gears.git");
    let old = spawn(&up, &redis.url(), &[]);
    let token = vended(&old.token("/token", &up.token()));
    let both = format!("{KEY_B}\n{KEY_A}");
    let rotated = spawn(&up, &redis.url(), &[("CACHE_ENCRYPTION_KEYS", &both)]);
    let r = rotated.token("/token", &up.token());
    assert_eq!(vended(&r), token, "read with the old key, now second");
    assert_eq!(rotated.audit_of(&r)["vended"]["cache"], "shared");
    assert_eq!(up.github.mints(), 1);
    // Written under the new first key, after the old key is dropped: still read.
    let new_token = vended(&rotated.token("/token", &jwt_for(&up, "gadgets")));
    let new_only = spawn(&up, &redis.url(), &[("CACHE_ENCRYPTION_KEYS", KEY_B)]);
    let mints = up.github.mints();
    assert_eq!(
        vended(&new_only.token("/token", &jwt_for(&up, "gadgets"))),
        new_token
    );
    assert_eq!(up.github.mints(), mints, "served from the shared cache");
    // An instance that only knows the old key cannot read it: it mints (and never fails).
    let stale = spawn(&up, &redis.url(), &[]);
    let r = stale.token("/token", &jwt_for(&up, "gadgets"));
    assert_ne!(vended(&r), new_token);
    assert_eq!(up.github.mints(), mints + 1);
    assert_eq!(
        metric(
            &stale,
            "kitebridge_cache_rejected_total{reason=\"unknown_key\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn no_token_repository_or_pipeline_name_is_on_the_server() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstreams::start();
    let slugs = pipelines(&up, 5);
    // A slow refill, so every pipeline's limiter state is still on the server when it is scanned.
    let extra = [("RATE_LIMIT_PER_PIPELINE", "5/3600s")];
    let fleet: Vec<Process> = (0..2).map(|_| spawn(&up, &redis.url(), &extra)).collect();
    for (i, slug) in slugs.iter().enumerate() {
        let p = &fleet[i % 2];
        assert_eq!(p.token("/token", &jwt_for(&up, slug)).status, 200);
        assert_eq!(
            p.git(
                "/git-credentials",
                &jwt_for(&up, slug),
                support::kitebridge::GIT_BODY
            )
            .status,
            200
        );
    }
    let r = fleet[0].token("/organization/token/default", &up.token());
    let _ = r.status;
    let mut client = redis.client();
    let keys = client.keys();
    assert!(
        keys.len() >= 5 + 5,
        "entries and rate-limit state: {keys:?}"
    );
    let mut forbidden: Vec<String> = up
        .github
        .issued()
        .iter()
        .flat_map(|i| [i.token.clone(), hashed_token(&i.token)])
        .collect();
    assert!(!forbidden.is_empty());
    forbidden.extend(
        [
            "acme", "widgets", "gears", PIPELINE, "default", "contents", "github",
        ]
        .map(String::from),
    );
    forbidden.extend(slugs.iter().map(|s| format!("{ORG}/{s}")));
    for key in &keys {
        let value = if key == "kitebridge:v" {
            // The revocation schedule: there when a mint straddled a second, so that its end of
            // life (counted from kitebridge's clock) fell a second before the expiry the GitHub
            // stand-in counted from its own. Its members are sealed revocations.
            let Value::Array(members) = client.cmd(&["ZRANGE", key, "0", "-1"]) else {
                panic!("ZRANGE {key}");
            };
            members
                .iter()
                .flat_map(|m| m.bulk().unwrap_or_default().to_vec())
                .collect()
        } else {
            let (kind, hash) = key
                .strip_prefix("kitebridge:")
                .and_then(|rest| rest.split_once(':'))
                .unwrap_or_else(|| panic!("{key}"));
            assert!(["t", "l", "r"].contains(&kind), "{key}");
            assert!(
                hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                "{key}"
            );
            client.get(key).unwrap_or_default()
        };
        for needle in &forbidden {
            assert!(!key.contains(needle.as_str()), "{key} names {needle}");
            assert!(
                !value.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "the value of {key} holds {needle}"
            );
        }
    }
    println!(
        "{} keys scanned: {}",
        keys.len(),
        keys.iter()
            .map(|k| k.get(..13).unwrap_or(k))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(" ")
    );
}

#[test]
fn the_pipeline_limit_counts_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstreams::start();
    let extra = [("RATE_LIMIT_PER_PIPELINE", "5/60s")];
    let fleet: Vec<Process> = (0..3).map(|_| spawn(&up, &redis.url(), &extra)).collect();
    let mut statuses = Vec::new();
    for round in 0..3 {
        for p in &fleet {
            let r = p.token("/token", &up.token());
            if r.status == 429 {
                let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
            }
            statuses.push((round, r.status));
        }
    }
    let ok = statuses.iter().filter(|(_, s)| *s == 200).count();
    let limited = statuses.iter().filter(|(_, s)| *s == 429).count();
    assert_eq!((ok, limited), (5, 4), "{statuses:?}");
    // Another pipeline has its own bucket.
    up.buildkite
        .set_pipeline(ORG, "gadgets", "git@github.com:acme/widgets.git");
    assert_eq!(
        fleet[0].token("/token", &jwt_for(&up, "gadgets")).status,
        200
    );
}

#[test]
fn an_unreachable_silent_or_foreign_cache_server_fails_no_request() {
    if !support::redis::available() {
        return;
    }
    let up = Upstreams::start();
    // Nothing listens.
    let closed = format!("redis://127.0.0.1:{}", support::util::free_port());
    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("redis://{}", silent.local_addr().unwrap());
    // Answers everything with an HTTP error.
    let foreign = support::server::Server::start(|_| support::server::Response::empty(400));
    let foreign_url = format!("redis://{}", foreign.addr());
    for url in [closed, silent_url, foreign_url] {
        let extra = [
            ("RATE_LIMIT_PER_PIPELINE", "1000/60s"),
            ("CACHE_TIMEOUT_MS", "200"),
        ];
        let p = spawn(&up, &url, &extra);
        for _ in 0..3 {
            let r = p.token("/token", &up.token());
            assert_eq!(r.status, 200, "{url}: {}", r.text());
        }
        assert_eq!(p.get("/healthcheck").status, 200);
        assert_eq!(backend_up(&p), Some(0.0), "{url}");
        assert!(p.stderr().contains("unavailable"), "{url}: {}", p.stderr());
    }
}

#[test]
fn a_password_protected_server_and_secrets_kept_out_of_the_log() {
    let password = "cache-password-not-a-secret-7f3a";
    let Some(redis) = Redis::start_with(&["--requirepass", password]) else {
        return;
    };
    let up = Upstreams::start();
    let dir = support::util::temp_dir("cache-secrets");
    std::fs::write(dir.join("cache-password"), format!("{password}\n")).unwrap();
    std::fs::write(dir.join("cache-encryption-keys"), format!("{KEY_A}\n")).unwrap();
    let mut env = up.env_with_no_rate_limits(&[
        ("CACHE_URL", &redis.url()),
        ("CREDENTIALS_DIRECTORY", &dir.display().to_string()),
        ("LOG_LEVEL", "trace"),
    ]);
    env.remove("CACHE_ENCRYPTION_KEYS");
    let a = Process::spawn(BIN, &env);
    let b = Process::spawn(BIN, &env);
    let token = vended(&a.token("/token", &up.token()));
    let r = b.token("/token", &up.token());
    assert_eq!(
        vended(&r),
        token,
        "shared through the password-protected server"
    );
    assert_eq!(b.audit_of(&r)["vended"]["cache"], "shared");
    let wrong = spawn(
        &up,
        &redis.url(),
        &[("CACHE_PASSWORD", "wrong-password-0000")],
    );
    assert_eq!(wrong.token("/token", &up.token()).status, 200);
    assert_eq!(backend_up(&wrong), Some(0.0));
    assert!(
        wrong.stderr().contains("login refused"),
        "{}",
        wrong.stderr()
    );
    for p in [&a, &b, &wrong] {
        let log = p.stderr() + &p.audit_text();
        for secret in [password, "wrong-password-0000", KEY_A, &token] {
            assert!(!log.contains(secret), "a secret in the log or audit");
        }
    }
}

#[test]
fn tls_with_a_test_certificate_authority() {
    let (cert, key, ca) = (
        fixture("cache-tls/server.pem"),
        fixture("cache-tls/server.key"),
        fixture("cache-tls/ca.pem"),
    );
    let tls_args = [
        "--tls-port",
        "PORT",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ];
    let Some(redis) = Redis::start_with(&tls_args) else {
        return;
    };
    let up = Upstreams::start();
    let url = format!("rediss://localhost:{}", redis.port);
    let a = spawn(&up, &url, &[("SSL_CERT_FILE", &ca)]);
    let b = spawn(&up, &url, &[("SSL_CERT_FILE", &ca)]);
    assert_eq!(backend_up(&a), Some(1.0), "{}", a.stderr());
    let token = vended(&a.token("/token", &up.token()));
    let r = b.token("/token", &up.token());
    assert_eq!(vended(&r), token, "shared over TLS");
    assert_eq!(up.github.mints(), 1);
    // An authority not trusted (the system bundle only): the server is not used, nothing fails.
    if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        let p = spawn(&up, &url, &[]);
        assert_eq!(p.token("/token", &up.token()).status, 200);
        assert_eq!(backend_up(&p), Some(0.0), "{}", p.stderr());
        assert!(p.stderr().contains("tls failed"), "{}", p.stderr());
    } else {
        println!("SKIP (part): no system CA bundle to distrust the test authority with");
    }
}

#[test]
fn status_says_shared_cache_unavailable_while_it_is() {
    use std::os::unix::net::UnixDatagram;
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let up = Upstreams::start();
    let dir = support::util::temp_dir("notify");
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut env = fleet_env(&up, &redis.url(), &[]);
    env.insert("NOTIFY_SOCKET".into(), path.display().to_string());
    let p = Process::spawn(BIN, &env);
    let statuses_until = |want: &dyn Fn(&str) -> bool, within: Duration| {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let hit = want(&text);
                seen.push(text);
                if hit {
                    return (true, seen);
                }
            }
        }
        (false, seen)
    };
    let (ready, seen) = statuses_until(&|t| t.contains("READY=1"), Duration::from_secs(10));
    assert!(ready, "{seen:?}");
    assert!(
        !seen.iter().any(|d| d.contains("shared cache unavailable")),
        "{seen:?}"
    );
    redis.stop();
    // No request needed: the probe thread notices within its health interval.
    let (down, seen) = statuses_until(
        &|t| t.starts_with("STATUS=") && t.contains("shared cache unavailable"),
        Duration::from_secs(12),
    );
    assert!(down, "{seen:?}\n{}", p.stderr());
    assert_eq!(
        p.get("/healthcheck").status,
        200,
        "readiness means can vend"
    );
    assert_eq!(p.token("/token", &up.token()).status, 200);
    redis.start_again();
    let (up_again, seen) = statuses_until(
        &|t| t.starts_with("STATUS=") && !t.contains("shared cache unavailable"),
        Duration::from_secs(12),
    );
    assert!(up_again, "{seen:?}");
    assert_eq!(backend_up(&p), Some(1.0));
}

#[test]
fn the_mint_budget_counts_across_the_fleet() {
    let Some(redis) = Redis::start() else { return };
    let up = Upstreams::start();
    let slugs = pipelines(&up, 4);
    let extra = [("RATE_LIMIT_MINTS", "2/3600s")];
    let fleet: Vec<Process> = (0..2).map(|_| spawn(&up, &redis.url(), &extra)).collect();
    // Two misses on the first instance spend the fleet's budget…
    for slug in &slugs[..2] {
        assert_eq!(fleet[0].token("/token", &jwt_for(&up, slug)).status, 200);
    }
    // …so the other instance's misses wait, though its own local budget is untouched.
    for slug in &slugs[2..] {
        let r = fleet[1].token("/token", &jwt_for(&up, slug));
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["error"], "mint budget exhausted");
        let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
        assert!((1..=1800).contains(&retry), "{retry}");
    }
    assert_eq!(up.github.calls(Route::Mint), 2);
    // A token another instance minted is a shared hit, which spends nothing.
    let r = fleet[1].token("/token", &jwt_for(&up, &slugs[0]));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fleet[1].audit_of(&r)["vended"]["cache"], "shared");
    assert_eq!(up.github.calls(Route::Mint), 2);
}
