//! `Transfer-Encoding: chunked` decoding with a body cap, fed in pieces as bytes arrive.
//!
//! Strict on purpose: hex sizes of at most 16 digits, CRLF (never a bare LF) after every line and
//! chunk, bounded extension sizes. A declared size that would take the body past the cap is refused
//! before any of its bytes are read.
//!
//! Trailer fields follow the rules of header fields: each line is checked by the same parser as the
//! head (`httparse`), so a NUL, a bare CR, obs-fold, a space before the colon, a line without a colon
//! or a request line (`0\r\nGET /x HTTP/1.1\r\n\r\n`) is malformed; their bytes and count are
//! limited by what the head left of [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`]. Trailers are read and
//! ignored.
#![forbid(unsafe_code)]

use super::{MAX_HEAD_BYTES, MAX_HEADERS};
use std::fmt;

/// Longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 256;

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The body would exceed the cap (413).
    BodyTooLarge { max: usize },
    /// The framing is malformed, or a trailer line is not a valid header field (400).
    Invalid(&'static str),
    /// The trailer section is larger, or has more fields, than the head left room for (431).
    TrailersTooLarge { max_bytes: usize, max_fields: usize },
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::BodyTooLarge { max } => write!(f, "chunked body over {max} bytes"),
            ChunkError::Invalid(what) => write!(f, "malformed chunked body: {what}"),
            ChunkError::TrailersTooLarge {
                max_bytes,
                max_fields,
            } => write!(
                f,
                "trailer section over {max_bytes} bytes or {max_fields} fields"
            ),
        }
    }
}

impl std::error::Error for ChunkError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line (bytes so far are in `line`).
    Size,
    /// Reading chunk data.
    Data { remaining: usize },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Reading trailer lines until an empty one.
    Trailer,
    /// The last chunk and the trailer section have been read.
    Done,
}

/// An incremental decoder. Feed it bytes with [`ChunkedDecoder::decode`] until [`ChunkedDecoder::is_done`].
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    max_body: usize,
    body_len: usize,
    line: Vec<u8>,
    /// Trailer bytes read so far (CRLFs included) and the most allowed.
    trailer_bytes: usize,
    max_trailer_bytes: usize,
    /// Trailer fields read so far and the most allowed.
    trailer_fields: usize,
    max_trailer_fields: usize,
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies longer than `max_body` bytes, with room for a whole head's
    /// worth of trailers ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]).
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder::with_trailer_limits(max_body, MAX_HEAD_BYTES, MAX_HEADERS)
    }

    /// A decoder whose trailer section may take at most `max_trailer_bytes` bytes and
    /// `max_trailer_fields` fields: what the request's head left of the head limits, so head and
    /// trailers together are limited like one head.
    pub fn with_trailer_limits(
        max_body: usize,
        max_trailer_bytes: usize,
        max_trailer_fields: usize,
    ) -> Self {
        ChunkedDecoder {
            state: State::Size,
            max_body,
            body_len: 0,
            line: Vec::new(),
            trailer_bytes: 0,
            max_trailer_bytes,
            trailer_fields: 0,
            max_trailer_fields,
        }
    }

    /// Whether the whole body, trailers included, has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, appending body bytes to `out`; returns how many input bytes were used.
    /// Stops at the end of the message: bytes after it (a pipelined request) are not consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            let rest = input.get(pos..).unwrap_or_default();
            pos += match self.state {
                State::Data { remaining } => {
                    let take = remaining.min(rest.len());
                    out.extend_from_slice(rest.get(..take).unwrap_or_default());
                    self.state = if take == remaining {
                        State::DataCr
                    } else {
                        State::Data {
                            remaining: remaining - take,
                        }
                    };
                    take
                }
                State::DataCr => self.expect_byte(rest, b'\r', State::DataLf)?,
                State::DataLf => self.expect_byte(rest, b'\n', State::Size)?,
                State::Size | State::Trailer => self.line_byte(rest)?,
                State::Done => 0,
            };
        }
        Ok(pos)
    }

    fn expect_byte(&mut self, rest: &[u8], byte: u8, next: State) -> Result<usize, ChunkError> {
        if rest.first() != Some(&byte) {
            return Err(ChunkError::Invalid("missing CRLF after chunk data"));
        }
        self.state = next;
        Ok(1)
    }

    /// Takes one byte of a size or trailer line; acts on the line when its LF arrives.
    fn line_byte(&mut self, rest: &[u8]) -> Result<usize, ChunkError> {
        let Some(&b) = rest.first() else { return Ok(0) };
        if self.state == State::Trailer {
            if self.trailer_bytes >= self.max_trailer_bytes {
                return Err(self.trailers_too_large());
            }
            self.trailer_bytes += 1;
        } else if self.line.len() >= MAX_SIZE_LINE {
            return Err(ChunkError::Invalid("chunk size line too long"));
        }
        self.line.push(b);
        if b != b'\n' {
            return Ok(1);
        }
        let line = std::mem::take(&mut self.line);
        let Some(content) = line.strip_suffix(b"\r\n") else {
            return Err(ChunkError::Invalid("bare LF"));
        };
        if self.state == State::Trailer {
            if content.is_empty() {
                self.state = State::Done;
                return Ok(1);
            }
            self.trailer_fields += 1;
            if self.trailer_fields > self.max_trailer_fields {
                return Err(self.trailers_too_large());
            }
            if !is_header_field(content) {
                return Err(ChunkError::Invalid("malformed trailer field"));
            }
            return Ok(1);
        }
        let size = parse_size(content)?;
        if size == 0 {
            self.state = State::Trailer;
            return Ok(1);
        }
        let total = self
            .body_len
            .checked_add(size)
            .filter(|&t| t <= self.max_body);
        let Some(total) = total else {
            return Err(ChunkError::BodyTooLarge { max: self.max_body });
        };
        self.body_len = total;
        self.state = State::Data { remaining: size };
        Ok(1)
    }

    fn trailers_too_large(&self) -> ChunkError {
        ChunkError::TrailersTooLarge {
            max_bytes: self.max_trailer_bytes,
            max_fields: self.max_trailer_fields,
        }
    }
}

/// Whether `line` (without its CRLF) is exactly one header field as the head parser reads them.
fn is_header_field(line: &[u8]) -> bool {
    let mut section = Vec::with_capacity(line.len() + 4);
    section.extend_from_slice(line);
    section.extend_from_slice(b"\r\n\r\n");
    let mut fields = [httparse::EMPTY_HEADER; 1];
    matches!(
        httparse::parse_headers(&section, &mut fields),
        Ok(httparse::Status::Complete((used, [_]))) if used == section.len()
    )
}

/// `1*HEXDIG [ BWS ";" extensions ]` → the size. Extensions are ignored but must be visible ASCII.
fn parse_size(content: &[u8]) -> Result<usize, ChunkError> {
    let digits_len = content.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (digits, ext) = content.split_at(digits_len);
    if digits.is_empty() || digits.len() > 16 {
        return Err(ChunkError::Invalid("chunk size is not 1 to 16 hex digits"));
    }
    let ext_ok = match ext.trim_ascii_start().split_first() {
        None => ext.is_empty(),
        Some((b';', rest)) => rest
            .iter()
            .all(|&c| c == b'\t' || (b' '..=b'~').contains(&c)),
        Some(_) => false,
    };
    if !ext_ok {
        return Err(ChunkError::Invalid("junk after chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| ChunkError::Invalid("chunk size"))?;
    let size = u64::from_str_radix(text, 16).map_err(|_| ChunkError::Invalid("chunk size"))?;
    // A size beyond usize can never fit under the cap.
    Ok(usize::try_from(size).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], max: usize) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let used = d.decode(input, &mut out)?;
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn decodes_and_stops_at_the_end_of_the_message() {
        let raw = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: y\r\n\r\nGET /next";
        let (body, used, done) = decode_all(raw, 100).unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
        assert_eq!(&raw[used..], b"GET /next");
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let raw = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        for b in raw.iter() {
            assert_eq!(d.decode(std::slice::from_ref(b), &mut out).unwrap(), 1);
        }
        assert!(d.is_done());
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn cap_is_exact() {
        let body_at = |n: usize| format!("{n:x}\r\n{}\r\n0\r\n\r\n", "a".repeat(n));
        assert!(decode_all(body_at(20480).as_bytes(), 20480).unwrap().2);
        assert_eq!(
            decode_all(body_at(20481).as_bytes(), 20480),
            Err(ChunkError::BodyTooLarge { max: 20480 })
        );
        // Two chunks that together pass the cap by one byte.
        let split = format!(
            "{:x}\r\n{}\r\n1\r\nb\r\n0\r\n\r\n",
            20480,
            "a".repeat(20480)
        );
        assert_eq!(
            decode_all(split.as_bytes(), 20480),
            Err(ChunkError::BodyTooLarge { max: 20480 })
        );
        assert_eq!(
            decode_all(b"ffffffffffffffff\r\n", 20480),
            Err(ChunkError::BodyTooLarge { max: 20480 })
        );
    }

    #[test]
    fn table_of_malformed_framing() {
        let cases: &[(&str, &[u8])] = &[
            ("bare LF after size", b"3\nabc\r\n0\r\n\r\n"),
            ("no size", b"\r\nabc\r\n"),
            ("sign", b"+3\r\nabc\r\n"),
            ("17 hex digits", b"00000000000000003\r\nabc\r\n"),
            ("junk after size", b"3 x\r\nabc\r\n"),
            ("data longer than size", b"3\r\nabcd\r\n"),
            ("missing CR after data", b"3\r\nabc\n0\r\n\r\n"),
            ("bare LF in trailer", b"0\r\nX: y\n\r\n"),
            ("NUL in a trailer value", b"0\r\nX: a\x00b\r\n\r\n"),
            ("bare CR in a trailer value", b"0\r\nX: a\rb\r\n\r\n"),
            ("obs-fold in trailers", b"0\r\nX: a\r\n b\r\n\r\n"),
            ("space before the colon", b"0\r\nX : y\r\n\r\n"),
            ("trailer without a colon", b"0\r\nNoColon\r\n\r\n"),
            (
                "a request line as a trailer",
                b"0\r\nGET /x HTTP/1.1\r\n\r\n",
            ),
            ("empty field name", b"0\r\n: y\r\n\r\n"),
            ("control byte in extension", b"3;\x01\r\nabc\r\n"),
        ];
        for (name, raw) in cases {
            assert!(
                matches!(decode_all(raw, 100), Err(ChunkError::Invalid(_))),
                "{name}"
            );
        }
        let long_line = format!("3;{}\r\n", "e".repeat(MAX_SIZE_LINE));
        assert!(matches!(
            decode_all(long_line.as_bytes(), 100),
            Err(ChunkError::Invalid(_))
        ));
    }

    #[test]
    fn valid_trailers_are_accepted_and_ignored() {
        let raw = b"1\r\na\r\n0\r\nX-Sum: abc\r\nX-Empty:\r\nX-Tab:\tv \r\n\r\nNEXT";
        let (body, used, done) = decode_all(raw, 100).unwrap();
        assert_eq!((body.as_slice(), done), (&b"a"[..], true));
        assert_eq!(&raw[used..], b"NEXT");
    }

    #[test]
    fn trailers_share_the_head_limits() {
        let decode = |raw: &[u8], bytes, fields| {
            let mut d = ChunkedDecoder::with_trailer_limits(100, bytes, fields);
            d.decode(raw, &mut Vec::new()).map(|_| d.is_done())
        };
        let two = b"0\r\nA: 1\r\nB: 2\r\n\r\n"; // 14 bytes of trailer section after "0\r\n"
        assert_eq!(decode(two, 14, 2), Ok(true), "exactly at both limits");
        let too_large = ChunkError::TrailersTooLarge {
            max_bytes: 13,
            max_fields: 2,
        };
        assert_eq!(decode(two, 13, 2), Err(too_large), "one byte over");
        let too_many = ChunkError::TrailersTooLarge {
            max_bytes: 14,
            max_fields: 1,
        };
        assert_eq!(decode(two, 14, 1), Err(too_many), "one field over");
        let flood = format!("0\r\n{}", "X: y\r\n".repeat(MAX_HEAD_BYTES / 6 + 1));
        assert!(matches!(
            decode_all(flood.as_bytes(), 100),
            Err(ChunkError::TrailersTooLarge { .. })
        ));
        let empty = b"0\r\n\r\n";
        assert_eq!(
            decode(empty, 2, 0),
            Ok(true),
            "no trailers need no field room"
        );
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        let (body, used, done) = decode_all(b"5\r\nhel", 100).unwrap();
        assert_eq!((body.as_slice(), used, done), (&b"hel"[..], 6, false));
    }
}
