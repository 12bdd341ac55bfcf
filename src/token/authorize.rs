//! Authorize: pure functions from plain data to a decision. No I/O, no clock, no shared state.
//!
//! [`authorize`] takes the generation, the profile reference, the verified claims, the target,
//! the asked scope and the installation's account, and answers [`Authorized`] (what a token may
//! cover) or a [`Refusal`]. Checks run in this order: the profile exists and is valid (404), its
//! match rules admit the claims (403), the asked scope is within the profile (400), then the
//! repositories: an organization profile's list narrowed by the target, or the "not mine" answer.
//! A pipeline profile's repository is the pipeline's own, known only after the Buildkite lookup:
//! [`pipeline_repository`] checks it against the target and the account then.
//!
//! The match rules are evaluated on every request **before** the token cache is consulted, so a
//! cache hit never hands a token to a caller whose own claims were not checked
//! (GHSA-4c7c-j34f-h9q6).
#![forbid(unsafe_code)]

use std::fmt;

use super::ask::Target;
use super::refusal::Refusal;
use crate::buildkite::RepoRef;
use crate::oidc::Claims;
use crate::profiles::{
    ClaimSource, Family, Generation, Lookup, Permission, Profile, ProfileRef, RepositoryScope,
    RuleMatch,
};

impl ClaimSource for Claims {
    fn claim(&self, name: &str) -> Option<String> {
        Claims::claim(self, name)
    }
}

/// Why a request is not this profile's to answer: the empty 200 of the git routes (and of the
/// organization token route's `repository-scope`), `invalid_target` on the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotMine {
    /// git asked about another host or protocol, or a path that is no `owner/name`.
    OtherHost,
    /// The requested repository is not the pipeline's.
    NotThePipelinesRepository { pipeline_repository: String },
    /// The requested owner is not the installation's account.
    OtherOwner { account: String },
    /// The requested repository is not in the profile's list.
    NotInTheList,
}

impl fmt::Display for NotMine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotMine::OtherHost => f.write_str("not a repository on the configured GitHub host"),
            NotMine::NotThePipelinesRepository {
                pipeline_repository,
            } => write!(
                f,
                "requested repository is not the pipeline's ({pipeline_repository})"
            ),
            NotMine::OtherOwner { account } => write!(
                f,
                "requested owner is not the installation's account {account:?}"
            ),
            NotMine::NotInTheList => {
                f.write_str("requested repository is not in the profile's list")
            }
        }
    }
}

/// Which repositories a token may cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// The pipeline's own repository, looked up through Buildkite, then checked by
    /// [`pipeline_repository`].
    Pipeline,
    /// Every repository of the installation.
    All,
    /// These repositories (names without owner).
    Repositories(Vec<String>),
    /// The target is not this profile's: the "not mine" answer.
    NotMine(NotMine),
}

/// What the caller is authorized to: the profile, the rules that held, the permissions
/// (sorted, `metadata:read` included) and the repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized<'g> {
    pub profile: &'g Profile,
    /// The rules that held (the audit record's `matches`).
    pub matches: Vec<RuleMatch>,
    pub permissions: Vec<Permission>,
    pub reach: Reach,
}

/// The whole decision; see the module documentation.
pub fn authorize<'g>(
    generation: &'g Generation,
    reference: &ProfileRef,
    claims: &Claims,
    target: &Target,
    scope: Option<&[Permission]>,
    account: &str,
) -> Result<Authorized<'g>, Refusal> {
    let profile = lookup(generation, reference)?;
    let verdict = profile.evaluate(claims);
    if let Some(reason) = verdict.denial_reason() {
        return Err(Refusal::RulesNotMet {
            profile: reference.clone(),
            reason,
        });
    }
    let permissions = permissions(profile, reference, scope)?;
    let reach = match profile.family() {
        Family::Pipeline => Reach::Pipeline,
        Family::Organization => organization_reach(profile, target, account)?,
    };
    Ok(Authorized {
        profile,
        matches: verdict.matches,
        permissions,
        reach,
    })
}

/// The profile a reference names, if it exists and is valid.
pub fn lookup<'g>(
    generation: &'g Generation,
    reference: &ProfileRef,
) -> Result<&'g Profile, Refusal> {
    match generation.lookup(reference) {
        Lookup::Found(profile) => Ok(profile),
        Lookup::Unavailable(reason) => Err(Refusal::ProfileUnavailable {
            profile: reference.clone(),
            reason: reason.to_owned(),
        }),
        Lookup::NotFound => Err(Refusal::ProfileNotFound {
            profile: reference.clone(),
        }),
    }
}

/// The permissions to mint with: the profile's, or the narrower `scope` (each in the profile at
/// the same or a higher level) plus `metadata:read`; sorted, without duplicates.
pub fn permissions(
    profile: &Profile,
    reference: &ProfileRef,
    scope: Option<&[Permission]>,
) -> Result<Vec<Permission>, Refusal> {
    let Some(scope) = scope else {
        return Ok(profile.permissions().to_vec());
    };
    let allowed = |want: &Permission| {
        profile
            .permissions()
            .iter()
            .any(|have| have.name() == want.name() && have.level() >= want.level())
    };
    if let Some(extra) = scope.iter().find(|p| !allowed(p)) {
        return Err(Refusal::ScopeBeyondProfile {
            profile: reference.clone(),
            permission: *extra,
        });
    }
    let mut granted: Vec<Permission> = scope.to_vec();
    granted.push(Permission::METADATA_READ);
    granted.sort();
    granted.dedup();
    Ok(granted)
}

/// An organization profile's repositories narrowed by the target.
pub fn organization_reach(
    profile: &Profile,
    target: &Target,
    account: &str,
) -> Result<Reach, Refusal> {
    let scope = profile
        .repository_scope()
        .ok_or(Refusal::ProfileWithoutRepositories)?;
    let wanted = match target {
        Target::Own => None,
        Target::Scoped(name) => Some(name.as_str()),
        Target::Named { owner, name } => {
            if !owner.eq_ignore_ascii_case(account) {
                return Ok(Reach::NotMine(NotMine::OtherOwner {
                    account: account.to_owned(),
                }));
            }
            Some(name.as_str())
        }
        Target::Elsewhere { .. } => return Ok(Reach::NotMine(NotMine::OtherHost)),
    };
    Ok(match (scope, wanted) {
        (RepositoryScope::Named(names), None) => Reach::Repositories(names.clone()),
        (RepositoryScope::Named(names), Some(want)) => {
            match names.iter().find(|n| n.eq_ignore_ascii_case(want)) {
                Some(name) => Reach::Repositories(vec![name.clone()]),
                None => Reach::NotMine(NotMine::NotInTheList),
            }
        }
        (RepositoryScope::All, None) => Reach::All,
        (RepositoryScope::All | RepositoryScope::CallerScoped, Some(want)) => {
            Reach::Repositories(vec![want.to_owned()])
        }
        (RepositoryScope::CallerScoped, None) => return Err(Refusal::RepositoryScopeRequired),
    })
}

/// The pipeline's repository against the target (a different one is "not mine") and the
/// installation's account (a repository of another account cannot be minted for: 500).
pub fn pipeline_repository(
    target: &Target,
    repository: &RepoRef,
    account: &str,
) -> Result<Option<NotMine>, Refusal> {
    match target {
        Target::Named { owner, name }
            if !(owner.eq_ignore_ascii_case(&repository.owner)
                && name.eq_ignore_ascii_case(&repository.name)) =>
        {
            return Ok(Some(NotMine::NotThePipelinesRepository {
                pipeline_repository: repository.full_name(),
            }));
        }
        Target::Elsewhere { .. } => return Ok(Some(NotMine::OtherHost)),
        _ => {}
    }
    if !repository.owner.eq_ignore_ascii_case(account) {
        return Err(Refusal::ForeignRepository {
            repository: repository.full_name(),
            account: account.to_owned(),
        });
    }
    Ok(None)
}
