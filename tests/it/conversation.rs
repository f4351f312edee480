//! Conversation features end to end (issue 19): replies and threads, reactions and pins, with
//! their bad input and permission rows (readers, read-only rooms, banned users, direct rooms).

use edgechat::proto::{self, room_event::Kind as E};
use tonic::Code;

use crate::support::{
    Conn, TestServer, User, ban, create_room, expect_code, history, room_with, send_rpc, set_role,
    thread_history,
};

async fn server() -> TestServer {
    TestServer::start_unthrottled().await
}

async fn reply(
    u: &User,
    room: &str,
    to: u64,
    cmid: &str,
    text: &str,
) -> Result<proto::Message, tonic::Status> {
    u.chat()
        .send_message(proto::SendMessageRequest {
            room_id: room.into(),
            client_message_id: cmid.into(),
            text: text.into(),
            reply_to_seq: to,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

fn messages(r: &proto::HistoryResponse) -> Vec<proto::Message> {
    r.events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(E::Message(m)) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

async fn message_at(u: &User, room: &str, seq: u64) -> proto::Message {
    let r = history(u, room, seq + 1, seq - 1, 1).await.expect("history");
    messages(&r).pop().unwrap_or_else(|| panic!("no message at {seq}"))
}

async fn notifications(u: &User) -> Vec<proto::Notification> {
    u.chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 100 })
        .await
        .expect("notifications")
        .into_inner()
        .notifications
}

async fn react(
    u: &User,
    room: &str,
    seq: u64,
    emoji: &str,
) -> Result<proto::Message, tonic::Status> {
    u.chat()
        .add_reaction(proto::AddReactionRequest { room_id: room.into(), seq, emoji: emoji.into() })
        .await
        .map(|r| r.into_inner())
}

async fn unreact(
    u: &User,
    room: &str,
    seq: u64,
    emoji: &str,
) -> Result<proto::Message, tonic::Status> {
    u.chat()
        .remove_reaction(proto::RemoveReactionRequest {
            room_id: room.into(),
            seq,
            emoji: emoji.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn pin(u: &User, room: &str, seq: u64, on: bool) -> Result<proto::Message, tonic::Status> {
    let (room_id, chat) = (room.to_string(), u.chat());
    let r = if on {
        chat.clone().pin_message(proto::PinMessageRequest { room_id, seq }).await
    } else {
        chat.clone().unpin_message(proto::UnpinMessageRequest { room_id, seq }).await
    };
    r.map(|r| r.into_inner())
}

async fn pins(u: &User, room: &str) -> Result<Vec<u64>, tonic::Status> {
    let r = u.chat().list_pins(proto::ListPinsRequest { room_id: room.into() }).await?;
    Ok(r.into_inner().messages.iter().map(|m| m.seq).collect())
}

async fn last_seq(u: &User, room: &str) -> u64 {
    u.rooms()
        .get_room(proto::GetRoomRequest { room_id: room.into() })
        .await
        .expect("get room")
        .into_inner()
        .last_seq
}

fn counts(m: &proto::Message) -> Vec<(String, u32, bool)> {
    m.reactions.iter().map(|r| (r.emoji.clone(), r.count, r.mine)).collect()
}

both_transports! {
async fn replies_form_threads_that_page_and_notify() {
    let s = server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = room_with(&alice, &[&bob, &carol]).await; // seqs 1-3
    let root = send_rpc(&alice, &room, "root", "lunch?").await.unwrap();
    assert_eq!(root.seq, 4);
    send_rpc(&bob, &room, "other", "unrelated").await.unwrap(); // 5
    let r1 = reply(&bob, &room, 4, "r1", "yes, @carol too?").await.unwrap();
    assert_eq!((r1.seq, r1.reply_to_seq, r1.thread_seq), (6, 4, 4));
    // A reply to a reply joins the root's thread; it arrives live with both seqs.
    let mut a = Conn::open(&alice).await;
    a.subscribe(&room, None).await;
    let c = Conn::open(&carol).await;
    c.frame(proto::client_frame::Kind::Send(proto::Send {
        room_id: room.clone(),
        client_message_id: "r2".into(),
        text: "sure".into(),
        reply_to_seq: 6,
        ..Default::default()
    }))
    .await;
    let ev = a.event().await;
    let Some(E::Message(r2)) = ev.kind else { panic!("not a message: {ev:?}") };
    assert_eq!((r2.seq, r2.reply_to_seq, r2.thread_seq), (7, 6, 4));
    // A retry answers the original, reply fields included, and adds nothing.
    let again = reply(&bob, &room, 4, "r1", "different").await.unwrap();
    assert_eq!((again.seq, again.text.as_str()), (6, "yes, @carol too?"));

    // The thread: root and replies only, the root carrying its count and last reply time.
    let t = thread_history(&carol, &room, 4, 0, 0, 0).await.unwrap();
    let seqs: Vec<u64> = t.events.iter().map(|e| e.seq).collect();
    assert_eq!((seqs, t.has_more), (vec![4, 6, 7], false));
    let root_now = &messages(&t)[0];
    assert_eq!(root_now.reply_count, 2);
    assert_eq!(root_now.last_reply_at_ms, r2.sent_at_ms);
    // Paged like History, both ways.
    let newest = thread_history(&carol, &room, 4, 0, 0, 2).await.unwrap();
    assert_eq!(newest.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7]);
    assert!(newest.has_more);
    let older = thread_history(&carol, &room, 4, 6, 0, 2).await.unwrap();
    assert_eq!((older.events.iter().map(|e| e.seq).collect::<Vec<_>>(), older.has_more), (vec![4], false));
    let forwards = thread_history(&carol, &room, 4, 0, 4, 1).await.unwrap();
    assert_eq!((forwards.events[0].seq, forwards.has_more), (6, true));
    // A message without replies is a thread of one.
    let lone = thread_history(&carol, &room, 5, 0, 0, 0).await.unwrap();
    assert_eq!(lone.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);

    // Notifications: carol was mentioned; alice (root) and bob (replied to) hear of replies.
    let kinds = |ns: Vec<proto::Notification>| {
        ns.iter().map(|n| (n.kind, n.seq)).collect::<Vec<_>>()
    };
    let (mention, replied) =
        (proto::NotificationKind::Mention as i32, proto::NotificationKind::Reply as i32);
    assert_eq!(kinds(notifications(&carol).await), [(mention, 6)]);
    assert_eq!(kinds(notifications(&alice).await), [(replied, 6), (replied, 7)]);
    assert_eq!(kinds(notifications(&bob).await), [(replied, 7)]);

    // Deleting the root leaves a tombstone at the head of its thread; the replies stay.
    alice
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: 4 })
        .await
        .unwrap();
    let t = thread_history(&bob, &room, 4, 0, 0, 0).await.unwrap();
    let ms = messages(&t);
    assert!(ms[0].deleted && ms[0].text.is_empty(), "{:?}", ms[0]);
    assert_eq!(ms.iter().map(|m| m.seq).collect::<Vec<_>>(), [4, 6, 7]);
    assert_eq!(ms[1].reply_to_seq, 4, "the reply still says what it answered");

    // Bad input: each a clear status, nothing stored.
    let before = last_seq(&bob, &room).await;
    let m = expect_code(reply(&bob, &room, 4, "x1", "to a tombstone").await, Code::FailedPrecondition);
    assert!(m.contains("deleted"), "{m}");
    let m = expect_code(reply(&bob, &room, 999, "x2", "to nothing").await, Code::NotFound);
    assert!(m.contains("999"), "{m}");
    // Seq 2 is bob's join: not a message.
    expect_code(reply(&bob, &room, 2, "x3", "to a join").await, Code::NotFound);
    // Another room's seq 4 names nothing here (a room with 1 event).
    let other = room_with(&bob, &[]).await;
    expect_code(reply(&bob, &other, 4, "x4", "cross-room").await, Code::NotFound);
    assert_eq!(last_seq(&bob, &room).await, before);
    let m = expect_code(thread_history(&bob, &room, 6, 0, 0, 0).await, Code::InvalidArgument);
    assert!(m.contains("thread of message 4"), "{m}");
    expect_code(thread_history(&bob, &room, 2, 0, 0, 0).await, Code::NotFound);
    // A reader may read threads but not reply; an outsider reads neither.
    let dave = s.user("dave").await;
    expect_code(thread_history(&dave, &room, 4, 0, 0, 0).await, Code::PermissionDenied);
    dave.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    set_role(&alice, &room, &dave, proto::RoomRole::Reader).await;
    assert_eq!(thread_history(&dave, &room, 4, 0, 0, 0).await.unwrap().events.len(), 3);
    expect_code(reply(&dave, &room, 6, "x5", "hi").await, Code::PermissionDenied);
}
}

both_transports! {
async fn reactions_count_once_per_user_and_say_whose() {
    let s = server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = room_with(&alice, &[&bob, &carol]).await;
    let msg = send_rpc(&alice, &room, "m", "ship it").await.unwrap(); // 4
    let mut sub = Conn::open(&alice).await;
    sub.subscribe(&room, Some(4)).await;

    let m = react(&bob, &room, 4, "👍").await.unwrap();
    assert_eq!(counts(&m), [("👍".to_string(), 1, true)]);
    let ev = sub.event().await;
    assert_eq!((ev.seq, ev.actor_id.as_str()), (5, bob.id.as_str()));
    let Some(E::Reaction(r)) = ev.kind else { panic!("not a reaction: {ev:?}") };
    assert_eq!((r.target_seq, r.emoji.as_str(), r.added), (4, "👍", true));
    // Adding again is one reaction and no event.
    let m = react(&bob, &room, 4, "👍").await.unwrap();
    assert_eq!(counts(&m), [("👍".to_string(), 1, true)]);
    assert_eq!(last_seq(&alice, &room).await, 5);
    react(&carol, &room, 4, "👍").await.unwrap();
    react(&carol, &room, 4, "🎉").await.unwrap();
    // History: counts in first-added order, `mine` per caller.
    let as_bob = message_at(&bob, &room, 4).await;
    assert_eq!(counts(&as_bob), [("👍".into(), 2, true), ("🎉".into(), 1, false)]);
    let as_alice = message_at(&alice, &room, 4).await;
    assert_eq!(counts(&as_alice), [("👍".into(), 2, false), ("🎉".into(), 1, false)]);
    assert_eq!(as_alice.text, msg.text);
    // Removing: once; removing what one does not have changes nothing.
    let m = unreact(&carol, &room, 4, "🎉").await.unwrap();
    assert_eq!(counts(&m), [("👍".into(), 2, true)]);
    let seq = last_seq(&alice, &room).await;
    unreact(&carol, &room, 4, "🎉").await.unwrap();
    unreact(&alice, &room, 4, "👍").await.unwrap();
    assert_eq!(last_seq(&alice, &room).await, seq);
    // An edit keeps the reactions.
    let edited = bob
        .chat()
        .edit_message(proto::EditMessageRequest { room_id: room.clone(), seq: 4, text: "x".into() })
        .await;
    expect_code(edited, Code::PermissionDenied); // not bob's
    let edited = alice
        .chat()
        .edit_message(proto::EditMessageRequest { room_id: room.clone(), seq: 4, text: "shipped".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(counts(&edited), [("👍".into(), 2, false)]);

    // Bad reactions: INVALID_ARGUMENT, nothing stored.
    let seq = last_seq(&alice, &room).await;
    let huge = "🎉".repeat(1000);
    for bad in ["", ":+1:", "thumbs up", " 👍", "\u{202E}👍", huge.as_str()] {
        let msg = expect_code(react(&bob, &room, 4, bad).await, Code::InvalidArgument);
        assert!(msg.starts_with("emoji "), "{bad:?}: {msg}");
    }
    expect_code(react(&bob, &room, 999, "👍").await, Code::NotFound);
    expect_code(react(&bob, &room, 1, "👍").await, Code::NotFound); // the room's creation
    assert_eq!(last_seq(&alice, &room).await, seq);
    // At most 20 distinct reactions on one message; thousands of tries leave 20.
    for i in 0..19 {
        let e = char::from_u32(0x1F600 + i).unwrap().to_string();
        react(&carol, &room, 4, &e).await.unwrap();
    }
    let m = expect_code(react(&carol, &room, 4, "🦀").await, Code::ResourceExhausted);
    assert!(m.contains("20 different reactions"), "{m}");
    let m = react(&bob, &room, 4, "😀").await.unwrap();
    assert_eq!(m.reactions.len(), 20, "an existing reaction may still be added");
    // A deleted message keeps no reactions and takes none.
    alice
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: 4 })
        .await
        .unwrap();
    assert!(message_at(&bob, &room, 4).await.reactions.is_empty());
    expect_code(react(&bob, &room, 4, "👍").await, Code::FailedPrecondition);
}
}

both_transports! {
async fn reaction_permissions_readers_read_only_banned_private_direct() {
    let s = server().await;
    let owner = s.user("owner").await;
    let reader = s.user("reader").await;
    let member = s.user("member").await;
    let outsider = s.user("outsider").await;
    let room = room_with(&owner, &[&reader, &member]).await;
    set_role(&owner, &room, &reader, proto::RoomRole::Reader).await;
    let m = send_rpc(&owner, &room, "m", "announcement").await.unwrap();
    // Readers react; so does everyone in a read-only room.
    react(&reader, &room, m.seq, "👍").await.unwrap();
    owner
        .rooms()
        .update_room(proto::UpdateRoomRequest {
            room_id: room.clone(),
            topic: None,
            read_only: Some(true),
        })
        .await
        .unwrap();
    react(&member, &room, m.seq, "👍").await.unwrap();
    // Outsiders of a public room, and the banned: PERMISSION_DENIED.
    let msg = expect_code(react(&outsider, &room, m.seq, "👍").await, Code::PermissionDenied);
    assert!(msg.contains("join"), "{msg}");
    ban(&owner, &room, &member, "spam").await;
    let msg = expect_code(react(&member, &room, m.seq, "🎉").await, Code::PermissionDenied);
    assert!(msg.contains("banned"), "{msg}");
    expect_code(pins(&member, &room).await, Code::PermissionDenied);
    // A private room does not exist for outsiders.
    let private = create_room(&owner, "secret", proto::Visibility::Private).await.id;
    let p = send_rpc(&owner, &private, "p", "psst").await.unwrap();
    expect_code(react(&outsider, &private, p.seq, "👍").await, Code::NotFound);
    expect_code(pin(&outsider, &private, p.seq, true).await, Code::NotFound);
    expect_code(pins(&outsider, &private).await, Code::NotFound);
    // A direct room: both react and pin; anyone else is told it does not exist.
    let direct = owner
        .rooms()
        .open_direct(proto::OpenDirectRequest { user_id: reader.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .id;
    let d = send_rpc(&owner, &direct, "d", "hey").await.unwrap();
    react(&reader, &direct, d.seq, "👋").await.unwrap();
    assert!(pin(&reader, &direct, d.seq, true).await.unwrap().pinned);
    assert_eq!(pins(&owner, &direct).await.unwrap(), [d.seq]);
    expect_code(react(&outsider, &direct, d.seq, "👍").await, Code::NotFound);
}
}

both_transports! {
async fn moderators_pin_and_everyone_lists_pins() {
    let s = server().await;
    let owner = s.user("owner").await;
    let moderator = s.user("moderator").await;
    let member = s.user("member").await;
    let room = room_with(&owner, &[&moderator, &member]).await;
    set_role(&owner, &room, &moderator, proto::RoomRole::Moderator).await;
    let a = send_rpc(&member, &room, "a", "first").await.unwrap();
    let b = send_rpc(&member, &room, "b", "second").await.unwrap();
    let mut sub = Conn::open(&member).await;
    sub.subscribe(&room, Some(b.seq)).await;

    let msg = expect_code(pin(&member, &room, a.seq, true).await, Code::PermissionDenied);
    assert!(msg.contains("moderators"), "{msg}");
    assert!(pin(&moderator, &room, b.seq, true).await.unwrap().pinned);
    assert!(pin(&owner, &room, a.seq, true).await.unwrap().pinned);
    let ev = sub.event().await;
    let Some(E::Pin(p)) = ev.kind else { panic!("not a pin: {ev:?}") };
    assert_eq!((p.target_seq, p.pinned, ev.actor_id.as_str()), (b.seq, true, moderator.id.as_str()));
    // Pinning again changes nothing.
    let seq = last_seq(&owner, &room).await;
    pin(&owner, &room, a.seq, true).await.unwrap();
    assert_eq!(last_seq(&owner, &room).await, seq);
    assert_eq!(pins(&member, &room).await.unwrap(), [a.seq, b.seq]);
    assert!(message_at(&member, &room, a.seq).await.pinned);
    // Unpin; delete a pinned message: both leave the list.
    assert!(!pin(&moderator, &room, b.seq, false).await.unwrap().pinned);
    member
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: a.seq })
        .await
        .unwrap();
    assert_eq!(pins(&member, &room).await.unwrap(), Vec::<u64>::new());
    expect_code(pin(&owner, &room, a.seq, true).await, Code::FailedPrecondition);
    expect_code(pin(&owner, &room, 999, true).await, Code::NotFound);
    // At most 50 pins per room.
    for i in 0..50 {
        let m = send_rpc(&member, &room, &format!("p{i}"), "pin me").await.unwrap();
        pin(&owner, &room, m.seq, true).await.unwrap();
    }
    let extra = send_rpc(&member, &room, "p50", "one too many").await.unwrap();
    let msg = expect_code(pin(&owner, &room, extra.seq, true).await, Code::ResourceExhausted);
    assert!(msg.contains("50 pinned"), "{msg}");
    assert_eq!(pins(&member, &room).await.unwrap().len(), 50);
    // Everything above survives a restart (the pins and threads tables are in the file).
    drop(sub);
    let mut s = s;
    s.restart().await;
    assert_eq!(pins(&member, &room).await.unwrap().len(), 50);
}
}

fn admin_client(
    u: &User,
) -> proto::admin_service_client::AdminServiceClient<edgechat::client::Authed> {
    edgechat::client::admin_client(u.ch.clone(), Some(&u.token))
}

async fn mute(u: &User, room: &str, muted: bool) -> Result<proto::Room, tonic::Status> {
    u.rooms()
        .mute_room(proto::MuteRoomRequest { room_id: room.into(), muted })
        .await
        .map(|r| r.into_inner())
}

both_transports! {
async fn a_muted_room_sends_no_chatter_but_counts_unread() {
    let s = server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let root = send_rpc(&bob, &room, "root", "mine").await.unwrap();
    assert!(mute(&bob, &room, true).await.unwrap().muted);
    send_rpc(&alice, &room, "m1", "hey @bob").await.unwrap();
    reply(&alice, &room, root.seq, "r1", "answer").await.unwrap();
    assert!(notifications(&bob).await.is_empty(), "no mention or reply notification");
    let r = bob.rooms().get_room(proto::GetRoomRequest { room_id: room.clone() }).await.unwrap();
    let r = r.into_inner();
    assert!(r.muted);
    assert_eq!((r.unread_count, r.mention_count), (2, 1), "unread counts go on");
    // A direct room muted: no direct-message notifications either.
    let direct = alice
        .rooms()
        .open_direct(proto::OpenDirectRequest { user_id: bob.id.clone() })
        .await
        .unwrap()
        .into_inner()
        .id;
    mute(&bob, &direct, true).await.unwrap();
    send_rpc(&alice, &direct, "d1", "psst").await.unwrap();
    assert!(notifications(&bob).await.is_empty());
    // Removal is not chatter: it still reaches a muted member.
    alice
        .rooms()
        .remove_member(proto::RemoveMemberRequest {
            room_id: room.clone(),
            user_id: bob.id.clone(),
            ban: false,
            reason: String::new(),
        })
        .await
        .unwrap();
    let kinds: Vec<i32> = notifications(&bob).await.iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [proto::NotificationKind::Removed as i32]);
    // Unmuted, mentions come again; only members mute.
    mute(&bob, &direct, false).await.unwrap();
    send_rpc(&alice, &direct, "d2", "again").await.unwrap();
    assert_eq!(notifications(&bob).await.len(), 2);
    expect_code(mute(&bob, &room, true).await, Code::PermissionDenied);
    expect_code(mute(&bob, "r-nowhere", true).await, Code::NotFound);
}
}

both_transports! {
async fn invite_only_registration_spends_each_code_once() {
    let s = TestServer::start_with(|c| c.auth.registration = "invite".into()).await;
    let admin = s.admin("root").await;
    let ch = s.channel().await;
    let register = |name: &str, code: &str| {
        let mut c = edgechat::client::auth_client(ch.clone(), None);
        let req = proto::RegisterRequest {
            username: name.into(),
            password: "correct horse battery".into(),
            display_name: String::new(),
            invite_code: code.into(),
        };
        async move { c.register(req).await.map(|r| r.into_inner()) }
    };
    let m = expect_code(register("nocode", "").await, Code::PermissionDenied);
    assert!(m.contains("needs an invite code"), "{m}");
    let m = expect_code(register("guess", "inv_guess").await, Code::PermissionDenied);
    assert!(m.contains("not known"), "{m}");
    let code = admin_client(&admin)
        .create_invite_code(proto::CreateInviteCodeRequest { valid_for_secs: 0, note: "for dana".into() })
        .await
        .unwrap()
        .into_inner();
    let week = 7 * 24 * 3600 * 1000;
    assert!((code.expires_at_ms - edgechat::clock::now_ms() - week).abs() < 60_000);
    let dana = register("dana", &code.code).await.unwrap();
    assert_eq!(dana.user.unwrap().username, "dana");
    let m = expect_code(register("eve", &code.code).await, Code::PermissionDenied);
    assert!(m.contains("already used"), "{m}");
    // A username taken spends nothing: the code still works for another name.
    let second = admin_client(&admin)
        .create_invite_code(proto::CreateInviteCodeRequest { valid_for_secs: 1, note: String::new() })
        .await
        .unwrap()
        .into_inner();
    expect_code(register("dana", &second.code).await, Code::AlreadyExists);
    // Expiry: the code was valid for 1 s.
    // Expiry: the code was valid for 1 s; wait (polling the clock) until it is past.
    let expiry = second.expires_at_ms;
    crate::support::eventually(std::time::Duration::from_secs(10), "the code expires", || {
        std::future::ready((edgechat::clock::now_ms() > expiry).then_some(()))
    })
    .await;
    let m = expect_code(register("frank", &second.code).await, Code::PermissionDenied);
    assert!(m.contains("expired"), "{m}");
    // Bad requests for codes; members may not issue them.
    let m = expect_code(
        admin_client(&admin)
            .create_invite_code(proto::CreateInviteCodeRequest { valid_for_secs: -5, note: String::new() })
            .await,
        Code::InvalidArgument,
    );
    assert!(m.contains("valid_for_secs"), "{m}");
    let dana_user = User { id: String::new(), name: "dana".into(), token: dana.access_token, ch: ch.clone() };
    expect_code(
        admin_client(&dana_user)
            .create_invite_code(proto::CreateInviteCodeRequest::default())
            .await,
        Code::PermissionDenied,
    );
}
}

both_transports! {
async fn moderation_and_admin_acts_are_audited() {
    let s = server().await;
    let admin = s.admin("root").await;
    let owner = s.user("owner").await;
    let moderator = s.user("moderator").await;
    let member = s.user("member").await;
    let room = room_with(&owner, &[&moderator, &member]).await;
    set_role(&owner, &room, &moderator, proto::RoomRole::Moderator).await;
    let m = send_rpc(&member, &room, "m", "spam").await.unwrap();
    let own = send_rpc(&moderator, &room, "own", "oops").await.unwrap();
    pin(&moderator, &room, m.seq, true).await.unwrap();
    moderator
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: m.seq })
        .await
        .unwrap();
    // Deleting one's own message is no moderation: not audited.
    moderator
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: own.seq })
        .await
        .unwrap();
    ban(&moderator, &room, &member, "spam").await;
    moderator
        .rooms()
        .unban_member(proto::UnbanMemberRequest { room_id: room.clone(), user_id: member.id.clone() })
        .await
        .unwrap();
    owner
        .rooms()
        .update_room(proto::UpdateRoomRequest { room_id: room.clone(), topic: Some("calm".into()), read_only: None })
        .await
        .unwrap();
    use proto::AuditAction as A;
    let want = [
        (A::RoleChanged, moderator.id.as_str(), 0, ""),
        (A::MessagePinned, member.id.as_str(), m.seq, ""),
        (A::MessageDeleted, member.id.as_str(), m.seq, ""),
        (A::MemberBanned, member.id.as_str(), 0, "spam"),
        (A::MemberUnbanned, member.id.as_str(), 0, ""),
        (A::RoomUpdated, "", 0, ""),
    ];
    let entries = owner
        .rooms()
        .list_room_audit(proto::ListRoomAuditRequest { room_id: room.clone(), after_id: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let got: Vec<_> = entries
        .iter()
        .map(|e| (A::try_from(e.action).unwrap(), e.target_user_id.as_str(), e.target_seq, e.reason.as_str()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(entries[0].actor_id, owner.id);
    assert_eq!(entries[0].detail, "now moderator");
    assert_eq!(entries[3].actor_id, moderator.id);
    assert!(entries.windows(2).all(|w| w[0].id < w[1].id) && entries.iter().all(|e| e.at_ms > 0));
    // Paging after an id.
    let rest = moderator
        .rooms()
        .list_room_audit(proto::ListRoomAuditRequest { room_id: room.clone(), after_id: entries[3].id, limit: 1 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), [entries[4].id]);
    // Members may not read the room's log; outsiders of a private room do not see it.
    member.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    expect_code(
        member.rooms().list_room_audit(proto::ListRoomAuditRequest { room_id: room.clone(), ..Default::default() }).await,
        Code::PermissionDenied,
    );
    let private = create_room(&owner, "secret", proto::Visibility::Private).await.id;
    expect_code(
        member.rooms().list_room_audit(proto::ListRoomAuditRequest { room_id: private, ..Default::default() }).await,
        Code::NotFound,
    );
    // Admin acts, and the server-wide log for admins only.
    let mut a = admin_client(&admin);
    a.disable_user(proto::DisableUserRequest { user_id: member.id.clone(), disabled: true }).await.unwrap();
    a.disable_user(proto::DisableUserRequest { user_id: member.id.clone(), disabled: false }).await.unwrap();
    a.set_user_role(proto::SetUserRoleRequest { user_id: owner.id.clone(), role: proto::GlobalRole::Guest as i32 })
        .await
        .unwrap();
    a.create_invite_code(proto::CreateInviteCodeRequest { valid_for_secs: 60, note: "for gus".into() }).await.unwrap();
    a.create_user(proto::CreateUserRequest {
        username: "hal".into(),
        password: "correct horse battery".into(),
        display_name: String::new(),
        role: proto::GlobalRole::Member as i32,
    })
    .await
    .unwrap();
    let all = a.list_audit(proto::ListAuditRequest { after_id: 0, limit: 500 }).await.unwrap().into_inner().entries;
    assert_eq!(all.len(), entries.len() + 5);
    let tail: Vec<_> = all[entries.len()..].iter().map(|e| (A::try_from(e.action).unwrap(), e.actor_id.as_str(), e.detail.as_str())).collect();
    assert_eq!(
        tail,
        [
            (A::UserDisabled, admin.id.as_str(), ""),
            (A::UserEnabled, admin.id.as_str(), ""),
            (A::UserRoleChanged, admin.id.as_str(), "now guest"),
            (A::InviteCodeCreated, admin.id.as_str(), "for gus"),
            (A::UserCreated, admin.id.as_str(), "hal"),
        ]
    );
    assert!(all.iter().all(|e| !e.detail.contains("inv_")), "codes are never logged");
    expect_code(
        admin_client(&moderator).list_audit(proto::ListAuditRequest::default()).await,
        Code::PermissionDenied,
    );
}
}
