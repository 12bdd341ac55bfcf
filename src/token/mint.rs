//! Mint: from what was authorized to a GitHub installation token, through the token cache.
//!
//! The cache key carries everything that decides what a token covers (profile generation digest,
//! profile, repositories, the pipeline for pipeline profiles, the permissions); concurrent
//! identical misses share one GitHub call. The pipeline's own repository is looked up through
//! Buildkite first ([`pipeline_repository`]).
//!
//! A token's life is the shorter of the profile's `ttl` and the exchange's `expires_in` (both
//! part of the key, see [`TokenKey`]); its end of life, reported in every response, is the
//! earlier of GitHub's expiry and minted + life ([`Vended::end_of_life`]). A token minted here
//! whose end of life comes before GitHub's expiry is handed to the revoker for then. A cached
//! token is served only while it has `min(TOKEN_MIN_REMAINING_SECS, life / 2)` to live.
//!
//! With the shared cache (`CACHE_URL`), an in-process miss asks it once, under the in-process
//! single flight (so one process has at most one shared-cache flight per key): a shared hit
//! fills the in-process cache; a shared miss takes the fleet's mint lock, so N instances make
//! one GitHub call ([`shared::SharedCache::get_or_mint`]). In-process hits never reach it.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::Service;
use super::authorize::Authorized;
use super::refusal::Refusal;
use crate::buildkite::RepoRef;
use crate::cache::Outcome;
use crate::cidr::CidrSet;
use crate::github::{self, MintRequest, Minted};
use crate::json;
use crate::metrics;
use crate::oidc::Claims;
use crate::profiles::Ttl;
use crate::revoke::Revocation;
use crate::shared::{self, Origin, Store, Unusable};
use crate::time;

/// `TOKEN_MIN_REMAINING_SECS`'s default: a cached token is served while it has 15 minutes left.
pub const DEFAULT_MIN_REMAINING_SECS: u64 = 900;
/// `TOKEN_CACHE_MAX_ENTRIES`'s default.
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 10_000;

/// Minting settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The host in git URLs (`GITHUB_HOST`). Default [`github::DEFAULT_HOST`].
    pub github_host: String,
    /// A cached token is served only while it has at least this long to live
    /// (`TOKEN_MIN_REMAINING_SECS`). Default [`DEFAULT_MIN_REMAINING_SECS`].
    pub token_min_remaining_secs: u64,
    /// Most cached tokens (`TOKEN_CACHE_MAX_ENTRIES`). Default [`DEFAULT_CACHE_MAX_ENTRIES`].
    pub token_cache_max_entries: usize,
    /// Below this many remaining GitHub requests, misses wait for GitHub's reset
    /// (`GITHUB_RATELIMIT_RESERVE`). Default [`github::DEFAULT_RATELIMIT_RESERVE`].
    pub github_ratelimit_reserve: u64,
    /// Where requests may come from at all (`SERVER_ALLOWED_SOURCES`); `None`: anywhere.
    pub allowed_sources: Option<CidrSet>,
    /// The proxies whose forwarding headers are believed (`SERVER_TRUSTED_PROXIES`).
    pub trusted_proxies: CidrSet,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            github_host: github::DEFAULT_HOST.to_owned(),
            token_min_remaining_secs: DEFAULT_MIN_REMAINING_SECS,
            token_cache_max_entries: DEFAULT_CACHE_MAX_ENTRIES,
            github_ratelimit_reserve: github::DEFAULT_RATELIMIT_RESERVE,
            allowed_sources: None,
            trusted_proxies: CidrSet::default(),
        }
    }
}

/// How a vended token was obtained (the audit record's `cache`, the vend metric's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From the in-process cache.
    Hit,
    /// Minted at GitHub for this request.
    Miss,
    /// From a concurrent identical request of this process.
    Coalesced,
    /// From the shared cache: minted by another instance (or by this one before a restart).
    Shared,
}

impl Served {
    /// `hit`, `miss`, `coalesced` or `shared`.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::Miss => "miss",
            Served::Coalesced => "coalesced",
            Served::Shared => "shared",
        }
    }
}

/// A token as the cache holds it: what GitHub minted, and when its life ends.
#[derive(Debug, Clone)]
pub struct Vended {
    pub minted: Arc<Minted>,
    /// Unix seconds: the earlier of GitHub's expiry and minted + the key's life.
    pub end_of_life: u64,
}

impl Vended {
    /// `minted` at `minted_at` (Unix seconds), living at most `life` seconds.
    fn new(minted: Minted, minted_at: u64, life: u64) -> Vended {
        Vended {
            end_of_life: minted.expires_at.min(minted_at.saturating_add(life)),
            minted: Arc::new(minted),
        }
    }

    /// Whether it is revoked before GitHub's expiry.
    pub fn revoked_early(&self) -> bool {
        self.end_of_life < self.minted.expires_at
    }
}

/// The least remaining life a cached token is served with: `TOKEN_MIN_REMAINING_SECS`, and for
/// a life a profile's ttl or the caller's `expires_in` chose, at most half of it.
pub fn min_remaining(settings: &Settings, life: Life) -> u64 {
    let setting = settings.token_min_remaining_secs;
    match life.chosen {
        true => setting.min(life.secs / 2),
        false => setting,
    }
}

/// Whether a cached token ending at `end_of_life` may be served at `now` to a caller whose token
/// may live `life` seconds: it has not ended, has `min_remaining` left, and ends no later than
/// the caller asked.
fn servable(end_of_life: u64, now: u64, life: u64, min_remaining: u64) -> bool {
    end_of_life > now
        && end_of_life - now >= min_remaining
        && end_of_life <= now.saturating_add(life)
}

/// How long a token may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    pub secs: u64,
    /// Whether a profile's `ttl` or the caller's `expires_in` chose it (else GitHub's hour).
    pub chosen: bool,
}

/// The life of a token vended under a profile's `ttl` to a caller asking for at most
/// `expires_in` seconds.
pub fn life(ttl: Ttl, expires_in: Option<u64>) -> Life {
    Life {
        secs: expires_in.map_or(ttl.secs(), |asked| asked.min(ttl.secs())),
        chosen: ttl.given() || expires_in.is_some(),
    }
}

/// A vended token and what it covers.
#[derive(Debug, Clone)]
pub struct Issued {
    pub minted: Arc<Minted>,
    /// Unix seconds: when the token stops working (reported in every response).
    pub end_of_life: u64,
    /// Whether kitebridge revokes it at `end_of_life` (before GitHub's expiry).
    pub revoked_early: bool,
    pub cache: Served,
    /// `pipeline:NAME` or `org:NAME`.
    pub profile: String,
    /// The pipeline repository as `https://HOST/OWNER/NAME` (pipeline profiles), else empty.
    pub repository_url: String,
    /// Sorted `name:level`.
    pub permissions: Vec<String>,
    /// The cache key it was found or stored under (see [`forget`]).
    pub(super) key: TokenKey,
}

impl Issued {
    /// `owner/name` of each repository covered, as GitHub reported it; empty for all.
    pub fn repositories(&self) -> &[String] {
        &self.minted.repositories
    }

    /// `selected` or `all`, as GitHub reported it.
    pub fn repository_selection(&self) -> &str {
        &self.minted.repository_selection
    }
}

/// Everything that decides what a token covers, as one unambiguous byte string: the JSON array
/// `["kitebridge token cache key v2", generation digest, profile, repositories (lowercased,
/// sorted; empty for all), "org/slug" for pipeline profiles or null, permissions, life in
/// seconds (the profile's ttl, shortened by expires_in)]`. The in-process cache's key, and what
/// the shared cache hashes for an entry's name and binds the sealed entry to. Written in one
/// buffer (it was a dozen strings per request, cache hit or not).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct TokenKey(Vec<u8>);

impl TokenKey {
    /// The key's bytes.
    pub(super) fn canonical(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and a digest, no secret.
        write!(f, "TokenKey({})", String::from_utf8_lossy(&self.0))
    }
}

/// A value serialised as its `Display` text (no string built first).
struct Shown<T>(T);

impl<T: std::fmt::Display> Serialize for Shown<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A sequence serialised item by item from an iterator (no vector built first).
struct Each<I>(I);

impl<I> Serialize for Each<I>
where
    I: Iterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.clone())
    }
}

/// ASCII-lowercased text.
struct Lowercase<'a>(&'a str);

impl std::fmt::Display for Lowercase<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        self.0
            .chars()
            .try_for_each(|c| f.write_char(c.to_ascii_lowercase()))
    }
}

/// The order of the ASCII-lowercased texts.
fn lowercase_order(a: &str, b: &str) -> std::cmp::Ordering {
    let lower = |b: u8| b.to_ascii_lowercase();
    a.bytes().map(lower).cmp(b.bytes().map(lower))
}

/// `organization/pipeline` of the claims.
struct PipelineName<'a>(&'a Claims);

impl std::fmt::Display for PipelineName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.organization_slug)?;
        f.write_str("/")?;
        f.write_str(&self.0.pipeline_slug)
    }
}

/// The pipeline's repository if a fresh lookup is cached (no upstream call, no refusal).
pub fn cached_pipeline_repository(svc: &Service, claims: &Claims, now: u64) -> Option<RepoRef> {
    svc.buildkite.as_ref()?.cached_pipeline_repository(
        &claims.organization_slug,
        &claims.pipeline_slug,
        now,
    )
}

/// The pipeline's repository, from the Buildkite API (cached and coalesced there).
pub fn pipeline_repository(svc: &Service, claims: &Claims, now: u64) -> Result<RepoRef, Refusal> {
    let buildkite = svc.buildkite.as_ref().ok_or(Refusal::NoBuildkiteToken)?;
    Ok(buildkite.pipeline_repository(&claims.organization_slug, &claims.pipeline_slug, now)?)
}

/// Who asks for a mint: the request's id (for a scheduled revocation) and the check run before
/// any upstream work, on a cache miss only (the client is still there).
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub request_id: &'a str,
    pub before_upstream: &'a dyn Fn() -> Result<(), Refusal>,
}

/// What a token covers.
#[derive(Debug, Clone, Copy)]
pub enum Cover<'a> {
    /// A pipeline profile: the pipeline's own repository.
    Pipeline {
        claims: &'a Claims,
        repository: &'a RepoRef,
    },
    /// Every repository of the installation.
    All,
    /// These repositories (names without owner).
    Repositories(&'a [String]),
}

impl Cover<'_> {
    /// The repository names to mint for; `None` for all.
    fn repositories(&self) -> Option<Vec<String>> {
        match self {
            Cover::Pipeline { repository, .. } => Some(vec![repository.name.clone()]),
            Cover::All => None,
            Cover::Repositories(names) => Some(names.to_vec()),
        }
    }
}

/// The cache key: everything that decides what a token covers, and its life.
pub(super) fn token_key(
    digest: &str,
    authorized: &Authorized<'_>,
    cover: Cover<'_>,
    life: u64,
) -> TokenKey {
    let mut repositories: Vec<&str> = match cover {
        Cover::Pipeline { repository, .. } => vec![repository.name.as_str()],
        Cover::All => Vec::new(),
        Cover::Repositories(names) => names.iter().map(String::as_str).collect(),
    };
    repositories.sort_by(|a, b| lowercase_order(a, b));
    let pipeline = match cover {
        Cover::Pipeline { claims, .. } => Some(Shown(PipelineName(claims))),
        Cover::All | Cover::Repositories(_) => None,
    };
    let parts = (
        "kitebridge token cache key v2",
        digest,
        Shown(authorized.profile),
        Each(repositories.iter().map(|name| Shown(Lowercase(name)))),
        pipeline,
        Each(authorized.permissions.iter().map(Shown)),
        life,
    );
    let mut bytes = Vec::with_capacity(256);
    // Serialising strings and numbers into a vector cannot fail.
    let _ = json::to_writer(&mut bytes, &parts);
    TokenKey(bytes)
}

/// Serves from the cache or mints, for a caller that wants the token to live at most
/// `expires_in` seconds. A token minted here that ends before GitHub's expiry is scheduled for
/// revocation under the caller's request id.
pub fn mint(
    svc: &Service,
    digest: &str,
    authorized: &Authorized<'_>,
    cover: Cover<'_>,
    expires_in: Option<u64>,
    caller: Caller<'_>,
    now: u64,
) -> Result<Issued, Refusal> {
    let Caller {
        request_id,
        before_upstream,
    } = caller;
    let life = life(authorized.profile.ttl(), expires_in);
    let min_remaining = min_remaining(&svc.settings, life);
    let life = life.secs;
    let key = token_key(digest, authorized, cover, life);
    let permissions = authorized
        .permissions
        .iter()
        .map(ToString::to_string)
        .collect();
    let fresh = |v: &Vended| servable(v.end_of_life, now, life, min_remaining);
    let github_mint = || -> Result<Vended, Refusal> {
        hold_back(svc, now)?;
        let request = MintRequest {
            repositories: cover.repositories(),
            permissions: authorized
                .permissions
                .iter()
                .map(|p| (p.name().to_owned(), p.level().as_str().to_owned()))
                .collect::<BTreeMap<_, _>>(),
        };
        let minted = svc.github.mint(&request, now)?;
        let vended = Vended::new(minted, now, life);
        if vended.end_of_life.saturating_sub(now) < min_remaining {
            log::warn!(
                "GitHub minted a token with less than its minimum remaining life to live; it will not be cached for reuse"
            );
        }
        if vended.revoked_early() {
            svc.revoker.schedule(Revocation {
                token: vended.minted.token.clone(),
                hashed_token: vended.minted.hashed_token.clone(),
                request_id: request_id.to_owned(),
                due: vended.end_of_life,
                expires_at: vended.minted.expires_at,
            });
        }
        Ok(vended)
    };
    let from_shared = Cell::new(false);
    // A hit first, without loading: the check before upstream work is for a miss only, and it
    // must run before this request can lead a load (a leader's refusal is every waiter's).
    let hit = svc.tokens.get(&key, fresh);
    if hit.is_none() {
        before_upstream()?;
    }
    let (result, outcome) = match hit {
        Some(vended) => (Ok(vended), Outcome::Hit),
        None => svc.tokens.get_or_load(&key, fresh, || {
            let Some(shared) = &svc.shared else {
                return github_mint();
            };
            let open = |plaintext: &[u8]| {
                let (minted, minted_at) =
                    shared::entry::decode(plaintext).map_err(|_| Unusable::Malformed)?;
                let vended = Vended::new(minted, minted_at, life);
                if fresh(&vended) {
                    Ok(vended)
                } else {
                    Err(Unusable::Stale)
                }
            };
            let mint_and_share = || {
                let vended = github_mint()?;
                // Shared for as long as it may be served: until `min_remaining` before its end of life.
                let servable = vended
                    .end_of_life
                    .saturating_sub(now)
                    .saturating_sub(min_remaining);
                let store = (servable > 0).then(|| Store {
                    plaintext: shared::entry::encode(&vended.minted, now),
                    ttl: Duration::from_secs(servable),
                });
                Ok::<_, Refusal>((vended, store))
            };
            let (vended, origin) = shared.get_or_mint(key.canonical(), open, mint_and_share)?;
            from_shared.set(origin == Origin::Shared);
            Ok(vended)
        }),
    };
    let cache = match outcome {
        Outcome::Hit => Served::Hit,
        Outcome::Coalesced => Served::Coalesced,
        Outcome::Miss if from_shared.get() => Served::Shared,
        Outcome::Miss => Served::Miss,
    };
    let vended = result?;
    Ok(Issued {
        minted: Arc::clone(&vended.minted),
        end_of_life: vended.end_of_life,
        revoked_early: vended.revoked_early(),
        cache,
        profile: authorized.profile.to_string(),
        repository_url: match cover {
            Cover::Pipeline { repository, .. } => repository.https_url(),
            Cover::All | Cover::Repositories(_) => String::new(),
        },
        permissions,
        key,
    })
}

/// Before a GitHub mint (a miss everywhere): GitHub's remaining requests above
/// `GITHUB_RATELIMIT_RESERVE` (until its reset), then one mint of `RATE_LIMIT_MINTS` taken,
/// across the fleet while the shared cache answers, else in this process (the local bucket is
/// charged either way, as for the per-pipeline limit). Cached tokens never come here.
fn hold_back(svc: &Service, now: u64) -> Result<(), Refusal> {
    let held = |reason: &str| {
        svc.metrics
            .count(metrics::MINTS_HELD_BACK, &[("reason", reason)]);
    };
    let reserve = svc.settings.github_ratelimit_reserve;
    if let Some(state) = svc.github.rate_limit() {
        if state.remaining < reserve && state.reset > now {
            held("github_reserve");
            return Err(Refusal::GitHubReserve {
                remaining: state.remaining,
                reserve,
                retry_after_secs: state.reset - now,
            });
        }
    }
    let Some(limiter) = &svc.mints else {
        return Ok(());
    };
    let local = limiter.check(&(), std::time::Instant::now());
    let fleet = svc.shared.as_ref().and_then(|shared| {
        let now_ms = time::now_unix_millis();
        shared.rate_of(b"mints", b"", limiter.count(), limiter.window(), now_ms)
    });
    fleet.unwrap_or(local).map_err(|retry_after_secs| {
        held("budget");
        Refusal::MintBudgetExhausted { retry_after_secs }
    })
}

/// Drops `issued` from the token cache, so no later request is handed it (it is being revoked).
pub(super) fn forget(svc: &Service, issued: &Issued) {
    svc.tokens.invalidate(&issued.key);
    if let Some(shared) = &svc.shared {
        shared.forget(issued.key.canonical());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::{Family, Generation, parse_profile_ref};
    use crate::token::ask::Target;
    use crate::token::authorize::{authorize, tests as fixture};

    fn repo(url: &str) -> RepoRef {
        crate::buildkite::parse_repository_url(url, "github.com").unwrap()
    }

    /// The key of an organization profile `name` asked with `target`, from `generation`.
    fn org_key(generation: &Generation, name: &str, target: &Target) -> TokenKey {
        let claims = fixture::claims();
        let reference = parse_profile_ref(Family::Organization, name).unwrap();
        let a = authorize(generation, &reference, &claims, target, None, "acme").unwrap();
        let cover = match &a.reach {
            crate::token::authorize::Reach::Repositories(names) => Cover::Repositories(names),
            _ => Cover::All,
        };
        token_key("digest-1", &a, cover, 3600)
    }

    #[test]
    fn a_cached_token_is_served_only_within_its_life_and_what_was_asked() {
        let now = 1_000;
        assert!(servable(now + 60, now, 120, 30));
        assert!(servable(now + 30, now, 60, 30), "exactly the minimum left");
        assert!(
            !servable(now + 29, now, 60, 30),
            "less than the minimum left"
        );
        assert!(
            !servable(now + 121, now, 120, 30),
            "outlives what was asked"
        );
        assert!(!servable(now, now, 60, 0), "ended, even with no minimum");
        assert!(!servable(now - 5, now, 60, 0));
        assert!(servable(now + 1, now, 60, 0));
    }

    #[test]
    fn life_and_minimum_remaining_life() {
        let settings = Settings::default();
        let ttl = |t: &str| Ttl::parse(t).unwrap();
        let rows = [
            (Ttl::default(), None, 3600, DEFAULT_MIN_REMAINING_SECS),
            (Ttl::default(), Some(120), 120, 60),
            (ttl("10m"), None, 600, 300),
            (ttl("10m"), Some(3600), 600, 300),
            (ttl("10m"), Some(90), 90, 45),
            (ttl("1h"), None, 3600, DEFAULT_MIN_REMAINING_SECS),
            (ttl("60s"), None, 60, 30),
        ];
        for (ttl, asked, secs, min) in rows {
            let life = life(ttl, asked);
            assert_eq!(
                (life.secs, min_remaining(&settings, life)),
                (secs, min),
                "{ttl} {asked:?}"
            );
        }
        let long = Settings {
            token_min_remaining_secs: 3300,
            ..Settings::default()
        };
        assert_eq!(
            min_remaining(&long, life(Ttl::default(), None)),
            3300,
            "as before ttl"
        );
        assert_eq!(
            min_remaining(&long, life(ttl("1h"), None)),
            1800,
            "half a chosen life"
        );
    }

    /// The key's parts, read back from its JSON.
    fn parts(key: &TokenKey) -> Vec<serde_json::Value> {
        serde_json::from_slice(key.canonical()).unwrap()
    }

    /// The key as the owned-strings version wrote it (the shared cache's entries are named by
    /// these bytes: the new writer must not rename them).
    fn canonical_oracle(
        digest: &str,
        a: &Authorized<'_>,
        repositories: &[&str],
        pipeline: Option<&str>,
        life: u64,
    ) -> Vec<u8> {
        let mut repositories: Vec<String> = repositories
            .iter()
            .map(|r| r.to_ascii_lowercase())
            .collect();
        repositories.sort();
        let permissions: Vec<String> = a.permissions.iter().map(ToString::to_string).collect();
        serde_json::to_vec(&(
            "kitebridge token cache key v2",
            digest,
            a.profile.to_string(),
            repositories,
            pipeline,
            permissions,
            life,
        ))
        .unwrap()
    }

    #[test]
    fn the_cache_key_is_written_as_before() {
        let generation = fixture::generation();
        let claims = fixture::claims();
        let org = |name: &str, target: &Target| {
            let reference = parse_profile_ref(Family::Organization, name).unwrap();
            authorize(&generation, &reference, &claims, target, None, "acme").unwrap()
        };
        let names = ["Plugin-B", "plugin-a", "Zed", "alpha"];
        let owned: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let a = org("plugins", &Target::Own);
        assert_eq!(
            token_key("d\"1", &a, Cover::Repositories(&owned), 600).canonical(),
            canonical_oracle("d\"1", &a, &names, None, 600)
        );
        assert_eq!(
            token_key("d", &a, Cover::All, 3600).canonical(),
            canonical_oracle("d", &a, &[], None, 3600)
        );
        let reference = parse_profile_ref(Family::Pipeline, "default").unwrap();
        let p = authorize(&generation, &reference, &claims, &Target::Own, None, "acme").unwrap();
        let widgets = repo("git@github.com:acme/Widgets.git");
        let cover = Cover::Pipeline {
            claims: &claims,
            repository: &widgets,
        };
        assert_eq!(
            token_key("d", &p, cover, 60).canonical(),
            canonical_oracle("d", &p, &["Widgets"], Some("acme/widgets"), 60)
        );
    }

    #[test]
    fn the_cache_key_carries_everything_that_decides_the_token() {
        let generation = fixture::generation();
        let scoped = |name: &str| Target::Scoped(name.into());
        let whole = org_key(&generation, "plugins", &Target::Own);
        let whole_parts = parts(&whole);
        assert_eq!(
            whole_parts[3],
            serde_json::json!(["plugin-a", "plugin-b"]),
            "lowercased, sorted"
        );
        assert_eq!(whole_parts[4], serde_json::Value::Null);
        assert_eq!(
            whole_parts[5],
            serde_json::json!(["contents:read", "metadata:read"])
        );
        assert_eq!(
            whole,
            org_key(&generation, "plugins", &Target::Own),
            "stable"
        );
        let distinct = [
            whole.clone(),
            org_key(&generation, "plugins", &scoped("plugin-a")),
            org_key(&generation, "one", &scoped("plugin-a")),
            org_key(&generation, "everything", &Target::Own),
            org_key(&generation, "star", &Target::Own),
        ];
        for (i, a) in distinct.iter().enumerate() {
            for b in distinct.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        // Case of the asked repository does not split the cache.
        assert_eq!(
            org_key(&generation, "one", &scoped("Gadgets")),
            org_key(&generation, "one", &scoped("gadgets"))
        );

        // Pipeline profiles: one key per pipeline, so one pipeline never gets another's token.
        let claims = fixture::claims();
        let other = fixture::claims_with(|c| c["pipeline_slug"] = "gadgets".into());
        let reference = parse_profile_ref(Family::Pipeline, "default").unwrap();
        let a = authorize(&generation, &reference, &claims, &Target::Own, None, "acme").unwrap();
        let widgets = repo("git@github.com:acme/widgets.git");
        let key = |claims: &Claims, digest: &str| {
            let cover = Cover::Pipeline {
                claims,
                repository: &widgets,
            };
            token_key(digest, &a, cover, 3600)
        };
        let mine = key(&claims, "digest-1");
        assert_eq!(parts(&mine)[4], "acme/widgets");
        assert_eq!(parts(&mine)[3], serde_json::json!(["widgets"]));
        assert_ne!(mine, key(&other, "digest-1"), "another pipeline");
        assert_ne!(mine, key(&claims, "digest-2"), "another generation");
        let cover = Cover::Pipeline {
            claims: &claims,
            repository: &widgets,
        };
        assert_ne!(mine, token_key("digest-1", &a, cover, 600), "another life");
        assert_ne!(
            mine.canonical(),
            token_key("digest-1", &a, cover, 600).canonical()
        );
    }
}
