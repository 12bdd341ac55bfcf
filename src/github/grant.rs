//! Pure checks around a mint: what may be asked ([`check_request`]), the exact body sent
//! ([`request_body`]), and whether what GitHub granted stays within what was asked
//! ([`check_grant`]). Untrusted input is GitHub's 201 body; nothing here calls out.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::{MintRequest, is_valid_repo_name};

/// GitHub's limit on the repositories of one installation token.
pub const MAX_REPOSITORIES: usize = 500;

/// Refuses locally what must never reach GitHub. `Err` is the reason.
pub(super) fn check_request(request: &MintRequest) -> Result<(), String> {
    if let Some(names) = &request.repositories {
        if names.is_empty() {
            return Err("refusing to mint for an empty repository list (github would grant every repository)".into());
        }
        if names.len() > MAX_REPOSITORIES {
            return Err(format!(
                "{} repositories asked, github allows at most {MAX_REPOSITORIES}",
                names.len()
            ));
        }
        if let Some(bad) = names.iter().find(|n| !is_valid_repo_name(n)) {
            return Err(format!(
                "invalid repository name {bad:?} (a name without owner)"
            ));
        }
    }
    if request.permissions.is_empty() {
        return Err("refusing to mint without explicit permissions (github would grant all of the installation's)".into());
    }
    if let Some((name, level)) = request
        .permissions
        .iter()
        .find(|(_, level)| rank(level).is_none())
    {
        return Err(format!("permission {name:?} has unknown level {level:?}"));
    }
    Ok(())
}

/// `{"repositories":[...],"permissions":{...}}`; `repositories` omitted only for all-repositories.
pub(super) fn request_body(request: &MintRequest) -> Vec<u8> {
    let mut body = serde_json::Map::new();
    if let Some(names) = &request.repositories {
        body.insert("repositories".into(), serde_json::json!(names));
    }
    body.insert("permissions".into(), serde_json::json!(request.permissions));
    serde_json::Value::Object(body).to_string().into_bytes()
}

/// The 201 body besides the token.
#[derive(Debug, Deserialize)]
pub(super) struct RawGrant {
    expires_at: Option<String>,
    #[serde(default)]
    permissions: BTreeMap<String, serde_json::Value>,
    repository_selection: Option<String>,
    repositories: Option<Vec<RawRepository>>,
}

#[derive(Debug, Deserialize)]
struct RawRepository {
    name: Option<String>,
    full_name: Option<String>,
}

/// What was granted, checked.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) expires_at: u64,
    pub(super) permissions: BTreeMap<String, String>,
    pub(super) repositories: Vec<String>,
    pub(super) repository_selection: String,
}

/// Accepts a grant only if it is well-formed, unexpired and no wider than `asked`.
pub(super) fn check_grant(asked: &MintRequest, raw: RawGrant, now: u64) -> Result<Grant, String> {
    let expires_at = raw
        .expires_at
        .as_deref()
        .and_then(crate::time::parse_rfc3339)
        .ok_or("expires_at missing or not rfc 3339")?;
    if expires_at <= now {
        return Err(format!(
            "token expired on arrival (expires_at {expires_at}, now {now})"
        ));
    }
    let permissions = check_permissions(&asked.permissions, raw.permissions)?;
    let repository_selection = raw
        .repository_selection
        .ok_or("repository_selection missing")?;
    let repositories = match &asked.repositories {
        Some(names) => check_repositories(names, &repository_selection, raw.repositories)?,
        None => Vec::new(),
    };
    Ok(Grant {
        expires_at,
        permissions,
        repositories,
        repository_selection,
    })
}

fn check_permissions(
    asked: &BTreeMap<String, String>,
    granted: BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, String>, String> {
    let mut checked = BTreeMap::new();
    for (name, level) in granted {
        let level = level
            .as_str()
            .ok_or_else(|| format!("permission {name:?} level is not a string"))?;
        let within = match (asked.get(&name).and_then(|l| rank(l)), rank(level)) {
            (Some(limit), Some(got)) => got <= limit,
            _ => false,
        };
        if !within {
            return Err(format!(
                "github granted more than asked: {name:?}: {level:?}"
            ));
        }
        checked.insert(name, level.to_owned());
    }
    Ok(checked)
}

fn check_repositories(
    asked: &[String],
    selection: &str,
    granted: Option<Vec<RawRepository>>,
) -> Result<Vec<String>, String> {
    if selection != "selected" {
        return Err(format!(
            "github granted more than asked: repository_selection {selection:?}"
        ));
    }
    let allowed: BTreeSet<String> = asked.iter().map(|n| n.to_ascii_lowercase()).collect();
    let granted = granted.ok_or("repositories missing although a list was asked")?;
    let mut names = Vec::with_capacity(granted.len());
    for repository in granted {
        let name = repository.name.ok_or("a granted repository has no name")?;
        if !allowed.contains(&name.to_ascii_lowercase()) {
            return Err(format!(
                "github granted more than asked: repository {name:?}"
            ));
        }
        names.push(repository.full_name.unwrap_or(name));
    }
    Ok(names)
}

/// `read` < `write` < `admin`; `None` for anything else.
fn rank(level: &str) -> Option<u8> {
    match level {
        "read" => Some(1),
        "write" => Some(2),
        "admin" => Some(3),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(repos: Option<&[&str]>, perms: &[(&str, &str)]) -> MintRequest {
        MintRequest {
            repositories: repos.map(|r| r.iter().map(|s| s.to_string()).collect()),
            permissions: perms
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn raw(json: serde_json::Value) -> RawGrant {
        serde_json::from_value(json).unwrap()
    }

    fn good() -> serde_json::Value {
        serde_json::json!({
            "expires_at": "2026-11-20T10:00:00Z",
            "permissions": {"contents": "read", "metadata": "read"},
            "repository_selection": "selected",
            "repositories": [{"name": "widgets", "full_name": "acme/widgets"}],
        })
    }

    const NOW: u64 = 1_790_000_000; // 2026-09-21, before the expiry above

    #[test]
    fn request_checks() {
        let perms = [("contents", "read")];
        let many: Vec<String> = (0..=MAX_REPOSITORIES).map(|i| format!("r{i}")).collect();
        let cases: Vec<(MintRequest, bool)> = vec![
            (asked(Some(&["widgets"]), &perms), true),
            (asked(None, &perms), true),
            (asked(Some(&[]), &perms), false),
            (
                MintRequest {
                    repositories: Some(many.clone()),
                    permissions: asked(None, &perms).permissions,
                },
                false,
            ),
            (
                MintRequest {
                    repositories: Some(many[..MAX_REPOSITORIES].to_vec()),
                    permissions: asked(None, &perms).permissions,
                },
                true,
            ),
            (asked(Some(&["acme/widgets"]), &perms), false),
            (asked(Some(&[""]), &perms), false),
            (asked(Some(&["widgets"]), &[]), false),
            (asked(Some(&["widgets"]), &[("contents", "owner")]), false),
        ];
        for (i, (request, ok)) in cases.iter().enumerate() {
            assert_eq!(check_request(request).is_ok(), *ok, "case {i}");
        }
    }

    #[test]
    fn body_has_explicit_list_and_permissions() {
        let body = request_body(&asked(
            Some(&["widgets", "gears"]),
            &[("contents", "read"), ("metadata", "read")],
        ));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"repositories": ["widgets", "gears"], "permissions": {"contents": "read", "metadata": "read"}})
        );
        let all = request_body(&asked(None, &[("metadata", "read")]));
        assert_eq!(
            String::from_utf8(all).unwrap(),
            r#"{"permissions":{"metadata":"read"}}"#
        );
    }

    #[test]
    fn accepts_an_exact_or_narrower_grant() {
        let request = asked(
            Some(&["Widgets"]),
            &[("contents", "write"), ("metadata", "read")],
        );
        let grant = check_grant(&request, raw(good()), NOW).unwrap();
        assert_eq!(grant.repositories, vec!["acme/widgets"]);
        assert_eq!(
            grant.permissions.get("contents").map(String::as_str),
            Some("read")
        );
        assert_eq!(grant.repository_selection, "selected");
        assert_eq!(
            grant.expires_at,
            crate::time::parse_rfc3339("2026-11-20T10:00:00Z").unwrap()
        );
    }

    #[test]
    fn refuses_wider_or_malformed_grants() {
        let request = asked(
            Some(&["widgets"]),
            &[("contents", "read"), ("metadata", "read")],
        );
        let cases: &[(&str, serde_json::Value)] = &[
            (
                "permission not asked",
                serde_json::json!({"permissions": {"contents": "read", "metadata": "read", "issues": "read"}}),
            ),
            (
                "higher level",
                serde_json::json!({"permissions": {"contents": "write", "metadata": "read"}}),
            ),
            (
                "unknown level",
                serde_json::json!({"permissions": {"contents": "owner", "metadata": "read"}}),
            ),
            (
                "non-string level",
                serde_json::json!({"permissions": {"contents": 1}}),
            ),
            (
                "all repositories",
                serde_json::json!({"repository_selection": "all"}),
            ),
            (
                "other repository",
                serde_json::json!({"repositories": [{"name": "gears", "full_name": "acme/gears"}]}),
            ),
            (
                "repositories missing",
                serde_json::json!({"repositories": null}),
            ),
            (
                "selection missing",
                serde_json::json!({"repository_selection": null}),
            ),
            ("no expiry", serde_json::json!({"expires_at": null})),
            ("bad expiry", serde_json::json!({"expires_at": "tomorrow"})),
            (
                "expired",
                serde_json::json!({"expires_at": "2020-01-01T00:00:00Z"}),
            ),
        ];
        for (what, patch) in cases {
            let mut body = good();
            for (k, v) in patch.as_object().unwrap() {
                body[k] = v.clone();
            }
            assert!(check_grant(&request, raw(body), NOW).is_err(), "{what}");
        }
    }
}
