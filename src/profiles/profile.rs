//! A compiled profile, the two families, and profile references as routes and tools spell them.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

use super::permissions::Permission;
use super::rules::{ClaimSource, Rule, Verdict};
use super::ttl::Ttl;
use crate::cidr::CidrSet;

/// Longest profile name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// The name of the built-in pipeline profile.
pub const DEFAULT_PROFILE: &str = "default";

/// Whether `name` is a valid profile name: 1–64 bytes of `[A-Za-z0-9_-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The two profile families; names are unique within a family only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// The token covers the requesting pipeline's own repository.
    Pipeline,
    /// The token covers the profile's repositories.
    Organization,
}

impl Family {
    /// The reference prefix: `pipeline` or `org`.
    pub fn prefix(self) -> &'static str {
        match self {
            Family::Pipeline => "pipeline",
            Family::Organization => "org",
        }
    }
}

/// `pipeline` or `organization`.
impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Pipeline => "pipeline",
            Family::Organization => "organization",
        })
    }
}

/// What an organization profile's token covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RepositoryScope {
    /// These repositories (bare names, sorted, without duplicates).
    Named(Vec<String>),
    /// Every repository of the installation (`{{all-repositories}}` or `*`).
    All,
    /// Exactly the one repository the caller names (`{{caller-scoped-repository}}`).
    CallerScoped,
}

/// A usable profile: its rules, permissions and (organization family) repositories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub(crate) family: Family,
    pub(crate) name: String,
    pub(crate) rules: Vec<Rule>,
    /// Sorted, without duplicates, always including `metadata:read`.
    pub(crate) permissions: Vec<Permission>,
    /// `Some` exactly for organization profiles.
    pub(crate) repositories: Option<RepositoryScope>,
    /// How long its tokens may live before kitebridge revokes them.
    pub(crate) ttl: Ttl,
    /// `sources`: the address ranges requests must come from; `None`: any.
    pub(crate) sources: Option<CidrSet>,
}

impl Profile {
    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The name, without prefix.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The match rules, in file order; all must hold. Empty: every pipeline qualifies.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The permissions: sorted by name then level, without duplicates, including `metadata:read`.
    pub fn permissions(&self) -> &[Permission] {
        &self.permissions
    }

    /// The repository scope of an organization profile; `None` for a pipeline profile.
    pub fn repository_scope(&self) -> Option<&RepositoryScope> {
        self.repositories.as_ref()
    }

    /// How long its tokens may live ([`Ttl::default`] when the file gives none).
    pub fn ttl(&self) -> Ttl {
        self.ttl
    }

    /// The address ranges requests must come from (`sources`); `None` when the profile has none.
    pub fn sources(&self) -> Option<&CidrSet> {
        self.sources.as_ref()
    }

    /// Whether a request from `client` may use the profile: inside one of its `sources`, or it
    /// has none.
    pub fn admits_source(&self, client: IpAddr) -> bool {
        self.sources.as_ref().is_none_or(|set| set.contains(client))
    }

    /// Tests every rule against a claim set.
    pub fn evaluate(&self, claims: &dyn ClaimSource) -> Verdict {
        Verdict::of(&self.rules, claims)
    }
}

/// `pipeline:NAME` or `org:NAME`, as the audit record and responses show it.
impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Plain writes, not `write!`: every vend writes its profile several times.
        f.write_str(self.family.prefix())?;
        f.write_str(":")?;
        f.write_str(&self.name)
    }
}

/// A request for a profile by family and name, its prefix resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProfileRef {
    family: Family,
    name: String,
}

impl ProfileRef {
    /// The built-in pipeline `default` profile (what `/token` without a segment asks for).
    pub fn pipeline_default() -> ProfileRef {
        ProfileRef {
            family: Family::Pipeline,
            name: DEFAULT_PROFILE.to_owned(),
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The name, without prefix.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `pipeline:NAME` or `org:NAME`.
impl fmt::Display for ProfileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Plain writes, not `write!`: every vend writes its profile several times.
        f.write_str(self.family.prefix())?;
        f.write_str(":")?;
        f.write_str(&self.name)
    }
}

/// Why a profile reference is malformed (a 400). Never echoes the input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefError {
    /// The reference is empty.
    Empty,
    /// A prefix of the other family (`org:` on a pipeline route, `pipeline:`/`repo:` on an
    /// organization route).
    WrongFamily { prefix: &'static str },
    /// The name (after any prefix) is not 1–64 bytes of `[A-Za-z0-9_-]`.
    InvalidName,
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefError::Empty => f.write_str("empty profile reference"),
            RefError::WrongFamily { prefix } => {
                write!(f, "profile prefix {prefix:?} not allowed on this route")
            }
            RefError::InvalidName => f.write_str("malformed profile name"),
        }
    }
}

impl std::error::Error for RefError {}

/// Prefixes and the family each names.
const PREFIXES: &[(&str, Family)] = &[
    ("pipeline:", Family::Pipeline),
    ("repo:", Family::Pipeline),
    ("org:", Family::Organization),
];

/// Splits a known prefix off: the family it names and the rest.
fn split_prefix(reference: &str) -> Option<(&'static str, Family, &str)> {
    PREFIXES.iter().find_map(|&(prefix, family)| {
        reference
            .strip_prefix(prefix)
            .map(|rest| (prefix, family, rest))
    })
}

/// Resolves a route's `{profile}` segment: on pipeline routes `pipeline:` and `repo:` are
/// stripped and `org:` is an error; on organization routes `org:` is stripped and `pipeline:` /
/// `repo:` are errors. `default` on a pipeline route is the built-in default profile.
pub fn parse_profile_ref(route_family: Family, segment: &str) -> Result<ProfileRef, RefError> {
    let name = match split_prefix(segment) {
        Some((_, family, rest)) if family == route_family => rest,
        Some((prefix, _, _)) => return Err(RefError::WrongFamily { prefix }),
        None => segment,
    };
    named(route_family, name)
}

/// Resolves a reference that names its own family (the OAuth `audience`, `explain --profile`):
/// `pipeline:NAME`, `repo:NAME` or `org:NAME`; a bare name is a pipeline profile, as on `/token`.
pub fn parse_qualified_profile_ref(reference: &str) -> Result<ProfileRef, RefError> {
    match split_prefix(reference) {
        Some((_, family, rest)) => named(family, rest),
        None => named(Family::Pipeline, reference),
    }
}

fn named(family: Family, name: &str) -> Result<ProfileRef, RefError> {
    if name.is_empty() {
        return Err(RefError::Empty);
    }
    if !is_valid_name(name) {
        return Err(RefError::InvalidName);
    }
    Ok(ProfileRef {
        family,
        name: name.to_owned(),
    })
}
