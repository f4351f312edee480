//! Login throttling per username: after `free` consecutive failures each further attempt must
//! wait an exponentially growing delay (1 s, 2 s, 4 s, ... capped at `max_delay`). The cap means
//! an attacker can slow a user's logins but never lock them out for good, and a success resets
//! the count. Pure: time is an argument.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// At most this many usernames are tracked; past it the stalest entry is forgotten, so a flood
/// of made-up names cannot grow memory without bound. Finding the stalest is a lookup in
/// `by_age`, not a scan: a full table must not cost 100,000 steps per new name under the
/// lock every login takes.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure_ms: i64,
}

/// Failure counts per username.
#[derive(Debug)]
pub struct LoginThrottle {
    free: u32,
    max_delay: Duration,
    entries: HashMap<String, Entry>,
    /// `(last_failure_ms, name)` of every entry, oldest first.
    by_age: BTreeSet<(i64, String)>,
    max_tracked: usize,
}

impl LoginThrottle {
    /// A throttle allowing `free` failures before delays start.
    pub fn new(free: u32, max_delay: Duration) -> Self {
        Self::with_capacity(free, max_delay, MAX_TRACKED)
    }

    fn with_capacity(free: u32, max_delay: Duration, max_tracked: usize) -> Self {
        LoginThrottle {
            free,
            max_delay,
            entries: HashMap::new(),
            by_age: BTreeSet::new(),
            max_tracked,
        }
    }

    fn delay_for(&self, failures: u32) -> Duration {
        if failures < self.free {
            return Duration::ZERO;
        }
        let exp = (failures - self.free).min(30);
        Duration::from_secs(1u64 << exp).min(self.max_delay)
    }

    /// `Err(wait)` if an attempt for `name` at `now_ms` must wait that long first.
    pub fn check(&self, name: &str, now_ms: i64) -> Result<(), Duration> {
        let Some(e) = self.entries.get(name) else {
            return Ok(());
        };
        let delay = self.delay_for(e.failures);
        let ready_at = e.last_failure_ms.saturating_add(delay.as_millis() as i64);
        if now_ms >= ready_at {
            Ok(())
        } else {
            Err(Duration::from_millis((ready_at - now_ms) as u64))
        }
    }

    /// Records a failed attempt.
    pub fn failed(&mut self, name: &str, now_ms: i64) {
        let failures = match self.entries.get(name) {
            Some(e) => {
                self.by_age.remove(&(e.last_failure_ms, name.to_string()));
                e.failures
            }
            None => {
                if self.entries.len() >= self.max_tracked
                    && let Some((_, oldest)) = self.by_age.pop_first()
                {
                    self.entries.remove(&oldest);
                }
                0
            }
        };
        let entry = Entry { failures: failures.saturating_add(1), last_failure_ms: now_ms };
        self.entries.insert(name.to_string(), entry);
        self.by_age.insert((now_ms, name.to_string()));
    }

    /// Records a success: the count starts again.
    pub fn succeeded(&mut self, name: &str) {
        if let Some(e) = self.entries.remove(name) {
            self.by_age.remove(&(e.last_failure_ms, name.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_free_failures_then_exponential_delay_capped() {
        let mut t = LoginThrottle::new(5, Duration::from_secs(8));
        let mut now = 1_000_000;
        for _ in 0..5 {
            assert!(t.check("bob", now).is_ok());
            t.failed("bob", now);
        }
        // 5 failures: the next attempt waits 1 s.
        assert_eq!(t.check("bob", now), Err(Duration::from_secs(1)));
        now += 1000;
        assert!(t.check("bob", now).is_ok());
        t.failed("bob", now);
        assert_eq!(t.check("bob", now), Err(Duration::from_secs(2)));
        for _ in 0..20 {
            now += 60_000;
            t.failed("bob", now);
        }
        // Capped: never locked out for longer than max_delay.
        assert_eq!(t.check("bob", now), Err(Duration::from_secs(8)));
        assert!(t.check("bob", now + 8000).is_ok());
        // Other users are unaffected; success resets.
        assert!(t.check("alice", now).is_ok());
        t.succeeded("bob");
        assert!(t.check("bob", now).is_ok());
        assert_eq!(t.entries.len(), t.by_age.len());
    }

    #[test]
    fn a_full_table_forgets_the_stalest_name() {
        let mut t = LoginThrottle::with_capacity(1, Duration::from_secs(8), 3);
        t.failed("a", 1);
        t.failed("b", 2);
        t.failed("c", 3);
        t.failed("a", 4); // a is now the freshest
        t.failed("d", 5); // full: b goes
        assert!(t.check("b", 5).is_ok());
        assert!(t.check("a", 5).is_err() && t.check("c", 5).is_err() && t.check("d", 5).is_err());
        assert_eq!((t.entries.len(), t.by_age.len()), (3, 3));
        t.succeeded("c");
        t.failed("e", 6);
        t.failed("f", 7); // full again: a (4) is older than d (5)
        assert!(t.check("a", 7).is_ok() && t.check("d", 7).is_err());
        assert_eq!((t.entries.len(), t.by_age.len()), (3, 3));
    }
}
