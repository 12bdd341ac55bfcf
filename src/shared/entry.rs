//! The plaintext of a shared token-cache entry: what a cache hit needs to answer (the token, its
//! GitHub expiry, what it covers, when it was minted), as strict JSON. Sealed by [`super::seal`]
//! before it leaves the process; the plaintext is never logged.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::github::{self, Minted};
use crate::secret::Secret;

/// The longest token life GitHub grants (one hour), with room for clock skew: an entry claiming
/// more is not one kitebridge wrote.
const MAX_LIFE_SECS: u64 = 3600 + 300;

/// The wire form. Not `Debug`: it holds the token.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    token: String,
    expires_at: u64,
    minted_at: u64,
    permissions: BTreeMap<String, String>,
    repositories: Vec<String>,
    repository_selection: String,
}

/// Why an opened entry is not usable (its seal verified, so this is a writer of another version
/// or a bug, never an outsider).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryError {
    /// Not the JSON object of this version.
    Malformed,
    /// The token is empty or holds characters that cannot go in a header.
    Token,
    /// `repository_selection` is neither `selected` nor `all`.
    Selection,
    /// Expires before it was minted, or lives longer than GitHub grants.
    Life,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryError::Malformed => write!(f, "malformed entry"),
            EntryError::Token => write!(f, "unusable token in entry"),
            EntryError::Selection => write!(f, "unknown repository selection in entry"),
            EntryError::Life => write!(f, "impossible token life in entry"),
        }
    }
}

impl std::error::Error for EntryError {}

/// The entry for `minted`, minted at `minted_at` (Unix seconds).
pub fn encode(minted: &Minted, minted_at: u64) -> Vec<u8> {
    let wire = Wire {
        token: minted.token.expose().to_owned(),
        expires_at: minted.expires_at,
        minted_at,
        permissions: minted.permissions.clone(),
        repositories: minted.repositories.clone(),
        repository_selection: minted.repository_selection.clone(),
    };
    let bytes = serde_json::to_vec(&wire).unwrap_or_default();
    let mut token = wire.token.into_bytes();
    token.fill(0);
    bytes
}

/// The token and its minted time from an entry's plaintext.
pub fn decode(plaintext: &[u8]) -> Result<(Minted, u64), EntryError> {
    let wire: Wire = serde_json::from_slice(plaintext).map_err(|_| EntryError::Malformed)?;
    if !matches!(wire.repository_selection.as_str(), "selected" | "all") {
        return Err(EntryError::Selection);
    }
    if wire.expires_at <= wire.minted_at || wire.expires_at - wire.minted_at > MAX_LIFE_SECS {
        return Err(EntryError::Life);
    }
    let hashed_token = github::hashed_token(&wire.token);
    let token = Secret::header_safe(wire.token).ok_or(EntryError::Token)?;
    Ok((
        Minted {
            token,
            hashed_token,
            expires_at: wire.expires_at,
            permissions: wire.permissions,
            repositories: wire.repositories,
            repository_selection: wire.repository_selection,
        },
        wire.minted_at,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted() -> Minted {
        Minted {
            token: Secret::new("ghs_0123456789abcdef".into()),
            hashed_token: github::hashed_token("ghs_0123456789abcdef"),
            expires_at: 1_000_003_600,
            permissions: [("contents".to_owned(), "read".to_owned())].into(),
            repositories: vec!["acme/widgets".into()],
            repository_selection: "selected".into(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&minted(), 1_000_000_000);
        let (back, minted_at) = decode(&bytes).unwrap();
        assert_eq!(minted_at, 1_000_000_000);
        assert_eq!(back.token.expose(), "ghs_0123456789abcdef");
        assert_eq!(back.hashed_token, minted().hashed_token);
        assert_eq!(back.expires_at, 1_000_003_600);
        assert_eq!(back.permissions, minted().permissions);
        assert_eq!(back.repositories, ["acme/widgets"]);
        assert_eq!(back.repository_selection, "selected");
    }

    #[test]
    fn entries_that_kitebridge_never_writes_are_refused() {
        let good = r#"{"token":"ghs_x","expires_at":4600,"minted_at":1000,"permissions":{},"repositories":[],"repository_selection":"all"}"#;
        assert!(decode(good.as_bytes()).is_ok());
        let cases: &[(&str, EntryError)] = &[
            ("", EntryError::Malformed),
            ("[]", EntryError::Malformed),
            (
                r#"{"token":"ghs_x","expires_at":4600,"minted_at":1000,"permissions":{},"repositories":[]}"#,
                EntryError::Malformed,
            ),
            (
                r#"{"token":"ghs_x","expires_at":4600,"minted_at":1000,"permissions":{},"repositories":[],"repository_selection":"all","extra":1}"#,
                EntryError::Malformed,
            ),
            (
                r#"{"token":"ghs x","expires_at":4600,"minted_at":1000,"permissions":{},"repositories":[],"repository_selection":"all"}"#,
                EntryError::Token,
            ),
            (
                r#"{"token":"","expires_at":4600,"minted_at":1000,"permissions":{},"repositories":[],"repository_selection":"all"}"#,
                EntryError::Token,
            ),
            (
                r#"{"token":"ghs_x","expires_at":4600,"minted_at":1000,"permissions":{},"repositories":[],"repository_selection":"some"}"#,
                EntryError::Selection,
            ),
            (
                r#"{"token":"ghs_x","expires_at":1000,"minted_at":1000,"permissions":{},"repositories":[],"repository_selection":"all"}"#,
                EntryError::Life,
            ),
            (
                r#"{"token":"ghs_x","expires_at":5000,"minted_at":1000,"permissions":{},"repositories":[],"repository_selection":"all"}"#,
                EntryError::Life,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(decode(text.as_bytes()).err(), Some(*want), "{text}");
        }
    }
}
