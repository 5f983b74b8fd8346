//! Per-caller token buckets for tool calls.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Callers kept before idle ones are forgotten (a full bucket is the same as a new one).
const MAX_TRACKED: usize = 10_000;

/// Allows each caller `per_minute` calls a minute, in bursts of up to a sixth of that.
pub struct CallLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl CallLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn capacity(&self) -> f64 {
        self.per_minute.div_ceil(6).max(1) as f64
    }

    /// Takes one call for `key`; false when it has none left.
    pub fn try_take(&self, key: &str) -> bool {
        self.try_take_at(key, Instant::now())
    }

    fn try_take_at(&self, key: &str, now: Instant) -> bool {
        let capacity = self.capacity();
        let per_second = self.per_minute as f64 / 60.0;
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_second
                    < capacity
            });
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(capacity);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_caller_has_its_own_burst_and_refills() {
        let limiter = CallLimiter::new(12); // bursts of 2, one call per 5 s
        let t0 = Instant::now();
        assert!(limiter.try_take_at("a", t0));
        assert!(limiter.try_take_at("a", t0));
        assert!(!limiter.try_take_at("a", t0));
        assert!(limiter.try_take_at("b", t0));
        assert!(!limiter.try_take_at("a", t0 + Duration::from_secs(4)));
        assert!(limiter.try_take_at("a", t0 + Duration::from_secs(10)));
    }
}
