//! The offline tools behind `kitebridge profiles check` and `kitebridge profiles explain`, as
//! functions returning text (the command-line wiring lives in `main.rs`).
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use super::compile::Quarantined;
use super::generation::{DEFAULT_MAX_FILE_BYTES, Generation, Lookup};
use super::profile::{Profile, RepositoryScope, parse_qualified_profile_ref};
use super::rules::Shown;

/// Validates a profile file (JSON or YAML) exactly as the server would. `Ok`: a summary
/// (digest, then one line per usable profile). `Err`: every problem in one pass, each starting
/// with its JSON path — the whole-file problems, then every problem of every profile that would
/// be quarantined (pipeline family first, each by name), so a fix never uncovers older ones. A
/// syntax error stops the reading, so it is reported alone. CI should fail on `Err`.
pub fn check(bytes: &[u8]) -> Result<String, Vec<String>> {
    let generation = match Generation::parse_reporting(bytes, DEFAULT_MAX_FILE_BYTES) {
        Ok(generation) => generation,
        Err((error, quarantined)) => {
            let mut problems = error.problems();
            problems.extend(quarantine_lines(quarantined.iter()));
            return Err(problems);
        }
    };
    let problems = quarantine_lines(generation.quarantined());
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut summary = format!(
        "ok: {} profiles, digest {}\n",
        generation.profiles().count(),
        generation.digest()
    );
    for profile in generation.profiles() {
        let rules = match profile.rules().len() {
            0 => "no rules".to_owned(),
            1 => "1 rule".to_owned(),
            n => format!("{n} rules"),
        };
        summary.push_str(&format!(
            "{profile}: {}; {}; {rules}\n",
            permissions(profile),
            repositories(profile)
        ));
    }
    Ok(summary)
}

/// One line per problem of each quarantined profile, with the consequence.
fn quarantine_lines<'a>(quarantined: impl Iterator<Item = &'a Quarantined>) -> Vec<String> {
    quarantined
        .flat_map(|q| {
            let consequence = format!("{} profile {:?} is unavailable", q.family(), q.name());
            q.problems()
                .iter()
                .map(move |problem| format!("{problem} ({consequence})"))
        })
        .collect()
}

/// Explains, rule by rule, whether a claim set (a JSON object of claims) is admitted to a profile
/// (`org:deploy`, `pipeline:release`, or a bare pipeline profile name), for a human debugging a
/// 403. One fact per line; the last line starts with `verdict:`.
pub fn explain(generation: &Generation, profile_ref: &str, claims: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    let reference = match parse_qualified_profile_ref(profile_ref) {
        Ok(reference) => reference,
        Err(error) => {
            lines.push(format!("profile: {}", Shown(profile_ref)));
            lines.push(format!(
                "verdict: malformed profile reference ({error}): the server answers 400"
            ));
            return finish(lines);
        }
    };
    lines.push(format!("profile: {reference}"));
    lines.push(format!("generation: {}", generation.digest()));
    let profile = match generation.lookup(&reference) {
        Lookup::Found(profile) => profile,
        Lookup::Unavailable(reason) => {
            lines.push(format!(
                "verdict: unavailable: the server answers 404 (profile unavailable): {reason}"
            ));
            return finish(lines);
        }
        Lookup::NotFound => {
            lines.push("verdict: not found: the server answers 404 (profile not found)".to_owned());
            return finish(lines);
        }
    };
    lines.push(format!("repositories: {}", repositories(profile)));
    lines.push(format!("permissions: {}", permissions(profile)));
    if profile.rules().is_empty() {
        lines.push("rules: none, so every pipeline of the organization qualifies".to_owned());
    }
    let total = profile.rules().len();
    for (i, rule) in profile.rules().iter().enumerate() {
        let outcome = match rule.evaluate(claims) {
            Ok(hit) => format!("holds: {} is {}", hit.claim, Shown(&hit.value)),
            Err(miss) => format!("FAILS: {miss}"),
        };
        lines.push(format!("rule {} of {total}: {rule}: {outcome}", i + 1));
    }
    let verdict = profile.evaluate(claims);
    lines.push(if verdict.admitted {
        "verdict: admitted".to_owned()
    } else {
        format!(
            "verdict: denied: {} of {total} rules failed, the server answers 403 (forbidden)",
            verdict.failures.len()
        )
    });
    finish(lines)
}

fn finish(lines: Vec<String>) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// `contents:read metadata:read`
fn permissions(profile: &Profile) -> String {
    let shown: Vec<String> = profile
        .permissions()
        .iter()
        .map(ToString::to_string)
        .collect();
    shown.join(" ")
}

/// What the profile's token covers, in words.
fn repositories(profile: &Profile) -> String {
    match profile.repository_scope() {
        None => "the requesting pipeline's own repository".to_owned(),
        Some(RepositoryScope::All) => "all repositories of the installation".to_owned(),
        Some(RepositoryScope::CallerScoped) => "the one repository the caller names".to_owned(),
        Some(RepositoryScope::Named(names)) => names.join(" "),
    }
}
