//! Benchmark: `valueGlob` matching against pathological 10 KB patterns, next to a plain `value`
//! compare, both through [`Rule::evaluate`] on a 256-byte claim value (the longest that can match).
//!
//! Run: `cargo run --release --example bench_glob`
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::time::Instant;

use kitebridge::{Glob, Matcher, Rule};
use serde_json::{Map, Value};

const RUNS: usize = 301;
const ITERATIONS: u32 = 200;
const PATTERN_BYTES: usize = 10 * 1024;

/// Median nanoseconds per evaluation of `rule` over `RUNS` runs of `ITERATIONS` evaluations.
fn median_ns(rule: &Rule, claims: &Map<String, Value>) -> (f64, bool) {
    let admitted = rule.evaluate(claims).is_ok();
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ITERATIONS {
                black_box(black_box(rule).evaluate(black_box(claims)).is_ok());
            }
            start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    (samples[RUNS / 2], admitted)
}

/// Pads a pattern with stars (which collapse: `**` is `*`) to `PATTERN_BYTES`.
fn padded(pattern: String) -> String {
    let missing = PATTERN_BYTES.saturating_sub(pattern.len());
    format!("{pattern}{}", "*".repeat(missing))
}

fn main() {
    println!("command: cargo run --release --example bench_glob");
    let value = "a".repeat(256);
    let mut claims = Map::new();
    claims.insert("build_branch".into(), Value::String(value.clone()));

    let cases: Vec<(&str, String)> = vec![
        (
            "`*a*a*…*a*b` 5 120 stars (rejected by the length bound)",
            format!("{}b", "*a".repeat(5_120)),
        ),
        (
            "`a**…*a**…*…a` 256 literals joined by 39-star runs (walks every segment, matches)",
            vec!["a"; 256].join(&"*".repeat(39)),
        ),
        (
            "`*aaa…ab*` one 128-char segment, padded to 10 KB (the n·L worst case)",
            padded(format!("*{}b", "a".repeat(127))),
        ),
        (
            "`*???…?*` 256 `?`, padded to 10 KB (matches)",
            padded(format!("*{}", "?".repeat(256))),
        ),
    ];

    let value_rule = Rule::new("build_branch", Matcher::Value(value.clone())).expect("known claim");
    let (baseline, ok) = median_ns(&value_rule, &claims);
    println!(
        "value compare (256 bytes, equal)                          : {baseline:>10.1} ns/match (admitted: {ok})"
    );
    for (label, pattern) in cases {
        let glob = Glob::new(&pattern).expect("valid glob");
        let rule = Rule::new("build_branch", Matcher::ValueGlob(glob)).expect("known claim");
        let (ns, ok) = median_ns(&rule, &claims);
        println!(
            "{label}\n  pattern {} bytes                                        : {ns:>10.1} ns/match \
             (admitted: {ok}, {:.1}x value)",
            pattern.len(),
            ns / baseline
        );
    }
}
