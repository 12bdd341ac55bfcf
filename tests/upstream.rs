//! The shared outbound client against real servers on 127.0.0.1: body caps, redirects, timeouts,
//! connection failures, `Cache-Control: max-age`, the loopback-only rule for plain http.
#![forbid(unsafe_code)]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kitebridge::{
    Failure, MAX_JWKS_BODY, Service, TransportError as Error, UpstreamClient as Client,
    UpstreamMethod as Method, UpstreamSettings as Settings,
};
use support::jwks::{JwksMode, JwksStandIn};
use support::server::{Response, Server};

fn client() -> Client {
    Client::new(&Settings::default()).unwrap()
}

fn fast_client() -> Client {
    Client::new(&fast_settings()).unwrap()
}

#[test]
fn any_status_is_a_response_with_lowercased_headers() {
    let server = Server::start(|_| Response::message(418, "teapot").with_header("X-Thing", "1"));
    let response = client().get(&format!("{}/x", server.url()), &[]).unwrap();
    assert_eq!(response.status, 418);
    assert_eq!(response.header("x-thing"), Some("1"));
    assert_eq!(response.body, br#"{"message":"teapot"}"#);
}

#[test]
fn sends_method_headers_body_and_user_agent() {
    let server = Server::start(|request| {
        let echo = serde_json::json!({
            "method": request.method,
            "ua": request.header("user-agent"),
            "x": request.header("x-custom"),
            "body": String::from_utf8_lossy(&request.body),
        });
        Response::json(200, &echo)
    });
    let response = client()
        .send(
            Method::Post,
            &format!("{}/p", server.url()),
            &[("X-Custom", "v")],
            Some(b"hello"),
        )
        .unwrap();
    let echo: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["ua"], format!("kitebridge/{}", kitebridge::VERSION));
    assert_eq!(echo["x"], "v");
    assert_eq!(echo["body"], "hello");
}

#[test]
fn oversized_body_is_refused_with_and_without_content_length() {
    let server = Server::start(|_| Response::bytes(200, "text/plain", vec![b'a'; 2048]));
    let url = format!("{}/big", server.url());
    let error = client()
        .request(Method::Get, &url, &[], None, 1024)
        .unwrap_err();
    assert_eq!(error, Error::BodyTooLarge { max: 1024 });
    assert!(!error.is_transient());
    // Exactly at the cap is fine.
    let ok = client()
        .request(Method::Get, &url, &[], None, 2048)
        .unwrap();
    assert_eq!(ok.body.len(), 2048);

    // No Content-Length: the body runs until the connection closes and is cut off while reading.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0u8; 1024];
        let _ = stream.read(&mut head);
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(&vec![b'a'; 64 * 1024]);
    });
    let error = client()
        .request(
            Method::Get,
            &format!("http://{addr}/stream"),
            &[],
            None,
            1024,
        )
        .unwrap_err();
    assert_eq!(error, Error::BodyTooLarge { max: 1024 });
}

#[test]
fn redirect_is_refused_not_followed() {
    let followed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&followed);
    let server = Server::start(move |request| {
        if request.path == "/target" {
            counter.fetch_add(1, Ordering::SeqCst);
            return Response::empty(200);
        }
        Response::empty(302).with_header("Location", "/target")
    });
    let error = client()
        .get(&format!("{}/start", server.url()), &[])
        .unwrap_err();
    assert_eq!(error, Error::Redirect { status: 302 });
    assert_eq!(followed.load(Ordering::SeqCst), 0);
}

#[test]
fn not_modified_is_not_a_redirect() {
    let server = Server::start(|_| Response::empty(304).with_header("ETag", "\"abc\""));
    let response = client().get(&format!("{}/f", server.url()), &[]).unwrap();
    assert_eq!(response.status, 304);
    assert!(response.body.is_empty());
}

#[test]
fn slow_server_times_out_within_bounds() {
    let server = Server::start(|_| {
        std::thread::sleep(Duration::from_secs(5));
        Response::empty(200)
    });
    let started = Instant::now();
    let error = fast_client()
        .get(&format!("{}/slow", server.url()), &[])
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(error, Error::Timeout);
    assert!(error.is_transient());
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn connection_refused_is_transient() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: nothing listens there now
    let error = fast_client()
        .get(&format!("http://127.0.0.1:{port}/x"), &[])
        .unwrap_err();
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert!(error.is_transient());
}

#[test]
fn plain_http_to_a_non_loopback_host_is_refused_without_connecting() {
    for url in [
        "http://api.github.com/app",
        "http://10.255.255.1/x",
        "http://127.0.0.1.nip.io/x",
    ] {
        let started = Instant::now();
        let error = client().get(url, &[]).unwrap_err();
        assert_eq!(error, Error::InsecureUrl, "{url}");
        // An attempt on 10.255.255.1 (unroutable) would wait for the 5 s connect timeout; the
        // bound is loose so a loaded machine cannot fail it.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{url}: looked like a connection attempt"
        );
    }
}

#[test]
fn jwks_fetch_reads_max_age() {
    let jwks = JwksStandIn::start(r#"{"keys":[]}"#.to_owned());
    jwks.set_cache_control(Some("public, max-age=120"));
    let (body, max_age) = client().fetch_jwks(&jwks.url()).unwrap();
    assert_eq!(body, br#"{"keys":[]}"#);
    assert_eq!(max_age, Some(120));

    jwks.set_cache_control(None);
    assert_eq!(client().fetch_jwks(&jwks.url()).unwrap().1, None);
    jwks.set_cache_control(Some("max-age=soon"));
    assert_eq!(client().fetch_jwks(&jwks.url()).unwrap().1, None);
    assert_eq!(jwks.fetches(), 3);
}

#[test]
fn jwks_rotation_serves_the_new_body() {
    let jwks = JwksStandIn::start(r#"{"keys":["a"]}"#.to_owned());
    jwks.set_body(r#"{"keys":["b"]}"#.to_owned());
    assert_eq!(
        client().fetch_jwks(&jwks.url()).unwrap().0,
        br#"{"keys":["b"]}"#
    );
}

#[test]
fn jwks_failure_modes() {
    let jwks = JwksStandIn::start(r#"{"keys":[]}"#.to_owned());
    let client = fast_client();

    jwks.set_mode(JwksMode::Down);
    let down = client.fetch_jwks(&jwks.url()).unwrap_err();
    assert_eq!(
        down,
        Failure::from_transport(Service::Jwks, Error::Status { status: 503 })
    );
    assert!(matches!(down, Failure::Unavailable { .. }), "{down}");

    jwks.set_mode(JwksMode::Oversized);
    assert_eq!(
        client.fetch_jwks(&jwks.url()).unwrap_err(),
        Failure::from_transport(Service::Jwks, Error::BodyTooLarge { max: MAX_JWKS_BODY })
    );

    jwks.set_mode(JwksMode::Redirect);
    assert_eq!(
        client.fetch_jwks(&jwks.url()).unwrap_err(),
        Failure::from_transport(Service::Jwks, Error::Redirect { status: 302 })
    );

    jwks.set_mode(JwksMode::Slow(Duration::from_secs(3)));
    assert_eq!(
        client.fetch_jwks(&jwks.url()).unwrap_err(),
        Failure::from_transport(Service::Jwks, Error::Timeout)
    );

    let before = jwks.fetches();
    jwks.set_mode(JwksMode::Refused);
    let refused = client.fetch_jwks(&jwks.url()).unwrap_err();
    assert!(
        matches!(refused, Failure::Unavailable { ref detail, .. } if detail.starts_with("connect failed")),
        "{refused:?}"
    );
    assert_eq!(jwks.fetches(), before);

    jwks.set_mode(JwksMode::Normal);
    assert!(client.fetch_jwks(&jwks.url()).is_ok());
}

#[test]
fn unreadable_ssl_cert_file_is_a_configuration_error() {
    let settings = Settings {
        ssl_cert_file: Some("/nonexistent/ca.pem".into()),
        ..Settings::default()
    };
    assert!(matches!(Client::new(&settings), Err(Error::Config(_))));
    let bad_proxy = Settings {
        https_proxy: Some("ftp://proxy:21".into()),
        ..Settings::default()
    };
    assert!(matches!(Client::new(&bad_proxy), Err(Error::Config(_))));
}

#[test]
fn a_valid_extra_ca_bundle_is_accepted() {
    let settings = Settings {
        ssl_cert_file: Some("/etc/ssl/certs/ca-certificates.crt".into()),
        ..Settings::default()
    };
    if std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
        assert!(Client::new(&settings).is_ok());
    }
}

#[test]
fn no_proxy_hosts_bypass_the_proxy() {
    // The "proxy" counts CONNECT attempts; loopback is exempted by NO_PROXY.
    let proxied = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&proxied);
    let proxy = Server::start(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Response::empty(502)
    });
    let target = Server::start(|_| Response::empty(200));
    let direct = Settings {
        https_proxy: Some(proxy.url()),
        no_proxy: Some("localhost, 127.0.0.1".into()),
        ..Settings::default()
    };
    let response = Client::new(&direct)
        .unwrap()
        .get(&format!("{}/x", target.url()), &[])
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(proxied.load(Ordering::SeqCst), 0);

    let via_proxy = Settings {
        https_proxy: Some(proxy.url()),
        ..fast_settings()
    };
    let _ = Client::new(&via_proxy)
        .unwrap()
        .get(&format!("{}/x", target.url()), &[]);
    assert_eq!(proxied.load(Ordering::SeqCst), 1);
}

fn fast_settings() -> Settings {
    Settings {
        timeout_connect: Duration::from_millis(500),
        timeout_global: Duration::from_millis(700),
        ..Settings::default()
    }
}
