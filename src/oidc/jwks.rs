//! The key set: JWKS parsing under the key policy (see the [`crate::oidc`] module documentation), and the [`KeyStore`] cache.
//!
//! Key policy (ring alone is looser): `kty` `RSA`; `use` absent or `sig`; `key_ops` absent or
//! containing `verify`; `alg` absent or `RS256`; `kid` present, at most 128 bytes and unique in
//! the set; `e` exactly 65537 (`AQAB`); `n` of 2048–4096 bits by its real bit length, with no
//! leading zero octet. Keys that fail are skipped and logged; a set with no usable key, or with
//! more than [`MAX_KEYS`] keys, is a failed load.
//!
//! Cache: a fetched set is refreshed after its `max-age` (default 1 h, clamped to 60 s – 24 h),
//! and keeps serving after failed refreshes until it is 24 h old; then verification fails
//! closed. An unknown `kid` triggers at most one fetch per 30 s (any fetch counts), and
//! concurrent fetches are single-flight. A static set never expires and is never refetched.
//!
//! The single flight is this module's own, not `crate::cache::CoalescingCache` (the crate's
//! mechanism for everything else): `KeyStore::fetch_single_flight` says why.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::jws::{MAX_KID_LEN, Segment, decode_segment};
use super::{Error, truncate};

/// The most keys a set may hold.
pub const MAX_KEYS: usize = 20;
/// Smallest accepted modulus, in bits.
pub const MIN_MODULUS_BITS: usize = 2048;
/// Largest accepted modulus, in bits.
pub const MAX_MODULUS_BITS: usize = 4096;
/// Cache life of a fetched set without `max-age`.
pub const DEFAULT_CACHE_SECS: u64 = 3600;
/// Shortest honoured `max-age`.
pub const MIN_CACHE_SECS: u64 = 60;
/// Longest honoured `max-age`, and the longest a set is used after it was fetched.
pub const MAX_CACHE_SECS: u64 = 24 * 3600;
/// Fetches (for an unknown `kid`, or a retry after a failure) are at least this far apart.
pub const MIN_REFETCH_INTERVAL_SECS: u64 = 30;
/// How often [`spawn_refresher`]'s thread asks [`KeyStore::refresh_due`].
pub const REFRESHER_TICK_SECS: u64 = 5;

/// An RSA public key that passed the key policy (or, in tests of the primitive, any RSA key).
#[derive(Debug, Clone)]
pub struct PublicKey {
    components: ring::signature::RsaPublicKeyComponents<Vec<u8>>,
    bits: usize,
}

impl PublicKey {
    /// A key from big-endian `n` and `e`, as given (no policy: [`parse_jwks`] applies it).
    /// `n` must not carry leading zero octets, or every signature has the wrong length.
    pub fn from_be_bytes(n: Vec<u8>, e: Vec<u8>) -> Self {
        let bits = bit_length(&n);
        PublicKey {
            components: ring::signature::RsaPublicKeyComponents { n, e },
            bits,
        }
    }

    /// The modulus's real bit length.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The modulus length in octets: the length every signature must have.
    pub fn modulus_len(&self) -> usize {
        self.components.n.len()
    }

    /// The components, for `ring`'s verify.
    pub fn components(&self) -> &ring::signature::RsaPublicKeyComponents<Vec<u8>> {
        &self.components
    }
}

/// Bits in a big-endian unsigned integer, not counting leading zero bits.
fn bit_length(be: &[u8]) -> usize {
    let Some(first) = be.iter().position(|&b| b != 0) else {
        return 0;
    };
    let top = be.get(first).map_or(0, |b| 8 - b.leading_zeros() as usize);
    be.len()
        .saturating_sub(first)
        .saturating_sub(1)
        .saturating_mul(8)
        .saturating_add(top)
}

/// Why a key was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPolicyViolation {
    /// `kty` is not `RSA`.
    KeyType,
    /// `use` is present and not `sig`.
    Use,
    /// `key_ops` is present and does not contain `verify`.
    KeyOps,
    /// `alg` is present and not `RS256`.
    Algorithm,
    /// `kid` is absent, not a string, or longer than 128 bytes.
    Kid,
    /// Another key in the set has the same `kid` (all of them are skipped).
    DuplicateKid,
    /// `n` or `e` is absent or not strict base64url.
    Encoding,
    /// `e` is not 65537.
    Exponent,
    /// `n` starts with a zero octet.
    ModulusLeadingZero,
    /// `n` is outside 2048–4096 bits.
    ModulusBits { bits: usize },
}

impl fmt::Display for KeyPolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPolicyViolation::KeyType => f.write_str("kty is not RSA"),
            KeyPolicyViolation::Use => f.write_str("use is not sig"),
            KeyPolicyViolation::KeyOps => f.write_str("key_ops lacks verify"),
            KeyPolicyViolation::Algorithm => f.write_str("alg is not RS256"),
            KeyPolicyViolation::Kid => f.write_str("kid is missing, not a string or too long"),
            KeyPolicyViolation::DuplicateKid => f.write_str("kid is not unique"),
            KeyPolicyViolation::Encoding => f.write_str("n or e is missing or not base64url"),
            KeyPolicyViolation::Exponent => f.write_str("e is not 65537"),
            KeyPolicyViolation::ModulusLeadingZero => f.write_str("n has a leading zero octet"),
            KeyPolicyViolation::ModulusBits { bits } => {
                write!(
                    f,
                    "n has {bits} bits, not {MIN_MODULUS_BITS}-{MAX_MODULUS_BITS}"
                )
            }
        }
    }
}

/// A parsed key set: the usable keys by `kid`, and the skipped ones with the reason.
#[derive(Debug, Clone, Default)]
pub struct ParsedJwks {
    pub keys: BTreeMap<String, Arc<PublicKey>>,
    /// `(kid if it was a string, why)`.
    pub skipped: Vec<(Option<String>, KeyPolicyViolation)>,
}

/// One JWK as found; every member optional and untyped so one odd key cannot fail the set.
/// Duplicate members within a key fail the whole document (serde's derive).
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<Value>,
    #[serde(rename = "use")]
    use_: Option<Value>,
    key_ops: Option<Value>,
    alg: Option<Value>,
    kid: Option<Value>,
    n: Option<Value>,
    e: Option<Value>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

/// Parses a JWKS document and applies the key policy, logging each skipped key.
pub fn parse_jwks(body: &[u8]) -> Result<ParsedJwks, Error> {
    let raw: RawJwks = serde_json::from_slice(body).map_err(|e| Error::JwksMalformed {
        detail: e.to_string(),
    })?;
    if raw.keys.len() > MAX_KEYS {
        return Err(Error::JwksTooManyKeys {
            count: raw.keys.len(),
        });
    }
    let mut seen = HashSet::new();
    let repeated: HashSet<String> = raw
        .keys
        .iter()
        .filter_map(|k| text(&k.kid))
        .filter(|kid| !seen.insert(*kid))
        .map(str::to_owned)
        .collect();
    let mut parsed = ParsedJwks::default();
    for jwk in &raw.keys {
        let kid = text(&jwk.kid);
        let checked = match kid {
            Some(kid) if repeated.contains(kid) => Err(KeyPolicyViolation::DuplicateKid),
            _ => check_key(jwk),
        };
        match checked {
            Ok((kid, key)) => {
                parsed.keys.insert(kid, Arc::new(key));
            }
            Err(why) => {
                log::warn!("jwks: skipping key {:?}: {why}", kid.map(truncate));
                parsed.skipped.push((kid.map(str::to_owned), why));
            }
        }
    }
    if parsed.keys.is_empty() {
        return Err(Error::JwksNoUsableKey);
    }
    Ok(parsed)
}

/// The key policy for one JWK (uniqueness of `kid` is checked by the caller): its kid and key.
fn check_key(jwk: &RawJwk) -> Result<(String, PublicKey), KeyPolicyViolation> {
    if text(&jwk.kty) != Some("RSA") {
        return Err(KeyPolicyViolation::KeyType);
    }
    if !absent_or(&jwk.use_, "sig") {
        return Err(KeyPolicyViolation::Use);
    }
    if let Some(ops) = &jwk.key_ops {
        let ops = ops.as_array().ok_or(KeyPolicyViolation::KeyOps)?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Err(KeyPolicyViolation::KeyOps);
        }
    }
    if !absent_or(&jwk.alg, "RS256") {
        return Err(KeyPolicyViolation::Algorithm);
    }
    let kid = match text(&jwk.kid) {
        Some(kid) if kid.len() <= MAX_KID_LEN => kid.to_owned(),
        _ => return Err(KeyPolicyViolation::Kid),
    };
    let decode = |v: &Option<Value>| {
        let encoded = text(v).ok_or(KeyPolicyViolation::Encoding)?;
        decode_segment(encoded.as_bytes(), Segment::Signature)
            .map_err(|_| KeyPolicyViolation::Encoding)
    };
    let (n, e) = (decode(&jwk.n)?, decode(&jwk.e)?);
    if e != [0x01, 0x00, 0x01] {
        return Err(KeyPolicyViolation::Exponent);
    }
    if n.first() == Some(&0) {
        return Err(KeyPolicyViolation::ModulusLeadingZero);
    }
    let key = PublicKey::from_be_bytes(n, e);
    if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&key.bits()) {
        return Err(KeyPolicyViolation::ModulusBits { bits: key.bits() });
    }
    Ok((kid, key))
}

/// The member's value if it is a string.
fn text(member: &Option<Value>) -> Option<&str> {
    member.as_ref().and_then(Value::as_str)
}

/// Whether the member is absent (or null) or exactly the string `allowed`.
fn absent_or(member: &Option<Value>, allowed: &str) -> bool {
    member.as_ref().is_none_or(|v| v.as_str() == Some(allowed))
}

/// A fetched JWKS document and its `Cache-Control: max-age`, if any.
pub struct FetchedJwks {
    pub body: Vec<u8>,
    pub max_age_secs: Option<u64>,
}

/// Fetches the JWKS document (the HTTP client lives elsewhere). The error is logged escaped.
pub type JwksFetch = Box<dyn Fn() -> Result<FetchedJwks, String> + Send + Sync>;

/// Where keys come from.
pub enum KeySource {
    /// A fixed JWKS document: parsed on [`KeyStore::load`], never refetched, never expires.
    Static(Vec<u8>),
    /// A fetcher, called on load, when the cache life ends, and (rate-limited) on unknown `kid`s.
    Fetch(JwksFetch),
}

/// A usable set of keys and when it was fetched.
struct KeySet {
    keys: BTreeMap<String, Arc<PublicKey>>,
    fetched_at: u64,
    /// When the background refresher should fetch again.
    refresh_at: u64,
}

#[derive(Default)]
struct State {
    current: Option<Arc<KeySet>>,
    /// Start of the last fetch, successful or not.
    last_attempt: Option<u64>,
    /// A fetch is running; others wait on [`KeyStore::fetched`] instead of starting one.
    fetching: bool,
    /// Bumped when a fetch finishes, so waiters know theirs is done.
    generation: u64,
    /// The result of the last finished fetch, handed to those who waited for it.
    last_outcome: Option<Result<(), Error>>,
}

/// The cached key set, shared (`Arc`) by the verifier and the refresher thread.
pub struct KeyStore {
    source: KeySource,
    state: Mutex<State>,
    fetched: Condvar,
}

impl KeyStore {
    /// A store with no keys yet; nothing is fetched until [`KeyStore::load`] or a lookup.
    pub fn new(source: KeySource) -> Self {
        KeyStore {
            source,
            state: Mutex::new(State::default()),
            fetched: Condvar::new(),
        }
    }

    /// Fetches (or parses the static document) now, unless a fetch is already running, in which
    /// case it waits for that one and returns its result.
    pub fn load(&self, now: u64) -> Result<(), Error> {
        let state = self.lock();
        self.fetch_single_flight(state, now)
    }

    /// The key with exactly this `kid`. On a miss, one fetch if none started in the last 30 s
    /// (waiting for a running one instead of starting another), then one more look.
    pub fn key(&self, kid: &str, now: u64) -> Result<Arc<PublicKey>, Error> {
        let state = self.lock();
        if let Some(key) = self.lookup(&state, kid, now) {
            return Ok(key);
        }
        let may_fetch = matches!(self.source, KeySource::Fetch(_))
            && (state.fetching || !recently_attempted(&state, now));
        let state = if may_fetch {
            // A failed fetch is logged where it happens; the lookup below decides.
            let _ = self.fetch_single_flight(state, now);
            self.lock()
        } else {
            state
        };
        match self.lookup(&state, kid, now) {
            Some(key) => Ok(key),
            None if self.usable_set(&state, now).is_none() => Err(Error::KeySetUnavailable),
            None => Err(Error::UnknownKid),
        }
    }

    /// The key with exactly this `kid` in the set usable at `now`, without fetching (for
    /// [`super::reuse`]: is the key that verified a remembered token still there?).
    pub fn current(&self, kid: &str, now: u64) -> Option<Arc<PublicKey>> {
        let state = self.lock();
        self.lookup(&state, kid, now)
    }

    /// Whether the refresher should call [`KeyStore::load`]: a fetching source with no set yet
    /// or past its cache life, no fetch running, and none started in the last 30 s.
    pub fn refresh_due(&self, now: u64) -> bool {
        let state = self.lock();
        if !matches!(self.source, KeySource::Fetch(_))
            || state.fetching
            || recently_attempted(&state, now)
        {
            return false;
        }
        state
            .current
            .as_ref()
            .is_none_or(|set| now >= set.refresh_at)
    }

    /// Whether a key set has ever loaded (for `/healthcheck`).
    pub fn is_loaded(&self) -> bool {
        self.lock().current.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current set if it may still be used at `now`.
    fn usable_set<'s>(&self, state: &'s State, now: u64) -> Option<&'s KeySet> {
        let set = state.current.as_deref()?;
        let fresh = match self.source {
            KeySource::Static(_) => true,
            KeySource::Fetch(_) => now < set.fetched_at.saturating_add(MAX_CACHE_SECS),
        };
        fresh.then_some(set)
    }

    fn lookup(&self, state: &State, kid: &str, now: u64) -> Option<Arc<PublicKey>> {
        self.usable_set(state, now)?.keys.get(kid).cloned()
    }

    /// Runs one fetch with the lock released, or waits for the running one.
    ///
    /// Why this is not `crate::cache::CoalescingCache`, which serves every other reused answer:
    /// it does the same (one fetch for concurrent callers, every waiter gets its result, only a
    /// success is stored, no clock read), but the key store's policy lives between the steps
    /// that the cache keeps to itself, so putting it there would make both worse:
    /// - Last good: the cache loads only when its value is unusable and drops that value first.
    ///   The key set is refreshed while it is still usable (after `max-age`, and on every
    ///   [`KeyStore::load`]) and must keep serving after a failed refresh until it is 24 h old;
    ///   that takes a second notion of "usable" (serve / refresh) that no other user needs.
    /// - The 30 s window: an unknown `kid` fetches only if no fetch started in the last 30 s, or
    ///   joins the one running. Here that check, recording the attempt and starting or joining
    ///   the flight happen under one lock. Split across the key store's lock and the cache's, a
    ///   fetch could finish in between and a second one start inside the window, unless the
    ///   loader checked the window again: the rule twice.
    /// - [`KeyStore::refresh_due`] asks whether a fetch is running, and a panicking fetcher
    ///   counts as a failed attempt handed to every waiter; the cache exposes no running flight,
    ///   and its waiters start over after a panic, each a new fetch inside the window.
    fn fetch_single_flight(&self, mut state: MutexGuard<'_, State>, now: u64) -> Result<(), Error> {
        if state.fetching {
            let generation = state.generation;
            while state.fetching && state.generation == generation {
                state = self
                    .fetched
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            return state
                .last_outcome
                .clone()
                .unwrap_or(Err(Error::KeySetUnavailable));
        }
        state.fetching = true;
        state.last_attempt = Some(now);
        drop(state);

        let outcome = self.fetch_and_parse(now);

        let mut state = self.lock();
        let result = match outcome {
            Ok(set) => {
                state.current = Some(Arc::new(set));
                Ok(())
            }
            Err(error) => {
                log_failure(&error, state.current.as_deref(), now);
                Err(error)
            }
        };
        state.fetching = false;
        state.generation = state.generation.wrapping_add(1);
        state.last_outcome = Some(result.clone());
        self.fetched.notify_all();
        result
    }

    /// Gets the document from the source and applies the key policy. A panicking fetcher counts
    /// as a failed fetch, so waiters are never stranded.
    fn fetch_and_parse(&self, now: u64) -> Result<KeySet, Error> {
        let (body, max_age) = match &self.source {
            KeySource::Static(body) => (body.clone(), None),
            KeySource::Fetch(fetch) => {
                let fetched = catch_unwind(AssertUnwindSafe(fetch))
                    .unwrap_or_else(|_| Err("fetcher panicked".to_owned()))
                    .map_err(|detail| Error::JwksFetch { detail })?;
                (fetched.body, fetched.max_age_secs)
            }
        };
        let parsed = parse_jwks(&body)?;
        let life = max_age
            .unwrap_or(DEFAULT_CACHE_SECS)
            .clamp(MIN_CACHE_SECS, MAX_CACHE_SECS);
        Ok(KeySet {
            keys: parsed.keys,
            fetched_at: now,
            refresh_at: now.saturating_add(life),
        })
    }
}

fn recently_attempted(state: &State, now: u64) -> bool {
    state
        .last_attempt
        .is_some_and(|at| now < at.saturating_add(MIN_REFETCH_INTERVAL_SECS))
}

fn log_failure(error: &Error, kept: Option<&KeySet>, now: u64) {
    match kept {
        Some(set) => log::warn!(
            "{error}; keeping the key set fetched {}s ago",
            now.saturating_sub(set.fetched_at)
        ),
        None => log::warn!("{error}; no key set, every token is refused"),
    }
}

/// Starts a thread that, every [`REFRESHER_TICK_SECS`], loads the key set when
/// [`KeyStore::refresh_due`] says so, by the system clock. It runs for the life of the process.
pub fn spawn_refresher(store: Arc<KeyStore>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("jwks-refresher".to_owned())
        .spawn(move || {
            loop {
                let now = crate::time::now_unix();
                if store.refresh_due(now) {
                    // Failures are logged inside; the last good set keeps serving.
                    let _ = store.load(now);
                }
                std::thread::sleep(Duration::from_secs(REFRESHER_TICK_SECS));
            }
        })
}
