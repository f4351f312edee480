//! Honest under faults: revocations that a cancelled RPC cannot skip, a shutdown that no
//! client can hold, a storage failure that is reported instead of hidden.

use edgechat::chat::ChatError;
use edgechat::clock::now_ms;
use edgechat::config::Role;
use edgechat::proto;
use edgechat::rooms::RoomError;
use edgechat::server::ServeError;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::support::{
    Conn, TestServer, User, WAIT, all_events, binary_channel, fast_server, message_text, room_with,
    send_rpc, serve_binary, stuck_reader,
};

/// An admin RPC cancelled by its client (deadline, reset) after its commit runs none of the
/// handler's code after the `.await`; the domain call alone is exactly what remains. Each
/// revocation must still end every stream of its user.
async fn revocations_end_streams_even_when_the_rpc_goes_away_after_its_commit() {
    // The periodic token re-check would end the streams too, in time: keep it out of the way,
    // so only the revocation published with the commit can.
    let s = TestServer::start_with(|c| c.limits.token_recheck_secs = 3600).await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let carol = s.user("carol").await;
    let accounts = &s.api().accounts;
    let mut a = Conn::open(&alice).await;
    let mut b = Conn::open(&bob).await;
    let mut c = Conn::open(&carol).await;
    for conn in [&mut a, &mut b, &mut c] {
        conn.ping(1).await;
    }
    accounts.set_disabled("", &alice.id, true, 0).await.unwrap();
    assert_eq!(a.end_status().await.unwrap_err().code(), Code::Unauthenticated);
    accounts.set_role("", &bob.id, Role::Guest, 0).await.unwrap();
    assert_eq!(b.end_status().await.unwrap_err().code(), Code::Unauthenticated);
    let who = accounts.authenticate(&carol.token, now_ms()).unwrap();
    accounts.logout(&who, "", true).await.unwrap();
    assert_eq!(c.end_status().await.unwrap_err().code(), Code::Unauthenticated);
}

/// A request authenticated just before its user was disabled reaches the writer after the
/// disable committed: the job refuses it (reads too), whatever the auth layer saw.
#[tokio::test]
async fn writer_jobs_refuse_a_user_disabled_after_authentication() {
    let s = fast_server().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;
    let room = room_with(&alice, &[&bob]).await;
    let api = s.api();
    let who = api.accounts.authenticate(&bob.token, now_ms()).unwrap();
    api.messages.send(&who, &room, "before", "still fine", 0, now_ms()).await.unwrap();
    api.accounts.set_disabled("", &bob.id, true, 0).await.unwrap();
    let sent = api.messages.send(&who, &room, "after", "too late", 0, now_ms()).await;
    assert!(matches!(sent, Err(ChatError::Room(RoomError::Unauthenticated(_)))), "{sent:?}");
    let created =
        api.rooms.create(&who, "new", "", proto::Visibility::Public as i32, false, 0).await;
    assert!(matches!(created, Err(RoomError::Unauthenticated(_))), "{created:?}");
    let left = api.rooms.leave(&who, &room, 0).await;
    assert!(matches!(left, Err(RoomError::Unauthenticated(_))), "{left:?}");
    let read = api.messages.history(
        &who,
        &edgechat::proto::HistoryRequest { room_id: room.clone(), limit: 10, ..Default::default() },
    );
    assert!(matches!(read, Err(ChatError::Room(RoomError::Unauthenticated(_)))), "{read:?}");
    // Re-enabled, the old token stays revoked (its version was bumped): log in again.
    api.accounts.set_disabled("", &bob.id, false, 0).await.unwrap();
    let sent = api.messages.send(&who, &room, "again", "old token", 0, now_ms()).await;
    assert!(matches!(sent, Err(ChatError::Room(RoomError::Unauthenticated(_)))), "{sent:?}");
}

both_transports!(revocations_end_streams_even_when_the_rpc_goes_away_after_its_commit);

/// A client whose stream is stuck (it never reads, its flow-control window closed) cannot
/// hold shutdown: the server drains for at most `shutdown_drain_secs`, then closes what is
/// left and stops, database closed.
async fn a_client_that_never_reads_cannot_hold_shutdown() {
    let mut s = TestServer::start_with(|c| {
        c.limits.send_rate_per_sec = 1e9;
        c.limits.send_burst = 100_000;
        c.limits.stuck_stream_timeout_secs = 3600;
        c.limits.shutdown_drain_secs = 1;
    })
    .await;
    let (_, stuck) = stuck_reader(s.user("alice").await, s.user("bob").await).await;
    // `stop` fails the test if the server is not stopped within WAIT (20 s).
    s.stop().await;
    drop(stuck);
}

/// The real binary: SIGTERM drains for at most `shutdown_drain_secs` while a stuck client
/// holds a stream, then exits cleanly (0); during a long drain, a second SIGTERM exits at
/// once (130).
#[tokio::test]
async fn sigterm_drains_to_a_deadline_and_a_second_signal_exits_at_once() {
    for (drain, second_signal, code) in [("1", false, 0), ("600", true, 130)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut served = serve_binary(
            &dir,
            &[
                ("EDGECHAT_LIMITS_SHUTDOWN_DRAIN_SECS", drain),
                ("EDGECHAT_LIMITS_STUCK_STREAM_TIMEOUT_SECS", "3600"),
                ("EDGECHAT_LIMITS_SEND_RATE_PER_SEC", "1000000"),
                ("EDGECHAT_LIMITS_SEND_BURST", "100000"),
            ],
        );
        let ch = binary_channel(served.port, &dir.join("certs/ca.pem")).await;
        let alice = User::register(ch, "alice").await;
        let ch = binary_channel(served.port, &dir.join("certs/ca.pem")).await;
        let bob = User::register(ch, "bob").await;
        let _stuck = stuck_reader(alice, bob).await;
        served.signal(libc::SIGTERM);
        served.wait_for_log("shutting down");
        if second_signal {
            served.signal(libc::SIGTERM);
        }
        assert_eq!(served.exit_status().code(), Some(code), "drain {drain} s");
    }
}

/// A failed fsync is final for the process (redb refuses all later I/O): the send is not
/// acknowledged, health says NOT_SERVING, the server stops by itself with the storage error
/// (the CLI exits non-zero), and after a restart every acknowledged message is there once.
async fn a_failed_fsync_stops_the_server_and_loses_nothing_acknowledged() {
    // The health Watch stream below stays open: the drain ends it after 1 s.
    let mut s = TestServer::start_with(|c| c.limits.shutdown_drain_secs = 1).await;
    let alice = s.user("alice").await;
    let room = room_with(&alice, &[]).await;
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(send_rpc(&alice, &room, &format!("ok{i}"), "kept").await.unwrap().seq);
    }
    let mut health = HealthClient::new(s.channel().await);
    let req = HealthCheckRequest { service: "edgechat.v1.ChatService".into() };
    let mut watch = health.watch(req).await.unwrap().into_inner();
    let status = |m: Option<HealthCheckResponse>| m.expect("watch open").status();
    assert_eq!(status(watch.message().await.unwrap()), ServingStatus::Serving);
    s.api().messages.store().health().fail_syncs();
    let lost = send_rpc(&alice, &room, "lost", "never acknowledged").await;
    assert_eq!(lost.unwrap_err().code(), Code::Unavailable);
    let next = tokio::time::timeout(WAIT, watch.message()).await.expect("health changes");
    assert_eq!(status(next.unwrap()), ServingStatus::NotServing);
    let stopped = s.wait_stopped().await;
    assert!(matches!(stopped, Err(ServeError::Storage(_))), "{stopped:?}");
    // The disk is fine again (a supervisor restarted us): everything acknowledged is there.
    s.restart().await;
    let events = all_events(&alice, &room).await;
    for seq in &acked {
        assert!(events.iter().any(|e| e.seq == *seq && message_text(e) == Some("kept")));
    }
    // The unacknowledged send may or may not have reached the disk; its retry settles it,
    // once.
    let retried = send_rpc(&alice, &room, "lost", "never acknowledged").await.unwrap();
    let events = all_events(&alice, &room).await;
    let copies = events.iter().filter(|e| message_text(e) == Some("never acknowledged")).count();
    assert_eq!(copies, 1);
    assert!(retried.seq > *acked.last().unwrap());
}

both_transports!(
    a_client_that_never_reads_cannot_hold_shutdown,
    a_failed_fsync_stops_the_server_and_loses_nothing_acknowledged,
);
