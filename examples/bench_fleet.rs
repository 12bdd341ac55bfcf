//! The shared cache's cost on the vend path, in one run against a real `redis-server` on
//! loopback: a cached `/token` with `CACHE_URL` unset vs set (in-process hits must pay no round
//! trip: target ratio ≤ 1.1; a second server without it gives the noise floor), an in-process miss answered by the shared cache (the added latency
//! of one round trip and one decryption), and, for the record, a cached vend when the per-pipeline
//! limit counts across the fleet (one script per request).
//!
//!     cargo run --release --example bench_fleet [SECONDS_PER_CASE]
//!
//! Four kitebridge servers run in this process against the test stand-ins, one keep-alive client
//! connection each case; the cases take turns in rounds of one second so machine noise falls on
//! all of them alike. Needs Debian's `redis-server`.

#[path = "../tests/support/mod.rs"]
mod support;

use kitebridge::{App, Config, Running};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use support::kitebridge::{ORG, Upstreams};
use support::redis::Redis;
use support::util::drive;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A ready in-process kitebridge configured by `env`.
fn start(env: BTreeMap<String, String>) -> Running {
    let config = Config::from_vars(&env).expect("bench configuration");
    let listener = TcpListener::bind("127.0.0.1:0").expect("port");
    let (tx, rx) = std::sync::mpsc::channel();
    let running = kitebridge::start(App::new(config).expect("app"), listener, move |_| {
        let _ = tx.send(());
    })
    .expect("start");
    rx.recv().expect("ready");
    running
}

fn token_request(jwt: &str) -> Vec<u8> {
    format!("POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {jwt}\r\nContent-Length: 0\r\n\r\n")
        .into_bytes()
}

struct Case {
    name: &'static str,
    addr: SocketAddr,
    requests: Vec<Vec<u8>>,
    latencies: Vec<Duration>,
    secs: f64,
}

impl Case {
    fn p(&self, q: f64) -> f64 {
        let mut all = self.latencies.clone();
        all.sort();
        all[((all.len() as f64 * q) as usize).min(all.len() - 1)].as_secs_f64() * 1e6
    }
    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let Some(redis) = Redis::start() else {
        return;
    };
    let up = Upstreams::start();
    up.buildkite
        .set_pipeline(ORG, "other", "git@github.com:acme/widgets.git");
    let env = |extra: &[(&str, &str)]| {
        let mut env =
            up.env_with_no_rate_limits(&[("AUDIT_LOG", "/dev/null"), ("LOG_LEVEL", "warn")]);
        for (k, v) in extra {
            env.insert((*k).into(), (*v).into());
        }
        env
    };
    let url = redis.url();
    let shared = [("CACHE_URL", url.as_str()), ("CACHE_ENCRYPTION_KEYS", KEY)];
    let local = start(env(&[]));
    let local_again = start(env(&[]));
    let with_cache = start(env(&shared));
    // An in-process cache of one entry, asked for two keys in turn: every vend misses it and is
    // answered by the shared cache.
    let one_entry = start(env(
        &[&shared[..], &[("TOKEN_CACHE_MAX_ENTRIES", "1")]].concat()
    ));
    let fleet_limit = start(env(&[
        &shared[..],
        &[("RATE_LIMIT_PER_PIPELINE", "100000000/1s")],
    ]
    .concat()));

    let jwt = |slug: &str| up.signer.token(&up.claims(slug));
    let (widgets, other) = (token_request(&jwt("widgets")), token_request(&jwt("other")));
    let mut cases = vec![
        Case {
            name: "cached, CACHE_URL unset",
            addr: local.addr,
            requests: vec![widgets.clone()],
            latencies: vec![],
            secs: 0.0,
        },
        Case {
            name: "cached, unset (2nd server)",
            addr: local_again.addr,
            requests: vec![widgets.clone()],
            latencies: vec![],
            secs: 0.0,
        },
        Case {
            name: "cached, CACHE_URL set",
            addr: with_cache.addr,
            requests: vec![widgets.clone()],
            latencies: vec![],
            secs: 0.0,
        },
        Case {
            name: "in-process miss, shared hit",
            addr: one_entry.addr,
            requests: vec![widgets.clone(), other.clone()],
            latencies: vec![],
            secs: 0.0,
        },
        Case {
            name: "cached, fleet-wide limit on",
            addr: fleet_limit.addr,
            requests: vec![widgets.clone()],
            latencies: vec![],
            secs: 0.0,
        },
    ];
    // Warm: every server has minted or read its tokens once.
    for case in &cases {
        drive(
            case.addr,
            &case.requests,
            Instant::now() + Duration::from_millis(300),
        );
    }
    let mints_before = up.github.mints();
    for round in 0..secs as usize {
        // Each round starts with another case, so no case always follows the same one.
        let count = cases.len();
        for i in 0..count {
            let case = &mut cases[(round + i) % count];
            let until = Instant::now() + Duration::from_secs(1);
            case.latencies
                .extend(drive(case.addr, &case.requests, until));
            case.secs += 1.0;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "command: cargo run --release --example bench_fleet {secs}   ({cores} cores shared by client, servers and redis-server; 1 connection; {secs} rounds of 1 s per case)\n"
    );
    println!(
        "{:<30} {:>9} {:>9} {:>9}",
        "case", "req/s", "p50 µs", "p99 µs"
    );
    for case in &cases {
        println!(
            "{:<30} {:>9.0} {:>9.1} {:>9.1}",
            case.name,
            case.rps(),
            case.p(0.5),
            case.p(0.99)
        );
    }
    let (unset, again, set, shared_hit, limited) =
        (&cases[0], &cases[1], &cases[2], &cases[3], &cases[4]);
    println!(
        "\nnoise floor, two servers both without CACHE_URL: p50 {:.3}, throughput {:.3}",
        again.p(0.5) / unset.p(0.5),
        unset.rps() / again.rps()
    );
    println!(
        "cached vend, CACHE_URL set / unset: p50 {:.3}, throughput {:.3}  (target ≤ 1.1: in-process hits pay no round trip)",
        set.p(0.5) / unset.p(0.5),
        unset.rps() / set.rps()
    );
    println!(
        "in-process miss answered by the shared cache: +{:.1} µs at p50 over an in-process hit",
        shared_hit.p(0.5) - set.p(0.5)
    );
    println!(
        "fleet-wide per-pipeline limit: +{:.1} µs at p50 per vend (one script per request)",
        limited.p(0.5) - set.p(0.5)
    );
    println!(
        "GitHub mints during the measured rounds: {}",
        up.github.mints() - mints_before
    );
    // Proof that the cases did what they say: the shared cache was used, never skipped.
    for (name, server) in [
        ("shared hit", &one_entry),
        ("fleet-wide limit", &fleet_limit),
    ] {
        let metrics = support::kitebridge::exchange(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .text();
        let ops: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("kitebridge_cache_operations_total"))
            .collect();
        println!("{name} server: {}", ops.join("; "));
    }
}
