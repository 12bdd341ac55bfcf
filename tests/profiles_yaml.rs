//! Profile files in chinmina-bridge's YAML (`tests/fixtures/profiles/chinmina/`), written in
//! the style of its documentation and test data: every construct they use (block and flow
//! lists, quoted and plain scalars, comments, `"*"`, the `{{…}}` literals, every match rule
//! kind) loads, each file also reads to the same tree in `yaml-rust2` (the oracle), and each
//! profile gives the verdicts chinmina-bridge's documentation promises for given claims. Then
//! every refused construct is refused with its line and column, YAML problems carry positions,
//! `valuePattern` limits quarantine their profile, and `check` reports everything in one pass.
#![forbid(unsafe_code)]

#[path = "../fuzz/checks/profiles_yaml.rs"]
#[allow(dead_code)]
mod oracle;

use kitebridge::{
    FileError, Generation, Lookup, Position, Profile, YamlError, YamlProblem,
    check_profile_file as check, explain_profile as explain,
};
use serde_json::{Map, Value, json};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/profiles/chinmina/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(name: &str) -> Generation {
    let bytes = fixture(name);
    let text = std::str::from_utf8(&bytes).unwrap();
    // The oracle reads the same tree, and the fuzz property holds for the fixture.
    let (want, duplicates) = oracle::oracle(text).unwrap();
    assert_eq!(duplicates, 0, "{name}");
    let read = kitebridge::parse_yaml(&bytes).unwrap();
    assert_eq!(read.value, want, "{name}");
    oracle::check(&bytes);
    Generation::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("claims are an object"),
    }
}

fn found<'a>(lookup: Lookup<'a>) -> &'a Profile {
    match lookup {
        Lookup::Found(profile) => profile,
        other => panic!("not found: {other:?}"),
    }
}

fn admitted(profile: &Profile, claims: Value) -> bool {
    let claims = self::claims(claims);
    profile.evaluate(&claims).admitted
}

fn permissions(profile: &Profile) -> Vec<String> {
    profile
        .permissions()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn unavailable(lookup: Lookup<'_>) -> String {
    match lookup {
        Lookup::Unavailable(reason) => reason.to_owned(),
        other => panic!("not unavailable: {other:?}"),
    }
}

// ------------------------------------------------------------------------- fixtures

#[test]
fn overview_loads_both_sections() {
    let g = load("overview.yaml");
    assert_eq!(
        permissions(found(g.pipeline("default"))),
        ["contents:read", "metadata:read"]
    );
    let commenter = found(g.pipeline("pr-commenter"));
    assert_eq!(
        permissions(commenter),
        ["contents:read", "metadata:read", "pull_requests:write"]
    );
    assert!(admitted(commenter, json!({"pipeline_slug": "anything"})));
    let plugins = found(g.organization("shared-plugins"));
    assert_eq!(
        format!("{:?}", plugins.repository_scope().unwrap()),
        r#"Named(["plugin-1", "plugin-2"])"#
    );
    assert_eq!(g.quarantined().count(), 0);
}

#[test]
fn organization_example_with_star_and_a_pattern() {
    let g = load("organization.yaml");
    assert_eq!(
        format!(
            "{:?}",
            found(g.organization("package-registry")).repository_scope()
        ),
        "Some(All)"
    );
    let plugin = found(g.organization("buildkite-plugin"));
    assert!(admitted(plugin, json!({"pipeline_slug": "any"})));
    let release = found(g.organization("release-publisher"));
    for (slug, branch, want) in [
        ("web-release", "main", true),
        ("web-release", "dev", false),
        ("web-release-2", "main", false),
        ("release", "main", false),
        ("x-release", "main", true),
    ] {
        let claims = json!({"pipeline_slug": slug, "build_branch": branch});
        assert_eq!(admitted(release, claims), want, "{slug} {branch}");
    }
}

#[test]
fn pipeline_example_rules() {
    let g = load("pipeline.yaml");
    let deployment = found(g.pipeline("deployment"));
    assert!(admitted(
        deployment,
        json!({"pipeline_slug": "silk-prod", "build_branch": "main"})
    ));
    assert!(!admitted(
        deployment,
        json!({"pipeline_slug": "silk-prod-canary", "build_branch": "main"})
    ));
    assert!(!admitted(
        deployment,
        json!({"pipeline_slug": "silk-prod", "build_branch": "feature"})
    ));
    assert_eq!(
        permissions(deployment),
        ["contents:write", "deployments:write", "metadata:read"]
    );
    let release = found(g.pipeline("release-publisher"));
    assert!(admitted(release, json!({"build_branch": "main"})));
    assert!(!admitted(release, json!({"build_branch": "mainline"})));
    let any = found(g.pipeline("any-pipeline"));
    assert!(admitted(any, json!({"pipeline_slug": "whatever"})));
    assert!(!admitted(any, json!({})), "an absent claim never matches");
}

#[test]
fn matching_reference_verdicts() {
    let g = load("matching.yaml");
    let rows: &[(&str, Value, bool)] = &[
        (
            "release",
            json!({"build_branch": "main", "pipeline_slug": "a-prod"}),
            true,
        ),
        (
            "release",
            json!({"build_branch": "main", "pipeline_slug": "a-production"}),
            false,
        ),
        ("exact", json!({"pipeline_slug": "silk-prod"}), true),
        ("exact", json!({"pipeline_slug": "silk-prod-2"}), false),
        (
            "release-pipelines",
            json!({"pipeline_slug": "x-release"}),
            true,
        ),
        (
            "release-pipelines",
            json!({"pipeline_slug": "x-released"}),
            false,
        ),
        ("anchored", json!({"pipeline_slug": "prod"}), true),
        ("anchored", json!({"pipeline_slug": "not-prod"}), false),
        ("anchored", json!({"pipeline_slug": "production"}), false),
        (
            "production-on-main",
            json!({"pipeline_slug": "cotton-prod", "build_branch": "main"}),
            true,
        ),
        (
            "production-on-main",
            json!({"pipeline_slug": "wool-prod", "build_branch": "main"}),
            false,
        ),
        (
            "cluster",
            json!({"cluster_name": "production-us-east"}),
            true,
        ),
        (
            "cluster",
            json!({"cluster_name": "production-us-west"}),
            false,
        ),
        ("tagged-releases", json!({"build_tag": "v1.2.3"}), true),
        ("tagged-releases", json!({"build_tag": "v1.2"}), false),
        ("tagged-releases", json!({"build_tag": "v1x2x3"}), false),
        (
            "tagged-releases",
            json!({"build_tag": "v\u{661}.2.3"}),
            false,
        ),
        ("tagged-releases", json!({"build_tag": null}), false),
        ("agent-queue", json!({"agent_tag:queue": "deploy"}), true),
        ("agent-queue", json!({"agent_tag:queue": "default"}), false),
    ];
    for (name, claims, want) in rows {
        let profile = found(g.pipeline(name));
        assert_eq!(admitted(profile, claims.clone()), *want, "{name} {claims}");
    }
    assert_eq!(
        found(g.pipeline("tagged-releases")).rules()[0].to_string(),
        r#"build_tag valuePattern "v[0-9]+\\.[0-9]+\\.[0-9]+""#
    );
}

#[test]
fn scoped_literals_and_the_profiles_chinmina_rejects() {
    let g = load("scoped.yaml");
    assert_eq!(
        format!(
            "{:?}",
            found(g.organization("caller-scoped-profile")).repository_scope()
        ),
        "Some(CallerScoped)"
    );
    assert_eq!(
        format!(
            "{:?}",
            found(g.organization("all-repos-profile")).repository_scope()
        ),
        "Some(All)"
    );
    let staging = found(g.organization("staging-deploy"));
    assert!(admitted(
        staging,
        json!({"pipeline_slug": "web-staging", "build_branch": "main"})
    ));
    assert!(!admitted(
        staging,
        json!({"pipeline_slug": "web-staging", "build_branch": "dev"})
    ));
    let scoped = found(g.organization("caller-scoped-profile"));
    assert!(admitted(
        scoped,
        json!({"pipeline_slug": "agent-workflows-7"})
    ));
    assert!(!admitted(
        scoped,
        json!({"pipeline_slug": "x-agent-workflows"})
    ));
    // chinmina-bridge rejects these three; so does kitebridge, naming the path and the place.
    assert_eq!(
        unavailable(g.organization("owner-prefixed")),
        "$.organization.profiles[4].repositories[0] (line 37, column 22): not a repository \
         name (empty, '/', whitespace or control characters, or over 100 bytes)"
    );
    assert_eq!(
        unavailable(g.organization("both-match-types")),
        "$.organization.profiles[5].match[0] (line 42, column 9): needs exactly one of value, \
         valueIn, valueGlob, valuePattern (found 2)"
    );
    let invalid = unavailable(g.organization("invalid-regex-pattern"));
    assert!(
        invalid.starts_with(
            "$.organization.profiles[6].match[0].valuePattern (line 50, column 11): pattern \
             does not compile"
        ),
        "{invalid}"
    );
    assert_eq!(g.quarantined().count(), 3);
}

#[test]
fn kitebridge_rule_kinds_in_yaml() {
    let g = load("kitebridge-rules.yaml");
    let branches = found(g.pipeline("branches"));
    assert!(admitted(branches, json!({"build_branch": "release"})));
    assert!(!admitted(branches, json!({"build_branch": "dev"})));
    let queues = found(g.pipeline("queues"));
    assert!(admitted(queues, json!({"queue_key": "deploy"})));
    let globbed = found(g.pipeline("globbed"));
    assert!(admitted(
        globbed,
        json!({"pipeline_slug": "web-prod", "build_number": 42})
    ));
    assert!(!admitted(
        globbed,
        json!({"pipeline_slug": "web-prod", "build_number": 43})
    ));
    assert!(admitted(found(g.pipeline("open")), json!({})));
}

#[test]
fn the_same_file_in_json_means_the_same() {
    let yaml = fixture("matching.yaml");
    let value = kitebridge::parse_yaml(&yaml).unwrap().value;
    let json = serde_json::to_vec(&value).unwrap();
    let from_yaml = Generation::parse(&yaml).unwrap();
    let from_json = Generation::parse(&json).unwrap();
    let names = |g: &Generation| g.profiles().map(|p| p.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&from_yaml), names(&from_json));
    for (a, b) in from_yaml.profiles().zip(from_json.profiles()) {
        assert_eq!(a, b);
    }
    assert_ne!(
        from_yaml.digest(),
        from_json.digest(),
        "the digest is of the bytes"
    );
}

// ------------------------------------------------------------------------- refusals

#[test]
fn each_refused_construct_names_its_line_and_column() {
    let head = "pipeline:\n  profiles:\n";
    let rows: &[(&str, &str, u32, u32, YamlProblem)] = &[
        ("anchor", "    - &p name: a\n", 3, 7, YamlProblem::Anchor),
        (
            "alias",
            "    - name: a\n      permissions: *perms\n",
            4,
            20,
            YamlProblem::Alias,
        ),
        (
            "unquoted star",
            "    - name: a\n      permissions: [contents:read]\n      repositories:\n        - *\n",
            6,
            11,
            YamlProblem::Alias,
        ),
        (
            "merge key",
            "    - name: a\n      <<: {permissions: [contents:read]}\n",
            4,
            7,
            YamlProblem::MergeKey,
        ),
        ("tag", "    - name: !!str a\n", 3, 13, YamlProblem::Tag),
        (
            "second document",
            "    - name: a\n---\npipeline: {}\n",
            4,
            1,
            YamlProblem::SeveralDocuments,
        ),
        (
            "complex key",
            "    - ? name\n      : a\n",
            3,
            7,
            YamlProblem::ComplexKey,
        ),
        (
            "block scalar",
            "    - name: |\n        a\n",
            3,
            13,
            YamlProblem::BlockScalar,
        ),
        (
            "tab in indentation",
            "    - name: a\n\t  permissions: [contents:read]\n",
            4,
            1,
            YamlProblem::Tab,
        ),
        (
            "unquoted literal",
            "    - name: a\n      repositories: [{{all-repositories}}]\n",
            4,
            22,
            YamlProblem::UnquotedPlaceholder,
        ),
    ];
    for (what, body, line, column, problem) in rows {
        let text = format!("{head}{body}");
        let error = Generation::parse(text.as_bytes()).unwrap_err();
        let want = FileError::Yaml(YamlError {
            at: Position {
                line: *line,
                column: *column,
            },
            problem: problem.clone(),
        });
        assert_eq!(error, want, "{what}: {text:?}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("invalid yaml: line {line}, column {column}: ")),
            "{error}"
        );
    }
    let directive = Generation::parse(b"%YAML 1.2\n---\npipeline: {}\n").unwrap_err();
    assert_eq!(
        directive.to_string(),
        "invalid yaml: line 1, column 1: directives (%) are not supported"
    );
}

#[test]
fn schema_problems_in_yaml_give_line_and_column() {
    let text = "\
organisation:
  profiles: []
pipeline:
  profiles:
    - name: a
      permissions: [contents:read]
      name: b
    - name: c
      match:
        - claim: build_branch
          valuePatern: main
      permissions: [contents:read]
    - name: d
";
    assert_eq!(
        Generation::parse(text.as_bytes()).unwrap_err().problems(),
        [
            "$.pipeline.profiles[0].name (line 7, column 7): duplicate key",
            "$.organisation (line 1, column 1): unknown key",
            "$.pipeline.profiles[1].match[0].valuePatern (line 11, column 11): unknown key",
            "$.pipeline.profiles[2].permissions (line 13, column 5): missing required key",
        ]
    );
}

#[test]
fn value_pattern_limits_quarantine_only_their_profile() {
    let long = "a".repeat(513);
    let text = format!(
        "pipeline:\n  profiles:\n    - name: long\n      match:\n        - claim: build_branch\n\
         \x20         valuePattern: \"{long}\"\n      permissions: [contents:read]\n\
         \x20   - name: broken\n      match:\n        - claim: build_branch\n\
         \x20         valuePattern: \"(main\"\n      permissions: [contents:read]\n\
         \x20   - name: huge\n      match:\n        - claim: build_branch\n\
         \x20         valuePattern: 'a{{1001}}'\n      permissions: [contents:read]\n\
         \x20   - name: fine\n      match:\n        - claim: build_branch\n\
         \x20         valuePattern: main|master\n      permissions: [contents:read]\n"
    );
    let g = Generation::parse(text.as_bytes()).unwrap();
    assert_eq!(
        unavailable(g.pipeline("long")),
        "$.pipeline.profiles[0].match[0].valuePattern (line 6, column 11): pattern is 513 \
         bytes, over 512"
    );
    assert!(
        unavailable(g.pipeline("broken")).contains("pattern does not compile"),
        "{}",
        unavailable(g.pipeline("broken"))
    );
    assert!(
        unavailable(g.pipeline("huge")).ends_with("pattern repeats more than 1000 times"),
        "{}",
        unavailable(g.pipeline("huge"))
    );
    let fine = found(g.pipeline("fine"));
    assert!(admitted(fine, json!({"build_branch": "master"})));
    assert!(!admitted(fine, json!({"build_branch": "mastery"})));
}

#[test]
fn check_reports_every_problem_in_one_pass() {
    let text = "\
pipeline:
  defaults:
    permissions: []
  profiles:
    - name: a
      permissions: [nope:read]
      repositories: [x]
    - name: b
      match:
        - {claim: branch, value: main}
      permissions: [contents:read]
";
    let problems = check(text.as_bytes()).unwrap_err();
    assert_eq!(
        problems,
        [
            "$.pipeline.profiles[0].repositories (line 7, column 7): unknown key",
            "$.pipeline.defaults.permissions (line 3, column 5): empty (the default profile \
             needs permissions)",
            "$.pipeline.profiles[0].permissions[0] (line 6, column 21): unknown permission \
             \"nope\" (pipeline profile \"a\" is unavailable)",
            "$.pipeline.profiles[1].match[0].claim (line 10, column 12): unknown claim \
             (pipeline profile \"b\" is unavailable)",
        ]
    );
    let ok = check(&fixture("matching.yaml")).unwrap();
    assert!(
        ok.contains("pipeline:tagged-releases: contents:write metadata:read"),
        "{ok}"
    );
}

#[test]
fn explain_shows_the_pattern_and_its_verdict() {
    let g = load("matching.yaml");
    let text = explain(
        &g,
        "pipeline:tagged-releases",
        &claims(json!({"build_tag": "v1.2"})),
    );
    assert!(
        text.contains(
            r#"rule 1 of 1: build_tag valuePattern "v[0-9]+\\.[0-9]+\\.[0-9]+": FAILS: build_tag "v1.2" does not match valuePattern "v[0-9]+\\.[0-9]+\\.[0-9]+""#
        ),
        "{text}"
    );
    assert!(
        text.ends_with("the server answers 403 (forbidden)\n"),
        "{text}"
    );
}

/// The cases of chinmina-bridge's own test data, in its YAML: what it rejects as a whole, and
/// what it quarantines.
#[test]
fn files_and_profiles_chinmina_rejects_are_rejected() {
    let whole_file = [
        (
            "organisation:\n  profilez:\n    - name: \"buildkite-plugin\"\n      repositories: [\"*\"]\n",
            "$.organisation (line 1, column 1): unknown key",
        ),
        (
            "organization:\n  defaults:\n    permissions: [\"contents:read\"]\n  profiles: []\n",
            "$.organization.defaults (line 2, column 3): unknown key",
        ),
        (
            "pipeline:\n  profiles:\n    - name: \"invalid-profile\"\n      repositories:\n        - some-repo\n      permissions: [\"contents:write\"]\n",
            "$.pipeline.profiles[0].repositories (line 4, column 7): unknown key",
        ),
    ];
    for (text, want) in whole_file {
        let error = Generation::parse(text.as_bytes()).unwrap_err();
        assert_eq!(error.problems(), [want], "{text}");
    }
    let text = "\
organization:
  profiles:
    - name: \"valid-profile\"
      repositories: [\"test\"]
      permissions: [\"contents:read\"]
    - name: \"empty-repositories\"
      repositories: []
      permissions: [\"contents:read\"]
    - name: \"empty-permissions\"
      repositories: [\"test\"]
      permissions: []
    - name: \"production\"
      repositories: [\"silk\"]
      permissions: [\"contents:write\"]
    - name: \"production\"
      repositories: [\"cotton\"]
      permissions: [\"contents:read\"]
";
    let g = Generation::parse(text.as_bytes()).unwrap();
    assert!(matches!(g.organization("valid-profile"), Lookup::Found(_)));
    assert_eq!(
        unavailable(g.organization("empty-repositories")),
        "$.organization.profiles[1].repositories (line 7, column 7): no repositories"
    );
    assert_eq!(
        unavailable(g.organization("empty-permissions")),
        "$.organization.profiles[2].permissions (line 11, column 7): no permissions"
    );
    // chinmina-bridge serves the first of two profiles of one name; kitebridge fails closed.
    assert_eq!(
        unavailable(g.organization("production")),
        "$.organization.profiles[3].name (line 12, column 7): duplicate name in the family; \
         $.organization.profiles[4].name (line 15, column 7): duplicate name in the family"
    );
}
