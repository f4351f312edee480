//! Bounded under abuse: what one client can make the server hold (a retry flood that never
//! reads its answers, re-subscriptions racing their old followers, subscriptions racing a
//! kick), each answered with backpressure or a clear status while everyone else is served.

use std::time::Duration;

use edgechat::client;
use edgechat::proto::{self, client_frame::Kind as C, server_frame::Kind as S};
use tonic::Code;

use crate::support::{
    Conn, TestServer, WAIT, create_room, expect_code, fast_server, history, room_with, send_rpc,
};

/// Server tasks alive now (the in-process server shares the test's runtime).
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// A stream that floods retries of a stored `client_message_id` while never reading is held
/// back: once its outbound side is full (it stopped reading a busy room) and
/// `MAX_PENDING_SENDS` answers wait, the server stops reading its frames, so the client's
/// sends block (flow control) instead of each retry costing the server a task. When the
/// client reads again, every retry is answered with the original seq, after the room's events.
async fn a_retry_flood_that_never_reads_is_held_back() {
    let s = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
        c.limits.stuck_stream_timeout_secs = 3600;
    })
    .await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let mut c = Conn::open(&alice).await;
    c.subscribe(&room, None).await;
    c.send(&room, "once", "the original").await;
    let seq = c.until(|f| if let S::SendAck(a) = f { Some(a.seq) } else { None }).await;
    // Alice stops reading; 6 MB of events overflow her transport's windows and her
    // stream's queue (the room and bob are not held up).
    let big = "x".repeat(4000);
    let mut b = Conn::open(&bob).await;
    for i in 0..1500 {
        b.send(&room, &format!("big{i}"), &big).await;
    }
    b.until(|f| matches!(f, S::SendAck(a) if a.client_message_id == "big1499").then_some(())).await;
    let baseline = alive_tasks();
    // Retries skip the text check: each carries 1 KiB, so the transport's windows fill fast.
    let filler = "r".repeat(1024);
    let mut sent = 0usize;
    let mut held_back = false;
    while sent < 20_000 {
        let retry = C::Send(proto::Send {
            room_id: room.clone(),
            client_message_id: "once".into(),
            text: filler.clone(),
            ..Default::default()
        });
        if tokio::time::timeout(Duration::from_secs(2), c.frame(retry)).await.is_err() {
            held_back = true;
            break;
        }
        sent += 1;
    }
    assert!(held_back, "the server read all {sent} retries of a stream that never reads");
    let grown = alive_tasks().saturating_sub(baseline);
    assert!(grown < 200, "{grown} more tasks alive after {sent} unread retries");
    // Reading again: every retry that got through is answered with the original seq (the
    // blocked one was never sent), and every event arrives.
    let (mut answered, mut events) = (0, 0);
    while answered < sent || events < 1500 {
        match c.expect_frame().await {
            S::SendAck(a) => {
                assert_eq!((a.seq, a.client_message_id.as_str()), (seq, "once"));
                answered += 1;
            }
            S::Event(_) => events += 1,
            S::Error(e) => panic!("retry refused: {e:?}"),
            _ => {}
        }
    }
    let rest = c.frames_until_pong(7).await;
    assert!(!rest.iter().any(|f| matches!(f, S::SendAck(_))), "an extra ack: {rest:?}");
}

/// Subscribing again to a room on the same stream never goes back below what the stream
/// already delivered: the old follower is stopped and the new one continues after it, so
/// every seq arrives exactly once, in order.
async fn a_resubscription_never_delivers_a_seq_twice() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    for i in 0..600 {
        send_rpc(&alice, &room, &format!("m{i}"), "hello").await.unwrap();
    }
    let mut c = Conn::open(&alice).await;
    // Three subscriptions from the start, back to back, without reading: the first
    // followers are still queueing events when the next subscription arrives.
    for _ in 0..3 {
        c.frame(C::Subscribe(proto::Subscribe { room_id: room.clone(), after_seq: Some(0) })).await;
    }
    let mut last = 0;
    let mut subscribed = 0;
    while last < 601 {
        match c.expect_frame().await {
            S::Event(e) => {
                assert_eq!(e.seq, last + 1, "after seq {last}");
                last = e.seq;
            }
            S::Subscribed(_) => subscribed += 1,
            S::Error(e) => panic!("{e:?}"),
            _ => {}
        }
    }
    // Nothing more of the room is queued: the pong comes before any other event.
    let rest = c.frames_until_pong(1).await;
    assert!(!rest.iter().any(|f| matches!(f, S::Event(_))), "{rest:?}");
    assert_eq!(subscribed, 3);
    // After Unsubscribe (which waits for the follower), a new subscription replays what it
    // asks for, as API.md says, then goes on live.
    c.frame(C::Unsubscribe(proto::Unsubscribe { room_id: room.clone() })).await;
    c.subscribe(&room, Some(0)).await;
    send_rpc(&alice, &room, "late", "late").await.unwrap();
    for seq in 1..=602 {
        assert_eq!(c.event().await.seq, seq);
    }
}

/// A subscription racing a kick: whichever commits first, the kicked member never follows
/// the private room past their removal. The permission, the last seq and their join come
/// from one snapshot, so a subscription either sees bob as a member (and stops after his
/// removal event) or is refused; it is never accepted with a last seq at or past the kick.
async fn a_subscription_racing_a_kick_never_outlives_the_removal() {
    let s = fast_server().await;
    let owner = s.user("owner").await;
    let bob = s.user("bob").await;
    let room = create_room(&owner, "secret", proto::Visibility::Private).await.id;
    let mut b = Conn::open(&bob).await;
    for round in 0..20u64 {
        let invite = proto::InviteMemberRequest { room_id: room.clone(), user_id: bob.id.clone() };
        owner.rooms().invite_member(invite).await.unwrap();
        bob.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
        let kick = proto::RemoveMemberRequest {
            room_id: room.clone(),
            user_id: bob.id.clone(),
            ban: false,
            reason: String::new(),
        };
        let mut rooms = owner.rooms();
        let subscribe = C::Subscribe(proto::Subscribe { room_id: room.clone(), after_seq: None });
        let (kicked, ()) = tokio::join!(rooms.remove_member(kick), b.frame(subscribe));
        kicked.unwrap();
        let removal = history(&owner, &room, 0, 0, 1).await.unwrap().events[0].seq;
        send_rpc(&owner, &room, &format!("k{round}"), "after the kick").await.unwrap();
        let mut frames = b.frames_until_pong(round).await.into_iter();
        let answer = frames
            .find(|f| matches!(f, S::Subscribed(_) | S::Error(_)))
            .expect("the subscription is answered before the pong");
        match answer {
            S::Error(e) => assert_eq!(e.code, "NOT_FOUND", "{e:?}"),
            S::Subscribed(sub) => {
                assert!(
                    sub.last_seq < removal,
                    "followed from {} past the kick at {removal}",
                    sub.last_seq
                );
                // It delivers the removal, then nothing of the room.
                let mut seen: Vec<u64> = frames
                    .filter_map(|f| if let S::Event(e) = f { Some(e.seq) } else { None })
                    .collect();
                while seen.last() != Some(&removal) {
                    seen.push(b.event().await.seq);
                }
                b.frame(C::Unsubscribe(proto::Unsubscribe { room_id: room.clone() })).await;
                let after = b.frames_until_pong(1000 + round).await;
                assert!(!after.iter().any(|f| matches!(f, S::Event(_))), "{after:?}");
            }
            _ => unreachable!(),
        }
    }
}

both_transports!(
    a_retry_flood_that_never_reads_is_held_back,
    a_resubscription_never_delivers_a_seq_twice,
    a_subscription_racing_a_kick_never_outlives_the_removal,
);

/// At most `max_connections_per_ip` connections from one address, TCP and QUIC alike: the
/// next one is refused, the ones already open keep working, and a freed slot can be used.
async fn one_address_may_hold_only_its_share_of_connections() {
    let s = TestServer::start_with(|c| c.limits.max_connections_per_ip = 3).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let extra = async {
        let ch = client::connect(&s.url(), &s.tls()).await.map_err(|e| e.to_string())?;
        let mut auth = client::auth_client(ch, None);
        let login = proto::LoginRequest { username: "bob".into(), password: "x".into() };
        // The wrong password's UNAUTHENTICATED would mean the connection was served.
        match auth.login(login).await {
            Err(st) if st.code() == Code::Unauthenticated => Ok(()),
            other => Err(format!("{other:?}")),
        }
    };
    assert!(extra.await.is_err(), "a fourth connection from 127.0.0.1 was served");
    for u in [&alice, &bob, &carol] {
        u.auth().who_am_i(proto::WhoAmIRequest {}).await.expect("the first three still work");
    }
    drop(alice);
    // The server sees the connection go; then there is room for one more.
    tokio::time::timeout(WAIT, async {
        while s.api().peers.connections() > 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the closed connection is released");
    s.user("dave").await.auth().who_am_i(proto::WhoAmIRequest {}).await.unwrap();
}

/// A user made and logged in inside the server (no password hash on a connection), with a
/// fresh channel: its first call is authenticated at once, however loaded the machine.
async fn logged_in(s: &TestServer, name: &str) -> crate::support::User {
    let accounts = &s.api().accounts;
    let pw = "correct horse battery";
    let role = edgechat::config::Role::Member;
    accounts.create_user(name, pw, "", role, edgechat::clock::now_ms()).await.unwrap();
    let issued = accounts.login(name, pw, edgechat::clock::now_ms()).await.unwrap();
    crate::support::User {
        id: issued.user.id.clone(),
        name: name.into(),
        token: issued.access_token,
        ch: s.channel().await,
    }
}

/// A connection that makes no authenticated request within `auth_timeout_secs` is closed, and
/// an authenticated one with nothing open after `idle_connection_secs`; one with a `Connect`
/// stream open is never idle.
async fn connections_that_do_nothing_are_closed() {
    let s = TestServer::start_with(|c| {
        c.limits.auth_timeout_secs = 2;
        c.limits.idle_connection_secs = 1;
    })
    .await;
    let bob = logged_in(&s, "bob").await;
    let mut stream = Conn::open(&bob).await;
    stream.ping(1).await;
    let alice = logged_in(&s, "alice").await;
    alice.auth().who_am_i(proto::WhoAmIRequest {}).await.unwrap();
    // A public call only (a refresh token that is not one), then nothing.
    let silent = s.channel().await;
    let bogus = proto::RefreshRequest { refresh_token: "rt_not_a_token".into() };
    let refused = client::auth_client(silent.clone(), None).refresh(bogus).await;
    expect_code(refused, Code::Unauthenticated);
    // Alice's idle connection and the silent one go; bob's, with its stream, stays.
    tokio::time::timeout(WAIT, async {
        while s.api().peers.connections() > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("idle connections are closed");
    stream.ping(2).await;
    assert_eq!(s.api().peers.connections(), 1);
    // A closed channel reconnects by itself on the next call.
    alice.auth().who_am_i(proto::WhoAmIRequest {}).await.unwrap();
}

/// A TLS client that never speaks HTTP/2 at all is closed at the auth deadline (before, it
/// held its connection and slot for as long as it liked).
#[tokio::test]
async fn a_silent_tls_connection_is_closed_at_the_auth_deadline() {
    use tokio::io::AsyncReadExt;
    let s = TestServer::start_with(|c| c.limits.auth_timeout_secs = 1).await;
    let mut tls = s.raw_tls(b"h2").await;
    let mut buf = [0u8; 4096];
    // hyper sends its SETTINGS first; then the connection must end (EOF or reset).
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the silent connection was still open after {WAIT:?}");
}

/// Every change has a per-user budget, not only sends: room creation, edits, deletes, moving
/// read markers. A read marker that does not move costs nothing (no writer job, no scans).
async fn changes_other_than_sends_have_a_budget() {
    let s = TestServer::start_with(|c| {
        c.limits.action_rate_per_sec = 0.001;
        c.limits.action_burst = 4;
    })
    .await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = create_room(&alice, "one", proto::Visibility::Public).await.id;
    bob.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    let m = send_rpc(&alice, &room, "m1", "hello").await.unwrap();
    let edit = |text: &str| proto::EditMessageRequest {
        room_id: room.clone(),
        seq: m.seq,
        text: text.into(),
    };
    alice.chat().edit_message(edit("hello!")).await.unwrap();
    let read = |seq| proto::MarkReadRequest { room_id: room.clone(), seq };
    alice.chat().mark_read(read(m.seq)).await.unwrap();
    // The fourth (after create, edit, mark read), then refusals saying when to retry.
    alice.chat().edit_message(edit("hello!!")).await.unwrap();
    let refused = alice.chat().edit_message(edit("hello!!!")).await;
    let msg = expect_code(refused, Code::ResourceExhausted);
    assert!(msg.contains("retry in"), "{msg}");
    let more = alice
        .rooms()
        .create_room(proto::CreateRoomRequest {
            name: "two".into(),
            topic: String::new(),
            visibility: proto::Visibility::Public as i32,
            read_only: false,
        })
        .await;
    expect_code(more, Code::ResourceExhausted);
    // A marker already there does not move: free, and fine.
    alice.chat().mark_read(read(m.seq)).await.unwrap();
    alice.chat().mark_read(read(1)).await.unwrap();
    // Sends have their own limit; bob's budget is his own.
    send_rpc(&alice, &room, "m2", "still chatting").await.unwrap();
    bob.chat().mark_read(read(m.seq + 1)).await.unwrap();
}

/// Editing is posting again: a member demoted to reader, or in a room made read-only, may not
/// edit what they wrote (a moderator still may).
async fn who_may_no_longer_post_may_not_edit() {
    let s = fast_server().await;
    let owner = s.user("owner").await;
    let bob = s.user("bob").await;
    let room = room_with(&owner, &[&bob]).await;
    let mine = send_rpc(&bob, &room, "b1", "my words").await.unwrap();
    let ours = send_rpc(&owner, &room, "o1", "owner words").await.unwrap();
    let edit = |seq| proto::EditMessageRequest { room_id: room.clone(), seq, text: "new".into() };
    let to_reader = proto::SetMemberRoleRequest {
        room_id: room.clone(),
        user_id: bob.id.clone(),
        role: proto::RoomRole::Reader as i32,
    };
    owner.rooms().set_member_role(to_reader).await.unwrap();
    expect_code(bob.chat().edit_message(edit(mine.seq)).await, Code::PermissionDenied);
    let back = proto::SetMemberRoleRequest {
        room_id: room.clone(),
        user_id: bob.id.clone(),
        role: proto::RoomRole::Member as i32,
    };
    owner.rooms().set_member_role(back).await.unwrap();
    bob.chat().edit_message(edit(mine.seq)).await.unwrap();
    let read_only =
        proto::UpdateRoomRequest { room_id: room.clone(), topic: None, read_only: Some(true) };
    owner.rooms().update_room(read_only).await.unwrap();
    expect_code(bob.chat().edit_message(edit(mine.seq)).await, Code::PermissionDenied);
    owner.chat().edit_message(edit(ours.seq)).await.unwrap();
}

both_transports!(
    one_address_may_hold_only_its_share_of_connections,
    connections_that_do_nothing_are_closed,
    changes_other_than_sends_have_a_budget,
    who_may_no_longer_post_may_not_edit,
);

/// A login flood is refused at once, not queued: with every hashing slot taken, `Login`
/// answers `RESOURCE_EXHAUSTED` with a retry hint; every call is answered, and a real login
/// works once the flood has passed.
async fn a_login_flood_is_refused_at_once_not_queued() {
    let s = TestServer::start_with(|c| {
        c.auth.hash_workers = 1;
        c.auth.hash_queue = 1;
    })
    .await;
    let alice = s.user("alice").await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let mut auth = client::auth_client(alice.ch.clone(), None);
        calls.spawn(async move {
            let bogus = proto::LoginRequest {
                username: format!("nobody{i}"),
                password: "guessing away".into(),
            };
            auth.login(bogus).await.map(|_| ())
        });
    }
    let (mut busy, mut wrong) = (0, 0);
    while let Some(r) = calls.join_next().await {
        match r.unwrap() {
            Err(st) if st.code() == Code::ResourceExhausted => {
                assert!(st.message().contains("retry in"), "{}", st.message());
                busy += 1;
            }
            Err(st) if st.code() == Code::Unauthenticated => wrong += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(busy > 0 && wrong > 0, "busy {busy}, wrong password {wrong}");
    let real =
        proto::LoginRequest { username: "alice".into(), password: "correct horse battery".into() };
    client::auth_client(alice.ch.clone(), None).login(real).await.unwrap();
}

both_transports!(a_login_flood_is_refused_at_once_not_queued);
