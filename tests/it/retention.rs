//! Retention: with `[retention] max_events_per_room`, a room keeps its newest events while a
//! sender goes on; History, GetRoom, ListRooms and Subscribe report the first retained seq,
//! and a client resuming from before it is told so (never a silent gap).

use edgechat::{proto, retention};

use crate::support::{Conn, TestServer, User, all_events, history, room_with, send_rpc};

const KEEP: u64 = 100;

/// Runs the server's pruning job (the code its background task runs every second) until the
/// room's first retained seq is `want`: no waiting on the timer.
async fn prune_until(s: &TestServer, u: &User, room: &str, want: u64) -> proto::HistoryResponse {
    let rules = retention::Rules::new(edgechat::config::RetentionConfig {
        max_age: None,
        max_events_per_room: Some(KEEP),
    });
    let exec = s.api().messages.exec().clone();
    let mut cursors = retention::Cursors::default();
    for _ in 0..100 {
        let h = history(u, room, 0, 0, 500).await.unwrap();
        if h.first_seq == want {
            return h;
        }
        let now = edgechat::clock::now_ms();
        cursors = retention::prune_once(
            &exec,
            rules,
            std::time::Duration::from_secs(86_400),
            cursors,
            now,
        )
        .await
        .unwrap()
        .1;
    }
    panic!("first_seq did not reach {want}");
}

async fn a_room_keeps_its_newest_events_and_says_where_they_start() {
    let s = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
        c.retention.max_events_per_room = KEEP;
    })
    .await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    // A long-running sender: 3 x KEEP messages, pruning going on meanwhile.
    let mut last = 0;
    for i in 0..3 * KEEP {
        last =
            send_rpc(&alice, &room, &format!("m{i}"), &format!("message {i}")).await.unwrap().seq;
    }
    let first = last - KEEP + 1;
    let h = prune_until(&s, &bob, &room, first).await;
    // History holds exactly the newest KEEP, from first_seq, gapless, and no more below.
    let seqs: Vec<u64> = h.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (first..=last).collect::<Vec<_>>());
    assert!(!h.has_more);
    let below = history(&bob, &room, first, 0, 50).await.unwrap();
    assert!(below.events.is_empty() && !below.has_more && below.first_seq == first);
    assert_eq!(all_events(&bob, &room).await.len() as u64, KEEP);
    let got = bob.rooms().get_room(proto::GetRoomRequest { room_id: room.clone() }).await;
    assert_eq!(got.unwrap().into_inner().first_seq, first);
    let listed = bob.rooms().list_rooms(proto::ListRoomsRequest::default()).await.unwrap();
    let listed = listed.into_inner().rooms.into_iter().find(|r| r.id == room).unwrap();
    assert_eq!((listed.first_seq, listed.last_seq), (first, last));
    // Resuming from before the retained range: Subscribed says where history starts, and the
    // replay begins there.
    let mut conn = Conn::open(&bob).await;
    let sub = conn.subscribe(&room, Some(5)).await;
    assert_eq!((sub.first_seq, sub.last_seq), (first, last));
    assert_eq!(conn.event().await.seq, first);
    // Resuming inside the range is untouched by retention.
    let mut conn = Conn::open(&bob).await;
    let sub = conn.subscribe(&room, Some(last - 3)).await;
    assert_eq!(sub.first_seq, first);
    assert_eq!(conn.event().await.seq, last - 2);
}

both_transports!(a_room_keeps_its_newest_events_and_says_where_they_start);

#[tokio::test]
async fn retention_values_that_make_no_sense_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value) in [
        ("EDGECHAT_RETENTION_MAX_EVENTS_PER_ROOM", "5"),
        ("EDGECHAT_RETENTION_MAX_AGE_DAYS", "-1"),
        ("EDGECHAT_RETENTION_MAX_AGE_DAYS", "100000"),
    ] {
        let out = crate::support::edgechat_bin()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env(key, value)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{key}={value} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let name = key.trim_start_matches("EDGECHAT_RETENTION_").to_lowercase();
        assert!(err.contains(&name), "{key}={value}: {err}");
    }
}
