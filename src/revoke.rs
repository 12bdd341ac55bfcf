//! The revoker: ends a token at its end of life when that comes before GitHub's own expiry (a
//! profile's `ttl`, the exchange's `expires_in`), with `DELETE /installation/token`.
//!
//! One background thread and a deadline queue ([`Queue`], ordered by the time of the next
//! attempt). A failed attempt is retried with back-off (1 s, doubling, at most
//! [`MAX_RETRY_SECS`]) until GitHub's expiry ends the token anyway. Every revocation leaves one
//! audit record ([`audit::Revocation`]) when it ends, and is counted in
//! `kitebridge_revocations_total{outcome}`. At shutdown ([`Revoker::finish`]) the revocations due
//! before the deadline are carried out, at their time; the rest are left to GitHub's expiry,
//! each recorded with the outcome `left`.
//!
//! With the shared cache (`CACHE_URL`) the schedule is also kept there ([`crate::shared::schedule`]):
//! the minting instance removes its revocation from there when it is due and carries it out
//! (even when it is no longer there: taken over, or lost by the server), and every instance takes
//! over, every [`SWEEP_EVERY`], what is overdue by more than [`TAKE_OVER_AFTER`], so a revocation
//! whose minting instance has gone is still carried out. At shutdown, what is in the shared
//! schedule is handed to the fleet instead of being left.
//!
//! The queue is pure: it is handed the time (Unix milliseconds) and says what is due.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditLog};
use crate::github::{self, Ended};
use crate::metrics::{self, Metrics};
use crate::secret::Secret;
use crate::shared::{Claim, SharedCache};
use crate::time;

/// The longest wait between two attempts at one revocation.
pub const MAX_RETRY_SECS: u64 = 60;
/// How long [`Revoker::finish`] waits past its deadline for an attempt under way (kept short:
/// systemd's `TimeoutStopSec` is only a little above `SERVER_SHUTDOWN_TIMEOUT_SECS`).
const FINISH_GRACE: Duration = Duration::from_secs(5);
/// With the shared cache: how often an instance looks for revocations to take over.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// With the shared cache: how long past its due time a revocation waits for its minting
/// instance before another takes it over.
pub const TAKE_OVER_AFTER: Duration = Duration::from_secs(10);

/// A token to revoke at its end of life. Not `Debug`-printable beyond `[redacted]` for the token.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub token: Secret,
    pub hashed_token: String,
    /// The request id of the mint, for the audit record.
    pub request_id: String,
    /// The end of life reported to the client (Unix seconds): revoked then.
    pub due: u64,
    /// GitHub's `expires_at` (Unix seconds): no attempt is made after it.
    pub expires_at: u64,
}

/// A revocation as the shared schedule holds it (sealed there). Not `Debug`: it holds the token.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    token: String,
    request_id: String,
    due: u64,
    expires_at: u64,
}

impl Revocation {
    fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            token: self.token.expose().to_owned(),
            request_id: self.request_id.clone(),
            due: self.due,
            expires_at: self.expires_at,
        };
        let bytes = serde_json::to_vec(&wire).unwrap_or_default();
        let mut token = wire.token.into_bytes();
        token.fill(0);
        bytes
    }

    /// `None` for anything this version did not write (the member's seal was verified).
    fn decode(plaintext: &[u8]) -> Option<Revocation> {
        let wire: Wire = serde_json::from_slice(plaintext).ok()?;
        let hashed_token = github::hashed_token(&wire.token);
        Some(Revocation {
            token: Secret::header_safe(wire.token)?,
            hashed_token,
            request_id: crate::audit::truncate(&wire.request_id),
            due: wire.due,
            expires_at: wire.expires_at,
        })
    }
}

/// A queued revocation and its attempts so far.
#[derive(Debug)]
struct Pending {
    revocation: Revocation,
    attempts: u32,
    last_attempt_ms: Option<u64>,
    last_error: Option<String>,
    /// Its member in the shared schedule, to claim before the first attempt.
    member: Option<Vec<u8>>,
}

/// What the thread does next.
#[derive(Debug)]
enum Step {
    /// Attempt this one now.
    Attempt(Pending),
    /// Nothing due: wait this long (or until something is queued).
    Wait(Duration),
    /// Nothing queued.
    Idle,
    /// Closing, and nothing left is due before the deadline.
    Done,
    /// Look in the shared schedule for revocations to take over.
    Sweep,
}

/// The deadline queue: pending revocations by the time of their next attempt.
#[derive(Debug, Default)]
struct Queue {
    /// (next attempt, Unix ms; sequence number) → revocation.
    due: BTreeMap<(u64, u64), Pending>,
    seq: u64,
    /// At shutdown: nothing due after this (Unix ms) is attempted.
    closing: Option<u64>,
    /// The thread has stopped taking work.
    finished: bool,
    /// With the shared cache: when to look for revocations to take over next (Unix ms).
    sweep_at: Option<u64>,
}

impl Queue {
    fn push(&mut self, at_ms: u64, pending: Pending) {
        self.seq += 1;
        self.due.insert((at_ms, self.seq), pending);
    }

    /// What is due at `now_ms`: an attempt first, then a sweep of the shared schedule (never
    /// while closing); when closing, done once nothing is due by the deadline; else a wait for
    /// whichever comes next.
    fn next(&mut self, now_ms: u64) -> Step {
        let first = self.due.keys().next().copied();
        if let Some(key) = first.filter(|key| key.0 <= now_ms) {
            if let Some(pending) = self.due.remove(&key) {
                return Step::Attempt(pending);
            }
        }
        let sweep_at = self.sweep_at.filter(|_| self.closing.is_none());
        if sweep_at.is_some_and(|at| at <= now_ms) {
            return Step::Sweep;
        }
        if let Some(deadline) = self.closing {
            if first.is_none_or(|(at, _)| at > deadline) {
                return Step::Done;
            }
        }
        match first.map(|(at, _)| at).into_iter().chain(sweep_at).min() {
            Some(at) => Step::Wait(Duration::from_millis(at.saturating_sub(now_ms))),
            None => Step::Idle,
        }
    }
}

/// The wait before attempt number `attempts + 1` (after `attempts` failures).
fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(6);
    Duration::from_secs(secs.min(MAX_RETRY_SECS))
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempted {
    Ended(Ended),
    Failed(String),
}

struct Inner {
    queue: Mutex<Queue>,
    changed: Condvar,
    github: Arc<github::Client>,
    audit: Arc<AuditLog>,
    metrics: Arc<Metrics>,
    shared: Option<Arc<SharedCache>>,
}

/// What [`Revoker::finish`] did not carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unfinished {
    /// Left to GitHub's expiry (each with a `left` audit record).
    pub left: usize,
    /// In the shared schedule, for another instance to carry out.
    pub handed_over: usize,
}

/// The handle to the revoker thread. See the module documentation.
pub struct Revoker {
    inner: Arc<Inner>,
}

fn lock(queue: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    queue.lock().unwrap_or_else(|e| e.into_inner())
}

/// `2 tokens left to GitHub's expiry`, and `, 1 handed to the fleet's shared schedule` when so.
impl std::fmt::Display for Unfinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tokens left to GitHub's expiry", self.left)?;
        if self.handed_over > 0 {
            write!(
                f,
                ", {} handed to the fleet's shared schedule",
                self.handed_over
            )?;
        }
        Ok(())
    }
}

impl Revoker {
    /// Starts the revoker thread (keeping the schedule in `shared` too, when given).
    pub fn start(
        github: Arc<github::Client>,
        audit: Arc<AuditLog>,
        metrics: Arc<Metrics>,
        shared: Option<Arc<SharedCache>>,
    ) -> std::io::Result<Revoker> {
        let queue = Queue {
            sweep_at: shared.as_ref().map(|_| time::now_unix_millis()),
            ..Queue::default()
        };
        let inner = Arc::new(Inner {
            queue: Mutex::new(queue),
            changed: Condvar::new(),
            github,
            audit,
            metrics,
            shared,
        });
        let worker = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("revoker".into())
            .spawn(move || run(&worker))?;
        Ok(Revoker { inner })
    }

    /// Queues `revocation` for its `due` time.
    pub fn schedule(&self, revocation: Revocation) {
        let at_ms = revocation.due.saturating_mul(1000);
        let member = self
            .inner
            .shared
            .as_ref()
            .and_then(|shared| shared.schedule_revocation(&revocation.encode(), at_ms));
        let pending = Pending {
            revocation,
            attempts: 0,
            last_attempt_ms: None,
            last_error: None,
            member,
        };
        lock(&self.inner.queue).push(at_ms, pending);
        self.inner.changed.notify_all();
    }

    /// Revocations waiting (queued, not yet ended).
    pub fn pending(&self) -> usize {
        lock(&self.inner.queue).due.len()
    }

    /// At shutdown: carries out, each at its time, every revocation due by `deadline_ms` (Unix
    /// ms), then stops. Says what it did not carry out: left to GitHub's expiry (each gets its
    /// audit record), or handed to the fleet's shared schedule (recorded by whoever carries it out).
    pub fn finish(&self, deadline_ms: u64) -> Unfinished {
        let inner = &self.inner;
        let mut queue = lock(&inner.queue);
        queue.closing = Some(deadline_ms);
        inner.changed.notify_all();
        let wait = Duration::from_millis(deadline_ms.saturating_sub(time::now_unix_millis()))
            .saturating_add(FINISH_GRACE);
        let (mut queue, _) = inner
            .changed
            .wait_timeout_while(queue, wait, |q| !q.finished)
            .unwrap_or_else(|e| e.into_inner());
        queue.finished = true;
        let left = std::mem::take(&mut queue.due);
        drop(queue);
        inner.changed.notify_all();
        let mut unfinished = Unfinished::default();
        for pending in left.into_values() {
            if pending.member.is_some() && pending.attempts == 0 {
                unfinished.handed_over += 1;
            } else {
                unfinished.left += 1;
                end(inner, pending, "left");
            }
        }
        unfinished
    }
}

/// The thread: attempt what is due, wait for the next, stop when closing is done.
fn run(inner: &Inner) {
    let mut queue = lock(&inner.queue);
    loop {
        if queue.finished {
            return;
        }
        let now_ms = time::now_unix_millis();
        match queue.next(now_ms) {
            Step::Attempt(pending) => {
                drop(queue);
                attempt(inner, pending, now_ms);
                queue = lock(&inner.queue);
            }
            Step::Wait(wait) => {
                queue = inner
                    .changed
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Step::Idle => {
                queue = inner.changed.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            Step::Done => {
                queue.finished = true;
                inner.changed.notify_all();
                return;
            }
            Step::Sweep => {
                queue.sweep_at = Some(now_ms.saturating_add(millis(SWEEP_EVERY)));
                drop(queue);
                let taken = take_over(inner, now_ms);
                queue = lock(&inner.queue);
                for pending in taken {
                    queue.push(now_ms, pending);
                }
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The revocations of the shared schedule overdue by [`TAKE_OVER_AFTER`] (their minting
/// instance has not claimed them), taken out of it for this instance to carry out.
fn take_over(inner: &Inner, now_ms: u64) -> Vec<Pending> {
    let Some(shared) = &inner.shared else {
        return Vec::new();
    };
    let due_by = now_ms.saturating_sub(millis(TAKE_OVER_AFTER));
    let taken: Vec<Pending> = shared
        .take_overdue_revocations(due_by)
        .iter()
        .filter_map(|plaintext| Revocation::decode(plaintext))
        .map(|revocation| Pending {
            revocation,
            attempts: 0,
            last_attempt_ms: None,
            last_error: None,
            member: None,
        })
        .collect();
    if !taken.is_empty() {
        log::info!(
            "taking over {} revocation(s) from the shared schedule that their minting instance did not carry out",
            taken.len()
        );
    }
    taken
}

/// One attempt; a failure is queued again (unless GitHub's expiry comes first).
fn attempt(inner: &Inner, mut pending: Pending, now_ms: u64) {
    if let (Some(shared), Some(member)) = (&inner.shared, pending.member.take()) {
        // Not in the schedule: another instance took it over, or the server lost it (restarted
        // empty, flushed, evicted). The two cannot be told apart, and a revocation is
        // idempotent (a second one is answered 401, `already_gone`): carry it out anyway, so a
        // lost schedule never leaves a token alive past its end of life.
        if shared.claim_revocation(&member) == Claim::Taken {
            log::debug!(
                "revocation of hashedToken {} is no longer in the shared schedule; revoking anyway",
                pending.revocation.hashed_token
            );
        }
    }
    let revocation = &pending.revocation;
    let attempted = match inner
        .github
        .revoke_if_live(&revocation.token, now_ms / 1000)
    {
        Ok(ended) => Attempted::Ended(ended),
        Err(e) => Attempted::Failed(e.to_string()),
    };
    pending.attempts += 1;
    pending.last_attempt_ms = Some(now_ms);
    match attempted {
        Attempted::Ended(Ended::Revoked) => end(inner, pending, "revoked"),
        Attempted::Ended(Ended::AlreadyGone) => end(inner, pending, "already_gone"),
        Attempted::Failed(why) => {
            let next_ms = now_ms.saturating_add(millis(backoff(pending.attempts)));
            let hashed = &pending.revocation.hashed_token;
            pending.last_error = Some(why.clone());
            inner
                .metrics
                .count(metrics::REVOCATIONS, &[("outcome", "failed")]);
            if next_ms >= pending.revocation.expires_at.saturating_mul(1000) {
                log::warn!(
                    "revoking a token (hashedToken {hashed}) failed: {why}; GitHub's expiry ends it first"
                );
                end(inner, pending, "expired");
                return;
            }
            log::warn!(
                "revoking a token (hashedToken {hashed}) failed, retrying in {}s: {why}",
                backoff(pending.attempts).as_secs()
            );
            let mut queue = lock(&inner.queue);
            if queue.finished {
                // `finish` gave up waiting for this attempt: it is left, like the others.
                drop(queue);
                end(inner, pending, "left");
            } else {
                queue.push(next_ms, pending);
            }
        }
    }
}

/// Counts and records a revocation that has ended with `outcome`.
fn end(inner: &Inner, pending: Pending, outcome: &'static str) {
    inner
        .metrics
        .count(metrics::REVOCATIONS, &[("outcome", outcome)]);
    let revocation = &pending.revocation;
    let record = audit::Revocation {
        kind: "revocation",
        time: time::rfc3339_millis(time::now_unix_millis()),
        request_id: revocation.request_id.clone(),
        hashed_token: revocation.hashed_token.clone(),
        scheduled: time::rfc3339(revocation.due),
        actual: pending.last_attempt_ms.map(time::rfc3339_millis),
        outcome,
        attempts: pending.attempts,
        error: match outcome {
            "revoked" | "already_gone" => None,
            _ => pending.last_error.clone(),
        },
    };
    let _ = inner.audit.write(&record);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(due: u64) -> Pending {
        Pending {
            revocation: Revocation {
                token: Secret::new(format!("ghs_{due}")),
                hashed_token: format!("h{due}"),
                request_id: format!("r{due}"),
                due,
                expires_at: due + 3000,
            },
            attempts: 0,
            last_attempt_ms: None,
            last_error: None,
            member: None,
        }
    }

    fn due_of(step: Step) -> Option<u64> {
        match step {
            Step::Attempt(p) => Some(p.revocation.due),
            _ => None,
        }
    }

    #[test]
    fn attempts_in_deadline_order_and_waits_for_the_next() {
        let mut queue = Queue::default();
        assert!(matches!(queue.next(0), Step::Idle));
        queue.push(30_000, pending(30));
        queue.push(10_000, pending(10));
        queue.push(10_000, pending(11));
        queue.push(20_000, pending(20));
        assert!(matches!(queue.next(9_000), Step::Wait(w) if w == Duration::from_secs(1)));
        assert_eq!(
            due_of(queue.next(10_000)),
            Some(10),
            "first queued of equal times first"
        );
        assert_eq!(due_of(queue.next(10_000)), Some(11));
        assert!(matches!(queue.next(15_000), Step::Wait(w) if w == Duration::from_secs(5)));
        assert_eq!(due_of(queue.next(25_000)), Some(20));
        assert_eq!(due_of(queue.next(31_000)), Some(30));
        assert!(matches!(queue.next(31_000), Step::Idle));
    }

    #[test]
    fn closing_attempts_what_is_due_by_the_deadline_and_no_more() {
        let mut queue = Queue::default();
        queue.push(10_000, pending(10));
        queue.push(50_000, pending(50));
        queue.closing = Some(20_000);
        assert!(
            matches!(queue.next(5_000), Step::Wait(_)),
            "due inside the drain"
        );
        assert_eq!(due_of(queue.next(10_000)), Some(10));
        assert!(
            matches!(queue.next(10_000), Step::Done),
            "the next is past the deadline"
        );
        assert_eq!(queue.due.len(), 1, "left for finish to record");
        queue.due.clear();
        assert!(matches!(queue.next(10_000), Step::Done));
    }

    #[test]
    fn with_a_shared_schedule_it_sweeps_between_attempts_but_not_when_closing() {
        let mut queue = Queue {
            sweep_at: Some(5_000),
            ..Queue::default()
        };
        assert!(matches!(queue.next(1_000), Step::Wait(w) if w == Duration::from_secs(4)));
        queue.push(3_000, pending(3));
        assert!(matches!(queue.next(1_000), Step::Wait(w) if w == Duration::from_secs(2)));
        assert_eq!(due_of(queue.next(3_000)), Some(3));
        assert!(matches!(queue.next(5_000), Step::Sweep));
        queue.sweep_at = Some(10_000);
        queue.closing = Some(20_000);
        assert!(
            matches!(queue.next(12_000), Step::Done),
            "no sweep while closing"
        );
    }

    #[test]
    fn a_shared_member_round_trips_and_nothing_else_reads() {
        let revocation = pending(42).revocation;
        let back = Revocation::decode(&revocation.encode()).unwrap();
        assert_eq!(back.token.expose(), "ghs_42");
        assert_eq!(back.hashed_token, github::hashed_token("ghs_42"));
        assert_eq!(
            (back.request_id.as_str(), back.due, back.expires_at),
            ("r42", 42, 3042)
        );
        for bad in [
            &b"{}"[..],
            b"not json",
            br#"{"token":"a b","request_id":"r","due":1,"expires_at":2}"#,
            br#"{"token":"t","request_id":"r","due":1,"expires_at":2,"more":1}"#,
        ] {
            assert!(Revocation::decode(bad).is_none());
        }
        assert_eq!(
            Unfinished {
                left: 2,
                handed_over: 1
            }
            .to_string(),
            "2 tokens left to GitHub's expiry, 1 handed to the fleet's shared schedule"
        );
        assert_eq!(
            Unfinished::default().to_string(),
            "0 tokens left to GitHub's expiry"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let secs: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
