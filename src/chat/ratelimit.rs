//! Per-user rate limits: a token bucket (rate per second, burst) for sends, the same for every
//! other change ([`Budget`]), and the typing gate. Pure: time is an argument.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    last_forget_ms: i64,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved up.
    pub fn new(rate: f64, burst: u32) -> Self {
        RateLimiter { rate, burst: f64::from(burst), buckets: HashMap::new(), last_forget_ms: 0 }
    }

    /// Takes one token for `key` at `now_ms`, or says how long until one is available. At most
    /// once a second it also forgets the buckets that have refilled, so memory follows the
    /// users active in the last moments, not every user ever seen.
    pub fn take(&mut self, key: &str, now_ms: i64) -> Result<(), Duration> {
        if now_ms - self.last_forget_ms >= 1000 {
            self.last_forget_ms = now_ms;
            self.forget_idle(now_ms);
        }
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

/// A per-user budget shared by every operation it covers (thread-safe); cheap to clone.
#[derive(Debug, Clone)]
pub struct Budget(Arc<Mutex<RateLimiter>>);

impl Budget {
    /// `rate` actions per second per user, at most `burst` saved up.
    pub fn new(rate: f64, burst: u32) -> Budget {
        Budget(Arc::new(Mutex::new(RateLimiter::new(rate, burst))))
    }

    /// Takes one action of `user` at `now_ms`; when the budget is spent, the message says when
    /// to retry.
    pub fn take(&self, user: &str, now_ms: i64) -> Result<(), String> {
        let taken = self.0.lock().expect("budget lock").take(user, now_ms);
        taken.map_err(|wait| {
            format!("too many changes too fast; retry in {} ms", wait.as_millis().max(1))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_per_user_and_says_when_to_retry() {
        let b = Budget::new(10.0, 2);
        b.take("u", 0).unwrap();
        b.take("u", 0).unwrap();
        let e = b.take("u", 0).unwrap_err();
        assert!(e.contains("retry in 100 ms"), "{e}");
        b.take("v", 0).unwrap();
        b.take("u", 100).unwrap();
    }

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
