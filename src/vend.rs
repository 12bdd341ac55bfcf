//! Authorize → cache → mint: from verified claims and a profile to a GitHub installation token.
//!
//! The match rules are evaluated on every request **before** the token cache is consulted, and the
//! cache key carries everything that decides what a token covers (profile generation digest,
//! family, profile, repositories, the pipeline for pipeline profiles, the permissions), so a cache
//! hit never hands a token to a caller whose own claims were not checked (GHSA-4c7c-j34f-h9q6).
//! Every step records what it learned on the request's audit record.
#![forbid(unsafe_code)]

use crate::audit::{self, Record};
use crate::buildkite;
use crate::cache::{CoalescingCache, Outcome};
use crate::github::{self, MintRequest, Minted};
use crate::oidc::Claims;
use crate::profiles::{
    ClaimSource, Generation, Lookup, Permission, Profile, ProfileRef, RepositoryScope,
};
use crate::upstream::Failure;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

impl ClaimSource for Claims {
    fn claim(&self, name: &str) -> Option<String> {
        Claims::claim(self, name)
    }
}

/// Vending settings. Defaults are those of `config.md`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The host in git URLs (`GITHUB_HOST`). Default `github.com`.
    pub github_host: String,
    /// A cached token is served only while it has at least this long to live
    /// (`TOKEN_MIN_REMAINING_SECS`). Default 900.
    pub token_min_remaining_secs: u64,
    /// Most cached tokens (`TOKEN_CACHE_MAX_ENTRIES`). Default 10000.
    pub token_cache_max_entries: usize,
}

/// The message of the denial for a `scope` beyond the profile (the token exchange maps it to
/// `invalid_scope`).
pub const INVALID_SCOPE: &str = "invalid scope";

/// A refusal: the status, the fixed client message, the precise reason for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u16,
    /// Fixed text for the client; never request input.
    pub message: &'static str,
    /// The precise reason (audit record only).
    pub reason: String,
    /// `Retry-After` seconds, when known.
    pub retry_after_secs: Option<u64>,
}

impl Denial {
    /// A denial with a status, a fixed message and the audit reason.
    pub fn new(status: u16, message: &'static str, reason: impl Into<String>) -> Self {
        Denial {
            status,
            message,
            reason: reason.into(),
            retry_after_secs: None,
        }
    }

    fn upstream(status: u16, reason: String, retry_after_secs: Option<u64>) -> Self {
        let message = match status {
            503 => "upstream unavailable",
            502 => "upstream error",
            _ => "internal error",
        };
        Denial {
            status,
            message,
            reason,
            retry_after_secs,
        }
    }
}

impl From<Failure> for Denial {
    fn from(e: Failure) -> Self {
        let status = match e {
            Failure::RateLimited { .. } | Failure::Unavailable { .. } => 503,
            Failure::Unusable { .. } => 502,
            Failure::Refused { .. } => 500,
        };
        Denial::upstream(status, e.to_string(), e.retry_after_secs())
    }
}

/// A vended token and what it covers.
#[derive(Debug, Clone)]
pub struct Issued {
    pub minted: Arc<Minted>,
    pub cache: Outcome,
    /// `pipeline:NAME` or `org:NAME`.
    pub profile: String,
    /// The pipeline repository as `https://HOST/OWNER/NAME` (pipeline routes), else empty.
    pub repository_url: String,
    /// Sorted `name:level`.
    pub permissions: Vec<String>,
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

/// Who asks for which profile, from which generation.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The one generation this request uses throughout.
    pub generation: &'a Generation,
    pub reference: &'a ProfileRef,
    /// The caller's verified claims.
    pub claims: &'a Claims,
    /// A narrower permission set than the profile's (the token exchange's `scope`): each must be
    /// in the profile at the same or a higher level, else 400 `invalid scope`. `metadata:read` is
    /// always added.
    pub permissions: Option<&'a [Permission]>,
}

/// What the caller asks an organization profile for.
#[derive(Debug, Clone, Copy)]
pub enum OrgTarget<'a> {
    /// `/organization/token/{p}` with an optional `repository-scope` (a bare, validated name).
    Token { scope: Option<&'a str> },
    /// `/organization/git-credentials/{p}`: the repository git asked about.
    Git { owner: &'a str, name: &'a str },
}

/// Everything that decides what a token covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    digest: String,
    profile: String,
    /// Lowercased repository names, sorted; empty for all repositories.
    repositories: Vec<String>,
    /// `org/slug` for pipeline profiles.
    pipeline: Option<String>,
    permissions: Vec<String>,
}

/// See the module documentation.
pub struct Vendor {
    settings: Settings,
    github: Arc<github::Client>,
    buildkite: Option<buildkite::Client>,
    account: OnceLock<String>,
    tokens: CoalescingCache<TokenKey, Minted, Denial>,
}

impl Vendor {
    /// `buildkite` is `None` when no Buildkite API token is configured: pipeline profiles then
    /// answer 500.
    pub fn new(
        settings: Settings,
        github: Arc<github::Client>,
        buildkite: Option<buildkite::Client>,
    ) -> Self {
        let tokens = CoalescingCache::new(settings.token_cache_max_entries);
        Vendor {
            settings,
            github,
            buildkite,
            account: OnceLock::new(),
            tokens,
        }
    }

    /// The installation's account (the owner of every repository it can mint for), once known.
    pub fn account(&self) -> Option<&str> {
        self.account.get().map(String::as_str)
    }

    /// Asks GitHub for the installation's account (once; readiness waits for it).
    pub fn learn_account(&self, now: u64) -> Result<&str, Failure> {
        if self.account.get().is_none() {
            let login = self.github.installation_account(now)?;
            let _ = self.account.set(login);
        }
        Ok(self.account().unwrap_or_default())
    }

    /// The GitHub host of git URLs.
    pub fn github_host(&self) -> &str {
        &self.settings.github_host
    }

    /// Looks the profile up and evaluates its rules against the caller's claims.
    fn authorize<'g>(&self, ask: &Ask<'g>, audit: &mut Record) -> Result<&'g Profile, Denial> {
        let (generation, reference, claims) = (ask.generation, ask.reference, ask.claims);
        audit.profile = Some(reference.to_string());
        audit.profile_digest = Some(generation.digest().to_owned());
        let profile = match generation.lookup(reference) {
            Lookup::Found(profile) => profile,
            Lookup::Unavailable(reason) => {
                return Err(Denial::new(
                    404,
                    "profile unavailable",
                    format!("profile {}: unavailable: {reason}", reference.name()),
                ));
            }
            Lookup::NotFound => {
                return Err(Denial::new(
                    404,
                    "profile not found",
                    format!("profile {}: not found", reference.name()),
                ));
            }
        };
        let verdict = profile.evaluate(claims);
        if let Some(reason) = verdict.denial_reason() {
            return Err(Denial::new(
                403,
                "forbidden",
                format!("profile {}: {reason}", reference.name()),
            ));
        }
        // A matching value is at most 256 bytes (longer ones never match), as the audit wants.
        audit.matches = verdict.matches;
        Ok(profile)
    }

    /// A pipeline profile: a token for the pipeline's own repository. With `requested` (the git
    /// route's `owner/name`), a different repository is the "not mine" answer: `Ok(None)`.
    pub fn pipeline(
        &self,
        ask: Ask<'_>,
        requested: Option<(&str, &str)>,
        audit: &mut Record,
        now: u64,
    ) -> Result<Option<Issued>, Denial> {
        let profile = self.authorize(&ask, audit)?;
        let claims = ask.claims;
        let Some(buildkite) = &self.buildkite else {
            return Err(Denial::new(
                500,
                "internal error",
                "pipeline profiles need BUILDKITE_API_TOKEN",
            ));
        };
        let repo =
            buildkite.pipeline_repository(&claims.organization_slug, &claims.pipeline_slug, now)?;
        let full_name = repo.full_name();
        if let Some((owner, name)) = requested {
            audit.requested_repository = Some(audit::truncate(&format!("{owner}/{name}")));
            if !(owner.eq_ignore_ascii_case(&repo.owner) && name.eq_ignore_ascii_case(&repo.name)) {
                audit.error = Some(format!(
                    "requested repository is not the pipeline's ({full_name})"
                ));
                return Ok(None);
            }
        } else {
            audit.requested_repository = Some(full_name.clone());
        }
        let account = self.account().unwrap_or_default();
        if !repo.owner.eq_ignore_ascii_case(account) {
            return Err(Denial::new(
                500,
                "internal error",
                format!(
                    "pipeline repository {full_name} is not owned by the installation's account {account:?}"
                ),
            ));
        }
        let pipeline = format!("{}/{}", claims.organization_slug, claims.pipeline_slug);
        let issued = self.mint(
            &ask,
            profile,
            Some(vec![repo.name.clone()]),
            Some(pipeline),
            now,
        )?;
        Ok(Some(Issued {
            repository_url: repo.https_url(),
            ..issued
        }))
    }

    /// An organization profile: the profile's repositories, narrowed by the caller's target.
    /// `Ok(None)` is the "not mine" answer.
    pub fn organization(
        &self,
        ask: Ask<'_>,
        target: OrgTarget<'_>,
        audit: &mut Record,
        now: u64,
    ) -> Result<Option<Issued>, Denial> {
        let profile = self.authorize(&ask, audit)?;
        let scope = profile.repository_scope().ok_or_else(|| {
            Denial::new(
                500,
                "internal error",
                "organization profile without repositories",
            )
        })?;
        let requested = match target {
            OrgTarget::Token { scope } => scope,
            OrgTarget::Git { owner, name } => {
                audit.requested_repository = Some(audit::truncate(&format!("{owner}/{name}")));
                let account = self.account().unwrap_or_default();
                if !owner.eq_ignore_ascii_case(account) {
                    audit.error = Some(format!(
                        "requested owner is not the installation's account {account:?}"
                    ));
                    return Ok(None);
                }
                Some(name)
            }
        };
        if let (OrgTarget::Token { .. }, Some(name)) = (target, requested) {
            audit.requested_repository = Some(audit::truncate(name));
        }
        let repositories = match (scope, requested) {
            (RepositoryScope::Named(names), None) => Some(names.clone()),
            (RepositoryScope::Named(names), Some(want)) => {
                match names.iter().find(|n| n.eq_ignore_ascii_case(want)) {
                    Some(name) => Some(vec![name.clone()]),
                    None => {
                        audit.error =
                            Some("requested repository is not in the profile's list".into());
                        return Ok(None);
                    }
                }
            }
            (RepositoryScope::All, None) => None,
            (RepositoryScope::All | RepositoryScope::CallerScoped, Some(want)) => {
                Some(vec![want.to_owned()])
            }
            (RepositoryScope::CallerScoped, None) => {
                return Err(Denial::new(
                    400,
                    "repository-scope required",
                    "caller-scoped profile without repository-scope",
                ));
            }
        };
        self.mint(&ask, profile, repositories, None, now).map(Some)
    }

    /// Serves from the cache or mints (concurrent identical misses share one GitHub call).
    fn mint(
        &self,
        ask: &Ask<'_>,
        profile: &Profile,
        repositories: Option<Vec<String>>,
        pipeline: Option<String>,
        now: u64,
    ) -> Result<Issued, Denial> {
        let granted = permissions_for(profile, ask.permissions)?;
        let permissions: Vec<String> = granted.iter().map(ToString::to_string).collect();
        let mut key_repos: Vec<String> = repositories
            .iter()
            .flatten()
            .map(|r| r.to_ascii_lowercase())
            .collect();
        key_repos.sort();
        let key = TokenKey {
            digest: ask.generation.digest().to_owned(),
            profile: profile.to_string(),
            repositories: key_repos,
            pipeline,
            permissions: permissions.clone(),
        };
        let min_remaining = self.settings.token_min_remaining_secs;
        let fresh = |m: &Minted| m.expires_at.saturating_sub(now) >= min_remaining;
        let (result, cache) = self.tokens.get_or_load(&key, fresh, || {
            let permissions = granted.iter().map(|p| (p.name().to_owned(), p.level().as_str().to_owned()));
            let request = MintRequest { repositories, permissions: permissions.collect::<BTreeMap<_, _>>() };
            let minted = self.github.mint(&request, now)?;
            if minted.expires_at.saturating_sub(now) < min_remaining {
                log::warn!("GitHub minted a token with less than TOKEN_MIN_REMAINING_SECS to live; it will not be cached for reuse");
            }
            Ok(minted)
        });
        Ok(Issued {
            minted: result?,
            cache,
            profile: profile.to_string(),
            repository_url: String::new(),
            permissions,
        })
    }
}

/// The permissions to mint with: the profile's, or the narrower `requested` set (each in the
/// profile at the same or a higher level) plus `metadata:read`; sorted, without duplicates.
fn permissions_for(
    profile: &Profile,
    requested: Option<&[Permission]>,
) -> Result<Vec<Permission>, Denial> {
    let Some(requested) = requested else {
        return Ok(profile.permissions().to_vec());
    };
    let allowed = |want: &Permission| {
        profile
            .permissions()
            .iter()
            .any(|have| have.name() == want.name() && have.level() >= want.level())
    };
    if let Some(extra) = requested.iter().find(|p| !allowed(p)) {
        return Err(Denial::new(
            400,
            INVALID_SCOPE,
            format!("scope {extra} is beyond profile {profile}"),
        ));
    }
    let mut granted: Vec<Permission> = requested.to_vec();
    granted.push(Permission::METADATA_READ);
    granted.sort();
    granted.dedup();
    Ok(granted)
}

/// `owner/name` from a git credential `path` (`acme/widgets.git`, leading or trailing `/`
/// tolerated, one `.git` of any case removed), both valid GitHub names. `None` for anything else.
pub fn repository_from_path(path: &str) -> Option<(&str, &str)> {
    let (owner, name) = path.trim_matches('/').split_once('/')?;
    let name = crate::github::strip_git_suffix(name);
    (crate::github::is_valid_owner(owner) && crate::github::is_valid_repo_name(name))
        .then_some((owner, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_from_path_table() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            ("acme/widgets.git", Some(("acme", "widgets"))),
            ("acme/Widgets", Some(("acme", "Widgets"))),
            ("/acme/widgets/", Some(("acme", "widgets"))),
            ("acme", None),
            ("acme/widgets/info", None),
            ("acme/.git", None),
            ("acme/wid gets", None),
            ("acme/Widgets.GIT", Some(("acme", "Widgets"))),
            ("acme/wid$gets.git", None),
            ("acme/..", None),
            ("acme/%2e%2e", None),
            ("acme/x.git.git", None),
            ("", None),
        ];
        for (path, want) in cases {
            assert_eq!(repository_from_path(path), *want, "{path:?}");
        }
    }
}
