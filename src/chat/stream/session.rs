//! The session of one stream: reads client frames and acts on them, forwards the user's
//! signals (notifications, presence, read markers, revocation), ends the stream at token
//! expiry or shutdown, and owns the stream's followers.
//!
//! Bounded: sends accepted from the client wait for their durable result in `pending`, in
//! order, at most [`MAX_PENDING_SENDS`]; while that many wait, the session reads no further
//! client frames (a retry flood answered from snapshots included), so what a stream may hold
//! is bounded whatever the client sends. Followers: at most `max_subscriptions`, one task each.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::StreamDeps;
use super::follower::{Cursor, Follower};
use super::out::Out;
use crate::auth::Principal;
use crate::chat::hub::UserSignal;
use crate::chat::messages::ChatError;
use crate::proto::{self, client_frame, server_frame};
use crate::rooms::permissions::{self, Action};
use crate::rooms::service::{facts, load};
use crate::store::{events, rooms};

/// Sends of one stream waiting for their durable result at most; at the bound the session
/// stops reading client frames until one is answered.
pub const MAX_PENDING_SENDS: usize = 64;

/// A send awaiting its result: `(room_id, client_message_id, result)`.
type PendingSend = BoxFuture<'static, (String, String, Result<proto::Message, ChatError>)>;

/// Queues the answer to one send: its `SendAck`, or a `StreamError` carrying its
/// `client_message_id`. `false` if the stream is over.
async fn answer(
    out: &Out,
    room_id: String,
    cmid: String,
    result: Result<proto::Message, ChatError>,
) -> bool {
    match result {
        Ok(m) => {
            let ack = proto::SendAck { client_message_id: cmid, room_id: m.room_id, seq: m.seq };
            out.send(server_frame::Kind::SendAck(ack)).await
        }
        Err(e) => out.error(&e, &room_id, &cmid).await,
    }
}

/// A running follower: cancel it, then await it for where it got to.
struct Following {
    cancel: CancellationToken,
    task: JoinHandle<Option<u64>>,
}

pub(super) struct Session {
    deps: StreamDeps,
    who: Principal,
    out: Out,
    follows: HashMap<String, Following>,
    pending: FuturesOrdered<PendingSend>,
    user_rx: broadcast::Receiver<UserSignal>,
    /// Keeps the user online while this stream is open.
    _online: crate::presence::Online,
}

impl Session {
    pub(super) fn new(deps: StreamDeps, who: Principal, out: Out) -> Session {
        let user_rx = deps.hub.subscribe_user(&who.user_id);
        let online = deps.presence.connect(&who.user_id);
        Session {
            deps,
            who,
            out,
            follows: HashMap::new(),
            pending: FuturesOrdered::new(),
            user_rx,
            _online: online,
        }
    }

    /// Ends the stream if the token was revoked without this stream hearing about it.
    fn revoked(&self) -> bool {
        match self.deps.accounts.is_current(&self.who) {
            Ok(current) => {
                if !current {
                    self.out.end_after_queue(Status::unauthenticated(
                        "token has been revoked; log in again",
                    ));
                }
                !current
            }
            Err(e) => {
                tracing::warn!(error = %e, "revocation check failed");
                false
            }
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbound: impl Stream<Item = Result<proto::ClientFrame, Status>> + Send + Unpin,
    ) {
        // A logout or disable that committed between authentication and our subscription to
        // the user's signals was not heard: check once now.
        if self.revoked() {
            return;
        }
        // Revocations reach streams at once through the hub (published by the writer with the
        // commit that made them); re-reading the token version every `token_recheck` is the
        // backstop if that ever fails. Each stream's first check is at a random point within
        // the first period, so thousands of streams do not all read at once.
        let every = self.deps.token_recheck;
        let first = every.mul_f64(rand::random::<f64>());
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // One timer for the token's expiry, reset only when Reauthenticate moves it: a new
        // timer per frame would be a timer-wheel insert and removal for every frame.
        let until = |at_ms: i64| {
            let ms = (at_ms - crate::clock::now_ms()).max(0) as u64;
            tokio::time::Instant::now() + Duration::from_millis(ms)
        };
        let mut expiry_at_ms = self.who.expires_at_ms;
        let expiry = tokio::time::sleep_until(until(expiry_at_ms));
        tokio::pin!(expiry);
        loop {
            if self.who.expires_at_ms != expiry_at_ms {
                expiry_at_ms = self.who.expires_at_ms;
                expiry.as_mut().reset(until(expiry_at_ms));
            }
            tokio::select! {
                frame = inbound.next(), if self.pending.len() < MAX_PENDING_SENDS => match frame {
                    Some(Ok(f)) => {
                        if !self.handle(f).await {
                            break;
                        }
                    }
                    Some(Err(status)) => {
                        // A frame that does not decode: say so; the stream lives on if the
                        // transport can still deliver frames.
                        let code = match status.code() {
                            tonic::Code::OutOfRange => tonic::Code::ResourceExhausted,
                            tonic::Code::Internal => tonic::Code::InvalidArgument,
                            c => c,
                        };
                        let st = Status::new(code, format!("frame does not decode: {}", status.message()));
                        if !self.out.status_error(&st, "", "").await {
                            break;
                        }
                    }
                    // The client closed its side: answer the sends it made, then end.
                    None => {
                        self.answer_pending().await;
                        break;
                    }
                },
                Some((room_id, cmid, result)) = self.pending.next(), if !self.pending.is_empty() => {
                    if !answer(&self.out, room_id, cmid, result).await {
                        break;
                    }
                }
                () = &mut expiry => {
                    self.out.end_after_queue(Status::unauthenticated(
                        "access token expired; send Reauthenticate with a fresh token before expiry",
                    ));
                    break;
                }
                signal = self.user_rx.recv() => match signal {
                    // Ends delivery at once, queued frames included.
                    Ok(UserSignal::Revoked(why)) => {
                        self.out.end_now(Status::unauthenticated(why));
                        break;
                    }
                    Ok(UserSignal::Frame(frame)) => {
                        if let Some(kind) = frame.kind.clone()
                            && !self.out.send(kind).await
                        {
                            break;
                        }
                    }
                    // Signals were lost: a revocation may have been among them.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if self.revoked() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = recheck.tick() => {
                    if self.revoked() {
                        break;
                    }
                }
                () = self.deps.shutdown.cancelled() => {
                    // Sends already accepted are committed: their acks go out first.
                    self.answer_pending().await;
                    let _ = self.out.send(server_frame::Kind::GoingAway(proto::GoingAway {
                        reason: "server is shutting down; reconnect and resume with after_seq".into(),
                    })).await;
                    self.out.end_after_queue(Status::unavailable("server is shutting down"));
                    break;
                }
                () = self.out.fatal.cancelled() => break,
                () = self.out.closed() => break,
            }
        }
        for (_, f) in self.follows.drain() {
            f.cancel.cancel();
        }
    }

    /// Waits for every pending send and queues its answer (until the stream ends).
    async fn answer_pending(&mut self) {
        while let Some((room_id, cmid, result)) = self.pending.next().await {
            if !answer(&self.out, room_id, cmid, result).await {
                return;
            }
        }
    }

    /// Handles one frame; `false` ends the stream.
    async fn handle(&mut self, frame: proto::ClientFrame) -> bool {
        use client_frame::Kind as F;
        match frame.kind {
            Some(F::Subscribe(s)) => self.subscribe(s).await,
            Some(F::Unsubscribe(u)) => {
                // Waits for the follower: nothing of the room is queued after this.
                self.stop_following(&u.room_id).await;
                true
            }
            Some(F::Send(s)) => self.send(s).await,
            Some(F::Ping(p)) => {
                self.out.send(server_frame::Kind::Pong(proto::Pong { nonce: p.nonce })).await
            }
            Some(F::Reauthenticate(r)) => self.reauthenticate(&r.access_token).await,
            Some(F::Typing(t)) => self.typing(&t.room_id).await,
            Some(F::MarkRead(m)) => {
                let now = crate::clock::now_ms();
                match self.deps.messages.mark_read(&self.who, &m.room_id, m.seq, now).await {
                    // The new marker reaches every stream of the user, this one included.
                    Ok(()) => true,
                    Err(e) => self.out.error(&e, &m.room_id, "").await,
                }
            }
            Some(F::SetPresence(p)) => match proto::PresenceStatus::try_from(p.status) {
                Ok(proto::PresenceStatus::Online) => self.set_away(false).await,
                Ok(proto::PresenceStatus::Away) => self.set_away(true).await,
                _ => {
                    let st = Status::invalid_argument(format!(
                        "SetPresence status {} is not ONLINE or AWAY",
                        p.status
                    ));
                    self.out.status_error(&st, "", "").await
                }
            },
            None => {
                let st = Status::invalid_argument("empty frame: set one of the ClientFrame kinds");
                self.out.status_error(&st, "", "").await
            }
        }
    }

    /// `SetPresence`. Changes fan out to every room mate: at most one per user every 2 s (the
    /// typing gate, under a key no room id can take).
    async fn set_away(&mut self, away: bool) -> bool {
        let now = crate::clock::now_ms();
        let allowed = self.deps.typing.lock().expect("typing lock").allow(
            &self.who.user_id,
            "\0presence",
            now,
        );
        if !allowed {
            let st = Status::resource_exhausted("presence changes are limited to one per 2 s");
            return self.out.status_error(&st, "", "").await;
        }
        self.deps.presence.set_away(&self.who.user_id, away);
        true
    }

    /// `Typing`: members who may post; at most one per user and room every 2 s goes out;
    /// never stored.
    async fn typing(&mut self, room_id: &str) -> bool {
        let allowed = (|| -> Result<(), ChatError> {
            let tx = self.deps.messages.store().read()?;
            let l = load(&tx, &self.who, room_id)?;
            permissions::may(l.actor, Action::Post, facts(&l.room))?;
            Ok(())
        })();
        if let Err(e) = allowed {
            return self.out.error(&e, room_id, "").await;
        }
        let now = crate::clock::now_ms();
        if self.deps.typing.lock().expect("typing lock").allow(&self.who.user_id, room_id, now) {
            self.deps.hub.typing(room_id, &self.who.user_id);
        }
        true
    }

    async fn reauthenticate(&mut self, token: &str) -> bool {
        match self.deps.accounts.authenticate(token, crate::clock::now_ms()) {
            Ok(p) if p.user_id == self.who.user_id => {
                self.who = p;
                true
            }
            Ok(_) => {
                let st = Status::unauthenticated("Reauthenticate token is for another user");
                self.out.status_error(&st, "", "").await
            }
            Err(e) => self.out.status_error(&Status::from(e), "", "").await,
        }
    }

    /// `Send`: refusals are answered at once; an accepted send (or a retry, answered from a
    /// snapshot) waits in `pending` for its durable result, which the run loop turns into a
    /// `SendAck` or `StreamError` in the order the sends came.
    async fn send(&mut self, s: proto::Send) -> bool {
        let now = crate::clock::now_ms();
        match self.deps.messages.submit_send(&self.who, &s, now).await {
            Ok(done) => {
                let (room_id, cmid) = (s.room_id, s.client_message_id);
                self.pending.push_back(done.map(move |r| (room_id, cmid, r)).boxed());
                true
            }
            Err(e) => self.out.error(&e, &s.room_id, &s.client_message_id).await,
        }
    }

    /// Stops the room's follower, if any, and returns the last seq it delivered. The
    /// follower ends at its next await; only then is it sure to queue nothing more.
    async fn stop_following(&mut self, room_id: &str) -> Option<u64> {
        let f = self.follows.remove(room_id)?;
        f.cancel.cancel();
        f.task.await.ok().flatten()
    }

    async fn subscribe(&mut self, s: proto::Subscribe) -> bool {
        if !self.follows.contains_key(&s.room_id)
            && self.follows.len() >= self.deps.max_subscriptions
        {
            let st = Status::resource_exhausted(format!(
                "this stream already follows {} rooms, the most allowed",
                self.deps.max_subscriptions
            ));
            return self.out.status_error(&st, &s.room_id, "").await;
        }
        // A subscription to a room this stream already follows continues after what the old
        // follower delivered: on one stream a room's seqs never go backwards. The old follower
        // is stopped before the snapshot below, so a removal it might have delivered is either
        // before the snapshot (refused there) or after it (the new follower delivers it).
        let delivered = self.stop_following(&s.room_id).await;
        // The feed first, then one snapshot for the permission, the last seq and the member's
        // join: every event committed after the snapshot is in the feed (followers drop what
        // they already delivered), and a kick committed before the snapshot is refused here
        // rather than followed forever.
        if let Some(a) = s.after_seq
            && let Err(e) = self.deps.messages.await_seq(&s.room_id, a).await
        {
            return self.out.error(&e, &s.room_id, "").await;
        }
        let feed = self.deps.hub.subscribe_room(&s.room_id);
        let start = (|| -> Result<(u64, u64, u64, Option<u64>), ChatError> {
            let tx = self.deps.messages.store().read()?;
            let l = load(&tx, &self.who, &s.room_id)?;
            permissions::may(l.actor, Action::Read, facts(&l.room))?;
            let last = events::last_seq(&tx, &s.room_id)?;
            // A member stops at their own removal after their current join; for anyone else
            // (a global admin reading along) removals before now are history.
            let member = rooms::member(&tx, &s.room_id, &self.who.user_id)?.map(|m| m.joined_seq);
            let joined = member.unwrap_or(last);
            Ok((last, joined, events::first_seq(&tx, &s.room_id)?, member))
        })();
        let (last_seq, joined_seq, first_seq, member_since) = match start {
            Ok(v) => v,
            Err(e) => {
                // Made-up or forbidden room ids leave no ring behind in the hub.
                drop(feed);
                self.deps.hub.release_room(&s.room_id);
                return self.out.error(&e, &s.room_id, "").await;
            }
        };
        let from = match s.after_seq {
            Some(a) if a > last_seq => {
                let st = Status::invalid_argument(format!(
                    "after_seq {a} is beyond the room's last seq {last_seq}"
                ));
                return self.out.status_error(&st, &s.room_id, "").await;
            }
            Some(a) => a,
            None => last_seq,
        };
        // Below the retained range the replay starts at the first retained event; Subscribed's
        // first_seq tells the client what it cannot have.
        let from = from.max(delivered.unwrap_or(0)).max(first_seq - 1);
        if !self
            .out
            .send(server_frame::Kind::Subscribed(proto::Subscribed {
                room_id: s.room_id.clone(),
                last_seq,
                first_seq,
            }))
            .await
        {
            return false;
        }
        let cancel = CancellationToken::new();
        let mut follower = Follower {
            store: self.deps.messages.store().clone(),
            out: self.out.clone(),
            room_id: s.room_id.clone(),
            cursor: Cursor { me: self.who.user_id.as_str().into(), joined_seq, last: from },
            member_since,
        };
        let stop = cancel.clone();
        let task = self.deps.tasks.spawn(async move {
            let mut feed = feed;
            tokio::select! {
                () = follower.run(&mut feed) => {}
                () = stop.cancelled() => {}
            }
            follower.cursor.last
        });
        self.follows.insert(s.room_id, Following { cancel, task });
        true
    }
}
