//! What one source may hold, and how long a connection may sit without doing anything worth
//! its memory. Both transports use the same rules; the parts that decide are pure.
//!
//! - [`PeerLimits`]: at most `limits.max_connections_per_ip` open connections per source
//!   address (IPv6 by /64, since one host owns a whole /64), so a thousand idle connections
//!   from one address cannot take the box's memory or the global connection cap. Beyond it a
//!   TCP connection is closed right after accept and a QUIC one refused. The map holds only
//!   sources with an open connection, so it is bounded by `max_connections`.
//! - [`Activity`] + [`IdleRule`]: a connection must make an authenticated request within
//!   `limits.auth_timeout_secs` of connecting (a connection that never opens a stream, or
//!   only tries tokens that fail, is closed then), and once authenticated it is closed after
//!   `limits.idle_connection_secs` without any open request. A `Connect` stream is an open
//!   request for its whole life, so a chatting client is never idle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The part of an address a connection limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (IPv4-mapped IPv6 included).
    V4([u8; 4]),
    /// An IPv6 /64.
    V6([u8; 8]),
}

impl Source {
    /// The source of `ip`.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Source::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// Open connections per source, capped.
#[derive(Debug)]
pub struct PeerLimits {
    per_source: usize,
    open: Mutex<HashMap<Source, usize>>,
}

/// One connection's place in its source's count; released on drop.
#[derive(Debug)]
pub struct PeerSlot {
    limits: Arc<PeerLimits>,
    source: Source,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().expect("peer limits lock");
        if let Some(n) = open.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.source);
            }
        }
    }
}

impl PeerLimits {
    /// At most `per_source` connections per source.
    pub fn new(per_source: usize) -> Arc<PeerLimits> {
        Arc::new(PeerLimits { per_source, open: Mutex::new(HashMap::new()) })
    }

    /// A slot for a new connection from `ip`, or `None` when its source is at the cap.
    pub fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let source = Source::of(ip);
        let mut open = self.open.lock().expect("peer limits lock");
        let n = open.entry(source).or_insert(0);
        if *n >= self.per_source {
            return None;
        }
        *n += 1;
        Some(PeerSlot { limits: self.clone(), source })
    }

    /// Sources with an open connection.
    pub fn sources(&self) -> usize {
        self.open.lock().expect("peer limits lock").len()
    }

    /// Open connections, all sources and both transports.
    pub fn connections(&self) -> usize {
        self.open.lock().expect("peer limits lock").values().sum()
    }
}

/// What a connection has done, shared between the transport (which closes it) and the request
/// layer (which counts requests and marks it authenticated).
#[derive(Debug)]
pub struct Activity {
    connected_at: Instant,
    authenticated: AtomicBool,
    open_requests: AtomicUsize,
    /// When the last request ended, as ms after `connected_at`.
    idle_since_ms: AtomicU64,
}

/// Held while a request is open; dropping it ends the request.
#[derive(Debug)]
pub struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since_ms.store(a.connected_at.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.open_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Activity {
    /// A connection that has just connected.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            connected_at: Instant::now(),
            authenticated: AtomicBool::new(false),
            open_requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// A request started; it is open until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> OpenRequest {
        self.open_requests.fetch_add(1, Ordering::Relaxed);
        OpenRequest(self.clone())
    }

    /// A request on this connection carried a valid token.
    pub fn authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    /// What the rule looks at, now.
    pub fn state(&self) -> ConnState {
        ConnState {
            connected_at: self.connected_at,
            authenticated: self.authenticated.load(Ordering::Relaxed),
            open_requests: self.open_requests.load(Ordering::Relaxed),
            idle_since: self.connected_at
                + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed)),
        }
    }
}

/// A snapshot of a connection's [`Activity`].
#[derive(Debug, Clone, Copy)]
pub struct ConnState {
    /// When it connected.
    pub connected_at: Instant,
    /// Whether any request carried a valid token.
    pub authenticated: bool,
    /// Requests open now.
    pub open_requests: usize,
    /// When the last request ended (the connection time if none has).
    pub idle_since: Instant,
}

/// The two timeouts.
#[derive(Debug, Clone, Copy)]
pub struct IdleRule {
    /// An authenticated request must come within this of connecting.
    pub auth_timeout: Duration,
    /// An authenticated connection with no open request is closed after this.
    pub idle_timeout: Duration,
}

/// What to do with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Close it, for this reason.
    Close(&'static str),
    /// Fine until at least this; check again then.
    CheckAt(Instant),
}

impl IdleRule {
    /// Decides for a connection in `state` at `now`.
    pub fn check(&self, state: ConnState, now: Instant) -> Verdict {
        if !state.authenticated {
            let deadline = state.connected_at + self.auth_timeout;
            return if now >= deadline {
                Verdict::Close("no authenticated request in time")
            } else {
                Verdict::CheckAt(deadline)
            };
        }
        if state.open_requests > 0 {
            return Verdict::CheckAt(now + self.idle_timeout);
        }
        let deadline = state.idle_since + self.idle_timeout;
        if now >= deadline { Verdict::Close("idle") } else { Verdict::CheckAt(deadline) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_capped_and_released() {
        let limits = PeerLimits::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.try_take(a).unwrap();
        let _s2 = limits.try_take(a).unwrap();
        assert!(limits.try_take(a).is_none());
        // The same host as IPv4-mapped IPv6 is the same source.
        assert!(limits.try_take("::ffff:10.0.0.1".parse().unwrap()).is_none());
        let _other = limits.try_take(b).unwrap();
        drop(s1);
        assert!(limits.try_take(a).is_some());
        assert_eq!(limits.sources(), 2);
    }

    #[test]
    fn ipv6_counts_by_slash_64() {
        let limits = PeerLimits::new(1);
        let _one = limits.try_take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(limits.try_take("2001:db8:1:2:ffff::9".parse().unwrap()).is_none());
        assert!(limits.try_take("2001:db8:1:3::1".parse().unwrap()).is_some());
    }

    /// Every case of the rule, as (authenticated, open requests, connected / idle since ago,
    /// expected).
    #[test]
    fn the_idle_rule() {
        let rule = IdleRule {
            auth_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        };
        let now = Instant::now() + Duration::from_secs(10_000);
        let ago = |s: u64| now - Duration::from_secs(s);
        let state = |authenticated, open_requests, connected: u64, idle: u64| ConnState {
            connected_at: ago(connected),
            authenticated,
            open_requests,
            idle_since: ago(idle),
        };
        let close = |why| Verdict::Close(why);
        let table = [
            // Not authenticated: 30 s from connecting, whatever it has open.
            (state(false, 0, 10, 10), Verdict::CheckAt(ago(10) + Duration::from_secs(30))),
            (state(false, 3, 29, 29), Verdict::CheckAt(ago(29) + Duration::from_secs(30))),
            (state(false, 3, 30, 30), close("no authenticated request in time")),
            (state(false, 0, 5000, 5000), close("no authenticated request in time")),
            // Authenticated with a request open (a Connect stream): never idle.
            (state(true, 1, 5000, 5000), Verdict::CheckAt(now + Duration::from_secs(300))),
            // Authenticated, nothing open: 300 s after the last request ended.
            (state(true, 0, 5000, 299), Verdict::CheckAt(ago(299) + Duration::from_secs(300))),
            (state(true, 0, 5000, 300), close("idle")),
        ];
        for (i, (s, want)) in table.into_iter().enumerate() {
            assert_eq!(rule.check(s, now), want, "row {i}: {s:?}");
        }
    }

    #[test]
    fn activity_counts_requests() {
        let a = Activity::new();
        assert!(!a.state().authenticated);
        let r1 = a.request();
        let r2 = a.request();
        a.authenticated();
        assert_eq!(a.state().open_requests, 2);
        drop(r1);
        drop(r2);
        let s = a.state();
        assert_eq!(s.open_requests, 0);
        assert!(s.authenticated && s.idle_since >= s.connected_at);
    }
}
