//! The compact-JWS parser and the RS256 verify primitive.
//!
//! [`UnverifiedToken::parse`] does steps 2–4 of the module documentation (size, segments,
//! base64url, header); [`UnverifiedToken::verify`] does step 6 and is the only way to get the
//! payload out, so unverified payload bytes never leave this module.
#![forbid(unsafe_code)]

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::{DeserializeSeed, Error as _, MapAccess, Visitor};
use serde_json::Value;

use super::{Error, PublicKey};

/// The longest token accepted, in bytes, before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The longest `kid` accepted, in bytes.
pub const MAX_KID_LEN: usize = 128;

/// Header parameters that must not appear: each could point key selection elsewhere (`jku`,
/// `jwk`, `x5u`, `x5c`), pin a certificate we do not check (`x5t`, `x5t#S256`), or change how the
/// token is processed (`crit`, `b64`).
const FORBIDDEN_HEADER_PARAMETERS: [&str; 8] =
    ["jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64"];

/// A part of a compact JWS, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    /// The JOSE header.
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segment::Header => "header",
            Segment::Payload => "payload",
            Segment::Signature => "signature",
        })
    }
}

/// A token whose structure and header passed their checks but whose signature is not yet
/// verified. Its payload is reachable only through [`UnverifiedToken::verify`].
pub struct UnverifiedToken<'a> {
    kid: String,
    signing_input: &'a [u8],
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl fmt::Debug for UnverifiedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnverifiedToken")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl<'a> UnverifiedToken<'a> {
    /// Checks size, segments, base64url and the header.
    pub fn parse(token: &'a [u8]) -> Result<Self, Error> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Error::TokenTooLarge { len: token.len() });
        }
        let mut parts = token.split(|&b| b == b'.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::SegmentCount);
        };
        let header = decode_segment(header_b64, Segment::Header)?;
        let payload = decode_segment(payload_b64, Segment::Payload)?;
        let signature = decode_segment(signature_b64, Segment::Signature)?;
        let kid = check_header(&header)?;
        let signing_input_len = header_b64
            .len()
            .checked_add(1)
            .and_then(|n| n.checked_add(payload_b64.len()))
            .ok_or(Error::SegmentCount)?;
        let signing_input = token.get(..signing_input_len).ok_or(Error::SegmentCount)?;
        Ok(UnverifiedToken {
            kid,
            signing_input,
            payload,
            signature,
        })
    }

    /// The header's `kid` (checked to be a string of at most [`MAX_KID_LEN`] bytes; untrusted).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Verifies the signature over the received `header.payload` bytes with `key`; only then
    /// hands out the decoded payload.
    pub fn verify(self, key: &PublicKey) -> Result<Vec<u8>, Error> {
        verify_rs256(key, self.signing_input, &self.signature)?;
        Ok(self.payload)
    }
}

/// RSASSA-PKCS1-v1_5 with SHA-256 (`ring::signature::RSA_PKCS1_2048_8192_SHA256`), after checking
/// that the signature is exactly as long as the modulus.
pub fn verify_rs256(key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), Error> {
    let expected = key.modulus_len();
    if signature.len() != expected {
        return Err(Error::SignatureLength {
            expected,
            actual: signature.len(),
        });
    }
    key.components()
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            message,
            signature,
        )
        .map_err(|_| Error::BadSignature)
}

/// Strict unpadded base64url, refusing the empty input the engine would accept.
pub(crate) fn decode_segment(encoded: &[u8], segment: Segment) -> Result<Vec<u8>, Error> {
    if encoded.is_empty() {
        return Err(Error::EmptySegment { segment });
    }
    URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| Error::Base64 { segment })
}

/// The header members that decide anything, kept as raw JSON so each rule reports precisely.
#[derive(Default)]
struct Header {
    alg: Option<Value>,
    kid: Option<Value>,
    typ: Option<Value>,
    /// The first forbidden parameter present (with any value, `null` included).
    forbidden: Option<&'static str>,
}

impl MemberReader for Header {
    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        name: &str,
        access: &mut A,
        _: &mut Option<MemberFailure>,
    ) -> Result<(), A::Error> {
        match name {
            "alg" => self.alg = Some(access.next_value()?),
            "kid" => self.kid = Some(access.next_value()?),
            "typ" => self.typ = Some(access.next_value()?),
            _ => {
                let forbidden = FORBIDDEN_HEADER_PARAMETERS.into_iter().find(|p| *p == name);
                self.forbidden = self.forbidden.or(forbidden);
                access.next_value::<IgnoredValue>()?;
            }
        }
        Ok(())
    }
}

/// Step 4: returns the `kid` of a header that passes every header rule.
fn check_header(header: &[u8]) -> Result<String, Error> {
    let header = parse_json_object(header, Segment::Header, Header::default())?;
    if header.alg.as_ref().and_then(Value::as_str) != Some("RS256") {
        return Err(Error::AlgorithmNotAllowed);
    }
    if let Some(name) = header.forbidden {
        return Err(Error::ForbiddenHeaderParameter(name));
    }
    let kid = match header.kid {
        None | Some(Value::Null) => return Err(Error::MissingKid),
        Some(Value::String(kid)) => kid,
        Some(_) => return Err(Error::KidNotString),
    };
    if kid.len() > MAX_KID_LEN {
        return Err(Error::KidTooLong { len: kid.len() });
    }
    if let Some(typ) = header.typ {
        if !typ.as_str().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
            return Err(Error::TypeNotAllowed);
        }
    }
    Ok(kid)
}

/// A precise reason recorded while reading a member, since serde's own errors are strings.
pub(crate) enum MemberFailure {
    /// The member name (truncated) was seen before in the same object.
    Duplicate(String),
    /// The value of a known member has the wrong JSON type.
    WrongType {
        name: &'static str,
        expected: &'static str,
    },
}

/// Reads the members of one JSON object, each name at most once (checked by the caller).
pub(crate) trait MemberReader {
    /// Reads the value of member `name`. On a wrong value type, records it in `failure` before
    /// returning the error.
    fn read<'de, A: MapAccess<'de>>(
        &mut self,
        name: &str,
        access: &mut A,
        failure: &mut Option<MemberFailure>,
    ) -> Result<(), A::Error>;
}

/// Parses any JSON value and drops it, checking what a `Value` would (valid escapes, no lone
/// surrogates, the depth limit) without building one: for claims kitebridge does not read.
pub(crate) struct IgnoredValue;

impl<'de> Deserialize<'de> for IgnoredValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IgnoredValue)
    }
}

impl<'de> Visitor<'de> for IgnoredValue {
    type Value = IgnoredValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any json value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(IgnoredValue)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(IgnoredValue)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(IgnoredValue)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(IgnoredValue)
    }

    /// Reached only after serde_json decoded the string, escapes and surrogates included.
    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(IgnoredValue)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(IgnoredValue)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<Self, A::Error> {
        while items.next_element::<IgnoredValue>()?.is_some() {}
        Ok(IgnoredValue)
    }

    /// Names are decoded as strings too; nested duplicates are tolerated, as in any ignored claim.
    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Self, A::Error> {
        while members
            .next_entry::<IgnoredValue, IgnoredValue>()?
            .is_some()
        {}
        Ok(IgnoredValue)
    }
}

/// Parses `bytes` as exactly one UTF-8 JSON object (no trailing bytes, no duplicate member names
/// after unescaping, nesting within serde_json's default depth of 128) into `reader`.
pub(crate) fn parse_json_object<R: MemberReader>(
    bytes: &[u8],
    segment: Segment,
    reader: R,
) -> Result<R, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidUtf8 { segment })?;
    let mut failure = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = StrictObject {
        reader,
        failure: &mut failure,
    }
    .deserialize(&mut deserializer)
    .and_then(|object| deserializer.end().map(|()| object));
    parsed.map_err(|error| match failure {
        Some(MemberFailure::Duplicate(name)) => Error::DuplicateMember { segment, name },
        Some(MemberFailure::WrongType { name, expected }) if error.is_data() => {
            Error::ClaimType { name, expected }
        }
        _ if error.is_data() => Error::NotJsonObject { segment },
        _ => Error::MalformedJson {
            segment,
            detail: error.to_string(),
        },
    })
}

/// Deserializes a JSON object through a [`MemberReader`], refusing a member name seen before.
struct StrictObject<'a, R> {
    reader: R,
    failure: &'a mut Option<MemberFailure>,
}

impl<'de, R: MemberReader> DeserializeSeed<'de> for StrictObject<'_, R> {
    type Value = R;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<R, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, R: MemberReader> Visitor<'de> for StrictObject<'_, R> {
    type Value = R;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut access: A) -> Result<R, A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(Name(name)) = access.next_key()? {
            if seen.contains(&name) {
                *self.failure = Some(MemberFailure::Duplicate(super::truncate(&name).to_owned()));
                return Err(A::Error::custom("duplicate member"));
            }
            self.reader.read(&name, &mut access, self.failure)?;
            seen.insert(name);
        }
        Ok(self.reader)
    }
}

/// A member name, borrowed from the input unless it had escapes (saves an allocation per member).
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(NameVisitor)
    }
}

struct NameVisitor;

impl<'de> Visitor<'de> for NameVisitor {
    type Value = Name<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, name: &'de str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Borrowed(name)))
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Name<'de>, E> {
        Ok(Name(Cow::Owned(name.to_owned())))
    }
}
