//! The stand-ins for `bench/compare.sh`: GitHub, Buildkite and the Buildkite key set on
//! loopback (the same ones the integration tests use), plus everything the load generator
//! needs, written to OUT_DIR:
//!
//! - `env`: the kitebridge configuration pointing at the stand-ins, one `NAME=VALUE` a line;
//! - `repeated.txt`: one token for `acme/widgets` (a git credential helper presents the same
//!   token for minutes);
//! - `fresh.txt`: FRESH distinct tokens for `acme/widgets` (a new `jti` each);
//! - `pipelines.txt`: PIPELINES tokens, one per pipeline `acme/p0`, `acme/p1`, … (Buildkite
//!   knows every one of them, all on repository `acme/widgets`);
//! - `ring_verify_ns`: the bare `ring` RS256 verification cost, median, in nanoseconds;
//! - `ready`: written last.
//!
//! Token files are kept between runs while their tokens have more than 30 minutes left (they
//! are signed with the test key, which never changes), since signing 100 000 tokens takes a
//! while. Then it reads commands on stdin, answering each with one line on stdout:
//! - `counts`: `buildkite=N github_mints=M`;
//! - `warm HOST:PORT FILE LIMIT`: POSTs `/token` once with each of the first LIMIT tokens of
//!   FILE, over 32 keep-alive connections (filling the caches), then `warmed N non200=M`.
//!
//! End of input stops it.
//!
//!     cargo run --release --example bench_world OUT_DIR FRESH PIPELINES

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::Value;
use support::kitebridge::{PIPELINE, Upstreams, read_response};
use support::oidc::Signer;

/// Token life: long enough for a whole bench run and the next ones (at most 7200 accepted).
const LIFETIME_SECS: u64 = 7000;
/// Token files are signed anew when they have less than this left.
const KEEP_SECS: u64 = 1800;

fn now() -> u64 {
    kitebridge::now_unix()
}

/// Signs `count` tokens with claims from `claims(i)`, on every core.
fn sign_all(
    signer: &Signer,
    count: usize,
    claims: &(dyn Fn(usize) -> Value + Sync),
) -> Vec<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = vec![String::new(); count];
    let chunk = count.div_ceil(cores).max(1);
    std::thread::scope(|scope| {
        for (c, slice) in out.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (j, slot) in slice.iter_mut().enumerate() {
                    *slot = signer.token(&claims(c * chunk + j));
                }
            });
        }
    });
    out
}

/// Whether `path` holds `count` lines signed at least [`KEEP_SECS`] before they expire.
fn reusable(dir: &Path, name: &str, count: usize) -> bool {
    let meta = std::fs::read_to_string(dir.join(format!("{name}.meta"))).unwrap_or_default();
    let mut parts = meta
        .split_whitespace()
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (n, exp) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    n == count as u64 && exp > now() + KEEP_SECS
}

fn write_tokens(dir: &Path, name: &str, tokens: &[String], exp: u64) {
    std::fs::write(dir.join(format!("{name}.txt")), tokens.join("\n") + "\n").expect("write");
    std::fs::write(
        dir.join(format!("{name}.meta")),
        format!("{} {exp}\n", tokens.len()),
    )
    .expect("write");
}

/// One `/token` per token of the first `limit` lines of `file`, over 32 connections.
fn warm(addr: SocketAddr, file: &Path, limit: usize) -> (usize, usize) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let tokens: Vec<&str> = text.lines().filter(|l| !l.is_empty()).take(limit).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..32 {
            scope.spawn(|| {
                let mut stream = TcpStream::connect(addr).ok();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(i) else { break };
                    let request = format!(
                        "POST /token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
                    );
                    let answer = stream.as_mut().and_then(|s| {
                        s.write_all(request.as_bytes()).ok()?;
                        read_response(s)
                    });
                    if answer.as_ref().is_none_or(|r| r.status != 200) {
                        failed.fetch_add(1, Ordering::Relaxed);
                        stream = TcpStream::connect(addr).ok();
                    }
                }
            });
        }
    });
    (tokens.len(), failed.into_inner())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(fresh), Some(pipelines)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: bench_world OUT_DIR FRESH PIPELINES");
        std::process::exit(2);
    };
    let dir = Path::new(dir);
    let fresh: usize = fresh.parse().expect("FRESH is a number");
    let pipelines: usize = pipelines.parse().expect("PIPELINES is a number");
    std::fs::create_dir_all(dir).expect("OUT_DIR");
    let _ = std::fs::remove_file(dir.join("ready"));

    let up = Upstreams::start();
    for i in 0..pipelines {
        up.buildkite
            .set_pipeline("acme", &format!("p{i}"), "git@github.com:acme/widgets.git");
    }
    let mut env = up.env();
    for (k, v) in [("LOG_LEVEL", "warn"), ("AUDIT_LOG", "stdout")] {
        env.insert(k.into(), v.into());
    }
    let lines: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(dir.join("env"), lines).expect("write env");

    let issued = now();
    let exp = issued + LIFETIME_SECS;
    let claims = |pipeline: &str, jti: String| {
        let mut c = up.claims(pipeline);
        c["iat"] = issued.into();
        c["nbf"] = issued.into();
        c["exp"] = exp.into();
        c["jti"] = jti.into();
        c
    };
    let started = Instant::now();
    if !reusable(dir, "repeated", 1) {
        let one = sign_all(&up.signer, 1, &|_| claims(PIPELINE, "repeated".into()));
        write_tokens(dir, "repeated", &one, exp);
    }
    if !reusable(dir, "fresh", fresh) {
        let all = sign_all(&up.signer, fresh, &|i| {
            claims(PIPELINE, format!("fresh-{i}"))
        });
        write_tokens(dir, "fresh", &all, exp);
    }
    if !reusable(dir, "pipelines", pipelines) {
        let all = sign_all(&up.signer, pipelines, &|i| {
            claims(&format!("p{i}"), format!("pipeline-{i}"))
        });
        write_tokens(dir, "pipelines", &all, exp);
    }
    eprintln!(
        "bench_world: tokens ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ns = up.signer.verify_cost().as_nanos();
    std::fs::write(dir.join("ring_verify_ns"), format!("{ns}\n")).expect("write");
    std::fs::write(dir.join("ready"), "ready\n").expect("write");

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["counts"] => println!(
                "buildkite={} github_mints={}",
                up.buildkite.calls(),
                up.github.mints()
            ),
            ["warm", addr, file, limit] => {
                let addr: SocketAddr = addr.parse().expect("warm HOST:PORT");
                let (n, failed) = warm(addr, Path::new(file), limit.parse().unwrap_or(0));
                println!("warmed {n} non200={failed}");
            }
            _ => println!("unknown command"),
        }
        let _ = std::io::stdout().flush();
    }
}
