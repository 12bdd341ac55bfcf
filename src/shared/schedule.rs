//! The fleet's revocation schedule: one sorted set, `PREFIX v`, of sealed revocations scored by
//! their due time (Unix ms), so that any instance carries out a revocation whose minting
//! instance has gone.
//!
//! - The minting instance adds its revocation ([`SharedCache::schedule_revocation`]) and, when it
//!   comes to carry it out, claims it ([`SharedCache::claim_revocation`], `ZREM`): only the one
//!   that removes the member revokes, so each revocation is carried out (and recorded) once.
//! - Every instance takes over, now and then, what is overdue by more than a grace period
//!   ([`SharedCache::take_overdue_revocations`], one script that reads and removes them), so a
//!   living minter always comes first.
//! - Members are sealed like token entries ([`super::seal`]), bound to the prefix and to their
//!   purpose: a member cannot be replayed as a token entry, nor one from another prefix. Members
//!   older than an hour (their token has expired at GitHub anyway) are pruned by the same script.
//!
//! Best effort, like the rest of the shared cache: a failing server leaves the revocation to the
//! minting instance alone.
#![forbid(unsafe_code)]

use super::SharedCache;
use super::resp::Reply;

/// Reads and removes the members due by `ARGV[1]` (at most `ARGV[2]`), after dropping those due
/// before `ARGV[3]` (expired at GitHub anyway).
const TAKE_OVERDUE: &str = "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3]) \
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2]) \
for _, member in ipairs(due) do redis.call('ZREM', KEYS[1], member) end \
return due";

/// The most revocations taken over at once.
const TAKE_AT_MOST: usize = 64;

/// How long a member may stay past its due time before it is pruned (GitHub's token hour).
const PRUNE_AFTER_MS: u64 = 3_600_000;

/// What [`SharedCache::claim_revocation`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Removed by this call: this instance carries it out.
    Claimed,
    /// Not there: another instance took it over (and carries it out).
    Taken,
    /// The server did not answer: carry it out anyway (a second revocation is only a 401).
    Unknown,
}

impl SharedCache {
    fn schedule_key(&self) -> String {
        format!("{}v", self.prefix)
    }

    /// What a member is sealed to: the prefix and the schedule.
    fn schedule_context(&self) -> Vec<u8> {
        let mut context = self.prefix.as_bytes().to_vec();
        context.extend_from_slice(b"\0revocation schedule v1");
        context
    }

    /// Adds `plaintext` (a revocation, sealed here) due at `due_ms`; the member to claim it by,
    /// or `None` when it could not be added.
    pub fn schedule_revocation(&self, plaintext: &[u8], due_ms: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; ring::aead::NONCE_LEN];
        ring::rand::SecureRandom::fill(&self.rng, &mut nonce).ok()?;
        let member = self.keys.seal(&self.schedule_context(), plaintext, nonce);
        if member.is_empty() {
            return None;
        }
        let (key, score) = (self.schedule_key(), due_ms.to_string());
        let args: [&[u8]; 4] = [b"ZADD", key.as_bytes(), score.as_bytes(), &member];
        match self.op("schedule", &args) {
            Ok(Reply::Integer(1)) => Some(member),
            _ => None,
        }
    }

    /// Claims `member` before carrying it out.
    pub fn claim_revocation(&self, member: &[u8]) -> Claim {
        let key = self.schedule_key();
        match self.op("claim", &[b"ZREM", key.as_bytes(), member]) {
            Ok(Reply::Integer(1)) => Claim::Claimed,
            Ok(Reply::Integer(0)) => Claim::Taken,
            _ => Claim::Unknown,
        }
    }

    /// Takes over the revocations due by `due_by_ms` (removing them from the schedule): their
    /// plaintexts. A member that does not open is counted in `kitebridge_cache_rejected_total`
    /// and dropped.
    pub fn take_overdue_revocations(&self, due_by_ms: u64) -> Vec<Vec<u8>> {
        let key = self.schedule_key();
        let (due_by, most) = (due_by_ms.to_string(), TAKE_AT_MOST.to_string());
        let prune = due_by_ms.saturating_sub(PRUNE_AFTER_MS).to_string();
        let args: [&[u8]; 7] = [
            b"EVAL",
            TAKE_OVERDUE.as_bytes(),
            b"1",
            key.as_bytes(),
            due_by.as_bytes(),
            most.as_bytes(),
            prune.as_bytes(),
        ];
        let Ok(Reply::Array(items)) = self.op("take_overdue", &args) else {
            return Vec::new();
        };
        let context = self.schedule_context();
        items
            .iter()
            .filter_map(|item| match item {
                Reply::Bulk(member) => match self.keys.open(&context, member) {
                    Ok(plaintext) => Some(plaintext),
                    Err(rejected) => {
                        self.rejected(rejected.as_str());
                        None
                    }
                },
                _ => None,
            })
            .collect()
    }
}
