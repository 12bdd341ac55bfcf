//! The offline tools behind `kitebridge profiles check` and `kitebridge profiles explain`, as
//! functions returning text (the command-line wiring lives in `main.rs`).
#![forbid(unsafe_code)]

use std::net::IpAddr;

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
        let ttl = if profile.ttl().given() {
            format!("; ttl {}", profile.ttl())
        } else {
            String::new()
        };
        let sources = match profile.sources() {
            Some(set) => format!("; sources {set}"),
            None => String::new(),
        };
        summary.push_str(&format!(
            "{profile}: {}; {}; {rules}{ttl}{sources}\n",
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
    explain_with_source(generation, profile_ref, claims, None)
}

/// [`explain`], and whether a request from `source` may use the profile (its `sources`). Without
/// `source`, a profile's `sources` are shown but not checked; a profile without `sources` shows
/// none unless `source` is given.
pub fn explain_with_source(
    generation: &Generation,
    profile_ref: &str,
    claims: &Map<String, Value>,
    source: Option<IpAddr>,
) -> String {
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
    lines.push(ttl(profile));
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
    let source_fails = match (profile.sources(), source) {
        (None, None) => None,
        (None, Some(ip)) => {
            lines.push(format!(
                "sources: none, so a request from any address qualifies ({ip} included)"
            ));
            None
        }
        (Some(set), None) => {
            lines.push(format!(
                "sources: {set} (not checked: give --source ADDRESS to check one)"
            ));
            None
        }
        (Some(set), Some(ip)) => {
            let admitted = profile.admits_source(ip);
            let outcome = if admitted { "holds" } else { "FAILS" };
            let inside = if admitted { "inside" } else { "outside" };
            lines.push(format!("sources: {set}: {outcome}: {ip} is {inside} them"));
            (!admitted).then_some(ip)
        }
    };
    let verdict = profile.evaluate(claims);
    let rules_failed =
        (!verdict.admitted).then(|| format!("{} of {total} rules failed", verdict.failures.len()));
    let source_failed =
        source_fails.map(|ip| format!("source {ip} is outside the profile's sources"));
    let reasons: Vec<String> = rules_failed.into_iter().chain(source_failed).collect();
    lines.push(if reasons.is_empty() {
        "verdict: admitted".to_owned()
    } else {
        format!(
            "verdict: denied: {}, the server answers 403 (forbidden)",
            reasons.join(" and ")
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

/// The ttl verdict: how long the profile's tokens live and what ends them.
fn ttl(profile: &Profile) -> String {
    let ttl = profile.ttl();
    if ttl.given() && ttl.secs() < super::ttl::MAX_TTL_SECS {
        format!(
            "ttl: {ttl}: the token is revoked {} s after it is minted (or earlier, by a shorter \
             expires_in on /oauth/token)",
            ttl.secs()
        )
    } else {
        // GitHub's own hour: nothing to revoke early.
        format!("ttl: {ttl}: the token lives until GitHub's expiry, no early revocation")
    }
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
