//! Shared-cache values sealed with AES-256-GCM (`ring::aead`), so the cache server holds nothing
//! it can read or forge.
//!
//! A sealed value is `version (1) ‖ key id (4) ‖ nonce (12) ‖ ciphertext and tag`. The associated
//! data is the version and key id followed by the caller's context (the key prefix and the
//! canonical cache key), so a value copied, swapped or replayed under another key, another prefix
//! or with a rewritten header fails authentication. Keys come from `CACHE_ENCRYPTION_KEYS`: the
//! first seals, every one opens (rotation). A key's id is derived from the key itself (the first
//! four bytes of a labelled SHA-256), not from its place in the list, so prepending a new key does
//! not re-number the old ones.
//!
//! Pure: the nonce is passed in (the caller draws it from the system random source).
#![forbid(unsafe_code)]

use std::fmt;

use base64::Engine;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// The sealed-value format.
pub const VERSION: u8 = 1;
/// The most keys `CACHE_ENCRYPTION_KEYS` may hold.
pub const MAX_KEYS: usize = 16;
/// The key length in bytes.
pub const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 4;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = HEADER_LEN + 16;

/// Which key sealed a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyId([u8; KEY_ID_LEN]);

/// The encryption keys, first one sealing. `Debug` shows how many there are, nothing else.
pub struct Keys {
    keys: Vec<(KeyId, LessSafeKey)>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({} keys, [redacted])", self.keys.len())
    }
}

/// What is wrong with `CACHE_ENCRYPTION_KEYS` (keys are counted from 1; never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeysError {
    /// No key at all.
    Empty,
    /// More than [`MAX_KEYS`].
    TooMany { count: usize },
    /// Not standard padded base64.
    NotBase64 { key: usize },
    /// Decodes to other than [`KEY_LEN`] bytes.
    WrongLength { key: usize, bytes: usize },
    /// The same key twice (or two keys with the same id).
    Duplicate { key: usize },
}

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeysError::Empty => write!(f, "no key"),
            KeysError::TooMany { count } => write!(f, "{count} keys, more than {MAX_KEYS}"),
            KeysError::NotBase64 { key } => write!(f, "key {key} is not standard base64"),
            KeysError::WrongLength { key, bytes } => {
                write!(f, "key {key} is {bytes} bytes, not {KEY_LEN}")
            }
            KeysError::Duplicate { key } => write!(f, "key {key} repeats an earlier key"),
        }
    }
}

impl std::error::Error for KeysError {}

/// Why a sealed value was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// Shorter than a header and a tag.
    Truncated,
    /// Another format version.
    Version { found: u8 },
    /// Sealed by a key not in the list.
    UnknownKey,
    /// The tag does not verify: tampered, or sealed for another key, prefix or header.
    Authentication,
}

impl Rejected {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Truncated => "truncated",
            Rejected::Version { .. } => "version",
            Rejected::UnknownKey => "unknown_key",
            Rejected::Authentication => "authentication",
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Truncated => write!(f, "truncated value"),
            Rejected::Version { found } => write!(f, "unknown format version {found}"),
            Rejected::UnknownKey => write!(f, "sealed by an unknown key"),
            Rejected::Authentication => write!(f, "authentication failed"),
        }
    }
}

impl std::error::Error for Rejected {}

fn key_id(key: &[u8]) -> KeyId {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"kitebridge shared cache key id\0");
    context.update(key);
    let digest = context.finish();
    let mut id = [0u8; KEY_ID_LEN];
    for (slot, byte) in id.iter_mut().zip(digest.as_ref()) {
        *slot = *byte;
    }
    KeyId(id)
}

impl Keys {
    /// Whitespace-separated standard base64 (padded) keys of 32 bytes each.
    pub fn parse(text: &str) -> Result<Keys, KeysError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.is_empty() {
            return Err(KeysError::Empty);
        }
        if words.len() > MAX_KEYS {
            return Err(KeysError::TooMany { count: words.len() });
        }
        let mut keys: Vec<(KeyId, LessSafeKey)> = Vec::with_capacity(words.len());
        for (i, word) in words.iter().enumerate() {
            let key = i + 1;
            let mut bytes = base64::engine::general_purpose::STANDARD
                .decode(word)
                .map_err(|_| KeysError::NotBase64 { key })?;
            if bytes.len() != KEY_LEN {
                let error = KeysError::WrongLength {
                    key,
                    bytes: bytes.len(),
                };
                bytes.fill(0);
                return Err(error);
            }
            let id = key_id(&bytes);
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes);
            bytes.fill(0);
            let unbound = unbound.map_err(|_| KeysError::WrongLength {
                key,
                bytes: KEY_LEN,
            })?;
            if keys.iter().any(|(other, _)| *other == id) {
                return Err(KeysError::Duplicate { key });
            }
            keys.push((id, LessSafeKey::new(unbound)));
        }
        Ok(Keys { keys })
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a key list has at least one key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `plaintext` under the first key, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8], nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let Some((id, key)) = self.keys.first() else {
            return Vec::new(); // unreachable: parse refuses an empty list
        };
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(&id.0);
        let aad = associated_data(&out, context);
        out.extend_from_slice(&nonce);
        let mut sealed = plaintext.to_vec();
        // Only fails for plaintexts past GCM's 64 GiB limit.
        if key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .is_err()
        {
            sealed.fill(0);
            return Vec::new();
        }
        out.append(&mut sealed);
        out
    }

    /// Opens a value [`Keys::seal`] made for the same `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, Rejected> {
        if sealed.len() < OVERHEAD {
            return Err(Rejected::Truncated);
        }
        let (header, body) = sealed.split_at(HEADER_LEN);
        let (version_and_id, nonce) = header.split_at(1 + KEY_ID_LEN);
        let (version, id) = version_and_id.split_at(1);
        if version != [VERSION] {
            return Err(Rejected::Version {
                found: version.first().copied().unwrap_or_default(),
            });
        }
        let Some((_, key)) = self.keys.iter().find(|(known, _)| known.0 == id) else {
            return Err(Rejected::UnknownKey);
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Rejected::Truncated)?;
        let aad = associated_data(version_and_id, context);
        let mut buffer = body.to_vec();
        match key.open_in_place(nonce, Aad::from(aad), &mut buffer) {
            Ok(plain) => {
                let len = plain.len();
                buffer.truncate(len);
                Ok(buffer)
            }
            Err(_) => Err(Rejected::Authentication),
        }
    }
}

fn associated_data(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = b"kitebridge shared cache\0".to_vec();
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // bytes 0..32
    const B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; // bytes 32..64

    #[test]
    fn key_lists_are_parsed_strictly() {
        assert_eq!(Keys::parse(A).unwrap().len(), 1);
        assert_eq!(Keys::parse(&format!(" {B}\n\t{A} ")).unwrap().len(), 2);
        let too_many = vec![A; MAX_KEYS + 1].join(" ");
        let cases: &[(&str, KeysError)] = &[
            ("", KeysError::Empty),
            (" \n ", KeysError::Empty),
            (&too_many, KeysError::TooMany { count: 17 }),
            ("not-base64!", KeysError::NotBase64 { key: 1 }),
            (
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
                KeysError::NotBase64 { key: 1 },
            ), // padding left off
            (
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh_=",
                KeysError::NotBase64 { key: 1 },
            ), // URL-safe alphabet
            ("AAEC", KeysError::WrongLength { key: 1, bytes: 3 }),
            (
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",
                KeysError::WrongLength { key: 1, bytes: 33 },
            ),
            (&format!("{A} {B} {A}"), KeysError::Duplicate { key: 3 }),
        ];
        for (text, want) in cases {
            assert_eq!(Keys::parse(text).unwrap_err(), *want, "{text:?}");
            assert!(!want.to_string().contains(A));
        }
    }

    #[test]
    fn debug_shows_no_key() {
        let keys = Keys::parse(A).unwrap();
        assert_eq!(format!("{keys:?}"), "Keys(1 keys, [redacted])");
    }

    #[test]
    fn sealed_values_open_only_under_their_context() {
        let keys = Keys::parse(A).unwrap();
        let sealed = keys.seal(b"kitebridge:\0key-1", b"the entry", [7; NONCE_LEN]);
        assert_eq!(sealed.len(), OVERHEAD + b"the entry".len());
        assert_eq!(sealed[0], VERSION);
        assert!(!sealed.windows(9).any(|w| w == b"the entry"), "encrypted");
        assert_eq!(
            keys.open(b"kitebridge:\0key-1", &sealed).unwrap(),
            b"the entry"
        );
        // Swapped to another key, or another deployment's prefix.
        assert_eq!(
            keys.open(b"kitebridge:\0key-2", &sealed),
            Err(Rejected::Authentication)
        );
        assert_eq!(
            keys.open(b"other:\0key-1", &sealed),
            Err(Rejected::Authentication)
        );
    }

    #[test]
    fn every_tampered_byte_is_refused() {
        let keys = Keys::parse(A).unwrap();
        let context = b"ctx";
        let sealed = keys.seal(context, b"entry", [1; NONCE_LEN]);
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            let got = keys.open(context, &tampered);
            let want = match i {
                0 => Err(Rejected::Version { found: VERSION ^ 1 }),
                1..=4 => Err(Rejected::UnknownKey),
                _ => Err(Rejected::Authentication),
            };
            assert_eq!(got, want, "byte {i}");
        }
        for cut in 0..OVERHEAD {
            assert_eq!(keys.open(context, &sealed[..cut]), Err(Rejected::Truncated));
        }
        assert_eq!(
            keys.open(context, &sealed[..sealed.len() - 1]),
            Err(Rejected::Authentication)
        );
    }

    #[test]
    fn rotation_the_first_key_seals_every_key_opens() {
        let old = Keys::parse(A).unwrap();
        let rotated = Keys::parse(&format!("{B} {A}")).unwrap();
        let written_before = old.seal(b"c", b"old entry", [2; NONCE_LEN]);
        assert_eq!(rotated.open(b"c", &written_before).unwrap(), b"old entry");
        let written_after = rotated.seal(b"c", b"new entry", [3; NONCE_LEN]);
        assert_eq!(
            old.open(b"c", &written_after),
            Err(Rejected::UnknownKey),
            "sealed by the new key"
        );
        let dropped = Keys::parse(B).unwrap();
        assert_eq!(dropped.open(b"c", &written_after).unwrap(), b"new entry");
        assert_eq!(
            dropped.open(b"c", &written_before),
            Err(Rejected::UnknownKey)
        );
    }
}
