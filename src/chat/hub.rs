//! The fan-out hub: the one owner of who listens to what.
//!
//! - Room feeds: one `broadcast` ring per room with live subscribers. The writer publishes each
//!   committed event once ([`SharedEvent`], one `Arc` shared by every subscriber, encoded for
//!   the wire once, by whichever subscriber delivers it first); a subscriber is a cursor into
//!   the ring, so memory is per room, not per subscriber, whatever the publish rate. A
//!   subscriber that falls more than [`ROOM_RING`] events behind gets `Lagged` and catches up
//!   from the store (see `stream`); nothing is lost and the room never waits for it.
//! - User signals: per-user `broadcast` of things every stream of that user must hear (revoked
//!   tokens, notifications, presence, read markers).
//! - Stream counts per user, for the per-user stream limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::proto::{self, RoomEvent};
use crate::store::Committed;

/// Events a room's ring holds for slow subscribers before they must catch up from the store.
pub const ROOM_RING: usize = 1024;
/// Signals a user's ring holds.
const USER_RING: usize = 256;

/// What a room's ring carries: committed events (each once, shared), and ephemeral typing
/// notices (never stored, lost by a subscriber that lags, which is fine for typing).
#[derive(Debug, Clone)]
pub enum RoomFeed {
    /// A committed room event.
    Event(Arc<SharedEvent>),
    /// A member is typing (their user id).
    Typing(Arc<str>),
}

/// A committed event as every live subscriber of its room delivers it: the event, and its
/// `ServerFrame { event }` wire encoding, made once on first use and then shared, so a
/// delivery to a thousand streams costs one encode and no clone (it was one clone and one
/// encode per stream: about 0.4 µs of the 5.5 µs a delivery cost, docs/PERFORMANCE.md).
#[derive(Debug)]
pub struct SharedEvent {
    event: RoomEvent,
    frame: std::sync::OnceLock<bytes::Bytes>,
}

impl SharedEvent {
    /// Wraps a committed event.
    pub fn new(event: RoomEvent) -> SharedEvent {
        SharedEvent { event, frame: std::sync::OnceLock::new() }
    }

    /// The protobuf encoding of `ServerFrame { kind: event }` (field 1).
    pub fn frame_bytes(&self) -> &bytes::Bytes {
        self.frame.get_or_init(|| {
            let mut buf = Vec::with_capacity(prost::Message::encoded_len(&self.event) + 8);
            prost::encoding::message::encode(1, &self.event, &mut buf);
            bytes::Bytes::from(buf)
        })
    }
}

impl std::ops::Deref for SharedEvent {
    type Target = RoomEvent;
    fn deref(&self) -> &RoomEvent {
        &self.event
    }
}

/// Something every open stream of one user must act on.
#[derive(Debug, Clone)]
pub enum UserSignal {
    /// Tokens revoked (logout everywhere, disabled, role changed): end with UNAUTHENTICATED.
    Revoked(&'static str),
    /// A frame to forward as is (notification, presence, read marker).
    Frame(Arc<proto::ServerFrame>),
}

/// The hub. Cheap to share (`Arc`).
#[derive(Default)]
pub struct Hub {
    rooms: Mutex<HashMap<String, broadcast::Sender<RoomFeed>>>,
    users: Mutex<HashMap<String, broadcast::Sender<UserSignal>>>,
    /// Each user's open streams, with the call that ends one at once on revocation.
    streams: Mutex<HashMap<String, Vec<(u64, EndStream)>>>,
    next_stream: std::sync::atomic::AtomicU64,
}

/// Ends one stream at once, with a reason (its queued frames are dropped).
pub type EndStream = Box<dyn Fn(&'static str) + Send + Sync>;

/// Holds one of a user's stream slots; released on drop.
pub struct StreamSlot {
    hub: Arc<Hub>,
    user: String,
    id: u64,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = lock(&self.hub.streams);
        if let Some(list) = streams.get_mut(&self.user) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                streams.remove(&self.user);
            }
        }
    }
}

/// The hub's maps stay usable after a panic elsewhere (a publisher bug must not turn every
/// later subscribe into a panic): their contents are consistent at every unlock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Hub {
    /// A new, empty hub.
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Publishes committed events (called by the writer, in commit order). Never blocks.
    /// Revocations go first: a stream ends before it could deliver anything of the batch
    /// that revoked it.
    pub fn publish(&self, committed: &Committed) {
        for (user, why) in &committed.revoked {
            self.signal_user(user, UserSignal::Revoked(why));
        }
        {
            let mut rooms = lock(&self.rooms);
            for ev in &committed.events {
                if let Some(tx) = rooms.get(&ev.room_id)
                    && tx.send(RoomFeed::Event(Arc::new(SharedEvent::new(ev.clone())))).is_err()
                {
                    // Nobody listens any more.
                    rooms.remove(&ev.room_id);
                }
            }
        }
        for (user, frame) in &committed.signals {
            self.signal_user(user, UserSignal::Frame(Arc::new(frame.clone())));
        }
    }

    /// Tells a room's live subscribers that `user_id` is typing (no-op when nobody listens).
    pub fn typing(&self, room_id: &str, user_id: &str) {
        let rooms = lock(&self.rooms);
        if let Some(tx) = rooms.get(room_id) {
            let _ = tx.send(RoomFeed::Typing(Arc::from(user_id)));
        }
    }

    /// A live feed of a room's committed events, from now on.
    pub fn subscribe_room(&self, room_id: &str) -> broadcast::Receiver<RoomFeed> {
        let mut rooms = lock(&self.rooms);
        rooms
            .entry(room_id.to_string())
            .or_insert_with(|| broadcast::channel(ROOM_RING).0)
            .subscribe()
    }

    /// Drops a room's ring if nobody follows it (after a refused subscription took one), so
    /// made-up room ids never leave rings behind.
    pub fn release_room(&self, room_id: &str) {
        let mut rooms = lock(&self.rooms);
        if rooms.get(room_id).is_some_and(|tx| tx.receiver_count() == 0) {
            rooms.remove(room_id);
        }
    }

    /// A feed of signals for one user's streams.
    pub fn subscribe_user(&self, user_id: &str) -> broadcast::Receiver<UserSignal> {
        let mut users = lock(&self.users);
        users
            .entry(user_id.to_string())
            .or_insert_with(|| broadcast::channel(USER_RING).0)
            .subscribe()
    }

    /// Sends a signal to every open stream of a user (no-op when none is open). A revocation
    /// also ends each of the user's streams at once, without waiting for a session that may
    /// be busy writing to a slow client.
    pub fn signal_user(&self, user_id: &str, signal: UserSignal) {
        if let UserSignal::Revoked(why) = &signal
            && let Some(list) = lock(&self.streams).get(user_id)
        {
            for (_, end) in list {
                end(why);
            }
        }
        let mut users = lock(&self.users);
        if let Some(tx) = users.get(user_id)
            && tx.send(signal).is_err()
        {
            users.remove(user_id);
        }
    }

    /// Takes one of the user's stream slots, or `None` when they already hold `max`. `end` is
    /// called if the user's tokens are revoked while the stream is open.
    pub fn open_stream(
        self: &Arc<Self>,
        user_id: &str,
        max: usize,
        end: EndStream,
    ) -> Option<StreamSlot> {
        let mut streams = lock(&self.streams);
        let list = streams.entry(user_id.to_string()).or_default();
        if list.len() >= max {
            return None;
        }
        let id = self.next_stream.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        list.push((id, end));
        Some(StreamSlot { hub: self.clone(), user: user_id.to_string(), id })
    }

    /// How many rooms have a live feed (a ring) right now.
    pub fn room_feeds(&self) -> usize {
        lock(&self.rooms).len()
    }

    /// How many streams are open, all users.
    pub fn open_streams_total(&self) -> usize {
        lock(&self.streams).values().map(Vec::len).sum()
    }

    /// How many streams the user has open.
    pub fn open_streams(&self, user_id: &str) -> usize {
        lock(&self.streams).get(user_id).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(room: &str, seq: u64) -> RoomEvent {
        RoomEvent { room_id: room.into(), seq, ..Default::default() }
    }

    fn batch(events: Vec<RoomEvent>) -> Committed {
        Committed { events, ..Default::default() }
    }

    fn seq(f: RoomFeed) -> u64 {
        match f {
            RoomFeed::Event(e) => e.seq,
            RoomFeed::Typing(_) => panic!("typing"),
        }
    }

    #[test]
    fn a_shared_event_encodes_as_its_server_frame() {
        let event = RoomEvent {
            room_id: "r1".into(),
            seq: 7,
            at_ms: 1_700_000_000_000,
            actor_id: "u1".into(),
            kind: Some(proto::room_event::Kind::Message(proto::Message {
                text: "hello".into(),
                mention_user_ids: vec!["u2".into()],
                ..Default::default()
            })),
        };
        let frame =
            proto::ServerFrame { kind: Some(proto::server_frame::Kind::Event(event.clone())) };
        let shared = SharedEvent::new(event);
        assert_eq!(&shared.frame_bytes()[..], &prost::Message::encode_to_vec(&frame)[..]);
        assert_eq!(shared.seq, 7);
    }

    #[tokio::test]
    async fn events_reach_only_that_rooms_subscribers_in_order() {
        let hub = Hub::new();
        let mut a = hub.subscribe_room("a");
        let mut b = hub.subscribe_room("b");
        hub.publish(&batch(vec![ev("a", 1), ev("b", 1), ev("a", 2), ev("c", 1)]));
        assert_eq!(seq(a.recv().await.unwrap()), 1);
        assert_eq!(seq(a.recv().await.unwrap()), 2);
        assert_eq!(seq(b.recv().await.unwrap()), 1);
        assert!(a.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_instead_of_blocking_the_room() {
        let hub = Hub::new();
        let mut slow = hub.subscribe_room("a");
        for seq in 1..=(ROOM_RING as u64 + 10) {
            hub.publish(&batch(vec![ev("a", seq)]));
        }
        assert!(matches!(slow.recv().await, Err(broadcast::error::RecvError::Lagged(10))));
        assert_eq!(self::seq(slow.recv().await.unwrap()), 11);
    }

    #[test]
    fn stream_slots_are_bounded_and_released() {
        let hub = Hub::new();
        let none = || -> EndStream { Box::new(|_| {}) };
        let s1 = hub.open_stream("u", 2, none()).unwrap();
        let _s2 = hub.open_stream("u", 2, none()).unwrap();
        assert!(hub.open_stream("u", 2, none()).is_none());
        drop(s1);
        assert_eq!(hub.open_streams("u"), 1);
        assert!(hub.open_stream("u", 2, none()).is_some());
    }
}
