//! Notifications (DESIGN.md "Presence, typing, notifications, unread"): mention, direct
//! message, invite, removed/banned, role changed. Each is stored per user with a gapless id in
//! the same transaction as its cause and pushed live, after the commit, to every open stream
//! of that user; `ListNotifications { after_id }` returns what a reconnecting client missed.
//! Never to the author of the event.

use std::sync::Arc;

use crate::auth::Principal;
use crate::change::{Change, Exec};
use crate::chat::ratelimit::Budget;
use crate::proto::{self, NotificationKind, server_frame};
use crate::store::{self, JobResult, StoreError, WriteCtx, notifications, users};

/// What caused a notification.
pub struct Cause<'a> {
    /// Kind.
    pub kind: NotificationKind,
    /// Room.
    pub room_id: &'a str,
    /// The room event, or 0.
    pub seq: u64,
    /// Who caused it.
    pub from_user_id: &'a str,
    /// Message text or a short description.
    pub text: String,
    /// When.
    pub at_ms: i64,
}

/// Stores a notification for `user` and queues its live push. Skips the author.
pub fn notify(
    ctx: &mut WriteCtx<'_>,
    keep: usize,
    user: &str,
    cause: Cause<'_>,
) -> Result<(), StoreError> {
    if user == cause.from_user_id {
        return Ok(());
    }
    // A muted room sends no chatter (mentions, replies, direct messages); what is done to the
    // user (invites, removals, role changes) still reaches them.
    let chatter = matches!(
        cause.kind,
        proto::NotificationKind::Mention
            | proto::NotificationKind::Reply
            | proto::NotificationKind::DirectMessage
    );
    if chatter && crate::store::rooms::member(&**ctx, cause.room_id, user)?.is_some_and(|m| m.muted)
    {
        return Ok(());
    }
    let mut n = proto::Notification {
        id: 0,
        kind: cause.kind as i32,
        room_id: cause.room_id.to_string(),
        seq: cause.seq,
        from_user_id: cause.from_user_id.to_string(),
        text: cause.text,
        at_ms: cause.at_ms,
        read: false,
    };
    notifications::append(ctx, user, &mut n, keep)?;
    ctx.signal(user, proto::ServerFrame { kind: Some(server_frame::Kind::Notification(n)) });
    Ok(())
}

/// Why listing or marking failed.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// Bad cursor.
    #[error("{0}")]
    InvalidArgument(String),
    /// Over the user's budget of changes.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The user's tokens were revoked after the request was authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reading and marking notifications. Cheap to clone.
#[derive(Clone)]
pub struct Notifications {
    inner: Arc<(store::Store, Exec, Budget)>,
}

/// Page size when the request says 0, and the largest page.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

impl Notifications {
    /// The service.
    pub fn new(store: store::Store, exec: Exec, budget: Budget) -> Self {
        Notifications { inner: Arc::new((store, exec, budget)) }
    }

    /// `ListNotifications`: those after `after_id`, with `read` filled in.
    pub fn list(
        &self,
        who: &Principal,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<proto::Notification>, NotificationError> {
        let tx = self.inner.0.read()?;
        let last = notifications::last_id(&tx, &who.user_id)?;
        if after_id > last {
            return Err(NotificationError::InvalidArgument(format!(
                "after_id {after_id} is beyond your last notification id {last}"
            )));
        }
        let limit = match limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        } as usize;
        let read_upto =
            users::user(&tx, &who.user_id)?.map(|u| u.notifications_read_upto).unwrap_or(0);
        let mut list = notifications::after(&tx, &who.user_id, after_id, limit)?;
        for n in &mut list {
            n.read = n.id <= read_upto;
        }
        Ok(list)
    }

    /// `MarkNotificationsRead`: everything up to `up_to_id` (0 = all) is read; never moves back.
    pub async fn mark_read(
        &self,
        who: &Principal,
        up_to_id: u64,
        now_ms: i64,
    ) -> Result<(), NotificationError> {
        self.inner.2.take(&who.user_id, now_ms).map_err(NotificationError::ResourceExhausted)?;
        self.inner.1.run(MarkAllRead { who: Some(who.into()), up_to_id }).await
    }
}

/// Change: `MarkNotificationsRead`: everything up to `up_to_id` (0 = all) is read; never moves
/// back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MarkAllRead {
    /// The caller.
    #[prost(message, optional, tag = "1")]
    pub who: Option<crate::change::Caller>,
    /// The last id read (0: all).
    #[prost(uint64, tag = "2")]
    pub up_to_id: u64,
}

impl Change for MarkAllRead {
    type T = ();
    type E = NotificationError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), NotificationError> {
        let who = self.who.unwrap_or_default().principal();
        let (user_id, up_to_id) = (who.user_id.clone(), self.up_to_id);
        match crate::rooms::service::check_current(&**ctx, &who) {
            Ok(()) => {}
            Err(crate::rooms::RoomError::Store(e)) => return Err(e),
            Err(e) => return Ok(Err(NotificationError::Unauthenticated(e.to_string()))),
        }
        let last = notifications::last_id(&**ctx, &user_id)?;
        let target = if up_to_id == 0 { last } else { up_to_id.min(last) };
        if let Some(mut u) = users::user(&**ctx, &user_id)?
            && target > u.notifications_read_upto
        {
            u.notifications_read_upto = target;
            users::put_user(ctx, &u)?;
        }
        Ok(Ok(()))
    }
}
