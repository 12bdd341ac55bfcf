//! Validation of a shape-checked document, profile by profile. A problem in a profile quarantines
//! that profile only (it answers "profile unavailable"); only `pipeline.defaults.permissions` can
//! fail the whole file here, because the default profile must always exist.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use super::glob::{Glob, GlobError};
use super::pattern::{Pattern, PatternError};
use super::permissions::{Permission, PermissionError};
use super::profile::{
    DEFAULT_PROFILE, Family, MAX_NAME_BYTES, Profile, RepositoryScope, is_valid_name,
};
use super::rules::{Matcher, Rule, is_known_claim};
use super::schema::{At, Positions, RawProfile, RawRule, SchemaError};
use super::ttl::{Ttl, TtlError};
use super::yaml::Position;
use crate::cidr::{Cidr, CidrError, CidrSet};

/// Longest repository name, in bytes.
pub const MAX_REPOSITORY_BYTES: usize = 100;

/// `repositories` literal: every repository of the installation.
pub const ALL_REPOSITORIES: &str = "{{all-repositories}}";
/// `repositories` literal: an alias of [`ALL_REPOSITORIES`].
pub const ALL_REPOSITORIES_ALIAS: &str = "*";
/// `repositories` literal: the one repository the caller names.
pub const CALLER_SCOPED_REPOSITORY: &str = "{{caller-scoped-repository}}";

/// Why a profile is quarantined. Each is reported with the JSON path it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileProblem {
    /// `name` is empty.
    NameEmpty,
    /// `name` is longer than 64 bytes.
    NameTooLong { len: usize },
    /// `name` has a character outside `[A-Za-z0-9_-]`.
    NameCharacters,
    /// Another profile of the family has the same name (every one of them is quarantined).
    DuplicateName,
    /// A pipeline profile named `default` (reserved: use `pipeline.defaults`).
    ReservedName,
    /// `permissions` is empty.
    PermissionsEmpty,
    /// A `permissions` entry is not a permission.
    Permission(PermissionError),
    /// One permission at two levels (counting the implicit `metadata:read`).
    PermissionLevels { name: &'static str },
    /// `repositories` is empty.
    RepositoriesEmpty,
    /// A repository entry that is empty, has `/`, whitespace or control characters, or is over
    /// 100 bytes.
    RepositoryInvalid,
    /// A `{{…}}` entry that is not a known literal.
    RepositoryPlaceholder,
    /// `{{all-repositories}}`, `*` or `{{caller-scoped-repository}}` beside other entries.
    RepositoryLiteralNotAlone,
    /// A rule names a claim rules may not name.
    UnknownClaim,
    /// A rule has not exactly one of `value`, `valueIn`, `valueGlob`, `valuePattern`.
    MatcherCount { found: usize },
    /// `valueGlob` is not a glob.
    Glob(GlobError),
    /// `valuePattern` does not compile, or is over a limit.
    Pattern(PatternError),
    /// `ttl` is malformed or out of range.
    Ttl(TtlError),
    /// `sources` is an empty list (it would admit no request; leave it out to admit any).
    SourcesEmpty,
    /// A `sources` entry is not an address range.
    Source(CidrError),
}

impl fmt::Display for ProfileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileProblem::NameEmpty => f.write_str("name is empty"),
            ProfileProblem::NameTooLong { len } => {
                write!(f, "name is {len} bytes, over {MAX_NAME_BYTES}")
            }
            ProfileProblem::NameCharacters => {
                f.write_str("name has characters outside [A-Za-z0-9_-]")
            }
            ProfileProblem::DuplicateName => f.write_str("duplicate name in the family"),
            ProfileProblem::ReservedName => {
                f.write_str("\"default\" is reserved (use pipeline.defaults)")
            }
            ProfileProblem::PermissionsEmpty => f.write_str("no permissions"),
            ProfileProblem::Permission(error) => write!(f, "{error}"),
            ProfileProblem::PermissionLevels { name } => {
                write!(f, "permission {name:?} given at more than one level")?;
                if *name == Permission::METADATA_READ.name() {
                    f.write_str(" (metadata:read is always included)")?;
                }
                Ok(())
            }
            ProfileProblem::RepositoriesEmpty => f.write_str("no repositories"),
            ProfileProblem::RepositoryInvalid => write!(
                f,
                "not a repository name (empty, '/', whitespace or control characters, or over \
                 {MAX_REPOSITORY_BYTES} bytes)"
            ),
            ProfileProblem::RepositoryPlaceholder => f.write_str("unknown {{...}} placeholder"),
            ProfileProblem::RepositoryLiteralNotAlone => {
                f.write_str("this literal must be the only repository entry")
            }
            ProfileProblem::UnknownClaim => f.write_str("unknown claim"),
            ProfileProblem::MatcherCount { found } => {
                write!(
                    f,
                    "needs exactly one of value, valueIn, valueGlob, valuePattern (found {found})"
                )
            }
            ProfileProblem::Glob(error) => write!(f, "{error}"),
            ProfileProblem::Pattern(error) => write!(f, "{error}"),
            ProfileProblem::Ttl(error) => write!(f, "{error}"),
            ProfileProblem::SourcesEmpty => {
                f.write_str("no sources (leave sources out to admit any address)")
            }
            ProfileProblem::Source(error) => write!(f, "{error}"),
        }
    }
}

/// A quarantine problem, the JSON path it is about and, in a YAML file, where that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub at: Option<Position>,
    pub problem: ProfileProblem,
}

impl Problem {
    fn new(path: String, problem: ProfileProblem) -> Problem {
        Problem {
            path,
            at: None,
            problem,
        }
    }
}

/// `$.pipeline.profiles[1].permissions[0]: unknown permission "foo"`; in a YAML file
/// `$.pipeline.profiles[1].permissions[0] (line 9, column 11): unknown permission "foo"`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}: {}", self.path, At(self.at), self.problem)
    }
}

/// A quarantined (unavailable) profile name of one family, with every problem of every profile
/// of that name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    family: Family,
    name: String,
    problems: Vec<Problem>,
    reason: String,
}

impl Quarantined {
    fn new(family: Family, name: String, problems: Vec<Problem>) -> Quarantined {
        let reason = problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Quarantined {
            family,
            name,
            problems,
            reason,
        }
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The name as written (possibly invalid: show it escaped).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every problem, in file order.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Every problem joined by `; ` (for the log and the audit record).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// One family's profiles after validation: usable ones and quarantined names, disjoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Compiled {
    pub profiles: BTreeMap<String, Profile>,
    pub quarantined: BTreeMap<String, Quarantined>,
}

/// The default profile without a file: `contents:read` (and `metadata:read`).
pub(crate) fn builtin_default() -> Profile {
    pipeline_default(vec![Permission::CONTENTS_READ, Permission::METADATA_READ])
}

/// The default profile from `pipeline.defaults.permissions` and `pipeline.defaults.ttl` (the
/// built-in one when absent); any problem fails the whole file.
pub(crate) fn default_profile(
    defaults: Option<(String, Vec<String>)>,
    ttl: Option<(String, String)>,
) -> Result<Profile, Vec<SchemaError>> {
    let ttl = match ttl {
        None => Ok(Ttl::default()),
        Some((path, text)) => Ttl::parse(&text).map_err(|error| SchemaError::DefaultTtl {
            path,
            at: None,
            error,
        }),
    };
    let Some((path, entries)) = defaults else {
        return ttl
            .map(|ttl| Profile {
                ttl,
                ..builtin_default()
            })
            .map_err(|e| vec![e]);
    };
    let permissions = permission_set(&entries).map_err(|problems| {
        let located = problems.into_iter().map(|problem| match problem {
            SetProblem::Empty => SchemaError::DefaultPermissionsEmpty {
                path: path.clone(),
                at: None,
            },
            SetProblem::Entry { index, error } => SchemaError::DefaultPermission {
                path: format!("{path}[{index}]"),
                at: None,
                error,
            },
            SetProblem::Levels { name } => SchemaError::DefaultPermissionLevels {
                path: path.clone(),
                at: None,
                name,
            },
        });
        located.collect::<Vec<_>>()
    });
    match (permissions, ttl) {
        (Ok(permissions), Ok(ttl)) => Ok(Profile {
            ttl,
            ..pipeline_default(permissions)
        }),
        (permissions, ttl) => {
            let mut problems = permissions.err().unwrap_or_default();
            problems.extend(ttl.err());
            Err(problems)
        }
    }
}

fn pipeline_default(permissions: Vec<Permission>) -> Profile {
    Profile {
        family: Family::Pipeline,
        name: DEFAULT_PROFILE.to_owned(),
        rules: Vec::new(),
        permissions,
        repositories: None,
        ttl: Ttl::default(),
        sources: None,
    }
}

/// The `valuePattern`s compiled so far in one family, by source: a file repeats the same few
/// patterns across thousands of profiles, and compiling one costs far more than the rest of a
/// profile (a compiled pattern is shared, not copied).
type Patterns = HashMap<String, Result<Pattern, PatternError>>;

/// Validates one family's profiles. Every profile sharing a name with another is quarantined.
/// Problems get their place in a YAML file from `positions`.
pub(crate) fn compile_family(
    family: Family,
    raws: Vec<RawProfile>,
    positions: &Positions,
) -> Compiled {
    let mut occurrences: BTreeMap<String, usize> = BTreeMap::new();
    for raw in &raws {
        *occurrences.entry(raw.name.clone()).or_default() += 1;
    }
    let mut compiled = Compiled::default();
    let mut problems: BTreeMap<String, Vec<Problem>> = BTreeMap::new();
    let mut patterns = Patterns::new();
    for raw in raws {
        let name = raw.name.clone();
        let duplicate = occurrences.get(&name).is_some_and(|&count| count > 1);
        let name_path = duplicate.then(|| format!("{}.name", raw.path));
        match (profile(family, raw, &mut patterns), name_path) {
            (Ok(profile), None) => {
                compiled.profiles.insert(name, profile);
            }
            (result, name_path) => {
                let found = problems.entry(name).or_default();
                if let Some(name_path) = name_path {
                    found.push(Problem::new(name_path, ProfileProblem::DuplicateName));
                }
                found.extend(result.err().unwrap_or_default());
                for problem in found.iter_mut() {
                    problem.at = positions.of(&problem.path);
                }
            }
        }
    }
    compiled.quarantined = problems
        .into_iter()
        .map(|(name, problems)| (name.clone(), Quarantined::new(family, name, problems)))
        .collect();
    compiled
}

/// One profile, or every problem it has.
fn profile(
    family: Family,
    raw: RawProfile,
    patterns: &mut Patterns,
) -> Result<Profile, Vec<Problem>> {
    let mut problems = Vec::new();
    let at = |suffix: &str| format!("{}.{suffix}", raw.path);
    if let Some(problem) = name_problem(family, &raw.name) {
        problems.push(Problem::new(at("name"), problem));
    }
    let permissions = permission_set(&raw.permissions).map_err(|found| {
        let path = at("permissions");
        let located = found.into_iter().map(|problem| match problem {
            SetProblem::Empty => Problem::new(path.clone(), ProfileProblem::PermissionsEmpty),
            SetProblem::Entry { index, error } => Problem::new(
                format!("{path}[{index}]"),
                ProfileProblem::Permission(error),
            ),
            SetProblem::Levels { name } => {
                Problem::new(path.clone(), ProfileProblem::PermissionLevels { name })
            }
        });
        problems.extend(located);
    });
    let repositories = match raw.repositories {
        None => Ok(None),
        Some(entries) => repository_scope(&entries, &at("repositories"))
            .map(Some)
            .map_err(|found| problems.extend(found)),
    };
    let ttl = match raw.ttl.as_deref().map(Ttl::parse) {
        None => Ttl::default(),
        Some(Ok(ttl)) => ttl,
        Some(Err(error)) => {
            problems.push(Problem::new(at("ttl"), ProfileProblem::Ttl(error)));
            Ttl::default()
        }
    };
    let sources = match raw.sources {
        None => Ok(None),
        Some(entries) => sources(&entries, &at("sources"))
            .map(Some)
            .map_err(|found| problems.extend(found)),
    };
    let mut rules = Vec::new();
    for raw_rule in raw.rules {
        match rule(raw_rule, patterns) {
            Ok(rule) => rules.push(rule),
            Err(found) => problems.extend(found),
        }
    }
    match (permissions, repositories, sources) {
        (Ok(permissions), Ok(repositories), Ok(sources)) if problems.is_empty() => Ok(Profile {
            family,
            name: raw.name,
            rules,
            permissions,
            repositories,
            ttl,
            sources,
        }),
        _ => Err(problems),
    }
}

fn name_problem(family: Family, name: &str) -> Option<ProfileProblem> {
    if name.is_empty() {
        Some(ProfileProblem::NameEmpty)
    } else if name.len() > MAX_NAME_BYTES {
        Some(ProfileProblem::NameTooLong { len: name.len() })
    } else if !is_valid_name(name) {
        Some(ProfileProblem::NameCharacters)
    } else if family == Family::Pipeline && name == DEFAULT_PROFILE {
        Some(ProfileProblem::ReservedName)
    } else {
        None
    }
}

/// What is wrong with a `permissions` list.
enum SetProblem {
    Empty,
    Entry {
        index: usize,
        error: PermissionError,
    },
    Levels {
        name: &'static str,
    },
}

/// Parses `name:level` entries, adds `metadata:read`, sorts and deduplicates.
fn permission_set(entries: &[String]) -> Result<Vec<Permission>, Vec<SetProblem>> {
    if entries.is_empty() {
        return Err(vec![SetProblem::Empty]);
    }
    let mut permissions = vec![Permission::METADATA_READ];
    let mut problems = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match Permission::parse(entry) {
            Ok(permission) => permissions.push(permission),
            Err(error) => problems.push(SetProblem::Entry { index, error }),
        }
    }
    permissions.sort();
    permissions.dedup();
    let mut conflicts: Vec<&'static str> = permissions
        .windows(2)
        .filter_map(|pair| match pair {
            [a, b] if a.name() == b.name() => Some(a.name()),
            _ => None,
        })
        .collect();
    conflicts.dedup();
    problems.extend(
        conflicts
            .into_iter()
            .map(|name| SetProblem::Levels { name }),
    );
    if problems.is_empty() {
        Ok(permissions)
    } else {
        Err(problems)
    }
}

/// An organization profile's `repositories`.
fn repository_scope(entries: &[String], path: &str) -> Result<RepositoryScope, Vec<Problem>> {
    let literal = |entry: &str| match entry {
        ALL_REPOSITORIES | ALL_REPOSITORIES_ALIAS => Some(RepositoryScope::All),
        CALLER_SCOPED_REPOSITORY => Some(RepositoryScope::CallerScoped),
        _ => None,
    };
    match entries {
        [] => {
            return Err(vec![Problem::new(
                path.to_owned(),
                ProfileProblem::RepositoriesEmpty,
            )]);
        }
        [only] => {
            if let Some(scope) = literal(only) {
                return Ok(scope);
            }
        }
        _ => {}
    }
    let mut problems = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let problem = if literal(entry).is_some() {
            ProfileProblem::RepositoryLiteralNotAlone
        } else if entry.starts_with("{{") {
            ProfileProblem::RepositoryPlaceholder
        } else if !is_repository_name(entry) {
            ProfileProblem::RepositoryInvalid
        } else {
            continue;
        };
        problems.push(Problem::new(format!("{path}[{index}]"), problem));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut names = entries.to_vec();
    names.sort();
    names.dedup();
    Ok(RepositoryScope::Named(names))
}

/// A profile's `sources`: address ranges (CIDR notation, or a bare address), each checked.
fn sources(entries: &[String], path: &str) -> Result<CidrSet, Vec<Problem>> {
    if entries.is_empty() {
        return Err(vec![Problem::new(
            path.to_owned(),
            ProfileProblem::SourcesEmpty,
        )]);
    }
    let mut ranges = Vec::new();
    let mut problems = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match Cidr::parse(entry) {
            Ok(cidr) => ranges.push(cidr),
            Err(error) => problems.push(Problem::new(
                format!("{path}[{index}]"),
                ProfileProblem::Source(error),
            )),
        }
    }
    if problems.is_empty() {
        Ok(CidrSet::new(ranges))
    } else {
        Err(problems)
    }
}

/// A bare repository name: non-empty, at most 100 bytes, no `/`, whitespace or control characters.
pub fn is_repository_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_REPOSITORY_BYTES
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

fn rule(raw: RawRule, patterns: &mut Patterns) -> Result<Rule, Vec<Problem>> {
    let mut problems = Vec::new();
    if !is_known_claim(&raw.claim) {
        let path = format!("{}.claim", raw.path);
        problems.push(Problem::new(path, ProfileProblem::UnknownClaim));
    }
    let found = [
        raw.value.is_some(),
        raw.value_in.is_some(),
        raw.value_glob.is_some(),
        raw.value_pattern.is_some(),
    ];
    let found = found.iter().filter(|&&given| given).count();
    let matcher = match (raw.value, raw.value_in, raw.value_glob, raw.value_pattern) {
        (Some(value), None, None, None) => Ok(Matcher::Value(value)),
        (None, Some(values), None, None) => Ok(Matcher::ValueIn(values)),
        (None, None, Some(pattern), None) => Glob::new(&pattern)
            .map(Matcher::ValueGlob)
            .map_err(|error| ("valueGlob", ProfileProblem::Glob(error))),
        (None, None, None, Some(pattern)) => patterns
            .entry(pattern)
            .or_insert_with_key(|source| Pattern::new(source))
            .clone()
            .map(Matcher::ValuePattern)
            .map_err(|error| ("valuePattern", ProfileProblem::Pattern(error))),
        _ => Err(("", ProfileProblem::MatcherCount { found })),
    };
    let matcher = match matcher {
        Ok(matcher) => Some(matcher),
        Err((key, problem)) => {
            let path = match key {
                "" => raw.path.clone(),
                key => format!("{}.{key}", raw.path),
            };
            problems.push(Problem::new(path, problem));
            None
        }
    };
    match matcher.and_then(|matcher| Rule::new(&raw.claim, matcher)) {
        Some(rule) if problems.is_empty() => Ok(rule),
        _ => Err(problems),
    }
}
