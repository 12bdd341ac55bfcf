//! Match rules: which claims a rule may name, how a rule tests a claim value, and the verdict of
//! all of a profile's rules for one claim set, in a form the audit record and `explain` can show.
#![forbid(unsafe_code)]

use std::fmt;

use serde_json::{Map, Value};

use super::glob::Glob;
use super::pattern::Pattern;

/// Longest claim value (in bytes) that can match any rule; also where shown values are cut.
pub const MAX_CLAIM_VALUE_BYTES: usize = 256;

/// Claims a rule may name, besides `agent_tag:<NAME>`.
const CLAIMS: &[&str] = &[
    "pipeline_slug",
    "pipeline_id",
    "build_number",
    "build_branch",
    "build_tag",
    "build_commit",
    "build_source",
    "step_key",
    "cluster_id",
    "cluster_name",
    "queue_id",
    "queue_key",
    "organization_id",
    "runner_environment",
];

/// Whether a rule may name this claim: one of the fixed names, or `agent_tag:<NAME>` with a
/// non-empty `NAME` free of whitespace and control characters.
pub fn is_known_claim(name: &str) -> bool {
    match name.strip_prefix("agent_tag:") {
        Some(tag) => !tag.is_empty() && !tag.chars().any(|c| c.is_whitespace() || c.is_control()),
        None => CLAIMS.contains(&name),
    }
}

/// Where rules read claims from: the verified JWT in the server, a JSON file in `explain`.
pub trait ClaimSource {
    /// The claim's value as a string; `None` when absent or null. `build_number` is its decimal
    /// string.
    fn claim(&self, name: &str) -> Option<String>;
}

/// A JSON object of claims: strings as they are, integers in decimal; null and every other type
/// (floats, booleans, arrays, objects) count as absent.
impl ClaimSource for Map<String, Value> {
    fn claim(&self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }
}

/// Whether a claim value may match at all: at most 256 bytes, no whitespace or control characters.
pub fn is_usable_value(value: &str) -> bool {
    value.len() <= MAX_CLAIM_VALUE_BYTES
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// How a rule tests its claim.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Matcher {
    /// `value`: equal to this string.
    Value(String),
    /// `valueIn`: equal to one of these.
    ValueIn(Vec<String>),
    /// `valueGlob`: the whole value matches the glob.
    ValueGlob(Glob),
    /// `valuePattern`: the whole value matches the regular expression (Go's RE2 syntax).
    ValuePattern(Pattern),
}

impl Matcher {
    fn accepts(&self, value: &str) -> bool {
        match self {
            Matcher::Value(want) => want == value,
            Matcher::ValueIn(wants) => wants.iter().any(|want| want == value),
            Matcher::ValueGlob(glob) => glob.matches(value),
            Matcher::ValuePattern(pattern) => pattern.matches(value),
        }
    }
}

/// `value "main"`, `valueIn ["a", "b"]`, `valueGlob "*-prod"`; each string escaped and cut at 256
/// bytes.
impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Value(want) => write!(f, "value {}", Shown(want)),
            Matcher::ValueIn(wants) => {
                f.write_str("valueIn [")?;
                for (i, want) in wants.iter().enumerate() {
                    let separator = if i == 0 { "" } else { ", " };
                    write!(f, "{separator}{}", Shown(want))?;
                }
                f.write_str("]")
            }
            Matcher::ValueGlob(glob) => write!(f, "valueGlob {}", Shown(glob.as_str())),
            Matcher::ValuePattern(pattern) => {
                write!(f, "valuePattern {}", Shown(pattern.as_str()))
            }
        }
    }
}

/// One match rule: a claim and how to test it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    claim: String,
    matcher: Matcher,
}

impl Rule {
    /// A rule; `None` when [`is_known_claim`] rejects the claim.
    pub fn new(claim: &str, matcher: Matcher) -> Option<Rule> {
        is_known_claim(claim).then(|| Rule {
            claim: claim.to_owned(),
            matcher,
        })
    }

    /// The claim the rule reads.
    pub fn claim(&self) -> &str {
        &self.claim
    }

    /// How the rule tests it.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Tests this rule alone against a claim set.
    pub fn evaluate(&self, claims: &dyn ClaimSource) -> Result<RuleMatch, RuleFailure> {
        let value = claims.claim(&self.claim);
        match value {
            Some(value) if is_usable_value(&value) && self.matcher.accepts(&value) => {
                Ok(RuleMatch {
                    claim: self.claim.clone(),
                    value,
                })
            }
            value => Err(RuleFailure {
                claim: self.claim.clone(),
                rule: self.matcher.to_string(),
                value,
            }),
        }
    }
}

/// `build_branch value "main"`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.claim, self.matcher)
    }
}

/// A rule that held: the claim and the value that satisfied it (at most 256 bytes, as every
/// matching value is).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleMatch {
    pub claim: String,
    pub value: String,
}

/// A rule that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleFailure {
    /// The claim the rule reads.
    pub claim: String,
    /// The rule's test as shown to people, e.g. `value "main"`.
    pub rule: String,
    /// The claim's value, `None` when absent or null. Kept whole; `Display` cuts it at 256 bytes.
    pub value: Option<String>,
}

/// `build_branch "dev" does not match value "main"`; for an absent claim
/// `build_tag is absent or null, so value "v1" cannot match`; for an unusable value
/// `build_branch "a b" is over 256 bytes or has whitespace or control characters, so value "main" cannot match`.
impl fmt::Display for RuleFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (claim, rule) = (&self.claim, &self.rule);
        match &self.value {
            None => write!(f, "{claim} is absent or null, so {rule} cannot match"),
            Some(value) if !is_usable_value(value) => write!(
                f,
                "{claim} {} is over {MAX_CLAIM_VALUE_BYTES} bytes or has whitespace or control \
                 characters, so {rule} cannot match",
                Shown(value)
            ),
            Some(value) => write!(f, "{claim} {} does not match {rule}", Shown(value)),
        }
    }
}

/// The outcome of all of a profile's rules for one claim set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Every rule held (true for a profile without rules).
    pub admitted: bool,
    /// The rules that held, in file order (the audit record's `matches`).
    pub matches: Vec<RuleMatch>,
    /// The rules that did not hold, in file order.
    pub failures: Vec<RuleFailure>,
}

impl Verdict {
    /// Evaluates every rule (not stopping at the first failure, so the audit record and `explain`
    /// see them all).
    pub fn of(rules: &[Rule], claims: &dyn ClaimSource) -> Verdict {
        let (mut matches, mut failures) = (Vec::new(), Vec::new());
        for rule in rules {
            match rule.evaluate(claims) {
                Ok(hit) => matches.push(hit),
                Err(miss) => failures.push(miss),
            }
        }
        Verdict {
            admitted: failures.is_empty(),
            matches,
            failures,
        }
    }

    /// Why the claims were denied, every failure joined by `; `; `None` when admitted.
    pub fn denial_reason(&self) -> Option<String> {
        let reasons: Vec<String> = self.failures.iter().map(ToString::to_string).collect();
        (!self.admitted).then(|| reasons.join("; "))
    }
}

/// An untrusted string for people: escaped with `{:?}`, cut at 256 bytes (on a character
/// boundary) with `...` after the closing quote when cut.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut end = self.0.len().min(MAX_CLAIM_VALUE_BYTES);
        while !self.0.is_char_boundary(end) {
            end -= 1;
        }
        let kept = self.0.get(..end).unwrap_or_default();
        let more = if end < self.0.len() { "..." } else { "" };
        write!(f, "{kept:?}{more}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test claims are objects"),
        }
    }

    fn rule(claim: &str, matcher: Matcher) -> Rule {
        Rule::new(claim, matcher).unwrap()
    }

    #[test]
    fn known_claims() {
        for name in CLAIMS {
            assert!(is_known_claim(name), "{name}");
        }
        assert!(is_known_claim("agent_tag:queue"));
        for name in [
            "agent_tag:",
            "agent_tag:a b",
            "organization_slug",
            "Build_branch",
            "",
            "sub",
        ] {
            assert!(!is_known_claim(name), "{name:?}");
        }
        assert_eq!(
            Rule::new("organization_slug", Matcher::Value("x".into())),
            None
        );
    }

    #[test]
    fn json_claims_convert_strings_and_integers_only() {
        let c = claims(json!({"s": "main", "i": 42, "neg": -3, "f": 1.5, "b": true,
                              "n": null, "a": ["x"], "o": {"x": 1}}));
        assert_eq!(c.claim("s").as_deref(), Some("main"));
        assert_eq!(c.claim("i").as_deref(), Some("42"));
        assert_eq!(c.claim("neg").as_deref(), Some("-3"));
        for absent in ["f", "b", "n", "a", "o", "missing"] {
            assert_eq!(c.claim(absent), None, "{absent}");
        }
    }

    #[test]
    fn value_rules() {
        let r = rule("build_branch", Matcher::Value("main".into()));
        assert!(r.evaluate(&claims(json!({"build_branch": "main"}))).is_ok());
        assert!(
            r.evaluate(&claims(json!({"build_branch": "main2"})))
                .is_err()
        );
        assert!(
            r.evaluate(&claims(json!({"build_branch": "Main"})))
                .is_err()
        );
        let empty = rule("build_tag", Matcher::Value(String::new()));
        assert!(empty.evaluate(&claims(json!({"build_tag": ""}))).is_ok());
        assert!(empty.evaluate(&claims(json!({"build_tag": null}))).is_err());
        assert!(empty.evaluate(&claims(json!({}))).is_err());
        let number = rule("build_number", Matcher::Value("42".into()));
        assert!(
            number
                .evaluate(&claims(json!({"build_number": 42})))
                .is_ok()
        );
        let unicode = rule("step_key", Matcher::Value("déploiement".into()));
        assert!(
            unicode
                .evaluate(&claims(json!({"step_key": "déploiement"})))
                .is_ok()
        );
        assert!(
            unicode
                .evaluate(&claims(json!({"step_key": "deploiement"})))
                .is_err()
        );
    }

    #[test]
    fn value_in_rules() {
        let r = rule(
            "queue_key",
            Matcher::ValueIn(vec!["deploy".into(), "release".into()]),
        );
        assert!(r.evaluate(&claims(json!({"queue_key": "release"}))).is_ok());
        assert!(
            r.evaluate(&claims(json!({"queue_key": "default"})))
                .is_err()
        );
        let none = rule("queue_key", Matcher::ValueIn(Vec::new()));
        assert!(none.evaluate(&claims(json!({"queue_key": ""}))).is_err());
    }

    #[test]
    fn unusable_values_never_match_even_a_star() {
        let star = rule("build_branch", Matcher::ValueGlob(Glob::new("*").unwrap()));
        assert!(
            star.evaluate(&claims(json!({"build_branch": "x".repeat(256)})))
                .is_ok()
        );
        for bad in [
            "x".repeat(257),
            "a b".into(),
            "a\tb".into(),
            "a\nb".into(),
            "a\u{7f}".into(),
            "a\u{a0}b".into(),
            "a\u{2028}b".into(),
        ] {
            assert!(
                star.evaluate(&claims(json!({ "build_branch": bad })))
                    .is_err(),
                "{bad:?}"
            );
        }
        let over_long_exact = rule("build_branch", Matcher::Value("é".repeat(129)));
        assert!(
            over_long_exact
                .evaluate(&claims(json!({"build_branch": "é".repeat(129)})))
                .is_err()
        );
    }

    #[test]
    fn failure_display() {
        let r = rule("build_branch", Matcher::Value("main".into()));
        let failure = |v: Value| {
            r.evaluate(&claims(json!({ "build_branch": v })))
                .unwrap_err()
        };
        assert_eq!(
            failure(json!("dev")).to_string(),
            r#"build_branch "dev" does not match value "main""#
        );
        assert_eq!(
            failure(json!("a\"b\n")).to_string(),
            r#"build_branch "a\"b\n" is over 256 bytes or has whitespace or control characters, so value "main" cannot match"#
        );
        assert_eq!(
            failure(Value::Null).to_string(),
            r#"build_branch is absent or null, so value "main" cannot match"#
        );
        let long = failure(json!("é".repeat(200))).to_string();
        assert!(
            long.starts_with(&format!("build_branch \"{}\"...", "é".repeat(128))),
            "{long}"
        );
        let multi = rule("queue_key", Matcher::ValueIn(vec!["a".into(), "b".into()]));
        assert_eq!(multi.to_string(), r#"queue_key valueIn ["a", "b"]"#);
        let glob = rule(
            "pipeline_slug",
            Matcher::ValueGlob(Glob::new("*-prod").unwrap()),
        );
        assert_eq!(glob.to_string(), r#"pipeline_slug valueGlob "*-prod""#);
    }

    #[test]
    fn verdict_collects_every_rule() {
        let rules = [
            rule(
                "pipeline_slug",
                Matcher::ValueGlob(Glob::new("*-prod").unwrap()),
            ),
            rule("build_branch", Matcher::Value("main".into())),
            rule("agent_tag:queue", Matcher::Value("deploy".into())),
        ];
        let c = claims(json!({"pipeline_slug": "web-prod", "build_branch": "dev"}));
        let verdict = Verdict::of(&rules, &c);
        assert!(!verdict.admitted);
        assert_eq!(
            verdict.matches,
            [RuleMatch {
                claim: "pipeline_slug".into(),
                value: "web-prod".into()
            }]
        );
        assert_eq!(verdict.failures.len(), 2);
        assert_eq!(
            verdict.denial_reason().unwrap(),
            "build_branch \"dev\" does not match value \"main\"; \
             agent_tag:queue is absent or null, so value \"deploy\" cannot match"
        );
        let ok = Verdict::of(&[], &c);
        assert!(ok.admitted && ok.matches.is_empty() && ok.denial_reason().is_none());
    }
}
