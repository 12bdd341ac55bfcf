//! RESP2, the Redis/Valkey wire format: commands out ([`command`]), replies in ([`parse`]).
//!
//! The reply parser is pure and bounded. It reads one reply from the start of a buffer and says
//! either [`Parsed::Complete`] (the reply and the bytes it used), [`Parsed::Partial`] ("need more
//! bytes": every strict prefix of a valid reply is partial, never an error), or an [`Invalid`]
//! naming the broken rule. It accepts only the canonical form a server sends:
//! - every line ends in CR LF; a bare LF, or a CR inside a line, is invalid;
//! - simple strings and errors are visible ASCII and spaces, at most [`MAX_LINE`] bytes;
//! - integers and lengths are decimal digits without a leading zero (`-1` is the only negative
//!   length: the nil bulk string or nil array); an integer past `i64` is refused;
//! - bulk strings hold at most [`MAX_BULK`] bytes, arrays at most [`MAX_ELEMENTS`] elements,
//!   nested at most [`MAX_DEPTH`] deep, and a whole reply is at most [`MAX_REPLY`] bytes, so a
//!   caller's buffer never needs to grow past that.
//!
//! Canonical means [`encode`] of a parsed reply gives back exactly the bytes it was parsed from.
#![forbid(unsafe_code)]

use std::fmt;

/// The longest bulk string accepted (an encrypted cache entry is far smaller).
pub const MAX_BULK: usize = 64 * 1024;
/// The most elements in one array.
pub const MAX_ELEMENTS: usize = 16;
/// The deepest nesting: an array may hold arrays, those may not.
pub const MAX_DEPTH: usize = 2;
/// The longest line (a simple string, an error, an integer or a length) before its CR LF.
pub const MAX_LINE: usize = 1024;
/// The largest whole reply: one bulk string of [`MAX_BULK`] bytes and room for its framing.
pub const MAX_REPLY: usize = MAX_BULK + 4 * MAX_LINE;

/// One reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`: the server refused the command.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc`
    Bulk(Vec<u8>),
    /// `$-1`: no value.
    Nil,
    /// `*2\r\n…`
    Array(Vec<Reply>),
    /// `*-1`: no array.
    NilArray,
}

impl fmt::Debug for Reply {
    /// Bulk strings by length only: they hold cache entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "Simple({s:?})"),
            Reply::Error(s) => write!(f, "Error({s:?})"),
            Reply::Integer(n) => write!(f, "Integer({n})"),
            Reply::Bulk(b) => write!(f, "Bulk(<{} bytes>)", b.len()),
            Reply::Nil => f.write_str("Nil"),
            Reply::Array(items) => f.debug_tuple("Array").field(items).finish(),
            Reply::NilArray => f.write_str("NilArray"),
        }
    }
}

/// What [`parse`] found at the start of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole reply, which used the first `used` bytes.
    Complete { reply: Reply, used: usize },
    /// The input is a strict prefix of a reply: read more.
    Partial,
}

/// Why the input is not a reply. Once invalid, the connection is of no further use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The first byte is not one of `+ - : $ *`.
    UnknownType { byte: u8 },
    /// No CR LF within [`MAX_LINE`] bytes.
    LineTooLong { max: usize },
    /// An LF without the CR before it.
    BareLineFeed,
    /// A CR that is not followed by LF, or a byte outside visible ASCII and space, in a line.
    ControlInLine,
    /// An integer or length that is not canonical decimal digits.
    NotANumber,
    /// An integer past the range of `i64`.
    IntegerOverflow,
    /// A negative length other than -1.
    NegativeLength,
    /// A bulk string longer than [`MAX_BULK`].
    BulkTooLarge { max: usize },
    /// A bulk string's bytes not followed by CR LF.
    BulkNotTerminated,
    /// An array of more than [`MAX_ELEMENTS`].
    TooManyElements { max: usize },
    /// Arrays nested deeper than [`MAX_DEPTH`].
    TooDeep { max: usize },
    /// The reply would need more than [`MAX_REPLY`] bytes.
    TooLarge { max: usize },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::UnknownType { byte } => write!(f, "unknown reply type byte 0x{byte:02x}"),
            Invalid::LineTooLong { max } => write!(f, "line longer than {max} bytes"),
            Invalid::BareLineFeed => write!(f, "line feed without carriage return"),
            Invalid::ControlInLine => write!(f, "control or non-ascii byte in a line"),
            Invalid::NotANumber => write!(f, "not a canonical decimal number"),
            Invalid::IntegerOverflow => write!(f, "integer out of range"),
            Invalid::NegativeLength => write!(f, "negative length other than -1"),
            Invalid::BulkTooLarge { max } => write!(f, "bulk string over {max} bytes"),
            Invalid::BulkNotTerminated => write!(f, "bulk string not followed by crlf"),
            Invalid::TooManyElements { max } => write!(f, "array of more than {max} elements"),
            Invalid::TooDeep { max } => write!(f, "arrays nested deeper than {max}"),
            Invalid::TooLarge { max } => write!(f, "reply over {max} bytes"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Reads one reply from the start of `input`; see the module documentation.
pub fn parse(input: &[u8]) -> Result<Parsed, Invalid> {
    let mut cursor = Cursor { input, pos: 0 };
    match cursor.reply(1)? {
        Some(reply) => Ok(Parsed::Complete {
            reply,
            used: cursor.pos,
        }),
        None if input.len() >= MAX_REPLY => Err(Invalid::TooLarge { max: MAX_REPLY }),
        None => Ok(Parsed::Partial),
    }
}

/// A command: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The wire form of a reply (what a server sends; [`parse`] reads it back).
pub fn encode(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(reply, &mut out);
    out
}

fn encode_into(reply: &Reply, out: &mut Vec<u8>) {
    match reply {
        Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Reply::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Reply::Integer(n) => out.extend_from_slice(format!(":{n}\r\n").as_bytes()),
        Reply::Bulk(bytes) => {
            out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for item in items {
                encode_into(item, out);
            }
        }
        Reply::NilArray => out.extend_from_slice(b"*-1\r\n"),
    }
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The reply at `pos` (arrays at nesting `depth`), or `None` when more bytes are needed.
    fn reply(&mut self, depth: usize) -> Result<Option<Reply>, Invalid> {
        let Some(&kind) = self.input.get(self.pos) else {
            return Ok(None);
        };
        if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
            return Err(Invalid::UnknownType { byte: kind });
        }
        let start = self.pos;
        self.pos += 1;
        let Some(line) = self.line()? else {
            self.pos = start;
            return Ok(None);
        };
        let reply = match kind {
            b'+' => Reply::Simple(text(line)?),
            b'-' => Reply::Error(text(line)?),
            b':' => Reply::Integer(integer(line)?),
            b'$' => match length(line, MAX_BULK, Invalid::BulkTooLarge { max: MAX_BULK })? {
                None => Reply::Nil,
                Some(len) => match self.bulk(len)? {
                    Some(bytes) => Reply::Bulk(bytes),
                    None => {
                        self.pos = start;
                        return Ok(None);
                    }
                },
            },
            _ => {
                let too_many = Invalid::TooManyElements { max: MAX_ELEMENTS };
                match length(line, MAX_ELEMENTS, too_many)? {
                    None => Reply::NilArray,
                    Some(_) if depth > MAX_DEPTH => {
                        return Err(Invalid::TooDeep { max: MAX_DEPTH });
                    }
                    Some(count) => {
                        let mut items = Vec::with_capacity(count);
                        for _ in 0..count {
                            match self.reply(depth + 1)? {
                                Some(item) => items.push(item),
                                None => {
                                    self.pos = start;
                                    return Ok(None);
                                }
                            }
                        }
                        Reply::Array(items)
                    }
                }
            }
        };
        Ok(Some(reply))
    }

    /// The line at `pos` without its CR LF (`pos` moves past it), or `None` when its end has not
    /// arrived (`pos` unchanged).
    fn line(&mut self) -> Result<Option<&'a [u8]>, Invalid> {
        let rest = self.input.get(self.pos..).unwrap_or_default();
        let window = rest.get(..MAX_LINE + 2).unwrap_or(rest);
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            if window.len() >= MAX_LINE + 2 {
                return Err(Invalid::LineTooLong { max: MAX_LINE });
            }
            return Ok(None);
        };
        let Some(line) = lf.checked_sub(1).and_then(|cr| window.get(..cr)) else {
            return Err(Invalid::BareLineFeed);
        };
        if window.get(lf - 1) != Some(&b'\r') {
            return Err(Invalid::BareLineFeed);
        }
        if line.len() > MAX_LINE {
            return Err(Invalid::LineTooLong { max: MAX_LINE });
        }
        self.pos += lf + 1;
        Ok(Some(line))
    }

    /// `len` bytes and their CR LF at `pos`, or `None` when they have not all arrived.
    fn bulk(&mut self, len: usize) -> Result<Option<Vec<u8>>, Invalid> {
        let end = self.pos + len;
        if end + 2 > MAX_REPLY {
            return Err(Invalid::TooLarge { max: MAX_REPLY });
        }
        let (Some(bytes), Some(tail)) =
            (self.input.get(self.pos..end), self.input.get(end..end + 2))
        else {
            // Whatever of the terminator has arrived must already be right.
            let arrived = self.input.get(end..).unwrap_or_default();
            if !b"\r\n".starts_with(arrived) {
                return Err(Invalid::BulkNotTerminated);
            }
            return Ok(None);
        };
        if tail != b"\r\n" {
            return Err(Invalid::BulkNotTerminated);
        }
        self.pos = end + 2;
        Ok(Some(bytes.to_vec()))
    }
}

/// A simple string or error line: visible ASCII and spaces.
fn text(line: &[u8]) -> Result<String, Invalid> {
    if !line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return Err(Invalid::ControlInLine);
    }
    Ok(line.iter().map(|&b| char::from(b)).collect())
}

/// Canonical decimal digits: no sign, no leading zero (but `0` itself).
fn digits(line: &[u8]) -> Result<&[u8], Invalid> {
    match line {
        [] => Err(Invalid::NotANumber),
        [b'0', _, ..] => Err(Invalid::NotANumber),
        _ if line.iter().all(u8::is_ascii_digit) => Ok(line),
        _ => Err(Invalid::NotANumber),
    }
}

/// An integer reply: `-`? digits, within `i64` (`-0` is not canonical).
fn integer(line: &[u8]) -> Result<i64, Invalid> {
    let (negative, magnitude) = match line.strip_prefix(b"-") {
        Some(rest) => (true, digits(rest)?),
        None => (false, digits(line)?),
    };
    if negative && magnitude == b"0" {
        return Err(Invalid::NotANumber);
    }
    let mut value: i64 = 0;
    for &d in magnitude {
        let d = i64::from(d - b'0');
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(d)
                } else {
                    v.checked_add(d)
                }
            })
            .ok_or(Invalid::IntegerOverflow)?;
    }
    Ok(value)
}

/// A length: `-1` (`None`), or digits up to `max` (past it: `over`).
fn length(line: &[u8], max: usize, over: Invalid) -> Result<Option<usize>, Invalid> {
    if line == b"-1" {
        return Ok(None);
    }
    if line.starts_with(b"-") {
        return match digits(line.get(1..).unwrap_or_default()) {
            Ok(_) => Err(Invalid::NegativeLength),
            Err(e) => Err(e),
        };
    }
    let mut value: usize = 0;
    for &d in digits(line)? {
        value = value * 10 + usize::from(d - b'0');
        if value > max {
            return Err(over);
        }
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(input: &[u8]) -> Reply {
        match parse(input) {
            Ok(Parsed::Complete { reply, used }) => {
                assert_eq!(used, input.len(), "{input:?} used {used}");
                reply
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn replies_a_server_sends() {
        let bulk = |s: &[u8]| Reply::Bulk(s.to_vec());
        let cases: &[(&[u8], Reply)] = &[
            (b"+OK\r\n", Reply::Simple("OK".into())),
            (b"+\r\n", Reply::Simple(String::new())),
            (
                b"-ERR unknown command 'X'\r\n",
                Reply::Error("ERR unknown command 'X'".into()),
            ),
            (b":0\r\n", Reply::Integer(0)),
            (b":42\r\n", Reply::Integer(42)),
            (b":-7\r\n", Reply::Integer(-7)),
            (b":9223372036854775807\r\n", Reply::Integer(i64::MAX)),
            (b":-9223372036854775808\r\n", Reply::Integer(i64::MIN)),
            (b"$0\r\n\r\n", bulk(b"")),
            (b"$5\r\nhe\r\no\r\n", bulk(b"he\r\no")),
            (b"$3\r\n\x00\xff\n\r\n", bulk(b"\x00\xff\n")),
            (b"$-1\r\n", Reply::Nil),
            (b"*-1\r\n", Reply::NilArray),
            (b"*0\r\n", Reply::Array(vec![])),
            (
                b"*2\r\n:1\r\n$1\r\nv\r\n",
                Reply::Array(vec![Reply::Integer(1), bulk(b"v")]),
            ),
            (
                b"*2\r\n*1\r\n+a\r\n$-1\r\n",
                Reply::Array(vec![
                    Reply::Array(vec![Reply::Simple("a".into())]),
                    Reply::Nil,
                ]),
            ),
        ];
        for (input, want) in cases {
            let got = complete(input);
            assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(encode(&got), *input, "canonical");
        }
    }

    #[test]
    fn a_reply_is_read_off_the_front_of_a_longer_buffer() {
        assert_eq!(
            parse(b"+OK\r\n:1\r\n"),
            Ok(Parsed::Complete {
                reply: Reply::Simple("OK".into()),
                used: 5
            })
        );
    }

    #[test]
    fn every_strict_prefix_needs_more_bytes() {
        let replies: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":-12\r\n",
            b"$5\r\nab\r\nc\r\n",
            b"$-1\r\n",
            b"*2\r\n*2\r\n:1\r\n:2\r\n$3\r\nabc\r\n",
        ];
        for reply in replies {
            for cut in 0..reply.len() {
                assert_eq!(
                    parse(&reply[..cut]),
                    Ok(Parsed::Partial),
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(reply)
                );
            }
        }
    }

    #[test]
    fn invalid_replies_name_the_broken_rule() {
        let long_line = [b"+".as_slice(), &[b'a'; MAX_LINE + 1], b"\r\n"].concat();
        let endless = [b"+".as_slice(), &[b'a'; MAX_LINE + 2]].concat();
        let max_line = [b"+".as_slice(), &[b'a'; MAX_LINE], b"\r\n"].concat();
        assert!(matches!(parse(&max_line), Ok(Parsed::Complete { .. })));
        let deep = b"*1\r\n*1\r\n*1\r\n:1\r\n";
        let cases: &[(&[u8], Invalid)] = &[
            (b"x\r\n", Invalid::UnknownType { byte: b'x' }),
            (b"\r\n", Invalid::UnknownType { byte: b'\r' }),
            (b"%1\r\n", Invalid::UnknownType { byte: b'%' }), // RESP3 map
            (b"+OK\n", Invalid::BareLineFeed),
            (b"\n", Invalid::UnknownType { byte: b'\n' }),
            (b"+\n", Invalid::BareLineFeed),
            (b"+O\rK\r\n", Invalid::ControlInLine),
            (b"+O\tK\r\n", Invalid::ControlInLine),
            (b"-\xc3\xa9\r\n", Invalid::ControlInLine),
            (&long_line, Invalid::LineTooLong { max: MAX_LINE }),
            (&endless, Invalid::LineTooLong { max: MAX_LINE }),
            (b":\r\n", Invalid::NotANumber),
            (b":+1\r\n", Invalid::NotANumber),
            (b":01\r\n", Invalid::NotANumber),
            (b":-0\r\n", Invalid::NotANumber),
            (b":- 1\r\n", Invalid::NotANumber),
            (b":1.5\r\n", Invalid::NotANumber),
            (b": 1\r\n", Invalid::NotANumber),
            (b":9223372036854775808\r\n", Invalid::IntegerOverflow),
            (b":-9223372036854775809\r\n", Invalid::IntegerOverflow),
            (b":99999999999999999999999\r\n", Invalid::IntegerOverflow),
            (b"$-2\r\n", Invalid::NegativeLength),
            (b"*-5\r\n", Invalid::NegativeLength),
            (b"$-01\r\n", Invalid::NotANumber),
            (b"$\r\n", Invalid::NotANumber),
            (b"$01\r\nx\r\n", Invalid::NotANumber),
            (b"$65537\r\n", Invalid::BulkTooLarge { max: MAX_BULK }),
            (
                b"$99999999999999999999999999\r\n",
                Invalid::BulkTooLarge { max: MAX_BULK },
            ),
            (b"$1\r\nab\r\n", Invalid::BulkNotTerminated),
            (b"$1\r\na\n", Invalid::BulkNotTerminated),
            (b"$1\r\naX", Invalid::BulkNotTerminated),
            (b"*17\r\n", Invalid::TooManyElements { max: MAX_ELEMENTS }),
            (deep, Invalid::TooDeep { max: MAX_DEPTH }),
            (b"*2\r\n:1\r\n?\r\n", Invalid::UnknownType { byte: b'?' }),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn the_limits_are_inclusive() {
        let most = [b"$65536\r\n".as_slice(), &[7u8; MAX_BULK], b"\r\n"].concat();
        assert_eq!(complete(&most), Reply::Bulk(vec![7; MAX_BULK]));
        let mut sixteen = b"*16\r\n".to_vec();
        for _ in 0..16 {
            sixteen.extend_from_slice(b":1\r\n");
        }
        assert!(matches!(complete(&sixteen), Reply::Array(items) if items.len() == 16));
        // Two big bulk strings in one reply pass the whole-reply bound before the bytes arrive.
        let two = [
            b"*2\r\n$65536\r\n".as_slice(),
            &[1u8; MAX_BULK],
            b"\r\n$65536\r\n",
        ]
        .concat();
        assert_eq!(parse(&two), Err(Invalid::TooLarge { max: MAX_REPLY }));
    }

    #[test]
    fn a_partial_reply_at_the_bound_is_too_large() {
        // Arrays of arrays of long lines: every piece within its limit, the whole past the bound.
        let line = [b"+".as_slice(), &[b'a'; 1000], b"\r\n"].concat();
        let mut input = b"*16\r\n".to_vec();
        'fill: for _ in 0..16 {
            input.extend_from_slice(b"*16\r\n");
            for _ in 0..16 {
                input.extend_from_slice(&line);
                if input.len() >= MAX_REPLY {
                    break 'fill;
                }
            }
        }
        assert_eq!(parse(&input[..MAX_REPLY - 10]), Ok(Parsed::Partial));
        assert_eq!(parse(&input), Err(Invalid::TooLarge { max: MAX_REPLY }));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"SET", b"k", b"a b\r\n", b"PX", b"100"]),
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na b\r\n\r\n$2\r\nPX\r\n$3\r\n100\r\n"
        );
        assert_eq!(command(&[]), b"*0\r\n");
    }

    #[test]
    fn debug_shows_bulk_lengths_only() {
        let reply = Reply::Array(vec![Reply::Bulk(b"ghs_secret".to_vec()), Reply::Integer(1)]);
        assert_eq!(
            format!("{reply:?}"),
            "Array([Bulk(<10 bytes>), Integer(1)])"
        );
    }
}
