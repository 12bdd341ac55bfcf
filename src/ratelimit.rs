//! Token buckets in memory: per source address (before any JWT work) and per pipeline (after
//! verification, before the cache). Time is passed in.
#![forbid(unsafe_code)]

use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lru::Lru;

/// Most keys tracked; past it, the least recently used bucket is dropped (in O(1): usually one
/// that has long refilled completely and so carries no state).
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key: `count` requests per `window`, burst `count`.
pub struct RateLimiter<K> {
    count: f64,
    window: Duration,
    buckets: Mutex<Lru<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    /// `count` (≥ 1) requests per `window` (> 0).
    pub fn new(count: u32, window: Duration) -> Self {
        RateLimiter {
            count: f64::from(count.max(1)),
            window: window.max(Duration::from_millis(1)),
            buckets: Mutex::new(Lru::new(MAX_KEYS)),
        }
    }

    /// Requests allowed per window (and the burst).
    pub fn count(&self) -> u32 {
        self.count as u32
    }

    /// The window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The tokens `bucket` holds at `now`.
    fn tokens_at(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        let rate = self.count / self.window.as_secs_f64();
        (bucket.tokens + elapsed * rate).min(self.count)
    }

    /// Takes one token for `key`. `Err(retry_after_secs)` (at least 1) when none is left.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            return self.take(bucket, now);
        }
        let mut bucket = Bucket {
            tokens: self.count,
            updated: now,
        };
        let taken = self.take(&mut bucket, now);
        buckets.insert(key.clone(), bucket);
        taken
    }

    /// Refills `bucket` to `now` and takes one token from it.
    fn take(&self, bucket: &mut Bucket, now: Instant) -> Result<(), u64> {
        bucket.tokens = self.tokens_at(bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let rate = self.count / self.window.as_secs_f64();
        let wait = ((1.0 - bucket.tokens) / rate).ceil();
        Err((wait as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(&"a", t0), Ok(()));
        }
        assert_eq!(limiter.check(&"a", t0), Err(20), "one token every 20 s");
        assert_eq!(limiter.check(&"b", t0), Ok(()), "keys are independent");
        assert_eq!(limiter.check(&"a", t0 + Duration::from_secs(19)), Err(1));
        assert_eq!(limiter.check(&"a", t0 + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn a_full_limiter_evicts_the_least_recently_used_key() {
        let limiter = RateLimiter::new(1, Duration::from_secs(3600));
        let t0 = Instant::now();
        for k in 0..MAX_KEYS {
            limiter
                .check(&k, t0 + Duration::from_nanos(k as u64))
                .unwrap(); // every bucket now empty
        }
        assert_eq!(
            limiter.check(&MAX_KEYS, t0 + Duration::from_secs(1)),
            Ok(()),
            "a new key gets a bucket"
        );
        assert_eq!(
            limiter.check(&0, t0 + Duration::from_secs(1)),
            Ok(()),
            "key 0 was evicted, so it starts full"
        );
        assert!(
            limiter.check(&5, t0 + Duration::from_secs(1)).is_err(),
            "others keep their state"
        );
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let limiter = RateLimiter::new(1000, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..1000 {
            limiter.check(&1, t0).unwrap();
        }
        assert_eq!(limiter.check(&1, t0), Err(1));
    }
}
