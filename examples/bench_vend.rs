//! Cached `/token` throughput and latency against `/healthcheck`, in one run, over loopback with
//! keep-alive, at 1, 8 and 32 concurrent connections; plus the bare RSA verification cost for
//! the target "a cached vend costs less than twice a /healthcheck plus one RSA verification".
//!
//!     cargo run --release --example bench_vend [SECONDS_PER_CASE]
//!
//! kitebridge runs in-process against the test stand-ins (rate limits off). The first /token
//! request mints; every measured one is a cache hit (each still verifies its JWT).

#[path = "../tests/support/mod.rs"]
mod support;

use kitebridge::{App, Config, start};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use support::kitebridge::Upstreams;
use support::util::drive;

struct Result {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn run(addr: SocketAddr, requests: &[Vec<u8>], connections: usize, secs: f64) -> Result {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..connections)
        .map(|i| {
            let request = requests[i % requests.len()].clone();
            std::thread::spawn(move || drive(addr, std::slice::from_ref(&request), until))
        })
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    all.sort();
    let pick = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    Result {
        rps: all.len() as f64 / secs,
        p50: pick(0.50),
        p99: pick(0.99),
    }
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let up = Upstreams::start();
    let mut env = up.env();
    for (k, v) in [
        ("RATE_LIMIT_PER_PIPELINE", "off"),
        ("RATE_LIMIT_PER_SOURCE", "off"),
        ("AUDIT_LOG", "/dev/null"),
        ("SERVER_WORKERS", "16"),
    ] {
        env.insert(k.into(), v.into());
    }
    let config = Config::from_vars(&env).expect("bench configuration");
    let listener = TcpListener::bind("127.0.0.1:0").expect("port");
    let (tx, rx) = std::sync::mpsc::channel();
    let running = start(App::new(config).expect("app"), listener, move |_| {
        let _ = tx.send(());
    })
    .expect("start");
    rx.recv().expect("ready");
    let addr = running.addr;

    // A fixed set of valid tokens (distinct jti), all for the same pipeline: after the first
    // mint, every /token is a cache hit.
    let tokens: Vec<String> = (0..8)
        .map(|i| up.token_with(|c| c["jti"] = serde_json::Value::from(format!("bench-{i}"))))
        .collect();
    let token_requests: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| format!("POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\nContent-Length: 0\r\n\r\n").into_bytes())
        .collect();
    let health = vec![b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()];
    drive(
        addr,
        std::slice::from_ref(&token_requests[0]),
        Instant::now() + Duration::from_millis(300),
    ); // warm: one mint
    let rsa = up.signer.verify_cost();

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!(
        "command: cargo run --release --example bench_vend {secs}   ({cores} cores; client and server share them)"
    );
    println!(
        "bare RSA-2048 verify (ring), median: {:.1} µs\n",
        rsa.as_secs_f64() * 1e6
    );
    println!(
        "{:<13} {:>5} {:>11} {:>10} {:>10}",
        "route", "conns", "req/s", "p50 µs", "p99 µs"
    );
    for connections in [1, 8, 32] {
        let h = run(addr, &health, connections, secs);
        let t = run(addr, &token_requests, connections, secs);
        for (name, r) in [("/healthcheck", &h), ("/token cached", &t)] {
            println!(
                "{name:<13} {connections:>5} {:>11.0} {:>10.1} {:>10.1}",
                r.rps,
                r.p50.as_secs_f64() * 1e6,
                r.p99.as_secs_f64() * 1e6
            );
        }
        let budget = 2.0 * h.p50.as_secs_f64() + rsa.as_secs_f64();
        println!(
            "  latency: cached vend p50 / (2 × healthcheck p50 + RSA verify) = {:.2}  (target < 1)",
            t.p50.as_secs_f64() / budget
        );
        // With the machine saturated, CPU time per request is cores / throughput.
        let per_request = |rps: f64| cores / rps;
        println!(
            "  cost:    cached vend CPU/request / (2 × healthcheck CPU/request + RSA verify) = {:.2}  (target < 1; meaningful once saturated)\n",
            per_request(t.rps) / (2.0 * per_request(h.rps) + rsa.as_secs_f64())
        );
    }
    println!("GitHub mints during the run: {}", up.github.mints());
}
