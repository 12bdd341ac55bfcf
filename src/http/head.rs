//! The request head: request line and headers, parsed strictly from caller-bounded bytes.
//!
//! [`parse_head`] is a total function over untrusted bytes. It keeps "need more bytes"
//! (`Ok(None)`) apart from "invalid" (`Err`), and it decides the body framing so that no
//! ambiguous message (the request-smuggling shapes of RFC 9112 §6.3) ever reaches a handler.
#![forbid(unsafe_code)]

use super::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_URI_BYTES};
use crate::buffers;
use std::fmt;

/// HTTP request methods kitebridge knows by name; anything else is [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    /// Any other token (answered 404 or 405 by the router).
    Other(String),
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Options => "OPTIONS",
            Method::Other(s) => s,
        }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request's header fields: names lowercased, values as received (may hold obs-text bytes),
/// all in one buffer (one allocation for the lot, not two per field). `Debug` shows the names,
/// never a value (one may be the JWT).
#[derive(Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    /// Per field: where its name ends and where its value ends in `bytes` (each starts where
    /// the one before ends).
    fields: Vec<(usize, usize)>,
}

impl Headers {
    /// Room for `fields` fields of `bytes` bytes in all (the bytes in one of the thread's
    /// [`buffers`], wiped and given back on drop: they hold the JWT).
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Headers {
            bytes: buffers::take(bytes),
            fields: Vec::with_capacity(fields),
        }
    }

    /// Adds a field; the name is stored lowercased.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.bytes
            .extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.fields.push((name_end, self.bytes.len()));
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Every field in order: (lowercase name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.fields.iter().map(move |&(name_end, end)| {
            let name = self.bytes.get(start..name_end).unwrap_or_default();
            let value = self.bytes.get(name_end..end).unwrap_or_default();
            start = end;
            (name, value)
        })
    }

    /// Every value of field `name` (lowercase), in order.
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.iter()
            .filter(move |(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }
}

impl Drop for Headers {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.bytes));
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, _)| String::from_utf8_lossy(n)))
            .finish()
    }
}

/// A parsed request head. `Debug` shows header names, not values (one may be the JWT).
#[derive(Clone)]
pub struct Head {
    pub method: Method,
    /// The request target as received (origin form: starts with `/`).
    pub target: String,
    /// `false` for HTTP/1.0.
    pub http11: bool,
    /// Header names lowercased, values as received (may hold obs-text bytes).
    pub headers: Headers,
    pub framing: Framing,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Head")
            .field("method", &self.method)
            .field("target", &self.target)
            .field("http11", &self.http11)
            .field("headers", &self.headers)
            .field("framing", &self.framing)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// Why a head was refused. Each variant maps to one status code via [`HeadError::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// The head is larger than [`MAX_HEAD_BYTES`] (431).
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields (431).
    TooManyHeaders,
    /// The request target is longer than [`MAX_URI_BYTES`] (414).
    UriTooLong { len: usize },
    /// Syntax rejected by the parser: bad token, space before colon, obs-fold, bad version (400).
    Syntax(&'static str),
    /// A line ended with a bare LF instead of CRLF (400): lenient parsers disagree on those, a
    /// request-smuggling vector behind a proxy.
    BareLf,
    /// The target is not in origin form (400).
    TargetNotOriginForm,
    /// HTTP/1.1 without exactly one `Host` header (400).
    Host,
    /// Both `Content-Length` and `Transfer-Encoding` (400).
    LengthAndTransferEncoding,
    /// More than one `Content-Length` header (400).
    DuplicateContentLength,
    /// `Content-Length` that is not a plain decimal number (400).
    InvalidContentLength,
    /// `Transfer-Encoding` other than exactly `chunked` (400).
    UnsupportedTransferEncoding,
    /// `Transfer-Encoding` on an HTTP/1.0 request (400).
    TransferEncodingOnHttp10,
}

impl HeadError {
    /// The status code the edge answers with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UriTooLong { .. } => 414,
            _ => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::HeadTooLarge => write!(f, "request head over {MAX_HEAD_BYTES} bytes"),
            HeadError::TooManyHeaders => write!(f, "more than {MAX_HEADERS} header fields"),
            HeadError::UriTooLong { len } => {
                write!(f, "request target of {len} bytes, over {MAX_URI_BYTES}")
            }
            HeadError::Syntax(what) => write!(f, "malformed head: {what}"),
            HeadError::BareLf => write!(f, "line ended with a bare LF"),
            HeadError::TargetNotOriginForm => write!(f, "request target not in origin form"),
            HeadError::Host => write!(f, "HTTP/1.1 request without exactly one Host header"),
            HeadError::LengthAndTransferEncoding => {
                write!(f, "both Content-Length and Transfer-Encoding")
            }
            HeadError::DuplicateContentLength => write!(f, "more than one Content-Length"),
            HeadError::InvalidContentLength => write!(f, "Content-Length is not a decimal number"),
            HeadError::UnsupportedTransferEncoding => {
                write!(f, "Transfer-Encoding other than chunked")
            }
            HeadError::TransferEncodingOnHttp10 => write!(f, "Transfer-Encoding on HTTP/1.0"),
        }
    }
}

impl std::error::Error for HeadError {}

fn syntax(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => {
            HeadError::Syntax("invalid header name (space before colon or obs-fold?)")
        }
        httparse::Error::HeaderValue => HeadError::Syntax("invalid header value"),
        httparse::Error::NewLine => HeadError::Syntax("invalid line ending"),
        httparse::Error::Status => HeadError::Syntax("invalid status"),
        httparse::Error::Token => HeadError::Syntax("invalid method token"),
        httparse::Error::Version => HeadError::Syntax("invalid HTTP version"),
    }
}

/// Whether an LF of `head` does not follow a CR. Eight bytes at a time: the head is up to 8 KiB
/// and read on every request, and its LFs are few, so most words hold none and are passed over.
fn has_bare_lf(head: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const LFS: u64 = ONES * b'\n' as u64;
    // Nothing precedes the first byte: an LF there is bare.
    let mut before = 0u8;
    let mut words = head.chunks_exact(8);
    for word in &mut words {
        let bytes = <[u8; 8]>::try_from(word).unwrap_or_default();
        // Zero bytes of `v` are the LFs of the word (a classic "has a zero byte" test).
        let v = u64::from_le_bytes(bytes) ^ LFS;
        if v.wrapping_sub(ONES) & !v & HIGHS != 0 && bare_lf_in(word, before) {
            return true;
        }
        before = word.last().copied().unwrap_or_default();
    }
    bare_lf_in(words.remainder(), before)
}

/// Whether an LF of `bytes` does not follow a CR, `before` being the byte preceding them.
fn bare_lf_in(bytes: &[u8], mut before: u8) -> bool {
    for &b in bytes {
        if b == b'\n' && before != b'\r' {
            return true;
        }
        before = b;
    }
    false
}

/// Parses one request head from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds a valid prefix but not yet the whole head (the caller reads
/// more, up to [`MAX_HEAD_BYTES`]; a full buffer that is still partial is [`HeadError::HeadTooLarge`]).
/// On success returns the head and the number of bytes it occupied; the body follows.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD_BYTES {
                Err(HeadError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        Err(e) => return Err(syntax(e)),
    };
    if consumed > MAX_HEAD_BYTES {
        return Err(HeadError::HeadTooLarge);
    }
    let head_bytes = buf.get(..consumed).unwrap_or_default();
    if has_bare_lf(head_bytes) {
        return Err(HeadError::BareLf);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Syntax("incomplete request line"));
    };
    if target.len() > MAX_URI_BYTES {
        return Err(HeadError::UriTooLong { len: target.len() });
    }
    if !target.starts_with('/') {
        return Err(HeadError::TargetNotOriginForm);
    }
    let http11 = version == 1;
    let mut headers = Headers::with_capacity(req.headers.len(), consumed);
    for h in req.headers.iter() {
        headers.push(h.name, h.value);
    }
    let values = |name: &'static str| headers.values(name);
    if http11 && values("host").count() != 1 {
        return Err(HeadError::Host);
    }
    let framing = framing(
        values("content-length").collect(),
        values("transfer-encoding").collect(),
        http11,
    )?;
    let connection_has = |token: &str| {
        values("connection").any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    let keep_alive = http11 && !connection_has("close");
    let expect_continue =
        values("expect").any(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"));
    Ok(Some((
        Head {
            method: Method::from_token(method),
            target: target.to_owned(),
            http11,
            headers,
            framing,
            keep_alive,
            expect_continue,
        },
        consumed,
    )))
}

/// Decides the body framing from the `Content-Length` and `Transfer-Encoding` values.
fn framing(lengths: Vec<&[u8]>, encodings: Vec<&[u8]>, http11: bool) -> Result<Framing, HeadError> {
    match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => Ok(Framing::Empty),
        ([_, ..], [_, ..]) => Err(HeadError::LengthAndTransferEncoding),
        ([], [_, ..]) if !http11 => Err(HeadError::TransferEncodingOnHttp10),
        ([], [te]) if te.trim_ascii().eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
        ([], _) => Err(HeadError::UnsupportedTransferEncoding),
        ([cl], []) => match parse_content_length(cl) {
            Some(0) => Ok(Framing::Empty),
            Some(n) => Ok(Framing::Length(n)),
            None => Err(HeadError::InvalidContentLength),
        },
        (_, []) => Err(HeadError::DuplicateContentLength),
    }
}

/// A plain decimal number: digits only (no sign, no spaces inside, no list), at most 19 digits.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_is_found_wherever_it_is() {
        let naive = |head: &[u8]| {
            head.iter()
                .enumerate()
                .any(|(i, &b)| b == b'\n' && (i == 0 || head[i - 1] != b'\r'))
        };
        for len in 0..40 {
            for at in 0..len {
                for cr_before in [false, true] {
                    let mut head = vec![b'a'; len];
                    head[at] = b'\n';
                    if cr_before && at > 0 {
                        head[at - 1] = b'\r';
                    }
                    assert_eq!(has_bare_lf(&head), naive(&head), "{head:?}");
                }
            }
        }
        let good = b"GET / HTTP/1.1\r\nHost: x\r\nA: \xff\x80b\r\n\r\n";
        assert!(!has_bare_lf(good));
        let mut bad = good.to_vec();
        bad[14] = b' '; // the CR before the first LF
        assert!(has_bare_lf(&bad));
        assert!(!has_bare_lf(b""));
        assert!(has_bare_lf(b"\n"));
    }

    fn parse(s: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn complete_head_and_its_length() {
        let raw = "POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let (head, n) = parse(raw).unwrap().unwrap();
        assert_eq!(n, raw.len() - 5);
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
    }

    #[test]
    fn partial_head_needs_more_bytes() {
        assert!(matches!(
            parse("GET /healthcheck HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        ));
        assert!(matches!(parse("GE"), Ok(None)));
    }

    #[test]
    fn table_of_refusals() {
        let long_uri = format!(
            "GET /{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a".repeat(MAX_URI_BYTES)
        );
        let many = format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: b\r\n".repeat(MAX_HEADERS)
        );
        let cases: Vec<(&str, String, HeadError)> = vec![
            ("cl+te", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".into(), HeadError::LengthAndTransferEncoding),
            ("dup cl same", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n".into(), HeadError::DuplicateContentLength),
            ("dup cl differing", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n".into(), HeadError::DuplicateContentLength),
            ("cl list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n".into(), HeadError::InvalidContentLength),
            ("cl plus", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n".into(), HeadError::InvalidContentLength),
            ("cl negative", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".into(), HeadError::InvalidContentLength),
            ("cl hex", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n".into(), HeadError::InvalidContentLength),
            ("cl overflow", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".into(), HeadError::InvalidContentLength),
            ("te gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(), HeadError::UnsupportedTransferEncoding),
            ("te gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(), HeadError::UnsupportedTransferEncoding),
            ("te twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n".into(), HeadError::UnsupportedTransferEncoding),
            ("te on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".into(), HeadError::TransferEncodingOnHttp10),
            ("space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n".into(), HeadError::Syntax("invalid header name (space before colon or obs-fold?)")),
            ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n".into(), HeadError::Syntax("invalid header name (space before colon or obs-fold?)")),
            ("no host", "GET / HTTP/1.1\r\n\r\n".into(), HeadError::Host),
            ("bare LF everywhere", "GET / HTTP/1.1\nHost: x\n\n".into(), HeadError::BareLf),
            ("bare LF after one header", "GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n".into(), HeadError::BareLf),
            ("bare LF at the end", "GET / HTTP/1.1\r\nHost: x\r\n\n".into(), HeadError::BareLf),
            ("two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(), HeadError::Host),
            ("absolute form", "GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n".into(), HeadError::TargetNotOriginForm),
            ("asterisk form", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n".into(), HeadError::TargetNotOriginForm),
            ("http/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n".into(), HeadError::Syntax("invalid HTTP version")),
            ("uri too long", long_uri, HeadError::UriTooLong { len: MAX_URI_BYTES + 1 }),
            ("too many headers", many, HeadError::TooManyHeaders),
        ];
        for (name, raw, want) in cases {
            let got = parse(&raw).map(|o| o.map(|(h, _)| h.framing));
            assert_eq!(got, Err(want), "{name}");
        }
    }

    #[test]
    fn a_full_buffer_that_is_still_partial_is_too_large() {
        let raw = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(parse(&raw).err(), Some(HeadError::HeadTooLarge));
    }

    #[test]
    fn debug_never_shows_header_values() {
        let (head, _) =
            parse("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer SECRET.JWT\r\n\r\n")
                .unwrap()
                .unwrap();
        let shown = format!("{head:?}");
        assert!(
            shown.contains("authorization") && !shown.contains("SECRET"),
            "{shown}"
        );
    }

    #[test]
    fn framing_and_connection_rules() {
        let h = |raw: &str| parse(raw).unwrap().unwrap().0;
        assert_eq!(
            h("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            h("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            h("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000000\r\n\r\n").framing,
            Framing::Length(100_000_000_000_000)
        );
        assert!(
            !h("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive
        );
        assert!(!h("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(h("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert_eq!(
            h("BREW / HTTP/1.1\r\nHost: x\r\n\r\n").method,
            Method::Other("BREW".into())
        );
    }
}
