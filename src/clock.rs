//! The one place that reads the wall clock.
//!
//! The core (tokens, throttles, presence, rate limits) takes `now` as an argument so it can be
//! tested with any time; only the edges call [`now_ms`].

/// Milliseconds since the Unix epoch, as stored and sent on the wire (`*_ms`).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
