//! `Transfer-Encoding: chunked` decoding with a body cap, fed in pieces as bytes arrive.
//!
//! Strict on purpose: hex sizes of at most 16 digits, CRLF (never a bare LF) after every line and
//! chunk, bounded extension and trailer sizes. A declared size that would take the body past the cap
//! is refused before any of its bytes are read.
#![forbid(unsafe_code)]

use std::fmt;

/// Longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 256;
/// Largest trailer section accepted (trailers are read and ignored).
const MAX_TRAILER_BYTES: usize = 8192;

/// Why a chunked body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// The body would exceed the cap (413).
    BodyTooLarge { max: usize },
    /// The framing is malformed (400).
    Invalid(&'static str),
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::BodyTooLarge { max } => write!(f, "chunked body over {max} bytes"),
            ChunkError::Invalid(what) => write!(f, "malformed chunked body: {what}"),
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
    trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies longer than `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            max_body,
            body_len: 0,
            line: Vec::new(),
            trailer_bytes: 0,
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
        let limit = if self.state == State::Size {
            MAX_SIZE_LINE
        } else {
            MAX_TRAILER_BYTES
        };
        if self.line.len() >= limit
            || (self.state == State::Trailer && self.trailer_bytes >= MAX_TRAILER_BYTES)
        {
            return Err(ChunkError::Invalid("size line or trailer section too long"));
        }
        self.line.push(b);
        if self.state == State::Trailer {
            self.trailer_bytes += 1;
        }
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
        let long_trailer = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILER_BYTES / 6 + 1));
        assert!(matches!(
            decode_all(long_trailer.as_bytes(), 100),
            Err(ChunkError::Invalid(_))
        ));
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        let (body, used, done) = decode_all(b"5\r\nhel", 100).unwrap();
        assert_eq!((body.as_slice(), used, done), (&b"hel"[..], 6, false));
    }
}
