//! `GET /metrics` through the running process: the documented counters and gauges, no token,
//! claim value or secret in them, `METRICS=off` and a separate listener.

mod support;

use support::kitebridge::{Process, Upstreams, exchange, world_with};
use support::util::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

#[test]
fn counts_requests_vends_upstream_calls_and_shows_the_generation() {
    let (up, p) = world_with(BIN, &[("RATE_LIMIT_PER_PIPELINE", "2/60s")]);
    let jwt = up.token_with(|c| c["build_branch"] = "secret-branch-name".into());
    let first = p.token("/token", &jwt);
    assert_eq!(first.status, 200);
    assert_eq!(p.token("/token", &jwt).status, 200);
    assert_eq!(p.token("/token", &jwt).status, 429);
    assert_eq!(p.token("/token", "garbage").status, 401);
    let r = p.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    for line in [
        "kitebridge_http_requests_total{route=\"/token\",status=\"200\"} 2",
        "kitebridge_http_requests_total{route=\"/token\",status=\"429\"} 1",
        "kitebridge_http_requests_total{route=\"/token\",status=\"401\"} 1",
        "kitebridge_vend_total{outcome=\"miss\"} 1",
        "kitebridge_vend_total{outcome=\"hit\"} 1",
        "kitebridge_rate_limited_total{limit=\"pipeline\"} 1",
        "kitebridge_jwks_fetch_total{outcome=\"ok\"} 1",
        "kitebridge_ready 1",
        "kitebridge_profiles_unavailable 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    let github_host = up.github.api_url().trim_start_matches("http://").to_owned();
    assert!(
        text.contains(&format!(
            "kitebridge_upstream_requests_total{{upstream=\"{github_host}\",outcome=\"2xx\"}} 2"
        )),
        "installation + mint:\n{text}"
    );
    assert!(
        text.contains("kitebridge_upstream_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("kitebridge_profiles_info{digest=\"44136fa3"),
        "{text}"
    );
    assert!(text.contains("kitebridge_open_connections "), "{text}");
    let token = first.json()["token"].as_str().unwrap().to_owned();
    for secret in [
        token.as_str(),
        &jwt,
        "secret-branch-name",
        support::kitebridge::BUILDKITE_TOKEN,
        "widgets",
    ] {
        assert!(
            !text.contains(secret),
            "metrics must not contain {secret:.20}"
        );
    }
}

#[test]
fn metrics_off_and_on_a_separate_listener() {
    let up = Upstreams::start();
    let mut env = up.env_with(&[("METRICS", "off")]);
    let p = Process::spawn(BIN, &env);
    assert_eq!(p.get("/metrics").status, 404);
    drop(p);

    let port = free_port();
    env.insert("METRICS".into(), format!("127.0.0.1:{port}"));
    let p = Process::spawn(BIN, &env);
    assert_eq!(p.get("/metrics").status, 404, "not on the main listener");
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let r = exchange(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("kitebridge_ready 1"), "{}", r.text());
}
