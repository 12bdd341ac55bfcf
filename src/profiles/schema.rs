//! The profile file's shape, checked by hand over the parsed tree ([`Node`]): every key known,
//! every required key present, every value of the right JSON type. Any departure is a whole-file
//! problem naming its JSON path; the walk goes on past each one so that every problem is reported.
//!
//! The result is a [`RawDocument`]: the file's strings, in file order, with the path of each
//! profile and rule, for [`super::compile`] to validate profile by profile.
//!
//! A YAML file's problems also carry the line and column of what they are about (`at`, filled in
//! by [`SchemaError::locate`] from the reader's [`Positions`]); a JSON file's carry none.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;

use super::tree::{Node, Object};

use super::json::Path;
use super::permissions::PermissionError;
use super::ttl::TtlError;
use super::yaml::Position;

/// A whole-file problem. Each names the JSON path it is about and, in a YAML file, where that is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SchemaError {
    /// A key the schema does not have (`$.organisation`).
    UnknownKey { path: String, at: Option<Position> },
    /// A key given twice in one object.
    DuplicateKey { path: String, at: Option<Position> },
    /// A required key is absent.
    MissingKey { path: String, at: Option<Position> },
    /// A value of the wrong JSON type.
    WrongType {
        path: String,
        at: Option<Position>,
        expected: &'static str,
        found: &'static str,
    },
    /// `pipeline.defaults.permissions` is empty.
    DefaultPermissionsEmpty { path: String, at: Option<Position> },
    /// An entry of `pipeline.defaults.permissions` is not a permission.
    DefaultPermission {
        path: String,
        at: Option<Position>,
        error: PermissionError,
    },
    /// `pipeline.defaults.permissions` names one permission at two levels.
    DefaultPermissionLevels {
        path: String,
        at: Option<Position>,
        name: &'static str,
    },
    /// `pipeline.defaults.ttl` is not a ttl.
    DefaultTtl {
        path: String,
        at: Option<Position>,
        error: TtlError,
    },
}

impl SchemaError {
    /// The JSON path the problem is about.
    pub fn path(&self) -> &str {
        let (SchemaError::UnknownKey { path, .. }
        | SchemaError::DuplicateKey { path, .. }
        | SchemaError::MissingKey { path, .. }
        | SchemaError::WrongType { path, .. }
        | SchemaError::DefaultPermissionsEmpty { path, .. }
        | SchemaError::DefaultPermission { path, .. }
        | SchemaError::DefaultPermissionLevels { path, .. }
        | SchemaError::DefaultTtl { path, .. }) = self;
        path
    }

    /// Where in a YAML file the problem is; `None` for JSON.
    pub fn position(&self) -> Option<Position> {
        let (SchemaError::UnknownKey { at, .. }
        | SchemaError::DuplicateKey { at, .. }
        | SchemaError::MissingKey { at, .. }
        | SchemaError::WrongType { at, .. }
        | SchemaError::DefaultPermissionsEmpty { at, .. }
        | SchemaError::DefaultPermission { at, .. }
        | SchemaError::DefaultPermissionLevels { at, .. }
        | SchemaError::DefaultTtl { at, .. }) = self;
        *at
    }

    /// Sets the position from `positions` (by the path), unless one is known already.
    pub(crate) fn locate(&mut self, positions: &Positions) {
        let found = positions.of(self.path());
        let (SchemaError::UnknownKey { at, .. }
        | SchemaError::DuplicateKey { at, .. }
        | SchemaError::MissingKey { at, .. }
        | SchemaError::WrongType { at, .. }
        | SchemaError::DefaultPermissionsEmpty { at, .. }
        | SchemaError::DefaultPermission { at, .. }
        | SchemaError::DefaultPermissionLevels { at, .. }
        | SchemaError::DefaultTtl { at, .. }) = self;
        if at.is_none() {
            *at = found;
        }
    }
}

/// `$.organisation: unknown key`, or in a YAML file `$.organisation (line 1, column 1): unknown key`.
impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}: ", self.path(), At(self.position()))?;
        match self {
            SchemaError::UnknownKey { .. } => f.write_str("unknown key"),
            SchemaError::DuplicateKey { .. } => f.write_str("duplicate key"),
            SchemaError::MissingKey { .. } => f.write_str("missing required key"),
            SchemaError::WrongType {
                expected, found, ..
            } => write!(f, "expected {expected}, found {found}"),
            SchemaError::DefaultPermissionsEmpty { .. } => {
                f.write_str("empty (the default profile needs permissions)")
            }
            SchemaError::DefaultPermission { error, .. } => write!(f, "{error}"),
            SchemaError::DefaultPermissionLevels { name, .. } => {
                write!(f, "permission {name:?} given at more than one level")
            }
            SchemaError::DefaultTtl { error, .. } => write!(f, "{error}"),
        }
    }
}

/// ` (line 3, column 7)`, or nothing.
pub(crate) struct At(pub Option<Position>);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " ({at})"),
            None => Ok(()),
        }
    }
}

/// Where each path of a YAML document is (empty for JSON).
#[derive(Debug, Default)]
pub(crate) struct Positions(pub BTreeMap<String, Position>);

impl Positions {
    /// The position of `path`, or of its nearest ancestor the document has (a missing key is
    /// shown at the object that lacks it).
    pub(crate) fn of(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(&at) = self.0.get(path) {
                return Some(at);
            }
            path = parent(path)?;
        }
    }
}

/// `$.a.b[2]` → `$.a.b`, `$.a["x y"]` → `$.a`, `$` → `None`. Quoted keys are `{:?}`-escaped, so
/// `["` (a bracket then an unescaped quote) opens only a quoted step.
fn parent(path: &str) -> Option<&str> {
    if path.ends_with("\"]") {
        let open = path.rfind("[\"")?;
        return path.get(..open);
    }
    let cut = path.rfind(['.', '['])?;
    path.get(..cut)
}

impl std::error::Error for SchemaError {}

/// The file's content, shape-checked but not yet validated.
#[derive(Debug, Default)]
pub(crate) struct RawDocument {
    /// `pipeline.defaults.permissions` with its path, when given.
    pub default_permissions: Option<(String, Vec<String>)>,
    /// `pipeline.defaults.ttl` with its path, when given.
    pub default_ttl: Option<(String, String)>,
    pub pipeline: Vec<RawProfile>,
    pub organization: Vec<RawProfile>,
}

/// One profile as written.
#[derive(Debug)]
pub(crate) struct RawProfile {
    /// `$.pipeline.profiles[1]`
    pub path: String,
    pub name: String,
    pub rules: Vec<RawRule>,
    pub permissions: Vec<String>,
    /// `Some` on organization profiles only.
    pub repositories: Option<Vec<String>>,
    /// `ttl` as written, when given.
    pub ttl: Option<String>,
    /// `sources`, when given: the address ranges the profile admits requests from.
    pub sources: Option<Vec<String>>,
}

/// One match rule as written.
#[derive(Debug)]
pub(crate) struct RawRule {
    /// `$.organization.profiles[1].match[0]`
    pub path: String,
    pub claim: String,
    pub value: Option<String>,
    pub value_in: Option<Vec<String>>,
    pub value_glob: Option<String>,
    pub value_pattern: Option<String>,
}

/// Which family a profile list belongs to; decides whether `repositories` is allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Pipeline,
    Organization,
}

/// Walks a parsed document, pushing every shape problem to `problems`. The tree is consumed:
/// its strings move into the raw profiles instead of being copied (for a large file, copying and
/// then freeing every string was a quarter of the load).
pub(crate) fn walk(root: Node, problems: &mut Vec<SchemaError>) -> RawDocument {
    let mut walker = Walker { problems };
    let mut document = RawDocument::default();
    let path = Path::Root;
    let Some(mut root) = walker.object(root, &path, &["pipeline", "organization"]) else {
        return document;
    };
    if let Some(pipeline) = root.remove("pipeline") {
        let path = path.key("pipeline");
        if let Some(mut pipeline) = walker.object(pipeline, &path, &["defaults", "profiles"]) {
            if let Some(defaults) = pipeline.remove("defaults") {
                let path = path.key("defaults");
                if let Some(mut defaults) = walker.object(defaults, &path, &["permissions", "ttl"])
                {
                    let ttl_path = path.key("ttl");
                    let path = path.key("permissions");
                    document.default_permissions = walker
                        .required(&mut defaults, &path)
                        .and_then(|v| walker.strings(v, &path))
                        .map(|list| (path.render(), list));
                    document.default_ttl = defaults
                        .remove("ttl")
                        .and_then(|v| walker.string(v, &ttl_path))
                        .map(|ttl| (ttl_path.render(), ttl));
                }
            }
            document.pipeline = walker.profiles(&mut pipeline, &path, Section::Pipeline);
        }
    }
    if let Some(organization) = root.remove("organization") {
        let path = path.key("organization");
        if let Some(mut organization) = walker.object(organization, &path, &["profiles"]) {
            document.organization =
                walker.profiles(&mut organization, &path, Section::Organization);
        }
    }
    document
}

struct Walker<'p> {
    problems: &'p mut Vec<SchemaError>,
}

impl Walker<'_> {
    /// The optional `profiles` list of a section.
    fn profiles(&mut self, section: &mut Object, path: &Path, kind: Section) -> Vec<RawProfile> {
        let Some(list) = section.remove("profiles") else {
            return Vec::new();
        };
        let path = path.key("profiles");
        let Some(list) = self.array(list, &path) else {
            return Vec::new();
        };
        let mut profiles = Vec::with_capacity(list.len());
        for (i, item) in list.into_iter().enumerate() {
            profiles.extend(self.profile(item, &path.index(i), kind));
        }
        profiles
    }

    fn profile(&mut self, value: Node, path: &Path, kind: Section) -> Option<RawProfile> {
        let keys: &[&str] = match kind {
            Section::Pipeline => &["name", "match", "permissions", "ttl", "sources"],
            Section::Organization => &[
                "name",
                "match",
                "repositories",
                "permissions",
                "ttl",
                "sources",
            ],
        };
        let mut object = self.object(value, path, keys)?;
        let name = self.required_string(&mut object, &path.key("name"));
        let rules = self.rules(&mut object, path);
        let permissions = self.required_strings(&mut object, &path.key("permissions"));
        let sources = self.optional(&mut object, path, "sources", Self::strings);
        let repositories = match kind {
            Section::Pipeline => Some(None),
            Section::Organization => self
                .required_strings(&mut object, &path.key("repositories"))
                .map(Some),
        };
        let ttl = self.optional(&mut object, path, "ttl", Self::string);
        Some(RawProfile {
            path: path.render(),
            name: name?,
            rules: rules?,
            permissions: permissions?,
            repositories: repositories?,
            ttl: ttl?,
            sources: sources?,
        })
    }

    /// The optional `match` list of a profile; `None` when it or any rule is malformed.
    fn rules(&mut self, profile: &mut Object, path: &Path) -> Option<Vec<RawRule>> {
        let Some(list) = profile.remove("match") else {
            return Some(Vec::new());
        };
        self.each(list, &path.key("match"), Self::rule)
    }

    fn rule(&mut self, value: Node, path: &Path) -> Option<RawRule> {
        let keys = ["claim", "value", "valueIn", "valueGlob", "valuePattern"];
        let mut object = self.object(value, path, &keys)?;
        let claim = self.required_string(&mut object, &path.key("claim"));
        let value = self.optional(&mut object, path, "value", Self::string);
        let value_in = self.optional(&mut object, path, "valueIn", Self::strings);
        let value_glob = self.optional(&mut object, path, "valueGlob", Self::string);
        let value_pattern = self.optional(&mut object, path, "valuePattern", Self::string);
        Some(RawRule {
            path: path.render(),
            claim: claim?,
            value: value?,
            value_in: value_in?,
            value_glob: value_glob?,
            value_pattern: value_pattern?,
        })
    }

    /// `Some(None)` when `key` is absent, `Some(Some(_))` when well-typed, `None` when not.
    fn optional<T>(
        &mut self,
        object: &mut Object,
        path: &Path,
        key: &str,
        read: fn(&mut Self, Node, &Path) -> Option<T>,
    ) -> Option<Option<T>> {
        match object.remove(key) {
            None => Some(None),
            Some(value) => read(self, value, &path.key(key)).map(Some),
        }
    }

    fn required_string(&mut self, object: &mut Object, path: &Path) -> Option<String> {
        self.required(object, path)
            .and_then(|value| self.string(value, path))
    }

    fn required_strings(&mut self, object: &mut Object, path: &Path) -> Option<Vec<String>> {
        self.required(object, path)
            .and_then(|value| self.strings(value, path))
    }

    /// The value at `path`, whose last step is a key of `object`, taken out of it.
    fn required(&mut self, object: &mut Object, path: &Path) -> Option<Node> {
        let Path::Key(_, key) = path else {
            return None;
        };
        let value = object.remove(key);
        if value.is_none() {
            self.problems.push(SchemaError::MissingKey {
                path: path.render(),
                at: None,
            });
        }
        value
    }

    /// An object whose keys are all in `keys`; unknown keys are reported, the object still returned.
    fn object(&mut self, value: Node, path: &Path, keys: &[&str]) -> Option<Object> {
        let Node::Object(object) = value else {
            self.wrong_type(&value, path, "an object");
            return None;
        };
        // Reported in key order (as a sorted map would list them), not document order.
        let mut unknown: Vec<&str> = object.keys().filter(|key| !keys.contains(key)).collect();
        unknown.sort_unstable();
        for key in unknown {
            self.problems.push(SchemaError::UnknownKey {
                path: path.key(key).render(),
                at: None,
            });
        }
        Some(object)
    }

    fn array(&mut self, value: Node, path: &Path) -> Option<Vec<Node>> {
        let Node::Array(items) = value else {
            self.wrong_type(&value, path, "an array");
            return None;
        };
        Some(items)
    }

    fn string(&mut self, value: Node, path: &Path) -> Option<String> {
        let Node::String(s) = value else {
            self.wrong_type(&value, path, "a string");
            return None;
        };
        Some(s)
    }

    /// An array of strings; every non-string element is reported.
    fn strings(&mut self, value: Node, path: &Path) -> Option<Vec<String>> {
        self.each(value, path, Self::string)
    }

    /// Every item of an array read with `read` (each at its own path, every problem recorded);
    /// `None` when it is no array or any item is malformed.
    fn each<T>(
        &mut self,
        value: Node,
        path: &Path,
        mut read: impl FnMut(&mut Self, Node, &Path) -> Option<T>,
    ) -> Option<Vec<T>> {
        let items = self.array(value, path)?;
        let read: Vec<Option<T>> = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| read(self, item, &path.index(i)))
            .collect();
        read.into_iter().collect()
    }

    fn wrong_type(&mut self, value: &Node, path: &Path, expected: &'static str) {
        let found = match value {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "a string",
            Node::Array(_) => "an array",
            Node::Object(_) => "an object",
        };
        self.problems.push(SchemaError::WrongType {
            path: path.render(),
            at: None,
            expected,
            found,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(value: serde_json::Value) -> Vec<String> {
        let mut problems = Vec::new();
        walk(Node::from(value), &mut problems);
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let got = problems(json!({
            "pipeline": {
                "defaults": {},
                "profiles": [
                    {"name": 1, "permissions": "contents:read"},
                    {"name": "a", "permissions": ["x", 2], "match": [{"value": "v", "claim": null}]}
                ]
            },
            "organization": {"profiles": {}}
        }));
        assert_eq!(
            got,
            [
                "$.pipeline.defaults.permissions: missing required key",
                "$.pipeline.profiles[0].name: expected a string, found a number",
                "$.pipeline.profiles[0].permissions: expected an array, found a string",
                "$.pipeline.profiles[1].match[0].claim: expected a string, found null",
                "$.pipeline.profiles[1].permissions[1]: expected a string, found a number",
                "$.organization.profiles: expected an array, found an object",
            ]
        );
    }

    #[test]
    fn walks_a_good_document_in_file_order() {
        let mut problems = Vec::new();
        let document = walk(
            Node::from(json!({"organization": {"profiles": [
                {"name": "b", "repositories": ["r"], "permissions": ["contents:read"],
                 "match": [{"claim": "build_branch", "valueIn": ["main"]}]},
                {"name": "a", "repositories": [], "permissions": []}
            ]}})),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(document.default_permissions.is_none() && document.pipeline.is_empty());
        let names: Vec<&str> = document
            .organization
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["b", "a"]);
        let rule = &document.organization[0].rules[0];
        assert_eq!(rule.path, "$.organization.profiles[0].match[0]");
        assert_eq!(rule.value_in.as_deref(), Some(&["main".to_owned()][..]));
        assert!(rule.value.is_none() && rule.value_glob.is_none());
    }

    #[test]
    fn positions_fall_back_to_the_nearest_ancestor() {
        let at = |line| Position { line, column: 1 };
        let positions = Positions(
            [
                ("$", at(1)),
                ("$.a", at(2)),
                ("$.a[0]", at(3)),
                (r#"$.a[0]["x.y"]"#, at(4)),
            ]
            .into_iter()
            .map(|(path, at)| (path.to_owned(), at))
            .collect(),
        );
        let rows = [
            ("$.a[0].name", 3),
            (r#"$.a[0]["x.y"]"#, 4),
            (r#"$.a[0]["x.y"].z"#, 4),
            (r#"$.a[1]["q\"[z"]"#, 2),
            ("$.b", 1),
            ("$", 1),
        ];
        for (path, line) in rows {
            assert_eq!(positions.of(path), Some(at(line)), "{path}");
        }
        assert_eq!(Positions::default().of("$.a"), None);
        let mut error = SchemaError::MissingKey {
            path: "$.a[0].permissions".into(),
            at: None,
        };
        error.locate(&positions);
        assert_eq!(
            error.to_string(),
            "$.a[0].permissions (line 3, column 1): missing required key"
        );
    }

    #[test]
    fn root_must_be_an_object() {
        assert_eq!(
            problems(json!([])),
            ["$: expected an object, found an array"]
        );
    }
}
