//! A bounded soak run: kitebridge in a child process in front of the stand-ins (GitHub,
//! Buildkite, the OIDC key set), driven for N minutes by a mix of valid, invalid and oversized
//! requests on every route, while the key set rotates, the profile file is rewritten (a new
//! generation each time), and GitHub and Buildkite fail now and then. Every answer is checked
//! against what its request deserved; at the end it prints the server's RSS, threads and open
//! descriptors at start and end, the answers by status, and the wrong answers (expected 0).
//!
//!     cargo run --release --example soak -- --minutes 5
//!
//! The child is this example run again with `--serve`: the library's `serve::start` on a
//! configuration from the environment, the same server `main` runs (without its systemd and
//! signal wiring), so the numbers measure the server alone, not the load generator.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::buildkite::BkFail;
use support::github::Fail;
use support::kitebridge::{AUDIENCE, HttpResponse, ORG, PIPELINE, Upstreams, hashed_token};
use support::oidc::{Signer, buildkite_claims, jwks_json};
use support::util::{free_port, now, poll_until, temp_dir};

const WORKERS: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        serve_child();
    }
    let minutes: u64 = match args.as_slice() {
        [] => 1,
        [flag, n] if flag == "--minutes" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };
    soak(Duration::from_secs(minutes * 60));
}

fn usage() -> ! {
    eprintln!("usage: soak [--minutes N]");
    std::process::exit(2);
}

/// The child: kitebridge on the configuration in the environment, until killed.
fn serve_child() -> ! {
    let _ = simple_logger::SimpleLogger::new()
        .with_level(log::LevelFilter::Warn)
        .init();
    let config = kitebridge::Config::from_env().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let listener = kitebridge::bind(&config).expect("listen");
    let app = kitebridge::App::new(config).expect("start");
    let running = kitebridge::start(app, listener, |_| {}).expect("serve");
    running.wait();
    std::process::exit(0)
}

/// What the server process uses, from `/proc`.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    threads: u64,
    fds: usize,
}

fn usage_of(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    Usage {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds,
    }
}

/// The profile file, generation `n` (the unused profile's name changes the digest).
fn profiles(n: u64) -> String {
    format!(
        r#"{{
  "pipeline": {{
    "profiles": [
      {{ "name": "reader", "permissions": ["contents:read"] }},
      {{ "name": "release", "match": [ {{ "claim": "build_branch", "value": "release" }} ],
         "permissions": ["contents:write"] }},
      {{ "name": "unused-{n}", "permissions": ["issues:read"] }}
    ]
  }},
  "organization": {{
    "profiles": [
      {{ "name": "plugins", "repositories": ["widgets", "gears"], "permissions": ["contents:read"] }}
    ]
  }}
}}"#
    )
}

/// Faults and rotation, as the workers must know them to judge an answer.
#[derive(Default)]
struct World {
    /// An upstream fault is on (or ended less than 2 s ago): misses may be 503.
    upstream_trouble: AtomicBool,
    /// Since when (Unix seconds) key b has been published; 0 while it is not.
    b_published_since: AtomicU64,
    stop: AtomicBool,
}

#[derive(Default)]
struct Tally {
    by_status: BTreeMap<u16, u64>,
    by_kind: BTreeMap<&'static str, u64>,
    wrong: Vec<String>,
}

/// A tiny deterministic PRNG (xorshift64*), one per worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn send(addr: SocketAddr, raw: &[u8]) -> Result<HttpResponse, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => {
            Ok(HttpResponse::from_head(&parsed, buf[n..].to_vec()))
        }
        _ => Err(format!("no complete response ({} bytes)", buf.len())),
    }
}

fn post(path: &str, headers: &[String], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        raw.push_str(h);
        raw.push_str("\r\n");
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn bearer(jwt: &str) -> String {
    format!("Authorization: Bearer {jwt}")
}

/// One request of a random kind: its bytes, its kind, and the statuses it deserves (plus a
/// check of a 200's body).
struct Case {
    kind: &'static str,
    raw: Vec<u8>,
    allowed: Vec<u16>,
    body: Body,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Any,
    TokenJson,
    GitPassword,
    Empty,
    Exchange,
}

struct Keys {
    a: Signer,
    b: Signer,
    stranger: Signer,
}

fn claims(pipeline: &str) -> serde_json::Value {
    let mut c = buildkite_claims(ORG, pipeline, now());
    c["aud"] = AUDIENCE.into();
    c
}

fn case(rng: &mut Rng, keys: &Keys, world: &World) -> Case {
    let trouble = world.upstream_trouble.load(Ordering::SeqCst);
    let vend = |ok: Vec<u16>| {
        if trouble {
            [ok, vec![503]].concat()
        } else {
            ok
        }
    };
    let valid = keys.a.token(&claims(PIPELINE));
    let git_own = "protocol=https\nhost=github.com\npath=acme/widgets.git";
    match rng.below(20) {
        0..=3 => Case {
            kind: "valid /token",
            raw: post("/token", &[bearer(&valid)], b""),
            allowed: vend(vec![200]),
            body: Body::TokenJson,
        },
        4 => Case {
            kind: "valid /token/reader (other pipeline)",
            raw: post("/token/reader", &[bearer(&keys.a.token(&claims("gears")))], b""),
            allowed: vend(vec![200]),
            body: Body::TokenJson,
        },
        5 | 6 => Case {
            kind: "valid /git-credentials",
            raw: post("/git-credentials", &[bearer(&valid)], git_own.as_bytes()),
            allowed: vend(vec![200]),
            body: Body::GitPassword,
        },
        7 => Case {
            kind: "git, another repository (not mine)",
            raw: post(
                "/git-credentials",
                &[bearer(&valid)],
                b"protocol=https\nhost=github.com\npath=acme/other.git",
            ),
            allowed: vend(vec![200]),
            body: Body::Empty,
        },
        8 => Case {
            kind: "valid /organization/token/plugins",
            raw: post("/organization/token/plugins?repository-scope=gears", &[bearer(&valid)], b""),
            allowed: vend(vec![200]),
            body: Body::TokenJson,
        },
        9 => {
            let form = format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
                 &subject_token={valid}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt"
            );
            Case {
                kind: "valid /oauth/token",
                raw: post(
                    "/oauth/token",
                    &["Content-Type: application/x-www-form-urlencoded".into()],
                    form.as_bytes(),
                ),
                allowed: vend(vec![200]),
                body: Body::Exchange,
            }
        }
        10 => {
            let published = world.b_published_since.load(Ordering::SeqCst);
            if published > 0 && now() >= published + 35 {
                Case {
                    kind: "valid, signed by the rotated-in key",
                    raw: post("/token", &[bearer(&keys.b.token(&claims(PIPELINE)))], b""),
                    allowed: vend(vec![200]),
                    body: Body::TokenJson,
                }
            } else {
                Case {
                    kind: "signed by an unknown key",
                    raw: post("/token", &[bearer(&keys.stranger.token(&claims(PIPELINE)))], b""),
                    allowed: vec![401],
                    body: Body::Any,
                }
            }
        }
        11 => {
            let mut c = claims(PIPELINE);
            c["exp"] = (now() - 100).into();
            c["iat"] = (now() - 400).into();
            Case {
                kind: "expired",
                raw: post("/token", &[bearer(&keys.a.token(&c))], b""),
                allowed: vec![401],
                body: Body::Any,
            }
        }
        12 => Case {
            kind: "garbage token",
            raw: post("/git-credentials", &["Authorization: Bearer x.y.z".into()], git_own.as_bytes()),
            allowed: vec![401],
            body: Body::Any,
        },
        13 => Case {
            kind: "rules not met",
            raw: post("/token/release", &[bearer(&valid)], b""),
            allowed: vec![403],
            body: Body::Any,
        },
        14 => Case {
            kind: "unknown profile",
            raw: post("/token/nope", &[bearer(&valid)], b""),
            allowed: vec![404],
            body: Body::Any,
        },
        15 => {
            // Announced, not sent: the answer comes before the body (as a client that waits for
            // 100-continue would see it).
            let raw = format!(
                "POST /token HTTP/1.1\r\nHost: x\r\n{}\r\nExpect: 100-continue\r\n\
                 Content-Length: 20481\r\n\r\n",
                bearer(&valid)
            );
            Case {
                kind: "oversized body",
                raw: raw.into_bytes(),
                allowed: vec![413],
                body: Body::Any,
            }
        }
        16 => {
            let raw = format!(
                "POST /token HTTP/1.1\r\nHost: x\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nGET /x HTTP/1.1\r\n\r\n",
                bearer(&valid)
            );
            Case {
                kind: "malformed trailer",
                raw: raw.into_bytes(),
                allowed: vec![400],
                body: Body::Any,
            }
        }
        17 => Case {
            kind: "smuggling (CL+TE)",
            raw: b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            allowed: vec![400],
            body: Body::Any,
        },
        18 => Case {
            kind: "health check",
            raw: b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            allowed: vec![200],
            body: Body::Any,
        },
        _ => Case {
            kind: "wrong method / unknown path",
            raw: if rng.below(2) == 0 {
                b"GET /token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()
            } else {
                b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()
            },
            allowed: vec![404, 405],
            body: Body::Any,
        },
    }
}

/// Why `r` is not what `case` deserved, if it is not.
fn judge(case: &Case, r: &HttpResponse) -> Option<String> {
    if !case.allowed.contains(&r.status) {
        return Some(format!(
            "status {} (expected {:?}): {}",
            r.status,
            case.allowed,
            r.text()
        ));
    }
    if r.header("x-request-id").is_none() || r.header("cache-control") != Some("no-store") {
        return Some("missing X-Request-Id or Cache-Control: no-store".into());
    }
    if r.status != 200 {
        return r
            .text()
            .contains("ghs_")
            .then(|| "a token in a refusal".into());
    }
    let json = || serde_json::from_slice::<serde_json::Value>(&r.body).ok();
    let good = match case.body {
        Body::Any => true,
        Body::Empty => r.body.is_empty(),
        Body::TokenJson => json().is_some_and(|v| {
            let token = v["token"].as_str().unwrap_or("");
            token.starts_with("ghs_") && v["hashedToken"] == hashed_token(token)
        }),
        Body::Exchange => json().is_some_and(|v| {
            let token = v["access_token"].as_str().unwrap_or("");
            token.starts_with("ghs_") && v["hashed_token"] == hashed_token(token)
        }),
        Body::GitPassword => r.text().lines().any(|l| l.starts_with("password=ghs_")),
    };
    (!good).then(|| format!("unexpected 200 body: {}", r.text()))
}

fn spawn_server(env: &BTreeMap<String, String>) -> Child {
    let exe = std::env::current_exe().expect("the soak's own path");
    let mut cmd = Command::new(exe);
    cmd.arg("--serve").env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server")
}

fn soak(length: Duration) {
    let up = Upstreams::start();
    up.buildkite
        .set_pipeline(ORG, "gears", "git@github.com:acme/gears.git");
    let keys = Keys {
        a: Signer::a(),
        b: Signer::b(),
        // A well-formed RS256 key the key set never publishes.
        stranger: Signer::from_fixture("test-github-app-key.pkcs8.pem"),
    };
    let dir = temp_dir("soak");
    let profile_file = dir.join("profiles.json");
    std::fs::write(&profile_file, profiles(0)).unwrap();
    let port = free_port();
    let env = up.env_with(&[
        ("SERVER_PORT", &port.to_string()),
        ("PROFILES_FILE", &profile_file.display().to_string()),
        ("AUDIT_LOG", &dir.join("audit.log").display().to_string()),
        ("RATE_LIMIT_PER_PIPELINE", "off"),
        ("RATE_LIMIT_PER_SOURCE", "off"),
        ("PIPELINE_CACHE_SECS", "5"),
        ("LOG_LEVEL", "warn"),
    ]);
    let mut child = spawn_server(&env);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let health = b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let ready = poll_until(Duration::from_secs(20), || {
        send(addr, health).is_ok_and(|r| r.status == 200)
    });
    assert!(ready, "the server did not become ready");
    let pid = child.id();
    // Warm up, so "start" is a serving server, not an empty one.
    for _ in 0..50 {
        let _ = send(
            addr,
            &post("/token", &[bearer(&keys.a.token(&claims(PIPELINE)))], b""),
        );
    }
    let start = usage_of(pid);
    println!(
        "soak: {} min, {WORKERS} client threads, server pid {pid} on {addr}",
        length.as_secs() / 60
    );

    let world = Arc::new(World::default());
    let tally = Arc::new(Mutex::new(Tally::default()));
    let keys = Arc::new(keys);
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let (world, tally, keys) = (Arc::clone(&world), Arc::clone(&tally), Arc::clone(&keys));
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
                while !world.stop.load(Ordering::SeqCst) {
                    let case = case(&mut rng, &keys, &world);
                    let outcome = send(addr, &case.raw);
                    // A fault that began while this request was out may explain a 503 too.
                    let trouble_now = world.upstream_trouble.load(Ordering::SeqCst);
                    let mut t = tally.lock().unwrap();
                    *t.by_kind.entry(case.kind).or_insert(0) += 1;
                    match outcome {
                        Ok(r) => {
                            *t.by_status.entry(r.status).or_insert(0) += 1;
                            let excused =
                                trouble_now && r.status == 503 && case.allowed.contains(&200);
                            if let Some(why) = judge(&case, &r).filter(|_| !excused) {
                                t.wrong.push(format!("{}: {why}", case.kind));
                            }
                        }
                        Err(e) => t.wrong.push(format!("{}: {e}", case.kind)),
                    }
                }
            })
        })
        .collect();

    // The schedule: every 10 s one event, in turn.
    let began = Instant::now();
    let mut tick = 0u64;
    let mut peak = start;
    while began.elapsed() < length {
        std::thread::sleep(Duration::from_secs(10).min(length.saturating_sub(began.elapsed())));
        if began.elapsed() >= length {
            break;
        }
        tick += 1;
        let u = usage_of(pid);
        peak = Usage {
            rss_kib: peak.rss_kib.max(u.rss_kib),
            threads: peak.threads.max(u.threads),
            fds: peak.fds.max(u.fds),
        };
        match tick % 6 {
            1 => {
                // Key b published (JWKS rotation in), or withdrawn again.
                if world.b_published_since.load(Ordering::SeqCst) == 0 {
                    up.jwks.set_body(jwks_json(&[&keys.a, &keys.b]));
                    world.b_published_since.store(now(), Ordering::SeqCst);
                } else {
                    world.b_published_since.store(0, Ordering::SeqCst);
                    up.jwks.set_body(jwks_json(&[&keys.a]));
                }
            }
            2 | 5 => std::fs::write(&profile_file, profiles(tick)).unwrap(),
            3 => fault(
                &world,
                || up.github.set_fail(Fail::Status(500)),
                || up.github.set_fail(Fail::None),
            ),
            4 => fault(
                &world,
                || up.buildkite.set_fail(BkFail::Status(500)),
                || up.buildkite.set_fail(BkFail::None),
            ),
            _ => fault(
                &world,
                || up.github.set_fail(Fail::RateLimited { retry_after: 2 }),
                || up.github.set_fail(Fail::None),
            ),
        }
    }
    world.stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    std::thread::sleep(Duration::from_secs(3)); // idle connections and threads wind down
    let end = usage_of(pid);
    let _ = child.kill();
    let _ = child.wait();

    let t = tally.lock().unwrap();
    let total: u64 = t.by_status.values().sum();
    println!("\nrequests: {total} in {:?}", began.elapsed());
    println!("by status:");
    for (status, n) in &t.by_status {
        println!("  {status}: {n}");
    }
    println!("by kind:");
    for (kind, n) in &t.by_kind {
        println!("  {kind}: {n}");
    }
    println!(
        "GitHub mints: {}, Buildkite lookups: {}, JWKS fetches: {}",
        up.github.mints(),
        up.buildkite.calls(),
        up.jwks.fetches()
    );
    println!("server          start      peak       end");
    println!(
        "  RSS (KiB)    {:>8}  {:>8}  {:>8}",
        start.rss_kib, peak.rss_kib, end.rss_kib
    );
    println!(
        "  threads      {:>8}  {:>8}  {:>8}",
        start.threads, peak.threads, end.threads
    );
    println!(
        "  open fds     {:>8}  {:>8}  {:>8}",
        start.fds, peak.fds, end.fds
    );
    println!("wrong answers: {}", t.wrong.len());
    for w in t.wrong.iter().take(20) {
        println!("  {w}");
    }
    if !t.wrong.is_empty() {
        std::process::exit(1);
    }
}

/// Turns a fault on for 5 s (marking the world in trouble from then until 2 s after it ends).
fn fault(world: &World, on: impl FnOnce(), off: impl FnOnce()) {
    world.upstream_trouble.store(true, Ordering::SeqCst);
    on();
    std::thread::sleep(Duration::from_secs(5));
    off();
    std::thread::sleep(Duration::from_secs(2));
    world.upstream_trouble.store(false, Ordering::SeqCst);
}
