//! The audit log (issue 19): every moderation and admin act (room roles, kicks, bans, unbans,
//! moderators' deletes, pins, room settings, users disabled, enabled or given a new global
//! role, users and invite codes created by admins) is recorded with actor, target, time and
//! reason, in the same transaction as the act, by the change that makes it. So an act is never
//! without its entry, and in cluster mode every node's log is the same.
//!
//! Key rotation is not here: `edgechat keys rotate` runs on the files while the server is
//! stopped (docs/operations.md), where no request and no actor exist.

pub use crate::proto::AuditAction;
use crate::proto::AuditEntry;
use crate::store::{StoreError, WriteCtx, audit};

/// Entries kept: the oldest is dropped when one more is written. At roughly 150 bytes each,
/// 100,000 entries are about 15 MB: years of moderation on a team server.
pub const KEEP: usize = 100_000;
/// Page size when a request says 0, and the largest page.
pub const DEFAULT_PAGE: u32 = 50;
/// The largest page.
pub const MAX_PAGE: u32 = 500;

/// What an act is about.
#[derive(Default)]
pub struct Target<'a> {
    /// The room (empty for server-wide acts).
    pub room_id: &'a str,
    /// The user acted on.
    pub user_id: &'a str,
    /// The message acted on.
    pub seq: u64,
}

/// Records an act, inside the act's own transaction.
pub fn record(
    ctx: &mut WriteCtx<'_>,
    at_ms: i64,
    actor_id: &str,
    action: AuditAction,
    target: Target<'_>,
    reason: &str,
    detail: String,
) -> Result<(), StoreError> {
    let mut e = AuditEntry {
        id: 0,
        at_ms,
        actor_id: actor_id.to_string(),
        action: action as i32,
        room_id: target.room_id.to_string(),
        target_user_id: target.user_id.to_string(),
        target_seq: target.seq,
        reason: reason.to_string(),
        detail,
    };
    audit::append(ctx, &mut e, KEEP)?;
    Ok(())
}

/// A request's page size: 0 means [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
pub fn page(limit: u32) -> usize {
    (match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }) as usize
}
