//! The key set through the running process, against the JWKS stand-in (a real HTTP server):
//! rotation, the rate limit on unknown-`kid` refreshes, last-good retention while the JWKS is
//! down, and refusal of oversized, redirecting and slow answers with a logged reason.

mod support;

use std::time::{Duration, Instant};
use support::jwks::JwksMode;
use support::kitebridge::{Process, Upstreams, world};
use support::oidc::{Signer, jwks_json};
use support::util::poll_until;

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

#[test]
fn unknown_kids_are_rate_limited_and_a_rotated_key_is_accepted_after_one_refresh() {
    let up = Upstreams::start();
    let started = Instant::now();
    let p = Process::spawn(BIN, &up.env());
    assert_eq!(up.jwks.fetches(), 1, "one fetch at start");

    // Buildkite rotates: key b appears in the published set.
    let b = Signer::b();
    up.jwks.set_body(jwks_json(&[&up.signer, &b]));
    let token_b = b.token(&up.claims("widgets"));

    // 20 requests with an unknown kid within 2 s: at most one refresh per 30 s, so no more than
    // 2 fetches in all (the start-up one counts).
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(p.token("/token", &token_b).status, 401);
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(up.jwks.fetches() <= 2, "{} fetches", up.jwks.fetches());

    // Once the 30 s window has passed, the next unknown kid refreshes once and is accepted.
    let window = Duration::from_secs(31).saturating_sub(started.elapsed());
    std::thread::sleep(window);
    let before = up.jwks.fetches();
    let r = p.token("/token", &token_b);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), p.stderr());
    assert_eq!(up.jwks.fetches(), before + 1, "exactly one refresh");
    assert_eq!(
        p.token("/token", &up.token()).status,
        200,
        "key a still accepted"
    );
}

#[test]
fn the_last_good_set_keeps_working_while_the_jwks_is_down() {
    let (up, p) = world(BIN);
    up.jwks.set_mode(JwksMode::Down);
    assert_eq!(p.token("/token", &up.token()).status, 200);
    up.jwks.set_mode(JwksMode::Refused);
    assert_eq!(p.token("/token", &up.token()).status, 200);
}

#[test]
fn oversized_redirecting_and_slow_key_sets_are_refused_with_a_logged_reason() {
    for (mode, reason) in [
        (JwksMode::Oversized, "response body over 65536 bytes"),
        (JwksMode::Redirect, "redirect (302) not followed"),
        (JwksMode::Slow(Duration::from_secs(12)), "timed out"),
    ] {
        let up = Upstreams::start();
        up.jwks.set_mode(mode.clone());
        let p = Process::spawn_unready(BIN, &up.env());
        let logged = || p.stderr().to_lowercase().contains(reason);
        assert!(
            poll_until(Duration::from_secs(20), logged),
            "{mode:?}: no {reason:?} in the log:\n{}",
            p.stderr()
        );
        assert_eq!(
            p.get("/healthcheck").status,
            503,
            "{mode:?}: never loaded, so not ready"
        );
        assert_eq!(p.token("/token", &up.token()).status, 503, "{mode:?}");
    }
}
