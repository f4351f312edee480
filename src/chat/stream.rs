//! One `Connect` stream: reads client frames, runs one follower task per subscribed room, and
//! writes server frames into one bounded outbound queue.
//!
//! Backpressure: the outbound queue holds [`OUT_QUEUE`] frames (each at most a message of a
//! few KiB). When the client reads slowly the queue fills, the room followers wait, their
//! cursors in the room rings fall behind, and once a ring has moved past them they catch up
//! from the store and rejoin the live feed: the room and its senders never wait for a slow
//! reader, and no event is lost or duplicated (followers deliver strictly increasing seqs).
//! A follower that cannot hand over a frame for `stuck_stream_timeout` ends the stream with
//! `RESOURCE_EXHAUSTED`; the client resumes with `after_seq` on reconnect.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

use super::hub::{Hub, RoomFeed, StreamSlot, UserSignal};
use super::messages::{ChatError, Messages};
use crate::auth::{Accounts, Principal};
use crate::proto::{self, client_frame, room_event::Kind, server_frame};
use crate::rooms::permissions::{self, Action};
use crate::rooms::service::{facts, load};
use crate::store::{events, rooms};

/// Outbound frames queued per stream before followers wait.
pub const OUT_QUEUE: usize = 64;
/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: usize = 256;

/// What every stream needs from the server.
#[derive(Clone)]
pub struct StreamDeps {
    /// Sends, history.
    pub messages: Messages,
    /// Token checks for `Reauthenticate`.
    pub accounts: Accounts,
    /// Live feeds.
    pub hub: Arc<Hub>,
    /// Who is online.
    pub presence: crate::presence::Presence,
    /// Typing notices per user and room.
    pub typing: Arc<Mutex<super::ratelimit::TypingGate>>,
    /// Server shutdown: streams say `GoingAway` and end.
    pub shutdown: CancellationToken,
    /// Rooms per stream.
    pub max_subscriptions: usize,
    /// Streams per user.
    pub max_streams_per_user: usize,
    /// Outbound stuck deadline.
    pub stuck_timeout: Duration,
}

/// The response stream: frames from the queue, then the final status (if any). A fatal end
/// (stuck outbound) jumps the queue.
pub struct OutStream {
    rx: mpsc::Receiver<proto::ServerFrame>,
    fatal: Pin<Box<WaitForCancellationFutureOwned>>,
    status: Arc<Mutex<Option<Status>>>,
    done: bool,
    _slot: StreamSlot,
}

impl Stream for OutStream {
    type Item = Result<proto::ServerFrame, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.fatal.as_mut().poll(cx).is_ready() {
            self.done = true;
            let st = self.status.lock().expect("status lock").take();
            return Poll::Ready(Some(Err(
                st.unwrap_or_else(|| Status::unavailable("stream ended"))
            )));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(f)) => Poll::Ready(Some(Ok(f))),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.status.lock().expect("status lock").take().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Shared between a session and its followers.
#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<proto::ServerFrame>,
    status: Arc<Mutex<Option<Status>>>,
    fatal: CancellationToken,
    stuck: Duration,
}

impl Out {
    /// Queues a frame; `false` if the stream is over (closed, or stuck past the deadline, which
    /// ends it).
    async fn send(&self, kind: server_frame::Kind) -> bool {
        let frame = proto::ServerFrame { kind: Some(kind) };
        match tokio::time::timeout(self.stuck, self.tx.send(frame)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.end_now(Status::resource_exhausted(
                    "stream closed: the client did not read for too long; reconnect and resume with after_seq",
                ));
                false
            }
        }
    }

    /// Ends the stream at once with `status`, ahead of queued frames.
    fn end_now(&self, status: Status) {
        self.status.lock().expect("status lock").get_or_insert(status);
        self.fatal.cancel();
    }

    /// Ends the stream with `status` after the frames already queued.
    fn end_after_queue(&self, status: Status) {
        self.status.lock().expect("status lock").get_or_insert(status);
    }

    async fn error(&self, e: &ChatError, room_id: &str, cmid: &str) -> bool {
        let status = crate::api::status::chat_status(e);
        self.send(server_frame::Kind::Error(stream_error(&status, room_id, cmid))).await
    }
}

/// The wire `StreamError` for a status.
pub fn stream_error(status: &Status, room_id: &str, cmid: &str) -> proto::StreamError {
    proto::StreamError {
        code: code_name(status.code()).into(),
        message: status.message().into(),
        client_message_id: cmid.into(),
        room_id: room_id.into(),
    }
}

/// The gRPC status name (`PERMISSION_DENIED`, ...), as `StreamError.code` carries it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Opens a stream for `who`: takes a stream slot (or `RESOURCE_EXHAUSTED`), starts the
/// session task, and returns the response stream.
pub fn open(
    deps: StreamDeps,
    who: Principal,
    inbound: impl Stream<Item = Result<proto::ClientFrame, Status>> + Send + Unpin + 'static,
) -> Result<OutStream, Status> {
    let slot = deps.hub.open_stream(&who.user_id, deps.max_streams_per_user).ok_or_else(|| {
        Status::resource_exhausted(format!(
            "too many open streams for this user (at most {}); close one first",
            deps.max_streams_per_user
        ))
    })?;
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let fatal = CancellationToken::new();
    let status = Arc::new(Mutex::new(None));
    let out = Out { tx, status: status.clone(), fatal: fatal.clone(), stuck: deps.stuck_timeout };
    let user_rx = deps.hub.subscribe_user(&who.user_id);
    let online = deps.presence.connect(&who.user_id);
    let session = Session { deps, who, out, follows: HashMap::new(), user_rx, _online: online };
    tokio::spawn(session.run(inbound));
    Ok(OutStream { rx, fatal: Box::pin(fatal.cancelled_owned()), status, done: false, _slot: slot })
}

struct Session {
    deps: StreamDeps,
    who: Principal,
    out: Out,
    follows: HashMap<String, CancellationToken>,
    user_rx: broadcast::Receiver<UserSignal>,
    /// Keeps the user online while this stream is open.
    _online: crate::presence::Online,
}

impl Session {
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

    async fn run(
        mut self,
        mut inbound: impl Stream<Item = Result<proto::ClientFrame, Status>> + Send + Unpin,
    ) {
        use futures_util::StreamExt;
        // A logout or disable that committed between authentication and our subscription to
        // the user's signals was not heard: check once now.
        if self.revoked() {
            return;
        }
        loop {
            let expires_in = Duration::from_millis(
                (self.who.expires_at_ms - crate::clock::now_ms()).max(0) as u64,
            );
            tokio::select! {
                frame = inbound.next() => match frame {
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
                        if !self.out.send(server_frame::Kind::Error(stream_error(&st, "", ""))).await {
                            break;
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep(expires_in) => {
                    self.out.end_after_queue(Status::unauthenticated(
                        "access token expired; send Reauthenticate with a fresh token before expiry",
                    ));
                    break;
                }
                signal = self.user_rx.recv() => match signal {
                    Ok(UserSignal::Revoked(why)) => {
                        self.out.end_after_queue(Status::unauthenticated(why));
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
                () = self.deps.shutdown.cancelled() => {
                    let _ = self.out.send(server_frame::Kind::GoingAway(proto::GoingAway {
                        reason: "server is shutting down; reconnect and resume with after_seq".into(),
                    })).await;
                    self.out.end_after_queue(Status::unavailable("server is shutting down"));
                    break;
                }
                () = self.out.fatal.cancelled() => break,
            }
        }
        for (_, f) in self.follows.drain() {
            f.cancel();
        }
    }

    /// Handles one frame; `false` ends the stream.
    async fn handle(&mut self, frame: proto::ClientFrame) -> bool {
        use client_frame::Kind as F;
        match frame.kind {
            Some(F::Subscribe(s)) => self.subscribe(s).await,
            Some(F::Unsubscribe(u)) => {
                if let Some(f) = self.follows.remove(&u.room_id) {
                    f.cancel();
                }
                true
            }
            Some(F::Send(s)) => self.send(s).await,
            Some(F::Ping(p)) => {
                self.out.send(server_frame::Kind::Pong(proto::Pong { nonce: p.nonce })).await
            }
            Some(F::Reauthenticate(r)) => self.reauthenticate(&r.access_token).await,
            Some(F::Typing(t)) => self.typing(&t.room_id).await,
            Some(F::MarkRead(m)) => {
                match self.deps.messages.mark_read(&self.who, &m.room_id, m.seq).await {
                    // The new marker reaches every stream of the user, this one included.
                    Ok(_) => true,
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
                    self.out.send(server_frame::Kind::Error(stream_error(&st, "", ""))).await
                }
            },
            None => {
                let st = Status::invalid_argument("empty frame: set one of the ClientFrame kinds");
                self.out.send(server_frame::Kind::Error(stream_error(&st, "", ""))).await
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
            return self.out.send(server_frame::Kind::Error(stream_error(&st, "", ""))).await;
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
                self.out.send(server_frame::Kind::Error(stream_error(&st, "", ""))).await
            }
            Err(e) => {
                let st = Status::from(e);
                self.out.send(server_frame::Kind::Error(stream_error(&st, "", ""))).await
            }
        }
    }

    async fn send(&mut self, s: proto::Send) -> bool {
        let now = crate::clock::now_ms();
        match self
            .deps
            .messages
            .submit_send(&self.who, &s.room_id, &s.client_message_id, &s.text, now)
            .await
        {
            Ok(done) => {
                let out = self.out.clone();
                tokio::spawn(async move {
                    match done.await {
                        Ok(m) => {
                            out.send(server_frame::Kind::SendAck(proto::SendAck {
                                client_message_id: s.client_message_id,
                                room_id: m.room_id,
                                seq: m.seq,
                            }))
                            .await;
                        }
                        Err(e) => {
                            out.error(&e, &s.room_id, &s.client_message_id).await;
                        }
                    }
                });
                true
            }
            Err(e) => self.out.error(&e, &s.room_id, &s.client_message_id).await,
        }
    }

    async fn subscribe(&mut self, s: proto::Subscribe) -> bool {
        if !self.follows.contains_key(&s.room_id)
            && self.follows.len() >= self.deps.max_subscriptions
        {
            let st = Status::resource_exhausted(format!(
                "this stream already follows {} rooms, the most allowed",
                self.deps.max_subscriptions
            ));
            return self
                .out
                .send(server_frame::Kind::Error(stream_error(&st, &s.room_id, "")))
                .await;
        }
        // The permission check comes before the feed, so made-up room ids never create a
        // ring in the hub. Then feed first, snapshot second: every event committed after the
        // snapshot is in the feed, and followers drop anything at or below what they delivered.
        let allowed = (|| -> Result<(), ChatError> {
            let tx = self.deps.messages.store().read()?;
            let l = load(&tx, &self.who, &s.room_id)?;
            permissions::may(l.actor, Action::Read, facts(&l.room))?;
            Ok(())
        })();
        if let Err(e) = allowed {
            return self.out.error(&e, &s.room_id, "").await;
        }
        let feed = self.deps.hub.subscribe_room(&s.room_id);
        let start = (|| -> Result<(u64, u64), ChatError> {
            let tx = self.deps.messages.store().read()?;
            let last = events::last_seq(&tx, &s.room_id)?;
            // A member stops at their own removal after their current join; for anyone else
            // (a global admin reading along) removals before now are history.
            let joined = rooms::member(&tx, &s.room_id, &self.who.user_id)?
                .map(|m| m.joined_seq)
                .unwrap_or(last);
            Ok((last, joined))
        })();
        let (last_seq, joined_seq) = match start {
            Ok(v) => v,
            Err(e) => return self.out.error(&e, &s.room_id, "").await,
        };
        let from = match s.after_seq {
            Some(a) if a > last_seq => {
                let st = Status::invalid_argument(format!(
                    "after_seq {a} is beyond the room's last seq {last_seq}"
                ));
                return self
                    .out
                    .send(server_frame::Kind::Error(stream_error(&st, &s.room_id, "")))
                    .await;
            }
            Some(a) => a,
            None => last_seq,
        };
        if let Some(old) = self.follows.remove(&s.room_id) {
            old.cancel();
        }
        if !self
            .out
            .send(server_frame::Kind::Subscribed(proto::Subscribed {
                room_id: s.room_id.clone(),
                last_seq,
                first_seq: 1,
            }))
            .await
        {
            return false;
        }
        let cancel = CancellationToken::new();
        self.follows.insert(s.room_id.clone(), cancel.clone());
        let follower = Follower {
            store: self.deps.messages.store().clone(),
            out: self.out.clone(),
            room_id: s.room_id,
            me: self.who.user_id.clone(),
            joined_seq,
            last: from,
        };
        tokio::spawn(async move {
            tokio::select! {
                () = follower.run(feed) => {}
                () = cancel.cancelled() => {}
            }
        });
        true
    }
}

/// Delivers one room's events to one stream, in seq order, without gaps or duplicates.
struct Follower {
    store: crate::store::Store,
    out: Out,
    room_id: String,
    me: String,
    /// The seq of the member's current join: their own removal before it is history.
    joined_seq: u64,
    /// The last seq delivered.
    last: u64,
}

enum Next {
    Go,
    Stop,
}

impl Follower {
    async fn run(mut self, mut feed: broadcast::Receiver<RoomFeed>) {
        if let Next::Stop = self.catch_up(u64::MAX).await {
            return;
        }
        loop {
            match feed.recv().await {
                Ok(RoomFeed::Typing(user)) => {
                    if *user != *self.me
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
                }
                Ok(RoomFeed::Event(ev)) => {
                    if ev.seq <= self.last {
                        continue;
                    }
                    if ev.seq > self.last + 1 && matches!(self.catch_up(ev.seq).await, Next::Stop) {
                        return;
                    }
                    if ev.seq == self.last + 1 && matches!(self.deliver(&ev).await, Next::Stop) {
                        return;
                    }
                }
                // Fell behind the ring: catch up from the store, then rejoin the feed.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Next::Stop = self.catch_up(u64::MAX).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Delivers stored events after `last` and below `before`, page by page.
    async fn catch_up(&mut self, before: u64) -> Next {
        loop {
            let page = self.store.read().map_err(|e| e.to_string()).and_then(|tx| {
                events::range(&tx, &self.room_id, self.last, before, CATCH_UP_PAGE, false)
                    .map_err(|e| e.to_string())
            });
            let (page, more) = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, room = %self.room_id, "catch-up read failed");
                    self.out.end_now(Status::unavailable("storage failure; reconnect and resume"));
                    return Next::Stop;
                }
            };
            for ev in &page {
                if let Next::Stop = self.deliver(ev).await {
                    return Next::Stop;
                }
            }
            if !more || page.is_empty() {
                return Next::Go;
            }
        }
    }

    async fn deliver(&mut self, ev: &proto::RoomEvent) -> Next {
        if !self.out.send(server_frame::Kind::Event(ev.clone())).await {
            return Next::Stop;
        }
        self.last = ev.seq;
        // Removed, banned or left: nothing of this room after that event.
        if let Some(Kind::Member(m)) = &ev.kind
            && m.user_id == self.me
            && (m.removed || m.left)
            && ev.seq > self.joined_seq
        {
            return Next::Stop;
        }
        Next::Go
    }
}
