//! Restarts lose nothing, through the real binary: under socket activation the connection that
//! starts the service is answered 200 once ready (not 503), `STATUS=` says what readiness waits
//! for, and SIGTERM answers every connection already accepted.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::github::Fail;
use support::kitebridge::{Process, Upstreams, vended};
use support::util::{command_with_env, free_port, poll_for, signal, temp_dir, wait_exit};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// Reads a whole response (the server closes after it) off `s`.
fn response(mut s: TcpStream) -> support::kitebridge::HttpResponse {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    match parsed.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => {
            support::kitebridge::HttpResponse::from_head(&parsed, buf[n..].to_vec())
        }
        other => panic!(
            "no complete response ({other:?}): {:?}",
            String::from_utf8_lossy(&buf)
        ),
    }
}

fn token_request(jwt: &str) -> String {
    format!(
        "POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {jwt}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

#[test]
fn socket_activation_answers_the_first_request_sent_at_once_200() {
    let up = Upstreams::start();
    let port = free_port();
    let env = up.env();
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = vec!["-l".into(), listen];
    args.extend(env.iter().map(|(k, v)| format!("--setenv={k}={v}")));
    args.push(BIN.into());
    let mut activator = command_with_env("systemd-socket-activate", &env)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    let addr: SocketAddr = listen_addr(port);
    // The first connection starts kitebridge; its request goes out at once, before kitebridge
    // has loaded anything.
    let jwt = up.token();
    let first = poll_for(Duration::from_secs(10), || TcpStream::connect(addr).ok())
        .expect("systemd-socket-activate listens");
    let t = Instant::now();
    (&first).write_all(token_request(&jwt).as_bytes()).unwrap();
    let r = response(first);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["token"].as_str().unwrap().starts_with("ghs_"));
    println!("first request answered after {:?}", t.elapsed());
    signal(activator.id(), "TERM");
    assert_eq!(wait_exit(&mut activator, Duration::from_secs(10)), Some(0));
}

fn listen_addr(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[test]
fn status_says_what_readiness_waits_for() {
    let up = Upstreams::start();
    up.github.set_fail(Fail::Status(500)); // the installation's account cannot be read
    let dir = temp_dir("status");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut env = up.env();
    env.insert("NOTIFY_SOCKET".into(), sock_path.display().to_string());
    let p = Process::spawn_unready(BIN, &env);
    let mut buf = [0u8; 4096];
    let waiting = poll_for(Duration::from_secs(10), || {
        let n = sock.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.contains("STATUS=waiting for").then_some(text)
    })
    .unwrap_or_else(|| panic!("no STATUS= while waiting; stderr:\n{}", p.stderr()));
    assert!(
        waiting.contains("the GitHub installation's account"),
        "{waiting:?}"
    );
    assert!(!waiting.contains("READY=1"));
    up.github.set_fail(Fail::None);
    let ready = poll_for(Duration::from_secs(15), || {
        let n = sock.recv(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.contains("READY=1").then_some(text)
    });
    assert!(ready.is_some(), "ready once the account is known");
}

#[test]
fn sigterm_answers_every_connection_already_accepted() {
    let up = Upstreams::start();
    let mut p = Process::spawn(BIN, &up.env());
    let jwt = up.token();
    vended(&p.token("/token", &jwt));
    // Connections the server has accepted, whose requests are sent only after SIGTERM.
    let waiting: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(p.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // accepted by now
    signal(p.pid(), "TERM");
    std::thread::sleep(Duration::from_millis(100));
    for s in &waiting {
        let mut s: &TcpStream = s;
        s.write_all(token_request(&jwt).as_bytes()).unwrap();
    }
    for (i, s) in waiting.into_iter().enumerate() {
        let r = response(s);
        assert_eq!(r.status, 200, "connection {i}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"));
    }
    assert_eq!(
        p.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        p.stderr()
    );
    assert!(TcpStream::connect(p.addr).is_err(), "no longer listening");
}
