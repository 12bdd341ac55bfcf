//! The edge under pressure, through the real binary on 127.0.0.1, one property per test:
//! malformed chunked trailers, a full connection table, a permit wait past the queue timeout,
//! cached vends during a storm of misses stalled on GitHub, and the per-source connection cap
//! (in process: every address a test can use is loopback, which the binary exempts).

mod support;

use kitebridge::{
    ErrorStyle, HttpMethod as Method, Limits, Pool, Request, Response, Router, Server,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::kitebridge::{
    AUDIENCE, NO_RATE_LIMITS, ORG, Process, Upstreams, plugin_post, read_response, vended, world,
};
use support::oidc::buildkite_claims;
use support::util::{
    command_with_env, free_port, idle_connections, now, poll_until, temp_dir, try_idle_connections,
};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// Whether the server closed `s` (EOF or reset) within its read timeout.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

#[test]
fn each_malformed_trailer_form_is_400_and_close() {
    let (up, p) = world(BIN);
    let jwt = up.token();
    let forms: &[(&str, &[u8])] = &[
        ("NUL in a value", b"X-Sum: a\x00b\r\n"),
        ("bare CR in a value", b"X-Sum: a\rb\r\n"),
        ("obs-fold", b"X-Sum: a\r\n folded\r\n"),
        ("space before the colon", b"X-Sum : a\r\n"),
        ("no colon", b"X-Sum\r\n"),
        (
            "a request line",
            b"GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        ),
    ];
    for (name, trailer) in forms {
        let mut raw = format!(
            "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {jwt}\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n"
        )
        .into_bytes();
        raw.extend_from_slice(trailer);
        raw.extend_from_slice(b"\r\n");
        let mut s = TcpStream::connect(p.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&raw).unwrap();
        let r = read_response(&mut s).unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{name}");
        assert!(
            closed_by_server(&mut s),
            "{name}: the connection is closed, nothing else is answered on it"
        );
    }
    // The same request with a well-formed trailer is served.
    let raw = format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {jwt}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\nX-Sum: abc\r\n\r\n"
    );
    let r = support::kitebridge::exchange(p.addr, raw.as_bytes());
    vended(&r);
}

#[test]
fn six_hundred_idle_connections_held_do_not_lock_out_a_new_token_request() {
    let (up, p) = world(BIN); // SERVER_MAX_CONNECTIONS 512 (the default)
    let jwt = up.token();
    vended(&p.token("/token", &jwt)); // the token is cached: the request below needs no upstream
    let held = idle_connections(p.addr, 600, b"");
    std::thread::sleep(Duration::from_millis(300)); // every one reached the server
    let t = Instant::now();
    let r = p.token("/token", &jwt);
    let took = t.elapsed();
    vended(&r);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    drop(held);
}

/// A kitebridge whose audit records go to a pipe nobody reads, so once its buffer is full a
/// record's write blocks its request, which holds its request-handling permit meanwhile.
struct StuckAudit {
    child: Child,
    addr: SocketAddr,
    _stdout: std::process::ChildStdout,
}

impl Drop for StuckAudit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stuck_audit(up: &Upstreams, extra: &[(&str, &str)]) -> StuckAudit {
    let port = free_port();
    let mut env: BTreeMap<String, String> = up.env_with_no_rate_limits(extra);
    env.insert("SERVER_PORT".into(), port.to_string());
    env.insert("AUDIT_LOG".into(), "stdout".into());
    env.insert("LOG_LEVEL".into(), "warn".into());
    let dir = temp_dir("stuck").keep();
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = command_with_env(BIN, &env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ready = || {
        TcpStream::connect(addr).is_ok()
            && support::kitebridge::exchange(
                addr,
                b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .status
                == 200
    };
    assert!(poll_until(Duration::from_secs(15), ready), "not ready");
    StuckAudit {
        child,
        addr,
        _stdout: stdout,
    }
}

#[test]
fn a_permit_wait_past_the_queue_timeout_is_503_with_retry_after() {
    let up = Upstreams::start();
    let k = stuck_audit(
        &up,
        &[("SERVER_WORKERS", "1"), ("SERVER_QUEUE_TIMEOUT_SECS", "1")],
    );
    let jwt = up.token();
    // Vend until one does not come back: its record's write is blocked on the full pipe, and its
    // request holds the only permit.
    let mut blocked = false;
    for _ in 0..1000 {
        let (tx, rx) = mpsc::channel();
        let (addr, jwt) = (k.addr, jwt.clone());
        std::thread::spawn(move || {
            let _ = tx.send(plugin_post(addr, "/token", &jwt).status);
        });
        match rx.recv_timeout(Duration::from_secs(3)) {
            Ok(status) => assert_eq!(status, 200),
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(blocked, "the audit pipe never filled up");
    let t = Instant::now();
    let r = plugin_post(k.addr, "/token", &jwt);
    let waited = t.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"error": "server busy"}));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "answered after {waited:?}, the queue timeout is 1 s"
    );
    // The health check needs no permit.
    let health = support::kitebridge::exchange(
        k.addr,
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(health.status, 200);
}

/// The 99th percentile of `samples`.
fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

/// `count` cached vends one after the other: their latencies.
fn cached_vends(addr: SocketAddr, jwt: &str, count: usize) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            let t = Instant::now();
            let r = plugin_post(addr, "/token", jwt);
            let took = t.elapsed();
            assert_eq!(r.status, 200, "{}", r.text());
            took
        })
        .collect()
}

#[test]
fn cached_vends_keep_their_latency_while_200_misses_wait_on_github() {
    const MISSES: usize = 200;
    let up = Upstreams::start();
    for i in 0..MISSES {
        up.buildkite
            .set_pipeline(ORG, &format!("p{i}"), "git@github.com:acme/widgets.git");
    }
    let p = Process::spawn(BIN, &up.env_with(&NO_RATE_LIMITS));
    let jwt = up.token();
    vended(&p.token("/token", &jwt));
    cached_vends(p.addr, &jwt, 50); // warm up
    let idle_before = p99(cached_vends(p.addr, &jwt, 200));

    let mint_calls = up.github.calls(support::github::Route::Mint);
    up.github.stall_mints(true);
    let misses: Vec<_> = (0..MISSES)
        .map(|i| {
            let mut claims = buildkite_claims(ORG, &format!("p{i}"), now());
            claims["aud"] = AUDIENCE.into();
            let token = up.signer.token(&claims);
            let addr = p.addr;
            std::thread::spawn(move || plugin_post(addr, "/token", &token))
        })
        .collect();
    // 64 mints reach GitHub (the upstream concurrency limit) and stall; the others wait for a
    // place, none of them holding a request-handling permit.
    assert!(
        poll_until(Duration::from_secs(10), || up.github.stalled_mints() >= 64),
        "only {} mints stalled",
        up.github.stalled_mints()
    );
    // Every miss has looked its pipeline up (so it is past verification and waiting upstream).
    assert!(
        poll_until(Duration::from_secs(20), || up.buildkite.calls() > MISSES),
        "only {} pipeline lookups",
        up.buildkite.calls()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.github.stalled_mints(),
        64,
        "at most 64 calls in flight to GitHub"
    );
    let storm = p99(cached_vends(p.addr, &jwt, 200));
    up.github.stall_mints(false);
    for miss in misses {
        vended(&miss.join().unwrap());
    }
    assert_eq!(
        up.github.calls(support::github::Route::Mint) - mint_calls,
        MISSES,
        "every miss minted once"
    );
    let idle_after = p99(cached_vends(p.addr, &jwt, 200));
    // Generous, for a shared machine: the idle p99 is the worse of before and after the storm,
    // with a 5 ms floor (a loopback baseline of a few milliseconds is mostly scheduling noise).
    let idle = idle_before.max(idle_after);
    let bound = idle.max(Duration::from_millis(5)) * 3;
    println!(
        "cached vend p99: idle {idle_before:?} before, {idle_after:?} after; \
         during {MISSES} stalled misses {storm:?}"
    );
    assert!(
        storm <= bound,
        "p99 during the storm {storm:?} > 3 x idle p99 {idle:?} (floor 5 ms)"
    );
}

#[test]
fn one_remote_address_holds_at_most_its_per_source_cap() {
    // In process, with the loopback exemption off: the binary exempts loopback, and every
    // address a test may use is loopback.
    let router = Router::new(None).route(
        Method::Get,
        "/healthcheck",
        Pool::Inline,
        ErrorStyle::Json,
        |_: &Request| Response::text(200, "OK"),
    );
    let limits = Limits {
        max_connections_per_source: Some(3),
        per_source_exempts_loopback: false,
        timeout_header: Duration::from_secs(20),
        ..Limits::default()
    };
    let server = Server::new(TcpListener::bind("127.0.0.1:0").unwrap(), router, limits).unwrap();
    let (addr, handle) = (server.local_addr().unwrap(), server.handle());
    std::thread::spawn(move || server.run());
    let held = idle_connections(addr, 3, b"");
    assert!(poll_until(Duration::from_secs(2), || handle
        .open_connections()
        == 3));
    let mut extra = try_idle_connections(addr, 1, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        .pop()
        .unwrap()
        .unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(
        read_response(&mut extra).is_none(),
        "the fourth is closed at once"
    );
    drop(held);
    assert!(poll_until(Duration::from_secs(2), || handle
        .open_connections()
        == 0));
    let r = support::kitebridge::exchange(
        addr,
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "under the cap again");
    handle.begin_shutdown();
}
