//! The Buildkite pipeline lookup against the Buildkite stand-in: every error class, the cache
//! and its expiry, coalesced concurrent lookups, and the rate-limit circuit.
#![forbid(unsafe_code)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use kitebridge::{
    BuildkiteClient as Client, BuildkiteSettings as Settings, Failure, RepoUrlError, Secret,
    Service, UpstreamClient, UpstreamSettings,
};
use support::buildkite::{BkFail, BuildkiteStandIn};
use support::util::all_at_once;

/// The HTTP status kitebridge answers for a failure. The upstream modules no longer know it; the
/// one mapping is `token::Refusal::answer`, which this asks.
trait StatusHint {
    fn status_hint(&self) -> u16;
}

impl StatusHint for Failure {
    fn status_hint(&self) -> u16 {
        kitebridge::Refusal::from(self.clone()).answer().status
    }
}

/// A lookup refused by Buildkite or by the client, with its reason.
fn refused(detail: &str) -> Failure {
    Failure::Refused {
        service: Service::Buildkite,
        detail: detail.to_owned(),
    }
}

const API_TOKEN: &str = "bkua_0123456789abcdef";

fn stand_in() -> BuildkiteStandIn {
    let buildkite = BuildkiteStandIn::start(API_TOKEN);
    buildkite.set_pipeline("acme", "widgets", "git@github.com:acme/widgets.git");
    buildkite.set_pipeline("acme", "gitlab-thing", "git@gitlab.com:acme/thing.git");
    buildkite
}

fn client_with(buildkite: &BuildkiteStandIn, token: &str) -> Client {
    let http = UpstreamSettings {
        timeout_connect: Duration::from_millis(500),
        timeout_global: Duration::from_millis(800),
        ..UpstreamSettings::default()
    };
    let settings = Settings {
        api_url: buildkite.api_url(),
        ..Settings::default()
    };
    Client::new(
        Arc::new(UpstreamClient::new(&http).unwrap()),
        settings,
        Secret::header_safe(token.into()).unwrap(),
    )
}

fn client(buildkite: &BuildkiteStandIn) -> Client {
    client_with(buildkite, API_TOKEN)
}

const T: u64 = 1_800_000_000;

#[test]
fn finds_the_pipeline_repository() {
    let buildkite = stand_in();
    let repo = client(&buildkite)
        .pipeline_repository("acme", "widgets", T)
        .unwrap();
    assert_eq!(repo.full_name(), "acme/widgets");
    assert_eq!(repo.https_url(), "https://github.com/acme/widgets");
    assert_eq!(buildkite.calls(), 1);
}

#[test]
fn cached_for_cache_secs_then_looked_up_again() {
    let buildkite = stand_in();
    let client = client(&buildkite);
    client.pipeline_repository("acme", "widgets", T).unwrap();
    client
        .pipeline_repository("acme", "widgets", T + 599)
        .unwrap();
    assert_eq!(buildkite.calls(), 1);

    buildkite.set_pipeline("acme", "widgets", "https://github.com/acme/widgets-renamed");
    let fresh = client
        .pipeline_repository("acme", "widgets", T + 600)
        .unwrap();
    assert_eq!(fresh.name, "widgets-renamed");
    assert_eq!(buildkite.calls(), 2);
}

#[test]
fn thousands_of_pipelines_stay_cached_within_the_size() {
    // Once capped at 4096 whatever the token cache held (past it every lookup called
    // Buildkite): now exactly as many as configured (the server passes the token cache's size).
    let buildkite = BuildkiteStandIn::start(API_TOKEN);
    let pipelines = 300;
    for i in 0..pipelines {
        buildkite.set_pipeline(
            "acme",
            &format!("p{i}"),
            &format!("git@github.com:acme/r{i}.git"),
        );
    }
    let settings = Settings {
        api_url: buildkite.api_url(),
        cache_max_entries: pipelines,
        ..Settings::default()
    };
    let http = UpstreamClient::new(&UpstreamSettings::default()).unwrap();
    let secret = Secret::header_safe(API_TOKEN.into()).unwrap();
    let client = Client::new(Arc::new(http), settings, secret);
    for round in 0..2 {
        for i in 0..pipelines {
            let repo = client
                .pipeline_repository("acme", &format!("p{i}"), T + round)
                .unwrap();
            assert_eq!(repo.name, format!("r{i}"));
        }
        assert_eq!(buildkite.calls(), pipelines, "round {round}");
    }
    // One more than it holds: the least recently used (p0) goes, the others stay.
    buildkite.set_pipeline("acme", "extra", "git@github.com:acme/extra.git");
    client.pipeline_repository("acme", "extra", T + 2).unwrap();
    client.pipeline_repository("acme", "p1", T + 2).unwrap();
    assert_eq!(buildkite.calls(), pipelines + 1);
    client.pipeline_repository("acme", "p0", T + 2).unwrap();
    assert_eq!(buildkite.calls(), pipelines + 2);
}

#[test]
fn concurrent_lookups_make_one_call() {
    let buildkite = stand_in();
    buildkite.set_fail(BkFail::Delay(Duration::from_millis(300)));
    let client = client(&buildkite);
    let results = all_at_once(16, move || client.pipeline_repository("acme", "widgets", T));
    for result in results {
        assert_eq!(result.unwrap().full_name(), "acme/widgets");
    }
    assert_eq!(buildkite.calls(), 1);
}

#[test]
fn concurrent_waiters_share_a_failure_which_is_not_cached() {
    let buildkite = stand_in();
    buildkite.set_fail(BkFail::Hang(Duration::from_secs(3))); // the client times out at 0.8 s
    let client = Arc::new(client(&buildkite));
    let shared = Arc::clone(&client);
    let results = all_at_once(8, move || shared.pipeline_repository("acme", "widgets", T));
    for result in results {
        assert!(matches!(result, Err(Failure::Unavailable { .. })));
    }
    assert_eq!(buildkite.calls(), 1);

    buildkite.set_fail(BkFail::None);
    client.pipeline_repository("acme", "widgets", T).unwrap();
    assert_eq!(buildkite.calls(), 2, "a failure was cached");
}

#[test]
fn different_pipelines_are_different_keys() {
    let buildkite = stand_in();
    buildkite.set_pipeline("acme", "gadgets", "https://github.com/acme/gadgets.git");
    let client = client(&buildkite);
    assert_eq!(
        client
            .pipeline_repository("acme", "widgets", T)
            .unwrap()
            .name,
        "widgets"
    );
    assert_eq!(
        client
            .pipeline_repository("acme", "gadgets", T)
            .unwrap()
            .name,
        "gadgets"
    );
    assert_eq!(buildkite.calls(), 2);
}

#[test]
fn error_classes() {
    let buildkite = stand_in();
    let client = client(&buildkite);
    let not_found = client.pipeline_repository("acme", "nope", T).unwrap_err();
    assert_eq!(
        not_found,
        refused("pipeline not found (check the api token's access)")
    );
    assert_eq!(not_found.status_hint(), 500);

    let gitlab = client
        .pipeline_repository("acme", "gitlab-thing", T)
        .unwrap_err();
    assert_eq!(gitlab, refused(&RepoUrlError::NotGitHub.to_string()));
    assert_eq!(
        gitlab.to_string(),
        "buildkite refused: pipeline repository is not on GitHub"
    );
    assert_eq!(gitlab.status_hint(), 500);

    buildkite.set_fail(BkFail::Status(500));
    let server_error = client
        .pipeline_repository("acme", "widgets", T)
        .unwrap_err();
    assert!(
        matches!(server_error, Failure::Unavailable { .. }),
        "{server_error}"
    );
    assert_eq!(server_error.status_hint(), 503);

    buildkite.set_fail(BkFail::Status(404));
    assert_eq!(
        client
            .pipeline_repository("acme", "widgets", T)
            .unwrap_err(),
        refused("pipeline not found (check the api token's access)")
    );

    buildkite.set_fail(BkFail::Hang(Duration::from_secs(3)));
    let hang = client
        .pipeline_repository("acme", "widgets", T)
        .unwrap_err();
    assert!(matches!(hang, Failure::Unavailable { .. }), "{hang}");
}

#[test]
fn bad_api_token_is_unauthorized() {
    let buildkite = stand_in();
    let error = client_with(&buildkite, "bkua_wrong")
        .pipeline_repository("acme", "widgets", T)
        .unwrap_err();
    assert_eq!(error, refused("the api token (401/403)"));
    assert_eq!(error.status_hint(), 500);
    assert!(!format!("{error} {error:?}").contains("bkua_"));
}

#[test]
fn rate_limit_opens_a_circuit_but_cached_answers_keep_coming() {
    let buildkite = stand_in();
    buildkite.set_pipeline("acme", "gadgets", "https://github.com/acme/gadgets");
    let client = client(&buildkite);
    client.pipeline_repository("acme", "widgets", T).unwrap();

    buildkite.set_fail(BkFail::RateLimited { reset: 42 });
    let error = client
        .pipeline_repository("acme", "gadgets", T)
        .unwrap_err();
    assert_eq!(
        error,
        Failure::RateLimited {
            service: Service::Buildkite,
            retry_after_secs: 42
        }
    );
    assert_eq!(error.status_hint(), 503);
    let calls = buildkite.calls();

    buildkite.set_fail(BkFail::None);
    assert_eq!(
        client
            .pipeline_repository("acme", "gadgets", T + 40)
            .unwrap_err(),
        Failure::RateLimited {
            service: Service::Buildkite,
            retry_after_secs: 2
        }
    );
    assert_eq!(
        client
            .pipeline_repository("acme", "widgets", T + 40)
            .unwrap()
            .name,
        "widgets"
    );
    assert_eq!(
        buildkite.calls(),
        calls,
        "called Buildkite while the circuit was open"
    );

    assert_eq!(
        client
            .pipeline_repository("acme", "gadgets", T + 42)
            .unwrap()
            .name,
        "gadgets"
    );
}

#[test]
fn slugs_are_validated_before_any_call() {
    let buildkite = stand_in();
    let client = client(&buildkite);
    for (org, slug) in [
        ("acme", "../../user"),
        ("acme/x", "widgets"),
        ("acme", ""),
        ("acme", "a?b=c"),
        ("acme", ".."),
    ] {
        assert_eq!(
            client.pipeline_repository(org, slug, T).unwrap_err(),
            refused("organization or pipeline slug is not a buildkite slug"),
            "{org:?} {slug:?}"
        );
    }
    assert_eq!(buildkite.calls(), 0);
}

#[test]
fn repository_that_is_not_owner_and_name_is_refused() {
    let buildkite = stand_in();
    buildkite.set_pipeline("acme", "weird", "https://github.com/acme/widgets/tree/main");
    let error = client(&buildkite)
        .pipeline_repository("acme", "weird", T)
        .unwrap_err();
    assert_eq!(error, refused(&RepoUrlError::BadPath.to_string()));
}

#[test]
fn unexpected_answers_are_unusable() {
    let buildkite = stand_in();
    let client = client(&buildkite);
    for status in [302, 418] {
        buildkite.set_fail(BkFail::Status(status));
        let error = client
            .pipeline_repository("acme", "widgets", T)
            .unwrap_err();
        assert!(
            matches!(error, Failure::Unusable { .. }),
            "{status}: {error}"
        );
        assert_eq!(error.status_hint(), 502);
    }
}
