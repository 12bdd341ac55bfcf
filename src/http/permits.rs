//! Request-handling permits: a counting semaphore bounding how many handlers compute at once
//! (`SERVER_WORKERS`), with a deadline on the wait for one (`SERVER_QUEUE_TIMEOUT_SECS`).
//!
//! A permit bounds work done *here*, not waiting done elsewhere: a handler that waits on an
//! upstream (or on another request's upstream call) runs that wait in [`without_permit`], which
//! hands the permit back for the duration and takes it again afterwards, ahead of requests still
//! queued for one (it has work in hand that only needs a few more microseconds). So a storm of
//! cache misses stalled on a slow GitHub holds connection threads, never the permits that cached
//! answers need.
//!
//! The permit a thread holds is recorded in a thread-local, set by the server around the handler
//! ([`Holding`]); outside a handler [`without_permit`] simply runs its closure.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// See the module documentation.
pub(super) struct Permits {
    state: Mutex<State>,
    /// New requests wait here.
    freed: Condvar,
    /// Handlers taking their permit back after a wait outside wait here (served first).
    returned: Condvar,
}

struct State {
    available: usize,
    /// Handlers waiting to take their permit back.
    returning: usize,
    /// New requests waiting for a permit: a permit freed with none waiting wakes nobody (a
    /// condition variable's notify is a system call even then, once per request).
    waiting: usize,
}

thread_local! {
    /// The permit this thread's handler holds, if any.
    static HELD: RefCell<Option<Arc<Permits>>> = const { RefCell::new(None) };
}

impl Permits {
    /// `count` permits (at least one).
    pub(super) fn new(count: usize) -> Arc<Permits> {
        Arc::new(Permits {
            state: Mutex::new(State {
                available: count.max(1),
                returning: 0,
                waiting: 0,
            }),
            freed: Condvar::new(),
            returned: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a permit for this thread's handler, waiting until `deadline` at most; `None` when
    /// none came in time. The permit is returned when the [`Holding`] is dropped.
    pub(super) fn hold_until(self: &Arc<Self>, deadline: Instant) -> Option<Holding> {
        let mut state = self.lock();
        while state.available == 0 || state.returning > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state.waiting += 1;
            state = match self.freed.wait_timeout(state, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.waiting -= 1;
        }
        state.available -= 1;
        // Several permits may have come free while this one waited.
        self.wake_next(&state);
        drop(state);
        HELD.with(|held| *held.borrow_mut() = Some(Arc::clone(self)));
        Some(Holding(()))
    }

    /// Takes a permit back after a wait outside, ahead of new requests; no deadline.
    fn take_back(&self) {
        let mut state = self.lock();
        state.returning += 1;
        while state.available == 0 {
            state = self.returned.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.available -= 1;
        state.returning -= 1;
        self.wake_next(&state);
    }

    fn give_back(&self) {
        let mut state = self.lock();
        state.available += 1;
        self.wake_next(&state);
    }

    /// While a permit is free, wakes the next in line: a handler taking its permit back first,
    /// else a new request. Each taker calls it again, so permits freed together reach as many
    /// waiters; nobody waiting, nobody is woken (no system call).
    fn wake_next(&self, state: &State) {
        if state.available == 0 {
            return;
        }
        if state.returning > 0 {
            self.returned.notify_one();
        } else if state.waiting > 0 {
            self.freed.notify_one();
        }
    }
}

/// This thread's handler holds a permit while alive; returns it on drop, even on a panic.
pub(super) struct Holding(());

impl Drop for Holding {
    fn drop(&mut self) {
        if let Some(permits) = HELD.with(|held| held.borrow_mut().take()) {
            permits.give_back();
        }
    }
}

/// Runs `wait` — a wait on something outside this process: an upstream call, or another
/// request's upstream call that this one shares — without holding the calling thread's
/// request-handling permit, and takes the permit back before returning. Outside a handler that
/// holds a permit it just runs `wait`.
pub fn without_permit<T>(wait: impl FnOnce() -> T) -> T {
    let Some(permits) = HELD.with(|held| held.borrow_mut().take()) else {
        return wait();
    };
    permits.give_back();
    // Taken back on drop, also if `wait` panics (the handler's panic is caught and answered 500,
    // after which the server returns the permit through its `Holding`).
    let _back = TakeBack(Some(permits));
    wait()
}

struct TakeBack(Option<Arc<Permits>>);

impl Drop for TakeBack {
    fn drop(&mut self) {
        if let Some(permits) = self.0.take() {
            permits.take_back();
            HELD.with(|held| *held.borrow_mut() = Some(permits));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn available(p: &Permits) -> usize {
        p.lock().available
    }

    #[test]
    fn a_permit_is_held_until_dropped_and_waits_have_a_deadline() {
        let permits = Permits::new(1);
        let soon = || Instant::now() + Duration::from_millis(50);
        let held = permits.hold_until(soon()).unwrap();
        assert_eq!(available(&permits), 0);
        let other = {
            let permits = Arc::clone(&permits);
            std::thread::spawn(move || permits.hold_until(soon()).is_some())
        };
        assert!(!other.join().unwrap(), "no permit within the deadline");
        drop(held);
        assert_eq!(available(&permits), 1);
    }

    #[test]
    fn without_permit_lends_the_permit_out_and_takes_it_back() {
        let permits = Permits::new(1);
        let held = permits.hold_until(Instant::now()).unwrap();
        let lent = without_permit(|| available(&permits));
        assert_eq!(lent, 1, "the permit is free during the wait");
        assert_eq!(available(&permits), 0, "and held again after it");
        // Another thread can take it meanwhile.
        let taken_inside = without_permit(|| {
            let permits = Arc::clone(&permits);
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                permits.hold_until(deadline).is_some()
            })
            .join()
            .unwrap()
        });
        assert!(taken_inside);
        drop(held);
        assert_eq!(available(&permits), 1);
        assert_eq!(without_permit(|| 7), 7, "no permit held: just runs");
        assert_eq!(available(&permits), 1);
    }

    #[test]
    fn permits_freed_together_reach_every_waiter() {
        // Four permits out; one handler waits to take its permit back, three new requests wait
        // for one. All four come back at once: every waiter gets one, none sleeps to its deadline
        // with a permit free (the returning handler's wake-up once reached only one of them).
        for _ in 0..20 {
            let permits = Permits::new(4);
            permits.lock().available = 0;
            let back = {
                let permits = Arc::clone(&permits);
                std::thread::spawn(move || permits.take_back())
            };
            let deadline = Instant::now() + Duration::from_secs(120);
            let newcomers: Vec<_> = (0..3)
                .map(|_| {
                    let permits = Arc::clone(&permits);
                    std::thread::spawn(move || {
                        let holding = permits.hold_until(deadline);
                        let got = holding.is_some();
                        std::mem::forget(holding); // kept: dropped, it would give the permit back
                        got
                    })
                })
                .collect();
            let all_waiting = || {
                let state = permits.lock();
                state.returning == 1 && state.waiting == 3
            };
            while !all_waiting() {
                std::thread::yield_now();
            }
            for _ in 0..4 {
                permits.give_back();
            }
            let served = Instant::now() + Duration::from_secs(10);
            loop {
                let state = permits.lock();
                if state.available == 0 && state.waiting == 0 && state.returning == 0 {
                    break;
                }
                drop(state);
                assert!(
                    Instant::now() < served,
                    "a waiter sleeps with a permit free"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            back.join().unwrap();
            for newcomer in newcomers {
                assert!(newcomer.join().unwrap());
            }
        }
    }

    #[test]
    fn taking_back_goes_before_new_requests() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let permits = Permits::new(1);
        let held = permits.hold_until(Instant::now()).unwrap();
        let newcomer_got_it = Arc::new(AtomicBool::new(false));
        let long = || Instant::now() + Duration::from_secs(10);
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let newcomer = without_permit(|| {
            // While this handler is out, another takes the permit...
            let (taken_tx, taken_rx) = std::sync::mpsc::channel();
            let other = Arc::clone(&permits);
            std::thread::spawn(move || {
                let holding = other.hold_until(long()).unwrap();
                taken_tx.send(()).unwrap();
                release_rx.recv().unwrap();
                std::thread::sleep(Duration::from_millis(100)); // the handler is waiting by now
                drop(holding);
            });
            taken_rx.recv().unwrap();
            // ...and a new request queues for one.
            let (queue, got) = (Arc::clone(&permits), Arc::clone(&newcomer_got_it));
            let newcomer = std::thread::spawn(move || {
                let holding = queue.hold_until(long());
                got.store(holding.is_some(), Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(50));
            release_tx.send(()).unwrap();
            newcomer
        });
        assert!(
            !newcomer_got_it.load(Ordering::SeqCst),
            "the returning handler got the freed permit first"
        );
        drop(held);
        newcomer.join().unwrap();
        assert!(newcomer_got_it.load(Ordering::SeqCst), "then the newcomer");
    }
}
