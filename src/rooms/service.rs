//! Room operations (DESIGN.md "Rooms and permissions"): each reads the current state inside
//! the writer's transaction, asks [`permissions::may`], and only then writes, so a refused
//! operation writes nothing. Every membership change and room update becomes a `RoomEvent`
//! with the room's next seq, appended to the log and emitted for fan-out.

use std::sync::Arc;

use super::permissions::{
    self, Action, Actor, Denied, GlobalRole, RoomFacts, RoomRole, Standing, Visibility,
};
use crate::audit::{self, AuditAction};
use crate::auth::Principal;
use crate::change::{Caller, Change, Exec};
use crate::config::Role;
use crate::notifications::{Cause, notify};
use crate::proto::{self, room_event::Kind};
use crate::store::unread;
use crate::store::{
    self, BanRecord, JobResult, MemberRecord, RoomRecord, Snapshot, StoreError, WriteCtx, events,
    rooms, users,
};

/// Longest room name, in characters.
pub const MAX_NAME_CHARS: usize = 80;
/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 1024;
/// Longest ban reason, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Why a room operation failed; mapped to a status in `api::status`.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The permission model said no.
    #[error("{0}")]
    Denied(#[from] Denied),
    /// Bad input.
    #[error("{0}")]
    InvalidArgument(String),
    /// Unknown room or user.
    #[error("{0}")]
    NotFound(String),
    /// Conflicts with the current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's tokens were revoked after the request was authenticated.
    #[error("{0}")]
    Unauthenticated(String),
    /// Over the caller's budget of changes.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

const ROOM_NOT_FOUND: &str = "room not found";

fn not_found() -> RoomError {
    RoomError::Denied(Denied::NotFound(ROOM_NOT_FOUND))
}

/// The room operations. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    store: store::Store,
    exec: Exec,
    /// Every room change a user makes is one action of their budget.
    budget: crate::chat::ratelimit::Budget,
    members_may_create_private: bool,
    /// Notifications kept per user.
    keep: usize,
}

/// The global role as the permission model names it.
pub fn global(role: Role) -> GlobalRole {
    match role {
        Role::Guest => GlobalRole::Guest,
        Role::Member => GlobalRole::Member,
        Role::Admin => GlobalRole::Admin,
    }
}

/// A stored/wire room role.
pub fn role_from_i32(v: i32) -> Option<RoomRole> {
    match proto::RoomRole::try_from(v).ok()? {
        proto::RoomRole::Reader => Some(RoomRole::Reader),
        proto::RoomRole::Member => Some(RoomRole::Member),
        proto::RoomRole::Moderator => Some(RoomRole::Moderator),
        proto::RoomRole::Owner => Some(RoomRole::Owner),
        proto::RoomRole::Unspecified => None,
    }
}

/// The wire value of a room role.
pub fn role_to_i32(r: RoomRole) -> i32 {
    (match r {
        RoomRole::Reader => proto::RoomRole::Reader,
        RoomRole::Member => proto::RoomRole::Member,
        RoomRole::Moderator => proto::RoomRole::Moderator,
        RoomRole::Owner => proto::RoomRole::Owner,
    }) as i32
}

/// The permission model's facts about a stored room.
pub fn facts(room: &RoomRecord) -> RoomFacts {
    let visibility = match proto::Visibility::try_from(room.visibility) {
        Ok(proto::Visibility::Private) => Visibility::Private,
        Ok(proto::Visibility::Direct) => Visibility::Direct,
        _ => Visibility::Public,
    };
    RoomFacts { visibility, read_only: room.read_only }
}

/// Where `user` stands with `room`, read from the store.
pub fn standing(s: &impl Snapshot, room: &str, user: &str) -> Result<Standing, StoreError> {
    if let Some(m) = rooms::member(s, room, user)? {
        return Ok(Standing::In(role_from_i32(m.role).unwrap_or(RoomRole::Reader)));
    }
    if rooms::ban(s, room, user)?.is_some() {
        return Ok(Standing::Banned);
    }
    if rooms::invite(s, room, user)?.is_some() {
        return Ok(Standing::Invited);
    }
    Ok(Standing::Outsider)
}

/// A room and where the caller stands with it, loaded for a decision.
pub struct Loaded {
    /// The room.
    pub room: RoomRecord,
    /// The caller.
    pub actor: Actor,
}

/// Refuses a caller whose tokens were revoked after their request was authenticated
/// (disabled, global role changed, logged out everywhere): reads and writer jobs act only for
/// the user as the snapshot knows them now, so a disable that commits while a send waits in
/// the writer's queue stops that send.
pub fn check_current(s: &impl Snapshot, who: &Principal) -> Result<(), RoomError> {
    match users::user(s, &who.user_id)? {
        Some(u) if u.disabled => Err(RoomError::Unauthenticated("this account is disabled".into())),
        Some(u) if u.token_version == who.token_version => Ok(()),
        _ => Err(RoomError::Unauthenticated("token has been revoked; log in again".into())),
    }
}

/// [`check_current`] inside a writer job: storage errors abort the batch, a refusal is the
/// job's answer.
fn job_check_current(
    ctx: &WriteCtx<'_>,
    who: &Principal,
) -> Result<Result<(), RoomError>, StoreError> {
    match check_current(&**ctx, who) {
        Err(RoomError::Store(e)) => Err(e),
        other => Ok(other),
    }
}

/// Loads a room for `who` (who must be current, see [`check_current`]); an unknown id is
/// `NotFound` exactly like an invisible room.
pub fn load(s: &impl Snapshot, who: &Principal, room_id: &str) -> Result<Loaded, RoomError> {
    if room_id.is_empty() {
        return Err(RoomError::InvalidArgument("room_id is empty".into()));
    }
    check_current(s, who)?;
    let room = rooms::room(s, room_id)?.ok_or_else(not_found)?;
    let actor = Actor { global: global(who.role), standing: standing(s, room_id, &who.user_id)? };
    Ok(Loaded { room, actor })
}

/// Whether `actor` may see that `room` exists (GetRoom, ListRooms).
fn visible(actor: Actor, room: &RoomRecord) -> bool {
    match facts(room).visibility {
        Visibility::Public => true,
        Visibility::Private => {
            matches!(actor.standing, Standing::In(_) | Standing::Invited)
                || actor.global == GlobalRole::Admin
        }
        Visibility::Direct => matches!(actor.standing, Standing::In(_)),
    }
}

fn event(room_id: &str, actor_id: &str, at_ms: i64, kind: Kind) -> proto::RoomEvent {
    proto::RoomEvent {
        room_id: room_id.into(),
        seq: 0,
        at_ms,
        actor_id: actor_id.into(),
        kind: Some(kind),
    }
}

fn member_event(user_id: &str, role: Option<RoomRole>) -> proto::MemberChanged {
    proto::MemberChanged {
        user_id: user_id.into(),
        role: role.map(role_to_i32).unwrap_or(0),
        ..Default::default()
    }
}

/// Appends and emits one event; returns its seq.
fn record(ctx: &mut WriteCtx<'_>, mut ev: proto::RoomEvent) -> Result<u64, StoreError> {
    let seq = events::append(ctx, &mut ev)?;
    ctx.emit(ev);
    Ok(seq)
}

/// Builds the wire `Room` as `viewer` sees it.
pub fn room_view(
    s: &impl Snapshot,
    room: &RoomRecord,
    viewer: &str,
) -> Result<proto::Room, StoreError> {
    let member = rooms::member(s, &room.id, viewer)?;
    let last_seq = events::last_seq(s, &room.id)?;
    let (unread_count, mention_count) = match &member {
        Some(m) => (
            unread::unread_count(s, &room.id, viewer, m.read_seq)?,
            unread::mention_count(s, viewer, &room.id, m.read_seq)?,
        ),
        None => (0, 0),
    };
    let name = if room.visibility == proto::Visibility::Direct as i32 {
        let other = room.direct_pair.iter().find(|u| *u != viewer).or(room.direct_pair.first());
        match other {
            Some(id) => users::user(s, id)?.map(|u| u.username).unwrap_or_default(),
            None => String::new(),
        }
    } else {
        room.name.clone()
    };
    Ok(proto::Room {
        id: room.id.clone(),
        name,
        topic: room.topic.clone(),
        visibility: room.visibility,
        read_only: room.read_only,
        my_role: member.as_ref().map(|m| m.role).unwrap_or(0),
        last_seq,
        unread_count,
        member_count: room.member_count,
        created_at_ms: room.created_at_ms,
        mention_count,
        first_seq: events::first_seq(s, &room.id)?,
        muted: member.as_ref().is_some_and(|m| m.muted),
    })
}

fn check_name(name: &str) -> Result<String, RoomError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(RoomError::InvalidArgument("name is empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(RoomError::InvalidArgument(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(RoomError::InvalidArgument("name contains control characters".into()));
    }
    Ok(name.to_string())
}

fn check_topic(topic: &str) -> Result<(), RoomError> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(RoomError::InvalidArgument(format!(
            "topic is longer than {MAX_TOPIC_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_user_id(id: &str) -> Result<(), RoomError> {
    if id.is_empty() {
        return Err(RoomError::InvalidArgument("user_id is empty".into()));
    }
    Ok(())
}

/// The target user must exist; returns their record.
fn target_user(s: &impl Snapshot, id: &str) -> Result<store::UserRecord, RoomError> {
    users::user(s, id)?.ok_or_else(|| RoomError::NotFound(format!("no user with id `{id}`")))
}

impl Rooms {
    /// The room service over a store and where its changes go.
    pub fn new(
        store: store::Store,
        exec: Exec,
        budget: crate::chat::ratelimit::Budget,
        members_may_create_private: bool,
        keep: usize,
    ) -> Rooms {
        Rooms { inner: Arc::new(Inner { store, exec, budget, members_may_create_private, keep }) }
    }

    fn spend(&self, who: &Principal, now_ms: i64) -> Result<(), RoomError> {
        self.inner.budget.take(&who.user_id, now_ms).map_err(RoomError::ResourceExhausted)
    }

    /// A read snapshot.
    pub fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.inner.store.read()
    }

    /// `CreateRoom`: the caller becomes owner; their join is seq 1.
    pub async fn create(
        &self,
        who: &Principal,
        name: &str,
        topic: &str,
        visibility: i32,
        read_only: bool,
        now_ms: i64,
    ) -> Result<proto::Room, RoomError> {
        let name = check_name(name)?;
        check_topic(topic)?;
        let vis = match proto::Visibility::try_from(visibility) {
            Ok(proto::Visibility::Public) => Visibility::Public,
            Ok(proto::Visibility::Private) => Visibility::Private,
            Ok(proto::Visibility::Direct) => {
                return Err(RoomError::InvalidArgument(
                    "visibility DIRECT: direct rooms are opened with OpenDirect".into(),
                ));
            }
            _ => {
                return Err(RoomError::InvalidArgument(format!(
                    "visibility {visibility} is not PUBLIC or PRIVATE"
                )));
            }
        };
        permissions::may_create_room(global(who.role), vis, self.inner.members_may_create_private)?;
        self.spend(who, now_ms)?;
        let rec = RoomRecord {
            id: store::new_id('r'),
            name,
            topic: topic.to_string(),
            visibility,
            read_only,
            created_at_ms: now_ms,
            created_by: who.user_id.clone(),
            member_count: 1,
            direct_pair: vec![],
        };
        self.inner.exec.run(CreateRoom { who: Some(who.into()), rec: Some(rec), now_ms }).await
    }

    /// `GetRoom`.
    pub fn get(&self, who: &Principal, room_id: &str) -> Result<proto::Room, RoomError> {
        let tx = self.read()?;
        let l = load(&tx, who, room_id)?;
        if !visible(l.actor, &l.room) {
            return Err(not_found());
        }
        Ok(room_view(&tx, &l.room, &who.user_id)?)
    }

    /// `ListRooms`: every public room with members, every room the caller is in, every private
    /// room the caller is invited to.
    pub fn list(&self, who: &Principal) -> Result<Vec<proto::Room>, RoomError> {
        let tx = self.read()?;
        let mut ids = rooms::user_room_ids(&tx, &who.user_id)?;
        ids.extend(rooms::invited_room_ids(&tx, &who.user_id)?);
        ids.extend(rooms::public_room_ids(&tx)?);
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(room) = rooms::room(&tx, &id)? else { continue };
            let is_member = rooms::member(&tx, &id, &who.user_id)?.is_some();
            let invited = !is_member && rooms::invite(&tx, &id, &who.user_id)?.is_some();
            // A room nobody is left in is kept (history intact) but listed nowhere.
            if !is_member && !invited && room.member_count == 0 {
                continue;
            }
            if !is_member && !invited && room.visibility != proto::Visibility::Public as i32 {
                continue;
            }
            out.push(room_view(&tx, &room, &who.user_id)?);
        }
        Ok(out)
    }

    /// `ListMembers`: members only (and admins outside direct rooms).
    pub fn members(&self, who: &Principal, room_id: &str) -> Result<Vec<proto::Member>, RoomError> {
        let tx = self.read()?;
        let l = load(&tx, who, room_id)?;
        permissions::may(l.actor, Action::Read, facts(&l.room))?;
        let mut list = rooms::members(&tx, room_id)?;
        list.sort_by(|a, b| b.1.role.cmp(&a.1.role).then(a.1.joined_seq.cmp(&b.1.joined_seq)));
        let mut out = Vec::with_capacity(list.len());
        for (user_id, m) in list {
            let Some(u) = users::user(&tx, &user_id)? else { continue };
            out.push(proto::Member {
                user: Some(crate::auth::accounts::user_to_proto(&u)),
                role: m.role,
                presence: proto::PresenceStatus::Offline as i32,
                last_seen_ms: u.last_seen_ms,
            });
        }
        Ok(out)
    }

    /// `JoinRoom`.
    pub async fn join(
        &self,
        who: &Principal,
        room_id: &str,
        now_ms: i64,
    ) -> Result<proto::Room, RoomError> {
        self.spend(who, now_ms)?;
        self.inner.exec.run(Join { at: Some(RoomAt::new(who, room_id, now_ms)) }).await
    }

    /// `LeaveRoom`. The last owner's ownership passes to the longest-standing moderator, else
    /// the longest-standing member; the leaver's pending invites are withdrawn.
    pub async fn leave(
        &self,
        who: &Principal,
        room_id: &str,
        now_ms: i64,
    ) -> Result<(), RoomError> {
        self.spend(who, now_ms)?;
        self.inner.exec.run(Leave { at: Some(RoomAt::new(who, room_id, now_ms)) }).await
    }

    /// `InviteMember`.
    pub async fn invite(
        &self,
        who: &Principal,
        room_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<(), RoomError> {
        check_user_id(user_id)?;
        let target = user_id.to_string();
        let keep = self.inner.keep;
        self.spend(who, now_ms)?;
        let at = Some(RoomAt::new(who, room_id, now_ms));
        self.inner.exec.run(Invite { at, target, keep: keep as u64 }).await
    }

    /// `SetMemberRole`. Setting OWNER hands ownership over: the previous owner becomes a
    /// moderator.
    pub async fn set_role(
        &self,
        who: &Principal,
        room_id: &str,
        user_id: &str,
        role: i32,
        now_ms: i64,
    ) -> Result<proto::Member, RoomError> {
        check_user_id(user_id)?;
        let to = role_from_i32(role).ok_or_else(|| {
            RoomError::InvalidArgument(format!(
                "role {role} is not READER, MEMBER, MODERATOR or OWNER"
            ))
        })?;
        let target = user_id.to_string();
        let keep = self.inner.keep;
        self.spend(who, now_ms)?;
        let at = Some(RoomAt::new(who, room_id, now_ms));
        self.inner.exec.run(SetRole { at, target, to: role_to_i32(to), keep: keep as u64 }).await
    }

    /// `RemoveMember`: kick, or ban with a reason (a ban also works on a non-member, and
    /// withdraws their invite).
    pub async fn remove(
        &self,
        who: &Principal,
        room_id: &str,
        user_id: &str,
        ban: bool,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), RoomError> {
        check_user_id(user_id)?;
        if user_id == who.user_id {
            return Err(RoomError::InvalidArgument("use LeaveRoom to leave a room".into()));
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(RoomError::InvalidArgument(format!(
                "reason is longer than {MAX_REASON_BYTES} bytes"
            )));
        }
        let target = user_id.to_string();
        let reason = reason.to_string();
        let keep = self.inner.keep;
        self.spend(who, now_ms)?;
        let at = Some(RoomAt::new(who, room_id, now_ms));
        self.inner.exec.run(Remove { at, target, ban, reason, keep: keep as u64 }).await
    }

    /// `UnbanMember`: the user may join again (public) or be invited again (private).
    pub async fn unban(
        &self,
        who: &Principal,
        room_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<(), RoomError> {
        check_user_id(user_id)?;
        let target = user_id.to_string();
        self.spend(who, now_ms)?;
        self.inner.exec.run(Unban { at: Some(RoomAt::new(who, room_id, now_ms)), target }).await
    }

    /// `UpdateRoom`: topic and/or read-only flag; a `RoomUpdated` event.
    pub async fn update(
        &self,
        who: &Principal,
        room_id: &str,
        topic: Option<String>,
        read_only: Option<bool>,
        now_ms: i64,
    ) -> Result<proto::Room, RoomError> {
        if let Some(t) = &topic {
            check_topic(t)?;
        }
        self.spend(who, now_ms)?;
        let at = Some(RoomAt::new(who, room_id, now_ms));
        self.inner.exec.run(UpdateRoom { at, topic, read_only }).await
    }

    /// `MuteRoom`: the caller's notifications from the room stop (`muted`) or start again.
    pub async fn mute(
        &self,
        who: &Principal,
        room_id: &str,
        muted: bool,
        now_ms: i64,
    ) -> Result<proto::Room, RoomError> {
        self.spend(who, now_ms)?;
        self.inner.exec.run(Mute { at: Some(RoomAt::new(who, room_id, now_ms)), muted }).await
    }

    /// `ListRoomAudit`: the room's audit entries after `after_id` (moderators and above).
    pub fn audit(
        &self,
        who: &Principal,
        room_id: &str,
        after_id: u64,
        limit: u32,
    ) -> Result<Vec<proto::AuditEntry>, RoomError> {
        let tx = self.read()?;
        let l = load(&tx, who, room_id)?;
        permissions::may(l.actor, Action::ViewAudit, facts(&l.room))?;
        Ok(crate::store::audit::room_after(&tx, room_id, after_id, audit::page(limit))?)
    }

    /// `OpenDirect`: the one direct room of the caller and `user_id`, created on first use
    /// (two joins, seq 1 and 2), the same room from either side afterwards.
    pub async fn open_direct(
        &self,
        who: &Principal,
        user_id: &str,
        now_ms: i64,
    ) -> Result<proto::Room, RoomError> {
        check_user_id(user_id)?;
        if user_id == who.user_id {
            return Err(RoomError::InvalidArgument(
                "cannot open a direct room with yourself".into(),
            ));
        }
        self.spend(who, now_ms)?;
        let change = OpenDirect {
            who: Some(who.into()),
            other: user_id.to_string(),
            room_id: store::new_id('r'),
            now_ms,
        };
        self.inner.exec.run(change).await
    }
}

fn role_cause<'a>(
    room_id: &'a str,
    seq: u64,
    by: &'a str,
    role: RoomRole,
    at_ms: i64,
) -> Cause<'a> {
    let name = match role {
        RoomRole::Reader => "reader",
        RoomRole::Member => "member",
        RoomRole::Moderator => "moderator",
        RoomRole::Owner => "owner",
    };
    Cause {
        kind: proto::NotificationKind::RoleChanged,
        room_id,
        seq,
        from_user_id: by,
        text: format!("your role is now {name}"),
        at_ms,
    }
}

fn member_view(user: &store::UserRecord, rec: &MemberRecord) -> proto::Member {
    proto::Member {
        user: Some(crate::auth::accounts::user_to_proto(user)),
        role: rec.role,
        presence: proto::PresenceStatus::Offline as i32,
        last_seen_ms: user.last_seen_ms,
    }
}

/// After the owner left: the longest-standing moderator, else the longest-standing member
/// (else reader) becomes owner. Nobody left: the room stays, ownerless and unlisted.
fn hand_over_ownership(
    ctx: &mut WriteCtx<'_>,
    room_id: &str,
    leaver: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let members = rooms::members(&**ctx, room_id)?;
    if members.iter().any(|(_, m)| m.role == role_to_i32(RoomRole::Owner)) {
        return Ok(());
    }
    let heir = members
        .into_iter()
        .max_by(|(_, a), (_, b)| a.role.cmp(&b.role).then(b.joined_seq.cmp(&a.joined_seq)));
    if let Some((uid, mut m)) = heir {
        m.role = role_to_i32(RoomRole::Owner);
        record(
            ctx,
            event(room_id, leaver, now_ms, Kind::Member(member_event(&uid, Some(RoomRole::Owner)))),
        )?;
        rooms::put_member(ctx, room_id, &uid, &m)?;
    }
    Ok(())
}

/// Change: `CreateRoom`: the caller becomes owner; their join is seq 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateRoom {
    /// The caller.
    #[prost(message, optional, tag = "1")]
    pub who: Option<Caller>,
    /// The new room (id included).
    #[prost(message, optional, tag = "2")]
    pub rec: Option<RoomRecord>,
    /// When it was asked.
    #[prost(int64, tag = "3")]
    pub now_ms: i64,
}

impl Change for CreateRoom {
    type T = proto::Room;
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Room, RoomError> {
        let (who, rec, now_ms) =
            (self.who.unwrap_or_default().principal(), self.rec.unwrap_or_default(), self.now_ms);
        let user = who.user_id.clone();
        if let Err(e) = job_check_current(ctx, &who)? {
            return Ok(Err(e));
        }
        let mut joined = member_event(&user, Some(RoomRole::Owner));
        joined.joined = true;
        let seq = record(ctx, event(&rec.id, &user, now_ms, Kind::Member(joined)))?;
        let owner = MemberRecord {
            role: role_to_i32(RoomRole::Owner),
            joined_at_ms: now_ms,
            joined_seq: seq,
            read_seq: 0,
            ..Default::default()
        };
        rooms::put_member(ctx, &rec.id, &user, &owner)?;
        let public = rec.visibility == proto::Visibility::Public as i32;
        rooms::put_room(ctx, &rec, public)?;
        Ok(Ok(room_view(&**ctx, &rec, &user)?))
    }
}

/// Change: `OpenDirect`: the one direct room of the caller and `other`, created (as `room_id`)
/// on first use, with two joins, seq 1 and 2; the same room from either side afterwards.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OpenDirect {
    /// The caller.
    #[prost(message, optional, tag = "1")]
    pub who: Option<Caller>,
    /// The other user.
    #[prost(string, tag = "2")]
    pub other: String,
    /// The id the room gets if it is created.
    #[prost(string, tag = "3")]
    pub room_id: String,
    /// When it was asked.
    #[prost(int64, tag = "4")]
    pub now_ms: i64,
}

impl Change for OpenDirect {
    type T = proto::Room;
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Room, RoomError> {
        let who = self.who.unwrap_or_default().principal();
        let (me, other, now_ms) = (who.user_id.clone(), self.other, self.now_ms);
        if let Err(e) = job_check_current(ctx, &who)? {
            return Ok(Err(e));
        }
        let Some(other_user) = users::user(&**ctx, &other)? else {
            return Ok(Err(RoomError::NotFound(format!("no user with id `{other}`"))));
        };
        let key = rooms::direct_key(&me, &other);
        if let Some(id) = rooms::direct_room_id(&**ctx, &key)?
            && let Some(room) = rooms::room(&**ctx, &id)?
        {
            return Ok(Ok(room_view(&**ctx, &room, &me)?));
        }
        if other_user.disabled {
            return Ok(Err(RoomError::FailedPrecondition(format!(
                "user `{}` is disabled",
                other_user.username
            ))));
        }
        let rec = RoomRecord {
            id: self.room_id,
            name: String::new(),
            topic: String::new(),
            visibility: proto::Visibility::Direct as i32,
            read_only: false,
            created_at_ms: now_ms,
            created_by: me.clone(),
            member_count: 2,
            direct_pair: vec![me.clone(), other.clone()],
        };
        for uid in [&me, &other] {
            let mut joined = member_event(uid, Some(RoomRole::Member));
            joined.joined = true;
            let seq = record(ctx, event(&rec.id, &me, now_ms, Kind::Member(joined)))?;
            let m = MemberRecord {
                role: role_to_i32(RoomRole::Member),
                joined_at_ms: now_ms,
                joined_seq: seq,
                read_seq: 0,
                ..Default::default()
            };
            rooms::put_member(ctx, &rec.id, uid, &m)?;
        }
        rooms::put_room(ctx, &rec, false)?;
        rooms::put_direct_room(ctx, &key, &rec.id)?;
        Ok(Ok(room_view(&**ctx, &rec, &me)?))
    }
}

/// Where a room change happens: the caller, the room and the time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomAt {
    /// The caller.
    #[prost(message, optional, tag = "1")]
    pub who: Option<Caller>,
    /// The room.
    #[prost(string, tag = "2")]
    pub room_id: String,
    /// When it was asked.
    #[prost(int64, tag = "3")]
    pub now_ms: i64,
}

impl RoomAt {
    fn new(who: &Principal, room_id: &str, now_ms: i64) -> RoomAt {
        RoomAt { who: Some(who.into()), room_id: room_id.to_string(), now_ms }
    }
}

/// A room change inside the transaction: loads the room and the caller (who must be
/// current), then `op` decides and writes.
fn in_room<T>(
    ctx: &mut WriteCtx<'_>,
    at: Option<RoomAt>,
    op: impl FnOnce(&mut WriteCtx<'_>, Loaded, &str, i64) -> Result<T, RoomError>,
) -> JobResult<T, RoomError> {
    let at = at.unwrap_or_default();
    let who = at.who.unwrap_or_default().principal();
    let loaded = match load(&**ctx, &who, &at.room_id) {
        Ok(l) => l,
        Err(RoomError::Store(e)) => return Err(e),
        Err(e) => return Ok(Err(e)),
    };
    match op(ctx, loaded, &who.user_id, at.now_ms) {
        Err(RoomError::Store(e)) => Err(e),
        other => Ok(other),
    }
}

/// Change: `JoinRoom`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Join {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
}

impl Change for Join {
    type T = proto::Room;
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Room, RoomError> {
        in_room(ctx, self.at, move |ctx, mut l, me, now_ms| {
            permissions::may(l.actor, Action::Join, facts(&l.room))?;
            let mut joined = member_event(me, Some(RoomRole::Member));
            joined.joined = true;
            let seq = record(ctx, event(&l.room.id, me, now_ms, Kind::Member(joined)))?;
            rooms::delete_invite(ctx, &l.room.id, me)?;
            let rec = MemberRecord {
                role: role_to_i32(RoomRole::Member),
                joined_at_ms: now_ms,
                joined_seq: seq,
                read_seq: 0,
                ..Default::default()
            };
            rooms::put_member(ctx, &l.room.id, me, &rec)?;
            l.room.member_count += 1;
            rooms::put_room(ctx, &l.room, false)?;
            Ok(room_view(&**ctx, &l.room, me)?)
        })
    }
}

/// Change: `LeaveRoom`. The last owner's ownership passes to the longest-standing moderator,
/// else the longest-standing member; the leaver's pending invites are withdrawn.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Leave {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
}

impl Change for Leave {
    type T = ();
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), RoomError> {
        in_room(ctx, self.at, move |ctx, mut l, me, now_ms| {
            permissions::may(l.actor, Action::Leave, facts(&l.room))?;
            let was_owner = l.actor.standing == Standing::In(RoomRole::Owner);
            let mut left = member_event(me, None);
            left.left = true;
            record(ctx, event(&l.room.id, me, now_ms, Kind::Member(left)))?;
            rooms::delete_member(ctx, &l.room.id, me)?;
            rooms::delete_invites_by(ctx, &l.room.id, me)?;
            l.room.member_count = l.room.member_count.saturating_sub(1);
            rooms::put_room(ctx, &l.room, false)?;
            if was_owner {
                hand_over_ownership(ctx, &l.room.id, me, now_ms)?;
            }
            Ok(())
        })
    }
}

/// Change: `InviteMember`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Invite {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
    /// The invited user.
    #[prost(string, tag = "2")]
    pub target: String,
    /// Notifications kept per user.
    #[prost(uint64, tag = "3")]
    pub keep: u64,
}

impl Change for Invite {
    type T = ();
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), RoomError> {
        let (target, keep) = (self.target, self.keep as usize);
        in_room(ctx, self.at, move |ctx, l, me, now_ms| {
            let target_standing = standing(&**ctx, &l.room.id, &target)?;
            // Visibility first: an outsider of a private room must not learn about the target.
            permissions::may(l.actor, Action::Invite { target: target_standing }, facts(&l.room))?;
            let user = target_user(&**ctx, &target)?;
            if user.disabled {
                return Err(RoomError::FailedPrecondition(format!(
                    "user `{}` is disabled",
                    user.username
                )));
            }
            rooms::put_invite(ctx, &l.room.id, &target, me)?;
            let cause = Cause {
                kind: proto::NotificationKind::Invite,
                room_id: &l.room.id,
                seq: 0,
                from_user_id: me,
                text: l.room.name.clone(),
                at_ms: now_ms,
            };
            notify(ctx, keep, &target, cause)?;
            Ok(())
        })
    }
}

/// Change: `SetMemberRole`. Setting OWNER hands ownership over: the previous owner becomes a
/// moderator.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SetRole {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
    /// The member whose role changes.
    #[prost(string, tag = "2")]
    pub target: String,
    /// The new role (`proto::RoomRole`).
    #[prost(int32, tag = "3")]
    pub to: i32,
    /// Notifications kept per user.
    #[prost(uint64, tag = "4")]
    pub keep: u64,
}

impl Change for SetRole {
    type T = proto::Member;
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Member, RoomError> {
        let (target, keep) = (self.target, self.keep as usize);
        let Some(to) = role_from_i32(self.to) else {
            return Ok(Err(RoomError::InvalidArgument(format!("role {} is unknown", self.to))));
        };
        in_room(ctx, self.at, move |ctx, l, me, now_ms| {
            let target_standing = standing(&**ctx, &l.room.id, &target)?;
            permissions::may(
                l.actor,
                Action::SetRole { target: target_standing, to },
                facts(&l.room),
            )?;
            let user = target_user(&**ctx, &target)?;
            let Some(mut rec) = rooms::member(&**ctx, &l.room.id, &target)? else {
                return Err(RoomError::FailedPrecondition(
                    "user is not a member of this room".into(),
                ));
            };
            if rec.role == role_to_i32(to) {
                return Ok(member_view(&user, &rec));
            }
            if to == RoomRole::Owner {
                // Demote the current owner(s) to moderator first.
                for (uid, mut m) in rooms::members(&**ctx, &l.room.id)? {
                    if m.role == role_to_i32(RoomRole::Owner) {
                        m.role = role_to_i32(RoomRole::Moderator);
                        let seq = record(
                            ctx,
                            event(
                                &l.room.id,
                                me,
                                now_ms,
                                Kind::Member(member_event(&uid, Some(RoomRole::Moderator))),
                            ),
                        )?;
                        rooms::put_member(ctx, &l.room.id, &uid, &m)?;
                        let cause = role_cause(&l.room.id, seq, me, RoomRole::Moderator, now_ms);
                        notify(ctx, keep, &uid, cause)?;
                    }
                }
            }
            rec.role = role_to_i32(to);
            let seq = record(
                ctx,
                event(&l.room.id, me, now_ms, Kind::Member(member_event(&target, Some(to)))),
            )?;
            rooms::put_member(ctx, &l.room.id, &target, &rec)?;
            notify(ctx, keep, &target, role_cause(&l.room.id, seq, me, to, now_ms))?;
            let role = proto::RoomRole::try_from(role_to_i32(to)).unwrap_or_default().as_str_name();
            let detail = format!("now {}", role.trim_start_matches("ROOM_ROLE_").to_lowercase());
            let on = audit::Target { room_id: &l.room.id, user_id: &target, seq: 0 };
            audit::record(ctx, now_ms, me, AuditAction::RoleChanged, on, "", detail)?;
            Ok(member_view(&user, &rec))
        })
    }
}

/// Change: `RemoveMember`: kick, or ban with a reason (a ban also works on a non-member, and
/// withdraws their invite).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Remove {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
    /// The user removed.
    #[prost(string, tag = "2")]
    pub target: String,
    /// A ban, not only a kick.
    #[prost(bool, tag = "3")]
    pub ban: bool,
    /// The moderator's reason.
    #[prost(string, tag = "4")]
    pub reason: String,
    /// Notifications kept per user.
    #[prost(uint64, tag = "5")]
    pub keep: u64,
}

impl Change for Remove {
    type T = ();
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), RoomError> {
        let (target, ban, reason, keep) = (self.target, self.ban, self.reason, self.keep as usize);
        in_room(ctx, self.at, move |ctx, mut l, me, now_ms| {
            let target_standing = standing(&**ctx, &l.room.id, &target)?;
            let action = if ban {
                Action::Ban { target: target_standing }
            } else {
                Action::Remove { target: target_standing }
            };
            permissions::may(l.actor, action, facts(&l.room))?;
            target_user(&**ctx, &target)?;
            let was_member = matches!(target_standing, Standing::In(_));
            let mut changed = member_event(&target, None);
            changed.removed = was_member;
            changed.banned = ban;
            changed.reason = reason.clone();
            let seq = record(ctx, event(&l.room.id, me, now_ms, Kind::Member(changed)))?;
            // Never tell an outsider about a private room they were banned from in advance.
            let may_know = was_member
                || target_standing == Standing::Invited
                || facts(&l.room).visibility == Visibility::Public;
            if (was_member || ban) && may_know {
                let text = match (ban, reason.is_empty()) {
                    (true, true) => "banned".to_string(),
                    (true, false) => format!("banned: {reason}"),
                    (false, true) => "removed".to_string(),
                    (false, false) => format!("removed: {reason}"),
                };
                let cause = Cause {
                    kind: proto::NotificationKind::Removed,
                    room_id: &l.room.id,
                    seq,
                    from_user_id: me,
                    text,
                    at_ms: now_ms,
                };
                notify(ctx, keep, &target, cause)?;
            }
            if was_member {
                rooms::delete_member(ctx, &l.room.id, &target)?;
                rooms::delete_invites_by(ctx, &l.room.id, &target)?;
                l.room.member_count = l.room.member_count.saturating_sub(1);
                rooms::put_room(ctx, &l.room, false)?;
            }
            let act = if ban { AuditAction::MemberBanned } else { AuditAction::MemberRemoved };
            let on = audit::Target { room_id: &l.room.id, user_id: &target, seq: 0 };
            audit::record(ctx, now_ms, me, act, on, &reason, String::new())?;
            if ban {
                rooms::delete_invite(ctx, &l.room.id, &target)?;
                rooms::put_ban(
                    ctx,
                    &l.room.id,
                    &target,
                    &BanRecord { by: me.to_string(), reason, at_ms: now_ms },
                )?;
            }
            Ok(())
        })
    }
}

/// Change: `UnbanMember`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Unban {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
    /// The user unbanned.
    #[prost(string, tag = "2")]
    pub target: String,
}

impl Change for Unban {
    type T = ();
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<(), RoomError> {
        let target = self.target;
        in_room(ctx, self.at, move |ctx, l, me, now_ms| {
            let target_standing = standing(&**ctx, &l.room.id, &target)?;
            permissions::may(l.actor, Action::Unban { target: target_standing }, facts(&l.room))?;
            let mut changed = member_event(&target, None);
            changed.unbanned = true;
            record(ctx, event(&l.room.id, me, now_ms, Kind::Member(changed)))?;
            rooms::delete_ban(ctx, &l.room.id, &target)?;
            let on = audit::Target { room_id: &l.room.id, user_id: &target, seq: 0 };
            audit::record(ctx, now_ms, me, AuditAction::MemberUnbanned, on, "", String::new())?;
            Ok(())
        })
    }
}

/// Change: `UpdateRoom` (topic and/or read-only flag; a `RoomUpdated` event).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateRoom {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
    /// The new topic.
    #[prost(string, optional, tag = "2")]
    pub topic: Option<String>,
    /// The new read-only flag.
    #[prost(bool, optional, tag = "3")]
    pub read_only: Option<bool>,
}

impl Change for UpdateRoom {
    type T = proto::Room;
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Room, RoomError> {
        let (topic, read_only) = (self.topic, self.read_only);
        in_room(ctx, self.at, move |ctx, mut l, me, now_ms| {
            permissions::may(l.actor, Action::UpdateRoom, facts(&l.room))?;
            if topic.is_none() && read_only.is_none() {
                return Err(RoomError::InvalidArgument(
                    "nothing to update: set topic and/or read_only".into(),
                ));
            }
            if let Some(t) = topic {
                l.room.topic = t;
            }
            if let Some(r) = read_only {
                l.room.read_only = r;
            }
            rooms::put_room(ctx, &l.room, false)?;
            let mut view = room_view(&**ctx, &l.room, "")?;
            view.my_role = 0;
            view.last_seq += 1;
            record(
                ctx,
                event(
                    &l.room.id,
                    me,
                    now_ms,
                    Kind::RoomUpdated(proto::RoomUpdated { room: Some(view) }),
                ),
            )?;
            let detail = format!(
                "topic \"{}\"{}",
                l.room.topic,
                if l.room.read_only { ", read-only" } else { "" }
            );
            let on = audit::Target { room_id: &l.room.id, ..Default::default() };
            audit::record(ctx, now_ms, me, AuditAction::RoomUpdated, on, "", detail)?;
            Ok(room_view(&**ctx, &l.room, me)?)
        })
    }
}

/// Change: `MuteRoom`: the member's notifications from the room stop or start again (no
/// event: it concerns nobody else).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mute {
    /// Caller, room, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<RoomAt>,
    /// Mute (true) or unmute.
    #[prost(bool, tag = "2")]
    pub muted: bool,
}

impl Change for Mute {
    type T = proto::Room;
    type E = RoomError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Room, RoomError> {
        let muted = self.muted;
        in_room(ctx, self.at, move |ctx, l, me, _| {
            permissions::may(l.actor, Action::Read, facts(&l.room))?;
            let Some(mut m) = rooms::member(&**ctx, &l.room.id, me)? else {
                return Err(RoomError::FailedPrecondition("only members can mute a room".into()));
            };
            if m.muted != muted {
                m.muted = muted;
                rooms::put_member(ctx, &l.room.id, me, &m)?;
            }
            Ok(room_view(&**ctx, &l.room, me)?)
        })
    }
}
