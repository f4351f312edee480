//! ChatService end to end: live delivery, ordering, resume under concurrent writers,
//! idempotent retries, history paging, edits and deletes, slow subscribers, token expiry,
//! removal, bad frames, rate limits and shutdown.

use std::collections::HashSet;
use std::time::Duration;

use edgechat::proto::{
    self, client_frame::Kind as C, room_event::Kind as E, server_frame::Kind as S,
};
use tonic::Code;

use crate::support::{
    Conn, TestServer, User, all_events, ban, expect_code, fast_server, history, message_text,
    room_with, send_rpc,
};

/// Waits for `n` acks on a stream, returning the seqs by client_message_id order of arrival.
async fn acks(c: &mut Conn, n: usize) -> Vec<proto::SendAck> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match c.expect_frame().await {
            S::SendAck(a) => out.push(a),
            S::Error(e) => panic!("send failed: {e:?}"),
            _ => {}
        }
    }
    out
}

both_transports! {
async fn live_delivery_in_order_to_several_subscribers() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = room_with(&alice, &[&bob, &carol]).await;
    let mut b = Conn::open(&bob).await;
    let mut c1 = Conn::open(&carol).await;
    let mut c2 = Conn::open(&carol).await; // a second device
    let sub = b.subscribe(&room, None).await;
    assert_eq!(sub.last_seq, 3);
    c1.subscribe(&room, None).await;
    c2.subscribe(&room, None).await;
    let mut a = Conn::open(&alice).await;
    for i in 0..50 {
        a.send(&room, &format!("m{i}"), &format!("hello {i}")).await;
    }
    let acked = acks(&mut a, 50).await;
    let seqs: Vec<u64> = acked.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (4..54).collect::<Vec<_>>(), "acks in send order with consecutive seqs");
    assert!(
        acked
            .iter()
            .enumerate()
            .all(|(i, a)| a.client_message_id == format!("m{i}") && a.room_id == room)
    );
    for conn in [&mut b, &mut c1, &mut c2] {
        for i in 0..50u64 {
            let ev = conn.event().await;
            assert_eq!(ev.seq, 4 + i);
            assert_eq!(ev.actor_id, alice.id);
            let Some(E::Message(m)) = ev.kind else { panic!("not a message: {ev:?}") };
            assert_eq!(m.text, format!("hello {i}"));
            assert_eq!(m.seq, ev.seq);
            assert_eq!(m.client_message_id, format!("m{i}"));
        }
    }
}
}

both_transports! {
async fn resume_with_concurrent_writers_has_no_gap_and_no_duplicate() {
    let s = fast_server().await;
    let owner = s.user("owner").await;
    let mut writers = Vec::new();
    for i in 0..4 {
        writers.push(s.user(&format!("writer{i}")).await);
    }
    let reader = s.user("reader").await;
    let refs: Vec<&User> = writers.iter().chain([&reader]).collect();
    let room = room_with(&owner, &refs).await;
    let base = 6; // create + 5 joins
    const PER_WRITER: usize = 600;
    let mut tasks = Vec::new();
    for (w, u) in writers.iter().enumerate() {
        let u = u.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                send_rpc(&u, &room, &format!("w{w}-{i}"), &format!("{w}:{i}")).await.unwrap();
            }
        }));
    }
    let total = base + 4 * PER_WRITER as u64;
    // Subscribers join at different moments while the writers run, each from the start.
    let mut seen_by = Vec::new();
    for k in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(30 * k)).await;
        let reader = reader.clone();
        let room = room.clone();
        seen_by.push(tokio::spawn(async move {
            let mut c = Conn::open(&reader).await;
            // Resume from an arbitrary point: after seq k.
            c.subscribe(&room, Some(k)).await;
            let mut seqs = Vec::new();
            while seqs.last().copied().unwrap_or(k) < total {
                seqs.push(c.event().await.seq);
            }
            (k, seqs)
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for h in seen_by {
        let (k, seqs) = h.await.unwrap();
        assert_eq!(seqs, ((k + 1)..=total).collect::<Vec<_>>(), "subscriber after {k}");
    }
    // History agrees: every message once, in each writer's order.
    let events = all_events(&reader, &room).await;
    assert_eq!(events.len() as u64, total);
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    for w in 0..4 {
        let mine: Vec<String> = events
            .iter()
            .filter_map(message_text)
            .filter(|t| t.starts_with(&format!("{w}:")))
            .map(String::from)
            .collect();
        assert_eq!(mine, (0..PER_WRITER).map(|i| format!("{w}:{i}")).collect::<Vec<_>>());
    }
}
}

both_transports! {
async fn retries_with_the_same_client_message_id_are_idempotent() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let m1 = send_rpc(&alice, &room, "same-id", "first").await.unwrap();
    let m2 = send_rpc(&alice, &room, "same-id", "different text").await.unwrap();
    assert_eq!(m1.seq, m2.seq);
    assert_eq!(m2.text, "first", "a retry returns the original message");
    // Shared between SendMessage and the stream.
    let mut c = Conn::open(&alice).await;
    c.send(&room, "same-id", "again").await;
    let ack = acks(&mut c, 1).await.remove(0);
    assert_eq!(ack.seq, m1.seq);
    c.send(&room, "stream-id", "via stream").await;
    let a1 = acks(&mut c, 1).await.remove(0);
    c.send(&room, "stream-id", "via stream").await;
    let a2 = acks(&mut c, 1).await.remove(0);
    assert_eq!(a1.seq, a2.seq);
    let r = send_rpc(&alice, &room, "stream-id", "x").await.unwrap();
    assert_eq!(r.seq, a1.seq);
    let events = all_events(&alice, &room).await;
    assert_eq!(events.len(), 3, "create + two messages: {events:?}");
    // Another sender's identical id is a different message.
    let bob = s.user("bob").await;
    bob.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    assert_ne!(send_rpc(&bob, &room, "same-id", "bob's").await.unwrap().seq, m1.seq);
}
}

both_transports! {
async fn history_pages_both_ways_with_exact_has_more() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    for i in 0..30 {
        send_rpc(&alice, &room, &format!("h{i}"), &format!("t{i}")).await.unwrap();
    }
    // 31 events: the creation, then 30 messages.
    let seqs = |r: &proto::HistoryResponse| r.events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let newest = history(&alice, &room, 0, 0, 10).await.unwrap();
    assert_eq!((seqs(&newest), newest.has_more), ((22..=31).collect(), true));
    let older = history(&alice, &room, 22, 0, 10).await.unwrap();
    assert_eq!((seqs(&older), older.has_more), ((12..=21).collect(), true));
    let oldest = history(&alice, &room, 12, 0, 11).await.unwrap();
    assert_eq!((seqs(&oldest), oldest.has_more), ((1..=11).collect(), false));
    let fwd = history(&alice, &room, 0, 5, 10).await.unwrap();
    assert_eq!((seqs(&fwd), fwd.has_more), ((6..=15).collect(), true));
    let end = history(&alice, &room, 0, 25, 10).await.unwrap();
    assert_eq!((seqs(&end), end.has_more), ((26..=31).collect(), false));
    let between = history(&alice, &room, 20, 5, 3).await.unwrap();
    assert_eq!((seqs(&between), between.has_more), (vec![17, 18, 19], true));
    let default = history(&alice, &room, 0, 0, 0).await.unwrap();
    assert_eq!(default.events.len(), 31);
    expect_code(history(&alice, &room, 5, 5, 10).await, Code::InvalidArgument);
    expect_code(history(&alice, &room, 5, 9, 10).await, Code::InvalidArgument);
    // Only members read history.
    let outsider = s.user("outsider").await;
    expect_code(history(&outsider, &room, 0, 0, 10).await, Code::PermissionDenied);
}
}

both_transports! {
async fn edits_and_deletes_follow_permissions_and_show_in_history() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let m = send_rpc(&bob, &room, "b1", "tpyo").await.unwrap();
    let edit = |u: &User, seq: u64, text: &str| {
        let mut c = u.chat();
        let req = proto::EditMessageRequest { room_id: room.clone(), seq, text: text.into() };
        async move { c.edit_message(req).await.map(|r| r.into_inner()) }
    };
    let delete = |u: &User, seq: u64| {
        let mut c = u.chat();
        let req = proto::DeleteMessageRequest { room_id: room.clone(), seq };
        async move { c.delete_message(req).await.map(|_| ()) }
    };
    expect_code(edit(&alice, m.seq, "hijack").await, Code::PermissionDenied);
    let edited = edit(&bob, m.seq, "typo").await.unwrap();
    assert_eq!(edited.text, "typo");
    assert!(edited.edited_at_ms > 0);
    expect_code(edit(&bob, m.seq, "").await, Code::InvalidArgument);
    expect_code(edit(&bob, 1, "not a message").await, Code::NotFound);
    expect_code(edit(&bob, 999, "nothing there").await, Code::NotFound);
    // Bob's second message is deleted by the owner (moderator and above may).
    let m2 = send_rpc(&bob, &room, "b2", "spam").await.unwrap();
    let m3 = send_rpc(&alice, &room, "a1", "mine").await.unwrap();
    expect_code(delete(&bob, m3.seq).await, Code::PermissionDenied);
    delete(&alice, m2.seq).await.unwrap();
    delete(&alice, m2.seq).await.unwrap();
    expect_code(edit(&bob, m2.seq, "revive").await, Code::FailedPrecondition);
    let events = all_events(&alice, &room).await;
    let by_seq = |seq: u64| events.iter().find(|e| e.seq == seq).unwrap().clone();
    let Some(E::Message(shown)) = by_seq(m.seq).kind else { panic!() };
    assert_eq!((shown.text.as_str(), shown.edited_at_ms > 0), ("typo", true));
    let Some(E::Message(tomb)) = by_seq(m2.seq).kind else { panic!() };
    assert!(tomb.deleted && tomb.text.is_empty());
    assert!(events.iter().any(
        |e| matches!(&e.kind, Some(E::Edited(x)) if x.target_seq == m.seq && x.text == "typo")
    ));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(&e.kind, Some(E::Deleted(x)) if x.target_seq == m2.seq))
            .count(),
        1
    );
}
}

both_transports! {
async fn mentions_resolve_to_room_members_only() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    s.user("carol").await; // exists, but not in the room
    let room = room_with(&alice, &[&bob]).await;
    let m = send_rpc(&alice, &room, "x", "hi @Bob and @carol and @bob, mail bob@example.com")
        .await
        .unwrap();
    assert_eq!(m.mention_user_ids, vec![bob.id.clone()]);
}
}

both_transports! {
async fn a_slow_subscriber_gets_everything_while_a_fast_one_keeps_up() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let mut fast = Conn::open(&bob).await;
    let mut slow = Conn::open(&bob).await;
    fast.subscribe(&room, None).await;
    slow.subscribe(&room, None).await;
    // Far more than the room ring (1024) plus the stream queue: the slow reader must be caught
    // up from the store.
    const N: u64 = 3000;
    let sender = {
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let mut c = Conn::open(&alice).await;
            for i in 0..N {
                c.send(&room, &format!("s{i}"), "x").await;
            }
            acks(&mut c, N as usize).await
        })
    };
    for i in 0..N {
        assert_eq!(fast.event().await.seq, 3 + i);
    }
    let acked = sender.await.unwrap();
    assert_eq!(acked.len() as u64, N);
    // The slow one starts reading only now.
    for i in 0..N {
        assert_eq!(slow.event().await.seq, 3 + i);
    }
}
}

fn forge_token(s: &TestServer, user: &User, ttl_secs: i64) -> String {
    let ring = s.keyring();
    let now = edgechat::clock::now_ms() / 1000;
    let claims = serde_json::json!({
        "iss": "edgechat", "aud": "edgechat", "sub": user.id, "exp": now + ttl_secs, "iat": now,
        "jti": "short", "role": "member", "ver": 0, "typ": "access"
    });
    crate::support::forge(s, serde_json::json!({"alg": "EdDSA", "kid": ring.active().kid}), claims)
}

both_transports! {
async fn a_stream_ends_at_token_expiry_unless_reauthenticated() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let mut doomed = Conn::open_with_token(&alice, &forge_token(&s, &alice, 4)).await.unwrap();
    let mut renewed = Conn::open_with_token(&alice, &forge_token(&s, &alice, 4)).await.unwrap();
    renewed
        .frame(C::Reauthenticate(proto::Reauthenticate { access_token: alice.token.clone() }))
        .await;
    renewed.ping(1).await;
    // A token of another user is refused and changes nothing.
    let bob = s.user("bob").await;
    renewed
        .frame(C::Reauthenticate(proto::Reauthenticate { access_token: bob.token.clone() }))
        .await;
    let err = renewed.error().await;
    assert_eq!(err.code, "UNAUTHENTICATED");
    let ended = loop {
        match doomed.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    let st = ended.expect_err("ends with a status");
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    renewed.ping(2).await;
}
}

both_transports! {
async fn removed_banned_and_disabled_users_stop_receiving() {
    let s = fast_server().await;
    let root = s.admin("root").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let room = room_with(&root, &[&bob, &carol]).await;
    let mut b = Conn::open(&bob).await;
    b.subscribe(&room, None).await;
    ban(&root, &room, &bob, "bye").await;
    let ev = b.event().await;
    let Some(E::Member(m)) = ev.kind else { panic!("{ev:?}") };
    assert!(m.removed && m.banned && m.user_id == bob.id && m.reason == "bye");
    send_rpc(&root, &room, "after", "not for bob").await.unwrap();
    // The stream lives on but carries nothing more of that room.
    b.ping(7).await;
    b.frame(C::Subscribe(proto::Subscribe { room_id: room.clone(), after_seq: None })).await;
    let e = b.error().await;
    assert_eq!(e.code, "PERMISSION_DENIED", "{e:?}");
    expect_code(history(&bob, &room, 0, 0, 10).await, Code::PermissionDenied);

    // Disabling ends all streams of the user with UNAUTHENTICATED.
    let mut c = Conn::open(&carol).await;
    c.subscribe(&room, None).await;
    let mut admin = edgechat::client::admin_client(root.ch.clone(), Some(&root.token));
    admin
        .disable_user(proto::DisableUserRequest { user_id: carol.id.clone(), disabled: true })
        .await
        .unwrap();
    let ended = loop {
        match c.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(ended.unwrap_err().code(), Code::Unauthenticated);
}
}

both_transports! {
async fn bad_frames_get_stream_errors_and_the_stream_lives_on() {
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let mut c = Conn::open(&alice).await;
    c.frame_raw(proto::ClientFrame { kind: None }).await;
    assert_eq!(c.error().await.code, "INVALID_ARGUMENT");
    for (room_id, cmid, text, code) in [
        (room.as_str(), "", "hi", "INVALID_ARGUMENT"),
        (room.as_str(), &"x".repeat(65) as &str, "hi", "INVALID_ARGUMENT"),
        (room.as_str(), "ok1", "   ", "INVALID_ARGUMENT"),
        (room.as_str(), "ok2", &"x".repeat(4097) as &str, "INVALID_ARGUMENT"),
        ("", "ok3", "hi", "INVALID_ARGUMENT"),
        ("r000000000000000000000000", "ok4", "hi", "NOT_FOUND"),
    ] {
        c.send(room_id, cmid, text).await;
        let e = c.error().await;
        assert_eq!(e.code, code, "{cmid:?} {text:?}: {e:?}");
        assert_eq!(e.client_message_id, cmid);
        assert!(!e.message.is_empty());
    }
    c.frame(C::Subscribe(proto::Subscribe { room_id: "nope".into(), after_seq: None })).await;
    assert_eq!(c.error().await.code, "NOT_FOUND");
    c.frame(C::Subscribe(proto::Subscribe { room_id: room.clone(), after_seq: Some(99) })).await;
    assert_eq!(c.error().await.code, "INVALID_ARGUMENT");
    c.ping(3).await;
    c.send(&room, "fine", "still works").await;
    assert_eq!(acks(&mut c, 1).await[0].seq, 2);
}
}

both_transports! {
async fn sends_are_rate_limited_and_retries_are_free() {
    let s = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1.0;
        c.limits.send_burst = 5;
    })
    .await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    for i in 0..5 {
        send_rpc(&alice, &room, &format!("r{i}"), "x").await.unwrap();
    }
    let m = expect_code(send_rpc(&alice, &room, "r5", "x").await, Code::ResourceExhausted);
    assert!(m.contains("retry in"), "{m}");
    // A retry of an acknowledged send is always answered.
    send_rpc(&alice, &room, "r0", "x").await.unwrap();
    let mut c = Conn::open(&alice).await;
    c.send(&room, "r6", "x").await;
    let e = c.error().await;
    assert_eq!((e.code.as_str(), e.client_message_id.as_str()), ("RESOURCE_EXHAUSTED", "r6"));
}
}

both_transports! {
async fn too_many_streams_and_subscriptions_are_refused() {
    let s = TestServer::start_with(|c| {
        c.limits.max_streams_per_user = 2;
        c.limits.max_subscriptions_per_stream = 1;
    })
    .await;
    let alice = s.user("alice").await;
    let r1 = room_with(&alice, &[]).await;
    let r2 = room_with(&alice, &[]).await;
    let mut c1 = Conn::open(&alice).await;
    let _c2 = Conn::open(&alice).await;
    let third = match Conn::try_open(&alice).await {
        Ok(mut c) => c.next().await.map(|_| ()),
        Err(st) => Err(st),
    };
    assert_eq!(third.unwrap_err().code(), Code::ResourceExhausted);
    c1.subscribe(&r1, None).await;
    c1.frame(C::Subscribe(proto::Subscribe { room_id: r2, after_seq: None })).await;
    let e = c1.error().await;
    assert_eq!(e.code, "RESOURCE_EXHAUSTED");
}
}

both_transports! {
async fn shutdown_says_going_away_and_every_acked_message_is_stored() {
    let mut s = fast_server().await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let mut c = Conn::open(&alice).await;
    c.subscribe(&room, None).await;
    for i in 0..20 {
        c.send(&room, &format!("g{i}"), "x").await;
    }
    let acked: HashSet<u64> = acks(&mut c, 20).await.into_iter().map(|a| a.seq).collect();
    let stop = async { s.stop().await };
    let watch = async {
        let mut going_away = false;
        loop {
            match c.next().await {
                Ok(Some(S::GoingAway(_))) => going_away = true,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(st) => {
                    assert_eq!(st.code(), Code::Unavailable);
                    break;
                }
            }
        }
        going_away
    };
    let ((), going_away) = tokio::join!(stop, watch);
    assert!(going_away);
    assert_eq!(acked.len(), 20);
}
}

both_transports! {
async fn direct_rooms_carry_messages() {
    let s = fast_server().await;
    let a = s.user("amy").await;
    let b = s.user("ben").await;
    let room = a
        .rooms()
        .open_direct(proto::OpenDirectRequest { user_id: b.id.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut cb = Conn::open(&b).await;
    cb.subscribe(&room.id, Some(0)).await;
    send_rpc(&a, &room.id, "d1", "psst").await.unwrap();
    let mut texts = Vec::new();
    while texts.is_empty() {
        if let Some(t) = message_text(&cb.event().await) {
            texts.push(t.to_string());
        }
    }
    assert_eq!(texts, vec!["psst"]);
    let outsider = s.user("cal").await;
    expect_code(send_rpc(&outsider, &room.id, "d2", "hi").await, Code::NotFound);
}
}

both_transports! {
async fn a_frame_that_does_not_decode_gets_a_stream_error_and_the_stream_lives_on() {
    use crate::support::RawCodec;
    let s = TestServer::start().await;
    let alice = s.user("alice").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let mut grpc = tonic::client::Grpc::new(alice.ch.clone());
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", format!("Bearer {}", alice.token).parse().unwrap());
    // A Send frame (field 3) whose text (field 3) is invalid UTF-8.
    tx.send(vec![0x1a, 0x04, 0x1a, 0x02, 0xff, 0xfe]).await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/edgechat.v1.ChatService/Connect");
    let mut resp = grpc.streaming(req, path, RawCodec).await.unwrap().into_inner();
    let first =
        tokio::time::timeout(crate::support::WAIT, resp.message()).await.unwrap().unwrap().unwrap();
    let frame: proto::ServerFrame = prost::Message::decode(first.as_slice()).unwrap();
    let Some(S::Error(e)) = frame.kind else { panic!("{frame:?}") };
    assert_eq!(e.code, "INVALID_ARGUMENT", "{e:?}");
    assert!(e.message.contains("decode"), "{e:?}");
    // The stream lives on: a valid Ping after the bad frame is answered.
    let ping = proto::ClientFrame { kind: Some(C::Ping(proto::Ping { nonce: 42 })) };
    tx.send(prost::Message::encode_to_vec(&ping)).await.unwrap();
    let next = tokio::time::timeout(crate::support::WAIT, resp.message()).await.unwrap().unwrap().unwrap();
    let frame: proto::ServerFrame = prost::Message::decode(next.as_slice()).unwrap();
    assert!(matches!(frame.kind, Some(S::Pong(proto::Pong { nonce: 42 }))), "{frame:?}");
}
}

#[tokio::test]
async fn a_stream_stuck_past_the_deadline_is_closed_with_resource_exhausted() {
    let s = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
        c.limits.stuck_stream_timeout_secs = 1;
    })
    .await;
    let bob = s.user("bob").await;
    // Bob stops reading; 6 MB of 4 KB messages overflow the client's 2 MB HTTP/2 window, the
    // server's send buffer and the stream's queue.
    let (room, mut stuck) = crate::support::stuck_reader(s.user("alice").await, bob.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ended = loop {
        match stuck.next().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(ended.unwrap_err().code(), Code::ResourceExhausted);
    // The room and the sender were never held up; the reader resumes on a new stream.
    let mut again = Conn::open(&bob).await;
    again.subscribe(&room, Some(3)).await;
    assert_eq!(again.event().await.seq, 4);
}

both_transports! {
    async fn subscribing_to_made_up_rooms_costs_the_server_nothing() {
        let s = TestServer::start().await;
        let alice = s.user("alice").await;
        let mut c = Conn::open(&alice).await;
        for i in 0..100 {
            c.frame(C::Subscribe(proto::Subscribe { room_id: format!("r-made-up-{i}"), after_seq: None }))
                .await;
            assert_eq!(c.error().await.code, "NOT_FOUND");
        }
        assert_eq!(s.api().hub.room_feeds(), 0, "no ring for a room that does not exist");
    }
}

both_transports! {
    async fn logout_everywhere_and_a_role_change_end_the_users_streams() {
        let s = fast_server().await;
        let root = s.admin("root").await;
        let alice = s.user("alice").await;
        let bob = s.user("bob").await;
        let mut a1 = Conn::open(&alice).await;
        let mut a2 = Conn::open(&alice).await;
        let mut b = Conn::open(&bob).await;
        a1.ping(1).await;
        a2.ping(1).await;
        b.ping(1).await;
        alice
            .auth()
            .logout(proto::LogoutRequest { refresh_token: String::new(), all_devices: true })
            .await
            .unwrap();
        assert_eq!(a1.end_status().await.unwrap_err().code(), Code::Unauthenticated);
        assert_eq!(a2.end_status().await.unwrap_err().code(), Code::Unauthenticated);
        // A global role change ends bob's streams; a "change" to the same role does not.
        let mut admin = edgechat::client::admin_client(root.ch.clone(), Some(&root.token));
        let same = proto::SetUserRoleRequest { user_id: bob.id.clone(), role: proto::GlobalRole::Member as i32 };
        admin.set_user_role(same).await.unwrap();
        b.ping(2).await;
        let guest = proto::SetUserRoleRequest { user_id: bob.id.clone(), role: proto::GlobalRole::Guest as i32 };
        admin.set_user_role(guest).await.unwrap();
        assert_eq!(b.end_status().await.unwrap_err().code(), Code::Unauthenticated);
    }
}
