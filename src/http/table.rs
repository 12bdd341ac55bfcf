//! The connection table: every open connection, what it is doing, and who gives way when the
//! table is full.
//!
//! A connection is, at any moment, in one [`Phase`]:
//! - `Receiving` since some instant: accepted or started a request, the request not complete yet
//!   (head or body still arriving);
//! - `Idle` since some instant: a kept-alive connection between requests;
//! - `Busy`: a complete request is being handled or its response written;
//! - `Evicted`: closed by the server to make room (or at shutdown); its thread is on its way out.
//!
//! When a new connection arrives at `SERVER_MAX_CONNECTIONS`, the connection that has waited
//! longest without a complete request gives way ([`choose_victim`]): the longest-idle kept-alive
//! connection first, then the oldest unfinished request. Busy connections are never evicted; if
//! every connection is busy, the newcomer is closed at once. A remote address may hold at most
//! `SERVER_MAX_CONNECTIONS_PER_SOURCE` connections ([`over_source_cap`]; loopback is exempt by
//! default: every local job shares it).
//!
//! Receiving and busy connections are "active": shutdown waits for them (a connection accepted
//! before shutdown is answered), while idle ones are closed at once.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a connection is doing. See the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Receiving(Instant),
    Idle(Instant),
    Busy,
    Evicted,
}

impl Phase {
    fn is_active(self) -> bool {
        matches!(self, Phase::Receiving(_) | Phase::Busy)
    }
}

/// The connection that gives way for a newcomer: the longest-idle kept-alive one, else the one
/// whose request has been arriving longest; never a busy (or already evicted) one.
pub(super) fn choose_victim(phases: impl IntoIterator<Item = (u64, Phase)>) -> Option<u64> {
    phases
        .into_iter()
        .filter_map(|(id, phase)| match phase {
            Phase::Idle(since) => Some(((0u8, since), id)),
            Phase::Receiving(since) => Some(((1u8, since), id)),
            Phase::Busy | Phase::Evicted => None,
        })
        .min()
        .map(|(_, id)| id)
}

/// Whether one more connection from `source`, which holds `open` already, is over `cap`
/// (`None`: no cap). Loopback is exempt when `exempt_loopback`.
pub(super) fn over_source_cap(
    source: IpAddr,
    open: usize,
    cap: Option<usize>,
    exempt_loopback: bool,
) -> bool {
    match cap {
        None => false,
        Some(_) if exempt_loopback && source.is_loopback() => false,
        Some(cap) => open >= cap,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One open connection.
pub(super) struct Tracked {
    id: u64,
    source: IpAddr,
    /// A handle on the socket, to close it from outside its thread and to probe whether the
    /// client is still there.
    pub(super) stream: Arc<TcpStream>,
    phase: Mutex<Phase>,
}

/// See the module documentation.
#[derive(Default)]
pub(super) struct Table {
    entries: Mutex<HashMap<u64, Arc<Tracked>>>,
    per_source: Mutex<HashMap<IpAddr, usize>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// Active connections: an atomic, as every request moves its connection in and out of
    /// "active" (a global mutex here was 3 % of a `/healthcheck`); `quiet_lock`, `quiet` and
    /// `quiet_waiters` only serve [`Table::wait_quiet`].
    active: AtomicUsize,
    quiet_lock: Mutex<()>,
    quiet: Condvar,
    /// Threads in [`Table::wait_quiet`] (only a shutdown waits): without one, a connection
    /// going inactive takes no lock and makes no wake-up call (a system call per request: with
    /// one request at a time, every request took the count to zero).
    quiet_waiters: AtomicUsize,
}

/// A connection's place in the table; leaves it on drop (also if the thread panics).
pub(super) struct Entry {
    table: Arc<Table>,
    pub(super) tracked: Arc<Tracked>,
}

impl Table {
    /// Open connections right now.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Connections open from `source` right now.
    pub(super) fn open_from(&self, source: IpAddr) -> usize {
        lock(&self.per_source)
            .get(&source.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Enters a just-accepted connection (`stream` a handle on its socket) as receiving since `now`.
    pub(super) fn enter(
        self: &Arc<Self>,
        stream: TcpStream,
        source: IpAddr,
        now: Instant,
    ) -> Entry {
        let source = source.to_canonical();
        let tracked = Arc::new(Tracked {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            source,
            stream: Arc::new(stream),
            phase: Mutex::new(Phase::Receiving(now)),
        });
        self.active.fetch_add(1, Ordering::SeqCst);
        *lock(&self.per_source).entry(source).or_insert(0) += 1;
        self.open.fetch_add(1, Ordering::SeqCst);
        lock(&self.entries).insert(tracked.id, Arc::clone(&tracked));
        Entry {
            table: Arc::clone(self),
            tracked,
        }
    }

    /// Closes the connection [`choose_victim`] picks; whether there was one.
    pub(super) fn evict_one(&self) -> bool {
        let entries = lock(&self.entries);
        let phases = entries.values().map(|t| (t.id, *lock(&t.phase)));
        let Some(victim) = choose_victim(phases).and_then(|id| entries.get(&id)) else {
            return false;
        };
        let victim = Arc::clone(victim);
        drop(entries);
        self.evict_if(&victim, |phase| !matches!(phase, Phase::Busy))
    }

    /// Closes every idle connection (shutdown: they hold no request).
    pub(super) fn close_idle(&self) {
        let entries: Vec<Arc<Tracked>> = lock(&self.entries).values().cloned().collect();
        for tracked in entries {
            self.evict_if(&tracked, |phase| matches!(phase, Phase::Idle(_)));
        }
    }

    /// Marks `tracked` evicted and shuts its socket down if its phase (then) passes `rule`.
    fn evict_if(&self, tracked: &Tracked, rule: impl Fn(Phase) -> bool) -> bool {
        let mut phase = lock(&tracked.phase);
        if *phase == Phase::Evicted || !rule(*phase) {
            return false;
        }
        self.set_locked(&mut phase, Phase::Evicted);
        drop(phase);
        // The connection's thread sees its reads end and leaves.
        let _ = tracked.stream.shutdown(Shutdown::Both);
        true
    }

    /// Moves a phase, keeping the count of active connections.
    fn set_locked(&self, phase: &mut Phase, next: Phase) {
        match (phase.is_active(), next.is_active()) {
            (false, true) => {
                self.active.fetch_add(1, Ordering::SeqCst);
            }
            (true, false) => self.deactivated(),
            _ => {}
        }
        *phase = next;
    }

    fn deactivated(&self) {
        let before = self
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        // A waiter counts itself before it reads `active` (both sequentially consistent): if it
        // is not counted here, its read comes after this decrement and it does not wait.
        if before <= 1 && self.quiet_waiters.load(Ordering::SeqCst) > 0 {
            // Under the lock, so a waiter between its check and its wait cannot miss this.
            let _quiet = lock(&self.quiet_lock);
            self.quiet.notify_all();
        }
    }

    /// Waits until no connection is active, at most `timeout`; whether it got there.
    pub(super) fn wait_quiet(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut quiet = lock(&self.quiet_lock);
        self.quiet_waiters.fetch_add(1, Ordering::SeqCst);
        let mut reached = true;
        while self.active.load(Ordering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                reached = false;
                break;
            }
            quiet = match self.quiet.wait_timeout(quiet, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        self.quiet_waiters.fetch_sub(1, Ordering::SeqCst);
        drop(quiet);
        reached
    }
}

impl Entry {
    /// Moves this connection to `next`; `false` (and no change) once it has been evicted.
    pub(super) fn set(&self, next: Phase) -> bool {
        let mut phase = lock(&self.tracked.phase);
        if *phase == Phase::Evicted {
            return false;
        }
        self.table.set_locked(&mut phase, next);
        true
    }

    /// Whether this connection has been evicted.
    #[cfg(test)]
    pub(super) fn is_evicted(&self) -> bool {
        *lock(&self.tracked.phase) == Phase::Evicted
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let table = &self.table;
        lock(&table.entries).remove(&self.tracked.id);
        {
            let mut per_source = lock(&table.per_source);
            if let Some(count) = per_source.get_mut(&self.tracked.source) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_source.remove(&self.tracked.source);
                }
            }
        }
        if lock(&self.tracked.phase).is_active() {
            table.deactivated();
        }
        table.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_gives_way() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let (idle, receiving) = (Phase::Idle, Phase::Receiving);
        let cases: &[(&str, &[Phase], Option<u64>)] = &[
            ("empty table", &[], None),
            ("all busy", &[Phase::Busy, Phase::Busy], None),
            ("evicted ones are gone already", &[Phase::Evicted], None),
            (
                "the only waiting one",
                &[Phase::Busy, receiving(at(5))],
                Some(1),
            ),
            (
                "idle before receiving, even younger",
                &[receiving(at(1)), idle(at(9))],
                Some(1),
            ),
            (
                "longest idle first",
                &[idle(at(7)), idle(at(3)), idle(at(5))],
                Some(1),
            ),
            (
                "oldest unfinished request when none is idle",
                &[receiving(at(4)), Phase::Busy, receiving(at(2))],
                Some(2),
            ),
        ];
        for (name, phases, want) in cases {
            let numbered = phases.iter().enumerate().map(|(i, p)| (i as u64, *p));
            assert_eq!(choose_victim(numbered), *want, "{name}");
        }
    }

    #[test]
    fn per_source_cap() {
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let cases: &[(IpAddr, usize, Option<usize>, bool, bool)] = &[
            (remote, 63, Some(64), true, false),
            (remote, 64, Some(64), true, true),
            (remote, 1000, None, true, false),
            (lo, 1000, Some(64), true, false),
            (lo6, 1000, Some(64), true, false),
            (lo, 64, Some(64), false, true),
            (lo, 0, Some(0), false, true),
        ];
        for (source, open, cap, exempt, want) in cases {
            assert_eq!(
                over_source_cap(*source, *open, *cap, *exempt),
                *want,
                "{source} {open} {cap:?} {exempt}"
            );
        }
    }

    #[test]
    fn the_table_counts_and_evicts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let table = Arc::new(Table::default());
        let client = |_| TcpStream::connect(addr).unwrap();
        let clients: Vec<TcpStream> = (0..3).map(client).collect();
        let now = Instant::now();
        let entries: Vec<Entry> = clients
            .iter()
            .map(|_| {
                let (server_side, peer) = listener.accept().unwrap();
                table.enter(server_side, peer.ip(), now)
            })
            .collect();
        assert_eq!(table.open(), 3);
        assert_eq!(table.open_from(addr.ip()), 3);
        assert!(
            !table.wait_quiet(Duration::from_millis(10)),
            "all receiving"
        );
        assert!(entries[0].set(Phase::Busy));
        assert!(entries[1].set(Phase::Idle(now)));
        assert!(entries[2].set(Phase::Busy));
        assert!(table.evict_one(), "the idle one");
        assert!(entries[1].is_evicted());
        assert!(
            !entries[1].set(Phase::Busy),
            "an evicted connection stays evicted"
        );
        assert!(!table.evict_one(), "only busy ones left");
        assert!(entries[0].set(Phase::Idle(now)));
        table.close_idle();
        assert!(entries[0].is_evicted());
        assert!(
            !table.wait_quiet(Duration::from_millis(10)),
            "one still busy"
        );
        drop(entries);
        assert!(table.wait_quiet(Duration::from_millis(10)));
        assert_eq!((table.open(), table.open_from(addr.ip())), (0, 0));
    }
}
