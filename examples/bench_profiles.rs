//! Profile files at scale: parse time of files of 1 000, 10 000 and as many profiles with rules
//! as fit in `PROFILES_MAX_BYTES` (per profile, to show it is linear), and exec → ready of the
//! real server binary with a 10 000-profile file next to the built-in profiles alone.
//!
//!     cargo build --release --bin kitebridge && cargo run --release --example bench_profiles [BIN]
//!
//! BIN defaults to `target/release/kitebridge`. The server runs against the test stand-ins.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kitebridge::{DEFAULT_PROFILES_MAX_BYTES, Generation};
use serde_json::{Value, json};
use support::kitebridge::Upstreams;
use support::util::{free_port, temp_dir};

/// A profile file of `count` profiles (half pipeline, half organization), each with rules.
fn document(count: usize) -> Vec<u8> {
    let pipeline: Vec<Value> = (0..count / 2)
        .map(|i| {
            json!({
                "name": format!("pipeline-profile-{i}"),
                "match": [
                    {"claim": "pipeline_slug", "valueGlob": format!("team-{i}-*")},
                    {"claim": "build_branch", "valuePattern": "^(main|release/.+)$"},
                ],
                "permissions": ["contents:write", "pull_requests:write"],
            })
        })
        .collect();
    let organization: Vec<Value> = (0..count - count / 2)
        .map(|i| {
            json!({
                "name": format!("org-profile-{i}"),
                "match": [
                    {"claim": "pipeline_slug", "value": format!("deploy-{i}")},
                    {"claim": "build_branch", "value": "main"},
                ],
                "repositories": [format!("service-{i}"), format!("config-{i}")],
                "permissions": ["contents:read", "deployments:write"],
            })
        })
        .collect();
    let doc = json!({
        "pipeline": {"defaults": {"permissions": ["contents:read"]}, "profiles": pipeline},
        "organization": {"profiles": organization},
    });
    serde_json::to_vec_pretty(&doc).expect("json")
}

fn parse_time(bytes: &[u8]) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let generation = Generation::parse_within(bytes, usize::MAX).expect("valid file");
        best = best.min(t.elapsed());
        assert_eq!(generation.quarantined().count(), 0);
    }
    best
}

/// Milliseconds from exec to the first `/healthcheck` 200 (polled every millisecond).
fn exec_to_ready(bin: &str, up: &Upstreams, profiles: Option<&std::path::Path>) -> f64 {
    let port = free_port();
    let mut env = up.env();
    env.insert("SERVER_PORT".into(), port.to_string());
    env.insert("AUDIT_LOG".into(), "/dev/null".into());
    env.insert("LOG_LEVEL".into(), "warn".into());
    if let Some(path) = profiles {
        env.insert("PROFILES_FILE".into(), path.display().to_string());
    }
    let started = Instant::now();
    let mut child = Command::new(bin)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn kitebridge");
    let addr = format!("127.0.0.1:{port}");
    let request = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let ready = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break None;
        }
        if let Ok(mut s) = TcpStream::connect(&addr) {
            use std::io::{Read, Write};
            let mut answer = Vec::new();
            if s.write_all(request).is_ok()
                && s.read_to_end(&mut answer).is_ok()
                && answer.starts_with(b"HTTP/1.1 200")
            {
                break Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    ready.expect("kitebridge became ready").as_secs_f64() * 1e3
}

fn main() {
    let bin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/kitebridge".into());
    println!("command: cargo run --release --example bench_profiles {bin}");
    println!(
        "{:>9} {:>11} {:>10} {:>14}",
        "profiles", "bytes", "parse ms", "µs / profile"
    );
    let mut largest = 0;
    let mut count = 1_000;
    loop {
        let bytes = document(count);
        if bytes.len() > DEFAULT_PROFILES_MAX_BYTES {
            break;
        }
        let t = parse_time(&bytes);
        println!(
            "{count:>9} {:>11} {:>10.1} {:>14.2}",
            bytes.len(),
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e6 / count as f64
        );
        largest = count;
        count = match count {
            1_000 => 10_000,
            n => n * 2,
        };
    }
    println!("largest tried within the default PROFILES_MAX_BYTES: {largest} profiles");

    let up = Upstreams::start();
    let dir = temp_dir("bench-profiles");
    let path = dir.path().join("profiles.json");
    std::fs::write(&path, document(10_000)).expect("write profile file");
    let mut builtin = Vec::new();
    let mut big = Vec::new();
    for _ in 0..5 {
        builtin.push(exec_to_ready(&bin, &up, None));
        big.push(exec_to_ready(&bin, &up, Some(&path)));
    }
    builtin.sort_by(f64::total_cmp);
    big.sort_by(f64::total_cmp);
    println!(
        "exec → ready, median of 5: built-in profiles {:.1} ms; 10 000-profile file ({} bytes) {:.1} ms  (target ≤ 100 ms)",
        builtin[2],
        std::fs::metadata(&path).map_or(0, |m| m.len()),
        big[2]
    );
}
