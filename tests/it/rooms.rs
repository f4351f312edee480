//! RoomService end to end: create/join/leave/invite/kick/ban/unban/roles/read-only/direct
//! rooms, privacy, ownership handover, and every denied case with its status code.

use edgechat::proto::{self, RoomRole, Visibility};
use tonic::Code;

use crate::support::{TestServer, User, expect_code};

async fn create(u: &User, name: &str, vis: Visibility) -> proto::Room {
    u.rooms()
        .create_room(proto::CreateRoomRequest {
            name: name.into(),
            topic: "a topic".into(),
            visibility: vis as i32,
            read_only: false,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn join(u: &User, room: &str) -> Result<proto::Room, tonic::Status> {
    u.rooms()
        .join_room(proto::JoinRoomRequest { room_id: room.into() })
        .await
        .map(|r| r.into_inner())
}

async fn leave(u: &User, room: &str) -> Result<(), tonic::Status> {
    u.rooms().leave_room(proto::LeaveRoomRequest { room_id: room.into() }).await.map(|_| ())
}

async fn get(u: &User, room: &str) -> Result<proto::Room, tonic::Status> {
    u.rooms().get_room(proto::GetRoomRequest { room_id: room.into() }).await.map(|r| r.into_inner())
}

async fn invite(u: &User, room: &str, user: &str) -> Result<(), tonic::Status> {
    u.rooms()
        .invite_member(proto::InviteMemberRequest { room_id: room.into(), user_id: user.into() })
        .await
        .map(|_| ())
}

async fn set_role(
    u: &User,
    room: &str,
    user: &str,
    role: RoomRole,
) -> Result<proto::Member, tonic::Status> {
    u.rooms()
        .set_member_role(proto::SetMemberRoleRequest {
            room_id: room.into(),
            user_id: user.into(),
            role: role as i32,
        })
        .await
        .map(|r| r.into_inner())
}

async fn remove(u: &User, room: &str, user: &str, ban: bool) -> Result<(), tonic::Status> {
    u.rooms()
        .remove_member(proto::RemoveMemberRequest {
            room_id: room.into(),
            user_id: user.into(),
            ban,
            reason: "spam".into(),
        })
        .await
        .map(|_| ())
}

async fn members(u: &User, room: &str) -> Result<Vec<proto::Member>, tonic::Status> {
    u.rooms()
        .list_members(proto::ListMembersRequest { room_id: room.into() })
        .await
        .map(|r| r.into_inner().members)
}

async fn list(u: &User) -> Vec<proto::Room> {
    u.rooms().list_rooms(proto::ListRoomsRequest {}).await.unwrap().into_inner().rooms
}

fn role_of(ms: &[proto::Member], user: &User) -> Option<i32> {
    ms.iter().find(|m| m.user.as_ref().unwrap().id == user.id).map(|m| m.role)
}

both_transports! {
async fn public_room_lifecycle() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = create(&alice, "general", Visibility::Public).await;
    assert_eq!(room.my_role, RoomRole::Owner as i32);
    assert_eq!(room.last_seq, 1, "creating a room records the creator's join as seq 1");
    assert_eq!(room.member_count, 1);

    // Bob sees the public room, can read its metadata, joins.
    let listed = list(&bob).await;
    let seen =
        listed.iter().find(|r| r.id == room.id).expect("public rooms are listed for everyone");
    assert_eq!(seen.my_role, 0);
    assert_eq!(get(&bob, &room.id).await.unwrap().name, "general");
    expect_code(members(&bob, &room.id).await, Code::PermissionDenied);
    let joined = join(&bob, &room.id).await.unwrap();
    assert_eq!(joined.my_role, RoomRole::Member as i32);
    assert_eq!(joined.member_count, 2);
    assert_eq!(joined.last_seq, 2);
    expect_code(join(&bob, &room.id).await, Code::AlreadyExists);
    let ms = members(&bob, &room.id).await.unwrap();
    assert_eq!(ms.len(), 2);
    assert_eq!(role_of(&ms, &alice), Some(RoomRole::Owner as i32));

    // Topic and read-only: moderators and above only.
    let upd = |u: &User, topic: Option<&str>, ro: Option<bool>| {
        let mut c = u.rooms();
        let req = proto::UpdateRoomRequest {
            room_id: room.id.clone(),
            topic: topic.map(String::from),
            read_only: ro,
        };
        async move { c.update_room(req).await.map(|r| r.into_inner()) }
    };
    expect_code(upd(&bob, Some("mine now"), None).await, Code::PermissionDenied);
    let r = upd(&alice, Some("new topic"), Some(true)).await.unwrap();
    assert_eq!(r.topic, "new topic");
    assert!(r.read_only);
    assert_eq!(r.last_seq, 3, "a room update is an event");
    expect_code(upd(&alice, Some(&"x".repeat(1025)), None).await, Code::InvalidArgument);
    expect_code(upd(&alice, None, None).await, Code::InvalidArgument);

    // Leave; leaving again is a failed precondition.
    leave(&bob, &room.id).await.unwrap();
    let m = expect_code(leave(&bob, &room.id).await, Code::FailedPrecondition);
    assert!(!m.is_empty());
    assert_eq!(get(&alice, &room.id).await.unwrap().member_count, 1);
}
}

both_transports! {
async fn bad_room_input() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let mut c = alice.rooms();
    let req = |name: &str, vis: i32| proto::CreateRoomRequest {
        name: name.into(),
        topic: String::new(),
        visibility: vis,
        read_only: false,
    };
    for (name, vis, what) in [
        ("", Visibility::Public as i32, "name"),
        ("   ", Visibility::Public as i32, "name"),
        (&"n".repeat(81) as &str, Visibility::Public as i32, "name"),
        ("ok", 0, "visibility"),
        ("ok", 42, "visibility"),
        ("ok", Visibility::Direct as i32, "OpenDirect"),
    ] {
        let m = expect_code(c.create_room(req(name, vis)).await, Code::InvalidArgument);
        assert!(m.contains(what), "{name:?}/{vis}: {m}");
    }
    let mut big = req("ok", Visibility::Public as i32);
    big.topic = "t".repeat(1025);
    expect_code(c.create_room(big).await, Code::InvalidArgument);
    c.create_room(req(&"n".repeat(80), Visibility::Public as i32)).await.unwrap();

    for id in ["", "nope", "r000000000000000000000000"] {
        let code = if id.is_empty() { Code::InvalidArgument } else { Code::NotFound };
        expect_code(get(&alice, id).await, code);
        expect_code(join(&alice, id).await, code);
        expect_code(members(&alice, id).await, code);
    }
    let room = create(&alice, "r", Visibility::Public).await;
    expect_code(invite(&alice, &room.id, "no-such-user").await, Code::NotFound);
    expect_code(
        set_role(&alice, &room.id, &alice.id, RoomRole::Unspecified).await,
        Code::InvalidArgument,
    );
    let bad_role = alice
        .rooms()
        .set_member_role(proto::SetMemberRoleRequest {
            room_id: room.id.clone(),
            user_id: alice.id.clone(),
            role: 9,
        })
        .await;
    expect_code(bad_role, Code::InvalidArgument);
}
}

both_transports! {
async fn private_rooms_are_invisible_until_invited() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = create(&alice, "secret", Visibility::Private).await;

    // To outsiders the room does not exist: the same answer as an unknown id.
    let unknown = expect_code(get(&bob, "r000000000000000000000000").await, Code::NotFound);
    let hidden = expect_code(get(&bob, &room.id).await, Code::NotFound);
    assert_eq!(unknown, hidden);
    expect_code(join(&bob, &room.id).await, Code::NotFound);
    expect_code(members(&bob, &room.id).await, Code::NotFound);
    expect_code(invite(&bob, &room.id, &carol.id).await, Code::NotFound);
    assert!(!list(&bob).await.iter().any(|r| r.id == room.id));

    // Invited: bob sees it in ListRooms and can join.
    invite(&alice, &room.id, &bob.id).await.unwrap();
    assert!(list(&bob).await.iter().any(|r| r.id == room.id));
    get(&bob, &room.id).await.unwrap();
    join(&bob, &room.id).await.unwrap();
    expect_code(invite(&alice, &room.id, &bob.id).await, Code::AlreadyExists);
    // A plain member may not invite to a private room.
    expect_code(invite(&bob, &room.id, &carol.id).await, Code::PermissionDenied);

    // The invite is withdrawn when the inviter leaves: carol was invited by a moderator who
    // then left.
    set_role(&alice, &room.id, &bob.id, RoomRole::Moderator).await.unwrap();
    invite(&bob, &room.id, &carol.id).await.unwrap();
    assert!(list(&carol).await.iter().any(|r| r.id == room.id));
    leave(&bob, &room.id).await.unwrap();
    assert!(!list(&carol).await.iter().any(|r| r.id == room.id));
    expect_code(join(&carol, &room.id).await, Code::NotFound);

    // A global admin sees and manages private rooms without being a member.
    let root = s.admin("root").await;
    let r = get(&root, &room.id).await.unwrap();
    assert_eq!(r.my_role, RoomRole::Unspecified as i32);
    members(&root, &room.id).await.unwrap();
}
}

both_transports! {
async fn kick_ban_unban_and_rank_rules() {
    let s = TestServer::start().await;
    let owner = s.user("owner").await;
    let m1 = s.user("mod1").await;
    let m2 = s.user("mod2").await;
    let pleb = s.user("pleb").await;
    let room = create(&owner, "club", Visibility::Public).await;
    for u in [&m1, &m2, &pleb] {
        join(u, &room.id).await.unwrap();
    }
    set_role(&owner, &room.id, &m1.id, RoomRole::Moderator).await.unwrap();
    set_role(&owner, &room.id, &m2.id, RoomRole::Moderator).await.unwrap();

    // A moderator acting on another moderator, or a member kicking anyone.
    expect_code(remove(&m1, &room.id, &m2.id, false).await, Code::PermissionDenied);
    expect_code(set_role(&m1, &room.id, &m2.id, RoomRole::Member).await, Code::PermissionDenied);
    expect_code(remove(&pleb, &room.id, &m1.id, false).await, Code::PermissionDenied);
    // Moderators set roles between member and reader only.
    expect_code(
        set_role(&m1, &room.id, &pleb.id, RoomRole::Moderator).await,
        Code::PermissionDenied,
    );
    let r = set_role(&m1, &room.id, &pleb.id, RoomRole::Reader).await.unwrap();
    assert_eq!(r.role, RoomRole::Reader as i32);
    // Demoting the owner.
    expect_code(
        set_role(&owner, &room.id, &owner.id, RoomRole::Member).await,
        Code::FailedPrecondition,
    );
    expect_code(remove(&m1, &room.id, &owner.id, false).await, Code::PermissionDenied);
    // Kicking yourself is not how you leave.
    expect_code(remove(&owner, &room.id, &owner.id, false).await, Code::InvalidArgument);

    // Kick: pleb may rejoin.
    remove(&m1, &room.id, &pleb.id, false).await.unwrap();
    expect_code(members(&pleb, &room.id).await, Code::PermissionDenied);
    join(&pleb, &room.id).await.unwrap();
    // Ban: pleb may not rejoin until unbanned.
    remove(&m1, &room.id, &pleb.id, true).await.unwrap();
    let m = expect_code(join(&pleb, &room.id).await, Code::PermissionDenied);
    assert!(m.contains("banned"), "{m}");
    expect_code(remove(&m1, &room.id, &pleb.id, false).await, Code::FailedPrecondition);
    expect_code(remove(&m1, &room.id, &pleb.id, true).await, Code::AlreadyExists);
    let unban = |u: &User, who: &str| {
        let mut c = u.rooms();
        let req = proto::UnbanMemberRequest { room_id: room.id.clone(), user_id: who.into() };
        async move { c.unban_member(req).await.map(|_| ()) }
    };
    expect_code(unban(&pleb, &pleb.id).await, Code::PermissionDenied);
    unban(&m1, &pleb.id).await.unwrap();
    expect_code(unban(&m1, &pleb.id).await, Code::FailedPrecondition);
    join(&pleb, &room.id).await.unwrap();

    // Handing over ownership: the old owner becomes a moderator.
    set_role(&owner, &room.id, &m1.id, RoomRole::Owner).await.unwrap();
    let ms = members(&owner, &room.id).await.unwrap();
    assert_eq!(role_of(&ms, &m1), Some(RoomRole::Owner as i32));
    assert_eq!(role_of(&ms, &owner), Some(RoomRole::Moderator as i32));
}
}

both_transports! {
async fn last_owner_leaving_hands_over_and_empty_rooms_are_unlisted() {
    let s = TestServer::start().await;
    let a = s.user("anna").await;
    let b = s.user("bert").await;
    let c = s.user("cleo").await;
    let room = create(&a, "relay", Visibility::Public).await;
    join(&b, &room.id).await.unwrap();
    join(&c, &room.id).await.unwrap();
    set_role(&a, &room.id, &c.id, RoomRole::Moderator).await.unwrap();
    // Cleo (moderator) outranks Bert (longer-standing member).
    leave(&a, &room.id).await.unwrap();
    let ms = members(&b, &room.id).await.unwrap();
    assert_eq!(role_of(&ms, &c), Some(RoomRole::Owner as i32));
    leave(&c, &room.id).await.unwrap();
    let ms = members(&b, &room.id).await.unwrap();
    assert_eq!(role_of(&ms, &b), Some(RoomRole::Owner as i32));
    leave(&b, &room.id).await.unwrap();
    // Nobody left: kept but listed nowhere.
    assert!(!list(&a).await.iter().any(|r| r.id == room.id));
    let r = get(&a, &room.id).await.unwrap();
    assert_eq!(r.member_count, 0);
    assert!(r.last_seq >= 7, "every change is an event: {}", r.last_seq);
}
}

both_transports! {
async fn guests_and_private_room_creation_rules() {
    let s = TestServer::start_with(|c| {
        c.auth.default_role = "guest".into();
        c.rooms.members_may_create_private = false;
    })
    .await;
    let guest = s.user("guest").await;
    let m = expect_code(
        guest
            .rooms()
            .create_room(proto::CreateRoomRequest {
                name: "x".into(),
                topic: String::new(),
                visibility: Visibility::Public as i32,
                read_only: false,
            })
            .await,
        Code::PermissionDenied,
    );
    assert!(!m.is_empty());
    let root = s.admin("root").await;
    let room = create(&root, "open", Visibility::Public).await;
    join(&guest, &room.id).await.unwrap();
    create(&root, "adminsonly", Visibility::Private).await;
}
}

both_transports! {
async fn direct_rooms() {
    let s = TestServer::start().await;
    let a = s.user("amy").await;
    let b = s.user("ben").await;
    let c = s.user("cal").await;
    let open = |u: &User, other: &str| {
        let mut cl = u.rooms();
        let req = proto::OpenDirectRequest { user_id: other.into() };
        async move { cl.open_direct(req).await.map(|r| r.into_inner()) }
    };
    let r1 = open(&a, &b.id).await.unwrap();
    let r2 = open(&b, &a.id).await.unwrap();
    assert_eq!(r1.id, r2.id, "one direct room per pair, whichever side opens it");
    assert_eq!(r1.visibility, Visibility::Direct as i32);
    assert_eq!(r1.name, "ben");
    assert_eq!(r2.name, "amy");
    assert_eq!(r1.last_seq, 2, "two joins");
    assert_eq!(open(&a, &b.id).await.unwrap().id, r1.id);
    expect_code(open(&a, &a.id).await, Code::InvalidArgument);
    expect_code(open(&a, "nobody").await, Code::NotFound);
    // Nobody joins, leaves or is invited; outsiders (even admins) do not see it.
    expect_code(leave(&a, &r1.id).await, Code::FailedPrecondition);
    expect_code(invite(&a, &r1.id, &c.id).await, Code::FailedPrecondition);
    expect_code(join(&c, &r1.id).await, Code::NotFound);
    expect_code(get(&c, &r1.id).await, Code::NotFound);
    let root = s.admin("root").await;
    expect_code(get(&root, &r1.id).await, Code::NotFound);
    expect_code(remove(&root, &r1.id, &a.id, true).await, Code::NotFound);
    assert!(list(&a).await.iter().any(|r| r.id == r1.id));
    assert!(!list(&c).await.iter().any(|r| r.id == r1.id));
}
}
