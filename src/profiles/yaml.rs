//! A strict reader for the YAML subset profile files are written in, producing the same tree
//! ([`Node`]) the JSON reader produces, so one schema walk checks both ([`parse`], public, gives
//! it as a `serde_json::Value`).
//!
//! Read: block mappings and sequences (a sequence may sit at its key's indentation), flow
//! sequences and mappings (`[a, b]`, `{claim: x, value: y}`, possibly over several lines),
//! plain, single-quoted and double-quoted scalars (YAML 1.2 escapes), comments, and an optional
//! `---` document start and `...` document end.
//!
//! Every scalar is a **string** of its text, as chinmina-bridge reads profile files into string
//! fields: `name: 123` is the name `"123"`, and `yes`, `on`, `no`, `true` stay strings (no
//! YAML 1.1 booleans). A node that is absent (`match:` with nothing under it) is `null`.
//!
//! Refused, each with its line and column: anchors, aliases and merge keys (`&`, `*`, `<<`), tags
//! (`!`), several documents, complex keys (`?`, or a flow collection as a key), block scalars
//! (`|`, `>`), directives (`%YAML`), tabs outside quotes and comments, a byte order mark, control
//! characters, and anything YAML would read across lines in a way this reader does not: a plain
//! scalar continued on the next line, a quoted scalar not closed on its line, a more indented
//! line nothing can own. A duplicate key is not refused here: it is reported (with the path and
//! position of the second occurrence) for the schema to fail the file, like the JSON reader's.
//!
//! Bounded: the caller caps the input at the file limit; nesting is at most [`MAX_DEPTH`]
//! collections deep (so the recursion is too), a key at most [`MAX_KEY_BYTES`] bytes. The
//! reader is pure: bytes in, a tree (or the first problem) out.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use super::tree::{Node, ObjectBuilder};

use super::json::Path;

/// The deepest nesting of collections read.
pub const MAX_DEPTH: usize = 16;
/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// The most duplicate keys reported; one more is an error (the file fails either way).
pub const MAX_DUPLICATES: usize = 64;
/// The most path text kept for positions (a path can be kilobytes deep, a node a few bytes):
/// past it, problems are reported without line and column.
const MAX_POSITION_TEXT: usize = 8 * 1024 * 1024;

/// A place in the file: 1-based line and column (the column counts characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u32,
    pub column: u32,
}

/// `line 3, column 7`
impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a file is not YAML this reader accepts, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub at: Position,
    pub problem: YamlProblem,
}

/// `line 3, column 7: anchors (&) are not supported`
impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.problem)
    }
}

impl std::error::Error for YamlError {}

/// The rule a YAML file broke.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum YamlProblem {
    /// The bytes are not UTF-8.
    NotUtf8,
    /// The file starts with a byte order mark.
    ByteOrderMark,
    /// A control or other non-printable character outside what YAML allows.
    ControlCharacter { code: u32 },
    /// A carriage return not followed by a line feed.
    LoneCarriageReturn,
    /// A tab outside a quoted scalar or a comment.
    Tab,
    /// An anchor (`&name`).
    Anchor,
    /// An alias (`*name`).
    Alias,
    /// A merge key (`<<`).
    MergeKey,
    /// A tag (`!name`, `!!str`).
    Tag,
    /// A complex key (`? key`, or a flow collection used as a key).
    ComplexKey,
    /// A block scalar (`|` or `>`).
    BlockScalar,
    /// A directive (`%YAML`, `%TAG`).
    Directive,
    /// A second document.
    SeveralDocuments,
    /// No document at all (only blank lines and comments).
    NoDocument,
    /// Text after `---` on its line.
    TextAfterDocumentStart,
    /// An indicator YAML reserves (`@`, backquote) or one that cannot start a node here.
    UnexpectedIndicator { indicator: char },
    /// More nested collections than [`MAX_DEPTH`].
    TooDeep { max: usize },
    /// A key longer than [`MAX_KEY_BYTES`].
    KeyTooLong { max: usize },
    /// A scalar YAML would continue on the next line.
    MultiLineScalar,
    /// A quoted scalar without its closing quote.
    UnclosedQuote,
    /// A `\` escape YAML does not define.
    InvalidEscape,
    /// A line indented where nothing can own it.
    UnexpectedIndentation,
    /// A line of a block mapping that is not `key: value`.
    ExpectedKey,
    /// A key not followed by `:`.
    MissingColon,
    /// A key with no text (`: value`).
    EmptyKey,
    /// A `key: value` where only a value may be (`a: b: c`, `[a: b]`).
    MappingNotAllowed,
    /// A block sequence where only a value on the key's line may be (`key: - a`).
    SequenceNotAllowed,
    /// Text after a complete node on its line.
    TextAfterNode,
    /// A `#` comment not separated from the text before it by a space.
    CommentWithoutSpace,
    /// A flow collection not closed before the end of the file.
    UnclosedFlow { close: char },
    /// Something other than `,` or the closing bracket after a flow entry.
    ExpectedFlowSeparator { close: char },
    /// `{{` where a flow mapping key was expected: the `{{...}}` literals must be quoted.
    UnquotedPlaceholder,
    /// More than [`MAX_DUPLICATES`] duplicate keys.
    TooManyDuplicates { max: usize },
}

impl fmt::Display for YamlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YamlProblem::NotUtf8 => f.write_str("not UTF-8"),
            YamlProblem::ByteOrderMark => {
                f.write_str("byte order mark (save the file as UTF-8 without one)")
            }
            YamlProblem::ControlCharacter { code } => {
                write!(f, "control character U+{code:04X}")
            }
            YamlProblem::LoneCarriageReturn => f.write_str("carriage return without a line feed"),
            YamlProblem::Tab => f.write_str("tab (indent and separate with spaces)"),
            YamlProblem::Anchor => f.write_str("anchors (&) are not supported"),
            YamlProblem::Alias => {
                f.write_str("aliases (*) are not supported (quote a \"*\" repository entry)")
            }
            YamlProblem::MergeKey => f.write_str("merge keys (<<) are not supported"),
            YamlProblem::Tag => f.write_str("tags (!) are not supported"),
            YamlProblem::ComplexKey => f.write_str("complex keys are not supported"),
            YamlProblem::BlockScalar => f.write_str("block scalars (| and >) are not supported"),
            YamlProblem::Directive => f.write_str("directives (%) are not supported"),
            YamlProblem::SeveralDocuments => f.write_str("a second document"),
            YamlProblem::NoDocument => f.write_str("no document"),
            YamlProblem::TextAfterDocumentStart => f.write_str("text after ---"),
            YamlProblem::UnexpectedIndicator { indicator } => {
                write!(f, "{indicator:?} cannot start a node here")
            }
            YamlProblem::TooDeep { max } => write!(f, "nested more than {max} deep"),
            YamlProblem::KeyTooLong { max } => write!(f, "key longer than {max} bytes"),
            YamlProblem::MultiLineScalar => {
                f.write_str("a scalar continued on the next line (keep it on one line)")
            }
            YamlProblem::UnclosedQuote => f.write_str("quoted scalar not closed"),
            YamlProblem::InvalidEscape => f.write_str("invalid escape"),
            YamlProblem::UnexpectedIndentation => f.write_str("unexpected indentation"),
            YamlProblem::ExpectedKey => f.write_str("expected a key"),
            YamlProblem::MissingColon => f.write_str("key without ':'"),
            YamlProblem::EmptyKey => f.write_str("empty key"),
            YamlProblem::MappingNotAllowed => f.write_str("a key: value is not allowed here"),
            YamlProblem::SequenceNotAllowed => {
                f.write_str("a block sequence cannot start on its key's line")
            }
            YamlProblem::TextAfterNode => f.write_str("unexpected text after the value"),
            YamlProblem::CommentWithoutSpace => f.write_str("'#' needs a space before it"),
            YamlProblem::UnclosedFlow { close } => write!(f, "missing closing {close:?}"),
            YamlProblem::ExpectedFlowSeparator { close } => {
                write!(f, "expected ',' or {close:?}")
            }
            YamlProblem::UnquotedPlaceholder => {
                f.write_str("unquoted {{...}} (write it in quotes: \"{{all-repositories}}\")")
            }
            YamlProblem::TooManyDuplicates { max } => {
                write!(f, "more than {max} duplicate keys")
            }
        }
    }
}

/// A read document: the tree, where each path is (its key, or its sequence item), and every
/// duplicate key (path and place of the later occurrence; the first is kept).
#[derive(Debug)]
pub struct YamlDocument {
    pub value: Value,
    pub positions: BTreeMap<String, Position>,
    pub duplicates: Vec<(String, Position)>,
}

/// Reads one YAML document.
pub fn parse(bytes: &[u8]) -> Result<YamlDocument> {
    let (tree, document) = parse_tree(bytes)?;
    Ok(YamlDocument {
        value: tree.into_value(),
        ..document
    })
}

/// [`parse`], the tree as the schema walk reads it (the document's `value` left `null`).
pub(crate) fn parse_tree(bytes: &[u8]) -> Result<(Node, YamlDocument)> {
    let src = text(bytes)?;
    let mut parser = Parser {
        src,
        pos: 0,
        line: 1,
        line_start: 0,
        positions: BTreeMap::new(),
        position_text: 0,
        duplicates: Vec::new(),
    };
    let tree = parser.document()?;
    let document = YamlDocument {
        value: Value::Null,
        positions: parser.positions,
        duplicates: parser.duplicates,
    };
    Ok((tree, document))
}

/// The bytes as text, refusing what YAML does not allow in a stream (or this reader does not).
fn text(bytes: &[u8]) -> Result<&str> {
    let src = match std::str::from_utf8(bytes) {
        Ok(src) => src,
        Err(error) => {
            let valid = bytes.get(..error.valid_up_to()).unwrap_or_default();
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            return Err(YamlError {
                at: position_at(valid, valid.len()),
                problem: YamlProblem::NotUtf8,
            });
        }
    };
    let mut chars = src.char_indices().peekable();
    while let Some((offset, c)) = chars.next() {
        let problem = match c {
            '\u{feff}' if offset == 0 => YamlProblem::ByteOrderMark,
            '\r' if chars.peek().map(|&(_, next)| next) != Some('\n') => {
                YamlProblem::LoneCarriageReturn
            }
            '\t' | '\n' | '\r' => continue,
            c if is_printable(c) => continue,
            c => YamlProblem::ControlCharacter { code: u32::from(c) },
        };
        return Err(YamlError {
            at: position_at(src, offset),
            problem,
        });
    }
    Ok(src)
}

/// YAML's printable characters (`c-printable`), besides tab and line breaks.
fn is_printable(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
        || c >= '\u{10000}'
}

/// The position of byte `offset` of `src`.
fn position_at(src: &str, offset: usize) -> Position {
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    Position {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

/// Where a node starts, which decides what it may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// First on its line (after the indentation).
    LineStart,
    /// After `- ` on a sequence entry's line: may be a compact mapping or sequence.
    AfterDash,
    /// After `key: ` on the key's line: a scalar or a flow collection only.
    AfterColon,
}

/// A scalar read where a key may be: its text, whether it was plain, and where it started.
struct Scalar {
    text: String,
    plain: bool,
    at: Position,
}

type Result<T> = std::result::Result<T, YamlError>;

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the cursor.
    pos: usize,
    /// 1-based line of the cursor.
    line: u32,
    /// Byte offset where the cursor's line starts.
    line_start: usize,
    positions: BTreeMap<String, Position>,
    /// Bytes of path text in `positions`, at most [`MAX_POSITION_TEXT`].
    position_text: usize,
    duplicates: Vec<(String, Position)>,
}

impl Parser<'_> {
    // ------------------------------------------------------------------ cursor

    fn peek(&self) -> Option<char> {
        self.src
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    /// The character after the next one.
    fn peek_second(&self) -> Option<char> {
        let mut rest = self.src.get(self.pos..)?.chars();
        rest.next();
        rest.next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == '\n' {
                self.line = self.line.saturating_add(1);
                self.line_start = self.pos;
            }
        }
    }

    fn here(&self) -> Position {
        let column = self
            .src
            .get(self.line_start..self.pos)
            .unwrap_or_default()
            .chars()
            .count()
            + 1;
        Position {
            line: self.line,
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// The cursor's column, 0-based (the indentation a node starting here has).
    fn column(&self) -> usize {
        self.src
            .get(self.line_start..self.pos)
            .unwrap_or_default()
            .chars()
            .count()
    }

    fn error<T>(&self, problem: YamlProblem) -> Result<T> {
        self.error_at(self.here(), problem)
    }

    fn error_at<T>(&self, at: Position, problem: YamlProblem) -> Result<T> {
        Err(YamlError { at, problem })
    }

    fn at_eof(&self) -> bool {
        self.pos >= self.src.len()
    }

    /// At a line break (`\n` or `\r\n`) or the end of the file.
    fn at_line_end(&self) -> bool {
        matches!(self.peek(), None | Some('\n' | '\r'))
    }

    /// Whether `c` separates: a space, a line break, or the end of the file.
    fn is_blank(c: Option<char>) -> bool {
        matches!(c, None | Some(' ' | '\n' | '\r'))
    }

    /// Moves past the line break at the cursor, if any.
    fn line_break(&mut self) {
        if self.peek() == Some('\r') {
            self.bump();
        }
        if self.peek() == Some('\n') {
            self.bump();
        }
    }

    /// Skips spaces; a tab is refused. Returns whether any space was skipped.
    fn spaces(&mut self) -> Result<bool> {
        let mut any = false;
        loop {
            match self.peek() {
                Some(' ') => {
                    any = true;
                    self.bump();
                }
                Some('\t') => return self.error(YamlProblem::Tab),
                _ => return Ok(any),
            }
        }
    }

    /// Whether the character before the cursor, on its line, is a space.
    fn after_space(&self) -> bool {
        self.pos > self.line_start
            && self.src.as_bytes().get(self.pos.wrapping_sub(1)) == Some(&b' ')
    }

    /// Skips a comment (the cursor at its `#`) up to the line break.
    fn comment(&mut self) {
        while !self.at_line_end() {
            self.bump();
        }
    }

    /// At a line start: skips lines holding only spaces and comments. The cursor stays at the
    /// start of the next line with content, or at the end of the file.
    fn skip_blank_lines(&mut self) -> Result<()> {
        loop {
            let start = (self.pos, self.line, self.line_start);
            self.spaces()?;
            match self.peek() {
                None => return Ok(()),
                Some('#') => self.comment(),
                Some('\n' | '\r') => {}
                Some(_) => {
                    (self.pos, self.line, self.line_start) = start;
                    return Ok(());
                }
            }
            self.line_break();
        }
    }

    /// After a node: the rest of the line may hold spaces and a comment only; then moves to the
    /// next line with content.
    fn end_of_line(&mut self) -> Result<()> {
        let spaced = self.spaces()? || self.after_space();
        match self.peek() {
            Some('#') if spaced => self.comment(),
            Some('#') => return self.error(YamlProblem::CommentWithoutSpace),
            _ if self.at_line_end() => {}
            _ => return self.error(YamlProblem::TextAfterNode),
        }
        self.line_break();
        self.skip_blank_lines()
    }

    /// At a line start: the line's indentation (leading spaces), without moving.
    fn indentation(&self) -> usize {
        self.src
            .get(self.pos..)
            .unwrap_or_default()
            .bytes()
            .take_while(|&b| b == b' ')
            .count()
    }

    /// At a line start: whether the line is a `---` or `...` marker.
    fn marker(&self, marker: &str) -> bool {
        let rest = self.src.get(self.pos..).unwrap_or_default();
        rest.strip_prefix(marker)
            .is_some_and(|after| Self::is_blank(after.chars().next()) || after.starts_with('\t'))
    }

    fn is_marker_line(&self) -> bool {
        self.marker("---") || self.marker("...")
    }

    /// Moves the cursor over `n` bytes of ASCII marker or indentation.
    fn skip_ascii(&mut self, n: usize) {
        for _ in 0..n {
            self.bump();
        }
    }

    // ---------------------------------------------------------------- document

    fn document(&mut self) -> Result<Node> {
        self.skip_blank_lines()?;
        if self.peek() == Some('%') {
            return self.error(YamlProblem::Directive);
        }
        if self.marker("---") {
            self.skip_ascii(3);
            let spaced = self.spaces()?;
            match self.peek() {
                Some('#') if spaced => self.comment(),
                _ if self.at_line_end() => {}
                _ => return self.error(YamlProblem::TextAfterDocumentStart),
            }
            self.line_break();
            self.skip_blank_lines()?;
        }
        if self.at_eof() || self.is_marker_line() {
            return self.error(YamlProblem::NoDocument);
        }
        let indent = self.indentation();
        self.skip_ascii(indent);
        let value = self.node(indent, indent, &Path::Root, 0, Context::LineStart)?;
        if self.marker("...") {
            self.skip_ascii(3);
            self.end_of_line()?;
            if !self.at_eof() {
                return self.error(YamlProblem::SeveralDocuments);
            }
        }
        if self.marker("---") {
            return self.error(YamlProblem::SeveralDocuments);
        }
        if !self.at_eof() {
            let indent = self.indentation();
            self.skip_ascii(indent);
            return self.error(YamlProblem::UnexpectedIndentation);
        }
        Ok(value)
    }

    // ------------------------------------------------------------------ block

    /// Reads the node at the cursor, which sits at column `indent`; a flow collection here must
    /// indent its later lines deeper than `block` (the indentation of the block collection it is
    /// in). Ends at the start of the next line with content (or the end of the file).
    fn node(
        &mut self,
        indent: usize,
        block: usize,
        path: &Path,
        depth: usize,
        context: Context,
    ) -> Result<Node> {
        self.note(path);
        let c = self.peek();
        let blank_after = Self::is_blank(self.peek_second());
        match c {
            Some('-') if blank_after => {
                if context == Context::AfterColon {
                    return self.error(YamlProblem::SequenceNotAllowed);
                }
                self.sequence(indent, path, depth + 1)
            }
            Some('[' | '{') => {
                let value = self.flow(block, path, depth + 1)?;
                self.spaces()?;
                if self.peek() == Some(':') {
                    return self.error(YamlProblem::ComplexKey);
                }
                self.end_of_line()?;
                Ok(value)
            }
            _ => {
                let scalar = self.key_or_scalar(false)?;
                self.spaces()?;
                if self.peek() == Some(':') && Self::is_blank(self.peek_second()) {
                    if context == Context::AfterColon {
                        return self.error(YamlProblem::MappingNotAllowed);
                    }
                    return self.mapping(indent, path, depth + 1, scalar);
                }
                if scalar.plain && scalar.text.is_empty() {
                    return self.error(YamlProblem::EmptyKey);
                }
                self.end_of_line()?;
                Ok(Node::String(scalar.text))
            }
        }
    }

    /// A block sequence whose first `-` is at the cursor, at column `indent`.
    fn sequence(&mut self, indent: usize, path: &Path, depth: usize) -> Result<Node> {
        if depth > MAX_DEPTH {
            return self.error(YamlProblem::TooDeep { max: MAX_DEPTH });
        }
        let mut items = Vec::new();
        loop {
            let item_path = path.index(items.len());
            self.note(&item_path);
            self.bump(); // the `-`
            self.spaces()?;
            let item = if self.peek() == Some('#') || self.at_line_end() {
                if self.peek() == Some('#') {
                    self.comment();
                }
                self.line_break();
                self.skip_blank_lines()?;
                self.block_value(indent, &item_path, depth, false)?
            } else {
                let column = self.column();
                self.node(column, indent, &item_path, depth, Context::AfterDash)?
            };
            items.push(item);
            // The next entry is a `-` at this indentation; anything else there is the caller's.
            if !self.continues(indent)? || !self.at_dash(self.indentation()) {
                return Ok(Node::Array(items));
            }
            self.skip_ascii(indent);
        }
    }

    /// A block mapping whose first key (already read) started at column `indent`; the cursor
    /// is after the key and its spaces, at the `:`.
    fn mapping(&mut self, indent: usize, path: &Path, depth: usize, first: Scalar) -> Result<Node> {
        if depth > MAX_DEPTH {
            return self.error_at(first.at, YamlProblem::TooDeep { max: MAX_DEPTH });
        }
        let mut object = ObjectBuilder::new();
        let mut key = first;
        loop {
            self.check_key(&key)?;
            self.bump(); // the `:`
            let key_path = path.key(&key.text);
            let value = self.mapping_value(indent, &key_path, depth)?;
            let key_path = key_path.render();
            self.insert(&mut object, key_path, key, value)?;
            if !self.continues(indent)? {
                return Ok(Node::Object(object.finish()));
            }
            self.skip_ascii(indent);
            key = self.block_key()?;
        }
    }

    /// After a collection entry (the cursor at a line start): whether the next line is at the
    /// collection's indentation. A line indented deeper is an error; a shallower one, a marker
    /// or the end of the file ends the collection. The cursor does not move (but to an error).
    fn continues(&mut self, indent: usize) -> Result<bool> {
        if self.at_eof() || self.is_marker_line() {
            return Ok(false);
        }
        let found = self.indentation();
        if found > indent {
            self.skip_ascii(found);
            return self.error(YamlProblem::UnexpectedIndentation);
        }
        Ok(found == indent)
    }

    /// At a line start: whether the line is a sequence entry (`-` and a blank) after `indent`
    /// spaces.
    fn at_dash(&self, indent: usize) -> bool {
        let rest = self.src.get(self.pos + indent..).unwrap_or_default();
        rest.starts_with('-') && Self::is_blank(rest.chars().nth(1))
    }

    /// A key of a block mapping after its first, at the cursor; the cursor ends at the `:`.
    fn block_key(&mut self) -> Result<Scalar> {
        match self.peek() {
            Some('-') if Self::is_blank(self.peek_second()) => {
                return self.error(YamlProblem::ExpectedKey);
            }
            Some('[' | '{') => return self.error(YamlProblem::ComplexKey),
            _ => {}
        }
        let key = self.key_or_scalar(false)?;
        self.spaces()?;
        if self.peek() == Some(':') && Self::is_blank(self.peek_second()) {
            return Ok(key);
        }
        if key.plain && key.text.is_empty() {
            return self.error(YamlProblem::ExpectedKey);
        }
        self.error(YamlProblem::MissingColon)
    }

    /// Refuses keys this reader does not take: merge keys, empty and over-long keys.
    fn check_key(&self, key: &Scalar) -> Result<()> {
        if key.plain && key.text == "<<" {
            return self.error_at(key.at, YamlProblem::MergeKey);
        }
        if key.plain && key.text.is_empty() {
            return self.error_at(key.at, YamlProblem::EmptyKey);
        }
        if key.text.len() > MAX_KEY_BYTES {
            return self.error_at(key.at, YamlProblem::KeyTooLong { max: MAX_KEY_BYTES });
        }
        Ok(())
    }

    /// Puts `key: value` into `object` (the key's path is `path`), or reports a duplicate.
    fn insert(
        &mut self,
        object: &mut ObjectBuilder,
        path: String,
        key: Scalar,
        value: Node,
    ) -> Result<()> {
        if object.contains_key(&key.text) {
            if self.duplicates.len() >= MAX_DUPLICATES {
                return self.error_at(
                    key.at,
                    YamlProblem::TooManyDuplicates {
                        max: MAX_DUPLICATES,
                    },
                );
            }
            self.duplicates.push((path, key.at));
        } else {
            self.record(path, key.at, true);
            object.insert(key.text, value);
        }
        Ok(())
    }

    /// Records the cursor as where the node at `path` is, unless a place is known already.
    fn note(&mut self, path: &Path) {
        let here = self.here();
        self.record(path.render(), here, false);
    }

    /// Records `at` for `path` (replacing a known place when `replace`), within the budget.
    fn record(&mut self, path: String, at: Position, replace: bool) {
        if let Some(known) = self.positions.get_mut(&path) {
            if replace {
                *known = at;
            }
            return;
        }
        if self.position_text + path.len() <= MAX_POSITION_TEXT {
            self.position_text += path.len();
            self.positions.insert(path, at);
        }
    }

    /// The value after `key:` (the cursor after the `:`) of a mapping at column `indent`.
    fn mapping_value(&mut self, indent: usize, path: &Path, depth: usize) -> Result<Node> {
        self.spaces()?;
        match self.peek() {
            Some('#') => self.comment(),
            _ if self.at_line_end() => {}
            _ => {
                let column = self.column();
                return self.node(column, indent, path, depth, Context::AfterColon);
            }
        }
        self.line_break();
        self.skip_blank_lines()?;
        self.block_value(indent, path, depth, true)
    }

    /// A node on the lines after its key or `-` (at the start of the next line with content):
    /// deeper than `indent`, or (`compact`, after a key) a sequence at `indent` itself; anything
    /// else means the node is absent (`null`).
    fn block_value(
        &mut self,
        indent: usize,
        path: &Path,
        depth: usize,
        compact: bool,
    ) -> Result<Node> {
        if self.at_eof() || self.is_marker_line() {
            return Ok(Node::Null);
        }
        let found = self.indentation();
        if found > indent || (compact && found == indent && self.at_dash(found)) {
            self.skip_ascii(found);
            return self.node(found, found, path, depth, Context::LineStart);
        }
        Ok(Node::Null)
    }

    // ---------------------------------------------------------------- scalars

    /// A scalar at the cursor, plain or quoted, on one line. In a flow collection (`flow`) a
    /// plain scalar also ends at `,[]{}`.
    fn key_or_scalar(&mut self, flow: bool) -> Result<Scalar> {
        let at = self.here();
        let c = self.peek();
        let next = self.peek_second();
        let text = match c {
            Some('"') => self.double_quoted()?,
            Some('\'') => self.single_quoted()?,
            Some('&') => return self.error(YamlProblem::Anchor),
            Some('*') => return self.error(YamlProblem::Alias),
            Some('!') => return self.error(YamlProblem::Tag),
            Some('|' | '>') => return self.error(YamlProblem::BlockScalar),
            Some('%') if self.column() == 0 => return self.error(YamlProblem::Directive),
            Some('?') if Self::ends_plain(next, flow) => {
                return self.error(YamlProblem::ComplexKey);
            }
            Some(':') if Self::ends_plain(next, flow) => return self.error(YamlProblem::EmptyKey),
            Some('-') if Self::ends_plain(next, flow) => {
                return self.error(YamlProblem::SequenceNotAllowed);
            }
            Some(c @ ('%' | '@' | '`' | ',' | '[' | ']' | '{' | '}' | '#')) => {
                return self.error(YamlProblem::UnexpectedIndicator { indicator: c });
            }
            _ => {
                return Ok(Scalar {
                    text: self.plain(flow)?,
                    plain: true,
                    at,
                });
            }
        };
        Ok(Scalar {
            text,
            plain: false,
            at,
        })
    }

    /// Whether `next`, after a `-`, `?` or `:`, makes that character an indicator rather than
    /// the start of a plain scalar.
    fn ends_plain(next: Option<char>, flow: bool) -> bool {
        Self::is_blank(next) || (flow && matches!(next, Some(',' | '[' | ']' | '{' | '}')))
    }

    /// A plain scalar: up to `: ` (or `:` at the line end), ` #` or the line end, and in a flow
    /// collection up to `,[]{}` or `:` before one of them; trailing spaces are not part of it.
    fn plain(&mut self, flow: bool) -> Result<String> {
        let start = self.pos;
        let mut end = self.pos;
        loop {
            match self.peek() {
                None | Some('\n' | '\r') => break,
                Some(':') if Self::ends_plain(self.peek_second(), flow) => break,
                Some(',' | '[' | ']' | '{' | '}') if flow => break,
                Some('\t') => return self.error(YamlProblem::Tab),
                Some('#') if end < self.pos => break,
                // `z -]`: YAML allows the `-`, yaml-rust2 (the tests' oracle) does not; a word
                // that is a lone `-` before a flow indicator is refused rather than guessed.
                Some('-')
                    if flow
                        && end < self.pos
                        && matches!(self.peek_second(), Some(',' | '[' | ']' | '{' | '}')) =>
                {
                    return self.error(YamlProblem::UnexpectedIndicator { indicator: '-' });
                }
                Some(' ') => self.bump(),
                Some(_) => {
                    self.bump();
                    end = self.pos;
                }
            }
        }
        // Spaces after the text are left for the caller (a comment needs one before it).
        self.pos = end;
        Ok(self.src.get(start..end).unwrap_or_default().to_owned())
    }

    fn single_quoted(&mut self) -> Result<String> {
        let opened = self.here();
        self.bump();
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return self.error_at(opened, YamlProblem::UnclosedQuote),
                Some('\n' | '\r') => return self.error_at(opened, YamlProblem::MultiLineScalar),
                Some('\'') if self.peek_second() == Some('\'') => {
                    text.push('\'');
                    self.bump();
                    self.bump();
                }
                Some('\'') => {
                    self.bump();
                    return Ok(text);
                }
                Some(c) => {
                    text.push(c);
                    self.bump();
                }
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String> {
        let opened = self.here();
        self.bump();
        let mut text = String::new();
        loop {
            match self.peek() {
                None => return self.error_at(opened, YamlProblem::UnclosedQuote),
                Some('\n' | '\r') => return self.error_at(opened, YamlProblem::MultiLineScalar),
                Some('"') => {
                    self.bump();
                    return Ok(text);
                }
                Some('\\') => {
                    let escape = self.here();
                    self.bump();
                    if self.at_line_end() {
                        return self.error_at(opened, YamlProblem::MultiLineScalar);
                    }
                    let c = self.escape().ok_or(YamlError {
                        at: escape,
                        problem: YamlProblem::InvalidEscape,
                    })?;
                    text.push(c);
                }
                Some(c) => {
                    text.push(c);
                    self.bump();
                }
            }
        }
    }

    /// The character a double-quoted escape (the cursor after its `\`) stands for; `None`
    /// when YAML defines no such escape (a line break here would continue the scalar on the
    /// next line, which this reader does not do).
    fn escape(&mut self) -> Option<char> {
        let c = self.peek()?;
        let digits = match c {
            'x' => 2,
            'u' => 4,
            'U' => 8,
            _ => {
                let unescaped = match c {
                    '0' => '\0',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    't' | '\t' => '\t',
                    'n' => '\n',
                    'v' => '\u{b}',
                    'f' => '\u{c}',
                    'r' => '\r',
                    'e' => '\u{1b}',
                    ' ' => ' ',
                    '"' => '"',
                    '/' => '/',
                    '\\' => '\\',
                    'N' => '\u{85}',
                    '_' => '\u{a0}',
                    'L' => '\u{2028}',
                    'P' => '\u{2029}',
                    _ => return None,
                };
                self.bump();
                return Some(unescaped);
            }
        };
        self.bump();
        let hex = self.src.get(self.pos..self.pos.checked_add(digits)?)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let code = u32::from_str_radix(hex, 16).ok()?;
        self.skip_ascii(digits);
        char::from_u32(code)
    }

    // ------------------------------------------------------------------- flow

    /// A flow collection at the cursor (`[` or `{`), inside a block node at column `indent`:
    /// its later lines must be indented deeper than that. Ends after the closing bracket.
    fn flow(&mut self, indent: usize, path: &Path, depth: usize) -> Result<Node> {
        if depth > MAX_DEPTH {
            return self.error(YamlProblem::TooDeep { max: MAX_DEPTH });
        }
        let opened = self.here();
        let sequence = self.peek() == Some('[');
        if !sequence && self.peek_second() == Some('{') {
            return self.error(YamlProblem::UnquotedPlaceholder);
        }
        let close = if sequence { ']' } else { '}' };
        self.bump();
        let mut items = Vec::new();
        let mut object = ObjectBuilder::new();
        loop {
            self.flow_space(indent, opened, close)?;
            if self.peek() == Some(close) {
                self.bump();
                break;
            }
            if sequence {
                let item_path = path.index(items.len());
                let item = self.flow_node(indent, &item_path, depth)?;
                self.flow_space(indent, opened, close)?;
                if self.peek() == Some(':') {
                    return self.error(YamlProblem::MappingNotAllowed);
                }
                items.push(item);
            } else {
                self.flow_entry(indent, path, depth, &mut object, opened)?;
            }
            self.flow_space(indent, opened, close)?;
            match self.peek() {
                Some(',') => self.bump(),
                Some(c) if c == close => {}
                None => return self.error_at(opened, YamlProblem::UnclosedFlow { close }),
                Some(_) => return self.error(YamlProblem::ExpectedFlowSeparator { close }),
            }
        }
        Ok(if sequence {
            Node::Array(items)
        } else {
            Node::Object(object.finish())
        })
    }

    /// One `key: value` of a flow mapping (the cursor at the key).
    fn flow_entry(
        &mut self,
        indent: usize,
        path: &Path,
        depth: usize,
        object: &mut ObjectBuilder,
        opened: Position,
    ) -> Result<()> {
        match self.peek() {
            Some('{') if self.peek_second() == Some('{') => {
                return self.error(YamlProblem::UnquotedPlaceholder);
            }
            Some('[' | '{') => return self.error(YamlProblem::ComplexKey),
            _ => {}
        }
        let key = self.key_or_scalar(true)?;
        self.check_key(&key)?;
        self.flow_space(indent, opened, '}')?;
        if self.peek() != Some(':') {
            return self.error(YamlProblem::MissingColon);
        }
        self.bump();
        // After a plain key YAML needs a space (or the entry's end) after the `:`; after a
        // quoted one the value may follow at once.
        if key.plain && !Self::ends_plain(self.peek(), true) {
            return self.error(YamlProblem::MissingColon);
        }
        let key_path = path.key(&key.text);
        self.flow_space(indent, opened, '}')?;
        let value = match self.peek() {
            Some(',' | '}') => Node::Null,
            _ => self.flow_node(indent, &key_path, depth)?,
        };
        let key_path = key_path.render();
        self.insert(object, key_path, key, value)
    }

    /// A node inside a flow collection.
    fn flow_node(&mut self, indent: usize, path: &Path, depth: usize) -> Result<Node> {
        self.note(path);
        if matches!(self.peek(), Some('[' | '{')) {
            return self.flow(indent, path, depth + 1);
        }
        let scalar = self.key_or_scalar(true)?;
        Ok(Node::String(scalar.text))
    }

    /// Skips spaces, line breaks and comments inside a flow collection opened at `opened`;
    /// a later line, the closing bracket's too, must be indented deeper than `indent` (YAML's
    /// rule; YAML libraries differ on a closing bracket at the key's indentation, so it is
    /// refused) and may not be a document marker.
    fn flow_space(&mut self, indent: usize, opened: Position, close: char) -> Result<()> {
        let mut spaced = false;
        loop {
            match self.peek() {
                Some(' ') => {
                    spaced = true;
                    self.bump();
                }
                Some('\t') => return self.error(YamlProblem::Tab),
                Some('#') if spaced || self.column() == 0 => self.comment(),
                Some('#') => return self.error(YamlProblem::CommentWithoutSpace),
                Some('\n' | '\r') => {
                    self.line_break();
                    spaced = true;
                    if self.is_marker_line() {
                        return self.error(YamlProblem::UnclosedFlow { close });
                    }
                    let found = self.indentation();
                    let rest = self.src.get(self.pos + found..).unwrap_or_default();
                    let blank = matches!(rest.chars().next(), None | Some('\n' | '\r' | '#'));
                    if !blank && found <= indent {
                        self.skip_ascii(found);
                        return self.error(YamlProblem::UnexpectedIndentation);
                    }
                }
                None => return self.error_at(opened, YamlProblem::UnclosedFlow { close }),
                Some(_) => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(text: &str) -> Value {
        let document = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(document.duplicates.is_empty(), "{:?}", document.duplicates);
        document.value
    }

    fn refused(text: &str) -> (u32, u32, YamlProblem) {
        match parse(text.as_bytes()) {
            Ok(document) => panic!("{text:?} accepted: {}", document.value),
            Err(YamlError { at, problem }) => (at.line, at.column, problem),
        }
    }

    #[test]
    fn reads_block_and_flow_collections_and_scalars() {
        let text = "\
# profiles
pipeline:
  defaults:
    permissions: [\"contents:read\", 'pull_requests:write']
  profiles:
    - name: release   # trailing comment
      match:
        - claim: build_branch
          value: \"main\"
        - {claim: pipeline_slug, valuePattern: '.*-prod'}
      permissions:
      - contents:write
organization:
  profiles: []
";
        assert_eq!(
            read(text),
            json!({
                "pipeline": {
                    "defaults": {"permissions": ["contents:read", "pull_requests:write"]},
                    "profiles": [{
                        "name": "release",
                        "match": [
                            {"claim": "build_branch", "value": "main"},
                            {"claim": "pipeline_slug", "valuePattern": ".*-prod"}
                        ],
                        "permissions": ["contents:write"]
                    }]
                },
                "organization": {"profiles": []}
            })
        );
    }

    #[test]
    fn every_scalar_is_a_string_and_absent_nodes_are_null() {
        assert_eq!(
            read("a: 123\nb: yes\nc: on\nd: true\ne: null\nf: ~\ng:\nh: -1.5\n"),
            json!({"a": "123", "b": "yes", "c": "on", "d": "true", "e": "null", "f": "~",
                   "g": null, "h": "-1.5"})
        );
    }

    #[test]
    fn plain_scalars_keep_their_punctuation() {
        assert_eq!(
            read("a: x:y\nb: a#b\nc: x{{y}}\nd: -x\ne: ?x\nf: \"v[0-9]+\\\\.[0-9]+\"\ng: a, b\n"),
            json!({"a": "x:y", "b": "a#b", "c": "x{{y}}", "d": "-x", "e": "?x",
                   "f": "v[0-9]+\\.[0-9]+", "g": "a, b"})
        );
        assert_eq!(
            read("- [contents:read, a b]"),
            json!([["contents:read", "a b"]])
        );
    }

    #[test]
    fn quoted_scalars_and_escapes() {
        assert_eq!(
            read(
                r#"- 'it''s'
- "\t\"\\\/\x41\u00e9\U0001F600\N\_\L\P\0\e"
- ''
- "{{all-repositories}}"
- '*'
"#
            ),
            json!([
                "it's",
                "\t\"\\/Aé😀\u{85}\u{a0}\u{2028}\u{2029}\0\u{1b}",
                "",
                "{{all-repositories}}",
                "*"
            ])
        );
    }

    #[test]
    fn document_markers_and_line_ends() {
        assert_eq!(read("---\na: b\n...\n# done\n"), json!({"a": "b"}));
        assert_eq!(read("--- # start\r\na: b\r\n"), json!({"a": "b"}));
        assert_eq!(read("  a: b\n  c: d"), json!({"a": "b", "c": "d"}));
    }

    #[test]
    fn multi_line_flow_collections() {
        assert_eq!(
            read("a: [\n  b, # one\n  c,\n  ]\nd: {e: f,\n  g: h}\n"),
            json!({"a": ["b", "c"], "d": {"e": "f", "g": "h"}})
        );
        assert_eq!(
            read("a: [\n  b\n  ]\nc: d\n"),
            json!({"a": ["b"], "c": "d"})
        );
        assert_eq!(
            refused("a: [\n  b,\n]\n"),
            (3, 1, YamlProblem::UnexpectedIndentation)
        );
    }

    #[test]
    fn duplicates_are_reported_with_the_later_place() {
        let document = parse(b"a: 1\nb:\n  c: 2\n  c: 3\na: 4\n").unwrap();
        assert_eq!(document.value, json!({"a": "1", "b": {"c": "2"}}));
        assert_eq!(
            document.duplicates,
            [
                ("$.b.c".to_owned(), Position { line: 4, column: 3 }),
                ("$.a".to_owned(), Position { line: 5, column: 1 })
            ]
        );
        assert_eq!(document.positions["$.b"], Position { line: 2, column: 1 });
        assert_eq!(document.positions["$.b.c"], Position { line: 3, column: 3 });
    }

    #[test]
    fn duplicates_are_bounded() {
        let mut text = String::new();
        for _ in 0..=MAX_DUPLICATES {
            text.push_str("a: b\n");
        }
        assert!(
            parse(text.as_bytes()).is_ok(),
            "{MAX_DUPLICATES} duplicates are reported"
        );
        text.push_str("a: b\n");
        let line = u32::try_from(MAX_DUPLICATES).unwrap() + 2;
        assert_eq!(
            refused(&text),
            (
                line,
                1,
                YamlProblem::TooManyDuplicates {
                    max: MAX_DUPLICATES
                }
            )
        );
    }

    #[test]
    fn positions_of_items() {
        let document = parse(b"list:\n  - x\n  - [y, z]\n").unwrap();
        assert_eq!(
            document.positions["$.list[1]"],
            Position { line: 3, column: 3 }
        );
        assert_eq!(
            document.positions["$.list[1][1]"],
            Position { line: 3, column: 9 }
        );
    }

    #[test]
    fn refusals_name_their_place() {
        use YamlProblem::*;
        let rows: &[(&str, (u32, u32, YamlProblem))] = &[
            ("a: &x b\n", (1, 4, Anchor)),
            ("a: b\nc: *x\n", (2, 4, Alias)),
            ("a:\n  - *\n", (2, 5, Alias)),
            ("<<: {a: b}\n", (1, 1, MergeKey)),
            ("a: !!str b\n", (1, 4, Tag)),
            ("a: !x b\n", (1, 4, Tag)),
            ("? a\n: b\n", (1, 1, ComplexKey)),
            ("[a]: b\n", (1, 4, ComplexKey)),
            ("a: |\n  b\n", (1, 4, BlockScalar)),
            ("a: >\n  b\n", (1, 4, BlockScalar)),
            ("%YAML 1.2\n---\na: b\n", (1, 1, Directive)),
            ("a: b\n---\nc: d\n", (2, 1, SeveralDocuments)),
            ("a: b\n...\nc: d\n", (3, 1, SeveralDocuments)),
            ("\ta: b\n", (1, 1, Tab)),
            ("a:\n\t- b\n", (2, 1, Tab)),
            ("a: b\tc\n", (1, 5, Tab)),
            ("# nothing\n", (2, 1, NoDocument)),
            ("", (1, 1, NoDocument)),
            ("a: b\n  c\n", (2, 3, UnexpectedIndentation)),
            ("a: 'b\n  c'\n", (1, 4, MultiLineScalar)),
            ("a: \"b\\\n  c\"\n", (1, 4, MultiLineScalar)),
            ("a: \"b\n", (1, 4, MultiLineScalar)),
            ("a: \"b", (1, 4, UnclosedQuote)),
            ("a: \"\\q\"\n", (1, 5, InvalidEscape)),
            ("a: \"\\ud800\"\n", (1, 5, InvalidEscape)),
            ("a: b: c\n", (1, 5, MappingNotAllowed)),
            ("a: - b\n", (1, 4, SequenceNotAllowed)),
            ("a: b\nc\n", (2, 2, MissingColon)),
            ("a: [[b] c]\n", (1, 9, ExpectedFlowSeparator { close: ']' })),
            ("a: [z -]\n", (1, 7, UnexpectedIndicator { indicator: '-' })),
            ("a: [b]c\n", (1, 7, TextAfterNode)),
            ("a: [b\n", (1, 4, UnclosedFlow { close: ']' })),
            ("a: [b: c]\n", (1, 6, MappingNotAllowed)),
            ("a: [b\n c]\n", (2, 2, ExpectedFlowSeparator { close: ']' })),
            ("a: [b,\nc]\n", (2, 1, UnexpectedIndentation)),
            (
                "a:\n  - {{all-repositories}}\n",
                (2, 5, UnquotedPlaceholder),
            ),
            ("a: \"b\"c\n", (1, 7, TextAfterNode)),
            ("a: \"b\"#c\n", (1, 7, CommentWithoutSpace)),
            ("a: @b\n", (1, 4, UnexpectedIndicator { indicator: '@' })),
            ("a: `b\n", (1, 4, UnexpectedIndicator { indicator: '`' })),
            ("\u{feff}a: b\n", (1, 1, ByteOrderMark)),
            ("a: b\rc: d\n", (1, 5, LoneCarriageReturn)),
            ("a: b\u{7}\n", (1, 5, ControlCharacter { code: 7 })),
            (": b\n", (1, 1, EmptyKey)),
            ("--- a: b\n", (1, 5, TextAfterDocumentStart)),
            ("- a\nb: c\n", (2, 1, UnexpectedIndentation)),
            ("a: b\n- c\n", (2, 1, ExpectedKey)),
        ];
        for (text, want) in rows {
            assert_eq!(&refused(text), want, "{text:?}");
        }
    }

    #[test]
    fn not_utf8_names_the_byte() {
        let error = parse(b"a: b\nc: \xff\n").unwrap_err();
        assert_eq!(error.to_string(), "line 2, column 4: not UTF-8");
    }

    #[test]
    fn depth_and_key_limits() {
        let mut deep = String::new();
        for level in 0..MAX_DEPTH {
            deep.push_str(&format!("{}k:\n", "  ".repeat(level)));
        }
        deep.push_str(&format!("{}v: x\n", "  ".repeat(MAX_DEPTH)));
        assert_eq!(refused(&deep).2, YamlProblem::TooDeep { max: MAX_DEPTH });
        let fits: String = (0..MAX_DEPTH - 1)
            .map(|level| format!("{}k:\n", "  ".repeat(level)))
            .collect::<String>()
            + &format!("{}v: x\n", "  ".repeat(MAX_DEPTH - 1));
        assert!(parse(fits.as_bytes()).is_ok());
        assert_eq!(
            refused(&format!("{}[]", "[".repeat(20))).2,
            YamlProblem::TooDeep { max: MAX_DEPTH }
        );
        let long = format!("{}: x\n", "k".repeat(MAX_KEY_BYTES + 1));
        assert_eq!(
            refused(&long),
            (1, 1, YamlProblem::KeyTooLong { max: MAX_KEY_BYTES })
        );
    }
}
