//! The pipeline's repository: the Buildkite REST API lookup (cached, coalesced, behind a
//! rate-limit circuit) and the normalisation of clone URLs to a GitHub `owner/name`.
//!
//! `GET {api}/v2/organizations/{org}/pipelines/{slug}` with the `read_pipelines` API token;
//! the `repository` field is parsed by [`parse_repository_url`]. Results are cached per
//! (organization, pipeline) for [`Settings::cache_secs`], at most [`Settings::cache_max_entries`]
//! of them (least recently used evicted in O(1)); concurrent misses on one key make one
//! upstream call whose result (or error) every waiter receives. Failures are not cached.
//!
//! The server sizes this cache like the token cache (`TOKEN_CACHE_MAX_ENTRIES`): every
//! pipeline-profile vend touches its pipeline's entry here just before its token's entry there,
//! and there are never more pipelines than pipeline tokens, so while a pipeline's token is still
//! in the token cache its repository is still here, and a cached vend within
//! `PIPELINE_CACHE_SECS` of the lookup never calls Buildkite, however many pipelines are active. Every
//! failure is an [`upstream::Failure`] of [`Service::Buildkite`].
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;

use crate::cache::CoalescingCache;
use crate::github::{is_valid_owner, is_valid_repo_name, strip_git_suffix};
use crate::secret::Secret;
use crate::upstream::{self, Backoff, Failure, Service, json_error, percent_encode};

/// `BUILDKITE_API_URL`'s default.
pub const DEFAULT_API_URL: &str = "https://api.buildkite.com";
/// `PIPELINE_CACHE_SECS`'s default: [`Settings::cache_secs`].
pub const DEFAULT_CACHE_SECS: u64 = 600;
/// [`Settings::cache_max_entries`]'s default (the server passes `TOKEN_CACHE_MAX_ENTRIES`).
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 10_000;

/// A GitHub repository as named by a pipeline. Compare with [`RepoRef::same_repo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    /// The GitHub host, lowercased (the configured `GITHUB_HOST`).
    pub host: String,
    /// The owner as written in the URL.
    pub owner: String,
    /// The name as written, without `.git`.
    pub name: String,
}

impl RepoRef {
    /// Same host, owner and name, ignoring ASCII case.
    pub fn same_repo(&self, other: &RepoRef) -> bool {
        self.host.eq_ignore_ascii_case(&other.host)
            && self.owner.eq_ignore_ascii_case(&other.owner)
            && self.name.eq_ignore_ascii_case(&other.name)
    }

    /// `https://{host}/{owner}/{name}` (no `.git`).
    pub fn https_url(&self) -> String {
        // Pushed, not `format!`: on every pipeline-profile vend.
        let mut url =
            String::with_capacity(10 + self.host.len() + self.owner.len() + self.name.len());
        for part in ["https://", &self.host, "/", &self.owner, "/", &self.name] {
            url.push_str(part);
        }
        url
    }

    /// `owner/name`.
    pub fn full_name(&self) -> String {
        let mut name = String::with_capacity(1 + self.owner.len() + self.name.len());
        for part in [&self.owner, "/", &self.name] {
            name.push_str(part);
        }
        name
    }
}

/// Why a clone URL is not a usable GitHub repository. Never echoes the URL (it may carry
/// credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepoUrlError {
    /// The host is not the configured GitHub host.
    NotGitHub,
    /// A scheme other than `https`, `http`, `ssh`, `git`, `git+ssh`.
    UnsupportedScheme,
    /// Whitespace, control or non-ASCII characters.
    BadCharacter,
    /// Not exactly `owner/name` after the host (missing, empty or extra segments, query).
    BadPath,
    /// The owner is outside GitHub's login charset.
    BadOwner,
    /// The name is outside GitHub's repository-name charset.
    BadName,
}

impl fmt::Display for RepoUrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RepoUrlError::NotGitHub => "pipeline repository is not on GitHub",
            RepoUrlError::UnsupportedScheme => "pipeline repository url has an unsupported scheme",
            RepoUrlError::BadCharacter => {
                "pipeline repository url has whitespace, control or non-ascii characters"
            }
            RepoUrlError::BadPath => "pipeline repository url is not host/owner/name",
            RepoUrlError::BadOwner => "pipeline repository owner is not a github login",
            RepoUrlError::BadName => "pipeline repository name is not a github repository name",
        })
    }
}

impl std::error::Error for RepoUrlError {}

/// Normalises a clone URL (`git@github.com:acme/widgets.git`, `https://github.com/acme/widgets`,
/// `ssh://git@github.com:22/acme/widgets.git`, `git://…`) to a [`RepoRef`] on `github_host`.
pub fn parse_repository_url(url: &str, github_host: &str) -> Result<RepoRef, RepoUrlError> {
    if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(RepoUrlError::BadCharacter);
    }
    let (authority, path) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let known = ["https", "http", "ssh", "git", "git+ssh"];
            if !known.iter().any(|k| scheme.eq_ignore_ascii_case(k)) {
                return Err(RepoUrlError::UnsupportedScheme);
            }
            rest.split_once('/').ok_or(RepoUrlError::BadPath)?
        }
        None => url.split_once(':').ok_or(RepoUrlError::BadPath)?, // scp-like: [user@]host:path
    };
    let host = host_of(authority).ok_or(RepoUrlError::BadPath)?;
    if !host.eq_ignore_ascii_case(github_host) {
        return Err(RepoUrlError::NotGitHub);
    }
    let (owner, name) = owner_and_name(path)?;
    Ok(RepoRef {
        host: host.to_ascii_lowercase(),
        owner: owner.to_owned(),
        name: name.to_owned(),
    })
}

/// The host of `[user[:password]@]host[:port]`; `None` if empty or the port is not numeric.
fn host_of(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.split_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return None,
        None => host_port,
    };
    (!host.is_empty()).then_some(host)
}

/// `owner/name[.git][/]` → (owner, name).
fn owner_and_name(path: &str) -> Result<(&str, &str), RepoUrlError> {
    if path.contains(['?', '#']) {
        return Err(RepoUrlError::BadPath);
    }
    let path = path.strip_prefix('/').unwrap_or(path); // scp-like `host:/owner/name`
    let path = path.strip_suffix('/').unwrap_or(path);
    let (owner, name) = path.split_once('/').ok_or(RepoUrlError::BadPath)?;
    if name.contains('/') || owner.is_empty() || name.is_empty() {
        return Err(RepoUrlError::BadPath);
    }
    // `x.git.git` leaves `x.git`, which `is_valid_repo_name` refuses (GitHub does too).
    let name = strip_git_suffix(name);
    if !is_valid_owner(owner) {
        return Err(RepoUrlError::BadOwner);
    }
    if !is_valid_repo_name(name) {
        return Err(RepoUrlError::BadName);
    }
    Ok((owner, name))
}

/// Where to look pipelines up.
#[derive(Clone, Debug)]
pub struct Settings {
    /// API base. Default [`DEFAULT_API_URL`]; a trailing `/` is ignored.
    pub api_url: String,
    /// How long a pipeline → repository answer is reused (`PIPELINE_CACHE_SECS`). Default
    /// [`DEFAULT_CACHE_SECS`].
    pub cache_secs: u64,
    /// Most cached pipelines, about 300 bytes each. Default [`DEFAULT_CACHE_MAX_ENTRIES`]; the
    /// server sets it to `TOKEN_CACHE_MAX_ENTRIES` (see the module documentation).
    pub cache_max_entries: usize,
    /// The GitHub host repositories must be on (`GITHUB_HOST`). Default
    /// [`github::DEFAULT_HOST`](crate::github::DEFAULT_HOST).
    pub github_host: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            api_url: DEFAULT_API_URL.to_owned(),
            cache_secs: DEFAULT_CACHE_SECS,
            cache_max_entries: DEFAULT_CACHE_MAX_ENTRIES,
            github_host: crate::github::DEFAULT_HOST.to_owned(),
        }
    }
}

/// 404: the pipeline is unknown to our API token (wrong organization or no access).
const PIPELINE_NOT_FOUND: &str = "pipeline not found (check the api token's access)";
/// 401/403: our API token is refused (misconfiguration).
const API_TOKEN_REFUSED: &str = "the api token (401/403)";
/// The organization or pipeline slug of the claims cannot be a Buildkite slug.
const INVALID_SLUG: &str = "organization or pipeline slug is not a buildkite slug";

type Key = (String, String);
type Outcome = Result<RepoRef, Failure>;

/// A cached answer and when it was fetched.
struct Fetched {
    repo: RepoRef,
    fetched_at: u64,
}

/// The Buildkite pipeline client.
pub struct Client {
    http: Arc<upstream::Client>,
    settings: Settings,
    token: Secret,
    cache: CoalescingCache<Key, Fetched, Failure>,
    backoff: Backoff,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("buildkite::Client")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with an empty cache. `token` is the `read_pipelines` API token
    /// ([`Secret::header_safe`], as it is sent in a header).
    pub fn new(http: Arc<upstream::Client>, mut settings: Settings, token: Secret) -> Client {
        settings.api_url = settings.api_url.trim_end_matches('/').to_owned();
        Client {
            http,
            cache: CoalescingCache::new(settings.cache_max_entries),
            settings,
            token,
            backoff: Backoff::new(Service::Buildkite),
        }
    }

    /// The repository of `org`/`pipeline_slug`: from the cache, from a lookup already in
    /// flight, or from one new lookup.
    pub fn pipeline_repository(
        &self,
        org: &str,
        pipeline_slug: &str,
        now: u64,
    ) -> Result<RepoRef, Failure> {
        if !is_valid_slug(org) || !is_valid_slug(pipeline_slug) {
            return Err(Service::Buildkite.refused(INVALID_SLUG));
        }
        let key = (org.to_owned(), pipeline_slug.to_owned());
        let fresh = |f: &Fetched| self.fresh(f.fetched_at, now);
        let lookup = || {
            self.lookup(org, pipeline_slug, now).map(|repo| Fetched {
                repo,
                fetched_at: now,
            })
        };
        let (result, _) = self.cache.get_or_load(&key, fresh, lookup);
        result.map(|fetched| fetched.repo.clone())
    }

    /// The cached repository of a pipeline while its lookup is fresh; `None` otherwise (then
    /// [`Client::pipeline_repository`] looks it up).
    pub fn cached_pipeline_repository(
        &self,
        org: &str,
        pipeline_slug: &str,
        now: u64,
    ) -> Option<RepoRef> {
        let key = (org.to_owned(), pipeline_slug.to_owned());
        self.cache
            .get(&key, |f: &Fetched| self.fresh(f.fetched_at, now))
            .map(|fetched| fetched.repo.clone())
    }

    fn fresh(&self, fetched_at: u64, now: u64) -> bool {
        now >= fetched_at && now - fetched_at < self.settings.cache_secs
    }

    /// One upstream call through the circuit.
    fn lookup(&self, org: &str, slug: &str, now: u64) -> Outcome {
        self.backoff.check(now)?;
        let url = format!(
            "{}/v2/organizations/{}/pipelines/{}",
            self.settings.api_url,
            percent_encode(org),
            percent_encode(slug)
        );
        let authorization = format!("Bearer {}", self.token.expose());
        let headers = [
            ("Authorization", authorization.as_str()),
            ("Accept", "application/json"),
        ];
        let response = self
            .http
            .get(&url, &headers)
            .map_err(|e| Failure::from_transport(Service::Buildkite, e))?;
        match response.status {
            200 => self.repository(&response.body),
            // A 403 is our token refused, never a rate limit: Buildkite rate limits with 429.
            401 | 403 => Err(Service::Buildkite.refused(API_TOKEN_REFUSED)),
            404 => Err(Service::Buildkite.refused(PIPELINE_NOT_FOUND)),
            status => {
                // A 429 is Buildkite's rate limit (a 403 is answered above): it opens the circuit.
                self.backoff.observe(&response, now)?;
                match status {
                    500..=599 => Err(Failure::Unavailable {
                        service: Service::Buildkite,
                        detail: format!("buildkite answered {status}"),
                    }),
                    _ => Err(Service::Buildkite.unusable(format!("unexpected status {status}"))),
                }
            }
        }
    }

    fn repository(&self, body: &[u8]) -> Outcome {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Service::Buildkite.unusable(json_error(&e)))?;
        let url = value
            .get("repository")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| Service::Buildkite.unusable("pipeline has no repository"))?;
        parse_repository_url(url, &self.settings.github_host)
            .map_err(|e| Service::Buildkite.refused(e.to_string()))
    }
}

/// Buildkite slugs: letters, digits, `-` and `_` (never `.`, so never a `..` path segment).
pub fn is_valid_slug(slug: &str) -> bool {
    (1..=100).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (clone URL, expected owner/name or error)
    type Case = (
        &'static str,
        Result<(&'static str, &'static str), RepoUrlError>,
    );

    #[test]
    fn repository_urls() {
        use RepoUrlError::*;
        let cases: &[Case] = &[
            ("git@github.com:acme/widgets.git", Ok(("acme", "widgets"))),
            ("git@github.com:acme/widgets", Ok(("acme", "widgets"))),
            ("github.com:acme/widgets.git", Ok(("acme", "widgets"))),
            ("git@github.com:/acme/widgets.git", Ok(("acme", "widgets"))),
            (
                "https://github.com/acme/widgets.git",
                Ok(("acme", "widgets")),
            ),
            ("https://github.com/acme/widgets", Ok(("acme", "widgets"))),
            ("https://github.com/acme/widgets/", Ok(("acme", "widgets"))),
            (
                "https://github.com/acme/widgets.git/",
                Ok(("acme", "widgets")),
            ),
            (
                "https://x-access-token:secret@github.com/acme/widgets.git",
                Ok(("acme", "widgets")),
            ),
            ("http://github.com/acme/widgets", Ok(("acme", "widgets"))),
            (
                "ssh://git@github.com/acme/widgets.git",
                Ok(("acme", "widgets")),
            ),
            (
                "ssh://git@github.com:22/acme/widgets.git",
                Ok(("acme", "widgets")),
            ),
            (
                "git+ssh://git@github.com/acme/widgets.git",
                Ok(("acme", "widgets")),
            ),
            ("git://github.com/acme/widgets.git", Ok(("acme", "widgets"))),
            (
                "HTTPS://GitHub.COM/Acme/Widgets.GIT",
                Ok(("Acme", "Widgets")),
            ),
            (
                "https://github.com/acme/my.repo_name-2",
                Ok(("acme", "my.repo_name-2")),
            ),
            ("https://github.com/acme/.github", Ok(("acme", ".github"))),
            ("git@gitlab.com:acme/widgets.git", Err(NotGitHub)),
            ("https://gitlab.com/acme/widgets", Err(NotGitHub)),
            (
                "https://github.com.evil.example/acme/widgets",
                Err(NotGitHub),
            ),
            (
                "https://evil.example/github.com/acme/widgets",
                Err(NotGitHub),
            ),
            ("ftp://github.com/acme/widgets", Err(UnsupportedScheme)),
            ("file:///srv/git/widgets.git", Err(UnsupportedScheme)),
            ("https://github.com/acme/widgets/tree/main", Err(BadPath)),
            ("https://github.com/acme", Err(BadPath)),
            ("https://github.com/acme/", Err(BadPath)),
            ("https://github.com//widgets", Err(BadPath)),
            ("https://github.com/acme/widgets?x=1", Err(BadPath)),
            ("https://github.com/acme/widgets#main", Err(BadPath)),
            ("https://github.com", Err(BadPath)),
            ("ssh://git@github.com:port/acme/widgets", Err(BadPath)),
            ("/srv/git/widgets", Err(BadPath)),
            ("", Err(BadCharacter)),
            ("https://github.com/acme/wid gets", Err(BadCharacter)),
            ("https://github.com/acme/widgets\n", Err(BadCharacter)),
            ("https://github.com/acme/widgets\u{0}", Err(BadCharacter)),
            ("https://github.com/acmé/widgets", Err(BadCharacter)),
            ("https://github.com/-acme/widgets", Err(BadOwner)),
            ("https://github.com/ac.me/widgets", Err(BadOwner)),
            ("https://github.com/acme/wid$gets", Err(BadName)),
            ("https://github.com/acme/..", Err(BadName)),
            ("https://github.com/acme/widgets.git.git", Err(BadName)),
            ("git@github.com:acme/widgets.GIT.git", Err(BadName)),
            ("https://github.com/acme/.git", Err(BadName)),
        ];
        for (url, want) in cases {
            let got = parse_repository_url(url, "github.com");
            let got = got
                .as_ref()
                .map(|r| (r.owner.as_str(), r.name.as_str()))
                .map_err(Clone::clone);
            assert_eq!(got, *want, "{url:?}");
        }
    }

    #[test]
    fn enterprise_host_and_normal_forms() {
        let repo = parse_repository_url("git@GHE.example.com:acme/Widgets.git", "ghe.example.com")
            .unwrap();
        assert_eq!(repo.https_url(), "https://ghe.example.com/acme/Widgets");
        assert_eq!(repo.full_name(), "acme/Widgets");
        assert_eq!(
            parse_repository_url("git@github.com:acme/widgets.git", "ghe.example.com"),
            Err(RepoUrlError::NotGitHub)
        );
    }

    #[test]
    fn same_repo_ignores_case_only() {
        let a = parse_repository_url("git@github.com:acme/widgets.git", "github.com").unwrap();
        let b = parse_repository_url("https://GitHub.com/ACME/Widgets", "github.com").unwrap();
        let c = parse_repository_url("https://github.com/acme/gadgets", "github.com").unwrap();
        assert!(a.same_repo(&b));
        assert!(!a.same_repo(&c));
    }

    #[test]
    fn slugs() {
        for good in ["acme", "my-pipeline", "a_b", "x1"] {
            assert!(is_valid_slug(good), "{good:?}");
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "..",
            ".",
            "..%2f",
            "a?b",
            &"x".repeat(101),
        ] {
            assert!(!is_valid_slug(bad), "{bad:?}");
        }
    }
}
