//! Bounded under abuse: what one client can make the server hold (a retry flood that never
//! reads its answers, re-subscriptions racing their old followers, subscriptions racing a
//! kick), each answered with backpressure or a clear status while everyone else is served.

use std::time::Duration;

use edgechat::proto::{self, client_frame::Kind as C, server_frame::Kind as S};

use crate::support::{Conn, TestServer, create_room, fast_server, history, room_with, send_rpc};

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
    // Nothing more of the room is queued: a ping comes back before any other event.
    c.ping(1).await;
    assert_eq!(subscribed, 3);
    // Unsubscribe, subscribe again from 0: still nothing twice; new events continue.
    c.frame(C::Unsubscribe(proto::Unsubscribe { room_id: room.clone() })).await;
    c.subscribe(&room, Some(0)).await;
    send_rpc(&alice, &room, "late", "late").await.unwrap();
    assert_eq!(c.event().await.seq, 602);
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
