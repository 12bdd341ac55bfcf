//! The shared cache: many kitebridge instances, one Valkey/Redis server, trusted with nothing.
//!
//! - Names on the server are hashes: `PREFIX t:HEX` (a token entry), `PREFIX l:HEX` (its mint
//!   lock), `PREFIX r:HEX` (a pipeline's rate-limit state), HEX the SHA-256 of the canonical
//!   cache key or of the pipeline. No pipeline, profile or repository name is sent.
//! - Values are sealed ([`seal`]): AES-256-GCM bound to their prefix and canonical key, so a value
//!   tampered with, swapped to another key or replayed under another prefix is never served.
//! - [`SharedCache::get_or_mint`] is the fleet-wide single flight: the first instance to miss
//!   takes the key's lock (`SET NX PX` with a random owner), mints, writes the entry and releases
//!   the lock only if it still owns it (compare-and-delete), each step one script. The others poll
//!   with back-off until the entry appears, the lock goes (then they contend again) or the lock's
//!   life has passed (then they mint themselves).
//! - [`SharedCache::rate`] is the fleet-wide per-pipeline token bucket (GCRA, one script).
//! - Degradation: every operation has the `CACHE_TIMEOUT_MS` budget; any failure opens the
//!   [`circuit`], and while it is open no request asks the server (the caller goes on with its
//!   local behaviour) and a probe thread reconnects with back-off (and pings every
//!   [`HEALTH_EVERY`] while all is well, so an idle outage is noticed). State changes are logged and
//!   reported to an observer (systemd's `STATUS=`); repeated failures at most once a minute.
#![forbid(unsafe_code)]

pub mod circuit;
pub mod entry;
pub mod pool;
pub mod resp;
pub mod schedule;
pub mod seal;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::CertificateDer;

use crate::metrics::{self, Metrics};
use circuit::Circuit;
pub use pool::{Auth, CacheError, Endpoint, Pool, TlsSetupError};
use resp::Reply;
pub use schedule::Claim;
use seal::Keys;

/// `CACHE_PREFIX`'s default.
pub const DEFAULT_PREFIX: &str = "kitebridge:";
/// `CACHE_TIMEOUT_MS`'s default: the budget of one operation, connecting included.
pub const DEFAULT_TIMEOUT_MS: u64 = 200;
/// How long a mint lock lives: the longest an owner may take to mint before another instance
/// may. A waiter waits while the lock it sees lives, and never more than twice this in all (a
/// crashed owner's lock expiring, then a second owner's whole mint).
pub const MINT_LOCK: Duration = Duration::from_secs(10);
/// The first pause of an instance waiting for another's mint; it doubles up to [`WAIT_MAX`].
pub const WAIT_FIRST: Duration = Duration::from_millis(25);
/// The longest pause between two looks at a key another instance is minting.
pub const WAIT_MAX: Duration = Duration::from_millis(200);
/// While the circuit is closed, the probe thread pings this often, so an outage is noticed (gauge,
/// `STATUS=`, log) even when no request needs the server.
pub const HEALTH_EVERY: Duration = Duration::from_secs(5);
/// Repeated failures and rejected entries are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Rejected entries in one flight before it gives the server up and mints alone.
const MAX_REJECTED_PER_FLIGHT: usize = 3;

/// The entry if present and not the one rejected before (`ARGV[3]`); else the lock if free.
/// `{1, value}` · `{2}` locked by us · `{0, ms}` locked by another for `ms` more.
const GET_OR_LOCK: &str = "local v = redis.call('GET', KEYS[1]) \
if v and v ~= ARGV[3] then return {1, v} end \
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end \
return {0, redis.call('PTTL', KEYS[2])}";
/// Writes the entry, then deletes the lock if it still holds our owner id.
const PUT_AND_UNLOCK: &str = "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end \
return 1";
/// Deletes the lock if it still holds our owner id.
const UNLOCK: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('DEL', KEYS[1]) end return 0";
/// GCRA: a token bucket of `burst` ms of credit refilled at one request per `interval` ms
/// (`ARGV`: now ms, interval ms, burst ms). `0` admitted, else the ms until one would be.
const RATE: &str = "local now = tonumber(ARGV[1]) \
local interval = tonumber(ARGV[2]) \
local burst = tonumber(ARGV[3]) \
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now \
if tat < now then tat = now end \
local next_tat = tat + interval \
if next_tat - now > burst then return math.ceil(next_tat - burst - now) end \
redis.call('SET', KEYS[1], string.format('%.3f', next_tat), 'PX', math.max(1, math.ceil(next_tat - now))) \
return 0";

pub const OPERATIONS: metrics::Family = metrics::Family {
    name: "kitebridge_cache_operations_total",
    help: "Shared cache operations, by operation and outcome (ok, error, timeout, skipped while the circuit is open).",
};
pub const REJECTED: metrics::Family = metrics::Family {
    name: "kitebridge_cache_rejected_total",
    help: "Shared cache entries never served, by reason.",
};
pub const FLIGHTS: metrics::Family = metrics::Family {
    name: "kitebridge_cache_flights_total",
    help: "In-process cache misses through the shared cache, by outcome (hit, owner, fallback, waited_out).",
};
pub const SECONDS: metrics::HistogramFamily = metrics::HistogramFamily {
    name: "kitebridge_cache_operation_duration_seconds",
    help: "Shared cache operation duration, by operation.",
    buckets: &[
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    ],
};

/// How to reach and use the server.
pub struct Settings {
    pub endpoint: Endpoint,
    pub auth: Auth,
    pub keys: Keys,
    /// `CACHE_PREFIX`. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// `CACHE_TIMEOUT_MS`. Default [`DEFAULT_TIMEOUT_MS`].
    pub timeout: Duration,
    /// Trust anchors for `rediss://` (the upstreams' roots).
    pub roots: Vec<CertificateDer<'static>>,
}

/// Why an opened entry is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unusable {
    /// It does not decode as an entry.
    Malformed,
    /// Past its servable life (a replayed old entry, or clocks apart).
    Stale,
}

impl Unusable {
    fn as_str(self) -> &'static str {
        match self {
            Unusable::Malformed => "malformed",
            Unusable::Stale => "stale",
        }
    }
}

/// What a mint asks to be stored for the fleet. Not `Debug`: the plaintext holds a token; it is
/// overwritten when dropped.
pub struct Store {
    /// The entry's plaintext (sealed before it is sent).
    pub plaintext: Vec<u8>,
    /// How long it may be served.
    pub ttl: Duration,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.plaintext.fill(0);
    }
}

/// Where [`SharedCache::get_or_mint`]'s value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The shared cache: another instance minted it, or this one earlier.
    Shared,
    /// This call minted it.
    Minted,
}

/// Told `true` when the server answers again after failing, `false` when it starts failing.
pub type Observer = Box<dyn Fn(bool) + Send + Sync>;

/// A log line at most every [`LOG_EVERY`].
struct Throttle(Mutex<Option<Instant>>);

impl Throttle {
    fn allow(&self, now: Instant) -> bool {
        let mut last = lock(&self.0);
        match *last {
            Some(at) if now.saturating_duration_since(at) < LOG_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// See the module documentation.
pub struct SharedCache {
    pool: Pool,
    keys: Keys,
    prefix: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
    rng: SystemRandom,
    /// Mirrors `circuit.is_closed()` for the lock-free check of every operation.
    up: AtomicBool,
    circuit: Mutex<Circuit>,
    observer: OnceLock<Observer>,
    failure_log: Throttle,
    rejected_log: Throttle,
    /// Operations skipped since the last log line about the outage.
    skipped: AtomicU64,
    /// When the last probe was sent.
    last_probe: Mutex<Instant>,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    hex(context.finish().as_ref())
}

/// The integer of a script's reply array element `i`.
fn flag(items: &[Reply], i: usize) -> Option<i64> {
    match items.get(i) {
        Some(Reply::Integer(n)) => Some(*n),
        _ => None,
    }
}

impl SharedCache {
    /// Connects (one probe, within the timeout: the outcome is logged, a failure is no error) and
    /// starts the probe thread, which ends when the cache is dropped.
    pub fn start(
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<SharedCache>, TlsSetupError> {
        let pool = Pool::new(settings.endpoint, settings.auth, &settings.roots)?;
        let cache = Arc::new(SharedCache {
            pool,
            keys: settings.keys,
            prefix: settings.prefix,
            timeout: settings.timeout,
            metrics,
            rng: SystemRandom::new(),
            up: AtomicBool::new(false),
            circuit: Mutex::new(Circuit::unknown(Instant::now())),
            observer: OnceLock::new(),
            failure_log: Throttle(Mutex::new(None)),
            rejected_log: Throttle(Mutex::new(None)),
            skipped: AtomicU64::new(0),
            last_probe: Mutex::new(Instant::now()),
        });
        match cache.probe() {
            Ok(()) => log::info!(
                "shared cache {}: connected; {} encryption key(s)",
                cache.pool.endpoint(),
                cache.keys.len()
            ),
            Err(e) => log::warn!(
                "shared cache {}: unavailable at start ({e}); serving from the in-process cache \
                 and retrying",
                cache.pool.endpoint()
            ),
        }
        let weak = Arc::downgrade(&cache);
        let spawned = std::thread::Builder::new()
            .name("shared-cache".into())
            .spawn(move || probe_loop(&weak));
        if let Err(e) = spawned {
            log::error!("cannot start the shared cache probe thread: {e}");
        }
        Ok(cache)
    }

    /// Whether the server is in use now (the circuit is closed).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Sets the observer of state changes (once).
    pub fn observe(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    /// The server's URL (no credentials).
    pub fn endpoint(&self) -> &Endpoint {
        self.pool.endpoint()
    }

    /// One operation: skipped while the circuit is open; counted, timed, and on failure opening
    /// the circuit. An error reply is a failure too.
    fn op(&self, operation: &'static str, args: &[&[u8]]) -> Result<Reply, CacheError> {
        if !self.is_up() {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            self.metrics.count(
                OPERATIONS,
                &[("operation", operation), ("outcome", "skipped")],
            );
            return Err(CacheError::Unavailable);
        }
        let started = Instant::now();
        let result = self
            .pool
            .call(args, started + self.timeout)
            .and_then(|reply| match reply {
                Reply::Error(message) => Err(CacheError::Server(message)),
                reply => Ok(reply),
            });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.count(
            OPERATIONS,
            &[("operation", operation), ("outcome", outcome)],
        );
        self.metrics
            .observe(SECONDS, &[("operation", operation)], started.elapsed());
        if let Err(e) = &result {
            self.failed(e, Instant::now());
        }
        result
    }

    /// A failed operation or probe at `now`: open the circuit; log the change, else at most once
    /// a minute.
    fn failed(&self, error: &CacheError, now: Instant) {
        self.pool.clear_idle();
        let was_up = {
            let mut circuit = lock(&self.circuit);
            let was_up = circuit.is_closed();
            *circuit = circuit.failed(now);
            self.up.store(false, Ordering::SeqCst);
            was_up
        };
        if was_up {
            self.failure_log.allow(now);
            log::warn!(
                "shared cache {} unavailable ({error}); serving from the in-process cache until it \
                 answers again",
                self.pool.endpoint()
            );
            if let Some(observer) = self.observer.get() {
                observer(false);
            }
        } else if self.failure_log.allow(now) {
            log::warn!(
                "shared cache {} still unavailable ({error}); {} operations skipped meanwhile",
                self.pool.endpoint(),
                self.skipped.swap(0, Ordering::Relaxed)
            );
        }
    }

    /// `PING` past the circuit; an answer closes it.
    fn probe(&self) -> Result<(), CacheError> {
        let started = Instant::now();
        *lock(&self.last_probe) = started;
        let result =
            self.pool
                .call(&[b"PING"], started + self.timeout)
                .and_then(|reply| match reply {
                    Reply::Simple(pong) if pong == "PONG" => Ok(()),
                    Reply::Error(message) => Err(CacheError::Server(message)),
                    _ => Err(CacheError::Unexpected("PING answered other than PONG")),
                });
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics
            .count(OPERATIONS, &[("operation", "ping"), ("outcome", outcome)]);
        match &result {
            Err(e) => self.failed(e, Instant::now()),
            Ok(()) => {
                let now = Instant::now();
                let was_down = {
                    let mut circuit = lock(&self.circuit);
                    let down_for = circuit.open_for(now);
                    let was_down = !circuit.is_closed();
                    *circuit = Circuit::Closed;
                    self.up.store(true, Ordering::SeqCst);
                    was_down.then_some(down_for)
                };
                if let Some(down_for) = was_down {
                    log::info!(
                        "shared cache {} available (after {:.1}s without it)",
                        self.pool.endpoint(),
                        down_for.as_secs_f64()
                    );
                    if let Some(observer) = self.observer.get() {
                        observer(true);
                    }
                }
            }
        }
        result
    }

    /// Probes if the circuit is open and a probe is due, or it is closed and the last probe is
    /// [`HEALTH_EVERY`] old.
    fn probe_if_due(&self) {
        let now = Instant::now();
        let due = {
            let circuit = lock(&self.circuit);
            circuit.probe_due(now)
                || (circuit.is_closed()
                    && now.saturating_duration_since(*lock(&self.last_probe)) >= HEALTH_EVERY)
        };
        if due {
            let _ = self.probe();
        }
    }

    fn key(&self, kind: &str, hash: &str) -> String {
        format!("{}{kind}:{hash}", self.prefix)
    }

    fn owner_id(&self) -> String {
        let mut bytes = [0u8; 16];
        if self.rng.fill(&mut bytes).is_err() {
            // Cannot happen on Linux; a fixed id would only make the lock shared with others
            // who failed the same way, so count on the lock's expiry.
            log::error!("system random source failed");
        }
        hex(&bytes)
    }

    /// Drops the entry of `canonical` (a token that was revoked before it could be shown), so no
    /// instance serves it. Best effort: a failing server only leaves the entry to its expiry,
    /// where the token it holds is already revoked.
    pub fn forget(&self, canonical: &[u8]) {
        let hash = sha256_hex(&[canonical]);
        let entry_key = self.key("t", &hash);
        let _ = self.op("forget", &[b"DEL", entry_key.as_bytes()]);
    }

    /// The value of `canonical` from the shared cache, else minted by `mint` with one mint for
    /// the whole fleet; see the module documentation. `open` turns a stored plaintext into a
    /// value (or says why it is not usable). A failing server never fails the call: `mint` is
    /// then called without the fleet.
    pub fn get_or_mint<T, E>(
        &self,
        canonical: &[u8],
        open: impl Fn(&[u8]) -> Result<T, Unusable>,
        mint: impl FnOnce() -> Result<(T, Option<Store>), E>,
    ) -> Result<(T, Origin), E> {
        let hash = sha256_hex(&[canonical]);
        let (entry_key, lock_key) = (self.key("t", &hash), self.key("l", &hash));
        let mut context = self.prefix.as_bytes().to_vec();
        context.push(0);
        context.extend_from_slice(canonical);
        let owner = self.owner_id();
        let lock_ms = MINT_LOCK.as_millis().to_string();
        let started = Instant::now();
        let give_up_at_last = started + 2 * MINT_LOCK + WAIT_MAX;
        let mut rejected: Vec<u8> = Vec::new();
        let mut rejections = 0;
        let mut pause = WAIT_FIRST;
        let then = loop {
            let args: [&[u8]; 8] = [
                b"EVAL",
                GET_OR_LOCK.as_bytes(),
                b"2",
                entry_key.as_bytes(),
                lock_key.as_bytes(),
                owner.as_bytes(),
                lock_ms.as_bytes(),
                &rejected,
            ];
            let items = match self.op("get_or_lock", &args) {
                Ok(Reply::Array(items)) => items,
                Ok(_) => {
                    let shape = CacheError::Unexpected("script answered an unknown shape");
                    self.failed(&shape, Instant::now());
                    break Then::Alone("fallback");
                }
                Err(_) => break Then::Alone("fallback"),
            };
            match (flag(&items, 0), items.get(1), items.len()) {
                (Some(1), Some(Reply::Bulk(sealed)), 2) => {
                    match self.unseal(&context, sealed, &open) {
                        Ok(value) => {
                            self.metrics.count(FLIGHTS, &[("outcome", "hit")]);
                            return Ok((value, Origin::Shared));
                        }
                        Err(reason) => {
                            self.rejected(reason);
                            rejections += 1;
                            if rejections > MAX_REJECTED_PER_FLIGHT {
                                break Then::Alone("fallback");
                            }
                            // Asked again at once: the rejected value now counts as absent.
                            rejected.clone_from(sealed);
                        }
                    }
                }
                (Some(2), None, 1) => break Then::Own,
                // A lock without an expiry is none that kitebridge takes: do not wait for it.
                (Some(0), Some(Reply::Integer(-1)), 2) => break Then::Alone("waited_out"),
                (Some(0), Some(Reply::Integer(lock_ms)), 2) => {
                    // The lock's holder has this long left (trusted up to a lock's life).
                    let left = u64::try_from(*lock_ms).unwrap_or(0);
                    let left = Duration::from_millis(left).min(MINT_LOCK);
                    let now = Instant::now();
                    let give_up = (now + left + WAIT_MAX).min(give_up_at_last);
                    if now + pause > give_up {
                        break Then::Alone("waited_out");
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(WAIT_MAX);
                }
                _ => {
                    let shape = CacheError::Unexpected("script answered an unknown shape");
                    self.failed(&shape, Instant::now());
                    break Then::Alone("fallback");
                }
            }
        };
        let outcome = match then {
            Then::Own => "owner",
            Then::Alone(outcome) => outcome,
        };
        self.metrics.count(FLIGHTS, &[("outcome", outcome)]);
        let result = mint();
        match (&then, &result) {
            // Shared even without the lock: the others are about to give up waiting too.
            (Then::Own | Then::Alone("waited_out"), Ok((_, Some(store)))) => {
                self.put(&entry_key, &lock_key, &owner, &context, store)
            }
            (Then::Own, _) => self.unlock(&lock_key, &owner),
            (Then::Alone(_), _) => {}
        }
        result.map(|(value, _)| (value, Origin::Minted))
    }

    /// Opens a stored value: unsealed, then made a value by `open`.
    fn unseal<T>(
        &self,
        context: &[u8],
        sealed: &[u8],
        open: &impl Fn(&[u8]) -> Result<T, Unusable>,
    ) -> Result<T, &'static str> {
        let mut plaintext = self
            .keys
            .open(context, sealed)
            .map_err(seal::Rejected::as_str)?;
        let value = open(&plaintext).map_err(Unusable::as_str);
        plaintext.fill(0);
        value
    }

    fn rejected(&self, reason: &'static str) {
        self.metrics.count(REJECTED, &[("reason", reason)]);
        if self.rejected_log.allow(Instant::now()) {
            log::warn!(
                "shared cache: an entry was not served ({reason}); minting anew and overwriting \
                 it (further ones this minute are only counted in {})",
                REJECTED.name
            );
        }
    }

    /// Writes the sealed entry and releases the lock if still ours (one script).
    fn put(&self, entry_key: &str, lock_key: &str, owner: &str, context: &[u8], store: &Store) {
        let ttl_ms = store.ttl.as_millis();
        if ttl_ms == 0 {
            return self.unlock(lock_key, owner);
        }
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        if self.rng.fill(&mut nonce).is_err() {
            log::error!("system random source failed; the entry is not shared");
            return self.unlock(lock_key, owner);
        }
        let sealed = self.keys.seal(context, &store.plaintext, nonce);
        let ttl = ttl_ms.to_string();
        let args: [&[u8]; 8] = [
            b"EVAL",
            PUT_AND_UNLOCK.as_bytes(),
            b"2",
            entry_key.as_bytes(),
            lock_key.as_bytes(),
            &sealed,
            ttl.as_bytes(),
            owner.as_bytes(),
        ];
        let _ = self.op("put", &args);
    }

    /// Releases the lock if still ours (compare-and-delete in one script).
    fn unlock(&self, lock_key: &str, owner: &str) {
        let args: [&[u8]; 5] = [
            b"EVAL",
            UNLOCK.as_bytes(),
            b"1",
            lock_key.as_bytes(),
            owner.as_bytes(),
        ];
        let _ = self.op("unlock", &args);
    }

    /// The fleet-wide token bucket of `name`: `count` per `window`, burst `count`, at `now_ms`
    /// (Unix milliseconds). `Some(Ok)` admitted, `Some(Err(secs))` refused for that long (≥ 1),
    /// `None` when the server cannot say (the caller limits locally).
    pub fn rate(
        &self,
        name: &[u8],
        count: u32,
        window: Duration,
        now_ms: u64,
    ) -> Option<Result<(), u64>> {
        self.rate_of(b"pipeline", name, count, window, now_ms)
    }

    /// [`SharedCache::rate`] for the bucket `name` of the limit `kind` (`pipeline`, `mints`):
    /// each kind's buckets are apart from every other kind's.
    pub fn rate_of(
        &self,
        kind: &[u8],
        name: &[u8],
        count: u32,
        window: Duration,
        now_ms: u64,
    ) -> Option<Result<(), u64>> {
        let key = self.key("r", &sha256_hex(&[kind, b"\0", name]));
        let burst = window.as_secs_f64() * 1000.0;
        let interval = burst / f64::from(count.max(1));
        let (now, interval, burst) = (
            now_ms.to_string(),
            format!("{interval:.6}"),
            format!("{burst:.3}"),
        );
        let args: [&[u8]; 7] = [
            b"EVAL",
            RATE.as_bytes(),
            b"1",
            key.as_bytes(),
            now.as_bytes(),
            interval.as_bytes(),
            burst.as_bytes(),
        ];
        match self.op("rate", &args) {
            Ok(Reply::Integer(0)) => Some(Ok(())),
            Ok(Reply::Integer(wait_ms)) if wait_ms > 0 => {
                let secs = u64::try_from(wait_ms).unwrap_or(u64::MAX).div_ceil(1000);
                Some(Err(secs.max(1)))
            }
            Ok(_) => {
                self.failed(
                    &CacheError::Unexpected("rate script answered other than an integer"),
                    Instant::now(),
                );
                None
            }
            Err(_) => None,
        }
    }
}

/// How a flight mints after looking at the server.
enum Then {
    /// Holding the key's lock.
    Own,
    /// Without the fleet (the metrics outcome says why).
    Alone(&'static str),
}

/// The probe thread: while the circuit is open, probes when due; ends with the cache.
fn probe_loop(cache: &Weak<SharedCache>) {
    loop {
        std::thread::sleep(Duration::from_millis(50));
        match cache.upgrade() {
            Some(cache) => cache.probe_if_due(),
            None => return,
        }
    }
}
