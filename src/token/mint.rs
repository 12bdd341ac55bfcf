//! Mint: from what was authorized to a GitHub installation token, through the token cache.
//!
//! The cache key carries everything that decides what a token covers (profile generation digest,
//! profile, repositories, the pipeline for pipeline profiles, the permissions); concurrent
//! identical misses share one GitHub call. The pipeline's own repository is looked up through
//! Buildkite first ([`pipeline_repository`]).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Service;
use super::authorize::Authorized;
use super::refusal::Refusal;
use crate::buildkite::RepoRef;
use crate::cache::Outcome;
use crate::github::{MintRequest, Minted};
use crate::oidc::Claims;

/// Minting settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The host in git URLs (`GITHUB_HOST`). Default `github.com`.
    pub github_host: String,
    /// A cached token is served only while it has at least this long to live
    /// (`TOKEN_MIN_REMAINING_SECS`). Default 900.
    pub token_min_remaining_secs: u64,
    /// Most cached tokens (`TOKEN_CACHE_MAX_ENTRIES`). Default 10000.
    pub token_cache_max_entries: usize,
}

/// A vended token and what it covers.
#[derive(Debug, Clone)]
pub struct Issued {
    pub minted: Arc<Minted>,
    pub cache: Outcome,
    /// `pipeline:NAME` or `org:NAME`.
    pub profile: String,
    /// The pipeline repository as `https://HOST/OWNER/NAME` (pipeline profiles), else empty.
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

/// Everything that decides what a token covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct TokenKey {
    digest: String,
    profile: String,
    /// Lowercased repository names, sorted; empty for all repositories.
    repositories: Vec<String>,
    /// `org/slug` for pipeline profiles.
    pipeline: Option<String>,
    permissions: Vec<String>,
}

/// The pipeline's repository, from the Buildkite API (cached and coalesced there).
pub fn pipeline_repository(svc: &Service, claims: &Claims, now: u64) -> Result<RepoRef, Refusal> {
    let buildkite = svc.buildkite.as_ref().ok_or(Refusal::NoBuildkiteToken)?;
    Ok(buildkite.pipeline_repository(&claims.organization_slug, &claims.pipeline_slug, now)?)
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

/// Serves from the cache or mints.
pub fn mint(
    svc: &Service,
    digest: &str,
    authorized: &Authorized<'_>,
    cover: Cover<'_>,
    now: u64,
) -> Result<Issued, Refusal> {
    let permissions: Vec<String> = authorized
        .permissions
        .iter()
        .map(ToString::to_string)
        .collect();
    let repositories = cover.repositories();
    let mut key_repos: Vec<String> = repositories
        .iter()
        .flatten()
        .map(|r| r.to_ascii_lowercase())
        .collect();
    key_repos.sort();
    let key = TokenKey {
        digest: digest.to_owned(),
        profile: authorized.profile.to_string(),
        repositories: key_repos,
        pipeline: match cover {
            Cover::Pipeline { claims, .. } => Some(format!(
                "{}/{}",
                claims.organization_slug, claims.pipeline_slug
            )),
            Cover::All | Cover::Repositories(_) => None,
        },
        permissions: permissions.clone(),
    };
    let min_remaining = svc.settings.token_min_remaining_secs;
    let fresh = |m: &Minted| m.expires_at.saturating_sub(now) >= min_remaining;
    let (result, cache) = svc.tokens.get_or_load(&key, fresh, || {
        let request = MintRequest {
            repositories,
            permissions: authorized
                .permissions
                .iter()
                .map(|p| (p.name().to_owned(), p.level().as_str().to_owned()))
                .collect::<BTreeMap<_, _>>(),
        };
        let minted = svc.github.mint(&request, now)?;
        if minted.expires_at.saturating_sub(now) < min_remaining {
            log::warn!(
                "GitHub minted a token with less than TOKEN_MIN_REMAINING_SECS to live; it will not be cached for reuse"
            );
        }
        Ok(minted)
    });
    Ok(Issued {
        minted: result?,
        cache,
        profile: authorized.profile.to_string(),
        repository_url: match cover {
            Cover::Pipeline { repository, .. } => repository.https_url(),
            Cover::All | Cover::Repositories(_) => String::new(),
        },
        permissions,
    })
}
