//! Stored record encodings: prost messages, so fields can be added without a migration
//! (unknown fields are skipped by older readers, missing ones read as defaults).

/// A user account (`users` table).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UserRecord {
    /// Stable id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Lowercase username, unique.
    #[prost(string, tag = "2")]
    pub username: String,
    /// Free-form display name.
    #[prost(string, tag = "3")]
    pub display_name: String,
    /// `proto::GlobalRole` as i32.
    #[prost(int32, tag = "4")]
    pub role: i32,
    /// argon2id PHC string.
    #[prost(string, tag = "5")]
    pub password_hash: String,
    /// Bumped by logout-everywhere, disable and role change: access tokens carrying an older
    /// version are refused.
    #[prost(uint64, tag = "6")]
    pub token_version: u64,
    /// A disabled user cannot log in and every token of theirs is refused.
    #[prost(bool, tag = "7")]
    pub disabled: bool,
    /// Creation time.
    #[prost(int64, tag = "8")]
    pub created_at_ms: i64,
    /// When the user was last online (presence).
    #[prost(int64, tag = "9")]
    pub last_seen_ms: i64,
    /// Bumped by logout-everywhere and disable: refresh tokens of an older epoch are refused.
    /// (A role change bumps only `token_version`, so the user can refresh into the new role.)
    #[prost(uint64, tag = "10")]
    pub refresh_epoch: u64,
    /// Notifications with an id up to this one are read.
    #[prost(uint64, tag = "11")]
    pub notifications_read_upto: u64,
}

/// One refresh token (`refresh_tokens`, keyed by the token's SHA-256; the token itself is never
/// stored).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RefreshRecord {
    /// Owner.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// The family (one login on one device) this token belongs to.
    #[prost(string, tag = "2")]
    pub family_id: String,
    /// Expiry.
    #[prost(int64, tag = "3")]
    pub expires_at_ms: i64,
    /// Set when the token has been exchanged; presenting it again revokes the family.
    #[prost(bool, tag = "4")]
    pub spent: bool,
    /// The user's `refresh_epoch` when issued.
    #[prost(uint64, tag = "5")]
    pub epoch: u64,
}

/// A refresh token family (`refresh_families`): one login on one device.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FamilyRecord {
    /// Owner.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Revoked by logout or by reuse of a spent token.
    #[prost(bool, tag = "2")]
    pub revoked: bool,
    /// Creation time.
    #[prost(int64, tag = "3")]
    pub created_at_ms: i64,
}

/// A room (`rooms`). The room's last seq is not stored here: it is the last key of the room's
/// events (see `events`), so it cannot drift from the log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomRecord {
    /// Stable id.
    #[prost(string, tag = "1")]
    pub id: String,
    /// Display name (for direct rooms: empty; each side sees the other's username).
    #[prost(string, tag = "2")]
    pub name: String,
    /// Topic.
    #[prost(string, tag = "3")]
    pub topic: String,
    /// `proto::Visibility` as i32.
    #[prost(int32, tag = "4")]
    pub visibility: i32,
    /// Only moderators and above may post.
    #[prost(bool, tag = "5")]
    pub read_only: bool,
    /// Creation time.
    #[prost(int64, tag = "6")]
    pub created_at_ms: i64,
    /// Creator.
    #[prost(string, tag = "7")]
    pub created_by: String,
    /// Number of members now.
    #[prost(uint32, tag = "8")]
    pub member_count: u32,
    /// For direct rooms: the two user ids.
    #[prost(string, repeated, tag = "9")]
    pub direct_pair: Vec<String>,
}

/// One member of one room (`room_members`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRecord {
    /// `proto::RoomRole` as i32.
    #[prost(int32, tag = "1")]
    pub role: i32,
    /// When they joined.
    #[prost(int64, tag = "2")]
    pub joined_at_ms: i64,
    /// The seq of their join event: orders members by how long they have been in the room.
    #[prost(uint64, tag = "3")]
    pub joined_seq: u64,
    /// Their read marker (0 when they join; never moves backwards).
    #[prost(uint64, tag = "4")]
    pub read_seq: u64,
    /// They muted the room: no mention, reply or direct-message notifications from it.
    #[prost(bool, tag = "5")]
    pub muted: bool,
}

/// A ban (`room_bans`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct BanRecord {
    /// Who banned.
    #[prost(string, tag = "1")]
    pub by: String,
    /// Why.
    #[prost(string, tag = "2")]
    pub reason: String,
    /// When.
    #[prost(int64, tag = "3")]
    pub at_ms: i64,
}

/// What a `(sender, client_message_id)` produced (`sent_ids`), so a retry returns it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SentRecord {
    /// Room the message went to.
    #[prost(string, tag = "1")]
    pub room_id: String,
    /// Its seq.
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    /// When it was stored.
    #[prost(int64, tag = "3")]
    pub at_ms: i64,
}

/// A pinned message (`pins`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PinRecord {
    /// Who pinned it.
    #[prost(string, tag = "1")]
    pub by: String,
    /// When.
    #[prost(int64, tag = "2")]
    pub at_ms: i64,
}

/// A registration invite code (`invite_codes`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InviteRecord {
    /// The admin who issued it.
    #[prost(string, tag = "1")]
    pub created_by: String,
    /// When.
    #[prost(int64, tag = "2")]
    pub created_at_ms: i64,
    /// Valid until.
    #[prost(int64, tag = "3")]
    pub expires_at_ms: i64,
    /// Who it is for.
    #[prost(string, tag = "4")]
    pub note: String,
    /// The user it registered (empty: unused).
    #[prost(string, tag = "5")]
    pub used_by: String,
}

/// An upload, finished or not (`attachments`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttachmentRecord {
    /// The uploader.
    #[prost(string, tag = "1")]
    pub owner_id: String,
    /// The file name the uploader gave.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Declared size, bytes.
    #[prost(uint64, tag = "3")]
    pub size: u64,
    /// Declared SHA-256 (checked when the last byte arrives).
    #[prost(bytes = "vec", tag = "4")]
    pub sha256: Vec<u8>,
    /// Bytes stored so far.
    #[prost(uint64, tag = "5")]
    pub received: u64,
    /// When the upload was started.
    #[prost(int64, tag = "6")]
    pub created_at_ms: i64,
    /// Since when no message carries it (its key in `attachments_idle`); 0 while one does.
    #[prost(int64, tag = "7")]
    pub idle_since_ms: i64,
    /// When it was finished; 0 while unfinished.
    #[prost(int64, tag = "8")]
    pub finished_at_ms: i64,
    /// The media type the server decided.
    #[prost(string, tag = "9")]
    pub media_type: String,
    /// Image size in pixels (0: not an image, or unreadable).
    #[prost(uint32, tag = "10")]
    pub width: u32,
    /// Image height.
    #[prost(uint32, tag = "11")]
    pub height: u32,
    /// Live messages carrying it, all rooms.
    #[prost(uint64, tag = "12")]
    pub posts: u64,
}
