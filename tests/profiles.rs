//! Profiles end to end: the example file of the README, whole-file failures with
//! their JSON paths, each quarantine reason, rules through real files, profile references, and
//! the `check` / `explain` tools' output.
#![forbid(unsafe_code)]

use kitebridge::{
    DEFAULT_PROFILES_MAX_BYTES as MAX_FILE_BYTES, Family, FileError, Generation, Lookup, Profile,
    ProfileRef, RefError, RepositoryScope, check_profile_file as check, explain_profile as explain,
    parse_profile_ref, parse_qualified_profile_ref,
};
use serde_json::{Map, Value, json};

const EXAMPLE_DIGEST: &str = "7e35a77a331adff64f24b63333dc57859bff0be4b6ef46792479aa121f02ae3c";
const EMPTY_DOCUMENT_DIGEST: &str =
    "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn example_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/profiles/example.json"
    ))
    .unwrap()
}

fn example_value() -> Value {
    serde_json::from_slice(&example_bytes()).unwrap()
}

fn example() -> Generation {
    Generation::parse(&example_bytes()).unwrap()
}

fn parse(document: &Value) -> Result<Generation, FileError> {
    Generation::parse(document.to_string().as_bytes())
}

/// The problems of a file that must fail as a whole.
fn file_problems(text: &str) -> Vec<String> {
    Generation::parse(text.as_bytes()).unwrap_err().problems()
}

fn claims(value: Value) -> Map<String, Value> {
    let Value::Object(map) = value else {
        panic!("claims must be an object")
    };
    map
}

fn found(lookup: Lookup<'_>) -> &Profile {
    match lookup {
        Lookup::Found(profile) => profile,
        other => panic!("expected a profile, got {other:?}"),
    }
}

fn permissions(profile: &Profile) -> Vec<String> {
    profile
        .permissions()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

// ---------------------------------------------------------------------------------------------
// The example file

#[test]
fn example_parses_with_all_six_profiles_available() {
    let generation = example();
    assert_eq!(generation.digest(), EXAMPLE_DIGEST);
    assert_eq!(generation.quarantined().count(), 0);

    let default = found(generation.pipeline("default"));
    assert_eq!(default.to_string(), "pipeline:default");
    assert_eq!(permissions(default), ["contents:read", "metadata:read"]);
    let commenter = found(generation.pipeline("pr-commenter"));
    assert_eq!(
        permissions(commenter),
        ["contents:read", "metadata:read", "pull_requests:write"]
    );
    assert!(commenter.rules().is_empty() && commenter.repository_scope().is_none());
    let release = found(generation.pipeline("release"));
    assert_eq!(permissions(release), ["contents:write", "metadata:read"]);
    assert_eq!(release.rules().len(), 1);

    let plugins = found(generation.organization("buildkite-plugins"));
    assert_eq!(
        plugins.repository_scope(),
        Some(&RepositoryScope::Named(vec![
            "private-plugin-a".into(),
            "private-plugin-b".into()
        ]))
    );
    let deploy = found(generation.organization("deploy"));
    assert_eq!(deploy.to_string(), "org:deploy");
    assert_eq!(deploy.family(), Family::Organization);
    assert_eq!(
        permissions(deploy),
        ["contents:write", "deployments:write", "metadata:read"]
    );
    assert_eq!(
        deploy.repository_scope(),
        Some(&RepositoryScope::Named(vec!["infrastructure".into()]))
    );
    let packages = found(generation.organization("package-read"));
    assert_eq!(packages.repository_scope(), Some(&RepositoryScope::All));
    assert_eq!(permissions(packages), ["metadata:read", "packages:read"]);
    let any = found(generation.organization("any-one-repo"));
    assert_eq!(any.repository_scope(), Some(&RepositoryScope::CallerScoped));

    assert_eq!(
        generation.profiles().count(),
        7,
        "six from the file plus pipeline:default"
    );
    assert_eq!(
        generation.organization("release"),
        Lookup::NotFound,
        "families are separate"
    );
    assert_eq!(generation.pipeline("deploy"), Lookup::NotFound);
    assert_eq!(generation.organization("default"), Lookup::NotFound);
}

#[test]
fn example_rules_admit_and_deny() {
    let generation = example();
    let deploy = found(generation.organization("deploy"));
    let admitted = deploy.evaluate(&claims(
        json!({"pipeline_slug": "web-prod", "build_branch": "main"}),
    ));
    assert!(admitted.admitted);
    let matched: Vec<(&str, &str)> = admitted
        .matches
        .iter()
        .map(|m| (m.claim.as_str(), m.value.as_str()))
        .collect();
    assert_eq!(
        matched,
        [("pipeline_slug", "web-prod"), ("build_branch", "main")]
    );

    let denied = deploy.evaluate(&claims(
        json!({"pipeline_slug": "web-prod", "build_branch": "dev"}),
    ));
    assert!(!denied.admitted);
    assert_eq!(denied.failures.len(), 1);
    assert_eq!(denied.failures[0].rule, r#"value "main""#);
    assert_eq!(denied.failures[0].value.as_deref(), Some("dev"));
    assert_eq!(
        denied.failures[0].to_string(),
        r#"build_branch "dev" does not match value "main""#
    );
    assert_eq!(
        denied.denial_reason().as_deref(),
        Some(r#"build_branch "dev" does not match value "main""#)
    );

    let open = found(generation.pipeline("pr-commenter")).evaluate(&claims(json!({})));
    assert!(open.admitted && open.matches.is_empty() && open.failures.is_empty());
}

#[test]
fn builtin_generation_is_the_empty_document() {
    let builtin = Generation::builtin();
    assert_eq!(builtin.digest(), EMPTY_DOCUMENT_DIGEST);
    assert_eq!(Generation::parse(b"{}").unwrap(), builtin);
    assert_eq!(
        permissions(found(builtin.pipeline("default"))),
        ["contents:read", "metadata:read"]
    );
    assert_eq!(builtin.profiles().count(), 1);
    assert_eq!(builtin.pipeline("release"), Lookup::NotFound);
    assert_eq!(
        found(builtin.lookup(&ProfileRef::pipeline_default())).name(),
        "default"
    );
}

#[test]
fn both_sections_are_optional_and_defaults_can_change() {
    let only_org = parse(&json!({"organization": {"profiles": []}})).unwrap();
    assert_eq!(
        permissions(found(only_org.pipeline("default"))),
        ["contents:read", "metadata:read"]
    );
    let custom = parse(
        &json!({"pipeline": {"defaults": {"permissions": ["contents:write", "metadata:read"]}}}),
    );
    assert_eq!(
        permissions(found(custom.unwrap().pipeline("default"))),
        ["contents:write", "metadata:read"]
    );
}

#[test]
fn digest_follows_the_bytes() {
    let compact = example_value().to_string();
    let generation = Generation::parse(compact.as_bytes()).unwrap();
    assert_ne!(
        generation.digest(),
        EXAMPLE_DIGEST,
        "same meaning, other bytes, other digest"
    );
    assert_eq!(generation.digest().len(), 64);
    assert!(
        generation
            .digest()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

// ---------------------------------------------------------------------------------------------
// Whole-file failures

#[test]
fn unknown_key_organisation() {
    assert_eq!(
        file_problems(r#"{"organisation": {"profiles": []}}"#),
        ["$.organisation: unknown key"]
    );
}

#[test]
fn unknown_key_misspelled_value_pattern() {
    let text = r#"{"pipeline": {"profiles": [
        {"name": "a", "permissions": ["contents:read"]},
        {"name": "b", "permissions": ["contents:read"],
         "match": [{"claim": "build_branch", "valuePatern": "^main$"}]}]}}"#;
    assert_eq!(
        file_problems(text),
        ["$.pipeline.profiles[1].match[0].valuePatern: unknown key"]
    );
}

#[test]
fn unknown_key_repositories_on_a_pipeline_profile() {
    let text = r#"{"pipeline": {"profiles": [
        {"name": "a", "permissions": ["contents:read"], "repositories": ["x"]}]}}"#;
    assert_eq!(
        file_problems(text),
        ["$.pipeline.profiles[0].repositories: unknown key"]
    );
}

#[test]
fn unknown_key_organization_defaults() {
    let text =
        r#"{"organization": {"defaults": {"permissions": ["contents:read"]}, "profiles": []}}"#;
    assert_eq!(
        file_problems(text),
        ["$.organization.defaults: unknown key"]
    );
}

#[test]
fn unknown_keys_elsewhere_name_their_paths() {
    let rows = [
        (
            r#"{"pipeline": {"default": {}}}"#,
            "$.pipeline.default: unknown key",
        ),
        (
            r#"{"pipeline": {"defaults": {"permissions": ["contents:read"], "x": 1}}}"#,
            "$.pipeline.defaults.x: unknown key",
        ),
        (
            r#"{"organization": {"profiles": [{"name": "a", "repositories": ["r"],
            "permissions": ["contents:read"], "matches": []}]}}"#,
            "$.organization.profiles[0].matches: unknown key",
        ),
        (r#"{"a b": 1}"#, r#"$["a b"]: unknown key"#),
    ];
    for (text, want) in rows {
        assert_eq!(file_problems(text), [want], "{text}");
    }
}

#[test]
fn wrong_types_and_missing_keys_fail_the_whole_file() {
    let rows = [
        // Not `{` first, so read as YAML: the problem also gives the line and column.
        (
            "[]",
            "$ (line 1, column 1): expected an object, found an array",
        ),
        (
            r#"{"organization": null}"#,
            "$.organization: expected an object, found null",
        ),
        (
            r#"{"pipeline": {"profiles": {}}}"#,
            "$.pipeline.profiles: expected an array, found an object",
        ),
        (
            r#"{"pipeline": {"profiles": [{"name": 7, "permissions": []}]}}"#,
            "$.pipeline.profiles[0].name: expected a string, found a number",
        ),
        (
            r#"{"pipeline": {"profiles": [{"name": "a"}]}}"#,
            "$.pipeline.profiles[0].permissions: missing required key",
        ),
        (
            r#"{"organization": {"profiles": [{"name": "a", "permissions": ["contents:read"]}]}}"#,
            "$.organization.profiles[0].repositories: missing required key",
        ),
        (
            r#"{"pipeline": {"profiles": [{"name": "a", "permissions": ["contents:read"],
            "match": [{"value": "main"}]}]}}"#,
            "$.pipeline.profiles[0].match[0].claim: missing required key",
        ),
        (
            r#"{"pipeline": {"profiles": [{"name": "a", "permissions": ["contents:read"],
            "match": [{"claim": "build_branch", "valueIn": "main"}]}]}}"#,
            "$.pipeline.profiles[0].match[0].valueIn: expected an array, found a string",
        ),
        (
            r#"{"pipeline": {"profiles": [{"name": "a", "permissions": ["contents:read", true]}]}}"#,
            "$.pipeline.profiles[0].permissions[1]: expected a string, found a boolean",
        ),
        (
            r#"{"pipeline": {"defaults": {}}}"#,
            "$.pipeline.defaults.permissions: missing required key",
        ),
    ];
    for (text, want) in rows {
        assert_eq!(file_problems(text), [want], "{text}");
    }
}

#[test]
fn every_whole_file_problem_is_reported_at_once() {
    let text = r#"{
        "organisation": {},
        "pipeline": {
            "defaults": {"permissions": ["nope:read"]},
            "profiles": [
                {"name": "a", "name": "b", "permissions": ["contents:read"]},
                {"name": "c", "permissions": ["contents:read"], "match": [{"claim": "x", "valueRegex": "y"}]}
            ]
        }
    }"#;
    assert_eq!(
        file_problems(text),
        [
            "$.pipeline.profiles[0].name: duplicate key",
            "$.organisation: unknown key",
            "$.pipeline.profiles[1].match[0].valueRegex: unknown key",
            "$.pipeline.defaults.permissions[0]: unknown permission \"nope\"",
        ]
    );
}

#[test]
fn invalid_default_permissions_fail_the_whole_file() {
    let rows = [
        (
            json!([]),
            "$.pipeline.defaults.permissions: empty (the default profile needs permissions)",
        ),
        (
            json!(["contents"]),
            "$.pipeline.defaults.permissions[0]: \"contents\" is not name:level",
        ),
        (
            json!(["contents:read", "nope:read"]),
            "$.pipeline.defaults.permissions[1]: unknown permission \"nope\"",
        ),
        (
            json!(["workflows:read"]),
            "$.pipeline.defaults.permissions[0]: permission \"workflows\" has no level \"read\"",
        ),
        (
            json!(["contents:read", "contents:write"]),
            "$.pipeline.defaults.permissions: permission \"contents\" given at more than one level",
        ),
    ];
    for (defaults, want) in rows {
        let document = json!({"pipeline": {
            "defaults": {"permissions": defaults},
            "profiles": [{"name": "fine", "permissions": ["contents:read"]}]
        }});
        assert_eq!(
            parse(&document).unwrap_err().problems(),
            [want],
            "{defaults}"
        );
    }
}

#[test]
fn syntax_errors_fail_the_whole_file() {
    let error = Generation::parse(b"{\"pipeline\": ").unwrap_err();
    assert!(matches!(error, FileError::Syntax { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "invalid json: EOF while parsing a value at line 1 column 13"
    );
    assert!(matches!(
        Generation::parse(b"{} {}"),
        Err(FileError::Syntax { .. })
    ));
    // Not `{` first: read as YAML, which refuses them.
    assert!(matches!(
        Generation::parse(b"\xff"),
        Err(FileError::Yaml(_))
    ));
    assert!(matches!(Generation::parse(b""), Err(FileError::Yaml(_))));
}

#[test]
fn size_cap_is_eight_mebibytes_by_default_and_configurable() {
    let mut at_limit = b"{}".to_vec();
    at_limit.resize(MAX_FILE_BYTES, b' ');
    assert!(Generation::parse(&at_limit).is_ok());
    at_limit.push(b' ');
    let error = Generation::parse(&at_limit).unwrap_err();
    assert_eq!(
        error,
        FileError::TooLarge {
            len: MAX_FILE_BYTES + 1,
            max: MAX_FILE_BYTES
        }
    );
    assert_eq!(
        error.to_string(),
        "profile file is 8388609 bytes, over the 8388608-byte limit"
    );
    // PROFILES_MAX_BYTES: the limit given.
    assert!(Generation::parse_within(b"{}  ", 4).is_ok());
    assert_eq!(
        Generation::parse_within(b"{}   ", 4),
        Err(FileError::TooLarge { len: 5, max: 4 })
    );
}

// ---------------------------------------------------------------------------------------------
// Quarantine: one bad profile, the others stay available

struct Row {
    family: Family,
    profile: Value,
    name: &'static str,
    reason: &'static str,
}

fn pipeline_row(profile: Value, name: &'static str, reason: &'static str) -> Row {
    Row {
        family: Family::Pipeline,
        profile,
        name,
        reason,
    }
}

fn org_row(profile: Value, name: &'static str, reason: &'static str) -> Row {
    Row {
        family: Family::Organization,
        profile,
        name,
        reason,
    }
}

fn with_bad_profile(row: &Row) -> Generation {
    let good_pipeline = json!({"name": "good", "permissions": ["contents:read"]});
    let good_org = json!({"name": "good", "repositories": ["r"], "permissions": ["contents:read"]});
    let (pipeline, organization) = match row.family {
        Family::Pipeline => (vec![good_pipeline, row.profile.clone()], vec![good_org]),
        Family::Organization => (vec![good_pipeline], vec![good_org, row.profile.clone()]),
    };
    parse(&json!({"pipeline": {"profiles": pipeline}, "organization": {"profiles": organization}}))
        .unwrap()
}

fn quarantine_rows() -> Vec<Row> {
    let long_name: &'static str = "n".repeat(65).leak();
    let long_repo: &'static str = "r".repeat(101).leak();
    let perms = |p: Value| json!({"name": "bad", "permissions": p});
    let repos =
        |r: Value| json!({"name": "bad", "repositories": r, "permissions": ["contents:read"]});
    let rule = |m: Value| json!({"name": "bad", "permissions": ["contents:read"], "match": [m]});
    vec![
        pipeline_row(
            json!({"name": "", "permissions": ["contents:read"]}),
            "",
            "$.pipeline.profiles[1].name: name is empty",
        ),
        pipeline_row(
            json!({"name": long_name, "permissions": ["contents:read"]}),
            long_name,
            "$.pipeline.profiles[1].name: name is 65 bytes, over 64",
        ),
        pipeline_row(
            json!({"name": "has space", "permissions": ["contents:read"]}),
            "has space",
            "$.pipeline.profiles[1].name: name has characters outside [A-Za-z0-9_-]",
        ),
        org_row(
            json!({"name": "dotted.name", "repositories": ["r"], "permissions": ["contents:read"]}),
            "dotted.name",
            "$.organization.profiles[1].name: name has characters outside [A-Za-z0-9_-]",
        ),
        org_row(
            json!({"name": "déjà", "repositories": ["r"], "permissions": ["contents:read"]}),
            "déjà",
            "$.organization.profiles[1].name: name has characters outside [A-Za-z0-9_-]",
        ),
        pipeline_row(
            perms(json!([])),
            "bad",
            "$.pipeline.profiles[1].permissions: no permissions",
        ),
        pipeline_row(
            perms(json!(["contents"])),
            "bad",
            "$.pipeline.profiles[1].permissions[0]: \"contents\" is not name:level",
        ),
        pipeline_row(
            perms(json!(["contents:read", "pull-requests:write"])),
            "bad",
            "$.pipeline.profiles[1].permissions[1]: unknown permission \"pull-requests\"",
        ),
        org_row(
            json!({"name": "bad", "repositories": ["r"], "permissions": ["contents:admin"]}),
            "bad",
            "$.organization.profiles[1].permissions[0]: permission \"contents\" has no level \"admin\"",
        ),
        pipeline_row(
            perms(json!(["contents:read", "contents:write"])),
            "bad",
            "$.pipeline.profiles[1].permissions: permission \"contents\" given at more than one level",
        ),
        pipeline_row(
            perms(json!(["metadata:write"])),
            "bad",
            "$.pipeline.profiles[1].permissions: permission \"metadata\" given at more than one level \
             (metadata:read is always included)",
        ),
        org_row(
            repos(json!([])),
            "bad",
            "$.organization.profiles[1].repositories: no repositories",
        ),
        org_row(
            repos(json!(["acme/widgets"])),
            "bad",
            "$.organization.profiles[1].repositories[0]: not a repository name (empty, '/', whitespace or \
             control characters, or over 100 bytes)",
        ),
        org_row(
            repos(json!(["ok", "two words"])),
            "bad",
            "$.organization.profiles[1].repositories[1]: not a repository name (empty, '/', whitespace or \
             control characters, or over 100 bytes)",
        ),
        org_row(
            repos(json!([long_repo])),
            "bad",
            "$.organization.profiles[1].repositories[0]: not a repository name (empty, '/', whitespace or \
             control characters, or over 100 bytes)",
        ),
        org_row(
            repos(json!([""])),
            "bad",
            "$.organization.profiles[1].repositories[0]: not a repository name (empty, '/', whitespace or \
             control characters, or over 100 bytes)",
        ),
        org_row(
            repos(json!(["a", "{{all-repositories}}"])),
            "bad",
            "$.organization.profiles[1].repositories[1]: this literal must be the only repository entry",
        ),
        org_row(
            repos(json!(["*", "a"])),
            "bad",
            "$.organization.profiles[1].repositories[0]: this literal must be the only repository entry",
        ),
        org_row(
            repos(json!([
                "{{caller-scoped-repository}}",
                "{{caller-scoped-repository}}"
            ])),
            "bad",
            "$.organization.profiles[1].repositories[0]: this literal must be the only repository entry; \
             $.organization.profiles[1].repositories[1]: this literal must be the only repository entry",
        ),
        org_row(
            repos(json!(["{{all-repos}}"])),
            "bad",
            "$.organization.profiles[1].repositories[0]: unknown {{...}} placeholder",
        ),
        pipeline_row(
            rule(json!({"claim": "organization_slug", "value": "acme"})),
            "bad",
            "$.pipeline.profiles[1].match[0].claim: unknown claim",
        ),
        pipeline_row(
            rule(json!({"claim": "agent_tag:", "value": "x"})),
            "bad",
            "$.pipeline.profiles[1].match[0].claim: unknown claim",
        ),
        pipeline_row(
            rule(json!({"claim": "build_branch"})),
            "bad",
            "$.pipeline.profiles[1].match[0]: needs exactly one of value, valueIn, valueGlob, valuePattern (found 0)",
        ),
        org_row(
            json!({"name": "bad", "repositories": ["r"], "permissions": ["contents:read"],
                   "match": [{"claim": "build_branch", "value": "main"},
                             {"claim": "build_branch", "value": "main", "valueGlob": "m*"}]}),
            "bad",
            "$.organization.profiles[1].match[1]: needs exactly one of value, valueIn, valueGlob, valuePattern (found 2)",
        ),
        pipeline_row(
            rule(json!({"claim": "build_branch", "valueGlob": "main\\"})),
            "bad",
            "$.pipeline.profiles[1].match[0].valueGlob: glob ends with a lone backslash",
        ),
        pipeline_row(
            json!({"name": "bad", "permissions": [], "match": [{"claim": "nope", "value": "x"}]}),
            "bad",
            "$.pipeline.profiles[1].permissions: no permissions; $.pipeline.profiles[1].match[0].claim: unknown claim",
        ),
    ]
}

#[test]
fn each_quarantine_reason_leaves_the_others_available() {
    for row in quarantine_rows() {
        let generation = with_bad_profile(&row);
        let lookup = match row.family {
            Family::Pipeline => generation.pipeline(row.name),
            Family::Organization => generation.organization(row.name),
        };
        assert_eq!(lookup, Lookup::Unavailable(row.reason), "{}", row.profile);
        assert_eq!(
            found(generation.pipeline("good")).to_string(),
            "pipeline:good"
        );
        assert_eq!(
            found(generation.organization("good")).to_string(),
            "org:good"
        );
        assert_eq!(found(generation.pipeline("default")).name(), "default");
        let quarantined: Vec<_> = generation.quarantined().collect();
        assert_eq!(quarantined.len(), 1, "{}", row.profile);
        assert_eq!(
            (quarantined[0].family(), quarantined[0].name()),
            (row.family, row.name)
        );
        assert_eq!(quarantined[0].reason(), row.reason);
    }
}

#[test]
fn a_pipeline_profile_named_default_is_quarantined_and_the_builtin_default_stays() {
    let generation = parse(&json!({"pipeline": {"profiles": [
        {"name": "default", "permissions": ["contents:write"]},
        {"name": "good", "permissions": ["contents:read"]}
    ]}}))
    .unwrap();
    let default = found(generation.pipeline("default"));
    assert_eq!(permissions(default), ["contents:read", "metadata:read"]);
    let quarantined: Vec<_> = generation.quarantined().collect();
    assert_eq!(quarantined.len(), 1);
    assert_eq!(
        quarantined[0].reason(),
        "$.pipeline.profiles[0].name: \"default\" is reserved (use pipeline.defaults)"
    );
    assert!(matches!(generation.pipeline("good"), Lookup::Found(_)));
    let org_default = parse(&json!({"organization": {"profiles": [
        {"name": "default", "repositories": ["r"], "permissions": ["contents:read"]}]}}))
    .unwrap();
    assert_eq!(
        found(org_default.organization("default")).to_string(),
        "org:default"
    );
}

#[test]
fn duplicate_names_quarantine_every_profile_of_that_name() {
    let generation = parse(&json!({
        "pipeline": {"profiles": [
            {"name": "twin", "permissions": ["contents:read"]},
            {"name": "single", "permissions": ["contents:read"]},
            {"name": "twin", "permissions": ["contents:write"]}
        ]},
        "organization": {"profiles": [
            {"name": "twin", "repositories": ["r"], "permissions": ["contents:read"]},
            {"name": "triple", "repositories": ["a"], "permissions": ["contents:read"]},
            {"name": "triple", "repositories": ["b"], "permissions": []},
            {"name": "triple", "repositories": ["c"], "permissions": ["contents:read"]}
        ]}
    }))
    .unwrap();
    assert_eq!(
        generation.pipeline("twin"),
        Lookup::Unavailable(
            "$.pipeline.profiles[0].name: duplicate name in the family; \
             $.pipeline.profiles[2].name: duplicate name in the family"
        )
    );
    assert_eq!(
        generation.organization("triple"),
        Lookup::Unavailable(
            "$.organization.profiles[1].name: duplicate name in the family; \
             $.organization.profiles[2].name: duplicate name in the family; \
             $.organization.profiles[2].permissions: no permissions; \
             $.organization.profiles[3].name: duplicate name in the family"
        )
    );
    assert!(matches!(generation.pipeline("single"), Lookup::Found(_)));
    assert!(
        matches!(generation.organization("twin"), Lookup::Found(_)),
        "names are unique per family"
    );
    assert_eq!(generation.quarantined().count(), 2);
}

#[test]
fn repository_lists_are_sorted_and_deduplicated_and_star_means_all() {
    let generation = parse(&json!({"organization": {"profiles": [
        {"name": "list", "repositories": ["b", "a", "b"], "permissions": ["contents:read"]},
        {"name": "star", "repositories": ["*"], "permissions": ["contents:read"]}
    ]}}))
    .unwrap();
    let list = found(generation.organization("list"));
    assert_eq!(
        list.repository_scope(),
        Some(&RepositoryScope::Named(vec!["a".into(), "b".into()]))
    );
    assert_eq!(
        found(generation.organization("star")).repository_scope(),
        Some(&RepositoryScope::All)
    );
}

#[test]
fn permissions_are_sorted_deduplicated_and_always_include_metadata_read() {
    let generation = parse(&json!({"pipeline": {"profiles": [
        {"name": "p", "permissions": ["statuses:write", "contents:read", "metadata:read", "contents:read",
                                      "organization_projects:admin"]}
    ]}}))
    .unwrap();
    let profile = found(generation.pipeline("p"));
    assert_eq!(
        permissions(profile),
        [
            "contents:read",
            "metadata:read",
            "organization_projects:admin",
            "statuses:write"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Rules through a real file

fn admitted(rule: Value, claim_set: Value) -> bool {
    let generation =
        parse(&json!({"pipeline": {"profiles": [{"name": "p", "permissions": ["contents:read"], "match": [rule]}]}}))
            .unwrap();
    found(generation.pipeline("p"))
        .evaluate(&claims(claim_set))
        .admitted
}

#[test]
fn rule_kinds_and_edge_cases() {
    let long = "a".repeat(257);
    let rows: Vec<(Value, Value, bool)> = vec![
        // value
        (
            json!({"claim": "build_branch", "value": "main"}),
            json!({"build_branch": "main"}),
            true,
        ),
        (
            json!({"claim": "build_branch", "value": "main"}),
            json!({"build_branch": "main "}),
            false,
        ),
        (
            json!({"claim": "build_branch", "value": ""}),
            json!({"build_branch": ""}),
            true,
        ),
        (
            json!({"claim": "build_branch", "value": ""}),
            json!({}),
            false,
        ),
        (
            json!({"claim": "build_tag", "value": "v1"}),
            json!({"build_tag": null}),
            false,
        ),
        (
            json!({"claim": "build_number", "value": "42"}),
            json!({"build_number": 42}),
            true,
        ),
        (
            json!({"claim": "build_number", "value": "42"}),
            json!({"build_number": 42.0}),
            false,
        ),
        (
            json!({"claim": "step_key", "value": "déployer"}),
            json!({"step_key": "déployer"}),
            true,
        ),
        (
            json!({"claim": "agent_tag:queue", "value": "deploy"}),
            json!({"agent_tag:queue": "deploy"}),
            true,
        ),
        (
            json!({"claim": "agent_tag:queue", "value": "deploy"}),
            json!({"agent_tag:os": "deploy"}),
            false,
        ),
        // valueIn
        (
            json!({"claim": "queue_key", "valueIn": ["a", "b"]}),
            json!({"queue_key": "b"}),
            true,
        ),
        (
            json!({"claim": "queue_key", "valueIn": ["a", "b"]}),
            json!({"queue_key": "c"}),
            false,
        ),
        (
            json!({"claim": "queue_key", "valueIn": []}),
            json!({"queue_key": "a"}),
            false,
        ),
        (
            json!({"claim": "queue_key", "valueIn": [""]}),
            json!({"queue_key": ""}),
            true,
        ),
        // valueGlob
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*"}),
            json!({"pipeline_slug": ""}),
            true,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*"}),
            json!({"pipeline_slug": "any/thing"}),
            true,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*"}),
            json!({}),
            false,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*"}),
            json!({"pipeline_slug": "a b"}),
            false,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*"}),
            json!({"pipeline_slug": "a\u{0}"}),
            false,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*"}),
            json!({"pipeline_slug": long}),
            false,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*-prod"}),
            json!({"pipeline_slug": "web-prod"}),
            true,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "*-prod"}),
            json!({"pipeline_slug": "web-prod-x"}),
            false,
        ),
        (
            json!({"claim": "pipeline_slug", "valueGlob": "web"}),
            json!({"pipeline_slug": "web-prod"}),
            false,
        ),
        (
            json!({"claim": "build_tag", "valueGlob": "v\\*"}),
            json!({"build_tag": "v*"}),
            true,
        ),
        (
            json!({"claim": "build_tag", "valueGlob": "v\\*"}),
            json!({"build_tag": "v1"}),
            false,
        ),
        (
            json!({"claim": "build_tag", "valueGlob": "v?"}),
            json!({"build_tag": "vé"}),
            true,
        ),
        (
            json!({"claim": "build_tag", "valueGlob": "v??"}),
            json!({"build_tag": "vé"}),
            false,
        ),
        (
            json!({"claim": "build_tag", "valueGlob": "v?"}),
            json!({"build_tag": "v😀"}),
            true,
        ),
        (
            json!({"claim": "build_branch", "valueGlob": "release/*"}),
            json!({"build_branch": "release/1/2"}),
            true,
        ),
    ];
    for (rule, claim_set, want) in rows {
        assert_eq!(
            admitted(rule.clone(), claim_set.clone()),
            want,
            "{rule} with {claim_set}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Profile references

#[test]
fn profile_ref_rows() {
    let ok =
        |family: Family, segment: &str| parse_profile_ref(family, segment).map(|r| r.to_string());
    let rows: &[(Family, &str, Result<&str, RefError>)] = &[
        (Family::Pipeline, "release", Ok("pipeline:release")),
        (Family::Pipeline, "pipeline:release", Ok("pipeline:release")),
        (Family::Pipeline, "repo:release", Ok("pipeline:release")),
        (Family::Pipeline, "default", Ok("pipeline:default")),
        (Family::Pipeline, "pipeline:default", Ok("pipeline:default")),
        (Family::Pipeline, "repo:default", Ok("pipeline:default")),
        (
            Family::Pipeline,
            "org:deploy",
            Err(RefError::WrongFamily { prefix: "org:" }),
        ),
        (Family::Pipeline, "pipeline:", Err(RefError::Empty)),
        (Family::Pipeline, "", Err(RefError::Empty)),
        (Family::Pipeline, "a b", Err(RefError::InvalidName)),
        (Family::Pipeline, "foo:bar", Err(RefError::InvalidName)),
        (
            Family::Pipeline,
            "pipeline:repo:x",
            Err(RefError::InvalidName),
        ),
        (Family::Pipeline, "Pipeline:x", Err(RefError::InvalidName)),
        (Family::Organization, "deploy", Ok("org:deploy")),
        (Family::Organization, "org:deploy", Ok("org:deploy")),
        (Family::Organization, "default", Ok("org:default")),
        (
            Family::Organization,
            "pipeline:deploy",
            Err(RefError::WrongFamily {
                prefix: "pipeline:",
            }),
        ),
        (
            Family::Organization,
            "repo:deploy",
            Err(RefError::WrongFamily { prefix: "repo:" }),
        ),
        (Family::Organization, "org:", Err(RefError::Empty)),
        (
            Family::Organization,
            "org:org:x",
            Err(RefError::InvalidName),
        ),
    ];
    for (family, segment, want) in rows {
        assert_eq!(
            ok(*family, segment),
            want.clone().map(str::to_owned),
            "{family:?} {segment:?}"
        );
    }
    let long = "x".repeat(65);
    assert_eq!(
        parse_profile_ref(Family::Pipeline, &long),
        Err(RefError::InvalidName)
    );
    assert!(parse_profile_ref(Family::Pipeline, &long[..64]).is_ok());
    assert_eq!(
        RefError::WrongFamily { prefix: "org:" }.to_string(),
        "profile prefix \"org:\" not allowed on this route"
    );
}

#[test]
fn qualified_refs_and_lookup() {
    let generation = example();
    let rows = [
        ("org:deploy", "org:deploy"),
        ("pipeline:release", "pipeline:release"),
        ("repo:release", "pipeline:release"),
        ("release", "pipeline:release"),
    ];
    for (reference, want) in rows {
        let parsed = parse_qualified_profile_ref(reference).unwrap();
        assert_eq!(parsed.to_string(), want);
        assert_eq!(found(generation.lookup(&parsed)).to_string(), want);
    }
    assert_eq!(parse_qualified_profile_ref("org:"), Err(RefError::Empty));
    let missing = parse_profile_ref(Family::Organization, "nope").unwrap();
    assert_eq!(generation.lookup(&missing), Lookup::NotFound);
}

// ---------------------------------------------------------------------------------------------
// check

#[test]
fn check_summarizes_the_example() {
    let summary = check(&example_bytes()).unwrap();
    assert_eq!(
        lines(&summary),
        [
            &format!("ok: 7 profiles, digest {EXAMPLE_DIGEST}") as &str,
            "pipeline:default: contents:read metadata:read; the requesting pipeline's own repository; no rules",
            "pipeline:pr-commenter: contents:read metadata:read pull_requests:write; \
             the requesting pipeline's own repository; no rules",
            "pipeline:release: contents:write metadata:read; the requesting pipeline's own repository; 1 rule",
            "org:any-one-repo: contents:read metadata:read; the one repository the caller names; no rules",
            "org:buildkite-plugins: contents:read metadata:read; private-plugin-a private-plugin-b; no rules",
            "org:deploy: contents:write deployments:write metadata:read; infrastructure; 2 rules",
            "org:package-read: metadata:read packages:read; all repositories of the installation; no rules",
        ]
    );
}

#[test]
fn check_reports_every_problem_of_broken_variants() {
    let mut quarantined = example_value();
    quarantined["organization"]["profiles"][1]["permissions"][0] = json!("nope:write");
    quarantined["pipeline"]["profiles"][1]["match"][0]["claim"] = json!("branch");
    let mut unknown = example_value();
    unknown["organization"]["profiles"][2]["valuePattern"] = json!("x");
    unknown["pipeline"]["defaults"]["permissions"] = json!([]);
    let rows: Vec<(String, Vec<&str>)> = vec![
        (
            quarantined.to_string(),
            vec![
                "$.pipeline.profiles[1].match[0].claim: unknown claim (pipeline profile \"release\" is unavailable)",
                "$.organization.profiles[1].permissions[0]: unknown permission \"nope\" \
                 (organization profile \"deploy\" is unavailable)",
            ],
        ),
        (
            unknown.to_string(),
            vec![
                "$.organization.profiles[2].valuePattern: unknown key",
                "$.pipeline.defaults.permissions: empty (the default profile needs permissions)",
            ],
        ),
        (
            r#"{"pipeline": {"profiles": [{"name": "a", "permissions": ["contents:read"]},]}}"#
                .to_owned(),
            vec!["invalid json: trailing comma at line 1 column 76"],
        ),
    ];
    for (text, want) in rows {
        assert_eq!(check(text.as_bytes()).unwrap_err(), want, "{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// explain

#[test]
fn explain_a_denial_rule_by_rule() {
    let text = explain(
        &example(),
        "org:deploy",
        &claims(json!({"pipeline_slug": "web-prod", "build_branch": "dev"})),
    );
    assert_eq!(
        lines(&text),
        [
            "profile: org:deploy",
            &format!("generation: {EXAMPLE_DIGEST}") as &str,
            "repositories: infrastructure",
            "permissions: contents:write deployments:write metadata:read",
            "ttl: none (GitHub's hour): the token lives until GitHub's expiry, no early revocation",
            "rule 1 of 2: pipeline_slug valueGlob \"*-prod\": holds: pipeline_slug is \"web-prod\"",
            "rule 2 of 2: build_branch value \"main\": FAILS: build_branch \"dev\" does not match value \"main\"",
            "verdict: denied: 1 of 2 rules failed, the server answers 403 (forbidden)",
        ]
    );
}

#[test]
fn explain_an_admission_and_absent_or_unusable_claims() {
    let generation = example();
    let admitted = explain(
        &generation,
        "org:deploy",
        &claims(json!({"pipeline_slug": "web-prod", "build_branch": "main"})),
    );
    assert_eq!(
        lines(&admitted)[5..],
        [
            "rule 1 of 2: pipeline_slug valueGlob \"*-prod\": holds: pipeline_slug is \"web-prod\"",
            "rule 2 of 2: build_branch value \"main\": holds: build_branch is \"main\"",
            "verdict: admitted",
        ]
    );
    let odd = explain(
        &generation,
        "org:deploy",
        &claims(json!({"pipeline_slug": "web prod", "build_branch": null})),
    );
    assert_eq!(
        lines(&odd)[5..],
        [
            "rule 1 of 2: pipeline_slug valueGlob \"*-prod\": FAILS: pipeline_slug \"web prod\" is over 256 bytes \
         or has whitespace or control characters, so valueGlob \"*-prod\" cannot match",
            "rule 2 of 2: build_branch value \"main\": FAILS: build_branch is absent or null, so value \"main\" cannot match",
            "verdict: denied: 2 of 2 rules failed, the server answers 403 (forbidden)",
        ]
    );
}

#[test]
fn explain_profiles_without_rules_and_missing_profiles() {
    let generation = example();
    let open = explain(&generation, "pr-commenter", &Map::new());
    assert_eq!(
        lines(&open),
        [
            "profile: pipeline:pr-commenter",
            &format!("generation: {EXAMPLE_DIGEST}") as &str,
            "repositories: the requesting pipeline's own repository",
            "permissions: contents:read metadata:read pull_requests:write",
            "ttl: none (GitHub's hour): the token lives until GitHub's expiry, no early revocation",
            "rules: none, so every pipeline of the organization qualifies",
            "verdict: admitted",
        ]
    );
    let missing = explain(&generation, "org:nope", &Map::new());
    assert_eq!(
        lines(&missing)[2],
        "verdict: not found: the server answers 404 (profile not found)"
    );
    let malformed = explain(&generation, "org:a b", &Map::new());
    assert_eq!(
        lines(&malformed),
        [
            "profile: \"org:a b\"",
            "verdict: malformed profile reference (malformed profile name): the server answers 400"
        ]
    );
}

#[test]
fn explain_an_unavailable_profile() {
    let generation = parse(&json!({"organization": {"profiles": [
        {"name": "broken", "repositories": [], "permissions": ["contents:read"]}]}}))
    .unwrap();
    let text = explain(&generation, "org:broken", &Map::new());
    assert_eq!(
        lines(&text)[2],
        "verdict: unavailable: the server answers 404 (profile unavailable): \
         $.organization.profiles[0].repositories: no repositories"
    );
}

#[test]
fn pathological_ten_kilobyte_globs_finish() {
    let value = json!({"build_branch": "a".repeat(256)});
    let many_stars = format!("{}b", "*a".repeat(5_120));
    let long_segment = format!("*{}b{}", "a".repeat(127), "*".repeat(10_000));
    let every_segment = vec!["a"; 256].join(&"*".repeat(39));
    for (pattern, want) in [
        (many_stars, false),
        (long_segment, false),
        (every_segment, true),
    ] {
        assert!(pattern.len() > 10_000);
        let rule = json!({"claim": "build_branch", "valueGlob": pattern});
        assert_eq!(admitted(rule, value.clone()), want);
    }
}

// ---------------------------------------------------------------------------------------------
// sources

#[test]
fn sources_narrow_where_a_profile_may_be_asked_from() {
    let generation = parse(&json!({
        "pipeline": {"profiles": [
            {"name": "office", "permissions": ["contents:read"],
             "sources": ["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]},
            {"name": "open", "permissions": ["contents:read"]},
            {"name": "none", "permissions": ["contents:read"], "sources": []},
            {"name": "bad", "permissions": ["contents:read"],
             "sources": ["10.0.0.0/8", "10.0.0.0/33", "nowhere", "10.1.0.0/8"]}
        ]},
        "organization": {"profiles": [
            {"name": "lab", "repositories": ["r"], "permissions": ["contents:read"],
             "sources": ["::1"]}
        ]}
    }))
    .unwrap();
    let office = found(generation.pipeline("office"));
    assert_eq!(
        office.sources().map(ToString::to_string).as_deref(),
        Some("192.0.2.0/24, 2001:db8::/32, 198.51.100.7/32")
    );
    for (ip, admitted) in [
        ("192.0.2.200", true),
        ("::ffff:192.0.2.1", true),
        ("192.0.3.1", false),
        ("2001:db8:ffff::1", true),
        ("2001:db9::", false),
        ("198.51.100.7", true),
        ("198.51.100.8", false),
    ] {
        assert_eq!(office.admits_source(ip.parse().unwrap()), admitted, "{ip}");
    }
    let open = found(generation.pipeline("open"));
    assert_eq!(open.sources(), None);
    assert!(open.admits_source("203.0.113.1".parse().unwrap()));
    assert!(found(generation.organization("lab")).admits_source("::1".parse().unwrap()));
    assert_eq!(
        generation.pipeline("none"),
        Lookup::Unavailable(
            "$.pipeline.profiles[2].sources: no sources (leave sources out to admit any address)"
        )
    );
    assert_eq!(
        generation.pipeline("bad"),
        Lookup::Unavailable(
            "$.pipeline.profiles[3].sources[1]: prefix length 33 is over 32; \
             $.pipeline.profiles[3].sources[2]: not an ip address; \
             $.pipeline.profiles[3].sources[3]: address has bits set beyond the prefix length"
        )
    );
    // Not a list of strings: the whole file fails, like any other shape problem.
    let problems = file_problems(
        r#"{"pipeline": {"profiles": [{"name": "x", "permissions": ["contents:read"], "sources": "10.0.0.0/8"}]}}"#,
    );
    assert_eq!(
        problems,
        ["$.pipeline.profiles[0].sources: expected an array, found a string"]
    );
}
