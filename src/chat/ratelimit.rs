//! Per-user send rate limiting: a token bucket (rate per second, burst). Pure: time is an
//! argument.

use std::collections::HashMap;
use std::time::Duration;

/// One bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Token buckets per key (user id).
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up.
    pub fn new(rate: f64, burst: u32) -> Self {
        RateLimiter { rate, burst: f64::from(burst), buckets: HashMap::new() }
    }

    /// Takes one token for `key` at `now_ms`, or says how long until one is available.
    pub fn take(&mut self, key: &str, now_ms: i64) -> Result<(), Duration> {
        let (rate, burst) = (self.rate, self.burst);
        let b =
            self.buckets.entry(key.to_string()).or_insert(Bucket { tokens: burst, at_ms: now_ms });
        let elapsed = (now_ms - b.at_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at_ms = now_ms;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            // Saturating: config bounds the rate, but an overflowing wait must never panic
            // under the limiter's lock.
            Err(Duration::try_from_secs_f64((1.0 - b.tokens) / rate).unwrap_or(Duration::MAX))
        }
    }

    /// Forgets buckets that have refilled completely (they behave exactly like new ones), so
    /// memory follows active senders, not every user ever seen.
    pub fn forget_idle(&mut self, now_ms: i64) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, b| b.tokens + (now_ms - b.at_ms).max(0) as f64 / 1000.0 * rate < burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut r = RateLimiter::new(20.0, 50);
        for _ in 0..50 {
            r.take("u", 0).unwrap();
        }
        let wait = r.take("u", 0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50));
        // 100 ms later: two more tokens.
        r.take("u", 100).unwrap();
        r.take("u", 100).unwrap();
        assert!(r.take("u", 100).is_err());
        // Others are independent.
        r.take("v", 100).unwrap();
        r.forget_idle(100_000);
        assert!(r.buckets.is_empty());
    }
}

/// Typing notices: at most one per user and room every `every_ms` is forwarded.
#[derive(Debug)]
pub struct TypingGate {
    every_ms: i64,
    last: HashMap<(String, String), i64>,
}

impl TypingGate {
    /// A gate letting one notice through per `every`.
    pub fn new(every: Duration) -> Self {
        TypingGate { every_ms: every.as_millis() as i64, last: HashMap::new() }
    }

    /// Whether a typing notice of `user` in `room` at `now_ms` is forwarded.
    pub fn allow(&mut self, user: &str, room: &str, now_ms: i64) -> bool {
        if self.last.len() > 10_000 {
            let every = self.every_ms;
            self.last.retain(|_, t| now_ms - *t < every);
        }
        let key = (user.to_string(), room.to_string());
        match self.last.get(&key) {
            Some(t) if now_ms - t < self.every_ms => false,
            _ => {
                self.last.insert(key, now_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod typing_tests {
    use super::*;

    #[test]
    fn one_typing_notice_per_two_seconds_per_user_and_room() {
        let mut g = TypingGate::new(Duration::from_secs(2));
        assert!(g.allow("u", "r", 0));
        assert!(!g.allow("u", "r", 1999));
        assert!(g.allow("u", "r2", 1999));
        assert!(g.allow("v", "r", 1999));
        assert!(g.allow("u", "r", 2000));
    }
}
