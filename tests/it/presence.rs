//! Presence, typing, notifications and unread counts end to end.

use edgechat::proto::{
    self, NotificationKind, PresenceStatus, client_frame::Kind as C, server_frame::Kind as S,
};
use tonic::Code;

use crate::support::{
    Conn, TestServer, User, ban, expect_code, fast_server, room_with, send_rpc, set_role,
};

async fn presence_frame(c: &mut Conn, user: &str) -> proto::Presence {
    c.until(|f| match f {
        S::Presence(p) if p.user_id == user => Some(p.clone()),
        _ => None,
    })
    .await
}

async fn get_presence(u: &User, ids: &[&str]) -> Result<Vec<proto::Presence>, tonic::Status> {
    u.chat()
        .get_presence(proto::GetPresenceRequest {
            user_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .map(|r| r.into_inner().presences)
}

async fn notification(c: &mut Conn) -> proto::Notification {
    c.until(|f| if let S::Notification(n) = f { Some(n.clone()) } else { None }).await
}

/// Typing notices that arrive on `c` before the answer to a ping.
async fn typing_before_pong(c: &mut Conn, nonce: u64) -> usize {
    c.frame(C::Ping(proto::Ping { nonce })).await;
    let mut n = 0;
    loop {
        match c.expect_frame().await {
            S::Typing(_) => n += 1,
            S::Pong(p) if p.nonce == nonce => return n,
            _ => {}
        }
    }
}

async fn list_rooms(u: &User) -> Vec<proto::Room> {
    u.rooms().list_rooms(proto::ListRoomsRequest {}).await.unwrap().into_inner().rooms
}

both_transports! {
async fn online_away_grace_and_offline_reach_room_mates_only() {
    let s = TestServer::start_with(|c| c.limits.presence_grace_secs = 1).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let stranger = s.user("stranger").await;
    room_with(&alice, &[&bob]).await;
    let mut b = Conn::open(&bob).await;
    let mut x = Conn::open(&stranger).await;
    let mut a = Conn::open(&alice).await;
    let p = presence_frame(&mut b, &alice.id).await;
    assert_eq!(p.status, PresenceStatus::Online as i32);
    // Away, set by the client.
    a.frame(C::SetPresence(proto::SetPresence { status: PresenceStatus::Away as i32 })).await;
    assert_eq!(presence_frame(&mut b, &alice.id).await.status, PresenceStatus::Away as i32);
    assert_eq!(
        get_presence(&bob, &[&alice.id]).await.unwrap()[0].status,
        PresenceStatus::Away as i32
    );
    a.frame(C::SetPresence(proto::SetPresence { status: PresenceStatus::Offline as i32 })).await;
    assert_eq!(a.error().await.code, "INVALID_ARGUMENT");
    // Last stream closes: offline after the grace period, with last seen stored.
    drop(a);
    let p = presence_frame(&mut b, &alice.id).await;
    assert_eq!(p.status, PresenceStatus::Offline as i32);
    assert!(p.last_seen_ms > 0);
    let got = get_presence(&bob, &[&alice.id, &bob.id]).await.unwrap();
    assert_eq!(got[0].status, PresenceStatus::Offline as i32);
    assert_eq!(got[0].last_seen_ms, p.last_seen_ms);
    assert_eq!(got[1].status, PresenceStatus::Online as i32);
    let members = bob
        .rooms()
        .list_members(proto::ListMembersRequest { room_id: room_with(&alice, &[&bob]).await })
        .await
        .unwrap()
        .into_inner()
        .members;
    let me = members.iter().find(|m| m.user.as_ref().unwrap().id == bob.id).unwrap();
    assert_eq!(me.presence, PresenceStatus::Online as i32);
    // Strangers: not pushed, not answered.
    x.ping(1).await;
    expect_code(get_presence(&stranger, &[&alice.id]).await, Code::NotFound);
    expect_code(get_presence(&stranger, &["nobody"]).await, Code::NotFound);
    let mut got_presence = false;
    x.frame(C::Ping(proto::Ping { nonce: 2 })).await;
    loop {
        match x.expect_frame().await {
            S::Presence(_) => got_presence = true,
            S::Pong(p) if p.nonce == 2 => break,
            _ => {}
        }
    }
    assert!(!got_presence, "presence must never reach strangers");
}
}

both_transports! {
async fn a_user_inside_the_grace_period_reads_online_and_two_devices_keep_them_online() {
    let s = TestServer::start_with(|c| c.limits.presence_grace_secs = 600).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    room_with(&alice, &[&bob]).await;
    let phone = Conn::open(&alice).await;
    let laptop = Conn::open(&alice).await;
    drop(phone);
    drop(laptop);
    let got = get_presence(&bob, &[&alice.id]).await.unwrap();
    assert_eq!(got[0].status, PresenceStatus::Online as i32);
}
}

both_transports! {
async fn typing_reaches_others_at_most_every_two_seconds() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let reader = s.user("reader").await;
    let outsider = s.user("outsider").await;
    let room = room_with(&alice, &[&bob, &reader]).await;
    set_role(&alice, &room, &reader, proto::RoomRole::Reader).await;
    let mut b = Conn::open(&bob).await;
    b.subscribe(&room, None).await;
    let mut a = Conn::open(&alice).await;
    a.subscribe(&room, None).await;
    for _ in 0..5 {
        a.frame(C::Typing(proto::Typing { room_id: room.clone() })).await;
    }
    a.ping(1).await;
    let t = b.until(|f| if let S::Typing(t) = f { Some(t.clone()) } else { None }).await;
    assert_eq!((t.room_id.as_str(), t.user_id.as_str()), (room.as_str(), alice.id.as_str()));
    // The flood was cut to one (the other four never entered the room's feed, so nothing can
    // arrive late), and the typist does not hear itself.
    assert_eq!(typing_before_pong(&mut b, 2).await, 0, "at most one notice per 2 s");
    assert_eq!(typing_before_pong(&mut a, 3).await, 0, "the typist does not hear itself");
    let mut r = Conn::open(&reader).await;
    r.frame(C::Typing(proto::Typing { room_id: room.clone() })).await;
    assert_eq!(r.error().await.code, "PERMISSION_DENIED");
    let mut o = Conn::open(&outsider).await;
    o.frame(C::Typing(proto::Typing { room_id: room.clone() })).await;
    assert_eq!(o.error().await.code, "PERMISSION_DENIED");
    o.frame(C::Typing(proto::Typing { room_id: "nope".into() })).await;
    assert_eq!(o.error().await.code, "NOT_FOUND");
}
}

both_transports! {
async fn every_notification_kind_live_and_after_reconnect() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let mut b = Conn::open(&bob).await; // not subscribed to anything
    let mut b2 = Conn::open(&bob).await; // a second device
    let public = room_with(&alice, &[&bob]).await;
    // Mention.
    let m = send_rpc(&alice, &public, "n1", "hey @bob").await.unwrap();
    let n = notification(&mut b).await;
    assert_eq!(
        (n.kind, n.room_id.as_str(), n.seq, n.from_user_id.as_str()),
        (NotificationKind::Mention as i32, public.as_str(), m.seq, alice.id.as_str())
    );
    assert_eq!(n.text, "hey @bob");
    assert_eq!(notification(&mut b2).await.id, n.id, "every device gets it");
    // Direct message.
    let dm = alice
        .rooms()
        .open_direct(proto::OpenDirectRequest { user_id: bob.id.clone() })
        .await
        .unwrap()
        .into_inner();
    send_rpc(&alice, &dm.id, "n2", "psst").await.unwrap();
    assert_eq!(notification(&mut b).await.kind, NotificationKind::DirectMessage as i32);
    // Invite.
    let private = crate::support::create_room(&alice, "p", proto::Visibility::Private).await;
    alice
        .rooms()
        .invite_member(proto::InviteMemberRequest {
            room_id: private.id.clone(),
            user_id: bob.id.clone(),
        })
        .await
        .unwrap();
    let n = notification(&mut b).await;
    assert_eq!(
        (n.kind, n.room_id.as_str()),
        (NotificationKind::Invite as i32, private.id.as_str())
    );
    // Role changed.
    set_role(&alice, &public, &bob, proto::RoomRole::Moderator).await;
    assert_eq!(notification(&mut b).await.kind, NotificationKind::RoleChanged as i32);
    // Removed (banned).
    ban(&alice, &public, &bob, "bye").await;
    let n = notification(&mut b).await;
    assert_eq!(n.kind, NotificationKind::Removed as i32);
    assert!(n.text.contains("bye"));
    // The author gets none of it.
    let none = alice
        .chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(none.notifications.is_empty());
    // After a reconnect: everything, gapless ids, and paging by after_id.
    let all = bob
        .chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(all.iter().map(|n| n.id).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(all.iter().all(|n| !n.read));
    let after = bob
        .chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 3, limit: 1 })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(after.iter().map(|n| n.id).collect::<Vec<_>>(), vec![4]);
    expect_code(
        bob.chat()
            .list_notifications(proto::ListNotificationsRequest { after_id: 99, limit: 0 })
            .await,
        Code::InvalidArgument,
    );
    bob.chat()
        .mark_notifications_read(proto::MarkNotificationsReadRequest { up_to_id: 2 })
        .await
        .unwrap();
    let all = bob
        .chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(
        all.iter().map(|n| n.read).collect::<Vec<_>>(),
        vec![true, true, false, false, false]
    );
}
}

both_transports! {
async fn notifications_are_capped_per_user() {
    let s = TestServer::start_with(|c| {
        c.limits.max_notifications_per_user = 3;
        c.limits.send_rate_per_sec = 1e6;
        c.limits.send_burst = 100_000;
    })
    .await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    for i in 0..5 {
        send_rpc(&alice, &room, &format!("c{i}"), "@bob").await.unwrap();
    }
    let all = bob
        .chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(
        all.iter().map(|n| n.id).collect::<Vec<_>>(),
        vec![3, 4, 5],
        "the oldest are dropped"
    );
}
}

both_transports! {
async fn unread_and_mention_counts_with_mark_read_on_two_devices() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await; // seqs 1 (create) and 2 (bob joins)
    let counts = |rooms: Vec<proto::Room>| {
        let r = rooms.into_iter().find(|r| r.id == room).unwrap();
        (r.unread_count, r.mention_count)
    };
    assert_eq!(counts(list_rooms(&bob).await), (0, 0));
    send_rpc(&alice, &room, "u1", "one").await.unwrap();
    send_rpc(&alice, &room, "u2", "two @bob").await.unwrap();
    let m3 = send_rpc(&alice, &room, "u3", "three").await.unwrap();
    send_rpc(&bob, &room, "u4", "my own message, @bob").await.unwrap();
    assert_eq!(
        counts(list_rooms(&bob).await),
        (3, 1),
        "membership events and own messages (even self-mentions) are not unread"
    );
    // Deleted messages are excluded.
    alice
        .chat()
        .delete_message(proto::DeleteMessageRequest { room_id: room.clone(), seq: m3.seq })
        .await
        .unwrap();
    assert_eq!(counts(list_rooms(&bob).await), (2, 1));
    let got = bob
        .rooms()
        .get_room(proto::GetRoomRequest { room_id: room.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((got.unread_count, got.mention_count), (2, 1));

    // Two devices: marking read on one reaches the other.
    let mut d1 = Conn::open(&bob).await;
    let mut d2 = Conn::open(&bob).await;
    d1.frame(C::MarkRead(proto::MarkRead { room_id: room.clone(), seq: 3 })).await;
    for d in [&mut d1, &mut d2] {
        let m = d.until(|f| if let S::ReadMarker(m) = f { Some(m.clone()) } else { None }).await;
        assert_eq!(
            (m.room_id.as_str(), m.seq, m.unread_count, m.mention_count),
            (room.as_str(), 3, 1, 1)
        );
    }
    // Never backwards; beyond the last seq is clamped.
    bob.chat().mark_read(proto::MarkReadRequest { room_id: room.clone(), seq: 1 }).await.unwrap();
    assert_eq!(counts(list_rooms(&bob).await), (1, 1));
    bob.chat()
        .mark_read(proto::MarkReadRequest { room_id: room.clone(), seq: 1_000_000 })
        .await
        .unwrap();
    assert_eq!(counts(list_rooms(&bob).await), (0, 0));
    let m = d2.until(|f| if let S::ReadMarker(m) = f { Some(m.clone()) } else { None }).await;
    assert_eq!(m.seq, 7, "clamped to the room's last seq");
    // Bad input.
    expect_code(
        bob.chat().mark_read(proto::MarkReadRequest { room_id: "nope".into(), seq: 1 }).await,
        Code::NotFound,
    );
    let outsider = s.user("outsider").await;
    expect_code(
        outsider.chat().mark_read(proto::MarkReadRequest { room_id: room.clone(), seq: 1 }).await,
        Code::PermissionDenied,
    );
}
}

both_transports! {
    async fn a_pre_emptive_ban_from_a_private_room_tells_the_outsider_nothing() {
        let s = TestServer::start().await;
        let alice = s.user("alice").await;
        let eve = s.user("eve").await;
        let room = crate::support::create_room(&alice, "secret", proto::Visibility::Private).await;
        alice
            .rooms()
            .remove_member(proto::RemoveMemberRequest { room_id: room.id, user_id: eve.id.clone(), ban: true, reason: "no".into() })
            .await
            .unwrap();
        let n = eve.chat().list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 0 }).await.unwrap();
        assert!(n.into_inner().notifications.is_empty());
    }
}
