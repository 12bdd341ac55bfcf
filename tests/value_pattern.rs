//! `valuePattern` against Go's verdicts: every row of `tests/fixtures/go-verdicts/verdicts.tsv`
//! (pattern, value, what chinmina-bridge's Go `regexp` decides — computed once with
//! `tests/fixtures/go-verdicts/main.go`) gives the same verdict here, except the rows listed in
//! [`REFUSED_THOUGH_GO_ACCEPTS`]: constructs Go reads one way and the `regex` crate another (or
//! not at all), which kitebridge refuses (quarantining the profile) rather than misread.
#![forbid(unsafe_code)]

use kitebridge::{MAX_PATTERN_BYTES, Pattern, PatternError};

const VERDICTS: &str = include_str!("fixtures/go-verdicts/verdicts.tsv");

/// Patterns Go compiles that kitebridge refuses, and why.
const REFUSED_THOUGH_GO_ACCEPTS: &[(&str, &str)] = &[
    (
        r"\Qa.b",
        "\\Q without \\E: in chinmina-bridge it swallows the anchoring unless literal",
    ),
    (
        "a{,5}",
        "Go reads a brace that opens no valid count as a literal; the crate refuses it",
    ),
    ("a{2", "the same"),
    (r"\pL{1000}", "compiles to more than the size limit"),
    (
        r"x\b{start}",
        "Go: \\b then the literal {start}; the crate: a special boundary",
    ),
    (
        "(?i-i)a",
        "a flag set and cleared in one group: the crate calls it a duplicate",
    ),
    ("(?)a", "an empty flag group"),
    (
        "(?P<n>a)(?P<n>b)",
        "a repeated group name (which Go 1.19 allows)",
    ),
    (
        "[a[b]]",
        "Go: [ is a literal inside a class; the crate: a nested class",
    ),
    ("[a&&b]", "Go: literal &&; the crate: intersection"),
    ("[a~~b]", "Go: literal ~~; the crate: symmetric difference"),
    (
        r"[\d-z]",
        "Go: \\d, then - and z; the crate: an invalid range",
    ),
    (r"[\w-.]", "the same"),
    (
        "[--/]",
        "Go: the range - to /; the crate reads the dashes otherwise",
    ),
    ("[!--]", "Go: the range ! to -; the crate: set difference"),
    ("[---]", "Go: the range - to -"),
    (r"[\--/]", "Go: the range - to /"),
    ("[+--]", "Go: the range + to -"),
    ("[%--]", "Go: the range % to -"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Match,
    NoMatch,
    Error,
}

fn ours(pattern: &str, value: &str) -> Verdict {
    match Pattern::new(pattern) {
        Ok(p) if p.matches(value) => Verdict::Match,
        Ok(_) => Verdict::NoMatch,
        Err(_) => Verdict::Error,
    }
}

fn rows() -> Vec<(String, String, Verdict)> {
    VERDICTS
        .lines()
        .map(|line| {
            let mut cells = line.split('\t');
            let pattern: String = serde_json::from_str(cells.next().unwrap()).unwrap();
            let value: String = serde_json::from_str(cells.next().unwrap()).unwrap();
            let verdict = match cells.next().unwrap() {
                "match" => Verdict::Match,
                "no match" => Verdict::NoMatch,
                "error" => Verdict::Error,
                other => panic!("verdict {other:?}"),
            };
            (pattern, value, verdict)
        })
        .collect()
}

#[test]
fn the_refused_rows_are_in_the_table_and_go_accepts_them() {
    let rows = rows();
    for (pattern, why) in REFUSED_THOUGH_GO_ACCEPTS {
        let row = rows.iter().find(|(p, _, _)| p == pattern);
        let Some((_, _, go)) = row else {
            panic!("{pattern:?} ({why}) is not in the table");
        };
        assert_ne!(*go, Verdict::Error, "{pattern:?}: Go refuses it too");
    }
    let long = rows.iter().find(|(p, _, _)| p.len() > MAX_PATTERN_BYTES);
    let Some((_, _, go)) = long else {
        panic!("no row over the size limit");
    };
    assert_eq!(*go, Verdict::Match, "Go takes a long literal");
}

#[test]
fn every_row_has_go_s_verdict() {
    let rows = rows();
    assert!(rows.len() > 200, "{} rows", rows.len());
    let mut wrong = Vec::new();
    for (pattern, value, go) in &rows {
        let here = ours(pattern, value);
        let refused = pattern.len() > MAX_PATTERN_BYTES
            || REFUSED_THOUGH_GO_ACCEPTS.iter().any(|(p, _)| p == pattern);
        let want = if refused { Verdict::Error } else { *go };
        if here != want || (refused && *go == Verdict::Error) {
            let why = Pattern::new(pattern).err().map(|e| e.to_string());
            wrong.push(format!(
                "{pattern:?} {value:?}: Go {go:?}, here {here:?} {why:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} rows differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The differences the specification names, one by one, as rows of the table (so against Go).
#[test]
fn the_named_differences_are_covered_by_the_table() {
    let rows = rows();
    let go = |pattern: &str, value: &str| {
        rows.iter()
            .find(|(p, v, _)| p == pattern && v == value)
            .map(|(_, _, verdict)| *verdict)
            .unwrap_or_else(|| panic!("{pattern:?} {value:?} not in the table"))
    };
    let named = [
        ("main|master", "main", Verdict::Match),
        ("main|master", "mainx", Verdict::NoMatch),
        ("prod", "not-prod", Verdict::NoMatch),
        ("v\\d+", "v\u{661}\u{662}", Verdict::NoMatch),
        ("\\w+", "h\u{e9}llo", Verdict::NoMatch),
        ("\\s", "\u{b}", Verdict::NoMatch),
        ("a\\B\u{e9}", "a\u{e9}", Verdict::NoMatch),
        ("\\bfoo\\b", "foo", Verdict::Match),
        ("(?i)k", "\u{212a}", Verdict::Match),
        ("(?i)\\w", "\u{212a}", Verdict::Match),
        ("\\pL+", "h\u{e9}llo", Verdict::Match),
        ("\\p{Greek}+", "\u{3b1}\u{3b2}\u{3b3}", Verdict::Match),
        ("\\Qa.b\\E", "axb", Verdict::NoMatch),
        ("\\Qa.b\\E", "a.b", Verdict::Match),
        ("a{1001}", "a", Verdict::Error),
        ("(?P<invalid)", "x", Verdict::Error),
    ];
    for (pattern, value, want) in named {
        assert_eq!(go(pattern, value), want, "Go: {pattern:?} {value:?}");
        assert_eq!(ours(pattern, value), want, "here: {pattern:?} {value:?}");
    }
}

#[test]
fn refusals_say_why() {
    let long = "a".repeat(MAX_PATTERN_BYTES + 1);
    let rows: [(&str, PatternError); 6] = [
        (&long, PatternError::TooLong { len: 513, max: 512 }),
        ("a{1001}", PatternError::RepeatTooLarge { max: 1000 }),
        ("(a{100}){11}", PatternError::RepeatTooLarge { max: 1000 }),
        (r"\Qab", PatternError::UnclosedQuote),
        (r"\pL{1000}", PatternError::TooBig),
        (
            "[a&&b]",
            PatternError::Unsupported {
                construct: "class set operations (&&, --, ~~)",
            },
        ),
    ];
    for (pattern, want) in rows {
        assert_eq!(Pattern::new(pattern).unwrap_err(), want, "{pattern:?}");
    }
    let syntax = Pattern::new("(?P<invalid)").unwrap_err();
    assert!(matches!(syntax, PatternError::Syntax { .. }), "{syntax:?}");
    assert!(!syntax.to_string().contains('\n'), "one line: {syntax}");
}

#[test]
fn the_compiled_form_is_anchored_and_ascii() {
    let p = Pattern::new(r"v\d+|\bx").unwrap();
    assert_eq!(p.compiled(), r"\A(?:v[\x{30}-\x{39}]+|(?-u:\b)x)\z",);
    assert_eq!(p.as_str(), r"v\d+|\bx");
    assert_eq!(format!("{p:?}"), r#"Pattern("v\\d+|\\bx")"#);
    let quoted = Pattern::new(r"\Q(a)\E+").unwrap();
    assert_eq!(quoted.compiled(), r"\A(?:\(a\)+)\z");
    assert!(quoted.matches("(a))") && !quoted.matches("(a)(a)"));
}
