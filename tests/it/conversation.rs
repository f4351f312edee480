//! Conversation features end to end (issue 19): replies and threads, reactions and pins, with
//! their bad input and permission rows (readers, read-only rooms, banned users, direct rooms).

use edgechat::proto::{self, room_event::Kind as E};
use tonic::Code;

use crate::support::{
    Conn, TestServer, User, create_room, expect_code, history, room_with, send_rpc,
};

/// A server whose send and action budgets are out of the way.
async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
        c.limits.action_rate_per_sec = 1e9;
        c.limits.action_burst = 100_000;
    })
    .await
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
        })
        .await
        .map(|r| r.into_inner())
}

async fn thread(
    u: &User,
    room: &str,
    root: u64,
    before_seq: u64,
    after_seq: u64,
    limit: u32,
) -> Result<proto::HistoryResponse, tonic::Status> {
    u.chat()
        .history(proto::HistoryRequest {
            room_id: room.into(),
            before_seq,
            after_seq,
            limit,
            thread_seq: root,
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

async fn set_role(owner: &User, room: &str, u: &User, role: proto::RoomRole) {
    owner
        .rooms()
        .set_member_role(proto::SetMemberRoleRequest {
            room_id: room.into(),
            user_id: u.id.clone(),
            role: role as i32,
        })
        .await
        .expect("set role");
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
    }))
    .await;
    let ev = a.event().await;
    let Some(E::Message(r2)) = ev.kind else { panic!("not a message: {ev:?}") };
    assert_eq!((r2.seq, r2.reply_to_seq, r2.thread_seq), (7, 6, 4));
    // A retry answers the original, reply fields included, and adds nothing.
    let again = reply(&bob, &room, 4, "r1", "different").await.unwrap();
    assert_eq!((again.seq, again.text.as_str()), (6, "yes, @carol too?"));

    // The thread: root and replies only, the root carrying its count and last reply time.
    let t = thread(&carol, &room, 4, 0, 0, 0).await.unwrap();
    let seqs: Vec<u64> = t.events.iter().map(|e| e.seq).collect();
    assert_eq!((seqs, t.has_more), (vec![4, 6, 7], false));
    let root_now = &messages(&t)[0];
    assert_eq!(root_now.reply_count, 2);
    assert_eq!(root_now.last_reply_at_ms, r2.sent_at_ms);
    // Paged like History, both ways.
    let newest = thread(&carol, &room, 4, 0, 0, 2).await.unwrap();
    assert_eq!(newest.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7]);
    assert!(newest.has_more);
    let older = thread(&carol, &room, 4, 6, 0, 2).await.unwrap();
    assert_eq!((older.events.iter().map(|e| e.seq).collect::<Vec<_>>(), older.has_more), (vec![4], false));
    let forwards = thread(&carol, &room, 4, 0, 4, 1).await.unwrap();
    assert_eq!((forwards.events[0].seq, forwards.has_more), (6, true));
    // A message without replies is a thread of one.
    let lone = thread(&carol, &room, 5, 0, 0, 0).await.unwrap();
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
    let t = thread(&bob, &room, 4, 0, 0, 0).await.unwrap();
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
    let m = expect_code(thread(&bob, &room, 6, 0, 0, 0).await, Code::InvalidArgument);
    assert!(m.contains("thread of message 4"), "{m}");
    expect_code(thread(&bob, &room, 2, 0, 0, 0).await, Code::NotFound);
    // A reader may read threads but not reply; an outsider reads neither.
    let dave = s.user("dave").await;
    expect_code(thread(&dave, &room, 4, 0, 0, 0).await, Code::PermissionDenied);
    dave.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    set_role(&alice, &room, &dave, proto::RoomRole::Reader).await;
    assert_eq!(thread(&dave, &room, 4, 0, 0, 0).await.unwrap().events.len(), 3);
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
    owner
        .rooms()
        .remove_member(proto::RemoveMemberRequest {
            room_id: room.clone(),
            user_id: member.id.clone(),
            ban: true,
            reason: "spam".into(),
        })
        .await
        .unwrap();
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
