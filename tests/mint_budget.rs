//! The organization's mint budget through the running process and the GitHub stand-in:
//! `RATE_LIMIT_MINTS` (misses past it answer 503 with `Retry-After`, cached tokens are still
//! served), GitHub's `x-ratelimit-remaining` / `x-ratelimit-reset` as gauges, and
//! `GITHUB_RATELIMIT_RESERVE` (below it misses answer 503 until GitHub's reset). The fleet-wide
//! budget (`CACHE_URL`) is in `fleet.rs`.
#![forbid(unsafe_code)]

mod support;

use std::time::Duration;

use support::kitebridge::{HttpResponse, Process, Upstreams, assert_json_error};
use support::util::{now, poll_for};

const BIN: &str = env!("CARGO_BIN_EXE_kitebridge");

/// The caller-scoped organization profile `any`: one cache key per repository asked.
const PROFILES: &str = r#"{"organization": {"profiles": [
  {"name": "any", "repositories": ["{{caller-scoped-repository}}"], "permissions": ["contents:read"]}
]}}"#;

fn serve(up: &Upstreams, extra: &[(&str, &str)]) -> (Process, support::util::TempDir) {
    let dir = support::util::temp_dir("mints");
    let file = dir.join("profiles.json");
    std::fs::write(&file, PROFILES).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let env = up.env_with_no_rate_limits(&[&[("PROFILES_FILE", file.as_str())], extra].concat());
    (Process::spawn(BIN, &env), dir)
}

fn scoped(p: &Process, up: &Upstreams, repository: &str) -> HttpResponse {
    p.token(
        &format!("/organization/token/any?repository-scope={repository}"),
        &up.token(),
    )
}

/// A sample's value from `/metrics` (`series` is the name with its labels), if present.
fn metric(p: &Process, series: &str) -> Option<f64> {
    let text = p.get("/metrics").text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn misses_past_the_mint_budget_answer_503_and_cached_tokens_are_still_served() {
    let up = Upstreams::start();
    let (p, _dir) = serve(&up, &[("RATE_LIMIT_MINTS", "2/3600s")]);
    for repository in ["widgets", "gears"] {
        let r = scoped(&p, &up, repository);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.github.mints(), 2);

    let r = scoped(&p, &up, "cfg");
    assert_json_error(&r, 503, "mint budget exhausted");
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!(
        (1..=1800).contains(&retry),
        "one mint every 30 minutes: {retry}"
    );
    let audit = p.audit_of(&r);
    assert_eq!(
        audit["error"],
        format!("RATE_LIMIT_MINTS exhausted: no github mint for {retry}s")
    );
    assert_eq!(audit["vended"], serde_json::Value::Null);
    assert_eq!(up.github.mints(), 2, "no mint past the budget");

    // Cached tokens are served and spend nothing.
    for repository in ["widgets", "gears", "widgets"] {
        let r = scoped(&p, &up, repository);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(p.audit_of(&r)["vended"]["cache"], "hit");
    }
    assert_eq!(
        metric(&p, "kitebridge_mints_held_back_total{reason=\"budget\"}"),
        Some(1.0)
    );

    // `off`: no budget at all.
    let (p, _dir) = serve(&up, &[("RATE_LIMIT_MINTS", "off")]);
    for repository in ["widgets", "gears", "cfg"] {
        assert_eq!(scoped(&p, &up, repository).status, 200);
    }
    assert_eq!(up.github.mints(), 5);
}

#[test]
fn below_githubs_reserve_misses_wait_for_the_reset_and_the_gauges_show_it() {
    let up = Upstreams::start();
    let reset_far = now() + 3000;
    up.github.set_rate_limit(Some((4000, reset_far)));
    let (p, _dir) = serve(&up, &[("GITHUB_RATELIMIT_RESERVE", "100")]);
    let r = scoped(&p, &up, "widgets");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        metric(&p, "kitebridge_github_ratelimit_remaining"),
        Some(4000.0)
    );
    assert_eq!(
        metric(&p, "kitebridge_github_ratelimit_reset_timestamp_seconds"),
        Some(reset_far as f64)
    );

    // GitHub's next answer says 99 left: that mint still goes through (the number was not known
    // before it), the one after is held back until the reset.
    let reset = now() + 4;
    up.github.set_rate_limit(Some((99, reset)));
    assert_eq!(scoped(&p, &up, "gears").status, 200);
    assert_eq!(
        metric(&p, "kitebridge_github_ratelimit_remaining"),
        Some(99.0)
    );
    let r = scoped(&p, &up, "cfg");
    assert_json_error(&r, 503, "upstream unavailable");
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=4).contains(&retry), "until the reset: {retry}");
    let error = p.audit_of(&r)["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with(
            "github reports 99 requests remaining, under GITHUB_RATELIMIT_RESERVE 100: no github mint for"
        ),
        "{error}"
    );
    assert_eq!(up.github.mints(), 2);
    assert_eq!(
        metric(
            &p,
            "kitebridge_mints_held_back_total{reason=\"github_reserve\"}"
        ),
        Some(1.0)
    );

    // Cached tokens keep being served.
    let r = scoped(&p, &up, "widgets");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.audit_of(&r)["vended"]["cache"], "hit");

    // Past the reset the miss mints again.
    up.github.set_rate_limit(Some((5000, now() + 3600)));
    let served = poll_for(Duration::from_secs(15), || {
        let r = scoped(&p, &up, "cfg");
        (r.status == 200).then_some(r)
    });
    assert!(served.is_some(), "no mint after the reset");
    assert!(now() >= reset, "not before the reset");
    assert_eq!(up.github.mints(), 3);
    assert_eq!(
        metric(&p, "kitebridge_github_ratelimit_remaining"),
        Some(5000.0)
    );
}
