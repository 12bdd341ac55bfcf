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
use std::net::IpAddr;

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

/// The profile's `sources` admit a request from `client` (checked beside the match rules, before
/// the cache): a miss is refused like a failed rule.
pub fn source(profile: &Profile, reference: &ProfileRef, client: IpAddr) -> Result<(), Refusal> {
    if profile.admits_source(client) {
        Ok(())
    } else {
        Err(Refusal::SourceNotInProfile {
            profile: reference.clone(),
            source: client,
        })
    }
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::profiles::Permission;

    /// A profile file with every rule kind, every repository form and a quarantined profile.
    pub(crate) const PROFILES: &str = r#"{
      "pipeline": {
        "defaults": { "permissions": ["contents:read"] },
        "profiles": [
          { "name": "release", "match": [ { "claim": "build_branch", "value": "main" } ],
            "permissions": ["contents:write", "pull_requests:write"] },
          { "name": "tagged", "match": [ { "claim": "build_tag", "valueIn": ["v1", "v2"] } ],
            "permissions": ["contents:read"] },
          { "name": "prod", "match": [ { "claim": "pipeline_slug", "valueGlob": "*-prod" },
                                      { "claim": "agent_tag:queue", "value": "deploy" } ],
            "permissions": ["deployments:write"] },
          { "name": "broken", "permissions": ["contents:fly"] }
        ]
      },
      "organization": {
        "profiles": [
          { "name": "plugins", "repositories": ["Plugin-A", "plugin-b"], "permissions": ["contents:read"] },
          { "name": "everything", "repositories": ["{{all-repositories}}"], "permissions": ["packages:read"] },
          { "name": "star", "repositories": ["*"], "permissions": ["packages:read"] },
          { "name": "one", "repositories": ["{{caller-scoped-repository}}"], "permissions": ["contents:read"] }
        ]
      }
    }"#;

    pub(crate) fn generation() -> Generation {
        Generation::parse(PROFILES.as_bytes()).unwrap()
    }

    /// Verified-looking claims of `acme`'s `widgets` pipeline, changed by `edit`.
    pub(crate) fn claims_with(edit: impl FnOnce(&mut serde_json::Value)) -> Claims {
        let mut value = serde_json::json!({
            "iss": "https://agent.buildkite.com", "aud": "kitebridge", "sub": "organization:acme:pipeline:widgets",
            "exp": 2_000, "nbf": 1_000, "iat": 1_000, "organization_slug": "acme",
            "pipeline_slug": "widgets", "pipeline_id": "p-1", "build_number": 7,
            "build_branch": "main", "build_tag": null, "build_commit": "abc", "job_id": "j-1",
            "agent_id": "a-1"
        });
        edit(&mut value);
        Claims::from_json(value.to_string().as_bytes()).unwrap()
    }

    pub(crate) fn claims() -> Claims {
        claims_with(|_| {})
    }

    fn pipeline(name: &str) -> ProfileRef {
        crate::profiles::parse_profile_ref(Family::Pipeline, name).unwrap()
    }

    fn org(name: &str) -> ProfileRef {
        crate::profiles::parse_profile_ref(Family::Organization, name).unwrap()
    }

    fn named(owner: &str, name: &str) -> Target {
        Target::Named {
            owner: owner.into(),
            name: name.into(),
        }
    }

    fn perms(list: &[&str]) -> Vec<Permission> {
        list.iter().map(|p| Permission::parse(p).unwrap()).collect()
    }

    fn repos(list: &[&str]) -> Reach {
        Reach::Repositories(list.iter().map(|s| s.to_string()).collect())
    }

    /// (scope asked, the permissions granted or the refusal's audit reason)
    type ScopeCase = (
        &'static [&'static str],
        Result<&'static [&'static str], &'static str>,
    );
    /// (name, target, the pipeline's repository, the "not mine" answer or the refusal's reason)
    type RepoCase<'a> = (
        &'a str,
        Target,
        &'a RepoRef,
        Result<Option<NotMine>, &'a str>,
    );

    /// What a case expects: the reach and permissions, or the refusal's audit reason.
    type Want = Result<(Reach, &'static [&'static str]), &'static str>;

    fn decide(
        reference: &ProfileRef,
        claims: &Claims,
        target: &Target,
        scope: Option<&[&str]>,
    ) -> Result<(Reach, Vec<String>), String> {
        let generation = generation();
        let scope = scope.map(perms);
        authorize(
            &generation,
            reference,
            claims,
            target,
            scope.as_deref(),
            "acme",
        )
        .map(|a| {
            let p = a.permissions.iter().map(ToString::to_string).collect();
            (a.reach, p)
        })
        .map_err(|r| r.to_string())
    }

    #[test]
    fn every_rule_kind_family_and_literal() {
        let main = claims();
        let dev = claims_with(|c| c["build_branch"] = "dev".into());
        let v2 = claims_with(|c| c["build_tag"] = "v2".into());
        let v3 = claims_with(|c| c["build_tag"] = "v3".into());
        let prod = claims_with(|c| {
            c["pipeline_slug"] = "api-prod".into();
            c["agent_tag:queue"] = "deploy".into();
        });
        let prod_other_queue = claims_with(|c| {
            c["pipeline_slug"] = "api-prod".into();
            c["agent_tag:queue"] = "default".into();
        });
        let cases: Vec<(&str, ProfileRef, &Claims, Target, Want)> = vec![
            (
                "built-in default",
                pipeline("default"),
                &main,
                Target::Own,
                Ok((Reach::Pipeline, &["contents:read", "metadata:read"])),
            ),
            (
                "value holds",
                pipeline("release"),
                &main,
                Target::Own,
                Ok((
                    Reach::Pipeline,
                    &["contents:write", "metadata:read", "pull_requests:write"],
                )),
            ),
            (
                "value fails",
                pipeline("release"),
                &dev,
                Target::Own,
                Err(r#"profile release: build_branch "dev" does not match value "main""#),
            ),
            (
                "valueIn holds",
                pipeline("tagged"),
                &v2,
                Target::Own,
                Ok((Reach::Pipeline, &["contents:read", "metadata:read"])),
            ),
            (
                "valueIn fails",
                pipeline("tagged"),
                &v3,
                Target::Own,
                Err(r#"profile tagged: build_tag "v3" does not match valueIn ["v1", "v2"]"#),
            ),
            (
                "absent claim never matches",
                pipeline("tagged"),
                &main,
                Target::Own,
                Err(
                    r#"profile tagged: build_tag is absent or null, so valueIn ["v1", "v2"] cannot match"#,
                ),
            ),
            (
                "valueGlob and agent tag hold",
                pipeline("prod"),
                &prod,
                Target::Own,
                Ok((Reach::Pipeline, &["deployments:write", "metadata:read"])),
            ),
            (
                "every failed rule is named",
                pipeline("prod"),
                &main,
                Target::Own,
                Err(
                    r#"profile prod: pipeline_slug "widgets" does not match valueGlob "*-prod"; agent_tag:queue is absent or null, so value "deploy" cannot match"#,
                ),
            ),
            (
                "one rule of two fails",
                pipeline("prod"),
                &prod_other_queue,
                Target::Own,
                Err(r#"profile prod: agent_tag:queue "default" does not match value "deploy""#),
            ),
            (
                "unknown profile",
                pipeline("nonesuch"),
                &main,
                Target::Own,
                Err("profile nonesuch: not found"),
            ),
            (
                "quarantined profile",
                pipeline("broken"),
                &main,
                Target::Own,
                Err("profile broken: unavailable: "),
            ),
            (
                "org list, whole",
                org("plugins"),
                &main,
                Target::Own,
                Ok((
                    repos(&["Plugin-A", "plugin-b"]),
                    &["contents:read", "metadata:read"],
                )),
            ),
            (
                "org list, scope in it (any case, profile's spelling)",
                org("plugins"),
                &main,
                Target::Scoped("plugin-a".into()),
                Ok((repos(&["Plugin-A"]), &["contents:read", "metadata:read"])),
            ),
            (
                "org list, scope not in it",
                org("plugins"),
                &main,
                Target::Scoped("other".into()),
                Ok((
                    Reach::NotMine(NotMine::NotInTheList),
                    &["contents:read", "metadata:read"],
                )),
            ),
            (
                "org list, git path in it",
                org("plugins"),
                &main,
                named("ACME", "plugin-b"),
                Ok((repos(&["plugin-b"]), &["contents:read", "metadata:read"])),
            ),
            (
                "org list, git path of another owner",
                org("plugins"),
                &main,
                named("evil", "plugin-b"),
                Ok((
                    Reach::NotMine(NotMine::OtherOwner {
                        account: "acme".into(),
                    }),
                    &["contents:read", "metadata:read"],
                )),
            ),
            (
                "org list, another host",
                org("plugins"),
                &main,
                Target::Elsewhere {
                    url: "https://gitlab.com/a/b".into(),
                },
                Ok((
                    Reach::NotMine(NotMine::OtherHost),
                    &["contents:read", "metadata:read"],
                )),
            ),
            (
                "{{all-repositories}}",
                org("everything"),
                &main,
                Target::Own,
                Ok((Reach::All, &["metadata:read", "packages:read"])),
            ),
            (
                "* is all repositories",
                org("star"),
                &main,
                Target::Own,
                Ok((Reach::All, &["metadata:read", "packages:read"])),
            ),
            (
                "all repositories narrowed by repository-scope",
                org("everything"),
                &main,
                Target::Scoped("widgets".into()),
                Ok((repos(&["widgets"]), &["metadata:read", "packages:read"])),
            ),
            (
                "caller-scoped needs a repository",
                org("one"),
                &main,
                Target::Own,
                Err("caller-scoped profile without repository-scope"),
            ),
            (
                "caller-scoped with repository-scope",
                org("one"),
                &main,
                Target::Scoped("gadgets".into()),
                Ok((repos(&["gadgets"]), &["contents:read", "metadata:read"])),
            ),
            (
                "caller-scoped with a git path",
                org("one"),
                &main,
                named("acme", "gadgets"),
                Ok((repos(&["gadgets"]), &["contents:read", "metadata:read"])),
            ),
            (
                "unknown organization profile",
                org("default"),
                &main,
                Target::Own,
                Err("profile default: not found"),
            ),
        ];
        for (name, reference, claims, target, want) in cases {
            let got = decide(&reference, claims, &target, None);
            match (got, want) {
                (Ok((reach, p)), Ok((want_reach, want_p))) => {
                    assert_eq!(reach, want_reach, "{name}");
                    assert_eq!(p, want_p, "{name}");
                }
                (Err(reason), Err(want)) => assert!(reason.starts_with(want), "{name}: {reason}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn exchange_scope_narrows_within_the_profile() {
        let main = claims();
        let release = pipeline("release");
        let cases: &[ScopeCase] = &[
            (&["contents:read"], Ok(&["contents:read", "metadata:read"])),
            (
                &["contents:write"],
                Ok(&["contents:write", "metadata:read"]),
            ),
            (
                &["pull_requests:read", "metadata:read", "pull_requests:read"],
                Ok(&["metadata:read", "pull_requests:read"]),
            ),
            (
                &["issues:write"],
                Err("scope issues:write is beyond profile pipeline:release"),
            ),
        ];
        for (scope, want) in cases {
            let got = decide(&release, &main, &Target::Own, Some(scope)).map(|(_, p)| p);
            match want {
                Ok(want) => assert_eq!(
                    got,
                    Ok(want.iter().map(|s| s.to_string()).collect()),
                    "{scope:?}"
                ),
                Err(want) => assert_eq!(got, Err(want.to_string()), "{scope:?}"),
            }
        }
        // A higher level than the profile's is beyond it.
        let read_only = decide(
            &pipeline("default"),
            &main,
            &Target::Own,
            Some(&["contents:write"]),
        );
        assert_eq!(
            read_only,
            Err("scope contents:write is beyond profile pipeline:default".to_owned())
        );
        // Rules come first: a caller the rules refuse learns nothing about the scope.
        let dev = claims_with(|c| c["build_branch"] = "dev".into());
        let refused = decide(&release, &dev, &Target::Own, Some(&["issues:write"]));
        assert!(refused.unwrap_err().contains("does not match"));
    }

    #[test]
    fn pipeline_repository_against_target_and_account() {
        let repo =
            crate::buildkite::parse_repository_url("git@github.com:acme/widgets.git", "github.com")
                .unwrap();
        let foreign = crate::buildkite::parse_repository_url(
            "git@github.com:other/widgets.git",
            "github.com",
        )
        .unwrap();
        let cases: Vec<RepoCase> = vec![
            ("own", Target::Own, &repo, Ok(None)),
            ("same, any case", named("ACME", "Widgets"), &repo, Ok(None)),
            (
                "another repository",
                named("acme", "gadgets"),
                &repo,
                Ok(Some(NotMine::NotThePipelinesRepository {
                    pipeline_repository: "acme/widgets".into(),
                })),
            ),
            (
                "another owner",
                named("evil", "widgets"),
                &repo,
                Ok(Some(NotMine::NotThePipelinesRepository {
                    pipeline_repository: "acme/widgets".into(),
                })),
            ),
            (
                "another host",
                Target::Elsewhere { url: "x".into() },
                &repo,
                Ok(Some(NotMine::OtherHost)),
            ),
            (
                "not the installation's",
                Target::Own,
                &foreign,
                Err(
                    r#"pipeline repository other/widgets is not owned by the installation's account "acme""#,
                ),
            ),
        ];
        for (name, target, repository, want) in cases {
            let got = pipeline_repository(&target, repository, "acme").map_err(|r| r.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{name}");
        }
    }

    #[test]
    fn sources_table() {
        let generation = Generation::parse(
            br#"{"pipeline": {"profiles": [
                {"name": "office", "permissions": ["contents:read"], "sources": ["192.0.2.0/24", "2001:db8::/32"]},
                {"name": "open", "permissions": ["contents:read"]}]}}"#,
        )
        .unwrap();
        let cases: &[(&str, &str, Result<(), &str>)] = &[
            ("office", "192.0.2.9", Ok(())),
            ("office", "::ffff:192.0.2.9", Ok(())),
            ("office", "2001:db8::9", Ok(())),
            (
                "office",
                "192.0.3.9",
                Err("profile office: source 192.0.3.9 is not in the profile's sources"),
            ),
            (
                "office",
                "2001:db9::",
                Err("profile office: source 2001:db9:: is not in the profile's sources"),
            ),
            ("open", "203.0.113.1", Ok(())),
        ];
        for (name, ip, want) in cases {
            let reference = crate::profiles::parse_profile_ref(Family::Pipeline, name).unwrap();
            let profile = lookup(&generation, &reference).unwrap();
            let got = source(profile, &reference, ip.parse().unwrap());
            if let Err(refusal) = &got {
                assert_eq!(refusal.answer().status, 403, "{name} {ip}");
            }
            assert_eq!(
                got.map_err(|r| r.to_string()),
                want.map_err(str::to_owned),
                "{name} {ip}"
            );
        }
    }
}
