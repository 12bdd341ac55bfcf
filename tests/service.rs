//! kitebridge as a systemd service, without PID 1: socket activation through
//! `systemd-socket-activate`, `READY=1`/`STOPPING=1` on a test `NOTIFY_SOCKET`, SIGTERM draining an
//! in-flight vend, a second SIGTERM, SIGHUP reloading profiles, and secrets read from a
//! `$CREDENTIALS_DIRECTORY`.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::github::Fail;
use support::kitebridge::{
    Process, Upstreams, exchange, plugin_post, read_response, world, world_with,
};
use support::util::{
    command_with_env, fixture, free_port, poll_for, poll_until, signal, temp_dir,
    try_idle_connections, wait_exit,
};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

fn spawn_raw(env: &BTreeMap<String, String>, program: &str, args: &[&str]) -> Child {
    command_with_env(program, env)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every datagram received within `within`, until one contains `until`.
fn datagrams_until(sock: &UnixDatagram, until: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = text.contains(until);
            got.push(text);
            if done {
                break;
            }
        }
    }
    got
}

#[test]
fn socket_activation_serves_healthcheck() {
    let up = Upstreams::start();
    let port = free_port();
    let mut env = up.env();
    env.insert("SERVER_PORT".into(), "1".into()); // must be ignored under socket activation
    // systemd-socket-activate passes on only the variables named with --setenv.
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = vec!["-l".into(), listen];
    args.extend(env.iter().map(|(k, v)| format!("--setenv={k}={v}")));
    args.push(BIN.into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_raw(&env, "systemd-socket-activate", &args);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let healthy = poll_for(Duration::from_secs(15), || {
        let r = TcpStream::connect(addr).is_ok().then(|| {
            exchange(
                addr,
                b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
        });
        r.filter(|r| r.status == 200)
    });
    assert!(
        healthy.is_some(),
        "no healthy answer through the activated socket"
    );
    let r = healthy.unwrap();
    assert_eq!(r.text(), "OK");
    let r = plugin_post(addr, "/token", &up.token());
    assert_eq!(r.status, 200, "{}", r.text());
    signal(child.id(), "TERM");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(10)), Some(0));
}

#[test]
fn ready_only_after_first_load_and_stopping_after_sigterm() {
    let up = Upstreams::start();
    up.github.set_fail(Fail::Status(500)); // the installation lookup fails: not ready
    let dir = temp_dir("notify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let mut env = up.env();
    env.insert("NOTIFY_SOCKET".into(), sock_path.display().to_string());
    let mut p = Process::spawn_unready(BIN, &env);
    let early = datagrams_until(&sock, "READY=1", Duration::from_millis(1500));
    assert!(
        early.iter().all(|d| !d.contains("READY=1")),
        "READY=1 before readiness: {early:?}"
    );
    assert_eq!(p.get("/healthcheck").status, 503);
    up.github.set_fail(Fail::None);
    let got = datagrams_until(&sock, "READY=1", Duration::from_secs(15));
    assert!(
        got.iter().any(|d| d.contains("READY=1")),
        "{got:?}\n{}",
        p.stderr()
    );
    assert!(
        got.iter()
            .any(|d| d.contains("STATUS=") && d.contains("digest")),
        "status carries the digest: {got:?}"
    );
    assert_eq!(p.get("/healthcheck").status, 200);
    signal(p.pid(), "TERM");
    let got = datagrams_until(&sock, "STOPPING=1", Duration::from_secs(5));
    assert!(got.iter().any(|d| d.contains("STOPPING=1")), "{got:?}");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn sigterm_lets_an_in_flight_vend_finish_then_exits_0() {
    let (up, mut p) = world(BIN);
    up.github.set_fail(Fail::Delay(Duration::from_secs(2)));
    let addr = p.addr;
    let jwt = up.token();
    let in_flight = std::thread::spawn(move || plugin_post(addr, "/token", &jwt));
    std::thread::sleep(Duration::from_millis(500)); // the mint is now waiting on GitHub
    let t = Instant::now();
    signal(p.pid(), "TERM");
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(
        p.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        p.stderr()
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn second_sigterm_or_the_timeout_exits_anyway() {
    let (up, mut p) = world_with(BIN, &[("SERVER_SHUTDOWN_TIMEOUT_SECS", "2")]);
    up.github.set_fail(Fail::Delay(Duration::from_secs(12)));
    let addr = p.addr;
    let jwt = up.token();
    let _stuck = std::thread::spawn(move || plugin_post(addr, "/token", &jwt));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    signal(p.pid(), "TERM");
    assert_eq!(
        p.wait_exit(Duration::from_secs(8)),
        Some(0),
        "the 2 s drain timeout ends it"
    );
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());

    let mut p = Process::spawn(BIN, &up.env()); // default 25 s drain: a second SIGTERM ends it
    let addr = p.addr;
    let jwt = up.token();
    let _stuck = std::thread::spawn(move || plugin_post(addr, "/token", &jwt));
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    signal(p.pid(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal(p.pid(), "TERM");
    assert_eq!(p.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(t.elapsed() < Duration::from_secs(4));
}

#[test]
fn sighup_reloads_the_profile_file() {
    let up = Upstreams::start();
    let dir = temp_dir("sighup");
    let file = dir.join("profiles.json");
    std::fs::write(
        &file,
        r#"{"pipeline":{"profiles":[{"name":"one","permissions":["contents:read"]}]}}"#,
    )
    .unwrap();
    let mut env = up.env();
    env.insert("PROFILES_FILE".into(), file.display().to_string());
    let p = Process::spawn(BIN, &env);
    assert_eq!(p.token("/token/one", &up.token()).status, 200);
    assert_eq!(p.token("/token/two", &up.token()).status, 404);
    // Same size and modification time as before would hide the change from the watcher; SIGHUP
    // re-reads unconditionally.
    std::fs::write(
        &file,
        r#"{"pipeline":{"profiles":[{"name":"two","permissions":["contents:read"]}]}}"#,
    )
    .unwrap();
    signal(p.pid(), "HUP");
    let two_served = || p.token("/token/two", &up.token()).status == 200;
    assert!(
        poll_until(Duration::from_secs(5), two_served),
        "{}",
        p.stderr()
    );
    assert_eq!(p.token("/token/one", &up.token()).status, 404);
}

#[test]
fn secrets_come_from_the_credentials_directory() {
    let up = Upstreams::start();
    let creds = temp_dir("creds");
    std::fs::copy(
        fixture("test-github-app-key.pkcs1.pem"),
        creds.join("github-app-private-key"),
    )
    .unwrap();
    std::fs::write(
        creds.join("buildkite-api-token"),
        format!("{}\n", support::kitebridge::BUILDKITE_TOKEN),
    )
    .unwrap();
    let mut env = up.env();
    env.remove("GITHUB_APP_PRIVATE_KEY_FILE");
    env.remove("BUILDKITE_API_TOKEN");
    env.insert("CREDENTIALS_DIRECTORY".into(), creds.display().to_string());
    let p = Process::spawn(BIN, &env);
    let r = p.token("/token", &up.token());
    assert_eq!(
        r.status,
        200,
        "App key and Buildkite token both came from the directory: {}",
        r.text()
    );
}

#[test]
fn accept_errors_are_logged_and_survived() {
    let up = Upstreams::start();
    let dir = temp_dir("emfile");
    let port = free_port();
    let mut env = up.env();
    env.insert("SERVER_PORT".into(), port.to_string());
    env.insert(
        "AUDIT_LOG".into(),
        dir.join("audit.log").display().to_string(),
    );
    // 48 file descriptors in all: a few dozen connections exhaust them, so accept() fails
    // (EMFILE), or accept() takes the last one and tracking the connection fails.
    let mut cmd = command_with_env("prlimit", &env);
    cmd.args(["--nofile=48:48", BIN]);
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // While descriptors are exhausted the server may accept and close at once: an empty answer
    // is "not healthy yet", not a failure.
    let healthy = || {
        let Ok(mut s) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .is_ok()
            && read_response(&mut s).is_some_and(|r| r.status == 200)
    };
    assert!(poll_until(Duration::from_secs(15), &healthy), "not ready");
    // As many as open: the server's accept() is failing, so some may not.
    let hogs: Vec<TcpStream> = try_idle_connections(addr, 80, b"")
        .into_iter()
        .flatten()
        .collect();
    let log = || std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    assert!(
        poll_until(Duration::from_secs(5), || log().contains("(os error 24)")),
        "no descriptor exhaustion logged:\n{}",
        log()
    );
    drop(hogs);
    assert!(
        poll_until(Duration::from_secs(15), &healthy),
        "did not recover after the accept errors:\n{}",
        log()
    );
    assert!(
        log().matches("(os error 24)").count() < 50,
        "the warning is rate limited:\n{}",
        log()
    );
    let _ = child.kill();
    let _ = child.wait();
}
