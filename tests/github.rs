//! The GitHub App client against the GitHub stand-in: every error class produced the way GitHub
//! produces it, the mint body, refusal and revocation of a too-wide token, App JWT re-use, the
//! rate-limit circuit, the contents API, and a GitHub Enterprise base URL.
#![forbid(unsafe_code)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use kitebridge::{
    AppKey, Contents, Failure, GitHubClient as Client, GitHubSettings as Settings, MintRequest,
    Secret, Service, UpstreamClient, UpstreamSettings,
};
use serde_json::json;
use support::github::{APP_KEY_PEM, Fail, GitHubStandIn, Route, app_public_key};
use support::kitebridge::{ACCOUNT, APP_ID, INSTALLATION_ID, github_stand_in};
use support::util::now;

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

fn client_with_key(api_url: &str, key_pem: &str) -> Client {
    let http = UpstreamSettings {
        timeout_connect: Duration::from_millis(500),
        timeout_global: Duration::from_millis(800),
        ..UpstreamSettings::default()
    };
    let settings = Settings {
        api_url: api_url.to_owned(),
        app_id: APP_ID.to_owned(),
        installation_id: INSTALLATION_ID,
    };
    let key = AppKey::from_pem(key_pem.as_bytes()).unwrap();
    Client::new(Arc::new(UpstreamClient::new(&http).unwrap()), settings, key)
}

fn client(github: &GitHubStandIn) -> Client {
    client_with_key(&github.api_url(), APP_KEY_PEM)
}

fn request(repos: Option<&[&str]>, perms: &[(&str, &str)]) -> MintRequest {
    MintRequest {
        repositories: repos.map(|r| r.iter().map(|s| s.to_string()).collect()),
        permissions: perms
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn contents_read() -> MintRequest {
    request(
        Some(&["widgets"]),
        &[("contents", "read"), ("metadata", "read")],
    )
}

#[test]
fn reads_the_installation_account() {
    let github = github_stand_in();
    assert_eq!(client(&github).installation_account(now()).unwrap(), "acme");
    assert_eq!(github.calls(Route::Installation), 1);
}

#[test]
fn mint_sends_an_explicit_list_and_permissions() {
    let github = github_stand_in();
    let now = now();
    let asked = request(
        Some(&["widgets", "gears"]),
        &[("contents", "write"), ("metadata", "read")],
    );
    let minted = client(&github).mint(&asked, now).unwrap();

    assert_eq!(
        github.mint_bodies(),
        vec![
            json!({"repositories": ["widgets", "gears"], "permissions": {"contents": "write", "metadata": "read"}})
        ]
    );
    assert_eq!(minted.repositories, vec!["acme/widgets", "acme/gears"]);
    assert_eq!(minted.repository_selection, "selected");
    assert_eq!(minted.permissions, asked.permissions);
    assert!(
        (now + 3590..=now + 3610).contains(&minted.expires_at),
        "{}",
        minted.expires_at
    );
    let token = minted.token.expose();
    assert!(
        token.starts_with("ghs_") && token.len() >= 500,
        "{} chars",
        token.len()
    );
    assert!(token.contains('.') && token.contains('_') && token.contains('-'));
    assert_eq!(github.issued()[0].token, token);
    assert_eq!(
        format!("{minted:?}").matches("ghs_").count(),
        0,
        "Debug leaks the token"
    );
}

#[test]
fn all_repositories_profile_omits_the_list() {
    let github = github_stand_in();
    let minted = client(&github)
        .mint(&request(None, &[("metadata", "read")]), now())
        .unwrap();
    assert_eq!(
        github.mint_bodies(),
        vec![json!({"permissions": {"metadata": "read"}})]
    );
    assert_eq!(minted.repository_selection, "all");
    assert!(minted.repositories.is_empty());
}

#[test]
fn empty_list_and_oversized_list_are_refused_locally() {
    let github = github_stand_in();
    let client = client(&github);
    let empty = client
        .mint(&request(Some(&[]), &[("contents", "read")]), now())
        .unwrap_err();
    assert!(matches!(empty, Failure::Refused { .. }), "{empty}");
    let names: Vec<String> = (0..501).map(|i| format!("r{i}")).collect();
    let many = MintRequest {
        repositories: Some(names),
        permissions: contents_read().permissions,
    };
    assert!(matches!(
        client.mint(&many, now()).unwrap_err(),
        Failure::Refused { .. }
    ));
    assert_eq!(github.calls(Route::Mint), 0);
}

#[test]
fn granted_too_much_is_refused_and_revoked() {
    let github = github_stand_in();
    github.set_fail(Fail::GrantMore);
    let error = client(&github).mint(&contents_read(), now()).unwrap_err();
    assert!(matches!(error, Failure::Unusable { .. }), "{error}");
    assert_eq!(error.status_hint(), 502);
    assert!(error.to_string().contains("administration"), "{error}");
    let issued = github.issued();
    assert_eq!(issued.len(), 1);
    assert!(issued[0].revoked, "the refused token was not revoked");
    assert!(!error.to_string().contains(&issued[0].token));
}

#[test]
fn metadata_not_asked_is_a_wider_grant() {
    // GitHub adds metadata:read to every token; a request without it gets more than asked.
    let github = github_stand_in();
    let error = client(&github)
        .mint(&request(Some(&["widgets"]), &[("contents", "read")]), now())
        .unwrap_err();
    assert!(matches!(error, Failure::Unusable { .. }), "{error}");
    assert!(github.issued()[0].revoked);
}

#[test]
fn server_error_is_transient() {
    let github = github_stand_in();
    github.set_fail(Fail::Status(500));
    let error = client(&github).mint(&contents_read(), now()).unwrap_err();
    assert!(matches!(error, Failure::Unavailable { .. }), "{error}");
    assert_eq!(error.status_hint(), 503);
}

#[test]
fn validation_failures_are_misconfiguration_with_the_message() {
    let github = github_stand_in();
    let client = client(&github);
    let cases = [
        request(
            Some(&["not-installed"]),
            &[("contents", "read"), ("metadata", "read")],
        ),
        request(
            Some(&["widgets"]),
            &[("pull-requests", "read"), ("metadata", "read")],
        ),
        request(
            Some(&["widgets"]),
            &[("administration", "write"), ("metadata", "read")],
        ),
    ];
    for asked in &cases {
        let error = client.mint(asked, now()).unwrap_err();
        assert!(matches!(error, Failure::Refused { .. }), "{error}");
        assert_eq!(error.status_hint(), 500);
        assert!(error.to_string().contains("422"), "{error}");
    }
    github.set_fail(Fail::Status422);
    let error = client.mint(&contents_read(), now()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not accessible to the parent installation"),
        "{error}"
    );
    assert_eq!(github.mints(), 0);
}

#[test]
fn unknown_installation_and_wrong_key_are_misconfiguration() {
    let github = github_stand_in();
    let other = GitHubStandIn::start(APP_ID, INSTALLATION_ID + 1, ACCOUNT, app_public_key());
    let error = client(&other).installation_account(now()).unwrap_err();
    assert!(
        matches!(error, Failure::Refused { .. }) && error.to_string().contains("404"),
        "{error}"
    );

    let wrong_key = include_str!("fixtures/test-oidc-key-a.pkcs8.pem");
    let error = client_with_key(&github.api_url(), wrong_key)
        .mint(&contents_read(), now())
        .unwrap_err();
    assert!(
        matches!(error, Failure::Refused { .. }) && error.to_string().contains("401"),
        "{error}"
    );
    assert_eq!(github.mints(), 0);
}

#[test]
fn rate_limit_opens_a_circuit_until_retry_after() {
    let github = github_stand_in();
    let client = client(&github);
    let t = now();
    github.set_fail(Fail::RateLimited { retry_after: 30 });
    let error = client.mint(&contents_read(), t).unwrap_err();
    assert_eq!(
        error,
        Failure::RateLimited {
            service: Service::GitHub,
            retry_after_secs: 30
        }
    );
    assert_eq!(error.status_hint(), 503);
    assert_eq!(github.calls(Route::Mint), 1);

    github.set_fail(Fail::None);
    assert_eq!(
        client.mint(&contents_read(), t + 10).unwrap_err(),
        Failure::RateLimited {
            service: Service::GitHub,
            retry_after_secs: 20
        }
    );
    assert_eq!(
        client.installation_account(t + 29).unwrap_err(),
        Failure::RateLimited {
            service: Service::GitHub,
            retry_after_secs: 1
        }
    );
    assert_eq!(
        github.calls(Route::Mint),
        1,
        "called GitHub while the circuit was open"
    );
    assert_eq!(github.calls(Route::Installation), 0);

    github.set_now(Some(t + 30));
    client.mint(&contents_read(), t + 30).unwrap();
    assert_eq!(github.calls(Route::Mint), 2);
}

#[test]
fn hanging_github_is_a_transient_timeout() {
    let github = github_stand_in();
    github.set_fail(Fail::Hang(Duration::from_secs(3)));
    let started = std::time::Instant::now();
    let error = client(&github).mint(&contents_read(), now()).unwrap_err();
    assert!(matches!(error, Failure::Unavailable { .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn slow_but_answering_github_is_fine() {
    let github = github_stand_in();
    github.set_fail(Fail::Delay(Duration::from_millis(200)));
    assert!(client(&github).mint(&contents_read(), now()).is_ok());
}

#[test]
fn one_app_jwt_is_reused_for_eight_minutes() {
    let github = github_stand_in();
    let client = client(&github);
    let t = now();
    github.set_now(Some(t));
    client.installation_account(t).unwrap();
    github.set_now(Some(t + 100));
    client.mint(&contents_read(), t + 100).unwrap();
    github.set_now(Some(t + 479));
    client.mint(&contents_read(), t + 479).unwrap();
    assert_eq!(github.distinct_jwts(), 1);

    github.set_now(Some(t + 480));
    client.mint(&contents_read(), t + 480).unwrap();
    assert_eq!(github.distinct_jwts(), 2);
}

#[test]
fn revoke_deletes_the_token() {
    let github = github_stand_in();
    let client = client(&github);
    let minted = client.mint(&contents_read(), now()).unwrap();
    client.revoke(&minted.token, now()).unwrap();
    assert!(github.issued()[0].revoked);
    let again = client.revoke(&minted.token, now()).unwrap_err();
    assert!(matches!(again, Failure::Refused { .. }), "{again}");
}

fn contents_token(client: &Client) -> Secret {
    client
        .mint(
            &request(
                Some(&["cfg"]),
                &[("contents", "read"), ("metadata", "read")],
            ),
            now(),
        )
        .unwrap()
        .token
}

#[test]
fn contents_raw_with_etag_and_304() {
    let github = github_stand_in();
    let client = client(&github);
    let token = contents_token(&client);
    github.set_contents(b"{\"profiles\":1}");
    let Contents::File { bytes, etag } = client
        .contents(
            &token,
            "acme",
            "cfg",
            "dir/kitebridge.json",
            Some("release/v1&x"),
            None,
            now(),
        )
        .unwrap()
    else {
        panic!("expected a file");
    };
    assert_eq!(bytes, b"{\"profiles\":1}");
    let etag = etag.expect("an etag");
    assert_eq!(
        github.contents_refs(),
        vec![Some("release/v1&x".to_owned())]
    );

    let unchanged = client
        .contents(
            &token,
            "acme",
            "cfg",
            "dir/kitebridge.json",
            None,
            Some(&etag),
            now(),
        )
        .unwrap();
    assert_eq!(unchanged, Contents::Unchanged);

    github.set_contents(b"{\"profiles\":2}");
    let changed = client
        .contents(
            &token,
            "acme",
            "cfg",
            "dir/kitebridge.json",
            None,
            Some(&etag),
            now(),
        )
        .unwrap();
    assert!(matches!(changed, Contents::File { ref bytes, .. } if bytes == b"{\"profiles\":2}"));
}

#[test]
fn contents_json_form_with_newlines_is_decoded() {
    let github = github_stand_in();
    github.set_raw_media_type(false); // answers GitHub's base64 JSON form whatever is asked
    let client = client(&github);
    let token = contents_token(&client);
    let file: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    github.set_contents(&file);
    let Contents::File { bytes, etag } = client
        .contents(&token, "acme", "cfg", "p.json", None, None, now())
        .unwrap()
    else {
        panic!("expected a file");
    };
    assert_eq!(bytes, file);
    assert!(etag.is_some());
}

#[test]
fn contents_needs_a_token_for_that_repository() {
    let github = github_stand_in();
    let client = client(&github);
    let widgets_only = client.mint(&contents_read(), now()).unwrap().token;
    let error = client
        .contents(&widgets_only, "acme", "cfg", "p.json", None, None, now())
        .unwrap_err();
    assert!(
        matches!(error, Failure::Refused { .. }) && error.to_string().contains("404"),
        "{error}"
    );
    let traversal = client
        .contents(&widgets_only, "acme", "cfg", "../p.json", None, None, now())
        .unwrap_err();
    assert!(matches!(traversal, Failure::Refused { .. }), "{traversal}");
}

#[test]
fn enterprise_base_url_keeps_the_api_v3_prefix() {
    let github =
        GitHubStandIn::start_enterprise(APP_ID, INSTALLATION_ID, ACCOUNT, app_public_key());
    assert!(github.api_url().ends_with("/api/v3"));
    for base in [github.api_url(), format!("{}/", github.api_url())] {
        let client = client_with_key(&base, APP_KEY_PEM);
        assert_eq!(client.installation_account(now()).unwrap(), "acme");
        let minted = client.mint(&contents_read(), now()).unwrap();
        client.revoke(&minted.token, now()).unwrap();
    }
    assert_eq!(github.mints(), 2);
    // Without the prefix the stand-in, like GHES, has nothing there.
    let root = github.api_url().trim_end_matches("/api/v3").to_owned();
    let error = client_with_key(&root, APP_KEY_PEM)
        .installation_account(now())
        .unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
}
