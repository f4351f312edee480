//! Presence (DESIGN.md "Presence, typing, notifications, unread"): a user is online while at
//! least one `Connect` stream of theirs is open, over any transport; after the last closes
//! they stay online for a grace period (so a phone changing networks does not flap), then go
//! offline and their last-seen time is stored. A client may mark itself away. Changes are
//! pushed to connected users who share a room with the user, never to strangers.
//!
//! [`PresenceBook`] is the pure state machine (time is an argument); [`Presence`] runs it:
//! stream hooks, a timer task for grace expiry, the pushes, and the durable last-seen write.
//! Presence lives in memory: after a restart everyone starts offline.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::change::{Change, Exec};
use crate::chat::hub::{Hub, UserSignal};
use crate::proto::{self, PresenceStatus};
use crate::store::{self, JobResult, Snapshot, StoreError, WriteCtx, rooms, users};

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    streams: usize,
    away: bool,
    /// When the grace period of a user with no streams ends.
    offline_at: Option<i64>,
}

/// Who is online, pure.
#[derive(Debug)]
pub struct PresenceBook {
    grace_ms: i64,
    users: HashMap<String, Entry>,
}

impl PresenceBook {
    /// A book with the given grace period.
    pub fn new(grace: Duration) -> Self {
        PresenceBook { grace_ms: grace.as_millis() as i64, users: HashMap::new() }
    }

    /// A stream opened. Returns the new status if it changed (offline -> online).
    pub fn connected(&mut self, user: &str) -> Option<PresenceStatus> {
        let e = self.users.entry(user.to_string()).or_default();
        let was_offline = e.streams == 0 && e.offline_at.is_none();
        e.streams += 1;
        e.offline_at = None;
        was_offline.then_some(PresenceStatus::Online)
    }

    /// A stream closed: the last one starts the grace period.
    pub fn disconnected(&mut self, user: &str, now_ms: i64) {
        if let Some(e) = self.users.get_mut(user) {
            e.streams = e.streams.saturating_sub(1);
            if e.streams == 0 {
                e.offline_at = Some(now_ms + self.grace_ms);
            }
        }
    }

    /// The client set itself away (or back online). Returns the new status if it changed.
    pub fn set_away(&mut self, user: &str, away: bool) -> Option<PresenceStatus> {
        let e = self.users.get_mut(user)?;
        if e.away == away {
            return None;
        }
        e.away = away;
        Some(if away { PresenceStatus::Away } else { PresenceStatus::Online })
    }

    /// Users whose grace period is over at `now_ms`: they are offline now and forgotten.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .users
            .iter()
            .filter(|(_, e)| e.offline_at.is_some_and(|t| t <= now_ms))
            .map(|(u, _)| u.clone())
            .collect();
        for u in &gone {
            self.users.remove(u);
        }
        gone
    }

    /// The earliest grace deadline, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        self.users.values().filter_map(|e| e.offline_at).min()
    }

    /// A user's status now (inside the grace period: online).
    pub fn status(&self, user: &str) -> PresenceStatus {
        match self.users.get(user) {
            None => PresenceStatus::Offline,
            Some(e) if e.away => PresenceStatus::Away,
            Some(_) => PresenceStatus::Online,
        }
    }

    /// How many users are online or away.
    pub fn online_count(&self) -> usize {
        self.users.len()
    }
}

/// What the other nodes of a cluster say about their users, pure (time passed in). A node is
/// forgotten when not heard from for `ttl_ms` (it stopped or lost NATS): its users count as
/// offline there.
#[derive(Debug)]
pub struct RemoteBook {
    ttl_ms: i64,
    /// node -> (when last heard, user -> status (online or away)).
    nodes: HashMap<u64, (i64, HashMap<String, PresenceStatus>)>,
}

/// Other nodes remembered at most (a cluster has a handful; more is a misconfiguration).
pub const MAX_REMOTE_NODES: usize = 64;

fn rank(s: PresenceStatus) -> u8 {
    match s {
        PresenceStatus::Online => 2,
        PresenceStatus::Away => 1,
        _ => 0,
    }
}

/// The better of two statuses (online over away over offline).
pub fn best(a: PresenceStatus, b: PresenceStatus) -> PresenceStatus {
    if rank(b) > rank(a) { b } else { a }
}

impl RemoteBook {
    /// A book forgetting silent nodes after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        RemoteBook { ttl_ms: ttl.as_millis() as i64, nodes: HashMap::new() }
    }

    /// The best status any other node reports for `user`.
    pub fn status(&self, user: &str) -> PresenceStatus {
        self.nodes
            .values()
            .filter_map(|(_, users)| users.get(user).copied())
            .fold(PresenceStatus::Offline, best)
    }

    /// Node `node` says `user` is `status` now. Returns whether the user's best status
    /// changed. A new node beyond [`MAX_REMOTE_NODES`] is ignored.
    pub fn update(&mut self, node: u64, user: &str, status: PresenceStatus, now_ms: i64) -> bool {
        if !self.nodes.contains_key(&node) && self.nodes.len() >= MAX_REMOTE_NODES {
            return false;
        }
        let before = self.status(user);
        let (heard, users) = self.nodes.entry(node).or_default();
        *heard = now_ms;
        if status == PresenceStatus::Offline {
            users.remove(user);
        } else {
            users.insert(user.to_string(), status);
        }
        self.status(user) != before
    }

    /// Node `node`'s whole list (its periodic snapshot): replaces what it said before.
    /// Returns the users whose best status changed.
    pub fn replace(
        &mut self,
        node: u64,
        list: HashMap<String, PresenceStatus>,
        now_ms: i64,
    ) -> Vec<String> {
        if !self.nodes.contains_key(&node) && self.nodes.len() >= MAX_REMOTE_NODES {
            return Vec::new();
        }
        let old = self.nodes.get(&node).map(|(_, u)| u.keys().cloned().collect::<Vec<_>>());
        let mut touched: HashSet<String> = old.unwrap_or_default().into_iter().collect();
        touched.extend(list.keys().cloned());
        let before: Vec<(String, PresenceStatus)> =
            touched.into_iter().map(|u| (u.clone(), self.status(&u))).collect();
        self.nodes.insert(node, (now_ms, list));
        before.into_iter().filter(|(u, s)| self.status(u) != *s).map(|(u, _)| u).collect()
    }

    /// Forgets nodes not heard from for the TTL; returns the users whose best status changed.
    pub fn expire(&mut self, now_ms: i64) -> Vec<String> {
        let silent: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, (heard, _))| *heard + self.ttl_ms <= now_ms)
            .map(|(n, _)| *n)
            .collect();
        let mut changed = Vec::new();
        for node in silent {
            if let Some((_, users)) = self.nodes.remove(&node) {
                changed.extend(
                    users.into_keys().filter(|u| self.status(u) == PresenceStatus::Offline),
                );
            }
        }
        changed
    }
}

/// The running presence service. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    book: Mutex<PresenceBook>,
    /// Wakes the expiry task when a grace period starts.
    wake: Notify,
    hub: Arc<Hub>,
    store: store::Store,
    exec: Exec,
    /// Cluster mode: what other nodes say, and where this node's changes go out
    /// (`cluster::presence` sends them; bounded, see [`OUTBOX`]).
    remote: Option<(Mutex<RemoteBook>, Announce)>,
}

/// Where a cluster node's presence changes go out (user, new status on this node).
pub type Announce = tokio::sync::mpsc::Sender<(String, PresenceStatus)>;

/// Presence changes of this node waiting to go to the other nodes; when full a change is
/// dropped (the next periodic list, at most `cluster::presence::EVERY` later, repairs it).
pub const OUTBOX: usize = 1024;

/// Holds a user online for as long as one of their streams is open.
pub struct Online {
    presence: Presence,
    user: String,
}

impl Drop for Online {
    fn drop(&mut self) {
        let p = &self.presence.inner;
        p.book.lock().expect("presence lock").disconnected(&self.user, crate::clock::now_ms());
        p.wake.notify_one();
    }
}

impl Presence {
    /// Starts the service and its expiry task (which stops with `shutdown`).
    pub fn start(
        grace: Duration,
        hub: Arc<Hub>,
        store: store::Store,
        exec: Exec,
        shutdown: CancellationToken,
        tasks: &crate::tasks::Tasks,
    ) -> Presence {
        Self::start_shared(grace, hub, store, exec, None, shutdown, tasks)
    }

    /// [`Presence::start`] for a cluster node: `remote` is the book of the other nodes'
    /// users and the sender of this node's changes to them.
    pub fn start_shared(
        grace: Duration,
        hub: Arc<Hub>,
        store: store::Store,
        exec: Exec,
        remote: Option<(RemoteBook, Announce)>,
        shutdown: CancellationToken,
        tasks: &crate::tasks::Tasks,
    ) -> Presence {
        let p = Presence {
            inner: Arc::new(Inner {
                book: Mutex::new(PresenceBook::new(grace)),
                wake: Notify::new(),
                hub,
                store,
                exec,
                remote: remote.map(|(book, out)| (Mutex::new(book), out)),
            }),
        };
        tasks.spawn(p.clone().expire_loop(shutdown));
        p
    }

    /// This node's users who are online or away, for the periodic list to the other nodes.
    pub fn local_list(&self) -> Vec<(String, PresenceStatus)> {
        let book = self.inner.book.lock().expect("presence lock");
        book.users.keys().map(|u| (u.clone(), book.status(u))).collect()
    }

    /// Another node's change (`user` is `status` there): pushed to co-members here when it
    /// changes what they should see.
    pub fn remote_update(&self, node: u64, user: &str, status: PresenceStatus, now_ms: i64) {
        let Some((book, _)) = &self.inner.remote else { return };
        let changed = book.lock().expect("remote presence").update(node, user, status, now_ms);
        if changed {
            self.push_effective(user);
        }
    }

    /// Another node's whole list.
    pub fn remote_list(&self, node: u64, list: HashMap<String, PresenceStatus>, now_ms: i64) {
        let Some((book, _)) = &self.inner.remote else { return };
        let changed = book.lock().expect("remote presence").replace(node, list, now_ms);
        for user in changed {
            self.push_effective(&user);
        }
    }

    /// Forgets other nodes that went silent.
    pub fn remote_expire(&self, now_ms: i64) {
        let Some((book, _)) = &self.inner.remote else { return };
        let changed = book.lock().expect("remote presence").expire(now_ms);
        for user in changed {
            self.push_effective(&user);
        }
    }

    /// The user's status on this node and every other, combined.
    fn effective(&self, user: &str) -> PresenceStatus {
        let local = self.inner.book.lock().expect("presence lock").status(user);
        match &self.inner.remote {
            Some((book, _)) => best(local, book.lock().expect("remote presence").status(user)),
            None => local,
        }
    }

    fn push_effective(&self, user: &str) {
        let status = self.effective(user);
        let seen = if status == PresenceStatus::Offline { crate::clock::now_ms() } else { 0 };
        self.push(user, status, seen);
    }

    /// Tells the other nodes about a change of `user` on this one.
    fn announce(&self, user: &str, status: PresenceStatus) {
        if let Some((_, out)) = &self.inner.remote {
            let _ = out.try_send((user.to_string(), status));
        }
    }

    /// A stream of `user` opened; the returned guard keeps them online until dropped.
    pub fn connect(&self, user: &str) -> Online {
        let changed = self.inner.book.lock().expect("presence lock").connected(user);
        if let Some(status) = changed {
            self.announce(user, status);
            self.push_effective(user);
        }
        Online { presence: self.clone(), user: user.to_string() }
    }

    /// `SetPresence`: away or back online.
    pub fn set_away(&self, user: &str, away: bool) {
        let changed = self.inner.book.lock().expect("presence lock").set_away(user, away);
        if let Some(status) = changed {
            self.announce(user, status);
            self.push_effective(user);
        }
    }

    /// A user's status and last-seen time (now, for online users).
    pub fn of(&self, user: &str, stored_last_seen_ms: i64) -> (PresenceStatus, i64) {
        match self.effective(user) {
            PresenceStatus::Offline => (PresenceStatus::Offline, stored_last_seen_ms),
            s => (s, crate::clock::now_ms()),
        }
    }

    /// How many users are online now.
    pub fn online_count(&self) -> usize {
        self.inner.book.lock().expect("presence lock").online_count()
    }

    /// Pushes a presence change to every user sharing a room with `user`.
    fn push(&self, user: &str, status: PresenceStatus, last_seen_ms: i64) {
        let frame = Arc::new(proto::ServerFrame {
            kind: Some(proto::server_frame::Kind::Presence(proto::Presence {
                user_id: user.to_string(),
                status: status as i32,
                last_seen_ms,
            })),
        });
        match self.inner.store.read().and_then(|tx| co_members(&tx, user)) {
            Ok(others) => {
                for other in others {
                    self.inner.hub.signal_user(&other, UserSignal::Frame(frame.clone()));
                }
            }
            Err(e) => tracing::warn!(error = %e, "presence push skipped"),
        }
    }

    async fn expire_loop(self, shutdown: CancellationToken) {
        loop {
            let now = crate::clock::now_ms();
            let (gone, next) = {
                let mut book = self.inner.book.lock().expect("presence lock");
                let gone = book.expire(now);
                (gone, book.next_deadline())
            };
            for user in gone {
                self.went_offline(&user, now).await;
            }
            let wait = next
                .map(|t| Duration::from_millis((t - now).max(1) as u64))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    async fn went_offline(&self, user: &str, now_ms: i64) {
        let saved = self.inner.exec.run(LastSeen { user_id: user.to_string(), now_ms }).await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, user, "could not store last seen");
        }
        // They may have come back while last seen was being written: then their "online" push
        // already went out and must not be overtaken by this stale "offline".
        let back =
            self.inner.book.lock().expect("presence lock").status(user) != PresenceStatus::Offline;
        if !back {
            self.announce(user, PresenceStatus::Offline);
            // Online on another node: co-members see that, not this node's offline.
            if self.effective(user) != PresenceStatus::Offline {
                return;
            }
            self.push(user, PresenceStatus::Offline, now_ms);
        }
    }
}

/// Everyone who shares at least one room with `user` (not `user`).
pub fn co_members(s: &impl Snapshot, user: &str) -> Result<HashSet<String>, StoreError> {
    let mut out = HashSet::new();
    for room in rooms::user_room_ids(s, user)? {
        for (member, _) in rooms::members(s, &room)? {
            if member != user {
                out.insert(member);
            }
        }
    }
    Ok(out)
}

/// Whether two users share a room.
pub fn share_a_room(s: &impl Snapshot, a: &str, b: &str) -> Result<bool, StoreError> {
    let mine: HashSet<String> = rooms::user_room_ids(s, a)?.into_iter().collect();
    Ok(rooms::user_room_ids(s, b)?.iter().any(|r| mine.contains(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_nodes_presence_combines_and_silent_nodes_are_forgotten() {
        use PresenceStatus::{Away, Offline, Online};
        let mut r = RemoteBook::new(Duration::from_millis(100));
        assert_eq!(r.status("u"), Offline);
        assert!(r.update(1, "u", Away, 0), "offline -> away");
        assert!(r.update(2, "u", Online, 0), "online on node 2 beats away on node 1");
        assert!(!r.update(1, "u", Online, 10), "still online");
        assert!(!r.update(2, "u", Offline, 10), "online on node 1 still");
        assert_eq!(r.status("u"), Online);
        // Node 1's list no longer has u; v appears.
        let list = HashMap::from([("v".to_string(), Away)]);
        let mut changed = r.replace(1, list, 20);
        changed.sort();
        assert_eq!(changed, ["u", "v"]);
        assert_eq!((r.status("u"), r.status("v")), (Offline, Away));
        // Node 2 silent since 10, node 1 since 20: at 115 only node 2 is forgotten.
        assert!(r.expire(115).is_empty(), "node 2 had nobody online");
        assert_eq!(r.expire(120), ["v"]);
        assert_eq!(r.status("v"), Offline);
        assert_eq!(best(Away, Online), Online);
        assert_eq!(best(Offline, Away), Away);
        // At most MAX_REMOTE_NODES nodes are remembered.
        for n in 0..MAX_REMOTE_NODES as u64 + 5 {
            r.update(100 + n, "w", Online, 200);
        }
        assert_eq!(r.nodes.len(), MAX_REMOTE_NODES);
    }

    #[test]
    fn online_through_grace_then_offline() {
        let mut b = PresenceBook::new(Duration::from_secs(15));
        assert_eq!(b.status("u"), PresenceStatus::Offline);
        assert_eq!(b.connected("u"), Some(PresenceStatus::Online));
        assert_eq!(b.connected("u"), None, "a second device changes nothing");
        b.disconnected("u", 1_000);
        assert_eq!(b.status("u"), PresenceStatus::Online);
        b.disconnected("u", 2_000);
        assert_eq!(b.next_deadline(), Some(17_000));
        assert!(b.expire(16_999).is_empty());
        assert_eq!(b.status("u"), PresenceStatus::Online, "inside the grace period");
        // Reconnecting inside the grace period is not a change.
        assert_eq!(b.connected("u"), None);
        b.disconnected("u", 20_000);
        assert_eq!(b.expire(35_000), vec!["u".to_string()]);
        assert_eq!(b.status("u"), PresenceStatus::Offline);
        assert_eq!(b.connected("u"), Some(PresenceStatus::Online));
    }

    #[test]
    fn away_is_set_by_the_client() {
        let mut b = PresenceBook::new(Duration::ZERO);
        assert_eq!(b.set_away("u", true), None, "offline users cannot be away");
        b.connected("u");
        assert_eq!(b.set_away("u", true), Some(PresenceStatus::Away));
        assert_eq!(b.set_away("u", true), None);
        assert_eq!(b.status("u"), PresenceStatus::Away);
        assert_eq!(b.set_away("u", false), Some(PresenceStatus::Online));
        assert_eq!(b.online_count(), 1);
    }
}

/// Change: a user went offline at `now_ms` (their last seen time).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LastSeen {
    /// The user.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// When they went offline.
    #[prost(int64, tag = "2")]
    pub now_ms: i64,
}

impl Change for LastSeen {
    type T = ();
    type E = StoreError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), StoreError> {
        if let Some(mut u) = users::user(&**ctx, &self.user_id)? {
            u.last_seen_ms = self.now_ms;
            users::put_user(ctx, &u)?;
        }
        Ok(Ok(()))
    }
}
