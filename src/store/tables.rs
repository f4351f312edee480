//! Table definitions, with each key layout written beside it. Integers in keys are big-endian
//! (redb's `u64` key encoding sorts numerically), so ranges sort.

use redb::TableDefinition;

/// `meta`: setting name -> value. Holds [`META_SCHEMA_VERSION`].
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The schema version key in [`META`].
pub(super) const META_SCHEMA_VERSION: &str = "schema_version";

/// `users`: user id -> `UserRecord`.
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// `user_by_name`: lowercase username -> user id. Uniqueness of usernames lives here.
pub(super) const USER_BY_NAME: TableDefinition<&str, &str> = TableDefinition::new("user_by_name");
/// `refresh_tokens`: SHA-256 of the refresh token -> `RefreshRecord`.
pub(super) const REFRESH_TOKENS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("refresh_tokens");
/// `refresh_families`: family id -> `FamilyRecord`.
pub(super) const REFRESH_FAMILIES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("refresh_families");

/// `rooms`: room id -> `RoomRecord`.
pub(super) const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
/// `public_rooms`: room id -> () for every public room (ListRooms without a full scan).
pub(super) const PUBLIC_ROOMS: TableDefinition<&str, ()> = TableDefinition::new("public_rooms");
/// `room_members`: (room id, user id) -> `MemberRecord`.
pub(super) const ROOM_MEMBERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("room_members");
/// `user_rooms`: (user id, room id) -> () — the rooms a user is in.
pub(super) const USER_ROOMS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_rooms");
/// `room_bans`: (room id, user id) -> `BanRecord`.
pub(super) const ROOM_BANS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("room_bans");
/// `room_invites`: (room id, invited user id) -> inviter user id.
pub(super) const ROOM_INVITES: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("room_invites");
/// `user_invites`: (invited user id, room id) -> () — the rooms a user is invited to.
pub(super) const USER_INVITES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("user_invites");
/// `direct_rooms`: "smaller user id/larger user id" -> room id. One direct room per pair.
pub(super) const DIRECT_ROOMS: TableDefinition<&str, &str> = TableDefinition::new("direct_rooms");
// Each room's events, message index and search index are tables of their own,
// `events/<room id>`, `messages/<room id>` and `search/<room id>`: see `events`, `unread` and
// `search`.

/// Schema 1 only (moved by `migrate`): `room_events`: (room id, seq) -> `proto::RoomEvent`.
pub(super) const ROOM_EVENTS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("room_events");

/// `sent_ids`: (sender user id, client_message_id) -> `SentRecord`. Written in the same
/// transaction as the message, so a retry after a lost ack finds it, across restarts.
pub(super) const SENT_IDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sent_ids");

/// `notifications`: (user id, id) -> `proto::Notification`. Ids are gapless per user: 1, 2,
/// ...; the oldest are dropped past the per-user cap.
pub(super) const NOTIFICATIONS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("notifications");
/// Schema 1 only (moved by `migrate`): `room_messages`: (room id, seq) -> sender id.
pub(super) const ROOM_MESSAGES: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("room_messages");
/// `mentions`: (user id, room id, seq) -> () for every live message mentioning the user.
pub(super) const MENTIONS: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("mentions");

/// `threads`: (room id, root seq, seq) -> () for each thread's root and replies (`threads`).
pub(super) const THREADS: TableDefinition<(&str, u64, u64), ()> = TableDefinition::new("threads");
/// `reactions`: (room id, seq, reaction, user id) -> () (`reactions`).
pub(super) const REACTIONS: TableDefinition<(&str, u64, &str, &str), ()> =
    TableDefinition::new("reactions");
/// `pins`: (room id, seq) -> `PinRecord` (`pins`).
pub(super) const PINS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("pins");

/// `audit`: id -> `proto::AuditEntry` (`audit`).
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// `audit_by_room`: (room id, audit id) -> () (`audit`).
pub(super) const AUDIT_BY_ROOM: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("audit_by_room");
/// `invite_codes`: SHA-256 of the code -> `InviteRecord` (`invites`).
pub(super) const INVITE_CODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("invite_codes");

/// `attachments`: attachment id -> `AttachmentRecord`: an upload, finished or not
/// (`attachments`).
pub(super) const ATTACHMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("attachments");
/// `upload_chunks`: (attachment id, offset) -> bytes of an unfinished upload.
pub(super) const UPLOAD_CHUNKS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("upload_chunks");
/// `blobs`: SHA-256 -> how many finished attachments have these bytes.
pub(super) const BLOBS: TableDefinition<&[u8], u64> = TableDefinition::new("blobs");
/// `blob_chunks`: (SHA-256, offset) -> bytes: each content stored once.
pub(super) const BLOB_CHUNKS: TableDefinition<(&[u8], u64), &[u8]> =
    TableDefinition::new("blob_chunks");
/// `attachment_rooms`: (attachment id, room id) -> live messages of the room carrying it.
pub(super) const ATTACHMENT_ROOMS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("attachment_rooms");
/// `user_uploads`: (user id, attachment id) -> () for the user's unfinished uploads.
pub(super) const USER_UPLOADS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("user_uploads");
/// `attachment_usage`: user id -> bytes of the user's uploads and attachments.
pub(super) const ATTACHMENT_USAGE: TableDefinition<&str, u64> =
    TableDefinition::new("attachment_usage");
/// `attachments_idle`: (since ms, attachment id) -> () for every attachment no message
/// carries, by when that began (its last chunk, its finish, its last message's delete).
pub(super) const ATTACHMENTS_IDLE: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("attachments_idle");

/// Opens every fixed table once so that later read transactions find them all (a room's own
/// tables are created by its first write; readers take a missing one as empty).
pub(super) fn create_all(tx: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    tx.open_table(META)?;
    tx.open_table(USERS)?;
    tx.open_table(USER_BY_NAME)?;
    tx.open_table(REFRESH_TOKENS)?;
    tx.open_table(REFRESH_FAMILIES)?;
    tx.open_table(ROOMS)?;
    tx.open_table(PUBLIC_ROOMS)?;
    tx.open_table(ROOM_MEMBERS)?;
    tx.open_table(USER_ROOMS)?;
    tx.open_table(ROOM_BANS)?;
    tx.open_table(ROOM_INVITES)?;
    tx.open_table(USER_INVITES)?;
    tx.open_table(DIRECT_ROOMS)?;
    tx.open_table(SENT_IDS)?;
    tx.open_table(NOTIFICATIONS)?;
    tx.open_table(MENTIONS)?;
    tx.open_table(THREADS)?;
    tx.open_table(REACTIONS)?;
    tx.open_table(PINS)?;
    tx.open_table(AUDIT)?;
    tx.open_table(AUDIT_BY_ROOM)?;
    tx.open_table(INVITE_CODES)?;
    tx.open_table(ATTACHMENTS)?;
    tx.open_table(UPLOAD_CHUNKS)?;
    tx.open_table(BLOBS)?;
    tx.open_table(BLOB_CHUNKS)?;
    tx.open_table(ATTACHMENT_ROOMS)?;
    tx.open_table(USER_UPLOADS)?;
    tx.open_table(ATTACHMENT_USAGE)?;
    tx.open_table(ATTACHMENTS_IDLE)?;
    Ok(())
}

/// Only while `migrate` upgrades a file to schema 3: `search_backfill`: room id -> the next
/// seq to index for search.
pub(super) const SEARCH_BACKFILL: TableDefinition<&str, u64> =
    TableDefinition::new("search_backfill");

/// Cluster mode only: `cluster_meta`: name -> value; [`CLUSTER_APPLIED`] is the last log
/// position this view applied (the node's consumer resumes after it).
pub(super) const CLUSTER_META: TableDefinition<&str, u64> = TableDefinition::new("cluster_meta");
/// The applied-position key in [`CLUSTER_META`].
pub(super) const CLUSTER_APPLIED: &str = "applied";
