//! Room permissions: the one place that decides who may do what in a room.
//!
//! Every handler (the `RoomService` and `ChatService` RPCs and the `Connect` frames) asks
//! [`may`] or [`may_create_room`] before it touches the store, and maps a [`Denied`] onto the
//! gRPC status of the same name. The rules are DESIGN.md's "Rooms and permissions" table and
//! API.md's status-code table; the decisions those documents leave open are written down at
//! the function that makes them.
//!
//! Everything here is pure: no I/O, no clock, no store. The caller looks up the facts (the
//! actor's global role, their standing with the room, the target's standing, the room's
//! visibility and read-only flag) and passes them in, so the whole model is testable as a
//! table. The matrix test enumerates every cell (actor x room kind x action x target) and
//! checks it against an independently written specification.

/// A user's server-wide role, carried in the access token.
///
/// It exists because two rules do not depend on any room: who may create rooms at all, and the
/// global admin, who acts as owner in every room except direct rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalRole {
    /// May join public rooms and talk, may not create rooms.
    Guest,
    /// May create public rooms, and private rooms unless the server restricts that to admins.
    Member,
    /// Acts as owner (and above) in every public and private room; powerless in direct rooms.
    Admin,
}

/// A member's role within one room.
///
/// It exists because moderation is ranked: a role may only act on roles strictly below it. The
/// derived order is that rank: `Reader < Member < Moderator < Owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoomRole {
    /// May read the room but never post.
    Reader,
    /// May read and post (posting in a read-only room needs a moderator).
    Member,
    /// May moderate members below them, update the room and post in a read-only room.
    Moderator,
    /// The one owner of the room: may set any role below owner and hand over ownership.
    Owner,
}

/// Who can see and enter a room.
///
/// It exists because visibility changes both the rules (invites, direct rooms) and the way a
/// refusal is reported: a private or direct room is never revealed to outsiders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Listed for everyone; anyone not banned may join.
    Public,
    /// Invisible to non-members; joined only with a pending invite.
    Private,
    /// The one room of exactly two users, opened with `OpenDirect`.
    Direct,
}

/// Where a user stands with one room.
///
/// It exists because "not a member" comes in three kinds that the rules tell apart: a pending
/// invite lets a user into a private room, a ban keeps them out of a public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Not a member, not invited, not banned.
    Outsider,
    /// Not a member, with a pending invite.
    Invited,
    /// Banned from the room (and therefore not a member).
    Banned,
    /// A member with this room role.
    In(RoomRole),
}

/// The user asking to act: everything about them that a decision needs.
///
/// It exists so that a decision takes one value for "who", looked up once by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The actor's server-wide role.
    pub global: GlobalRole,
    /// The actor's standing with the room acted on.
    pub standing: Standing,
}

/// The facts about a room that a decision needs.
///
/// It exists so that the model never reads the store: the caller passes the room's state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomFacts {
    /// Who can see and enter the room.
    pub visibility: Visibility,
    /// Whether posting needs a moderator (ignored in direct rooms, where both users may post).
    pub read_only: bool,
}

/// Something a user asks to do in a room.
///
/// It exists so that every handler names its request in the same vocabulary; actions on another
/// user carry that user's standing with the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Join the room (`JoinRoom`).
    Join,
    /// Leave the room (`LeaveRoom`).
    Leave,
    /// See the room: history, subscribe, get the room, list its members.
    Read,
    /// Post to the room: send a message, and also send a typing indicator.
    Post,
    /// Invite a user (`InviteMember`).
    Invite {
        /// The invited user's standing with the room.
        target: Standing,
    },
    /// Remove (kick) a member (`RemoveMember` without `ban`).
    Remove {
        /// The removed user's standing with the room.
        target: Standing,
    },
    /// Ban a user, member or not (`RemoveMember` with `ban`).
    Ban {
        /// The banned user's standing with the room.
        target: Standing,
    },
    /// Lift a ban.
    Unban {
        /// The unbanned user's standing with the room.
        target: Standing,
    },
    /// Change a member's room role (`SetMemberRole`); `to: Owner` hands over ownership.
    SetRole {
        /// The user's standing with the room.
        target: Standing,
        /// The role asked for.
        to: RoomRole,
    },
    /// Edit a message (`EditMessage`).
    EditMessage {
        /// Whether the actor sent the message.
        own: bool,
    },
    /// Delete a message (`DeleteMessage`).
    DeleteMessage {
        /// Whether the actor sent the message.
        own: bool,
    },
    /// Update the room's topic or read-only flag (`UpdateRoom`).
    UpdateRoom,
    /// Add or remove one's own reaction to a message (`AddReaction`, `RemoveReaction`).
    React,
    /// Pin or unpin a message (`PinMessage`, `UnpinMessage`).
    Pin,
    /// Read the room's audit log (`RoomService.ListRoomAudit`).
    ViewAudit,
    /// Search the room's messages (`ChatService.Search`).
    Search,
    /// See an attachment a message of the room carries (`AttachmentService.GetAttachment`,
    /// `Download`, its download link).
    Download,
}

/// Why an action is refused; each variant is the gRPC status the handler returns.
///
/// It exists so that every handler reports the same refusal with the same status (API.md's
/// table) and a message that says what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// `NOT_FOUND`: a private or direct room the actor may not see. The message never reveals
    /// that the room exists.
    NotFound(&'static str),
    /// `PERMISSION_DENIED`: the actor may see the room but their role does not allow this.
    PermissionDenied(&'static str),
    /// `FAILED_PRECONDITION`: the request conflicts with the current state.
    FailedPrecondition(&'static str),
    /// `ALREADY_EXISTS`: the request is already true (already a member, already banned).
    AlreadyExists(&'static str),
}

impl Denied {
    /// The human-readable message naming the problem.
    #[must_use]
    pub fn message(&self) -> &'static str {
        match *self {
            Denied::NotFound(m)
            | Denied::PermissionDenied(m)
            | Denied::FailedPrecondition(m)
            | Denied::AlreadyExists(m) => m,
        }
    }

    /// The gRPC status name (`"NOT_FOUND"`, ...), as carried in `StreamError.code`.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Denied::NotFound(_) => "NOT_FOUND",
            Denied::PermissionDenied(_) => "PERMISSION_DENIED",
            Denied::FailedPrecondition(_) => "FAILED_PRECONDITION",
            Denied::AlreadyExists(_) => "ALREADY_EXISTS",
        }
    }
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Denied {}

/// The message of every `NOT_FOUND`: the same as for an unknown room id.
const ROOM_NOT_FOUND: &str = "room not found";

/// Decides whether `actor` may perform `action` in `room`.
///
/// The order of the checks is part of the contract:
/// 1. Direct rooms have their own small rule set: the two users are plain members, nobody
///    joins, leaves or moderates, and a global admin has no powers there.
/// 2. Privacy: a non-member of a private room gets `NotFound` for everything except joining
///    with an invite; a global admin is exempt.
/// 3. The actor's capability (role or admin), then the target's state, then the rank of the
///    actor against the target. So a member who may not kick at all hears `PermissionDenied`
///    whatever the target, and learns nothing about the target's state.
///
/// The caller handles what needs more than these facts: self-actions, handing over ownership
/// before the last owner leaves, and whether a message exists.
///
/// # Errors
///
/// A [`Denied`] whose variant is the gRPC status to return and whose message says why.
pub fn may(actor: Actor, action: Action, room: RoomFacts) -> Result<(), Denied> {
    if room.visibility == Visibility::Direct {
        return in_direct_room(actor.standing, action);
    }
    let rank = match (actor.global, actor.standing) {
        (GlobalRole::Admin, _) => Rank::Admin,
        (_, Standing::In(role)) => Rank::Role(role),
        (_, standing) => return as_non_member(standing, action, room.visibility),
    };
    let is_member = matches!(actor.standing, Standing::In(_));
    let private = room.visibility == Visibility::Private;
    match action {
        Action::Join if is_member => Err(Denied::AlreadyExists("you are already a member")),
        // Only an admin who is not a member gets here: the admin needs no invite and no unban.
        Action::Join => Ok(()),
        Action::Leave if is_member => Ok(()),
        Action::Leave => Err(Denied::FailedPrecondition("you are not a member of this room")),
        Action::Read => Ok(()),
        Action::Post => post(rank, room.read_only),
        Action::Invite { target } => invite(rank, target, private),
        Action::Remove { target } => remove(rank, target),
        Action::Ban { target } => ban(rank, target),
        Action::Unban { target } => unban(rank, target),
        Action::SetRole { target, to } => set_role(rank, target, to),
        // Editing is posting again: a sender who may no longer post here (now a reader, or
        // the room became read-only) may not rewrite what they said either.
        Action::EditMessage { own: true } => post(rank, room.read_only).map_err(|_| {
            Denied::PermissionDenied("you may not post in this room, so you may not edit here")
        }),
        Action::EditMessage { own: false } => {
            Err(Denied::PermissionDenied("only its sender may edit a message"))
        }
        Action::DeleteMessage { own: true } => Ok(()),
        Action::DeleteMessage { own: false } => require(
            rank,
            RoomRole::Moderator,
            "only its sender or a moderator and above may delete a message",
        ),
        Action::UpdateRoom => {
            require(rank, RoomRole::Moderator, "only moderators and above may update the room")
        }
        // A reaction is not a post: readers react, and so does everyone in a read-only room
        // (announcement channels are where reactions are used most).
        Action::React => Ok(()),
        Action::Pin => require(rank, RoomRole::Moderator, "only moderators and above may pin"),
        Action::ViewAudit => require(
            rank,
            RoomRole::Moderator,
            "only moderators and above may read the room's audit log",
        ),
        // Search covers the rooms one is in (public rooms too only once joined), so a global
        // admin who may read a room's history still joins it to search it.
        Action::Search if is_member => Ok(()),
        Action::Search => Err(Denied::PermissionDenied(
            "search covers the rooms you are a member of: join this one to search it",
        )),
        // Members only, a global admin too: an attachment is seen where it was shared, and a
        // refusal never says that it exists.
        Action::Download if is_member => Ok(()),
        Action::Download => Err(Denied::NotFound("attachment not found")),
    }
}

/// Decides whether a user with the `global` role may create a room of `visibility`.
///
/// `members_may_create_private` is the server setting behind "create private room: member,
/// admin (configurable: admins only)". Direct rooms are never created here: `OpenDirect` opens
/// them. Rejecting an unspecified visibility is the caller's (`INVALID_ARGUMENT`) job.
///
/// # Errors
///
/// `PermissionDenied` for a guest, for a direct room, and for a member creating a private room
/// when `members_may_create_private` is off.
pub fn may_create_room(
    global: GlobalRole,
    visibility: Visibility,
    members_may_create_private: bool,
) -> Result<(), Denied> {
    match (global, visibility) {
        (_, Visibility::Direct) => {
            Err(Denied::PermissionDenied("direct rooms are opened with OpenDirect"))
        }
        (GlobalRole::Guest, _) => Err(Denied::PermissionDenied("guests may not create rooms")),
        (GlobalRole::Member, Visibility::Private) if !members_may_create_private => {
            Err(Denied::PermissionDenied("only admins may create private rooms on this server"))
        }
        (GlobalRole::Member | GlobalRole::Admin, _) => Ok(()),
    }
}

/// The authority an actor brings to a public or private room: their room role, or the global
/// admin's, which outranks every room role (the derived order puts `Admin` above any `Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Role(RoomRole),
    Admin,
}

impl Rank {
    fn at_least(self, role: RoomRole) -> bool {
        self >= Rank::Role(role)
    }

    fn outranks(self, role: RoomRole) -> bool {
        self > Rank::Role(role)
    }
}

/// `Ok` if `rank` is at least `role`, else `PermissionDenied(message)`.
fn require(rank: Rank, role: RoomRole, message: &'static str) -> Result<(), Denied> {
    if rank.at_least(role) { Ok(()) } else { Err(Denied::PermissionDenied(message)) }
}

/// A direct room belongs to exactly two users, who are both plain members whatever role is
/// stored: they may always read and post (the read-only flag does not apply), and edit and
/// delete their own messages. Nobody joins, leaves, is invited, moderated or given a role, and
/// the room is not updated. Anyone else, a global admin included, is told it does not exist.
fn in_direct_room(standing: Standing, action: Action) -> Result<(), Denied> {
    if !matches!(standing, Standing::In(_)) {
        return Err(Denied::NotFound(ROOM_NOT_FOUND));
    }
    match action {
        // Both users pin: a direct room has nobody above them.
        Action::Read
        | Action::Post
        | Action::React
        | Action::Pin
        | Action::Search
        | Action::Download => Ok(()),
        Action::EditMessage { own } | Action::DeleteMessage { own } if own => Ok(()),
        Action::EditMessage { .. } | Action::DeleteMessage { .. } => {
            Err(Denied::PermissionDenied("in a direct room only its sender may change a message"))
        }
        Action::Join | Action::Leave | Action::Invite { .. } => Err(Denied::FailedPrecondition(
            "direct rooms belong to exactly two users: nobody joins, leaves or is invited",
        )),
        Action::Remove { .. }
        | Action::Ban { .. }
        | Action::Unban { .. }
        | Action::SetRole { .. }
        | Action::UpdateRoom
        | Action::ViewAudit => {
            Err(Denied::FailedPrecondition("direct rooms have no moderation, roles or settings"))
        }
    }
}

/// A user who is not a member (and not a global admin). A private room does not exist for
/// them, except that a pending invite lets them join. A public room may be joined unless
/// banned, but nothing in it is theirs to read or do until they join.
fn as_non_member(standing: Standing, action: Action, visibility: Visibility) -> Result<(), Denied> {
    if visibility == Visibility::Private {
        return match (standing, action) {
            (Standing::Invited, Action::Join) => Ok(()),
            _ => Err(Denied::NotFound(ROOM_NOT_FOUND)),
        };
    }
    let banned = standing == Standing::Banned;
    match action {
        Action::Join | Action::Read | Action::Post | Action::React | Action::Search if banned => {
            Err(Denied::PermissionDenied("you are banned from this room"))
        }
        Action::Join => Ok(()),
        Action::Leave => Err(Denied::FailedPrecondition("you are not a member of this room")),
        Action::Read => Err(Denied::PermissionDenied("join the room to read it")),
        Action::Post => Err(Denied::PermissionDenied("join the room to post in it")),
        Action::React => Err(Denied::PermissionDenied("join the room to react in it")),
        Action::Search => Err(Denied::PermissionDenied("join the room to search it")),
        Action::Download => Err(Denied::NotFound("attachment not found")),
        _ => Err(Denied::PermissionDenied("you are not a member of this room")),
    }
}

/// Post: member and above; in a read-only room, moderator and above; never a reader.
fn post(rank: Rank, read_only: bool) -> Result<(), Denied> {
    if rank == Rank::Role(RoomRole::Reader) {
        Err(Denied::PermissionDenied("readers may not post in this room"))
    } else if read_only {
        require(
            rank,
            RoomRole::Moderator,
            "this room is read-only: only moderators and above may post",
        )
    } else {
        Ok(())
    }
}

/// Invite: any member of a public room (readers included), moderator and above in a private
/// room. Members cannot be invited again; banned users must be unbanned first. Inviting a user
/// who already has a pending invite is allowed (it renews the invite).
fn invite(rank: Rank, target: Standing, private: bool) -> Result<(), Denied> {
    if private {
        require(
            rank,
            RoomRole::Moderator,
            "only moderators and above may invite to a private room",
        )?;
    }
    match target {
        Standing::In(_) => Err(Denied::AlreadyExists("the user is already a member")),
        Standing::Banned => {
            Err(Denied::FailedPrecondition("the user is banned from this room; unban them first"))
        }
        Standing::Outsider | Standing::Invited => Ok(()),
    }
}

/// Remove (kick): moderator and above, only members of a lower role.
fn remove(rank: Rank, target: Standing) -> Result<(), Denied> {
    require(rank, RoomRole::Moderator, "only moderators and above may remove members")?;
    match target {
        Standing::In(role) => act_on_member(rank, role),
        _ => Err(Denied::FailedPrecondition("the user is not a member of this room")),
    }
}

/// Ban: moderator and above, only members of a lower role; a non-member may be banned
/// pre-emptively.
fn ban(rank: Rank, target: Standing) -> Result<(), Denied> {
    require(rank, RoomRole::Moderator, "only moderators and above may ban")?;
    match target {
        Standing::In(role) => act_on_member(rank, role),
        Standing::Banned => Err(Denied::AlreadyExists("the user is already banned")),
        Standing::Outsider | Standing::Invited => Ok(()),
    }
}

/// The rank rule shared by remove and ban: the target's role must be strictly below the
/// actor's. Only a global admin outranks the owner, and even an admin may not remove or ban the
/// owner: API.md makes "removing the last owner" a `FAILED_PRECONDITION`, and a room has one
/// owner, so ownership must be handed over first.
fn act_on_member(rank: Rank, target: RoomRole) -> Result<(), Denied> {
    if !rank.outranks(target) {
        Err(Denied::PermissionDenied("you may only remove or ban members of a lower room role"))
    } else if target == RoomRole::Owner {
        Err(Denied::FailedPrecondition(
            "the owner cannot be removed or banned: hand over ownership first",
        ))
    } else {
        Ok(())
    }
}

/// Unban: moderator and above, of a user who is banned.
fn unban(rank: Rank, target: Standing) -> Result<(), Denied> {
    require(rank, RoomRole::Moderator, "only moderators and above may unban")?;
    match target {
        Standing::Banned => Ok(()),
        _ => Err(Denied::FailedPrecondition("the user is not banned from this room")),
    }
}

/// Change a member's role. The owner (and a global admin) may set any role on anyone below
/// the owner, `Owner` included, which hands over ownership; the caller demotes the old owner in
/// the same transaction. A moderator may set reader or member on users below moderator. The
/// owner is never demoted directly, not even by an admin: ownership is handed over instead.
/// Setting the role a member already has is allowed (a no-op for the caller).
fn set_role(rank: Rank, target: Standing, to: RoomRole) -> Result<(), Denied> {
    require(rank, RoomRole::Moderator, "only moderators and above may change roles")?;
    let Standing::In(current) = target else {
        return Err(Denied::FailedPrecondition("the user is not a member of this room"));
    };
    if current == RoomRole::Owner {
        require(rank, RoomRole::Owner, "only the owner may change the owner's role")?;
        return if to == RoomRole::Owner {
            Ok(())
        } else {
            Err(Denied::FailedPrecondition("demoting the owner: hand over ownership first"))
        };
    }
    if !rank.outranks(current) {
        return Err(Denied::PermissionDenied("you may only change the role of members below you"));
    }
    if to == RoomRole::Owner {
        return require(rank, RoomRole::Owner, "only the owner may hand over ownership");
    }
    if to == RoomRole::Moderator {
        return require(rank, RoomRole::Owner, "moderators may only set reader or member");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of one cell, without the message.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Outcome {
        Allow,
        NotFound,
        PermissionDenied,
        FailedPrecondition,
        AlreadyExists,
    }

    fn outcome(result: Result<(), Denied>) -> Outcome {
        match result {
            Ok(()) => Outcome::Allow,
            Err(Denied::NotFound(_)) => Outcome::NotFound,
            Err(Denied::PermissionDenied(_)) => Outcome::PermissionDenied,
            Err(Denied::FailedPrecondition(_)) => Outcome::FailedPrecondition,
            Err(Denied::AlreadyExists(_)) => Outcome::AlreadyExists,
        }
    }

    /// The actors of the matrix.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Who {
        Outsider,
        Invited,
        Banned,
        Reader,
        Member,
        Moderator,
        Owner,
        /// A global admin who is not a member of the room.
        Admin,
        /// A global guest who is a room member.
        Guest,
    }

    const EVERYONE: [Who; 9] = [
        Who::Outsider,
        Who::Invited,
        Who::Banned,
        Who::Reader,
        Who::Member,
        Who::Moderator,
        Who::Owner,
        Who::Admin,
        Who::Guest,
    ];

    impl Who {
        fn actor(self) -> Actor {
            let (global, standing) = match self {
                Who::Outsider => (GlobalRole::Member, Standing::Outsider),
                Who::Invited => (GlobalRole::Member, Standing::Invited),
                Who::Banned => (GlobalRole::Member, Standing::Banned),
                Who::Reader => (GlobalRole::Member, Standing::In(RoomRole::Reader)),
                Who::Member => (GlobalRole::Member, Standing::In(RoomRole::Member)),
                Who::Moderator => (GlobalRole::Member, Standing::In(RoomRole::Moderator)),
                Who::Owner => (GlobalRole::Member, Standing::In(RoomRole::Owner)),
                Who::Admin => (GlobalRole::Admin, Standing::Outsider),
                Who::Guest => (GlobalRole::Guest, Standing::In(RoomRole::Member)),
            };
            Actor { global, standing }
        }

        /// Authority as a number: 0 for non-members, 1 reader, 2 member, 3 moderator, 4 owner,
        /// 5 for the global admin, who acts as owner and above (outside direct rooms).
        fn level(self) -> u8 {
            match self {
                Who::Outsider | Who::Invited | Who::Banned => 0,
                Who::Reader => READER,
                Who::Member | Who::Guest => MEMBER,
                Who::Moderator => MODERATOR,
                Who::Owner => OWNER,
                Who::Admin => ADMIN,
            }
        }
    }

    const READER: u8 = 1;
    const MEMBER: u8 = 2;
    const MODERATOR: u8 = 3;
    const OWNER: u8 = 4;
    const ADMIN: u8 = 5;

    fn role_level(role: RoomRole) -> u8 {
        match role {
            RoomRole::Reader => READER,
            RoomRole::Member => MEMBER,
            RoomRole::Moderator => MODERATOR,
            RoomRole::Owner => OWNER,
        }
    }

    /// The room kinds of the matrix.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Public,
        Private,
        ReadOnlyPublic,
        Direct,
    }

    const KINDS: [Kind; 4] = [Kind::Public, Kind::Private, Kind::ReadOnlyPublic, Kind::Direct];

    impl Kind {
        fn facts(self) -> RoomFacts {
            let (visibility, read_only) = match self {
                Kind::Public => (Visibility::Public, false),
                Kind::Private => (Visibility::Private, false),
                Kind::ReadOnlyPublic => (Visibility::Public, true),
                Kind::Direct => (Visibility::Direct, false),
            };
            RoomFacts { visibility, read_only }
        }
    }

    const TARGETS: [Standing; 7] = [
        Standing::Outsider,
        Standing::Invited,
        Standing::Banned,
        Standing::In(RoomRole::Reader),
        Standing::In(RoomRole::Member),
        Standing::In(RoomRole::Moderator),
        Standing::In(RoomRole::Owner),
    ];

    const ROLES: [RoomRole; 4] =
        [RoomRole::Reader, RoomRole::Member, RoomRole::Moderator, RoomRole::Owner];

    /// Every action with every representative target.
    fn every_action() -> Vec<Action> {
        let mut actions = vec![Action::Join, Action::Leave, Action::Read, Action::Post];
        for target in TARGETS {
            actions.push(Action::Invite { target });
            actions.push(Action::Remove { target });
            actions.push(Action::Ban { target });
            actions.push(Action::Unban { target });
            for to in ROLES {
                actions.push(Action::SetRole { target, to });
            }
        }
        for own in [true, false] {
            actions.push(Action::EditMessage { own });
            actions.push(Action::DeleteMessage { own });
        }
        actions.push(Action::UpdateRoom);
        actions.extend([
            Action::React,
            Action::Pin,
            Action::ViewAudit,
            Action::Search,
            Action::Download,
        ]);
        actions
    }

    // ---------------------------------------------------------------------------------------
    // The specification, written from DESIGN.md's table and API.md's status codes, per room
    // kind and then per action. It is deliberately not shaped like `may`.
    // ---------------------------------------------------------------------------------------

    fn expected(who: Who, kind: Kind, action: Action) -> Outcome {
        match kind {
            Kind::Direct => direct_room(who, action),
            Kind::Private => private_room(who, action),
            Kind::Public => public_room(who, action, false),
            Kind::ReadOnlyPublic => public_room(who, action, true),
        }
    }

    fn allow_if(condition: bool) -> Outcome {
        if condition { Outcome::Allow } else { Outcome::PermissionDenied }
    }

    /// "A direct room belongs to exactly two users ... both can always post in it, nobody can
    /// join, leave or be invited to it, and a global admin has no powers in it." Someone else's
    /// direct room is `NOT_FOUND`; leaving one is `FAILED_PRECONDITION`.
    fn direct_room(who: Who, action: Action) -> Outcome {
        let one_of_the_two = matches!(who.level(), READER..=OWNER);
        if !one_of_the_two {
            return Outcome::NotFound;
        }
        match action {
            // "both users can always post": and react, and pin (there is no moderator).
            // Attachments: "download by members of a room where it was posted".
            Action::Read
            | Action::Post
            | Action::React
            | Action::Pin
            | Action::Search
            | Action::Download => Outcome::Allow,
            Action::EditMessage { own } => allow_if(own),
            Action::DeleteMessage { own } => allow_if(own),
            _ => Outcome::FailedPrecondition,
        }
    }

    /// "Join private room: only a user with a pending invite"; everyone else outside it is told
    /// `NOT_FOUND` ("never reveal that a private room exists"). Inside: the common rules.
    fn private_room(who: Who, action: Action) -> Outcome {
        match who {
            Who::Outsider | Who::Banned => Outcome::NotFound,
            Who::Invited if action == Action::Join => Outcome::Allow,
            Who::Invited => Outcome::NotFound,
            _ => inside(who, action, true, false),
        }
    }

    /// "Join public room: anyone not banned from it"; reading and posting need membership
    /// (`PERMISSION_DENIED`), leaving a room you are not in is `FAILED_PRECONDITION`.
    fn public_room(who: Who, action: Action, read_only: bool) -> Outcome {
        match (who, action) {
            (Who::Outsider | Who::Invited, Action::Join) => Outcome::Allow,
            (Who::Outsider | Who::Invited | Who::Banned, Action::Leave) => {
                Outcome::FailedPrecondition
            }
            // "download by members of a room where it was posted (anyone else: NOT_FOUND)":
            // whoever left or was banned included.
            (Who::Outsider | Who::Invited | Who::Banned, Action::Download) => Outcome::NotFound,
            (Who::Outsider | Who::Invited | Who::Banned, _) => Outcome::PermissionDenied,
            _ => inside(who, action, false, read_only),
        }
    }

    /// Members of a public or private room, and the global admin (not a member, level 5).
    fn inside(who: Who, action: Action, private: bool, read_only: bool) -> Outcome {
        let me = who.level();
        let moderator = me >= MODERATOR;
        match action {
            // The matrix's admin is not a member: they may join (no invite needed) but cannot
            // leave; members are already in.
            Action::Join if who == Who::Admin => Outcome::Allow,
            Action::Join => Outcome::AlreadyExists,
            Action::Leave if who == Who::Admin => Outcome::FailedPrecondition,
            Action::Leave => Outcome::Allow,
            // "read history, subscribe: members of the room (any room role)".
            Action::Read => Outcome::Allow,
            // "post: member and above; in a read-only room, moderator and above".
            Action::Post if read_only => allow_if(moderator),
            Action::Post => allow_if(me >= MEMBER),
            // "invite: any member in a public room; moderator and above in a private room".
            Action::Invite { .. } if private && !moderator => Outcome::PermissionDenied,
            Action::Invite { target: Standing::In(_) } => Outcome::AlreadyExists,
            Action::Invite { target: Standing::Banned } => Outcome::FailedPrecondition,
            Action::Invite { .. } => Outcome::Allow,
            // "remove (kick) / ban: moderator and above, only users of a lower room role".
            Action::Remove { .. } | Action::Ban { .. } | Action::Unban { .. } if !moderator => {
                Outcome::PermissionDenied
            }
            Action::Remove { target: Standing::In(role) } => against(me, role),
            Action::Remove { .. } => Outcome::FailedPrecondition,
            Action::Ban { target: Standing::In(role) } => against(me, role),
            Action::Ban { target: Standing::Banned } => Outcome::AlreadyExists,
            Action::Ban { .. } => Outcome::Allow,
            Action::Unban { target: Standing::Banned } => Outcome::Allow,
            Action::Unban { .. } => Outcome::FailedPrecondition,
            Action::SetRole { target, to } => change_role(me, target, to),
            // "edit a message: its sender", who must still be allowed to post there (an edit
            // is a new text; a reader, or a member of a read-only room, may post none).
            Action::EditMessage { own } if read_only => allow_if(own && moderator),
            Action::EditMessage { own } => allow_if(own && me >= MEMBER),
            // "delete a message: its sender, moderator and above".
            Action::DeleteMessage { own } => allow_if(own || moderator),
            // "update topic / read-only flag: moderator and above".
            Action::UpdateRoom => allow_if(moderator),
            // Reacting is reading with an opinion: every member, readers and read-only rooms
            // included.
            Action::React => Outcome::Allow,
            // Pins and the audit log are moderation.
            Action::Pin | Action::ViewAudit => allow_if(moderator),
            // "search over the messages the caller may read (their rooms, public rooms'
            // history only if they are members)": every member; the admin here is none.
            Action::Search => allow_if(who != Who::Admin),
            // Attachments are seen by members only (readers and read-only rooms included);
            // the admin here is none, and learns nothing: NOT_FOUND.
            Action::Download if who == Who::Admin => Outcome::NotFound,
            Action::Download => Outcome::Allow,
        }
    }

    /// Kick or ban of a member by a moderator or above: only of a lower role; the owner, whom
    /// only the admin outranks, is "the last owner" (`FAILED_PRECONDITION`).
    fn against(me: u8, target: RoomRole) -> Outcome {
        let them = role_level(target);
        if me <= them {
            Outcome::PermissionDenied
        } else if them == OWNER {
            Outcome::FailedPrecondition
        } else {
            Outcome::Allow
        }
    }

    /// "change a member's role: owner: any role below owner (and hand over ownership);
    /// moderator: between member and reader, for users below them"; demoting the (last) owner
    /// is `FAILED_PRECONDITION`.
    fn change_role(me: u8, target: Standing, to: RoomRole) -> Outcome {
        if me < MODERATOR {
            return Outcome::PermissionDenied;
        }
        let Standing::In(current) = target else {
            return Outcome::FailedPrecondition;
        };
        let (them, new) = (role_level(current), role_level(to));
        match me {
            MODERATOR => allow_if(them < MODERATOR && new <= MEMBER),
            // Owner or admin: the owner keeps (Allow, a no-op) or is demoted (refused).
            _ if them == OWNER && new == OWNER => Outcome::Allow,
            _ if them == OWNER => Outcome::FailedPrecondition,
            _ => Outcome::Allow,
        }
    }

    // ---------------------------------------------------------------------------------------
    // The matrix.
    // ---------------------------------------------------------------------------------------

    #[test]
    fn matrix_covers_every_cell() {
        // actions: Join, Leave, Read, Post; Invite, Remove, Ban, Unban x 7 targets;
        // SetRole x 7 targets x 4 roles; EditMessage, DeleteMessage x own; UpdateRoom;
        // React, Pin, ViewAudit, Search, Download.
        const ACTIONS: usize = 4 + 4 * 7 + 7 * 4 + 2 * 2 + 1 + 5;
        const CELLS: usize = 9 * 4 * ACTIONS;
        assert_eq!(CELLS, 2520);

        let mut cells = 0;
        let mut wrong = Vec::new();
        for who in EVERYONE {
            for kind in KINDS {
                for action in every_action() {
                    cells += 1;
                    let result = may(who.actor(), action, kind.facts());
                    if let Err(denied) = result {
                        assert!(!denied.message().is_empty(), "{who:?} {kind:?} {action:?}");
                    }
                    let (got, want) = (outcome(result), expected(who, kind, action));
                    if got != want {
                        wrong.push(format!(
                            "{who:?} in {kind:?}: {action:?}: {got:?}, want {want:?}"
                        ));
                    }
                }
            }
        }
        assert!(wrong.is_empty(), "{} wrong cells:\n{}", wrong.len(), wrong.join("\n"));
        assert_eq!(cells, CELLS);
    }

    // ---------------------------------------------------------------------------------------
    // Focused tests of the key rules.
    // ---------------------------------------------------------------------------------------

    fn room(visibility: Visibility) -> RoomFacts {
        RoomFacts { visibility, read_only: false }
    }

    fn as_member(standing: Standing) -> Actor {
        Actor { global: GlobalRole::Member, standing }
    }

    fn admin(standing: Standing) -> Actor {
        Actor { global: GlobalRole::Admin, standing }
    }

    fn role(role: RoomRole) -> Standing {
        Standing::In(role)
    }

    #[test]
    fn private_room_is_invisible_to_outsiders() {
        let private = room(Visibility::Private);
        for standing in [Standing::Outsider, Standing::Banned] {
            for action in [Action::Join, Action::Read, Action::Post, Action::Leave] {
                let result = may(as_member(standing), action, private);
                assert_eq!(result, Err(Denied::NotFound("room not found")));
            }
        }
        // An invite opens the door, and only the door.
        assert_eq!(may(as_member(Standing::Invited), Action::Join, private), Ok(()));
        assert_eq!(
            outcome(may(as_member(Standing::Invited), Action::Read, private)),
            Outcome::NotFound
        );
        // A public room is visible: the refusal says what is wrong.
        let public = room(Visibility::Public);
        let read = may(as_member(Standing::Outsider), Action::Read, public);
        assert_eq!(outcome(read), Outcome::PermissionDenied);
        let rejoin = may(as_member(Standing::Banned), Action::Join, public);
        assert_eq!(rejoin, Err(Denied::PermissionDenied("you are banned from this room")));
    }

    #[test]
    fn reader_cannot_post() {
        for visibility in [Visibility::Public, Visibility::Private] {
            let result = may(as_member(role(RoomRole::Reader)), Action::Post, room(visibility));
            assert_eq!(outcome(result), Outcome::PermissionDenied);
            let read = may(as_member(role(RoomRole::Reader)), Action::Read, room(visibility));
            assert_eq!(read, Ok(()));
        }
    }

    #[test]
    fn read_only_room_needs_a_moderator_to_post() {
        let read_only = RoomFacts { visibility: Visibility::Public, read_only: true };
        let member = may(as_member(role(RoomRole::Member)), Action::Post, read_only);
        assert_eq!(outcome(member), Outcome::PermissionDenied);
        assert!(member.unwrap_err().message().contains("read-only"));
        assert_eq!(may(as_member(role(RoomRole::Moderator)), Action::Post, read_only), Ok(()));
        assert_eq!(may(as_member(role(RoomRole::Owner)), Action::Post, read_only), Ok(()));
        assert_eq!(may(admin(Standing::Outsider), Action::Post, read_only), Ok(()));
        // Direct rooms ignore the flag: both users can always post.
        let direct = RoomFacts { visibility: Visibility::Direct, read_only: true };
        assert_eq!(may(as_member(role(RoomRole::Member)), Action::Post, direct), Ok(()));
    }

    #[test]
    fn moderator_cannot_act_on_another_moderator() {
        let moderator = as_member(role(RoomRole::Moderator));
        let peer = role(RoomRole::Moderator);
        let public = room(Visibility::Public);
        for action in [
            Action::Remove { target: peer },
            Action::Ban { target: peer },
            Action::SetRole { target: peer, to: RoomRole::Member },
        ] {
            assert_eq!(outcome(may(moderator, action, public)), Outcome::PermissionDenied);
        }
        // Below them, a moderator may kick and set reader/member, but not promote.
        let member = role(RoomRole::Member);
        assert_eq!(may(moderator, Action::Remove { target: member }, public), Ok(()));
        let demote = Action::SetRole { target: member, to: RoomRole::Reader };
        assert_eq!(may(moderator, demote, public), Ok(()));
        let promote = Action::SetRole { target: member, to: RoomRole::Moderator };
        assert_eq!(outcome(may(moderator, promote, public)), Outcome::PermissionDenied);
        // The owner may promote to moderator and hand over ownership.
        let owner = as_member(role(RoomRole::Owner));
        assert_eq!(may(owner, promote, public), Ok(()));
        let hand_over = Action::SetRole { target: member, to: RoomRole::Owner };
        assert_eq!(may(owner, hand_over, public), Ok(()));
    }

    #[test]
    fn demoting_the_owner_is_a_failed_precondition() {
        let public = room(Visibility::Public);
        let demote = Action::SetRole { target: role(RoomRole::Owner), to: RoomRole::Moderator };
        let expected =
            Err(Denied::FailedPrecondition("demoting the owner: hand over ownership first"));
        assert_eq!(may(as_member(role(RoomRole::Owner)), demote, public), expected);
        assert_eq!(may(admin(Standing::Outsider), demote, public), expected);
        // Removing or banning the owner: refused by rank for members, by state for an admin.
        let kick = Action::Remove { target: role(RoomRole::Owner) };
        let by_moderator = may(as_member(role(RoomRole::Moderator)), kick, public);
        assert_eq!(outcome(by_moderator), Outcome::PermissionDenied);
        assert_eq!(
            outcome(may(admin(Standing::Outsider), kick, public)),
            Outcome::FailedPrecondition
        );
    }

    #[test]
    fn admin_is_powerless_in_direct_rooms() {
        let direct = room(Visibility::Direct);
        for action in every_action() {
            let result = may(admin(Standing::Outsider), action, direct);
            assert_eq!(result, Err(Denied::NotFound("room not found")), "{action:?}");
        }
        // An admin who is one of the two users is an ordinary member there.
        let inside = admin(role(RoomRole::Member));
        assert_eq!(may(inside, Action::Post, direct), Ok(()));
        let others = Action::DeleteMessage { own: false };
        assert_eq!(outcome(may(inside, others, direct)), Outcome::PermissionDenied);
        assert_eq!(outcome(may(inside, Action::UpdateRoom, direct)), Outcome::FailedPrecondition);
        assert_eq!(outcome(may(inside, Action::Leave, direct)), Outcome::FailedPrecondition);
        // Elsewhere the admin acts as owner without being a member.
        let private = room(Visibility::Private);
        assert_eq!(may(admin(Standing::Outsider), Action::Read, private), Ok(()));
        assert_eq!(may(admin(Standing::Banned), Action::Join, private), Ok(()));
    }

    #[test]
    fn guest_cannot_create_rooms() {
        for visibility in [Visibility::Public, Visibility::Private] {
            let result = may_create_room(GlobalRole::Guest, visibility, true);
            assert_eq!(result, Err(Denied::PermissionDenied("guests may not create rooms")));
        }
        // A guest who is in a room talks like anyone else with that room role.
        let guest = Actor { global: GlobalRole::Guest, standing: role(RoomRole::Member) };
        assert_eq!(may(guest, Action::Post, room(Visibility::Public)), Ok(()));
    }

    #[test]
    fn room_creation_rules() {
        use GlobalRole::{Admin, Member};
        use Visibility::{Direct, Private, Public};
        assert_eq!(may_create_room(Member, Public, false), Ok(()));
        assert_eq!(may_create_room(Member, Private, true), Ok(()));
        let admins_only = may_create_room(Member, Private, false);
        assert_eq!(outcome(admins_only), Outcome::PermissionDenied);
        assert_eq!(may_create_room(Admin, Private, false), Ok(()));
        assert_eq!(may_create_room(Admin, Public, false), Ok(()));
        for global in [GlobalRole::Guest, Member, Admin] {
            let direct = may_create_room(global, Direct, true);
            assert_eq!(
                direct,
                Err(Denied::PermissionDenied("direct rooms are opened with OpenDirect"))
            );
        }
    }

    #[test]
    fn room_roles_are_ranked() {
        assert!(RoomRole::Reader < RoomRole::Member);
        assert!(RoomRole::Member < RoomRole::Moderator);
        assert!(RoomRole::Moderator < RoomRole::Owner);
        assert!(Rank::Admin > Rank::Role(RoomRole::Owner));
    }

    #[test]
    fn denied_carries_code_and_message() {
        let denied = Denied::FailedPrecondition("you are not a member of this room");
        assert_eq!(denied.code(), "FAILED_PRECONDITION");
        assert_eq!(denied.to_string(), "you are not a member of this room");
        assert_eq!(Denied::NotFound("x").code(), "NOT_FOUND");
        assert_eq!(Denied::PermissionDenied("x").code(), "PERMISSION_DENIED");
        assert_eq!(Denied::AlreadyExists("x").code(), "ALREADY_EXISTS");
    }
}
