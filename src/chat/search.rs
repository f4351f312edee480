//! `Search`: the caller's rooms searched for messages with every word of a query, newest
//! first across rooms, a page at a time. Reads one snapshot; the index (`store::search`) is
//! kept by the writer in each message's own transaction, so nothing here lags.
//!
//! Across rooms: each room's matches come newest first from its own index (seq order is time
//! order within a room: `events::append`); the newest head of all rooms is taken, and only
//! that room is asked for its next match. A page costs one index walk per room for its first
//! match plus one per result; a page token is the last result's position, from which each
//! room finds its place again by bisecting its events by time.

use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use super::messages::{ChatError, mark_mine};
use super::ratelimit::RateLimiter;
use crate::auth::Principal;
use crate::proto::{self, room_event::Kind};
use crate::rooms::permissions::{self, Action};
use crate::rooms::service::{check_current, facts, load};
use crate::search::{self as rules, Position, QueryError};
use crate::store::{self, Snapshot, events, rooms, search::RoomSearch};

/// The search service. Cheap to clone.
#[derive(Clone)]
pub struct Search {
    store: store::Store,
    /// Per user (`[limits] search_rate_per_sec`, `search_burst`): each search reads the index
    /// of every room the user is in, so a client searching as its user types must not become
    /// a scan per key press. Forgets refilled buckets (bounded by the users searching in the
    /// last moments).
    limiter: Arc<Mutex<RateLimiter>>,
}

impl From<QueryError> for ChatError {
    fn from(e: QueryError) -> Self {
        ChatError::InvalidArgument(e.to_string())
    }
}

/// The room being searched, its next match (the heap holds its position) and the event.
struct Room {
    search: RoomSearch,
    head: Option<proto::RoomEvent>,
}

impl Search {
    /// The service over `store`, `rate` searches per second per user with `burst`.
    pub fn new(store: store::Store, rate: f64, burst: u32) -> Search {
        let limiter = RateLimiter::new(rate, burst);
        Search { store, limiter: Arc::new(Mutex::new(limiter)) }
    }

    /// `Search`, as API.md and docs/protocol.md describe it.
    pub fn search(
        &self,
        who: &Principal,
        r: &proto::SearchRequest,
        now_ms: i64,
    ) -> Result<proto::SearchResponse, ChatError> {
        let words = rules::parse_query(&r.query)?;
        let after = Position::from_token(&r.page_token)?;
        let limit = match r.limit {
            0 => rules::DEFAULT_LIMIT,
            n => n.min(rules::MAX_LIMIT),
        } as usize;
        if let Err(wait) = self.limiter.lock().expect("search limiter").take(&who.user_id, now_ms) {
            return Err(ChatError::ResourceExhausted(format!(
                "searching too fast; retry in {} ms",
                wait.as_millis().max(1)
            )));
        }
        let tx = self.store.read()?;
        check_current(&tx, who)?;
        let ids = if r.room_id.is_empty() {
            rooms::user_room_ids(&tx, &who.user_id)?
        } else {
            vec![r.room_id.clone()]
        };
        let mut rooms = Vec::with_capacity(ids.len());
        let mut heap = BinaryHeap::with_capacity(ids.len());
        for id in &ids {
            let l = load(&tx, who, id)?;
            match permissions::may(l.actor, Action::Search, facts(&l.room)) {
                Ok(()) => {}
                // One room asked for: why not. All of the caller's rooms: the others.
                Err(denied) if !r.room_id.is_empty() => return Err(denied.into()),
                Err(_) => continue,
            }
            let at_most = match &after {
                None => u64::MAX,
                Some(p) if p.room_id == *id => p.seq.saturating_sub(1),
                Some(p) => events::last_at_or_before(&tx, id, p.at_ms)?,
            };
            let mut room = Room { search: RoomSearch::new(id, &words), head: None };
            if let Some(pos) = advance(&tx, &mut room, at_most, after.as_ref())? {
                heap.push((pos, rooms.len()));
            }
            rooms.push(room);
        }
        let mut hits = Vec::with_capacity(limit);
        let mut last = None;
        while hits.len() < limit {
            let Some((pos, i)) = heap.pop() else { break };
            let room = &mut rooms[i];
            let Some(ev) = room.head.take() else { break };
            if let Some(next) = advance(&tx, room, pos.seq.saturating_sub(1), None)? {
                heap.push((next, i));
            }
            let Some(Kind::Message(mut message)) = ev.kind else { continue };
            mark_mine(&tx, &who.user_id, &mut message)?;
            hits.push(proto::SearchHit {
                room_id: pos.room_id.clone(),
                seq: pos.seq,
                at_ms: pos.at_ms,
                message: Some(message),
            });
            last = Some(pos);
        }
        let next_page_token = match (heap.is_empty(), last) {
            (false, Some(pos)) => pos.token(),
            _ => String::new(),
        };
        Ok(proto::SearchResponse { hits, next_page_token })
    }
}

/// Finds `room`'s newest live match at or below `at_most` (and before `after`, when given),
/// keeps its event as the room's head and returns its position.
fn advance(
    s: &impl Snapshot,
    room: &mut Room,
    mut at_most: u64,
    after: Option<&Position>,
) -> Result<Option<Position>, ChatError> {
    while at_most > 0 {
        let Some(seq) = room.search.next(s, at_most)? else { return Ok(None) };
        at_most = seq - 1;
        let Some(ev) = events::get(s, room.search.room(), seq)? else { continue };
        let live = matches!(&ev.kind, Some(Kind::Message(m)) if !m.deleted);
        let pos = Position { at_ms: ev.at_ms, room_id: room.search.room().to_string(), seq };
        // Same time as the token's position but a later room: on the page before.
        if live && after.is_none_or(|a| pos < *a) {
            room.head = Some(ev);
            return Ok(Some(pos));
        }
    }
    Ok(None)
}
