//! `valueGlob` patterns: `*` any run of characters (including `/` and the empty run), `?` exactly one
//! character (a Unicode scalar value, not a byte), `\` makes the next character literal; nothing else
//! is special. A pattern matches the **whole** value (anchored at both ends).
//!
//! # Algorithm, and why it cannot blow up
//!
//! A compiled glob is the star-free segments between its stars: `head * s1 * s2 * … * tail`
//! (runs of stars collapse to one; with no star at all the pattern is just `head`, compared for
//! equal length). A value matches iff `head` matches its start, `tail` its end (without overlapping
//! `head`), and `s1, s2, …` occur in order, without overlapping, in what lies between. Each middle
//! segment is placed at its **leftmost** occurrence after the previous one and never moved again:
//! placing a segment further left only leaves more room for the segments after it, so if any
//! placement works the greedy one does (the usual exchange argument). There is no backtracking.
//!
//! Cost, for a value of `n` characters and a pattern of `m` tokens whose longest segment has `L`:
//! every value position is tried as a start by at most one segment search (the next search starts
//! after the previous hit), each try compares at most `L` characters, so a match costs at most
//! `n·L + m` comparisons; and a pattern needing more characters than the value has is rejected at
//! once by a precomputed minimum length, so the work never exceeds `n·min(L, n) + m`. Values longer
//! than 256 bytes never reach the matcher (they never match any rule), so a match is bounded by
//! 65 536 character comparisons plus one pass over the pattern, whatever the pattern is.
//!
//! Rejected alternatives: the classic two-pointer matcher that backtracks to the last star is
//! simpler but re-scans the text once per star in bad cases (`O(n·m)`); a position-set NFA
//! simulation is `O(n·m)` per match and needs a bitset per distinct literal to be fast, which a
//! pattern with many distinct characters turns into memory. `examples/bench_glob.rs` measures a
//! 10 KB pathological pattern.
#![forbid(unsafe_code)]

use std::fmt;

/// One pattern position that consumes exactly one character.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// This character only.
    Char(char),
    /// `?`: any one character.
    Any,
}

impl Token {
    fn accepts(self, c: char) -> bool {
        match self {
            Token::Char(want) => want == c,
            Token::Any => true,
        }
    }
}

/// A compiled `valueGlob` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    source: String,
    head: Vec<Token>,
    /// Segments between stars, each non-empty; only meaningful when `tail` is `Some`.
    middle: Vec<Vec<Token>>,
    /// The segment after the last star; `None` when the pattern has no star.
    tail: Option<Vec<Token>>,
    /// Characters any matching value must have at least (the number of non-star tokens).
    min_chars: usize,
}

/// Why a pattern is not a glob.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum GlobError {
    /// The pattern ends with a `\` that escapes nothing.
    TrailingBackslash,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GlobError::TrailingBackslash => f.write_str("glob ends with a lone backslash"),
        }
    }
}

impl std::error::Error for GlobError {}

impl Glob {
    /// Compiles a pattern.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let mut segments: Vec<Vec<Token>> = vec![Vec::new()];
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => {
                    segments.push(Vec::new());
                    continue;
                }
                '?' => Token::Any,
                '\\' => Token::Char(chars.next().ok_or(GlobError::TrailingBackslash)?),
                c => Token::Char(c),
            };
            if let Some(last) = segments.last_mut() {
                last.push(token);
            }
        }
        let min_chars = segments.iter().map(Vec::len).sum();
        let mut segments = segments.into_iter();
        let head = segments.next().unwrap_or_default();
        let mut rest: Vec<Vec<Token>> = segments.collect();
        let tail = rest.pop();
        // Empty middle segments come from runs of stars (`**` is `*`).
        rest.retain(|segment| !segment.is_empty());
        Ok(Glob {
            source: pattern.to_owned(),
            head,
            middle: rest,
            tail,
            min_chars,
        })
    }

    /// The pattern as written in the profile file.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let text: Vec<char> = value.chars().collect();
        if text.len() < self.min_chars {
            return false;
        }
        let Some(tail) = &self.tail else {
            return text.len() == self.head.len() && starts_with(&text, &self.head);
        };
        let Some(between_end) = text.len().checked_sub(tail.len()) else {
            return false;
        };
        let (Some(between), Some(end)) = (
            text.get(self.head.len()..between_end),
            text.get(between_end..),
        ) else {
            return false;
        };
        starts_with(&text, &self.head) && starts_with(end, tail) && in_order(between, &self.middle)
    }
}

/// Whether `text` begins with characters the segment accepts.
fn starts_with(text: &[char], segment: &[Token]) -> bool {
    text.len() >= segment.len() && segment.iter().zip(text).all(|(token, &c)| token.accepts(c))
}

/// Whether the segments occur in `text` in order without overlapping (greedy leftmost placement).
fn in_order(mut text: &[char], segments: &[Vec<Token>]) -> bool {
    for segment in segments {
        let Some(at) =
            (0..text.len()).find(|&i| text.get(i..).is_some_and(|t| starts_with(t, segment)))
        else {
            return false;
        };
        text = text.get(at + segment.len()..).unwrap_or_default();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &str) -> bool {
        Glob::new(pattern).unwrap().matches(value)
    }

    #[test]
    fn table() {
        let rows: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything/at/all", true),
            ("**", "", true),
            ("main", "main", true),
            ("main", "main2", false),
            ("main", "xmain", false),
            ("*-prod", "web-prod", true),
            ("*-prod", "web-prod-2", false),
            ("*-prod", "-prod", true),
            ("web-*", "web-", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("a*b*c", "ab", false),
            ("*a*", "bab", true),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("*aab", "aaab", true),
            ("*ab*ab*", "abab", true),
            ("*ab*ab*", "aab", false),
            ("feature/*", "feature/x/y", true),
            ("?", "", false),
            ("?", "é", true),
            ("?", "ab", false),
            ("??", "é", false),
            ("caf?", "café", true),
            ("?*?", "日本", true),
            ("日*", "日本語", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("\\?", "?", true),
            ("\\?", "x", false),
            ("a\\\\b", "a\\b", true),
            ("\\a", "a", true),
            ("[ab]", "[ab]", true),
            ("[ab]", "a", false),
            ("a.c", "abc", false),
        ];
        for &(pattern, value, want) in rows {
            assert_eq!(m(pattern, value), want, "{pattern:?} against {value:?}");
        }
    }

    #[test]
    fn trailing_backslash_is_an_error() {
        assert_eq!(Glob::new("abc\\"), Err(GlobError::TrailingBackslash));
        assert_eq!(Glob::new("abc\\\\").unwrap().as_str(), "abc\\\\");
    }

    #[test]
    fn pathological_pattern_is_rejected_without_blow_up() {
        let pattern = format!("{}b", "*a".repeat(5_000));
        let glob = Glob::new(&pattern).unwrap();
        assert!(!glob.matches(&"a".repeat(256)));
        let fits = format!("{}b", "*a".repeat(100));
        assert!(
            Glob::new(&fits)
                .unwrap()
                .matches(&format!("{}b", "a".repeat(255)))
        );
        assert!(!Glob::new(&fits).unwrap().matches(&"a".repeat(256)));
    }
}
