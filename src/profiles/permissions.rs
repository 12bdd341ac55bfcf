//! GitHub App installation-token permissions: the table of names and the levels each supports.
//!
//! The table mirrors the `permissions` object of GitHub's "Create an installation access token for
//! an app" endpoint (`POST /app/installations/{id}/access_tokens`, the `app-permissions` schema of
//! GitHub's REST description), in its underscore form. A profile may only ask for a name in this
//! table at a level GitHub accepts for it; anything else quarantines the profile.
#![forbid(unsafe_code)]

use std::fmt;

/// A permission level. Ordered `read < write < admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `read`
    Read,
    /// `write`
    Write,
    /// `admin`
    Admin,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "read" => Some(Level::Read),
            "write" => Some(Level::Write),
            "admin" => Some(Level::Admin),
            _ => None,
        }
    }

    /// The level as GitHub spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use Level::{Admin, Read, Write};

const READ_WRITE: &[Level] = &[Read, Write];
const READ_WRITE_ADMIN: &[Level] = &[Read, Write, Admin];
const READ_ONLY: &[Level] = &[Read];
const WRITE_ONLY: &[Level] = &[Write];

/// Every permission name GitHub accepts in an installation token request, with its levels.
const TABLE: &[(&str, &[Level])] = &[
    // Repository permissions.
    ("actions", READ_WRITE),
    ("administration", READ_WRITE),
    ("checks", READ_WRITE),
    ("codespaces", READ_WRITE),
    ("contents", READ_WRITE),
    ("dependabot_secrets", READ_WRITE),
    ("deployments", READ_WRITE),
    ("environments", READ_WRITE),
    ("issues", READ_WRITE),
    ("metadata", READ_WRITE),
    ("packages", READ_WRITE),
    ("pages", READ_WRITE),
    ("pull_requests", READ_WRITE),
    ("repository_custom_properties", READ_WRITE),
    ("repository_hooks", READ_WRITE),
    ("repository_projects", READ_WRITE_ADMIN),
    ("secret_scanning_alerts", READ_WRITE),
    ("secrets", READ_WRITE),
    ("security_events", READ_WRITE),
    ("single_file", READ_WRITE),
    ("statuses", READ_WRITE),
    ("vulnerability_alerts", READ_WRITE),
    ("workflows", WRITE_ONLY),
    // Organization permissions.
    ("members", READ_WRITE),
    ("organization_administration", READ_WRITE),
    ("organization_announcement_banners", READ_WRITE),
    ("organization_copilot_seat_management", WRITE_ONLY),
    ("organization_custom_org_roles", READ_WRITE),
    ("organization_custom_properties", READ_WRITE_ADMIN),
    ("organization_custom_roles", READ_WRITE),
    ("organization_events", READ_ONLY),
    ("organization_hooks", READ_WRITE),
    ("organization_packages", READ_WRITE),
    ("organization_personal_access_token_requests", READ_WRITE),
    ("organization_personal_access_tokens", READ_WRITE),
    ("organization_plan", READ_ONLY),
    ("organization_projects", READ_WRITE_ADMIN),
    ("organization_secrets", READ_WRITE),
    ("organization_self_hosted_runners", READ_WRITE),
    ("organization_user_blocking", READ_WRITE),
    ("team_discussions", READ_WRITE),
    // Account (user) permissions, accepted by the same request object.
    ("email_addresses", READ_WRITE),
    ("followers", READ_WRITE),
    ("git_ssh_keys", READ_WRITE),
    ("gpg_keys", READ_WRITE),
    ("interaction_limits", READ_WRITE),
    ("profile", WRITE_ONLY),
    ("starring", READ_WRITE),
];

/// The levels GitHub supports for a permission name, or `None` for an unknown name.
#[cfg(test)]
pub fn supported_levels(name: &str) -> Option<&'static [Level]> {
    TABLE
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, levels)| *levels)
}

/// One permission: a known GitHub permission name at a level it supports.
///
/// Ordered by name, then level, which is the order a profile's permissions are kept and shown in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    name: &'static str,
    level: Level,
}

impl Permission {
    /// `metadata:read`, which every GitHub fine-grained token carries and every profile lists.
    pub const METADATA_READ: Permission = Permission {
        name: "metadata",
        level: Read,
    };

    /// `contents:read`, what the built-in pipeline `default` profile grants without a file.
    pub const CONTENTS_READ: Permission = Permission {
        name: "contents",
        level: Read,
    };

    /// Parses `name:level`, e.g. `pull_requests:write`.
    pub fn parse(s: &str) -> Result<Permission, PermissionError> {
        let Some((name, level)) = s.split_once(':') else {
            return Err(PermissionError::NotNameLevel {
                entry: s.to_owned(),
            });
        };
        let Some((known, levels)) = TABLE.iter().find(|(known, _)| *known == name) else {
            return Err(PermissionError::UnknownName {
                name: name.to_owned(),
            });
        };
        match Level::parse(level) {
            Some(level) if levels.contains(&level) => Ok(Permission { name: known, level }),
            _ => Err(PermissionError::UnsupportedLevel {
                name: name.to_owned(),
                level: level.to_owned(),
            }),
        }
    }

    /// The permission name, e.g. `pull_requests`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The level.
    pub fn level(&self) -> Level {
        self.level
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Three plain writes, not `write!`: every vend writes its permissions several times.
        f.write_str(self.name)?;
        f.write_str(":")?;
        f.write_str(self.level.as_str())
    }
}

/// Why a `name:level` string is not a permission.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermissionError {
    /// The entry is not of the form `name:level`.
    NotNameLevel { entry: String },
    /// The name is not a GitHub permission.
    UnknownName { name: String },
    /// GitHub does not support this level for this permission.
    UnsupportedLevel { name: String, level: String },
}

impl fmt::Display for PermissionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionError::NotNameLevel { entry } => write!(f, "{entry:?} is not name:level"),
            PermissionError::UnknownName { name } => write!(f, "unknown permission {name:?}"),
            PermissionError::UnsupportedLevel { name, level } => {
                write!(f, "permission {name:?} has no level {level:?}")
            }
        }
    }
}

impl std::error::Error for PermissionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_names_at_supported_levels() {
        let p = Permission::parse("pull_requests:write").unwrap();
        assert_eq!((p.name(), p.level()), ("pull_requests", Level::Write));
        assert_eq!(p.to_string(), "pull_requests:write");
        assert!(Permission::parse("organization_projects:admin").is_ok());
        assert!(Permission::parse("workflows:write").is_ok());
    }

    #[test]
    fn rejects_each_malformed_entry() {
        let rows = [
            (
                "contents",
                PermissionError::NotNameLevel {
                    entry: "contents".into(),
                },
            ),
            (
                "pull-requests:read",
                PermissionError::UnknownName {
                    name: "pull-requests".into(),
                },
            ),
            (
                "Contents:read",
                PermissionError::UnknownName {
                    name: "Contents".into(),
                },
            ),
            (
                "contents:admin",
                PermissionError::UnsupportedLevel {
                    name: "contents".into(),
                    level: "admin".into(),
                },
            ),
            (
                "workflows:read",
                PermissionError::UnsupportedLevel {
                    name: "workflows".into(),
                    level: "read".into(),
                },
            ),
            (
                "contents:read:x",
                PermissionError::UnsupportedLevel {
                    name: "contents".into(),
                    level: "read:x".into(),
                },
            ),
            (
                "contents: read",
                PermissionError::UnsupportedLevel {
                    name: "contents".into(),
                    level: " read".into(),
                },
            ),
        ];
        for (input, want) in rows {
            assert_eq!(Permission::parse(input), Err(want), "{input}");
        }
    }

    #[test]
    fn orders_by_name_then_read_write_admin() {
        assert!(Level::Read < Level::Write && Level::Write < Level::Admin);
        let mut ps: Vec<Permission> = ["metadata:read", "contents:write", "contents:read"]
            .iter()
            .map(|s| Permission::parse(s).unwrap())
            .collect();
        ps.sort();
        let shown: Vec<String> = ps.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["contents:read", "contents:write", "metadata:read"]);
    }

    #[test]
    fn table_names_are_unique_and_supported_levels_are_exposed() {
        for (i, (name, _)) in TABLE.iter().enumerate() {
            assert!(
                TABLE.iter().skip(i + 1).all(|(other, _)| other != name),
                "{name}"
            );
        }
        assert_eq!(
            supported_levels("organization_plan"),
            Some(&[Level::Read][..])
        );
        assert_eq!(supported_levels("nope"), None);
    }
}
