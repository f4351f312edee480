//! Messages: durable sends (idempotent per sender and `client_message_id`), history paging,
//! edits and deletes. Every change is a room event appended in the writer's transaction and
//! published only after the commit is durable.

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::ratelimit::{Budget, RateLimiter};
use super::text;
use crate::auth::Principal;
use crate::change::{Caller, Change, Exec};
use crate::notifications::{Cause, notify};
use crate::proto::{self, room_event::Kind};
use crate::rooms::RoomError;
use crate::rooms::permissions::{self, Action, Denied};
use crate::rooms::service::{facts, load};
use crate::store::{
    self, JobResult, SentRecord, Snapshot, StoreError, WriteCtx, Writer, events, pins, reactions,
    rooms, sent, threads, unread, users,
};

/// Longest `client_message_id`, in characters.
pub const MAX_CLIENT_MESSAGE_ID: usize = 64;
/// History page size when the request says 0.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest history page.
pub const MAX_PAGE: u32 = 500;

/// Why a chat operation failed; mapped to a status in `api::status` (and to a `StreamError`
/// on `Connect`).
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// A room-level refusal (permission, unknown room, bad ids).
    #[error(transparent)]
    Room(#[from] RoomError),
    /// Bad input.
    #[error("{0}")]
    InvalidArgument(String),
    /// No such message.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the message's state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Rate limited.
    #[error("{0}")]
    ResourceExhausted(String),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        ChatError::Room(RoomError::Store(e))
    }
}

impl From<Denied> for ChatError {
    fn from(d: Denied) -> Self {
        ChatError::Room(RoomError::Denied(d))
    }
}

impl From<text::TextError> for ChatError {
    fn from(e: text::TextError) -> Self {
        ChatError::InvalidArgument(e.to_string())
    }
}

/// The message operations. Cheap to clone.
#[derive(Clone)]
pub struct Messages {
    inner: Arc<Inner>,
}

struct Inner {
    store: store::Store,
    exec: Exec,
    max_text_bytes: usize,
    limiter: Mutex<RateLimiter>,
    /// Edits, deletes and read markers that move.
    budget: Budget,
    /// Notifications kept per user.
    keep: usize,
}

fn message_of(ev: &proto::RoomEvent) -> Option<&proto::Message> {
    match &ev.kind {
        Some(Kind::Message(m)) => Some(m),
        _ => None,
    }
}

/// Checks a `client_message_id`: 1-64 characters.
pub fn check_client_message_id(id: &str) -> Result<(), ChatError> {
    if id.is_empty() {
        return Err(ChatError::InvalidArgument("client_message_id is empty".into()));
    }
    if id.chars().count() > MAX_CLIENT_MESSAGE_ID {
        return Err(ChatError::InvalidArgument(format!(
            "client_message_id is longer than {MAX_CLIENT_MESSAGE_ID} characters"
        )));
    }
    Ok(())
}

/// At most this many mentions per message are resolved (and notified): a message of 1,000
/// `@names` must not cost 1,000 notifications.
pub const MAX_MENTIONS: usize = 50;

/// Resolves `@name` mentions to the ids of room members, each once, at most
/// [`MAX_MENTIONS`].
fn resolve_mentions(
    s: &impl Snapshot,
    room_id: &str,
    text: &str,
) -> Result<Vec<String>, StoreError> {
    let mut ids = Vec::new();
    for name in text::mentioned_names(text).into_iter().take(MAX_MENTIONS) {
        if let Some(u) = users::user_by_name(s, &name)?
            && rooms::member(s, room_id, &u.id)?.is_some()
            && !ids.contains(&u.id)
        {
            ids.push(u.id);
        }
    }
    Ok(ids)
}

/// Turns a job's `Result<T, ChatError>` into the writer's two-level result (storage errors
/// abort the batch; everything else is this job's answer).
pub(super) fn job<T>(r: Result<T, ChatError>) -> store::JobResult<T, ChatError> {
    match r {
        Err(ChatError::Room(RoomError::Store(e))) => Err(e),
        other => Ok(other),
    }
}

impl Messages {
    /// The message service.
    pub fn new(
        store: store::Store,
        exec: Exec,
        max_text_bytes: usize,
        rate: f64,
        burst: u32,
        budget: Budget,
        keep: usize,
    ) -> Messages {
        Messages {
            inner: Arc::new(Inner {
                store,
                exec,
                max_text_bytes,
                limiter: Mutex::new(RateLimiter::new(rate, burst)),
                budget,
                keep,
            }),
        }
    }

    fn spend(&self, who: &Principal, now_ms: i64) -> Result<(), ChatError> {
        self.inner.budget.take(&who.user_id, now_ms).map_err(ChatError::ResourceExhausted)
    }

    /// Queues a send and returns the future of its durably stored message. A retry of an
    /// earlier `client_message_id` returns the original message (whatever the text) and does
    /// not count against the rate limit. Validation and the rate limit are checked before
    /// queueing, so refusals are immediate.
    pub async fn submit_send(
        &self,
        who: &Principal,
        s: &proto::Send,
        now_ms: i64,
    ) -> Result<impl Future<Output = Result<proto::Message, ChatError>> + Send + 'static, ChatError>
    {
        let (room_id, client_message_id) = (s.room_id.as_str(), s.client_message_id.as_str());
        check_client_message_id(client_message_id)?;
        if room_id.is_empty() {
            return Err(ChatError::InvalidArgument("room_id is empty".into()));
        }
        let tx = self.inner.store.read()?;
        if let Some(earlier) = sent::get(&tx, &who.user_id, client_message_id)? {
            // A retry of a stored send: answered from the snapshot, without the writer, so
            // retries cost no commit slot (and are never rate limited).
            let original = original_message(&tx, &earlier);
            return Ok(futures_util::future::Either::Left(std::future::ready(original)));
        }
        drop(tx);
        {
            super::attachments::check_ids(&s.attachment_ids)?;
            // A file may go without a caption.
            if !s.text.is_empty() || s.attachment_ids.is_empty() {
                text::check_text(&s.text, self.inner.max_text_bytes)?;
            }
            let mut limiter = self.inner.limiter.lock().expect("limiter lock");
            if let Err(wait) = limiter.take(&who.user_id, now_ms) {
                return Err(ChatError::ResourceExhausted(format!(
                    "sending too fast; retry in {} ms (retrying with the same client_message_id is safe)",
                    wait.as_millis().max(1)
                )));
            }
        }
        let change = Post {
            who: Some(who.into()),
            room_id: room_id.to_string(),
            client_message_id: client_message_id.to_string(),
            text: s.text.clone(),
            now_ms,
            keep: self.inner.keep as u64,
            reply_to_seq: s.reply_to_seq,
            attachment_ids: s.attachment_ids.clone(),
        };
        let done = self.inner.exec.submit(change).await?;
        Ok(futures_util::future::Either::Right(done))
    }

    /// Sends a text (a reply when `reply_to_seq` is not 0) and waits for the durable result.
    pub async fn send(
        &self,
        who: &Principal,
        room_id: &str,
        client_message_id: &str,
        text: &str,
        reply_to_seq: u64,
        now_ms: i64,
    ) -> Result<proto::Message, ChatError> {
        let s = proto::Send {
            room_id: room_id.into(),
            client_message_id: client_message_id.into(),
            text: text.into(),
            reply_to_seq,
            attachment_ids: Vec::new(),
        };
        self.submit_send(who, &s, now_ms).await?.await
    }

    /// Cluster mode: a client may have seen `seq` of the room on another node; waits (at most
    /// `change::CATCH_UP_WAIT`) until this node's view has caught up with the log if its room
    /// ends before `seq`, so resuming there gives `seq + 1` on, not an error or nothing.
    pub async fn await_seq(&self, room_id: &str, seq: u64) -> Result<(), ChatError> {
        if seq == 0 || events::last_seq(&self.inner.store.read()?, room_id)? >= seq {
            return Ok(());
        }
        self.inner.exec.catch_up().await;
        Ok(())
    }

    /// `History`, paged as API.md says; with `thread_seq`, the same paging over one thread
    /// (its root and replies). Reactions carry `mine` for `who`.
    pub fn history(
        &self,
        who: &Principal,
        r: &proto::HistoryRequest,
    ) -> Result<proto::HistoryResponse, ChatError> {
        let (room_id, before_seq, after_seq) = (r.room_id.as_str(), r.before_seq, r.after_seq);
        let limit = match r.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        if before_seq != 0 && after_seq != 0 && after_seq.saturating_add(1) >= before_seq {
            return Err(ChatError::InvalidArgument(format!(
                "after_seq {after_seq} must be below before_seq {before_seq} - 1"
            )));
        }
        let tx = self.inner.store.read()?;
        let l = load(&tx, who, room_id)?;
        permissions::may(l.actor, Action::Read, facts(&l.room))?;
        let before = if before_seq == 0 { u64::MAX } else { before_seq };
        // Only `after` alone pages forwards; everything else picks the newest of its range.
        let newest = !(after_seq != 0 && before_seq == 0);
        let (mut events, has_more) = match r.thread_seq {
            0 => events::range(&tx, room_id, after_seq, before, limit, newest)?,
            root => thread_page(&tx, room_id, root, after_seq, before, limit, newest)?,
        };
        for ev in &mut events {
            if let Some(Kind::Message(m)) = &mut ev.kind {
                mark_mine(&tx, &who.user_id, m)?;
            }
        }
        Ok(proto::HistoryResponse { events, has_more, first_seq: events::first_seq(&tx, room_id)? })
    }

    /// `ListPins`: the room's pinned messages in their current state, ascending by seq.
    pub fn pins(&self, who: &Principal, room_id: &str) -> Result<Vec<proto::Message>, ChatError> {
        let tx = self.inner.store.read()?;
        let l = load(&tx, who, room_id)?;
        permissions::may(l.actor, Action::Read, facts(&l.room))?;
        let mut out = Vec::new();
        for (seq, _) in pins::list(&tx, room_id)? {
            if let Some(ev) = events::get(&tx, room_id, seq)?
                && let Some(Kind::Message(mut m)) = ev.kind
            {
                mark_mine(&tx, &who.user_id, &mut m)?;
                out.push(m);
            }
        }
        Ok(out)
    }

    /// `EditMessage`: the sender replaces the text; the message shows the latest text with
    /// `edited_at_ms`, and the edit is its own event.
    pub async fn edit(
        &self,
        who: &Principal,
        room_id: &str,
        seq: u64,
        text: &str,
        now_ms: i64,
    ) -> Result<proto::Message, ChatError> {
        text::check_text(text, self.inner.max_text_bytes)?;
        self.spend(who, now_ms)?;
        let at = Some(MessageAt::new(who, room_id, seq, now_ms));
        self.inner.exec.run(Edit { at, text: text.to_string() }).await
    }

    /// `DeleteMessage`: the sender, or a moderator and above; the message becomes a tombstone
    /// and the delete is its own event. Deleting a tombstone again changes nothing.
    pub async fn delete(
        &self,
        who: &Principal,
        room_id: &str,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), ChatError> {
        self.spend(who, now_ms)?;
        self.inner.exec.run(Delete { at: Some(MessageAt::new(who, room_id, seq, now_ms)) }).await
    }

    /// `AddReaction` (`on`) / `RemoveReaction`: the caller's reaction to the message at `seq`;
    /// an add or remove that changes nothing is no event. Returns the message.
    pub async fn react(
        &self,
        who: &Principal,
        at: (&str, u64),
        emoji: &str,
        on: bool,
        now_ms: i64,
    ) -> Result<proto::Message, ChatError> {
        super::reactions::check_emoji(emoji)?;
        self.spend(who, now_ms)?;
        let change = super::reactions::React {
            at: Some(MessageAt::new(who, at.0, at.1, now_ms)),
            emoji: emoji.to_string(),
            on,
        };
        self.inner.exec.run(change).await
    }

    /// `PinMessage` (`on`) / `UnpinMessage`. Returns the message.
    pub async fn pin(
        &self,
        who: &Principal,
        at: (&str, u64),
        on: bool,
        now_ms: i64,
    ) -> Result<proto::Message, ChatError> {
        self.spend(who, now_ms)?;
        let change =
            super::reactions::Pin { at: Some(MessageAt::new(who, at.0, at.1, now_ms)), on };
        self.inner.exec.run(change).await
    }

    /// `MarkRead` (RPC and frame): moves the member's read marker to `seq`, clamped to the
    /// room's last seq, never backwards. When it moves, every open stream of the user gets a
    /// `ReadMarker` with the new counts (other devices update their badges). A marker that
    /// would not move is answered from a snapshot: no writer job, no count scans, no budget.
    pub async fn mark_read(
        &self,
        who: &Principal,
        room_id: &str,
        seq: u64,
        now_ms: i64,
    ) -> Result<(), ChatError> {
        if !self.marker_would_move(who, room_id, seq)? {
            return Ok(());
        }
        self.spend(who, now_ms)?;
        let at = Some(MessageAt::new(who, room_id, seq, 0));
        self.inner.exec.run(MarkRead { at }).await
    }

    /// Whether a `MarkRead` to `seq` would move the marker (refusals come out here too).
    fn marker_would_move(
        &self,
        who: &Principal,
        room_id: &str,
        seq: u64,
    ) -> Result<bool, ChatError> {
        let tx = self.inner.store.read()?;
        let (m, target) = marker_target(&tx, who, room_id, seq)?;
        Ok(target > m.read_seq)
    }

    /// The group-commit writer.
    pub fn writer(&self) -> &Writer {
        self.inner.exec.writer()
    }

    /// Where changes go.
    pub fn exec(&self) -> &Exec {
        &self.inner.exec
    }

    /// The store (for stream catch-up reads).
    pub fn store(&self) -> &store::Store {
        &self.inner.store
    }
}

/// One page of the thread under `root`: the root and its replies with `after < seq < before`.
fn thread_page(
    s: &impl Snapshot,
    room_id: &str,
    root: u64,
    after: u64,
    before: u64,
    limit: usize,
    newest: bool,
) -> Result<(Vec<proto::RoomEvent>, bool), ChatError> {
    let not_found = || ChatError::NotFound(format!("no message at seq {root} in this room"));
    let ev = events::get(s, room_id, root)?.ok_or_else(not_found)?;
    let m = message_of(&ev).ok_or_else(not_found)?;
    if m.thread_seq != 0 {
        return Err(ChatError::InvalidArgument(format!(
            "message {root} is a reply in the thread of message {}; page that thread",
            m.thread_seq
        )));
    }
    if m.reply_count == 0 {
        // No replies yet: the thread is its root alone.
        let inside = after < root && root < before;
        return Ok((if inside && limit > 0 { vec![ev] } else { Vec::new() }, false));
    }
    let (seqs, more) = threads::range(s, room_id, root, after, before, limit, newest)?;
    let mut out = Vec::with_capacity(seqs.len());
    for seq in seqs {
        // A row whose event retention already removed is skipped.
        out.extend(events::get(s, room_id, seq)?);
    }
    Ok((out, more))
}

/// Fills in `Reaction.mine` for `user`.
pub(super) fn mark_mine(
    s: &impl Snapshot,
    user: &str,
    m: &mut proto::Message,
) -> Result<(), StoreError> {
    for r in &mut m.reactions {
        r.mine = reactions::has(s, &m.room_id, m.seq, &r.emoji, user)?;
    }
    Ok(())
}

/// The member's read marker record and where a `MarkRead` to `seq` puts it (clamped to the
/// room's last seq), after the permission check.
fn marker_target(
    s: &impl Snapshot,
    who: &Principal,
    room_id: &str,
    seq: u64,
) -> Result<(store::MemberRecord, u64), ChatError> {
    let l = load(s, who, room_id)?;
    permissions::may(l.actor, Action::Read, facts(&l.room))?;
    let Some(m) = rooms::member(s, room_id, &who.user_id)? else {
        return Err(ChatError::FailedPrecondition("only members have read markers".into()));
    };
    let target = seq.min(events::last_seq(s, room_id)?);
    Ok((m, target))
}

/// The start of a message for a notification (the whole message is one History call away).
/// What a notification of `msg` says: its text, or for files sent without one, their names
/// (`📎 cat.png`, `📎 cat.png and 2 more`).
fn notice_text(msg: &proto::Message) -> String {
    match (msg.text.is_empty(), msg.attachments.as_slice()) {
        (true, [only]) => format!("📎 {}", only.name),
        (true, [first, rest @ ..]) => format!("📎 {} and {} more", first.name, rest.len()),
        _ => msg.text.clone(),
    }
}

fn preview(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The message an earlier send with the same `client_message_id` stored.
fn original_message(s: &impl Snapshot, earlier: &SentRecord) -> Result<proto::Message, ChatError> {
    let ev = events::get(s, &earlier.room_id, earlier.seq)?;
    ev.as_ref().and_then(message_of).cloned().ok_or_else(|| {
        ChatError::FailedPrecondition("the original message is no longer stored".into())
    })
}

/// Loads the room and the message at `seq` for an edit or delete.
pub(super) fn target(
    ctx: &WriteCtx<'_>,
    who: &Principal,
    room_id: &str,
    seq: u64,
) -> Result<(crate::rooms::service::Loaded, proto::RoomEvent, proto::Message), ChatError> {
    let l = load(ctx, who, room_id)?;
    permissions::may(l.actor, Action::Read, facts(&l.room))?;
    let not_found = || ChatError::NotFound(format!("no message at seq {seq} in this room"));
    let ev = events::get(ctx, room_id, seq)?.ok_or_else(not_found)?;
    let msg = message_of(&ev).cloned().ok_or_else(not_found)?;
    Ok((l, ev, msg))
}

pub(super) fn record(
    ctx: &mut WriteCtx<'_>,
    room_id: &str,
    actor: &str,
    at_ms: i64,
    kind: Kind,
) -> Result<u64, StoreError> {
    let mut ev = proto::RoomEvent {
        room_id: room_id.into(),
        seq: 0,
        at_ms,
        actor_id: actor.into(),
        kind: Some(kind),
    };
    let seq = events::append(ctx, &mut ev)?;
    ctx.emit(ev);
    Ok(seq)
}

/// What a reply replies to: the message it names and its thread's root.
struct ReplyTo {
    /// The message replied to.
    target: proto::Message,
    /// The thread's root (the target itself unless it is a reply already), if still stored.
    root: Option<proto::RoomEvent>,
    /// The root's seq.
    root_seq: u64,
}

/// Checks the message a reply names: a live message of the same room (seqs are per room, so
/// another room's message cannot be named at all).
fn reply_target(s: &impl Snapshot, room_id: &str, seq: u64) -> Result<ReplyTo, ChatError> {
    let not_found =
        || ChatError::NotFound(format!("no message at seq {seq} in this room to reply to"));
    let ev = events::get(s, room_id, seq)?.ok_or_else(not_found)?;
    let target = message_of(&ev).cloned().ok_or_else(not_found)?;
    if target.deleted {
        return Err(ChatError::FailedPrecondition(format!(
            "message {seq} is deleted; reply in its thread or to another message"
        )));
    }
    if target.thread_seq == 0 {
        return Ok(ReplyTo { target, root: Some(ev), root_seq: seq });
    }
    let root_seq = target.thread_seq;
    // Retention may have dropped the root; the thread goes on without it.
    let root = events::get(s, room_id, root_seq)?;
    Ok(ReplyTo { target, root, root_seq })
}

/// The send itself, inside the writer's transaction.
#[allow(clippy::too_many_arguments)]
fn send_in(
    ctx: &mut WriteCtx<'_>,
    keep: usize,
    who: &Principal,
    room_id: &str,
    cmid: &str,
    text: String,
    (reply_to_seq, attachment_ids): (u64, &[String]),
    now_ms: i64,
) -> Result<proto::Message, ChatError> {
    if let Some(earlier) = sent::get(&**ctx, &who.user_id, cmid)? {
        // A retry racing its original: the original message, whatever this text says.
        return original_message(&**ctx, &earlier);
    }
    let l = load(&**ctx, who, room_id)?;
    permissions::may(l.actor, Action::Post, facts(&l.room))?;
    let reply = match reply_to_seq {
        0 => None,
        seq => Some(reply_target(&**ctx, room_id, seq)?),
    };
    let mention_user_ids = resolve_mentions(&**ctx, room_id, &text)?;
    let files = super::attachments::resolve(&**ctx, &who.user_id, attachment_ids)?;
    let msg = proto::Message {
        room_id: room_id.to_string(),
        sender_id: who.user_id.clone(),
        text,
        sent_at_ms: now_ms,
        client_message_id: cmid.to_string(),
        mention_user_ids,
        reply_to_seq,
        thread_seq: reply.as_ref().map_or(0, |r| r.root_seq),
        attachments: files.iter().map(|(_, wire)| wire.clone()).collect(),
        ..Default::default()
    };
    let mut ev = proto::RoomEvent {
        room_id: room_id.to_string(),
        seq: 0,
        at_ms: now_ms,
        actor_id: who.user_id.clone(),
        kind: Some(Kind::Message(msg)),
    };
    let seq = events::append(ctx, &mut ev)?;
    sent::put(
        ctx,
        &who.user_id,
        cmid,
        &SentRecord { room_id: room_id.to_string(), seq, at_ms: now_ms },
    )?;
    let Some(Kind::Message(msg)) = &ev.kind else { unreachable!("built above as a message") };
    let msg = msg.clone();
    for (rec, wire) in &files {
        store::attachments::post(ctx, &wire.id, rec, room_id)?;
    }
    unread::index_message(ctx, room_id, seq, &who.user_id)?;
    unread::add_mentions(ctx, room_id, seq, &who.user_id, &msg.mention_user_ids)?;
    store::search::add(ctx, room_id, seq, &crate::search::words(&msg.text))?;
    ctx.emit(ev);
    // Notify: the other side of a direct room, else everyone mentioned, and for a reply the
    // author of the message replied to and of the thread's root (once each; a mention wins).
    let direct = facts(&l.room).visibility == permissions::Visibility::Direct;
    let mut targets: Vec<(proto::NotificationKind, String)> = if direct {
        let kind = proto::NotificationKind::DirectMessage;
        l.room.direct_pair.iter().map(|u| (kind, u.clone())).collect()
    } else {
        let kind = proto::NotificationKind::Mention;
        msg.mention_user_ids.iter().map(|u| (kind, u.clone())).collect()
    };
    if let Some(reply) = reply {
        let root_sender = reply.root.as_ref().and_then(message_of).map(|m| m.sender_id.clone());
        if let Some(mut root) = reply.root {
            if let Some(Kind::Message(m)) = &mut root.kind {
                m.reply_count = m.reply_count.saturating_add(1);
                m.last_reply_at_ms = now_ms;
            }
            events::replace(ctx, &root)?;
        }
        threads::add_reply(ctx, room_id, reply.root_seq, seq)?;
        for author in [Some(reply.target.sender_id), root_sender].into_iter().flatten() {
            let member = rooms::member(&**ctx, room_id, &author)?.is_some();
            if !direct && member && !targets.iter().any(|(_, u)| *u == author) {
                targets.push((proto::NotificationKind::Reply, author));
            }
        }
    }
    for (kind, user) in targets {
        let cause = Cause {
            kind,
            room_id,
            seq,
            from_user_id: &who.user_id,
            text: preview(&notice_text(&msg)),
            at_ms: now_ms,
        };
        notify(ctx, keep, &user, cause)?;
    }
    Ok(msg)
}

/// Moves message `seq` in the search index from the words of `old` to those of `new` (only
/// the words that differ: an edit fixing a typo rewrites one or two blocks).
fn reindex(
    tx: &redb::WriteTransaction,
    room_id: &str,
    seq: u64,
    old: &str,
    new: &str,
) -> Result<(), StoreError> {
    store::search::replace(tx, room_id, seq, &crate::search::words(old), &crate::search::words(new))
}

/// Where a message change happens: the caller, the room, the message's seq and the time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageAt {
    /// The caller.
    #[prost(message, optional, tag = "1")]
    pub who: Option<Caller>,
    /// The room.
    #[prost(string, tag = "2")]
    pub room_id: String,
    /// The message (edit, delete) or the read marker's target (mark read).
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// When it was asked.
    #[prost(int64, tag = "4")]
    pub now_ms: i64,
}

impl MessageAt {
    pub(super) fn new(who: &Principal, room_id: &str, seq: u64, now_ms: i64) -> MessageAt {
        MessageAt { who: Some(who.into()), room_id: room_id.to_string(), seq, now_ms }
    }

    pub(super) fn parts(at: Option<MessageAt>) -> (Principal, String, u64, i64) {
        let at = at.unwrap_or_default();
        (at.who.unwrap_or_default().principal(), at.room_id, at.seq, at.now_ms)
    }
}

/// Change: a send. A retry of a stored `client_message_id` answers the original message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Post {
    /// The sender.
    #[prost(message, optional, tag = "1")]
    pub who: Option<Caller>,
    /// The room.
    #[prost(string, tag = "2")]
    pub room_id: String,
    /// The sender's idempotency key.
    #[prost(string, tag = "3")]
    pub client_message_id: String,
    /// The text (checked before the change was made).
    #[prost(string, tag = "4")]
    pub text: String,
    /// When it was sent.
    #[prost(int64, tag = "5")]
    pub now_ms: i64,
    /// Notifications kept per user.
    #[prost(uint64, tag = "6")]
    pub keep: u64,
    /// The message this one replies to (0: none).
    #[prost(uint64, tag = "7")]
    pub reply_to_seq: u64,
    /// The sender's attachments it carries (checked for count and repeats).
    #[prost(string, repeated, tag = "8")]
    pub attachment_ids: Vec<String>,
}

impl Change for Post {
    type T = proto::Message;
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Message, ChatError> {
        let who = self.who.unwrap_or_default().principal();
        job(send_in(
            ctx,
            self.keep as usize,
            &who,
            &self.room_id,
            &self.client_message_id,
            self.text,
            (self.reply_to_seq, &self.attachment_ids),
            self.now_ms,
        ))
    }
}

/// Change: `EditMessage`: the sender replaces the text; the edit is its own event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Edit {
    /// Caller, room, message, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<MessageAt>,
    /// The new text (checked before the change was made).
    #[prost(string, tag = "2")]
    pub text: String,
}

impl Change for Edit {
    type T = proto::Message;
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Message, ChatError> {
        let (who, room_id, seq, now_ms) = MessageAt::parts(self.at);
        let text = self.text;
        job((|| {
            let (l, mut ev, msg) = target(ctx, &who, &room_id, seq)?;
            permissions::may(
                l.actor,
                Action::EditMessage { own: msg.sender_id == who.user_id },
                facts(&l.room),
            )?;
            if msg.deleted {
                return Err(ChatError::FailedPrecondition(format!("message {seq} is deleted")));
            }
            let mentions = resolve_mentions(&**ctx, &room_id, &text)?;
            unread::remove_mentions(ctx, &room_id, seq, &msg.mention_user_ids)?;
            unread::add_mentions(ctx, &room_id, seq, &msg.sender_id, &mentions)?;
            reindex(ctx, &room_id, seq, &msg.text, &text)?;
            let Some(Kind::Message(m)) = &mut ev.kind else {
                unreachable!("target() returns messages")
            };
            m.text = text.clone();
            m.edited_at_ms = now_ms;
            m.mention_user_ids = mentions;
            let mut updated = m.clone();
            events::replace(ctx, &ev)?;
            record(
                ctx,
                &room_id,
                &who.user_id,
                now_ms,
                Kind::Edited(proto::MessageEdited { target_seq: seq, text }),
            )?;
            mark_mine(&**ctx, &who.user_id, &mut updated)?;
            Ok(updated)
        })())
    }
}

/// Change: `DeleteMessage`: the message becomes a tombstone; the delete is its own event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Delete {
    /// Caller, room, message, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<MessageAt>,
}

impl Change for Delete {
    type T = ();
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), ChatError> {
        let (who, room_id, seq, now_ms) = MessageAt::parts(self.at);
        job((|| {
            let (l, mut ev, msg) = target(ctx, &who, &room_id, seq)?;
            permissions::may(
                l.actor,
                Action::DeleteMessage { own: msg.sender_id == who.user_id },
                facts(&l.room),
            )?;
            if msg.deleted {
                return Ok(());
            }
            let Some(Kind::Message(m)) = &mut ev.kind else {
                unreachable!("target() returns messages")
            };
            m.deleted = true;
            m.text.clear();
            m.mention_user_ids.clear();
            // Its files stop being seen through it (and go once no message carries them).
            for a in std::mem::take(&mut m.attachments) {
                store::attachments::release(ctx, &a.id, &room_id, now_ms)?;
            }
            // A tombstone keeps no reactions and is not pinned (its delete event says so).
            if !m.reactions.is_empty() {
                m.reactions.clear();
                reactions::clear(ctx, &room_id, seq)?;
            }
            if m.pinned {
                m.pinned = false;
                pins::set(ctx, &room_id, seq, None)?;
            }
            unread::unindex_message(ctx, &room_id, seq)?;
            unread::remove_mentions(ctx, &room_id, seq, &msg.mention_user_ids)?;
            store::search::remove(ctx, &room_id, seq, &crate::search::words(&msg.text))?;
            events::replace(ctx, &ev)?;
            record(
                ctx,
                &room_id,
                &who.user_id,
                now_ms,
                Kind::Deleted(proto::MessageDeleted { target_seq: seq }),
            )?;
            if msg.sender_id != who.user_id {
                let on = crate::audit::Target { room_id: &room_id, user_id: &msg.sender_id, seq };
                let act = proto::AuditAction::MessageDeleted;
                crate::audit::record(ctx, now_ms, &who.user_id, act, on, "", String::new())?;
            }
            Ok(())
        })())
    }
}

/// Change: `MarkRead`: the member's read marker moves to `seq` (clamped, never backwards) and
/// every open stream of theirs gets a `ReadMarker`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarkRead {
    /// Caller, room, target seq.
    #[prost(message, optional, tag = "1")]
    pub at: Option<MessageAt>,
}

impl Change for MarkRead {
    type T = ();
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), ChatError> {
        let (who, room_id, seq, _) = MessageAt::parts(self.at);
        job((|| {
            let (mut m, target) = marker_target(&**ctx, &who, &room_id, seq)?;
            if target <= m.read_seq {
                // Moved by another device meanwhile.
                return Ok(());
            }
            m.read_seq = target;
            rooms::put_member(ctx, &room_id, &who.user_id, &m)?;
            let marker = proto::ReadMarker {
                room_id: room_id.clone(),
                seq: m.read_seq,
                unread_count: unread::unread_count(&**ctx, &room_id, &who.user_id, m.read_seq)?,
                mention_count: unread::mention_count(&**ctx, &who.user_id, &room_id, m.read_seq)?,
            };
            let frame =
                proto::ServerFrame { kind: Some(proto::server_frame::Kind::ReadMarker(marker)) };
            ctx.signal(&who.user_id, frame);
            Ok(())
        })())
    }
}
