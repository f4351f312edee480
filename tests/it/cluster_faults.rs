//! The fault test of cluster mode (SCALE-OUT.md E8): three nats-servers (R3) and two
//! `edgechat serve --cluster` processes on loopback; four writers (two per node) on three
//! rooms, retrying what was not acknowledged with the same `client_message_id` (on the other
//! node when theirs is down); a subscriber on each node that resumes by `after_seq` on the
//! other node when its stream fails. Meanwhile: kill -9 the stream leader and restart it,
//! SIGSTOP a server for 10 s, kill -9 an edgechat node mid-burst and restart it. Then every
//! room's seqs are exactly 1..N on both nodes, with identical events; every acknowledged
//! send is there once, at its acked seq; every subscriber saw each room gapless and without
//! a duplicate; the mentioned user's notifications are identical on both nodes.
//!
//! Run alone: `bash .ci/nats-server && EDGECHAT_REQUIRE_NATS=1 cargo test --test it cluster_faults`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgechat::client::{self, GrpcChannel, TlsFiles};
use edgechat::proto::{self, room_event::Kind, server_frame::Kind as Frame};

use crate::nats::Cluster;
use crate::support::{Served, eventually, serve_binary, serve_binary_at};

/// A bound on every wait of the test (polls, not sleeps).
const WAIT: Duration = Duration::from_secs(60);
const ROOMS: usize = 3;
const PASSWORD: &str = "correct horse battery";

fn env(urls: &str) -> Vec<(&'static str, String)> {
    vec![
        ("EDGECHAT_CLUSTER_NATS_URLS", urls.to_string()),
        ("EDGECHAT_LIMITS_SEND_RATE_PER_SEC", "1000000000".into()),
        ("EDGECHAT_LIMITS_SEND_BURST", "100000".into()),
        ("EDGECHAT_LIMITS_ACTION_RATE_PER_SEC", "1000000000".into()),
        ("EDGECHAT_LIMITS_ACTION_BURST", "100000".into()),
        ("EDGECHAT_QUIC_ENABLED", "false".into()),
    ]
}

fn start(dir: &Path, listen: &str, urls: &str) -> Served {
    let env = env(urls);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if listen.is_empty() { serve_binary(dir, &env) } else { serve_binary_at(dir, listen, &env) }
}

/// A channel to each node (connecting lazily and again after a failure: a node that is down
/// fails the call).
#[derive(Clone)]
struct Nodes([GrpcChannel; 2]);

impl Nodes {
    fn channel(&self, i: usize) -> GrpcChannel {
        self.0[i].clone()
    }
}

/// Whether a failed call may have failed because of the faults (and is retried).
fn retryable(st: &tonic::Status) -> bool {
    use tonic::Code::*;
    matches!(st.code(), Unavailable | Unknown | Cancelled | DeadlineExceeded | Internal)
}

/// Registers `name` on node 0 (retrying the faults away) and returns its id and token.
async fn register(nodes: &Nodes, name: &str) -> (String, String) {
    eventually(WAIT, "register", || async {
        let r = client::auth_client(nodes.channel(0), None)
            .register(proto::RegisterRequest {
                username: name.into(),
                password: PASSWORD.into(),
                display_name: String::new(),
                ..Default::default()
            })
            .await;
        match r {
            Ok(r) => {
                let r = r.into_inner();
                Some((r.user.unwrap().id, r.access_token))
            }
            Err(st) if retryable(&st) => None,
            Err(st) => panic!("register {name}: {st}"),
        }
    })
    .await
}

/// Sends retried by all writers (reported, to show the faults bit).
static RETRIES: AtomicU64 = AtomicU64::new(0);

/// What the writers got acknowledged: (sender id, client_message_id) -> (room, seq).
type Acked = Arc<Mutex<HashMap<(String, String), (String, u64)>>>;

/// Sends to the rooms in turn until `stop`, one message at a time; what fails is retried
/// with the same id, on the other node after a transport failure. Every fifth message
/// mentions `@reader`.
async fn writer(
    nodes: Nodes,
    home: usize,
    (me, id, token): (String, String, String),
    rooms: Vec<String>,
    acked: Acked,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut node = home;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let room = rooms[n as usize % rooms.len()].clone();
        let cmid = format!("{me}-{n}");
        let text =
            if n.is_multiple_of(5) { format!("@reader {n}") } else { format!("{me} says {n}") };
        let deadline = Instant::now() + WAIT;
        let seq = loop {
            let mut chat = client::chat_client(nodes.channel(node), Some(&token));
            let r = chat
                .send_message(proto::SendMessageRequest {
                    room_id: room.clone(),
                    client_message_id: cmid.clone(),
                    text: text.clone(),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(m) => break m.into_inner().seq,
                Err(st) if retryable(&st) => {
                    assert!(Instant::now() < deadline, "{cmid} never acknowledged: {st}");
                    RETRIES.fetch_add(1, Ordering::Relaxed);
                    // Down or unable to reach the log: try the other node, as a client
                    // behind a load balancer would.
                    node = 1 - node;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(st) => panic!("{cmid}: {st}"),
            }
        };
        acked.lock().unwrap().insert((id.clone(), cmid), (room, seq));
        count.fetch_add(1, Ordering::Relaxed);
        n += 1;
        node = home;
    }
}

/// What a subscriber saw: room -> seqs, in the order delivered.
type Seen = Arc<Mutex<BTreeMap<String, Vec<u64>>>>;

/// Follows every room from seq 1 on node `home`; when the stream fails, resumes on the other
/// node after the last seq it saw of each room. Ends once it has seen `target` (room -> last
/// seq) of every room.
async fn subscriber(
    nodes: Nodes,
    home: usize,
    token: String,
    rooms: Vec<String>,
    seen: Seen,
    target: tokio::sync::watch::Receiver<Option<BTreeMap<String, u64>>>,
    moves: Arc<AtomicU64>,
) {
    let mut node = home;
    let done = |seen: &Seen, target: &Option<BTreeMap<String, u64>>| {
        let Some(t) = target else { return false };
        let seen = seen.lock().unwrap();
        t.iter().all(|(room, last)| seen.get(room).and_then(|s| s.last()) == Some(last))
    };
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for room in &rooms {
            let after = seen.lock().unwrap().get(room).and_then(|s| s.last().copied()).unwrap_or(0);
            let sub = proto::Subscribe { room_id: room.clone(), after_seq: Some(after) };
            let frame =
                proto::ClientFrame { kind: Some(proto::client_frame::Kind::Subscribe(sub)) };
            tx.send(frame).await.unwrap();
        }
        let mut chat = client::chat_client(nodes.channel(node), Some(&token));
        let stream = chat.connect(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(_) => {
                node = 1 - node;
                moves.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        loop {
            let mut t = target.clone();
            if done(&seen, &t.borrow_and_update()) {
                return;
            }
            let frame = tokio::select! {
                f = stream.message() => f,
                _ = t.changed() => continue,
            };
            match frame {
                Ok(Some(proto::ServerFrame { kind: Some(Frame::Event(e)) })) => {
                    seen.lock().unwrap().entry(e.room_id.clone()).or_default().push(e.seq);
                }
                Ok(Some(proto::ServerFrame { kind: Some(Frame::Error(e)) })) => {
                    panic!("subscriber: {e:?}")
                }
                Ok(Some(_)) => {}
                // Ended or failed (the node went away, GoingAway): the other node.
                Ok(None) | Err(_) => break,
            }
        }
        drop(tx);
        node = 1 - node;
        moves.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every event of `room` on node `i`, paging backwards from the newest.
async fn all_events(nodes: &Nodes, i: usize, token: &str, room: &str) -> Vec<proto::RoomEvent> {
    let mut out: Vec<proto::RoomEvent> = Vec::new();
    loop {
        let before = out.first().map(|e| e.seq).unwrap_or(0);
        let page = eventually(WAIT, "history", || async {
            client::chat_client(nodes.channel(i), Some(token))
                .history(proto::HistoryRequest {
                    room_id: room.into(),
                    after_seq: 0,
                    before_seq: before,
                    limit: 500,
                    ..Default::default()
                })
                .await
                .ok()
                .map(|r| r.into_inner())
        })
        .await;
        let mut page_events = page.events;
        page_events.extend(out);
        out = page_events;
        if !page.has_more {
            return out;
        }
    }
}

async fn all_notifications(nodes: &Nodes, i: usize, token: &str) -> Vec<proto::Notification> {
    let mut out: Vec<proto::Notification> = Vec::new();
    loop {
        let after = out.last().map(|n| n.id).unwrap_or(0);
        let page = client::chat_client(nodes.channel(i), Some(token))
            .list_notifications(proto::ListNotificationsRequest { after_id: after, limit: 500 })
            .await
            .unwrap()
            .into_inner()
            .notifications;
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Waits until the writers have `more` acknowledgements beyond `from`.
async fn progress(count: &AtomicU64, more: u64) {
    let from = count.load(Ordering::Relaxed);
    eventually(WAIT, "the writers make progress", || async {
        (count.load(Ordering::Relaxed) >= from + more).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_or_doubled_while_servers_and_a_node_die() {
    let Some(mut c) = Cluster::start(3) else { return };
    let urls = c.urls();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let data = |i: usize| dirs[i].path().join("data");
    let mut a = start(&data(0), "", &urls);
    a.wait_for_log("cluster node");
    // Node B gets A's keys and certificates, as docs/cluster.md says.
    for sub in ["keys", "certs"] {
        std::fs::create_dir_all(data(1).join(sub)).unwrap();
        for f in std::fs::read_dir(data(0).join(sub)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), data(1).join(sub).join(f.file_name())).unwrap();
        }
    }
    let b = start(&data(1), "", &urls);
    b.wait_for_log("cluster node");
    let a_listen = format!("127.0.0.1:{}", a.port);
    let tls = TlsFiles { ca: Some(data(0).join("certs/ca.pem")), client_cert: None };
    let nodes = Nodes([a.port, b.port].map(|p| {
        client::connect_lazy(&format!("https://localhost:{p}"), &tls).expect("a channel")
    }));

    // Users and rooms.
    let (_, reader) = register(&nodes, "reader").await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let name = format!("writer{w}");
        let (id, token) = register(&nodes, &name).await;
        writers.push((name, id, token));
    }
    let (_, watcher) = register(&nodes, "watcher").await;
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let room = client::rooms_client(nodes.channel(0), Some(&writers[0].2))
            .create_room(proto::CreateRoomRequest {
                name: format!("room{r}"),
                visibility: proto::Visibility::Public as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        for token in writers.iter().skip(1).map(|w| &w.2).chain([&reader, &watcher]) {
            client::rooms_client(nodes.channel(1), Some(token))
                .join_room(proto::JoinRoomRequest { room_id: room.clone() })
                .await
                .unwrap();
        }
        rooms.push(room);
    }

    // Subscribers, one starting on each node.
    let (target_tx, target) = tokio::sync::watch::channel(None);
    let moves = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for (home, token) in [(0, &reader), (1, &watcher)] {
        let seen: Seen = Default::default();
        let task = tokio::spawn(subscriber(
            nodes.clone(),
            home,
            token.clone(),
            rooms.clone(),
            seen.clone(),
            target.clone(),
            moves.clone(),
        ));
        subs.push((seen, task));
    }

    // Writers: w0, w1 on A; w2, w3 on B.
    let acked: Acked = Default::default();
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (w, who) in writers.iter().enumerate() {
        tasks.push(tokio::spawn(writer(
            nodes.clone(),
            w / 2,
            who.clone(),
            rooms.clone(),
            acked.clone(),
            count.clone(),
            stop.clone(),
        )));
    }

    // The faults, each mid-burst. (The sleeps are the faults' durations, not waits.)
    let client = edgechat::cluster::connect(
        &edgechat::cluster::NatsOptions {
            urls: edgechat::cluster::parse_urls(&urls).unwrap(),
            name: "test".into(),
            ..Default::default()
        },
        WAIT,
    )
    .await
    .unwrap();
    let log = edgechat::cluster::log::JetStreamLog::open(client, 3, WAIT).await.unwrap();
    let leader = || async {
        eventually(WAIT, "a stream leader", || async {
            log.stream_info().await.ok().and_then(|i| i.cluster).and_then(|c| c.leader)
        })
        .await
    };
    progress(&count, 40).await;
    let l = leader().await;
    c.server(&l).kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.restart(&l);
    progress(&count, 40).await;
    let l = leader().await;
    let paused = c.server(&l).pause_for(Duration::from_secs(10));
    tokio::task::spawn_blocking(move || paused.join().unwrap()).await.unwrap();
    progress(&count, 40).await;
    a.signal(libc::SIGKILL);
    a.exit_status();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (dir, at) = (data(0), urls.clone());
    let a = tokio::task::spawn_blocking(move || start(&dir, &a_listen, &at)).await.unwrap();
    progress(&count, 40).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    // Both nodes: identical rooms, 1..N.
    let mut last = BTreeMap::new();
    let mut stored: HashMap<(String, String), (String, u64)> = HashMap::new();
    for room in &rooms {
        let on_a = all_events(&nodes, 0, &reader, room).await;
        let on_b = eventually(WAIT, "node B has applied everything node A has", || async {
            let on_b = all_events(&nodes, 1, &reader, room).await;
            (on_b.len() >= on_a.len()).then_some(on_b)
        })
        .await;
        assert_eq!(on_a, on_b, "room {room} differs between the nodes");
        let seqs: Vec<u64> = on_a.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "room {room} is gapless");
        for e in &on_a {
            if let Some(Kind::Message(m)) = &e.kind {
                let key = (m.sender_id.clone(), m.client_message_id.clone());
                let again = stored.insert(key.clone(), (room.clone(), e.seq));
                assert!(again.is_none(), "{key:?} stored twice: {again:?} and seq {}", e.seq);
            }
        }
        last.insert(room.clone(), seqs.len() as u64);
    }
    // Every acknowledged send once, at its acked seq.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 160, "{} sends acknowledged", acked.len());
    for (key, at) in &acked {
        assert_eq!(stored.get(key), Some(at), "acknowledged {key:?} at {at:?}");
    }

    // Every subscriber saw every room gapless, without a duplicate.
    target_tx.send(Some(last.clone())).unwrap();
    for (seen, task) in subs {
        tokio::time::timeout(WAIT, task).await.expect("subscribers catch up").unwrap();
        for (room, n) in &last {
            let got = seen.lock().unwrap().get(room).cloned().unwrap_or_default();
            assert_eq!(got, (1..=*n).collect::<Vec<_>>(), "room {room} as one subscriber saw it");
        }
    }
    assert!(moves.load(Ordering::Relaxed) >= 1, "a subscriber moved to the other node");
    eprintln!(
        "fault test: {} sends acknowledged, {} retried, rooms {:?}, subscribers moved {} times",
        acked.len(),
        RETRIES.load(Ordering::Relaxed),
        last.values().collect::<Vec<_>>(),
        moves.load(Ordering::Relaxed)
    );

    // The mentioned reader's notifications, ids included, are the same on both nodes.
    let on_a = all_notifications(&nodes, 0, &reader).await;
    let on_b = all_notifications(&nodes, 1, &reader).await;
    assert!(!on_a.is_empty());
    assert_eq!(on_a, on_b);
    assert_eq!(
        on_a.iter().map(|n| n.id).collect::<Vec<_>>(),
        (1..=on_a.len() as u64).collect::<Vec<_>>()
    );
    drop((a, b));
}
