//! Cluster mode against real nats-server processes (`nats::Cluster`): the stream is created
//! or refused by its settings; nodes (real servers, in this process, on loopback) share
//! users, rooms and history through the log, see each other's messages live, answer a retry
//! made on another node as a retry, serve History while NATS is away and refuse sends with
//! `UNAVAILABLE`, and a fresh node rebuilds the same view from the log.

use std::time::Duration;

use edgechat::cluster::log::{JetStreamLog, STREAM, stream_config};
use edgechat::cluster::{ClusterError, NatsOptions, connect};
use edgechat::proto;
use edgechat::proto::server_frame::Kind as Frame;

use crate::nats::Cluster;
use crate::support::{Conn, TestServer, User, eventually, expect_code, send_rpc};

const WAIT: Duration = Duration::from_secs(30);

fn options(urls: &str, name: &str) -> NatsOptions {
    NatsOptions {
        urls: edgechat::cluster::parse_urls(urls).unwrap(),
        name: name.into(),
        ..Default::default()
    }
}

async fn log(c: &Cluster, name: &str, replicas: usize) -> JetStreamLog {
    let client = connect(&options(&c.urls(), name), WAIT).await.unwrap();
    JetStreamLog::open(client, replicas, WAIT).await.unwrap()
}

/// The first node of a cluster on `c` (its keys are the cluster's).
async fn first_node(c: &Cluster, replicas: usize) -> TestServer {
    let urls = c.urls();
    TestServer::start_with(move |raw| {
        raw.cluster.nats_urls = urls;
        raw.cluster.replicas = replicas;
    })
    .await
}

/// Another node, with `first`'s keys and certificates.
async fn node_beside(first: &TestServer, c: &Cluster, replicas: usize) -> TestServer {
    let urls = c.urls();
    TestServer::start_sharing_keys(first, move |raw| {
        raw.cluster.nats_urls = urls;
        raw.cluster.replicas = replicas;
    })
    .await
}

/// Logs in, retrying while the log is unavailable (a leader election), as a client does.
/// Two nodes (the second with the first's keys) on a one-server cluster, both also set up by
/// `tweak`.
async fn pair(
    c: &Cluster,
    tweak: impl Fn(&mut edgechat::config::RawConfig),
) -> (TestServer, TestServer) {
    let urls = c.urls();
    let setup = |raw: &mut edgechat::config::RawConfig| {
        raw.cluster.nats_urls = urls.clone();
        raw.cluster.replicas = 1;
        tweak(raw);
    };
    let a = TestServer::start_with(setup).await;
    let b = TestServer::start_sharing_keys(&a, setup).await;
    (a, b)
}

async fn login(node: &TestServer, name: &str) -> User {
    let ch = node.channel().await;
    let r = eventually(WAIT, "login", || async {
        let asked = edgechat::client::auth_client(ch.clone(), None)
            .login(proto::LoginRequest {
                username: name.into(),
                password: "correct horse battery".into(),
            })
            .await;
        match asked {
            Ok(r) => Some(r.into_inner()),
            Err(st) if st.code() == tonic::Code::Unavailable => None,
            Err(st) => panic!("{name} logs in: {st}"),
        }
    })
    .await;
    User { id: r.user.unwrap().id, name: name.into(), token: r.access_token, ch }
}

async fn public_room(u: &User, name: &str) -> String {
    let asked = proto::CreateRoomRequest {
        name: name.into(),
        visibility: proto::Visibility::Public as i32,
        ..Default::default()
    };
    u.rooms().create_room(asked).await.unwrap().into_inner().id
}

/// Sends, retrying with the same id while the log is unavailable, as a client does.
async fn send_until_acked(u: &User, room: &str, cmid: &str, text: &str) -> proto::Message {
    eventually(WAIT, "a send is acknowledged", || async {
        match send_rpc(u, room, cmid, text).await {
            Ok(m) => Some(m),
            Err(st) if st.code() == tonic::Code::Unavailable => None,
            Err(st) => panic!("{st}"),
        }
    })
    .await
}

async fn history(u: &User, room: &str) -> Vec<proto::RoomEvent> {
    newest(u, room).await.events
}

/// The newest page (500) of the room's history.
async fn newest(u: &User, room: &str) -> proto::HistoryResponse {
    let asked = proto::HistoryRequest { room_id: room.into(), limit: 500, ..Default::default() };
    u.chat().history(asked).await.unwrap().into_inner()
}

async fn notifications(u: &User) -> Vec<(u64, String)> {
    let r = u
        .chat()
        .list_notifications(proto::ListNotificationsRequest { after_id: 0, limit: 100 })
        .await
        .unwrap()
        .into_inner();
    r.notifications.into_iter().map(|n| (n.id, n.text)).collect()
}

#[tokio::test]
async fn an_unreachable_nats_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let err = connect(&options(&url, "t"), Duration::from_millis(600)).await.unwrap_err();
    assert!(matches!(err, ClusterError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    let err = edgechat::cluster::parse_urls(" , ").unwrap_err();
    assert!(err.to_string().contains("no NATS server"), "{err}");
}

/// Creates the stream right after it was deleted: the server sometimes answers "error
/// creating store for stream" (10049) while the old one's files are still going.
async fn recreate(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::stream::Config,
) {
    eventually(WAIT, "the stream is created again", || async {
        js.create_stream(config.clone()).await.ok().map(|_| ())
    })
    .await;
}

#[tokio::test]
async fn the_stream_is_made_once_and_a_wrong_one_is_refused_by_name() {
    let Some(c) = Cluster::start(1) else { return };
    let l = log(&c, "a", 1).await;
    assert_eq!(l.last_position().await.unwrap(), 0);
    // Opening again finds it.
    log(&c, "b", 1).await;

    // A stream someone made with the 2-minute default duplicate window, then with memory
    // storage: each refused, naming the setting.
    let client = connect(&options(&c.urls(), "c"), WAIT).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    for (setting, config) in [
        (
            "duplicate_window",
            async_nats::jetstream::stream::Config {
                duplicate_window: Duration::from_secs(120),
                ..stream_config(1)
            },
        ),
        (
            "storage",
            async_nats::jetstream::stream::Config {
                storage: async_nats::jetstream::stream::StorageType::Memory,
                ..stream_config(1)
            },
        ),
        (
            "deny_purge",
            async_nats::jetstream::stream::Config { deny_purge: false, ..stream_config(1) },
        ),
    ] {
        js.delete_stream(STREAM).await.unwrap();
        recreate(&js, config).await;
        let err = JetStreamLog::open(client.clone(), 1, WAIT).await.err().expect("refused");
        assert!(matches!(err, ClusterError::Stream(_)), "{err:?}");
        assert!(err.to_string().contains(setting), "{setting}: {err}");
    }
    // Asking for three replicas of a one-replica stream is refused too.
    js.delete_stream(STREAM).await.unwrap();
    recreate(&js, stream_config(1)).await;
    let err = JetStreamLog::open(client, 3, WAIT).await.err().expect("refused");
    assert!(err.to_string().contains("num_replicas"), "{err}");
}

#[tokio::test]
async fn a_node_without_nats_does_not_start_and_names_the_servers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("nats://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgechat"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cluster", &url, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("EDGECHAT_CLUSTER_CONNECT_WAIT_SECS", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, out).await.expect("gives up in time").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "never a half-started node: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("NATS is unreachable") && stderr.contains(&url), "{stderr}");
    // A bad URL is refused by the configuration, naming the key.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgechat"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cluster", "nats://:x", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("cluster.nats_urls"), "{stderr}");
}

#[tokio::test]
async fn two_nodes_share_users_rooms_and_history_and_a_new_node_rebuilds_it() {
    let Some(mut c) = Cluster::start(3) else { return };
    let a = first_node(&c, 3).await;
    let b = node_beside(&a, &c, 3).await;

    // Registered on A, logged in on B; registered on B, seen on A.
    let alice = User::register(a.channel().await, "alice").await;
    let alice_b = login(&b, "alice").await;
    assert_eq!(alice_b.id, alice.id);
    let bob = User::register(b.channel().await, "bob").await;
    let bob_a = login(&a, "bob").await;

    // A room made on A, joined on B (the join is applied after the creation everywhere).
    let room = public_room(&alice, "ops").await;
    bob.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();

    // Bob follows the room on B; Alice sends on A: live on B, in order, seqs after the join.
    let mut conn = Conn::open(&bob).await;
    conn.frame(proto::client_frame::Kind::Subscribe(proto::Subscribe {
        room_id: room.clone(),
        after_seq: None,
    }))
    .await;
    conn.until(|f| matches!(f, Frame::Subscribed(_)).then_some(())).await;
    // Mid-burst one NATS server is paused (SIGSTOP) for 10 s: the stream goes on with the
    // other two (or elects a new leader if it was the leader), and a node connected to it
    // notices by its pings and reconnects elsewhere; alice retries what was not acknowledged
    // with the same id, as a client does.
    let mut acked = Vec::new();
    let mut paused = None;
    for i in 0..20 {
        if i == 10 {
            paused = Some(c.server("n2").pause_for(Duration::from_secs(10)));
        }
        let text = if i == 7 { "@bob look".to_string() } else { format!("m{i}") };
        let cmid = format!("c{i}");
        acked.push(send_until_acked(&alice, &room, &cmid, &text).await.seq);
    }
    let paused = paused.expect("paused mid-burst");
    tokio::task::spawn_blocking(move || paused.join().unwrap()).await.unwrap();
    assert_eq!(acked, (3..23).collect::<Vec<u64>>(), "seqs after the two joins, gapless");
    let mut live = Vec::new();
    while live.len() < 20 {
        let ev = conn.until(|f| match f {
            Frame::Event(e) if matches!(e.kind, Some(proto::room_event::Kind::Message(_))) => {
                Some(e.clone())
            }
            _ => None,
        });
        live.push(ev.await.seq);
    }
    assert_eq!(live, acked, "bob on B saw every message alice sent on A, in order");

    // A retry on B of a send acked on A is answered with the original, not posted again.
    let again = send_until_acked(&alice_b, &room, "c3", "a different text").await;
    assert_eq!((again.seq, again.text.as_str()), (6, "m3"));

    // Both views are identical: history, and bob's notification (the mention) with its id.
    let on_a = history(&bob_a, &room).await;
    let on_b = eventually(WAIT, "B's view has everything", || async {
        let h = history(&bob, &room).await;
        (h.len() == on_a.len()).then_some(h)
    })
    .await;
    assert_eq!(on_a, on_b);
    assert_eq!(on_a.len(), 22);
    let notes = notifications(&bob_a).await;
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notifications(&bob).await, notes);

    // A third node with an empty database catches up with the log before it serves.
    let fresh = node_beside(&a, &c, 3).await;
    let bob_fresh = login(&fresh, "bob").await;
    assert_eq!(history(&bob_fresh, &room).await, on_a);
    assert_eq!(notifications(&bob_fresh).await, notes);

    // Back to a single node: a node's database is a whole single-node database.
    let mut b = b;
    b.restart_with(|raw| raw.cluster.nats_urls.clear()).await;
    let bob_alone = login(&b, "bob").await;
    assert_eq!(history(&bob_alone, &room).await, on_a);
    assert_eq!(notifications(&bob_alone).await, notes);
    let next = send_rpc(&bob_alone, &room, "alone", "just me now").await.unwrap();
    assert_eq!(next.seq, 23);
}

#[tokio::test]
async fn with_nats_away_sends_are_unavailable_history_works_and_a_retry_lands_once() {
    let Some(mut c) = Cluster::start(1) else { return };
    let a = first_node(&c, 1).await;
    let alice = User::register(a.channel().await, "alice").await;
    let room = public_room(&alice, "ops").await;
    assert_eq!(send_rpc(&alice, &room, "before", "hi").await.unwrap().seq, 2);

    c.server("n1").kill();
    let err = send_rpc(&alice, &room, "during", "are you there").await;
    let msg = expect_code(err, tonic::Code::Unavailable);
    assert!(msg.contains("log is unavailable") && msg.contains("retry"), "{msg}");
    // History comes from the node's view.
    assert_eq!(history(&alice, &room).await.len(), 2);

    // NATS back: the client retries with the same id until it is taken, and it is there
    // once, whether or not an earlier attempt was stored.
    c.restart("n1");
    let m = send_until_acked(&alice, &room, "during", "are you there").await;
    assert_eq!(m.seq, 3);
    let texts: Vec<_> = history(&alice, &room)
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            Some(proto::room_event::Kind::Message(m)) => Some(m.text),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["hi", "are you there"]);
}

#[tokio::test]
async fn retention_prunes_every_node_alike() {
    let Some(c) = Cluster::start(1) else { return };
    let (a, b) = pair(&c, |raw| {
        raw.retention.max_events_per_room = 100;
        raw.limits.send_rate_per_sec = 1e9;
        raw.limits.send_burst = 100_000;
    })
    .await;
    let alice = User::register(a.channel().await, "alice").await;
    let alice_b = login(&b, "alice").await;
    let room = public_room(&alice, "ops").await;
    for i in 0..150 {
        send_until_acked(&alice, &room, &format!("c{i}"), &format!("m{i}")).await;
    }
    // One join and 150 messages: the newest 100 stay, from seq 52, on both nodes (each
    // node's pruning slices are changes that every node applies; an idle node prunes every
    // 10 s, hence the longer bound).
    let first = |u: User| {
        let room = room.clone();
        async move {
            let h = newest(&u, &room).await;
            (h.first_seq == 52).then_some(h.events)
        }
    };
    let on_a = eventually(2 * WAIT, "node A prunes", || first(alice.clone())).await;
    let on_b = eventually(2 * WAIT, "node B prunes", || first(alice_b.clone())).await;
    assert_eq!(on_a.len(), 100);
    assert_eq!(on_a, on_b);
}

#[tokio::test]
async fn presence_is_seen_across_nodes() {
    let Some(c) = Cluster::start(1) else { return };
    let (a, b) = pair(&c, |raw| raw.limits.presence_grace_secs = 0).await;
    let alice = User::register(a.channel().await, "alice").await;
    let room = public_room(&alice, "ops").await;
    let bob = User::register(b.channel().await, "bob").await;
    bob.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    let bob_on_a = |want: proto::PresenceStatus| {
        let (alice, room, bob) = (alice.clone(), room.clone(), bob.id.clone());
        async move {
            let members = alice
                .rooms()
                .list_members(proto::ListMembersRequest { room_id: room })
                .await
                .unwrap()
                .into_inner()
                .members;
            let m = members.iter().find(|m| m.user.as_ref().is_some_and(|u| u.id == bob))?;
            (m.presence == want as i32).then_some(())
        }
    };
    eventually(WAIT, "bob offline on A", || bob_on_a(proto::PresenceStatus::Offline)).await;
    // Bob's stream on B makes him online for alice on A, away too; closing it, offline.
    let conn = Conn::open(&bob).await;
    eventually(WAIT, "bob online on A", || bob_on_a(proto::PresenceStatus::Online)).await;
    conn.frame(proto::client_frame::Kind::SetPresence(proto::SetPresence {
        status: proto::PresenceStatus::Away as i32,
    }))
    .await;
    eventually(WAIT, "bob away on A", || bob_on_a(proto::PresenceStatus::Away)).await;
    drop(conn);
    eventually(WAIT, "bob offline on A again", || bob_on_a(proto::PresenceStatus::Offline)).await;
}

/// Issue 19's changes (replies, reactions, pins, mutes, audit entries) are log entries like
/// any other: both nodes end up with the same messages, counts, pins and audit log.
#[tokio::test]
async fn conversation_changes_apply_alike_on_every_node() {
    let Some(c) = Cluster::start(1) else { return };
    let (a, b) = pair(&c, |_| {}).await;
    let alice = User::register(a.channel().await, "alice").await;
    let bob = User::register(a.channel().await, "bob").await;
    let bob_b = login(&b, "bob").await;
    let room = public_room(&alice, "ops").await;
    bob.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    let root = send_until_acked(&alice, &room, "root", "deploy?").await;
    let asked = proto::SendMessageRequest {
        room_id: room.clone(),
        client_message_id: "r".into(),
        text: "go".into(),
        reply_to_seq: root.seq,
        ..Default::default()
    };
    bob_b.chat().send_message(asked).await.unwrap();
    let react =
        proto::AddReactionRequest { room_id: room.clone(), seq: root.seq, emoji: "👍".into() };
    bob_b.chat().add_reaction(react).await.unwrap();
    let pin = proto::PinMessageRequest { room_id: room.clone(), seq: root.seq };
    alice.chat().pin_message(pin).await.unwrap();
    let audit = |u: User| {
        let room = room.clone();
        async move {
            let asked = proto::ListRoomAuditRequest { room_id: room, ..Default::default() };
            u.rooms().list_room_audit(asked).await.unwrap().into_inner().entries
        }
    };
    let alice_b = login(&b, "alice").await;
    let settled = |u: User| {
        let room = room.clone();
        async move {
            let h = history(&u, &room).await;
            (h.last().map(|e| e.seq) == Some(6)).then_some(h)
        }
    };
    let on_a = eventually(WAIT, "node A has everything", || settled(alice.clone())).await;
    let on_b = eventually(WAIT, "node B has everything", || settled(alice_b.clone())).await;
    assert_eq!(on_a, on_b);
    let Some(proto::room_event::Kind::Message(m)) = &on_b[2].kind else { panic!("{on_b:?}") };
    assert_eq!((m.reply_count, m.pinned, m.reactions.len()), (1, true, 1));
    assert_eq!(audit(alice.clone()).await, audit(alice_b.clone()).await);
    // The search index is written by the same changes on every node: the reply sent on B is
    // found on A, the root sent on A is found on B.
    let found = |u: User, query: &'static str| async move {
        let asked = proto::SearchRequest { query: query.into(), ..Default::default() };
        let hits = u.chat().search(asked).await.unwrap().into_inner().hits;
        hits.iter().map(|h| (h.room_id.clone(), h.seq)).collect::<Vec<_>>()
    };
    assert_eq!(found(alice.clone(), "go").await, [(room.clone(), root.seq + 1)]);
    assert_eq!(found(bob_b.clone(), "deploy").await, [(room.clone(), root.seq)]);
    assert_eq!(found(alice_b, "go deploy").await, Vec::new());
}

/// An upload through one node (its chunks split into log entries under the 64 KiB limit)
/// is on every node: downloaded from the other one, bytes and all.
#[tokio::test]
async fn attachments_uploaded_on_one_node_download_from_another() {
    let Some(c) = Cluster::start(1) else { return };
    let (a, b) = pair(&c, |_| {}).await;
    let alice = User::register(a.channel().await, "alice").await;
    let bob = User::register(a.channel().await, "bob").await;
    let bob_b = login(&b, "bob").await;
    let room = public_room(&alice, "files").await;
    bob.rooms().join_room(proto::JoinRoomRequest { room_id: room.clone() }).await.unwrap();
    let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 239) as u8).collect();
    let mut files = edgechat::client::attachments_client(alice.ch.clone(), Some(&alice.token));
    let att = edgechat::client::upload(&mut files, "big.bin", &bytes).await.unwrap();
    let asked = proto::SendMessageRequest {
        room_id: room.clone(),
        client_message_id: "f".into(),
        attachment_ids: vec![att.id.clone()],
        ..Default::default()
    };
    let sent = alice.chat().send_message(asked).await.unwrap().into_inner();
    // Bob on the other node sees the message once its view has it, and downloads the file.
    let theirs = edgechat::client::attachments_client(bob_b.ch.clone(), Some(&bob_b.token));
    let got = eventually(WAIT, "the file on the other node", || async {
        match edgechat::client::download(&mut theirs.clone(), &att.id).await {
            Ok(b) => Some(b),
            Err(st) if st.code() == tonic::Code::NotFound => None,
            Err(st) => panic!("{st}"),
        }
    })
    .await;
    assert_eq!(got, bytes);
    let seen = history(&bob_b, &room).await;
    assert!(seen.iter().any(|e| matches!(&e.kind,
        Some(proto::room_event::Kind::Message(m)) if m.seq == sent.seq && m.attachments == [att.clone()])));
}
