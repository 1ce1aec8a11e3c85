//! Per-address rate limit for chat commands: a token bucket per sender,
//! time passed in. A refused sender is told once per refusal streak, not
//! once per message, so a flood does not turn into a flood of apologies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many messages a sender may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Messages allowed at once after a quiet spell.
    pub burst: u32,
    /// Messages allowed per minute in the long run.
    pub per_minute: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            burst: 10,
            per_minute: 30,
        }
    }
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allowed,
    /// Drop it, and tell the sender they are too fast (first refusal).
    RefusedTell,
    /// Drop it silently (they have been told).
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    told: bool,
}

/// Token buckets of every sender seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<String, Bucket>,
    checks: u64,
}

impl RateLimiter {
    /// A limiter with this limit.
    pub fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
            checks: 0,
        }
    }

    /// Counts one message from `sender` at `now`.
    pub fn check(&mut self, now: Instant, sender: &str) -> Verdict {
        self.checks += 1;
        if self.checks.is_multiple_of(1024) {
            self.forget_idle(now);
        }
        let burst = f64::from(self.limit.burst.max(1));
        let rate = f64::from(self.limit.per_minute.max(1)) / 60.0;
        let bucket = self.buckets.entry(sender.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
            told: false,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.told = false;
            return Verdict::Allowed;
        }
        if bucket.told {
            return Verdict::Refused;
        }
        bucket.told = true;
        Verdict::RefusedTell
    }

    /// Senders currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Forgets senders whose bucket has refilled (they would start full anyway).
    fn forget_idle(&mut self, now: Instant) {
        let refill = Duration::from_secs_f64(
            f64::from(self.limit.burst.max(1)) * 60.0 / f64::from(self.limit.per_minute.max(1)),
        );
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < refill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_and_one_apology_per_streak() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit {
            burst: 3,
            per_minute: 60,
        });
        for _ in 0..3 {
            assert_eq!(l.check(t0, "a@x"), Verdict::Allowed);
        }
        assert_eq!(l.check(t0, "a@x"), Verdict::RefusedTell);
        assert_eq!(l.check(t0, "a@x"), Verdict::Refused);
        assert_eq!(l.check(t0, "b@x"), Verdict::Allowed, "per address");
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.check(t1, "a@x"), Verdict::Allowed, "one token a second");
        assert_eq!(
            l.check(t1, "a@x"),
            Verdict::RefusedTell,
            "a new streak is told again"
        );
        let t2 = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(
                l.check(t2, "a@x"),
                Verdict::Allowed,
                "refilled to the burst, no more"
            );
        }
        assert_eq!(l.check(t2, "a@x"), Verdict::RefusedTell);
    }

    #[test]
    fn idle_senders_are_forgotten() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(RateLimit::default());
        for i in 0..1000 {
            l.check(t0, &format!("user{i}@x"));
        }
        assert_eq!(l.tracked(), 1000);
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..1024 {
            l.check(later, "busy@x");
        }
        assert_eq!(l.tracked(), 1);
    }
}
