//! The crate's single-flight mechanism: a bounded cache whose concurrent misses on one key are
//! coalesced into one load.
//!
//! Its users:
//! - minted tokens ([`crate::token::mint`]: N simultaneous identical requests cause exactly one GitHub
//!   call);
//! - pipeline → repository lookups ([`crate::buildkite`]);
//! - the App JWT (`github::app_jwt`) and the profile store's contents token
//!   ([`crate::profiles::store`]), each a single value: a `CoalescingCache<(), V, E>` of one
//!   entry, dropped with [`CoalescingCache::invalidate`] when GitHub refuses it.
//!
//! The OIDC key set ([`crate::oidc::jwks::KeyStore`]) keeps a single flight of its own; its
//! refresh code says why.
//!
//! Only successful loads are stored; every waiter of a load gets its result, error included. A
//! loader that panics releases its waiters, and they start over. Time is never read here: the
//! caller's `usable` rule carries its `now`. Bounded, with least-recently-used eviction in O(1)
//! ([`crate::lru`]): an insert into a full cache drops the least recently used entry, and an
//! unusable (expired) entry is dropped when a look-up meets it. Nothing here ever scans the
//! entries, so the cost of a hit or a miss does not grow with their number.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::lru::Lru;

/// How a value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// From the cache.
    Hit,
    /// Loaded by this caller.
    Miss,
    /// Loaded by a concurrent caller that this one waited for.
    Coalesced,
}

enum FlightState<V, E> {
    Running,
    Done(Result<Arc<V>, E>),
    /// The loader panicked: waiters start over.
    Abandoned,
}

struct Flight<V, E> {
    state: Mutex<FlightState<V, E>>,
    done: Condvar,
}

struct State<K, V, E> {
    entries: Lru<K, Arc<V>>,
    flights: HashMap<K, Arc<Flight<V, E>>>,
}

/// See the module documentation.
pub struct CoalescingCache<K, V, E> {
    state: Mutex<State<K, V, E>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Eq + Hash + Clone, V, E: Clone> CoalescingCache<K, V, E> {
    /// A cache of at most `max_entries` values (at least 1).
    pub fn new(max_entries: usize) -> Self {
        CoalescingCache {
            state: Mutex::new(State {
                entries: Lru::new(max_entries),
                flights: HashMap::new(),
            }),
        }
    }

    /// Number of stored values.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Whether nothing is stored.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored value for `key` if `usable` accepts it (an unusable one is dropped); never
    /// loads.
    pub fn get(&self, key: &K, usable: impl Fn(&V) -> bool) -> Option<Arc<V>> {
        let mut state = lock(&self.state);
        let value = state.entries.get_mut(key)?;
        if usable(value) {
            return Some(Arc::clone(value));
        }
        state.entries.remove(key);
        None
    }

    /// Returns the stored value for `key` if `usable` accepts it; otherwise loads it with `load`,
    /// unless a load for `key` is already running, in which case waits for that one's result.
    pub fn get_or_load(
        &self,
        key: &K,
        usable: impl Fn(&V) -> bool,
        load: impl FnOnce() -> Result<V, E>,
    ) -> (Result<Arc<V>, E>, Outcome) {
        loop {
            let flight = {
                let mut state = lock(&self.state);
                if let Some(value) = state.entries.get_mut(key) {
                    if usable(value) {
                        return (Ok(Arc::clone(value)), Outcome::Hit);
                    }
                    state.entries.remove(key);
                }
                match state.flights.get(key) {
                    Some(flight) => Arc::clone(flight),
                    None => {
                        let flight = Arc::new(Flight {
                            state: Mutex::new(FlightState::Running),
                            done: Condvar::new(),
                        });
                        state.flights.insert(key.clone(), Arc::clone(&flight));
                        drop(state);
                        // `load` moves only here, and this arm returns: a caller leads at most once.
                        return (self.lead(key, &flight, load), Outcome::Miss);
                    }
                }
            };
            // Waiting for another caller's load (an upstream call) holds no request-handling
            // permit, as the load itself does not.
            let shared = crate::http::without_permit(|| {
                let mut st = lock(&flight.state);
                while matches!(*st, FlightState::Running) {
                    st = flight.done.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                match &*st {
                    FlightState::Done(result) => Some(result.clone()),
                    FlightState::Running | FlightState::Abandoned => None,
                }
            });
            if let Some(result) = shared {
                return (result, Outcome::Coalesced);
            }
            // Abandoned: try again (possibly as the new leader).
        }
    }

    /// Drops the value stored for `key`, if any, so the next [`CoalescingCache::get_or_load`]
    /// loads anew: for a credential the upstream refused. A load already running for `key` is
    /// left alone and its result is stored: whatever a caller was refused was handed out by an
    /// earlier, finished load, so the running one produces a different value.
    pub fn invalidate(&self, key: &K) {
        lock(&self.state).entries.remove(key);
    }

    /// Runs the load for a flight this caller created, publishes the result, stores a success.
    fn lead(
        &self,
        key: &K,
        flight: &Arc<Flight<V, E>>,
        load: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let guard = AbandonOnPanic {
            cache: self,
            key,
            flight,
        };
        let result = load().map(Arc::new);
        std::mem::forget(guard);
        let mut state = lock(&self.state);
        state.flights.remove(key);
        if let Ok(value) = &result {
            state.entries.insert(key.clone(), Arc::clone(value));
        }
        drop(state);
        *lock(&flight.state) = FlightState::Done(result.clone());
        flight.done.notify_all();
        result
    }
}

/// Marks a flight abandoned if its loader unwinds, so waiters do not wait forever.
struct AbandonOnPanic<'a, K: Eq + Hash, V, E> {
    cache: &'a CoalescingCache<K, V, E>,
    key: &'a K,
    flight: &'a Arc<Flight<V, E>>,
}

impl<K: Eq + Hash, V, E> Drop for AbandonOnPanic<'_, K, V, E> {
    fn drop(&mut self) {
        lock(&self.cache.state).flights.remove(self.key);
        *lock(&self.flight.state) = FlightState::Abandoned;
        self.flight.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::thread;
    use std::time::Duration;

    type Cache = CoalescingCache<String, u64, String>;

    #[test]
    fn fifty_concurrent_misses_cause_one_load() {
        let cache = Arc::new(Cache::new(10));
        let loads = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(50));
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let (cache, loads, barrier) =
                    (Arc::clone(&cache), Arc::clone(&loads), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    cache.get_or_load(
                        &"k".to_owned(),
                        |_| true,
                        || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(200));
                            Ok(7)
                        },
                    )
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(outcomes.iter().all(|(r, _)| r.as_deref() == Ok(&7)));
        assert_eq!(
            outcomes.iter().filter(|(_, o)| *o == Outcome::Miss).count(),
            1
        );
    }

    #[test]
    fn hit_after_miss_and_unusable_values_are_reloaded() {
        let cache = Cache::new(10);
        let k = "k".to_owned();
        assert_eq!(cache.get_or_load(&k, |_| true, || Ok(1)).1, Outcome::Miss);
        assert_eq!(
            cache.get_or_load(&k, |_| true, || Ok(2)),
            (Ok(Arc::new(1)), Outcome::Hit)
        );
        assert_eq!(
            cache.get_or_load(&k, |v| *v > 1, || Ok(3)),
            (Ok(Arc::new(3)), Outcome::Miss)
        );
    }

    #[test]
    fn failures_reach_every_waiter_and_are_not_stored() {
        let cache = Cache::new(10);
        let k = "k".to_owned();
        assert_eq!(
            cache.get_or_load(&k, |_| true, || Err("down".into())).0,
            Err("down".to_owned())
        );
        assert!(cache.is_empty());
        assert_eq!(cache.get_or_load(&k, |_| true, || Ok(5)).1, Outcome::Miss);
    }

    #[test]
    fn a_panicking_loader_releases_its_waiters() {
        let cache = Arc::new(Cache::new(10));
        let k = "k".to_owned();
        let (c2, k2) = (Arc::clone(&cache), k.clone());
        let leader = thread::spawn(move || {
            c2.get_or_load(
                &k2,
                |_| true,
                || {
                    thread::sleep(Duration::from_millis(100));
                    panic!("loader bug")
                },
            )
        });
        thread::sleep(Duration::from_millis(20));
        let (r, outcome) = cache.get_or_load(&k, |_| true, || Ok(9));
        assert!(leader.join().is_err());
        assert_eq!((r, outcome), (Ok(Arc::new(9)), Outcome::Miss));
    }

    #[test]
    fn invalidate_drops_the_stored_value_so_the_next_call_loads() {
        let cache = Cache::new(10);
        let (a, b) = ("a".to_owned(), "b".to_owned());
        cache.get_or_load(&a, |_| true, || Ok(1)).0.unwrap();
        cache.get_or_load(&b, |_| true, || Ok(2)).0.unwrap();
        cache.invalidate(&a);
        cache.invalidate(&"absent".to_owned());
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.get_or_load(&a, |_| true, || Ok(3)),
            (Ok(Arc::new(3)), Outcome::Miss)
        );
        assert_eq!(
            cache.get_or_load(&b, |_| true, || Ok(0)),
            (Ok(Arc::new(2)), Outcome::Hit)
        );
    }

    #[test]
    fn invalidate_leaves_a_running_load_alone() {
        let cache = Arc::new(Cache::new(10));
        let k = "k".to_owned();
        let (c2, k2) = (Arc::clone(&cache), k.clone());
        let leader = thread::spawn(move || {
            c2.get_or_load(
                &k2,
                |_| true,
                || {
                    thread::sleep(Duration::from_millis(100));
                    Ok(1)
                },
            )
        });
        thread::sleep(Duration::from_millis(20));
        cache.invalidate(&k);
        assert_eq!(leader.join().unwrap(), (Ok(Arc::new(1)), Outcome::Miss));
        assert_eq!(cache.get_or_load(&k, |_| true, || Ok(2)).1, Outcome::Hit);
    }

    #[test]
    fn a_unit_key_is_a_single_value_slot() {
        let slot = Arc::new(CoalescingCache::<(), u64, String>::new(1));
        let loads = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(20));
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let (slot, loads, barrier) =
                    (Arc::clone(&slot), Arc::clone(&loads), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    slot.get_or_load(
                        &(),
                        |_| true,
                        || {
                            loads.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(100));
                            Ok(1)
                        },
                    )
                })
            })
            .collect();
        for handle in handles {
            assert_eq!(handle.join().unwrap().0, Ok(Arc::new(1)));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // An unusable value is replaced, never kept beside the new one.
        assert_eq!(slot.get_or_load(&(), |v| *v > 1, || Ok(2)).1, Outcome::Miss);
        assert_eq!(slot.len(), 1);
        slot.invalidate(&());
        assert!(slot.is_empty());
    }

    #[test]
    fn least_recently_used_is_evicted_and_unusable_entries_dropped_when_met() {
        let cache = Cache::new(2);
        let key = |s: &str| s.to_owned();
        cache.get_or_load(&key("a"), |_| true, || Ok(1)).0.unwrap();
        cache.get_or_load(&key("b"), |_| true, || Ok(2)).0.unwrap();
        cache.get_or_load(&key("a"), |_| true, || Ok(0)).0.unwrap(); // a is now more recent
        cache.get_or_load(&key("c"), |_| true, || Ok(3)).0.unwrap(); // evicts b
        assert_eq!(cache.len(), 2);
        assert_eq!(
            cache.get_or_load(&key("a"), |_| true, || Ok(0)).1,
            Outcome::Hit
        );
        assert_eq!(
            cache.get_or_load(&key("b"), |_| true, || Ok(2)).1,
            Outcome::Miss,
            "b was least recent"
        );
        // An unusable entry met by a look-up is replaced, never served.
        assert_eq!(
            cache.get_or_load(&key("b"), |v| *v != 2, || Ok(4)),
            (Ok(Arc::new(4)), Outcome::Miss)
        );
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_full_cache_costs_no_scan() {
        // 200 000 inserts into a cache of 100 000: quadratic eviction would take minutes here.
        let cache = Cache::new(100_000);
        for i in 0..200_000u64 {
            cache
                .get_or_load(&i.to_string(), |_| true, || Ok(i))
                .0
                .unwrap();
        }
        assert_eq!(cache.len(), 100_000);
        assert_eq!(
            cache
                .get_or_load(&"199999".to_owned(), |_| true, || Ok(0))
                .1,
            Outcome::Hit
        );
        assert_eq!(
            cache.get_or_load(&"99999".to_owned(), |_| true, || Ok(0)).1,
            Outcome::Miss
        );
    }
}
