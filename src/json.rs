//! JSON out: a `serde` serializer that writes exactly the bytes of `serde_json`'s compact writer
//! (`serde_json::to_writer`), for the records written on every request — the audit line, the
//! token answer and the token cache key.
//!
//! Why not `serde_json` itself: it escapes strings one byte at a time through a table, and a
//! cached vend writes about 2.5 KB of JSON (two thirds of it claim values, a repository URL and a
//! hashed token that need no escaping); that loop was the largest single item of a cached vend's
//! user-space work. Here a string is scanned eight bytes at a time ([`crate::scan`]) for the
//! three kinds of byte that need an escape (`"`, `\` and the control characters below 0x20) and
//! written in runs. The
//! escapes are serde_json's: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, else `\u00xx` in
//! lowercase hex; nothing else (not DEL, not non-ASCII) is escaped. Integers are written in
//! decimal; floats (one per record) by serde_json itself. The tests compare the output with
//! serde_json's for every shape kitebridge writes and for every single byte in a string, and the
//! `json_out` fuzz target for any string.
//!
//! Only what the records use is written; the rest of the data model is written the way
//! serde_json writes it (enum variants as `"name"` or `{"name":…}`), with map keys limited to
//! strings, numbers and bools (quoted), as serde_json limits them.
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Write};

use serde::ser::{self, Serialize};

use crate::scan;

/// Why a value could not be written.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The writer failed.
    Io(io::Error),
    /// A map key that is not a string, a number or a bool (serde_json refuses these too).
    KeyMustBeAString,
    /// A map key that is a float but not finite.
    FloatKeyMustBeFinite,
    /// The value's own `Serialize` failed.
    Custom(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "json write failed: {e}"),
            Error::KeyMustBeAString => f.write_str("json map key must be a string"),
            Error::FloatKeyMustBeFinite => f.write_str("json map key must be a finite number"),
            Error::Custom(why) => write!(f, "json value not written: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::Custom(msg.to_string())
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// Writes `value` to `out` as compact JSON, byte for byte as `serde_json::to_writer` would.
pub fn to_writer<W: Write, T: Serialize + ?Sized>(out: &mut W, value: &T) -> Result<(), Error> {
    value.serialize(&mut Serializer { out })
}

/// Whether `b` must be escaped in a JSON string.
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The length of `bytes`' longest prefix that needs no escape (tested eight bytes at a time).
fn plain_prefix(bytes: &[u8]) -> usize {
    let may_need_escape =
        |w: u64| scan::any_below(w, 0x20) | scan::any_equal(w, b'"') | scan::any_equal(w, b'\\');
    scan::position(bytes, may_need_escape, needs_escape).unwrap_or(bytes.len())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `s` as a JSON string literal, quotes included.
fn write_str<W: Write>(out: &mut W, s: &str) -> io::Result<()> {
    out.write_all(b"\"")?;
    write_str_contents(out, s)?;
    out.write_all(b"\"")
}

/// `s` escaped, without the quotes.
fn write_str_contents<W: Write>(out: &mut W, s: &str) -> io::Result<()> {
    let mut rest = s.as_bytes();
    loop {
        let plain = plain_prefix(rest);
        let (run, tail) = rest.split_at(plain);
        out.write_all(run)?;
        let Some((&b, after)) = tail.split_first() else {
            break;
        };
        let short = match b {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            0x08 => Some(b'b'),
            0x0c => Some(b'f'),
            b'\n' => Some(b'n'),
            b'\r' => Some(b'r'),
            b'\t' => Some(b't'),
            _ => None,
        };
        match short {
            Some(c) => out.write_all(&[b'\\', c])?,
            None => {
                let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
                let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
                out.write_all(&[b'\\', b'u', b'0', b'0', hi, lo])?;
            }
        }
        rest = after;
    }
    Ok(())
}

/// A `Display` value as a JSON string, escaped as it is formatted (no string built first), as
/// serde_json's `collect_str` writes it.
fn write_display<W: Write, T: fmt::Display + ?Sized>(out: &mut W, value: &T) -> io::Result<()> {
    struct Escaping<'a, W> {
        out: &'a mut W,
        error: Option<io::Error>,
    }
    impl<W: Write> fmt::Write for Escaping<'_, W> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            write_str_contents(self.out, s).map_err(|e| {
                self.error = Some(e);
                fmt::Error
            })
        }
    }
    out.write_all(b"\"")?;
    let mut escaping = Escaping {
        out: &mut *out,
        error: None,
    };
    if fmt::write(&mut escaping, format_args!("{value}")).is_err() {
        return Err(escaping
            .error
            .unwrap_or_else(|| io::Error::other("a Display implementation failed")));
    }
    out.write_all(b"\"")
}

/// An integer in decimal.
fn write_int<W: Write>(out: &mut W, n: impl Into<i128>) -> io::Result<()> {
    let n: i128 = n.into();
    // 64-bit division for every integer kitebridge writes (128-bit division is a library call
    // per digit); beyond 64 bits, the standard library's digits.
    let Ok(mut rest) = u64::try_from(n.unsigned_abs()) else {
        return out.write_all(n.to_string().as_bytes());
    };
    let mut digits = [0u8; 21];
    let mut at = digits.len();
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            // `rest % 10` is below 10.
            *d = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'-';
        }
    }
    out.write_all(digits.get(at..).unwrap_or_default())
}

/// A float, written by serde_json itself: its shortest round-trip form with its own rules for
/// when to use an exponent, `null` if not finite. (One per audit record, `durationMs`.)
fn write_float<W: Write, F: Serialize>(out: &mut W, f: F) -> io::Result<()> {
    serde_json::to_writer(out, &f).map_err(io::Error::other)
}

/// The serializer: what it writes goes straight to `out`.
pub struct Serializer<'w, W> {
    out: &'w mut W,
}

/// A sequence, tuple, map or struct being written: whether an element was written yet.
pub struct Compound<'a, 'w, W> {
    ser: &'a mut Serializer<'w, W>,
    first: bool,
    /// A variant's object (`{"name":…}`) to close after the body.
    close_variant: bool,
}

impl<'w, W: Write> Serializer<'w, W> {
    fn open(&mut self, bracket: &[u8], close_variant: bool) -> Result<Compound<'_, 'w, W>, Error> {
        self.out.write_all(bracket)?;
        Ok(Compound {
            ser: self,
            first: true,
            close_variant,
        })
    }

    /// `{"variant":` — the start of an enum variant with a body.
    fn variant_key(&mut self, variant: &str) -> Result<(), Error> {
        self.out.write_all(b"{")?;
        write_str(self.out, variant)?;
        self.out.write_all(b":")?;
        Ok(())
    }
}

impl<W: Write> Compound<'_, '_, W> {
    fn comma(&mut self) -> Result<(), Error> {
        if !self.first {
            self.ser.out.write_all(b",")?;
        }
        self.first = false;
        Ok(())
    }

    fn close(self, bracket: &[u8]) -> Result<(), Error> {
        self.ser.out.write_all(bracket)?;
        if self.close_variant {
            self.ser.out.write_all(b"}")?;
        }
        Ok(())
    }
}

impl<'a, 'w, W: Write> ser::Serializer for &'a mut Serializer<'w, W> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a, 'w, W>;
    type SerializeTuple = Compound<'a, 'w, W>;
    type SerializeTupleStruct = Compound<'a, 'w, W>;
    type SerializeTupleVariant = Compound<'a, 'w, W>;
    type SerializeMap = Compound<'a, 'w, W>;
    type SerializeStruct = Compound<'a, 'w, W>;
    type SerializeStructVariant = Compound<'a, 'w, W>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        Ok(self.out.write_all(if v { b"true" } else { b"false" })?)
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        Ok(write_int(self.out, v)?)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        // Above i128::MAX (never written by kitebridge): the standard library's digits.
        match i128::try_from(v) {
            Ok(v) => Ok(write_int(self.out, v)?),
            Err(_) => Ok(self.out.write_all(v.to_string().as_bytes())?),
        }
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        Ok(write_float(self.out, v)?)
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        Ok(write_float(self.out, v)?)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        Ok(write_str(self.out, v.encode_utf8(&mut [0u8; 4]))?)
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        Ok(write_str(self.out, v)?)
    }
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<(), Error> {
        Ok(write_display(self.out, value)?)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for b in v {
            seq.serialize_element(b)?;
        }
        seq.end()
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(self.out.write_all(b"null")?)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant_key(variant)?;
        value.serialize(&mut *self)?;
        Ok(self.out.write_all(b"}")?)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        self.open(b"[", false)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        self.variant_key(variant)?;
        self.open(b"[", true)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        self.open(b"{", false)
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        self.variant_key(variant)?;
        self.open(b"{", true)
    }
}

impl<W: Write> ser::SerializeSeq for Compound<'_, '_, W> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.comma()?;
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), Error> {
        self.close(b"]")
    }
}

impl<W: Write> ser::SerializeTuple for Compound<'_, '_, W> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl<W: Write> ser::SerializeTupleStruct for Compound<'_, '_, W> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl<W: Write> ser::SerializeTupleVariant for Compound<'_, '_, W> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeSeq::end(self)
    }
}

impl<W: Write> ser::SerializeMap for Compound<'_, '_, W> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.comma()?;
        key.serialize(KeySerializer {
            out: &mut *self.ser.out,
        })?;
        Ok(self.ser.out.write_all(b":")?)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), Error> {
        self.close(b"}")
    }
}

impl<W: Write> ser::SerializeStruct for Compound<'_, '_, W> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        // `,"key":` in as few writes as the key allows (a struct has many short keys).
        self.ser
            .out
            .write_all(if self.first { b"\"" } else { b",\"" })?;
        self.first = false;
        write_str_contents(self.ser.out, key)?;
        self.ser.out.write_all(b"\":")?;
        value.serialize(&mut *self.ser)
    }
    fn end(self) -> Result<(), Error> {
        self.close(b"}")
    }
}

impl<W: Write> ser::SerializeStructVariant for Compound<'_, '_, W> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<(), Error> {
        ser::SerializeStruct::end(self)
    }
}

/// A map key: a string, or a number or bool written as a string (serde_json's rule); anything
/// else is [`Error::KeyMustBeAString`].
struct KeySerializer<'w, W> {
    out: &'w mut W,
}

impl<W: Write> KeySerializer<'_, W> {
    fn quoted_int(self, n: impl Into<i128>) -> Result<(), Error> {
        self.out.write_all(b"\"")?;
        write_int(self.out, n)?;
        Ok(self.out.write_all(b"\"")?)
    }

    fn quoted_float<F: Serialize>(self, f: F, finite: bool) -> Result<(), Error> {
        if !finite {
            return Err(Error::FloatKeyMustBeFinite);
        }
        self.out.write_all(b"\"")?;
        write_float(self.out, f)?;
        Ok(self.out.write_all(b"\"")?)
    }
}

impl<W: Write> ser::Serializer for KeySerializer<'_, W> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = ser::Impossible<(), Error>;
    type SerializeTuple = ser::Impossible<(), Error>;
    type SerializeTupleStruct = ser::Impossible<(), Error>;
    type SerializeTupleVariant = ser::Impossible<(), Error>;
    type SerializeMap = ser::Impossible<(), Error>;
    type SerializeStruct = ser::Impossible<(), Error>;
    type SerializeStructVariant = ser::Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        Ok(write_str(self.out, v)?)
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        Ok(write_str(self.out, v.encode_utf8(&mut [0u8; 4]))?)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.quoted_int(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.out.write_all(b"\"")?;
        (&mut Serializer {
            out: &mut *self.out,
        })
            .serialize_u128(v)?;
        Ok(self.out.write_all(b"\"")?)
    }
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        Ok(self
            .out
            .write_all(if v { b"\"true\"" } else { b"\"false\"" })?)
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.quoted_float(v, v.is_finite())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.quoted_float(v, v.is_finite())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_none(self) -> Result<(), Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(Error::KeyMustBeAString)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error::KeyMustBeAString)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        to_writer(&mut out, value)?;
        Ok(out)
    }

    /// Both writers' bytes for `value`.
    fn same<T: Serialize + ?Sized + fmt::Debug>(value: &T) {
        let ours = to_vec(value).unwrap();
        let theirs = serde_json::to_vec(value).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "for {value:?}"
        );
    }

    #[test]
    fn every_single_byte_and_char_in_a_string_is_written_as_serde_json_writes_it() {
        for b in 0u8..=0x7f {
            let c = char::from(b);
            same(&c);
            // At every place of an 8-byte word and across word boundaries.
            for at in [0, 1, 15, 16, 17, 31, 32, 40] {
                let mut s = "a".repeat(at);
                s.push(c);
                s.push_str("tail");
                same(&s);
            }
        }
        for s in [
            "",
            "é",
            "日本語",
            "\u{7f}",
            "\u{2028}",
            "x\u{1F600}y",
            "\"\\\"\\",
        ] {
            same(&s);
            same(&s.repeat(20));
        }
    }

    #[test]
    fn strings_of_every_length_around_the_block_size_are_written_whole() {
        for len in 0..70 {
            let plain: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            same(&plain);
            let mut escaped = plain.clone();
            escaped.insert(len / 2, '\n');
            same(&escaped);
        }
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        for n in [
            0i64,
            1,
            -1,
            9,
            10,
            99,
            100,
            i64::MAX,
            i64::MIN,
            1_700_000_000,
        ] {
            same(&n);
        }
        for n in [0u64, 7, u64::MAX] {
            same(&n);
        }
        same(&u128::MAX);
        same(&i128::MIN);
        same(&(u16::MAX, u8::MAX, i8::MIN, i16::MIN, i32::MIN, u32::MAX));
        for f in [
            0.0f64,
            -0.0,
            1.0,
            0.1,
            12.5,
            150.3,
            1234.5,
            1e15,
            9.999e15,
            1e16,
            1.5e17,
            1e-5,
            1.2e-5,
            9e-6,
            1e-7,
            5e-324,
            f64::MAX,
            f64::MIN,
            f64::NAN,
            f64::INFINITY,
            3.0e100,
        ] {
            same(&f);
        }
        for f in [
            0.0f32,
            1.5,
            0.1,
            1e20,
            3.4e38,
            f32::NAN,
            -1.907_398_5e15,
            1e13,
            1e-6,
        ] {
            same(&f);
        }
    }

    #[test]
    fn containers_options_and_variants_are_written_as_serde_json_writes_them() {
        #[derive(serde::Serialize, Debug)]
        #[serde(rename_all = "camelCase")]
        struct Shape<'a> {
            a_field: Option<&'a str>,
            none: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<u8>,
            list: Vec<String>,
            empty: Vec<u8>,
            unit: (),
            tuple: (u8, &'a str, bool),
            map: BTreeMap<String, u32>,
            int_keys: BTreeMap<u32, bool>,
            variants: Vec<Variant>,
            bytes: &'a [u8],
        }
        #[derive(serde::Serialize, Debug)]
        enum Variant {
            Unit,
            Newtype(u8),
            Tuple(u8, u8),
            Struct { x: i32 },
        }
        same(&Shape {
            a_field: Some("v\"al"),
            none: None,
            skipped: None,
            list: vec!["a".into(), "b\n".into()],
            empty: vec![],
            unit: (),
            tuple: (1, "two", false),
            map: [("k\t".to_owned(), 1), ("z".to_owned(), 2)].into(),
            int_keys: [(3, true)].into(),
            variants: vec![
                Variant::Unit,
                Variant::Newtype(4),
                Variant::Tuple(5, 6),
                Variant::Struct { x: -7 },
            ],
            bytes: b"\x00\xff",
        });
    }

    #[test]
    fn map_keys_are_quoted_or_refused_as_serde_json_does() {
        same(&BTreeMap::from([(true, 1), (false, 2)]));
        same(&BTreeMap::from([(i128::MIN, 1), (7, 2)]));
        same(&BTreeMap::from([(u128::MAX, 1)]));
        same(&BTreeMap::from([(Some("k"), 1)]));
        same(&BTreeMap::from([('c', 1)]));
        let mut floats = serde_json::Map::new();
        floats.insert("x".into(), 1.into());
        same(&floats);
        same(&std::collections::HashMap::from([(1.5f64.to_bits(), 1)]));
        for key in [1.5f64, 2.0, 1e20, -0.0] {
            let map: Vec<(f64, u8)> = vec![(key, 1)];
            same(&KeyedF64(map));
        }
        let unit_key: BTreeMap<(), u8> = [((), 1)].into();
        assert!(serde_json::to_vec(&unit_key).is_err());
        assert!(matches!(to_vec(&unit_key), Err(Error::KeyMustBeAString)));
        let nan_key = KeyedF64(vec![(f64::NAN, 1)]);
        assert!(serde_json::to_vec(&nan_key).is_err());
        assert!(matches!(to_vec(&nan_key), Err(Error::FloatKeyMustBeFinite)));
    }

    /// A map with float keys (no std map holds them).
    #[derive(Debug)]
    struct KeyedF64(Vec<(f64, u8)>);

    impl Serialize for KeyedF64 {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }

    #[test]
    fn a_display_value_is_written_escaped_as_serde_json_writes_it() {
        /// Formats in several pieces, one of them needing escapes.
        #[derive(Debug)]
        struct Pieces;
        impl fmt::Display for Pieces {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let number = 42;
                write!(f, "acme/widgets-{number}-{:?}", "q\"\n")
            }
        }
        impl Serialize for Pieces {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        same(&Pieces);
        same(&vec![Pieces, Pieces]);
    }

    #[test]
    fn a_failing_writer_fails_the_write() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(matches!(to_writer(&mut Full, "x"), Err(Error::Io(_))));
    }
}
