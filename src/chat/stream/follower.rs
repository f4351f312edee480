//! One room's events to one stream, in seq order, without gaps or duplicates.
//!
//! [`Cursor`] holds the rules and does no I/O (tested as a table below): what to do with an
//! event from the live ring, a `Lagged` notice or a page from the store, and when to stop.
//! [`Follower`] runs it: it reads the room's ring, asks the cursor, catches up from the store
//! in pages of [`CATCH_UP_PAGE`] and queues frames on the stream's [`Out`].
//!
//! Invariants: delivered seqs strictly increase; every seq after the start is delivered (a
//! gap in the ring, or the ring overtaking a slow follower, is filled from the store); a
//! member's own leave, kick or ban after their current join is the last event delivered.

use std::sync::Arc;

use tokio::sync::broadcast;
use tonic::Status;

use super::out::Out;
use crate::chat::hub::{RoomFeed, SharedEvent};
use crate::proto::{self, room_event::Kind, server_frame};
use crate::store::{self, events};

/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: usize = 256;

/// What the follower must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Already delivered (or older): drop it.
    Skip,
    /// The next seq: deliver it, then tell the cursor with [`Cursor::delivered`].
    Deliver,
    /// Events are missing: deliver the stored events below `before` first (then offer the
    /// live event again).
    CatchUp {
        /// Exclusive upper bound (`u64::MAX`: everything stored).
        before: u64,
    },
}

/// Whether to go on after a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Keep following.
    Go,
    /// The member's own removal was delivered: nothing of this room after it.
    Stop,
}

/// What reaches a follower.
#[derive(Debug, Clone, Copy)]
pub(super) enum Input<'a> {
    /// A committed event from the live ring.
    Live(&'a proto::RoomEvent),
    /// The ring overtook this follower: some live events were lost to it.
    Lagged,
    /// An event read from the store during a catch-up.
    Stored(&'a proto::RoomEvent),
}

/// The follower's rules, without I/O.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    /// Whose stream this is.
    pub(super) me: Arc<str>,
    /// The seq of the member's current join: their own removal before it is history.
    pub(super) joined_seq: u64,
    /// The last seq delivered (or the start point).
    pub(super) last: u64,
}

impl Cursor {
    /// What to do with `input`.
    pub(super) fn step(&self, input: Input<'_>) -> Step {
        match input {
            Input::Lagged => Step::CatchUp { before: u64::MAX },
            Input::Live(ev) | Input::Stored(ev) if ev.seq <= self.last => Step::Skip,
            Input::Live(ev) if ev.seq > self.last + 1 => Step::CatchUp { before: ev.seq },
            Input::Live(_) | Input::Stored(_) => Step::Deliver,
        }
    }

    /// Records that `ev` was delivered.
    pub(super) fn delivered(&mut self, ev: &proto::RoomEvent) -> Next {
        self.last = ev.seq;
        match &ev.kind {
            Some(Kind::Member(m))
                if *m.user_id == *self.me && (m.removed || m.left) && ev.seq > self.joined_seq =>
            {
                Next::Stop
            }
            _ => Next::Go,
        }
    }
}

/// Runs a [`Cursor`] over a room's ring and the store.
pub(super) struct Follower {
    pub(super) store: store::Store,
    pub(super) out: Out,
    pub(super) room_id: String,
    pub(super) cursor: Cursor,
    /// The member's `joined_seq` when they subscribed (`None`: not a member, a global admin
    /// reading along). A membership that ended with an event retention removed before it was
    /// delivered is caught by comparing it again.
    pub(super) member_since: Option<u64>,
}

impl Follower {
    /// Catches up from the start point, then follows the ring until the member's own removal,
    /// the ring closing or the stream ending. Cancel-safe at every await (a re-subscribe
    /// cancels it and reads [`Follower::cursor`] for where it got to).
    pub(super) async fn run(&mut self, feed: &mut broadcast::Receiver<RoomFeed>) {
        if self.catch_up(u64::MAX).await == Next::Stop {
            return;
        }
        loop {
            let event = match feed.recv().await {
                Ok(RoomFeed::Typing(user)) => {
                    if *user != *self.cursor.me
                        && !self
                            .out
                            .send(server_frame::Kind::Typing(proto::TypingUpdate {
                                room_id: self.room_id.clone(),
                                user_id: user.to_string(),
                            }))
                            .await
                    {
                        return;
                    }
                    continue;
                }
                Ok(RoomFeed::Event(ev)) => Some(ev),
                Err(broadcast::error::RecvError::Lagged(_)) => None,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let input = match &event {
                Some(ev) => Input::Live(ev),
                None => Input::Lagged,
            };
            if let Step::CatchUp { before } = self.cursor.step(input)
                && self.catch_up(before).await == Next::Stop
            {
                return;
            }
            // After a catch-up the live event is offered again: now the next seq, or old.
            if let Some(ev) = &event
                && self.cursor.step(Input::Live(ev)) == Step::Deliver
                && self.deliver(ev).await == Next::Stop
            {
                return;
            }
        }
    }

    /// Delivers stored events after the cursor and below `before`, page by page.
    async fn catch_up(&mut self, before: u64) -> Next {
        crate::metrics::hot().catch_ups.increment(1);
        loop {
            let page = self.store.read().and_then(|tx| {
                let first = events::first_seq(&tx, &self.room_id)?;
                let pruned = if first > self.cursor.last + 1 {
                    let last = events::last_seq(&tx, &self.room_id)?;
                    let now = store::rooms::member(&tx, &self.room_id, &self.cursor.me)?;
                    let still = self.member_since.is_none()
                        || now.map(|m| m.joined_seq) == self.member_since;
                    Some((first, last, still))
                } else {
                    None
                };
                let page = events::range(
                    &tx,
                    &self.room_id,
                    self.cursor.last,
                    before,
                    CATCH_UP_PAGE,
                    false,
                )?;
                Ok((pruned, page))
            });
            let (pruned, page) = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, room = %self.room_id, "catch-up read failed");
                    self.out.end_now(Status::unavailable("storage failure; reconnect and resume"));
                    return Next::Stop;
                }
            };
            // Retention dropped events this follower had not delivered yet (it lagged longer
            // than the retention window): say so as a new Subscribed, never a silent gap.
            if let Some((first_seq, last_seq, still_member)) = pruned {
                if !still_member {
                    // Their leave, kick or ban was among the removed events.
                    let st = Status::permission_denied("you are no longer a member of this room");
                    self.out.status_error(&st, &self.room_id, "").await;
                    return Next::Stop;
                }
                let frame =
                    proto::Subscribed { room_id: self.room_id.clone(), last_seq, first_seq };
                if !self.out.send(server_frame::Kind::Subscribed(frame)).await {
                    return Next::Stop;
                }
                self.cursor.last = first_seq - 1;
            }
            let (page, more) = page;
            let empty = page.is_empty();
            for ev in page {
                let ev = Arc::new(SharedEvent::new(ev));
                if self.cursor.step(Input::Stored(&ev)) == Step::Deliver
                    && self.deliver(&ev).await == Next::Stop
                {
                    return Next::Stop;
                }
            }
            if !more || empty {
                return Next::Go;
            }
        }
    }

    /// Queues `ev`, then moves the cursor (so a follower cancelled while it waits for queue
    /// space has not counted an event it did not queue).
    async fn deliver(&mut self, ev: &Arc<SharedEvent>) -> Next {
        if !self.out.send_event(ev.clone()).await {
            return Next::Stop;
        }
        crate::metrics::hot().deliveries.increment(1);
        self.cursor.delivered(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> proto::RoomEvent {
        proto::RoomEvent {
            seq,
            kind: Some(Kind::Message(proto::Message::default())),
            ..Default::default()
        }
    }

    fn member(seq: u64, user: &str, change: &str) -> proto::RoomEvent {
        let m = proto::MemberChanged {
            user_id: user.into(),
            joined: change == "joined",
            left: change == "left",
            removed: change == "removed" || change == "banned",
            banned: change == "banned",
            ..Default::default()
        };
        proto::RoomEvent { seq, kind: Some(Kind::Member(m)), ..Default::default() }
    }

    fn cursor(last: u64, joined_seq: u64) -> Cursor {
        Cursor { me: Arc::from("me"), joined_seq, last }
    }

    /// Every rule, as (cursor last, input, expected step).
    #[test]
    fn steps() {
        let table: &[(u64, Input<'_>, Step)] = &[
            // Live: the next seq is delivered; old ones skipped; a jump is filled first.
            (5, Input::Live(&message(6)), Step::Deliver),
            (5, Input::Live(&message(5)), Step::Skip),
            (5, Input::Live(&message(1)), Step::Skip),
            (5, Input::Live(&message(9)), Step::CatchUp { before: 9 }),
            (0, Input::Live(&message(1)), Step::Deliver),
            (0, Input::Live(&message(2)), Step::CatchUp { before: 2 }),
            // The ring overtook us: everything stored.
            (5, Input::Lagged, Step::CatchUp { before: u64::MAX }),
            // Store pages: anything after the cursor is delivered (pages start after it).
            (5, Input::Stored(&message(6)), Step::Deliver),
            (5, Input::Stored(&message(5)), Step::Skip),
            (5, Input::Stored(&message(7)), Step::Deliver),
        ];
        for (i, (last, input, want)) in table.iter().enumerate() {
            assert_eq!(cursor(*last, 0).step(*input), *want, "row {i}: last {last}, {input:?}");
        }
    }

    /// When delivery stops, as (joined_seq, event, expected next).
    #[test]
    fn stops_only_at_own_removal_after_the_current_join() {
        let table: &[(u64, proto::RoomEvent, Next)] = &[
            (3, message(10), Next::Go),
            (3, member(10, "me", "removed"), Next::Stop),
            (3, member(10, "me", "banned"), Next::Stop),
            (3, member(10, "me", "left"), Next::Stop),
            (3, member(10, "me", "joined"), Next::Go),
            (3, member(10, "other", "removed"), Next::Go),
            // An earlier removal, before the member rejoined at 12: history.
            (12, member(10, "me", "removed"), Next::Go),
            (10, member(10, "me", "removed"), Next::Go),
        ];
        for (i, (joined, ev, want)) in table.iter().enumerate() {
            let mut c = cursor(ev.seq - 1, *joined);
            assert_eq!(c.delivered(ev), *want, "row {i}");
            assert_eq!(c.last, ev.seq, "row {i}: the cursor moves");
        }
    }
}
