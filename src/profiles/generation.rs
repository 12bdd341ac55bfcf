//! A generation: one loaded profile file, compiled, with its digest, its usable profiles and its
//! quarantined names. A failed load yields a [`FileError`] and the caller keeps the previous
//! generation.
#![forbid(unsafe_code)]

use std::fmt;

use ring::digest::{SHA256, digest};

use super::compile::{Compiled, Quarantined, builtin_default, compile_family, default_profile};
use super::json;
use super::profile::{DEFAULT_PROFILE, Family, Profile, ProfileRef};
use super::schema::{self, Positions, RawDocument, SchemaError};
use super::tree::Node;
use super::yaml::{self, YamlError};

/// `PROFILES_MAX_BYTES`'s default: the largest profile file accepted, in bytes (8 MiB, about
/// 80 000 profiles with rules; loading is linear in the file's size).
pub const DEFAULT_MAX_FILE_BYTES: usize = 8 * 1024 * 1024;

/// The document [`Generation::builtin`] stands for: a file holding exactly this has the built-in
/// generation's meaning and digest.
pub const BUILTIN_DOCUMENT: &[u8] = b"{}";

/// Why a profile file was rejected as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileError {
    /// The file is over the size limit (`PROFILES_MAX_BYTES`, [`DEFAULT_MAX_FILE_BYTES`]).
    TooLarge { len: usize, max: usize },
    /// Not JSON (serde_json's message, with line and column).
    Syntax { message: String },
    /// Not YAML of the subset profile files use: the rule broken, with line and column.
    Yaml(YamlError),
    /// JSON or YAML, but not a profile file: every problem, each with its JSON path (and, in
    /// YAML, line and column).
    Invalid { problems: Vec<SchemaError> },
}

impl FileError {
    /// One line per problem (paths first where there is one), for `check` and the load log.
    pub fn problems(&self) -> Vec<String> {
        match self {
            FileError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::TooLarge { len, max } => {
                write!(f, "profile file is {len} bytes, over the {max}-byte limit")
            }
            FileError::Syntax { message } => write!(f, "invalid json: {message}"),
            FileError::Yaml(error) => write!(f, "invalid yaml: {error}"),
            FileError::Invalid { problems } => {
                let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
                write!(f, "invalid profile file: {}", lines.join("; "))
            }
        }
    }
}

impl std::error::Error for FileError {}

/// The answer to a profile lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A usable profile.
    Found(&'a Profile),
    /// The name exists but was quarantined; the reason, for the audit record (404 "profile unavailable").
    Unavailable(&'a str),
    /// No profile of that name in that family (404 "profile not found").
    NotFound,
}

/// One loaded profile file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    digest: String,
    default: Profile,
    pipeline: Compiled,
    organization: Compiled,
}

impl Generation {
    /// The generation without a file: only the pipeline `default` profile (`contents:read`,
    /// `metadata:read`). Its digest is that of [`BUILTIN_DOCUMENT`], `{}`, the file that means the
    /// same, so the digest always names the meaning and never collides with a real file's.
    pub fn builtin() -> Generation {
        Generation::assemble(
            BUILTIN_DOCUMENT,
            builtin_default(),
            RawDocument::default(),
            &Positions::default(),
        )
    }

    /// Parses and compiles a profile file: JSON when its first byte other than whitespace is
    /// `{`, else YAML (the same schema for both). Whole-file problems (size, syntax, schema,
    /// invalid default permissions) fail it with every problem listed; per-profile problems only
    /// quarantine that profile (see [`Generation::quarantined`]).
    /// The size limit is [`DEFAULT_MAX_FILE_BYTES`] (see [`Generation::parse_within`]).
    pub fn parse(bytes: &[u8]) -> Result<Generation, FileError> {
        Generation::parse_within(bytes, DEFAULT_MAX_FILE_BYTES)
    }

    /// [`Generation::parse`] with a file size limit of `max_bytes`.
    pub fn parse_within(bytes: &[u8], max_bytes: usize) -> Result<Generation, FileError> {
        Generation::parse_reporting(bytes, max_bytes).map_err(|(error, _)| error)
    }

    /// [`Generation::parse`], and when the file fails as a whole, also every quarantine problem
    /// of the profiles whose shape could be read (for `check`, which reports all at once).
    pub(crate) fn parse_reporting(
        bytes: &[u8],
        max_bytes: usize,
    ) -> Result<Generation, (FileError, Vec<Quarantined>)> {
        let alone = |error| (error, Vec::new());
        if bytes.len() > max_bytes {
            return Err(alone(FileError::TooLarge {
                len: bytes.len(),
                max: max_bytes,
            }));
        }
        let (value, mut problems, positions) = read(bytes).map_err(alone)?;
        let mut raw = schema::walk(value, &mut problems);
        let default = default_profile(raw.default_permissions.take(), raw.default_ttl.take());
        match default {
            Ok(default) if problems.is_empty() => {
                Ok(Generation::assemble(bytes, default, raw, &positions))
            }
            default => {
                problems.extend(default.err().unwrap_or_default());
                for problem in &mut problems {
                    problem.locate(&positions);
                }
                let quarantined = compile_family(Family::Pipeline, raw.pipeline, &positions)
                    .quarantined
                    .into_values()
                    .chain(
                        compile_family(Family::Organization, raw.organization, &positions)
                            .quarantined
                            .into_values(),
                    )
                    .collect();
                Err((FileError::Invalid { problems }, quarantined))
            }
        }
    }

    fn assemble(
        bytes: &[u8],
        default: Profile,
        raw: RawDocument,
        positions: &Positions,
    ) -> Generation {
        Generation {
            digest: hex(digest(&SHA256, bytes).as_ref()),
            default,
            pipeline: compile_family(Family::Pipeline, raw.pipeline, positions),
            organization: compile_family(Family::Organization, raw.organization, positions),
        }
    }

    /// Hex SHA-256 of the file bytes (lowercase, 64 characters).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// A pipeline profile; `default` is the built-in default profile.
    pub fn pipeline(&self, name: &str) -> Lookup<'_> {
        if name == DEFAULT_PROFILE {
            return Lookup::Found(&self.default);
        }
        find(&self.pipeline, name)
    }

    /// An organization profile.
    pub fn organization(&self, name: &str) -> Lookup<'_> {
        find(&self.organization, name)
    }

    /// The profile a reference names.
    pub fn lookup(&self, reference: &ProfileRef) -> Lookup<'_> {
        match reference.family() {
            Family::Pipeline => self.pipeline(reference.name()),
            Family::Organization => self.organization(reference.name()),
        }
    }

    /// Every usable profile: the pipeline default, then pipeline profiles, then organization
    /// profiles, each family by name.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        std::iter::once(&self.default)
            .chain(self.pipeline.profiles.values())
            .chain(self.organization.profiles.values())
    }

    /// Every quarantined name (pipeline family first, each by name), to log once per load.
    pub fn quarantined(&self) -> impl Iterator<Item = &Quarantined> {
        self.pipeline
            .quarantined
            .values()
            .chain(self.organization.quarantined.values())
    }
}

/// Whether the file is JSON: its first byte other than whitespace is `{`.
pub fn is_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// The file as a tree, its duplicate keys as problems, and (YAML) where each path is.
fn read(bytes: &[u8]) -> Result<(Node, Vec<SchemaError>, Positions), FileError> {
    if is_json(bytes) {
        let mut duplicates = Vec::new();
        let value = json::parse(bytes, &mut duplicates).map_err(|error| FileError::Syntax {
            message: error.to_string(),
        })?;
        let problems = duplicates
            .into_iter()
            .map(|path| SchemaError::DuplicateKey { path, at: None })
            .collect();
        return Ok((value, problems, Positions::default()));
    }
    let (tree, document) = yaml::parse_tree(bytes).map_err(FileError::Yaml)?;
    let problems = document
        .duplicates
        .into_iter()
        .map(|(path, at)| SchemaError::DuplicateKey { path, at: Some(at) })
        .collect();
    Ok((tree, problems, Positions(document.positions)))
}

fn find<'a>(family: &'a Compiled, name: &str) -> Lookup<'a> {
    if let Some(profile) = family.profiles.get(name) {
        Lookup::Found(profile)
    } else if let Some(quarantined) = family.quarantined.get(name) {
        Lookup::Unavailable(quarantined.reason())
    } else {
        Lookup::NotFound
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
