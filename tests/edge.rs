//! The HTTP edge over raw TCP on 127.0.0.1: one test per row of the edge's limits table
//! and per bullet of its "Properties" list. The server is the real `kitebridge::Server`,
//! with a test router (a panicking handler and a slow handler exist only here).

mod support;

use kitebridge::{
    ErrorStyle, HttpMethod as Method, Limits, Pool, Request, Response, Router, Server, ServerHandle,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use support::kitebridge::{HttpResponse, read_response};
use support::util::{idle_connections, poll_until};

struct TestServer {
    addr: SocketAddr,
    handle: ServerHandle,
    slow_started: Arc<AtomicUsize>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.begin_shutdown();
    }
}

fn quick_limits() -> Limits {
    Limits {
        workers: 2,
        max_connections: 512,
        timeout_header: Duration::from_secs(2),
        timeout_body: Duration::from_secs(2),
        timeout_idle: Duration::from_secs(2),
        timeout_write: Duration::from_secs(2),
        ..Limits::default()
    }
}

fn start(limits: Limits) -> TestServer {
    start_with(limits, None)
}

fn start_with(limits: Limits, base: Option<&str>) -> TestServer {
    let slow_started = Arc::new(AtomicUsize::new(0));
    let slow = Arc::clone(&slow_started);
    let router = Router::new(base.map(str::to_owned))
        .route(
            Method::Get,
            "/healthcheck",
            Pool::Inline,
            ErrorStyle::Json,
            |_: &Request| Response::text(200, "OK"),
        )
        .route(
            Method::Post,
            "/echo",
            Pool::Worker,
            ErrorStyle::Json,
            |r: &Request| Response::new(200, "application/octet-stream", r.body.clone()),
        )
        .route(
            Method::Post,
            "/git-credentials",
            Pool::Worker,
            ErrorStyle::Text,
            |_: &Request| Response::text(200, ""),
        )
        .route(
            Method::Post,
            "/token/{profile}",
            Pool::Worker,
            ErrorStyle::Json,
            |r: &Request| Response::text(200, r.param(0).unwrap_or("?").to_owned()),
        )
        .route(
            Method::Get,
            "/panic",
            Pool::Worker,
            ErrorStyle::Json,
            |_: &Request| -> Response { panic!("deliberate test panic") },
        )
        .route(
            Method::Get,
            "/slow",
            Pool::Worker,
            ErrorStyle::Json,
            move |_: &Request| {
                slow.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_secs(3));
                Response::text(200, "slow")
            },
        )
        .route(
            Method::Get,
            "/big",
            Pool::Worker,
            ErrorStyle::Json,
            |_: &Request| Response::text(200, vec![b'x'; 256 << 20]),
        );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = Server::new(listener, router, limits).unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    thread::spawn(move || server.run());
    TestServer {
        addr,
        handle,
        slow_started,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Whether the server closed the connection (EOF) within the read timeout.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0))
        || matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
}

fn send(addr: SocketAddr, raw: &[u8]) -> (Option<HttpResponse>, TcpStream) {
    let mut s = connect(addr);
    s.write_all(raw).unwrap();
    let r = read_response(&mut s);
    (r, s)
}

fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .0
    .unwrap()
}

fn healthy(addr: SocketAddr) {
    let r = get(addr, "/healthcheck");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"OK"[..]));
}

// ---- the limits table -------------------------------------------------------------------------

#[test]
fn head_over_8_kib_is_431_and_closed() {
    let srv = start(quick_limits());
    let raw = format!(
        "GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(8200)
    );
    let (r, mut s) = send(srv.addr, raw.as_bytes());
    assert_eq!(r.unwrap().status, 431);
    assert!(closed(&mut s));
    healthy(srv.addr);
}

#[test]
fn request_line_of_300_kib_is_431_without_reading_it_all() {
    let srv = start(quick_limits());
    let mut s = connect(srv.addr);
    s.write_all(b"GET /").unwrap();
    let _ = s.write_all(&vec![b'a'; 16 * 1024]); // the server stops reading at 8 KiB
    assert_eq!(read_response(&mut s).unwrap().status, 431);
    healthy(srv.addr);
}

#[test]
fn more_than_64_headers_is_431() {
    let srv = start(quick_limits());
    let raw = format!(
        "GET /healthcheck HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(64)
    );
    let (r, mut s) = send(srv.addr, raw.as_bytes());
    assert_eq!(r.unwrap().status, 431);
    assert!(closed(&mut s));
}

#[test]
fn exactly_64_headers_are_accepted() {
    let srv = start(quick_limits());
    let raw = format!(
        "GET /healthcheck HTTP/1.1\r\nHost: x\r\n{}\r\n",
        "X-A: b\r\n".repeat(63)
    );
    assert_eq!(send(srv.addr, raw.as_bytes()).0.unwrap().status, 200);
}

#[test]
fn head_not_received_in_time_is_closed_without_a_response() {
    let srv = start(quick_limits());
    let mut s = connect(srv.addr);
    let t = Instant::now();
    s.write_all(b"GET /healthcheck HTTP/1.1\r\nHo").unwrap();
    let mut buf = Vec::new();
    let n = s.read_to_end(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "no response bytes");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[test]
fn slow_drip_head_is_cut_off_at_the_head_deadline() {
    let srv = start(quick_limits());
    let mut s = connect(srv.addr);
    let t = Instant::now();
    let mut cut = false;
    for b in
        b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
    {
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        thread::sleep(Duration::from_millis(150));
        if t.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(cut || buf.is_empty());
    assert!(t.elapsed() < Duration::from_secs(8));
}

#[test]
fn content_length_of_100000000000000_is_413_at_once_and_the_server_still_serves() {
    let srv = start(quick_limits());
    let t = Instant::now();
    let (r, mut s) = send(
        srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\n",
    );
    let r = r.unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.body, br#"{"error":"request body too large"}"#);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "answered without waiting for the body"
    );
    assert!(closed(&mut s));
    healthy(srv.addr);
}

#[test]
fn content_length_20481_is_413_and_20480_is_accepted() {
    let srv = start(quick_limits());
    let at = |n: usize| {
        let mut raw =
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        raw.extend(vec![b'a'; n]);
        send(srv.addr, &raw).0.unwrap()
    };
    assert_eq!(at(20481).status, 413);
    let ok = at(20480);
    assert_eq!((ok.status, ok.body.len()), (200, 20480));
}

#[test]
fn chunked_body_of_20481_bytes_is_413_and_20480_is_accepted() {
    let srv = start(quick_limits());
    let chunked = |n: usize| {
        // Two chunks so the cap is crossed in the middle of the stream, not by one size line.
        let (a, b) = (n / 2, n - n / 2);
        let mut raw =
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        raw.extend(
            format!(
                "{a:x}\r\n{}\r\n{b:x}\r\n{}\r\n0\r\n\r\n",
                "a".repeat(a),
                "b".repeat(b)
            )
            .into_bytes(),
        );
        send(srv.addr, &raw)
    };
    let (r, mut s) = chunked(20481);
    assert_eq!(r.unwrap().status, 413);
    assert!(closed(&mut s));
    let ok = chunked(20480).0.unwrap();
    assert_eq!((ok.status, ok.body.len()), (200, 20480));
}

#[test]
fn lying_content_length_is_408_within_the_body_timeout() {
    let srv = start(quick_limits());
    let t = Instant::now();
    let (r, mut s) = send(
        srv.addr,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-this",
    );
    assert_eq!(r.unwrap().status, 408);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    assert!(closed(&mut s));
}

#[test]
fn edge_errors_on_git_routes_are_plain_text() {
    let srv = start(quick_limits());
    let (r, _) = send(
        srv.addr,
        b"POST /git-credentials HTTP/1.1\r\nHost: x\r\nContent-Length: 20481\r\n\r\n",
    );
    let r = r.unwrap();
    assert_eq!(r.status, 413);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(r.body, b"request body too large\n");
}

#[test]
fn a_client_that_does_not_read_is_cut_off_by_the_write_timeout() {
    let srv = start(quick_limits());
    let mut s = connect(srv.addr);
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_secs(4)); // longer than the 2 s write timeout; we read nothing
    healthy(srv.addr);
    // The server gave up: reading now yields less than the 256 MiB announced (loopback buffers hold tens of MiB).
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total < 256 << 20, "read {total} bytes");
}

#[test]
fn idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let srv = start(quick_limits());
    let mut s = connect(srv.addr);
    s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None, "kept alive");
    let t = Instant::now();
    assert!(closed(&mut s));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
}

#[test]
fn keep_alive_serves_several_requests_and_pipelining_works() {
    let srv = start(quick_limits());
    let mut s = connect(srv.addr);
    s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let first = read_response(&mut s).unwrap();
    assert_eq!(
        (first.status, first.header("connection")),
        (200, None),
        "kept alive"
    );
    // Three pipelined requests in one write; the last closes.
    s.write_all(b"POST /token/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nPOST /token/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap(); // ends: the server closed after the third
    let text = String::from_utf8(raw).unwrap();
    let statuses = text.matches("HTTP/1.1 200 OK\r\n").count();
    assert_eq!(statuses, 3, "{text}");
    let (a, b) = (
        text.find("\r\n\r\na").unwrap(),
        text.find("\r\n\r\nb").unwrap(),
    );
    assert!(a < b, "answered in order");
    assert!(text.ends_with("Connection: close\r\n\r\nOK"), "{text}");
}

#[test]
fn http10_closes_after_the_response() {
    let srv = start(quick_limits());
    let (r, mut s) = send(srv.addr, b"GET /healthcheck HTTP/1.0\r\n\r\n");
    assert_eq!(r.unwrap().status, 200);
    assert!(closed(&mut s));
}

#[test]
fn connection_cap_closes_the_excess_at_once_served_ones_unaffected_and_recovers() {
    let mut limits = quick_limits();
    limits.max_connections = 4;
    limits.workers = 4;
    limits.timeout_idle = Duration::from_secs(20);
    limits.timeout_header = Duration::from_secs(20);
    let srv = start(limits);
    // Four connections, each with a request being handled: none can give way.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(srv.addr);
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    let all_busy = || srv.slow_started.load(Ordering::SeqCst) >= 4;
    assert!(poll_until(Duration::from_secs(2), all_busy));
    // The fifth is closed at once.
    let mut extra = connect(srv.addr);
    let t = Instant::now();
    let _ = extra.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(read_response(&mut extra).is_none());
    assert!(t.elapsed() < Duration::from_secs(2));
    // The served ones are unaffected.
    for s in &mut held {
        assert_eq!(read_response(s).unwrap().status, 200);
    }
    drop(held);
    // Recovery: once they are gone, new connections are served.
    assert!(
        poll_until(Duration::from_secs(5), || {
            let (r, _) = send(
                srv.addr,
                b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            r.map(|r| r.status) == Some(200)
        }),
        "server did not recover after the cap"
    );
}

#[test]
fn at_the_cap_the_longest_idle_connection_makes_room() {
    let mut limits = quick_limits();
    limits.max_connections = 4;
    limits.timeout_idle = Duration::from_secs(20);
    limits.timeout_header = Duration::from_secs(20);
    let srv = start(limits);
    // Four kept-alive connections, served once each, oldest first.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = connect(srv.addr);
            s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut s).unwrap().status, 200);
            thread::sleep(Duration::from_millis(20));
            s
        })
        .collect();
    // A fifth is served: the connection idle longest gave way.
    let t = Instant::now();
    healthy(srv.addr);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(closed(&mut held[0]), "the longest idle one was closed");
    for s in &mut held[1..] {
        s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_response(s).unwrap().status,
            200,
            "the others still work"
        );
    }
}

#[test]
fn uri_over_2_kib_is_414() {
    let srv = start(quick_limits());
    let raw = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(2048));
    let (r, _) = send(srv.addr, raw.as_bytes());
    assert_eq!(r.unwrap().status, 414);
}

#[test]
fn cl_plus_te_is_400_and_the_smuggled_request_is_never_answered() {
    let srv = start(quick_limits());
    let smuggle = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n";
    let (r, mut s) = send(srv.addr, smuggle);
    assert_eq!(r.unwrap().status, 400);
    assert!(read_response(&mut s).is_none(), "nothing after the 400");
}

#[test]
fn framing_violations_are_400_and_close() {
    let srv = start(quick_limits());
    let cases: &[(&str, &[u8])] = &[
        ("duplicate content-length", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
        ("content-length +5", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("te not chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("te chunked twice in a list", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
        ("space before colon", b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n"),
        ("obs-fold", b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nX-A: b\r\n  c\r\n\r\n"),
        ("http/1.0 with te", b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ("bare LF in chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n"),
        ("missing host", b"GET /healthcheck HTTP/1.1\r\n\r\n"),
        ("bare LF line endings", b"GET /healthcheck HTTP/1.1\nHost: x\n\n"),
    ];
    for (name, raw) in cases {
        let (r, mut s) = send(srv.addr, raw);
        assert_eq!(r.map(|r| r.status), Some(400), "{name}");
        assert!(closed(&mut s), "{name}: closed");
    }
    healthy(srv.addr);
}

// ---- the properties list ----------------------------------------------------------------------

/// `count` connections that sent `head` and then nothing, held open under a 30 s head timeout
/// (and given 200 ms to reach the server): `first`, then a token request, are answered within
/// 1 s all the same.
fn held_connections_do_not_delay(count: usize, head: &[u8], first: impl FnOnce(SocketAddr)) {
    let mut limits = quick_limits();
    limits.timeout_header = Duration::from_secs(30);
    let srv = start(limits);
    let held = idle_connections(srv.addr, count, head);
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    first(srv.addr);
    let r = send(
        srv.addr,
        b"POST /token/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .0
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    drop(held);
}

#[test]
fn three_hundred_idle_connections_do_not_delay_a_request() {
    held_connections_do_not_delay(300, b"", healthy);
}

#[test]
fn fifty_slow_header_connections_do_not_delay_a_request() {
    let head = b"POST /token/x HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    held_connections_do_not_delay(50, head, |_| {});
}

#[test]
fn healthcheck_answers_while_every_worker_waits_on_a_slow_upstream() {
    let srv = start(quick_limits()); // 2 workers
    let busy: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || get(srv_addr_copy(srv.addr), "/slow")))
        .collect();
    let all_busy = || srv.slow_started.load(Ordering::SeqCst) >= 2;
    assert!(
        poll_until(Duration::from_secs(2), all_busy),
        "workers never got busy"
    );
    let t = Instant::now();
    healthy(srv.addr);
    assert!(t.elapsed() < Duration::from_secs(1));
    for b in busy {
        assert_eq!(b.join().unwrap().status, 200);
    }
}

fn srv_addr_copy(a: SocketAddr) -> SocketAddr {
    a
}

#[test]
fn a_panicking_handler_is_500_and_the_next_request_succeeds() {
    let srv = start(quick_limits());
    for _ in 0..3 {
        // More panics than workers: the pool survives each.
        let r = get(srv.addr, "/panic");
        assert_eq!(r.status, 500);
        assert_eq!(r.body, br#"{"error":"internal error"}"#);
    }
    let r = send(
        srv.addr,
        b"POST /token/after HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .0
    .unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"after"[..]));
}

#[test]
fn every_response_has_request_id_and_no_store() {
    let srv = start(quick_limits());
    let mut ids = Vec::new();
    for raw in [
        &b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /panic HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
    ] {
        let r = send(srv.addr, raw).0.unwrap();
        assert_eq!(r.header("cache-control"), Some("no-store"), "{}", r.status);
        let id = r.header("x-request-id").unwrap().to_owned();
        assert_eq!(id.len(), 16);
        assert!(!ids.contains(&id));
        ids.push(id);
    }
}

#[test]
fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
    let srv = start(quick_limits());
    assert_eq!(get(srv.addr, "/nope").status, 404);
    let r = send(
        srv.addr,
        b"POST /healthcheck HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )
    .0
    .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = get(srv.addr, "/token/x");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
}

#[test]
fn head_request_has_length_but_no_body() {
    let srv = start(quick_limits());
    let mut s2 = connect(srv.addr);
    s2.write_all(b"HEAD /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s2.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(text.contains("Content-Length: 2\r\n"));
    assert!(text.ends_with("\r\n\r\n"), "no body after the head");
}

#[test]
fn base_path_and_doubled_slashes() {
    let srv = start_with(quick_limits(), Some("/bridge"));
    let post = |path: &str| {
        send(
            srv.addr,
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .0
        .unwrap()
    };
    assert_eq!(post("/bridge/token/a").body, b"a");
    assert_eq!(post("/bridge//token/b").body, b"b");
    assert_eq!(post("//bridge/token/c").body, b"c");
    assert_eq!(post("/bridgetoken/a").status, 404);
    assert_eq!(post("/token/a").status, 404);
}

#[test]
fn expect_100_continue_is_honoured() {
    let srv = start(quick_limits());
    let mut s = connect(srv.addr);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    assert_eq!(read_response(&mut s).unwrap().body, b"hello");
}

#[test]
fn shutdown_stops_accepting_and_waits_for_in_flight_requests() {
    let srv = start(quick_limits());
    let addr = srv.addr;
    let in_flight = thread::spawn(move || get(addr, "/slow"));
    let started = || srv.slow_started.load(Ordering::SeqCst) >= 1;
    assert!(poll_until(Duration::from_secs(2), started));
    srv.handle.begin_shutdown();
    assert!(srv.handle.is_draining());
    assert!(
        srv.handle.wait_idle(Duration::from_secs(10)),
        "in-flight request finished"
    );
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    thread::sleep(Duration::from_millis(100));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map(|mut s| {
                let _ = s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n");
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                read_response(&mut s).is_none()
            })
            .unwrap_or(true)
    );
}
