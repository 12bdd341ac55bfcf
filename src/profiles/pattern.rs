//! `valuePattern`: regular expressions with Go's RE2 semantics (chinmina-bridge's `regexp`),
//! matched against the **whole** claim value, compiled on the `regex` crate.
//!
//! A pattern `RE` is compiled as `\A(?:RE)\z`, as chinmina-bridge does, after the pattern alone
//! has been checked to be a complete expression (so `a)|(b` cannot escape the anchors). The two
//! syntaxes mostly agree; where they do not, the parsed pattern (`regex-syntax`'s AST) is
//! rewritten to mean what Go means, or the pattern is refused — never read differently:
//!
//! - `\d \w \s \b` and their negations are ASCII in Go, Unicode in the crate: they become the
//!   ASCII classes (`\s` is Go's `[\t\n\f\r ]`, without `\v`) and an ASCII word boundary (on
//!   the value's bytes, where it can only fall between characters: the value is UTF-8 and every
//!   other part of a pattern matches whole characters);
//! - `(?i)` folds Unicode simple cases in both; `\pL`, `\p{Greek}`, `\p{^Greek}` compile; names
//!   are Go's exactly (the crate's loose names, `\p{greek}` or `\p{sc=Greek}`, are refused), and
//!   `\pC` is Go's `Cc|Cf|Co|Cs` (the crate's includes unassigned code points);
//! - `\Q…\E` quotes literally in Go: rewritten to escaped literals; `\Q` inside a class (an error
//!   in Go) and `\Q` without its `\E` (which in chinmina-bridge swallows the anchoring) are refused;
//! - a repetition count over 1000 (`a{1001}`), or nested counts multiplying past 1000
//!   (`(a{100}){11}`), is refused, as in Go; so are stacked repetitions (`a**`);
//! - syntax Go does not have or reads as literals is refused: nested classes and class set
//!   operations (`[a[b]]`, `&&`, `--`, `~~`), `\u`/`\U` escapes, the `x`, `u` and `R` flags,
//!   `\b{start}`-style boundaries, capture names outside `[A-Za-z0-9_]`, a lone `\1`..`\7`
//!   (Go's unsupported backreference; `\0` and two- or three-digit octal escapes are read as Go
//!   reads them); `\<` and `\>` are Go's literal `<` and `>`.
//!
//! Limits: a pattern is at most [`MAX_PATTERN_BYTES`]; its compiled form at most
//! [`COMPILED_SIZE_LIMIT`] bytes; nesting at most [`NEST_LIMIT`]. The crate is built without its
//! `perf-*` features, so matching runs the PikeVM only: linear in the value, as RE2 is.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::fmt;

use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::ast::{
    self, Assertion, AssertionKind, Ast, ClassBracketed, ClassPerl, ClassPerlKind, ClassSet,
    ClassSetItem, ClassSetRange, ClassSetUnion, ClassUnicode, ClassUnicodeKind, Flag, Flags,
    FlagsItem, FlagsItemKind, GroupKind, HexLiteralKind, Literal, LiteralKind, RepetitionKind,
    RepetitionRange, Span,
};

/// The longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 512;
/// The largest compiled form of a pattern, in bytes of the crate's NFA (`RegexBuilder::size_limit`).
pub const COMPILED_SIZE_LIMIT: usize = 256 * 1024;
/// The deepest nesting of groups, classes and repetitions.
pub const NEST_LIMIT: u32 = 64;
/// Go's largest repetition count (and the most copies nested counts may multiply to).
pub const MAX_REPEAT: u32 = 1000;

/// Go's general categories (`unicode.Categories`).
const GO_CATEGORIES: &[&str] = &[
    "C", "Cc", "Cf", "Co", "Cs", "L", "Ll", "Lm", "Lo", "Lt", "Lu", "M", "Mc", "Me", "Mn", "N",
    "Nd", "Nl", "No", "P", "Pc", "Pd", "Pe", "Pf", "Pi", "Po", "Ps", "S", "Sc", "Sk", "Sm", "So",
    "Z", "Zl", "Zp", "Zs",
];

/// Go's scripts (`unicode.Scripts`: Unicode 13's, listed by Go 1.19, and the seven Unicode 14
/// and 15 added, which current Go has).
const GO_SCRIPTS: &[&str] = &[
    "Adlam",
    "Ahom",
    "Anatolian_Hieroglyphs",
    "Arabic",
    "Armenian",
    "Avestan",
    "Balinese",
    "Bamum",
    "Bassa_Vah",
    "Batak",
    "Bengali",
    "Bhaiksuki",
    "Bopomofo",
    "Brahmi",
    "Braille",
    "Buginese",
    "Buhid",
    "Canadian_Aboriginal",
    "Carian",
    "Caucasian_Albanian",
    "Chakma",
    "Cham",
    "Cherokee",
    "Chorasmian",
    "Common",
    "Coptic",
    "Cuneiform",
    "Cypriot",
    "Cyrillic",
    "Deseret",
    "Devanagari",
    "Dives_Akuru",
    "Dogra",
    "Duployan",
    "Egyptian_Hieroglyphs",
    "Elbasan",
    "Elymaic",
    "Ethiopic",
    "Georgian",
    "Glagolitic",
    "Gothic",
    "Grantha",
    "Greek",
    "Gujarati",
    "Gunjala_Gondi",
    "Gurmukhi",
    "Han",
    "Hangul",
    "Hanifi_Rohingya",
    "Hanunoo",
    "Hatran",
    "Hebrew",
    "Hiragana",
    "Imperial_Aramaic",
    "Inherited",
    "Inscriptional_Pahlavi",
    "Inscriptional_Parthian",
    "Javanese",
    "Kaithi",
    "Kannada",
    "Katakana",
    "Kayah_Li",
    "Kharoshthi",
    "Khitan_Small_Script",
    "Khmer",
    "Khojki",
    "Khudawadi",
    "Lao",
    "Latin",
    "Lepcha",
    "Limbu",
    "Linear_A",
    "Linear_B",
    "Lisu",
    "Lycian",
    "Lydian",
    "Mahajani",
    "Makasar",
    "Malayalam",
    "Mandaic",
    "Manichaean",
    "Marchen",
    "Masaram_Gondi",
    "Medefaidrin",
    "Meetei_Mayek",
    "Mende_Kikakui",
    "Meroitic_Cursive",
    "Meroitic_Hieroglyphs",
    "Miao",
    "Modi",
    "Mongolian",
    "Mro",
    "Multani",
    "Myanmar",
    "Nabataean",
    "Nandinagari",
    "New_Tai_Lue",
    "Newa",
    "Nko",
    "Nushu",
    "Nyiakeng_Puachue_Hmong",
    "Ogham",
    "Ol_Chiki",
    "Old_Hungarian",
    "Old_Italic",
    "Old_North_Arabian",
    "Old_Permic",
    "Old_Persian",
    "Old_Sogdian",
    "Old_South_Arabian",
    "Old_Turkic",
    "Oriya",
    "Osage",
    "Osmanya",
    "Pahawh_Hmong",
    "Palmyrene",
    "Pau_Cin_Hau",
    "Phags_Pa",
    "Phoenician",
    "Psalter_Pahlavi",
    "Rejang",
    "Runic",
    "Samaritan",
    "Saurashtra",
    "Sharada",
    "Shavian",
    "Siddham",
    "SignWriting",
    "Sinhala",
    "Sogdian",
    "Sora_Sompeng",
    "Soyombo",
    "Sundanese",
    "Syloti_Nagri",
    "Syriac",
    "Tagalog",
    "Tagbanwa",
    "Tai_Le",
    "Tai_Tham",
    "Tai_Viet",
    "Takri",
    "Tamil",
    "Tangut",
    "Telugu",
    "Thaana",
    "Thai",
    "Tibetan",
    "Tifinagh",
    "Tirhuta",
    "Ugaritic",
    "Vai",
    "Wancho",
    "Warang_Citi",
    "Yezidi",
    "Yi",
    "Zanabazar_Square",
    "Cypro_Minoan",
    "Kawi",
    "Nag_Mundari",
    "Old_Uyghur",
    "Tangsa",
    "Toto",
    "Vithkuqi",
];

/// Why a `valuePattern` is refused (its profile is quarantined).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PatternError {
    /// Over [`MAX_PATTERN_BYTES`].
    TooLong { len: usize, max: usize },
    /// Not a regular expression (the crate's reason, which also applies to Go).
    Syntax { reason: String },
    /// A construct Go reads differently from the crate, or does not have.
    Unsupported { construct: &'static str },
    /// A repetition count over 1000, or nested counts multiplying past it.
    RepeatTooLarge { max: u32 },
    /// `\Q` without its `\E`.
    UnclosedQuote,
    /// The compiled form is over [`COMPILED_SIZE_LIMIT`] (or nesting over [`NEST_LIMIT`]).
    TooBig,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::TooLong { len, max } => {
                write!(f, "pattern is {len} bytes, over {max}")
            }
            PatternError::Syntax { reason } => write!(f, "pattern does not compile: {reason}"),
            PatternError::Unsupported { construct } => {
                write!(f, "pattern uses {construct}, which is not supported")
            }
            PatternError::RepeatTooLarge { max } => {
                write!(f, "pattern repeats more than {max} times")
            }
            PatternError::UnclosedQuote => f.write_str("pattern has \\Q without \\E"),
            PatternError::TooBig => write!(
                f,
                "pattern compiles to more than {COMPILED_SIZE_LIMIT} bytes or nests deeper than \
                 {NEST_LIMIT}"
            ),
        }
    }
}

impl std::error::Error for PatternError {}

/// A compiled `valuePattern`.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    compiled: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `source` with Go's meaning, anchored at both ends.
    pub fn new(source: &str) -> Result<Pattern, PatternError> {
        if source.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong {
                len: source.len(),
                max: MAX_PATTERN_BYTES,
            });
        }
        let text = unquote(source)?;
        let mut tree = ast::parse::ParserBuilder::new()
            .nest_limit(NEST_LIMIT)
            .octal(true)
            .build()
            .parse(&text)
            .map_err(|error| match error.kind() {
                ast::ErrorKind::NestLimitExceeded(_) => PatternError::TooBig,
                kind => PatternError::Syntax {
                    reason: kind.to_string(),
                },
            })?;
        check_repeats(&tree)?;
        bridge(&mut tree, &text)?;
        let mut printed = String::new();
        ast::print::Printer::new()
            .print(&tree, &mut printed)
            .map_err(|_| PatternError::Unsupported {
                construct: "a form that cannot be printed",
            })?;
        let compiled = format!(r"\A(?:{printed})\z");
        let regex = RegexBuilder::new(&compiled)
            .size_limit(COMPILED_SIZE_LIMIT)
            .nest_limit(NEST_LIMIT + 8)
            .build()
            .map_err(|error| match error {
                regex::Error::CompiledTooBig(_) => PatternError::TooBig,
                // E.g. a Unicode name the crate's tables lack (none of Go's: a test checks).
                other => PatternError::Syntax {
                    reason: first_line(&other.to_string()),
                },
            })?;
        Ok(Pattern {
            source: source.to_owned(),
            compiled,
            regex,
        })
    }

    /// Whether the whole of `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value.as_bytes())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// What is compiled: the rewritten pattern, anchored.
    pub fn compiled(&self) -> &str {
        &self.compiled
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.source).finish()
    }
}

/// The crate's messages draw the pattern over several lines; the `error:` line says what is
/// wrong. Only that line is kept (the reason goes to one-line logs), escaped.
fn first_line(message: &str) -> String {
    let reason = message
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
        .unwrap_or("refused by the regex crate");
    reason.escape_debug().to_string()
}

fn unsupported<T>(construct: &'static str) -> Result<T, PatternError> {
    Err(PatternError::Unsupported { construct })
}

// ------------------------------------------------------------------------------ \Q...\E

/// Rewrites Go's `\Q…\E` (outside classes) into escaped literals. Walks the pattern as Go's
/// parser does: an escape is a backslash and the next character (with `\p{…}` and `\x{…}` taken
/// whole), a class runs from `[` (after an optional `^`, a first `]` is literal; `[:name:]` is
/// one item) to its `]`.
fn unquote(source: &str) -> Result<Cow<'_, str>, PatternError> {
    if !source.contains(r"\Q") {
        return Ok(Cow::Borrowed(source));
    }
    let mut out = String::with_capacity(source.len() * 2);
    let mut rest = source;
    let mut in_class = false;
    let mut first = false;
    while let Some(c) = rest.chars().next() {
        rest = rest.get(c.len_utf8()..).unwrap_or_default();
        match c {
            '\\' => {
                let Some(next) = rest.chars().next() else {
                    out.push(c);
                    continue;
                };
                if next == 'Q' {
                    if in_class {
                        return unsupported("\\Q inside a class");
                    }
                    let quoted = rest.get(1..).unwrap_or_default();
                    let end = quoted.find(r"\E").ok_or(PatternError::UnclosedQuote)?;
                    out.push_str(&regex_syntax::escape(quoted.get(..end).unwrap_or_default()));
                    rest = quoted.get(end + 2..).unwrap_or_default();
                    continue;
                }
                out.push(c);
                out.push(next);
                rest = rest.get(next.len_utf8()..).unwrap_or_default();
                if matches!(next, 'p' | 'P' | 'x') && rest.starts_with('{') {
                    let close = rest.find('}').map_or(rest.len(), |i| i + 1);
                    out.push_str(rest.get(..close).unwrap_or_default());
                    rest = rest.get(close..).unwrap_or_default();
                }
                first = false;
            }
            '[' if !in_class => {
                out.push(c);
                in_class = true;
                first = true;
                if let Some(after) = rest.strip_prefix('^') {
                    out.push('^');
                    rest = after;
                }
            }
            '[' if rest.starts_with(':') && rest.contains(":]") => {
                let close = rest.find(":]").map_or(rest.len(), |i| i + 2);
                out.push(c);
                out.push_str(rest.get(..close).unwrap_or_default());
                rest = rest.get(close..).unwrap_or_default();
                first = false;
            }
            ']' if in_class && !first => {
                out.push(c);
                in_class = false;
            }
            c => {
                out.push(c);
                first = false;
            }
        }
    }
    Ok(Cow::Owned(out))
}

// ------------------------------------------------------------------------------ repeats

/// Go's limits on counted repetitions: no count over 1000, and (for a count of 2 or more)
/// nested counts multiplying to at most 1000 copies (`repeatIsValid` in Go's parser).
fn check_repeats(tree: &Ast) -> Result<(), PatternError> {
    let too_large = Err(PatternError::RepeatTooLarge { max: MAX_REPEAT });
    match tree {
        Ast::Repetition(repetition) => {
            if let Some((min, max)) = counts(&repetition.op.kind) {
                if min > MAX_REPEAT || max.is_some_and(|max| max > MAX_REPEAT) {
                    return too_large;
                }
                let at_least_two = min >= 2 || max.is_some_and(|max| max >= 2);
                if at_least_two && !copies_within(tree, MAX_REPEAT) {
                    return too_large;
                }
            }
            check_repeats(&repetition.ast)
        }
        Ast::Group(group) => check_repeats(&group.ast),
        Ast::Concat(concat) => concat.asts.iter().try_for_each(check_repeats),
        Ast::Alternation(alternation) => alternation.asts.iter().try_for_each(check_repeats),
        _ => Ok(()),
    }
}

/// `(min, max)` of a counted repetition (`max` `None` when unbounded); `None` for `* + ?`.
fn counts(kind: &RepetitionKind) -> Option<(u32, Option<u32>)> {
    match kind {
        RepetitionKind::Range(RepetitionRange::Exactly(n)) => Some((*n, Some(*n))),
        RepetitionKind::Range(RepetitionRange::AtLeast(n)) => Some((*n, None)),
        RepetitionKind::Range(RepetitionRange::Bounded(min, max)) => Some((*min, Some(*max))),
        _ => None,
    }
}

/// Go's `repeatIsValid(re, n)`.
fn copies_within(tree: &Ast, mut n: u32) -> bool {
    let subs: Vec<&Ast> = match tree {
        Ast::Repetition(repetition) => {
            if let Some((min, max)) = counts(&repetition.op.kind) {
                let m = max.unwrap_or(min);
                if max == Some(0) {
                    return true;
                }
                if m > n {
                    return false;
                }
                n = n.checked_div(m).unwrap_or(n);
            }
            vec![&repetition.ast]
        }
        Ast::Group(group) => vec![&group.ast],
        Ast::Concat(concat) => concat.asts.iter().collect(),
        Ast::Alternation(alternation) => alternation.asts.iter().collect(),
        _ => Vec::new(),
    };
    subs.into_iter().all(|sub| copies_within(sub, n))
}

// ------------------------------------------------------------------------------ bridging

/// Rewrites the tree (of `text`) in place to Go's meaning, or refuses it.
fn bridge(tree: &mut Ast, text: &str) -> Result<(), PatternError> {
    let replacement = match tree {
        Ast::Empty(_) | Ast::Dot(_) => None,
        Ast::Flags(set) => {
            flags(&set.flags)?;
            None
        }
        Ast::Literal(literal) => {
            self::literal(literal, text)?;
            None
        }
        Ast::Assertion(assertion) => assertion_replacement(assertion)?,
        Ast::ClassUnicode(class) => unicode_class(class)?.map(Ast::class_bracketed),
        Ast::ClassPerl(class) => Some(Ast::class_bracketed(ascii_class(class))),
        Ast::ClassBracketed(class) => {
            // Go reads `x-y` as a range whatever `x` is; the crate reads `--` as set difference,
            // or a leading `-` as a literal even before `-y`: `[--/]` is Go's `[\x{2d}-/]`.
            let written = text
                .get(class.span.start.offset..class.span.end.offset)
                .unwrap_or_default();
            if written.contains("--") {
                return unsupported("-- inside a class");
            }
            class_set(&mut class.kind, text)?;
            None
        }
        Ast::Repetition(repetition) => {
            if matches!(*repetition.ast, Ast::Repetition(_)) {
                return unsupported("a repetition of a repetition (a**)");
            }
            bridge(&mut repetition.ast, text)?;
            None
        }
        Ast::Group(group) => {
            match &group.kind {
                GroupKind::CaptureIndex(_) => {}
                GroupKind::CaptureName { name, .. } => {
                    let go = !name.name.is_empty()
                        && name
                            .name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !go {
                        return unsupported("a group name outside [A-Za-z0-9_]");
                    }
                }
                GroupKind::NonCapturing(group_flags) => flags(group_flags)?,
            }
            bridge(&mut group.ast, text)?;
            None
        }
        Ast::Alternation(alternation) => {
            for ast in &mut alternation.asts {
                bridge(ast, text)?;
            }
            None
        }
        Ast::Concat(concat) => {
            for ast in &mut concat.asts {
                bridge(ast, text)?;
            }
            None
        }
    };
    if let Some(replacement) = replacement {
        *tree = replacement;
    }
    Ok(())
}

/// Go's flags are `i`, `m`, `s`, `U` (and `-`).
fn flags(flags: &Flags) -> Result<(), PatternError> {
    for FlagsItem { kind, .. } in &flags.items {
        match kind {
            FlagsItemKind::Negation
            | FlagsItemKind::Flag(
                Flag::CaseInsensitive | Flag::MultiLine | Flag::DotMatchesNewLine | Flag::SwapGreed,
            ) => {}
            FlagsItemKind::Flag(Flag::IgnoreWhitespace) => return unsupported("the x flag"),
            FlagsItemKind::Flag(Flag::Unicode) => return unsupported("the u flag"),
            FlagsItemKind::Flag(Flag::CRLF) => return unsupported("the R flag"),
        }
    }
    Ok(())
}

/// Go's escapes: no `\u`/`\U`; a lone `\1`..`\7` is a backreference (refused in Go). Octal
/// escapes, which the crate reads only when asked, are rewritten as `\x{…}`.
fn literal(literal: &mut Literal, text: &str) -> Result<(), PatternError> {
    match literal.kind {
        LiteralKind::HexFixed(HexLiteralKind::X) | LiteralKind::HexBrace(HexLiteralKind::X) => {}
        LiteralKind::HexFixed(_) | LiteralKind::HexBrace(_) => {
            return unsupported("\\u or \\U escapes");
        }
        LiteralKind::Octal => {
            let written = text
                .get(literal.span.start.offset..literal.span.end.offset)
                .unwrap_or_default();
            if written.len() == 2 && literal.c != '\0' {
                return unsupported("a backreference (\\1 to \\7)");
            }
            literal.kind = LiteralKind::HexBrace(HexLiteralKind::X);
        }
        _ => {}
    }
    Ok(())
}

/// `\b` and `\B` become ASCII word boundaries; `\<` and `\>` are Go's literal `<` and `>`.
fn assertion_replacement(assertion: &Assertion) -> Result<Option<Ast>, PatternError> {
    let span = assertion.span;
    Ok(match assertion.kind {
        AssertionKind::StartLine
        | AssertionKind::EndLine
        | AssertionKind::StartText
        | AssertionKind::EndText => None,
        AssertionKind::WordBoundary | AssertionKind::NotWordBoundary => {
            let ascii = Flags {
                span,
                items: vec![
                    FlagsItem {
                        span,
                        kind: FlagsItemKind::Negation,
                    },
                    FlagsItem {
                        span,
                        kind: FlagsItemKind::Flag(Flag::Unicode),
                    },
                ],
            };
            Some(Ast::group(ast::Group {
                span,
                kind: GroupKind::NonCapturing(ascii),
                ast: Box::new(Ast::assertion(assertion.clone())),
            }))
        }
        AssertionKind::WordBoundaryStartAngle => Some(Ast::literal(verbatim(span, '<'))),
        AssertionKind::WordBoundaryEndAngle => Some(Ast::literal(verbatim(span, '>'))),
        AssertionKind::WordBoundaryStart
        | AssertionKind::WordBoundaryEnd
        | AssertionKind::WordBoundaryStartHalf
        | AssertionKind::WordBoundaryEndHalf => {
            return unsupported("\\b{...} boundaries");
        }
    })
}

fn verbatim(span: Span, c: char) -> Literal {
    Literal {
        span,
        kind: LiteralKind::Verbatim,
        c,
    }
}

/// A class of the listed inclusive ranges.
fn ranges_class(span: Span, negated: bool, ranges: &[(char, char)]) -> ClassBracketed {
    let hex = |c| Literal {
        span,
        kind: LiteralKind::HexBrace(HexLiteralKind::X),
        c,
    };
    let items = ranges
        .iter()
        .map(|&(start, end)| {
            ClassSetItem::Range(ClassSetRange {
                span,
                start: hex(start),
                end: hex(end),
            })
        })
        .collect();
    ClassBracketed {
        span,
        negated,
        kind: ClassSet::union(ClassSetUnion { span, items }),
    }
}

/// Go's ASCII `\d`, `\s` (`[\t\n\f\r ]`), `\w`, negated as written.
fn ascii_class(class: &ClassPerl) -> ClassBracketed {
    let ranges: &[(char, char)] = match class.kind {
        ClassPerlKind::Digit => &[('0', '9')],
        ClassPerlKind::Space => &[('\t', '\n'), ('\u{c}', '\r'), (' ', ' ')],
        ClassPerlKind::Word => &[('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')],
    };
    ranges_class(class.span, class.negated, ranges)
}

/// Checks a Unicode class against Go's names (turning `\p{^X}` into `\P{X}`); `Some` holds the
/// replacement Go's `C` needs (its `Cc|Cf|Co|Cs`; surrogates never occur in a value), or `Cs`
/// (no character, or every one when negated).
fn unicode_class(class: &mut ClassUnicode) -> Result<Option<ClassBracketed>, PatternError> {
    let name = match &mut class.kind {
        ClassUnicodeKind::OneLetter(letter) => letter.to_string(),
        ClassUnicodeKind::Named(name) => {
            if let Some(positive) = name.strip_prefix('^') {
                *name = positive.to_owned();
                class.negated = !class.negated;
            }
            name.clone()
        }
        ClassUnicodeKind::NamedValue { .. } => {
            return unsupported("\\p{name=value} or \\p{name:value}");
        }
    };
    let one_letter = matches!(class.kind, ClassUnicodeKind::OneLetter(_));
    let known = name == "Any"
        || GO_CATEGORIES.contains(&name.as_str())
        || (!one_letter && GO_SCRIPTS.contains(&name.as_str()));
    if !known {
        return unsupported("a Unicode class name Go does not have");
    }
    let span = class.span;
    if name == "Cs" {
        // Surrogates never occur in a value, and the crate has no class for them.
        return Ok(Some(ranges_class(
            span,
            !class.negated,
            &[('\0', char::MAX)],
        )));
    }
    if name != "C" {
        return Ok(None);
    }
    let part = |name: &str| {
        ClassSetItem::Unicode(ClassUnicode {
            span,
            negated: false,
            kind: ClassUnicodeKind::Named(name.to_owned()),
        })
    };
    Ok(Some(ClassBracketed {
        span,
        negated: class.negated,
        kind: ClassSet::union(ClassSetUnion {
            span,
            items: vec![part("Cc"), part("Cf"), part("Co")],
        }),
    }))
}

/// A bracketed class: Go has no nested classes or set operations (it reads `[`, `&&`, `--` and
/// `~~` inside a class as literal characters), so those are refused.
fn class_set(set: &mut ClassSet, text: &str) -> Result<(), PatternError> {
    match set {
        ClassSet::BinaryOp(_) => unsupported("class set operations (&&, --, ~~)"),
        ClassSet::Item(item) => class_item(item, text),
    }
}

fn class_item(item: &mut ClassSetItem, text: &str) -> Result<(), PatternError> {
    let replacement = match item {
        ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) => None,
        ClassSetItem::Literal(literal) => {
            self::literal(literal, text)?;
            None
        }
        ClassSetItem::Range(range) => {
            self::literal(&mut range.start, text)?;
            self::literal(&mut range.end, text)?;
            None
        }
        ClassSetItem::Unicode(class) => unicode_class(class)?,
        ClassSetItem::Perl(class) => Some(ascii_class(class)),
        ClassSetItem::Bracketed(_) => return unsupported("a class inside a class"),
        ClassSetItem::Union(union) => {
            for item in &mut union.items {
                class_item(item, text)?;
            }
            None
        }
    };
    if let Some(class) = replacement {
        *item = ClassSetItem::Bracketed(Box::new(class));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_go_class_name_compiles() {
        for name in GO_CATEGORIES.iter().chain(GO_SCRIPTS).chain(&["Any"]) {
            for pattern in [format!(r"\p{{{name}}}"), format!(r"\P{{{name}}}")] {
                let compiled = Pattern::new(&pattern);
                assert!(compiled.is_ok(), "{pattern}: {compiled:?}");
            }
        }
        for letter in ["C", "L", "M", "N", "P", "S", "Z"] {
            assert!(Pattern::new(&format!(r"\p{letter}")).is_ok(), "{letter}");
        }
        assert!(Pattern::new(r"\pX").is_err());
        let surrogates = Pattern::new(r"\p{Cs}").unwrap();
        assert!(!surrogates.matches("a") && !surrogates.matches(""));
        assert!(Pattern::new(r"\P{Cs}").unwrap().matches("\u{e9}"));
    }

    #[test]
    fn crate_messages_keep_one_escaped_line() {
        let message = "regex parse error:\n    a\n    ^\nerror: something \"odd\"";
        assert_eq!(first_line(message), r#"something \"odd\""#);
        assert_eq!(
            first_line("no such line\nat all"),
            "refused by the regex crate"
        );
    }
}
