//! The ask: what a token request asks for, read from the HTTP request.
//!
//! The presented token is read first ([`bearer`], or the exchange form's `subject_token`); the
//! rest of a path route's request ([`read`]) only after the token is admitted, so a caller
//! without a valid token learns nothing about profile names or request formats. The exchange's
//! form carries the token, so it is read whole first ([`exchange()`]).
#![forbid(unsafe_code)]

use super::credential::{self, CredentialRequest};
use super::exchange;
use super::refusal::{QueryProblem, Refusal};
use crate::github;
use crate::http::Request;
use crate::oidc;
use crate::profiles::{self, Family, Permission, ProfileRef};

/// The token routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /token[/{profile}]`: a pipeline profile, JSON.
    PipelineToken,
    /// `POST /git-credentials[/{profile}]`: a pipeline profile, git's credential format.
    PipelineGit,
    /// `POST /organization/token/{profile}`: an organization profile, JSON.
    OrgToken,
    /// `POST /organization/git-credentials/{profile}`: an organization profile, git's format.
    OrgGit,
    /// `POST /oauth/token`: RFC 8693 token exchange.
    Exchange,
}

/// Which repository the caller asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The profile's own: the pipeline's repository, or an organization profile's whole list.
    Own,
    /// `repository-scope`: a bare repository name (validated).
    Scoped(String),
    /// A repository by owner and name (validated): git's `path`, the exchange's `resource`.
    Named { owner: String, name: String },
    /// A git request for another host or protocol, or a path that is no `owner/name`: never ours.
    /// `url` is what git asked about, for the audit record.
    Elsewhere { url: String },
}

/// How the answer is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The token routes' JSON body.
    Json,
    /// git's credential format, echoing the request's `protocol`, `host` and `path`.
    Git(CredentialRequest),
    /// RFC 8693's JSON body.
    Exchange,
}

/// A well-formed request: the profile, the repository and the permissions asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub profile: ProfileRef,
    pub target: Target,
    /// A narrower permission set than the profile's (the exchange's `scope`).
    pub scope: Option<Vec<Permission>>,
    /// The longest life the caller wants, in seconds (the exchange's `expires_in`).
    pub expires_in: Option<u64>,
    pub reply: Reply,
}

/// The bearer token of the `Authorization` header.
pub fn bearer(req: &Request) -> Result<&[u8], Refusal> {
    oidc::bearer_token(&req.header_values("authorization")).map_err(Refusal::from)
}

/// A token-exchange request: the subject token and the ask.
pub fn exchange(req: &Request, github_host: &str) -> Result<(String, Ask), Refusal> {
    let form = exchange::parse_request(req.header("content-type"), &req.body, github_host)
        .map_err(Refusal::MalformedExchange)?;
    let target = match form.resource {
        Some((owner, name)) => Target::Named { owner, name },
        None => Target::Own,
    };
    let ask = Ask {
        profile: form.profile,
        target,
        scope: form.scope,
        expires_in: form.expires_in,
        reply: Reply::Exchange,
    };
    Ok((form.subject_token, ask))
}

/// The rest of a path route's request: the profile segment, then `repository-scope` (organization
/// token route) or the git credential input (git routes).
pub fn read(route: Route, req: &Request, github_host: &str) -> Result<Ask, Refusal> {
    let family = match route {
        Route::OrgToken | Route::OrgGit => Family::Organization,
        _ => Family::Pipeline,
    };
    let segment = req.param(0).unwrap_or("default");
    let profile =
        profiles::parse_profile_ref(family, segment).map_err(Refusal::MalformedProfileRef)?;
    let (target, reply) = match route {
        Route::OrgToken => match repository_scope(req)? {
            Some(name) => (Target::Scoped(name), Reply::Json),
            None => (Target::Own, Reply::Json),
        },
        Route::PipelineGit | Route::OrgGit => {
            let cred =
                credential::parse_request(&req.body).map_err(Refusal::MalformedCredential)?;
            (git_target(&cred, github_host), Reply::Git(cred))
        }
        Route::PipelineToken | Route::Exchange => (Target::Own, Reply::Json),
    };
    Ok(Ask {
        profile,
        target,
        scope: None,
        expires_in: None,
        reply,
    })
}

/// What a git credential request names: a repository on the configured host, or elsewhere.
fn git_target(cred: &CredentialRequest, github_host: &str) -> Target {
    let ours = cred.protocol == "https" && cred.host.eq_ignore_ascii_case(github_host);
    match repository_from_path(&cred.path) {
        Some((owner, name)) if ours => Target::Named {
            owner: owner.to_owned(),
            name: name.to_owned(),
        },
        _ => Target::Elsewhere {
            url: format!("{}://{}/{}", cred.protocol, cred.host, cred.path),
        },
    }
}

/// `repository-scope` from the query, at most once: a GitHub repository name (letters, digits,
/// `-`, `_`, `.`; at most 100 bytes; not `.`, `..` or ending in `.git`), so a caller's typo is a
/// 400, never an upstream 422 answered 500. Other parameters are ignored.
fn repository_scope(req: &Request) -> Result<Option<String>, Refusal> {
    let bad = |problem| Refusal::MalformedQuery(problem);
    let pairs = req
        .query_pairs()
        .map_err(|e| bad(QueryProblem::Undecodable(e)))?;
    let mut scopes = pairs
        .into_iter()
        .filter(|(k, _)| k == "repository-scope")
        .map(|(_, v)| v);
    let scope = scopes.next();
    if scopes.next().is_some() {
        return Err(bad(QueryProblem::RepeatedScope));
    }
    match scope {
        None => Ok(None),
        Some(s) if github::is_valid_repo_name(&s) => Ok(Some(s)),
        Some(_) => Err(bad(QueryProblem::ScopeNotARepositoryName)),
    }
}

/// `owner/name` from a git credential `path` (`acme/widgets.git`, leading or trailing `/`
/// tolerated, one `.git` of any case removed), both valid GitHub names. `None` for anything else.
pub fn repository_from_path(path: &str) -> Option<(&str, &str)> {
    let (owner, name) = path.trim_matches('/').split_once('/')?;
    let name = github::strip_git_suffix(name);
    (github::is_valid_owner(owner) && github::is_valid_repo_name(name)).then_some((owner, name))
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
