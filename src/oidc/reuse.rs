//! Verified-token reuse: the same JWT bytes, once verified, are not verified again while valid.
//!
//! Clients present one token for up to five minutes across many requests; its signature check
//! is most of a cached vend's cost. This is a bounded map, keyed by the SHA-256 of the exact
//! token bytes, holding what verification proved: the `kid`, the key that verified the
//! signature, and the typed claims. **Never the token itself.**
//!
//! The rules a reused entry keeps:
//! - Another token (another byte anywhere: header, payload or signature) has another digest and
//!   is verified afresh, even when its claims are identical.
//! - An entry is dropped at the token's `exp`: from then on the token goes through the whole
//!   verification again (which refuses it once `exp` + leeway has passed).
//! - An entry is used only while its `kid` is still in the current key set **with the same key**:
//!   a key that left the set, or a `kid` now naming another key, drops the entry (the look-up
//!   never fetches keys). A key set no longer usable (24 hours without a good fetch) drops it too.
//! - Every claims check (issuer, audience, organization and, above all, the time-dependent
//!   ones: `exp`, `nbf`, `iat` with their leeway) runs again on every use, at the caller's `now`:
//!   only the signature check and the parsing are skipped.
//! - Bounded by [`DEFAULT_MAX_ENTRIES`] (`JWT_CACHE_MAX_ENTRIES`; 0 turns reuse off), evicting
//!   the least recently used entry in O(1) ([`crate::lru`]).
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::claims::Claims;
use super::jwks::PublicKey;
use crate::lru::Lru;

/// `JWT_CACHE_MAX_ENTRIES`'s default: verified tokens remembered (about 1 KiB each).
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// The SHA-256 of a token's bytes.
pub type Digest = [u8; 32];

/// What verification proved about one token.
struct Entry {
    kid: String,
    key: Arc<PublicKey>,
    claims: Arc<Claims>,
}

/// See the module documentation.
pub struct Reuse {
    /// `None` when reuse is off.
    entries: Option<Mutex<Lru<Digest, Entry>>>,
}

/// The SHA-256 of `token`.
pub fn digest(token: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    let hash = ring::digest::digest(&ring::digest::SHA256, token);
    for (o, b) in out.iter_mut().zip(hash.as_ref()) {
        *o = *b;
    }
    out
}

/// The same key: same modulus and exponent.
fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    let (a, b) = (a.components(), b.components());
    a.n == b.n && a.e == b.e
}

impl Reuse {
    /// At most `max_entries` verified tokens; 0 turns reuse off.
    pub fn new(max_entries: usize) -> Self {
        Reuse {
            entries: (max_entries > 0).then(|| Mutex::new(Lru::new(max_entries))),
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Lru<Digest, Entry>>> {
        self.entries
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The `kid` and claims stored for the token with this digest, if there are and they may
    /// still be used at `now`: before `exp`, and while `current_key(kid)` is the very key that
    /// verified it. An entry that fails either is dropped. The claims are not validated here:
    /// the caller validates them at `now`, every time.
    pub fn get(
        &self,
        digest: &Digest,
        now: u64,
        current_key: impl Fn(&str) -> Option<Arc<PublicKey>>,
    ) -> Option<(String, Arc<Claims>)> {
        let mut entries = self.lock()?;
        let entry = entries.get_mut(digest)?;
        let usable = now < entry.claims.exp
            && current_key(&entry.kid)
                .is_some_and(|key| Arc::ptr_eq(&key, &entry.key) || same_key(&key, &entry.key));
        if !usable {
            entries.remove(digest);
            return None;
        }
        Some((entry.kid.clone(), Arc::clone(&entry.claims)))
    }

    /// Remembers a token that passed every check: its `kid`, the key and the claims.
    pub fn put(&self, digest: Digest, kid: &str, key: Arc<PublicKey>, claims: Arc<Claims>) {
        if let Some(mut entries) = self.lock() {
            let entry = Entry {
                kid: kid.to_owned(),
                key,
                claims,
            };
            entries.insert(digest, entry);
        }
    }

    /// Forgets the token with this digest (its claims no longer pass).
    pub fn forget(&self, digest: &Digest) {
        if let Some(mut entries) = self.lock() {
            entries.remove(digest);
        }
    }
}
