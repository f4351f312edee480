//! Cluster mode's event log against real nats-server processes (`nats::Cluster`): the stream
//! is created or refused by its settings, appends are compare-and-set and idempotent, and
//! two nodes' views tail the log to identical rooms while the stream leader is killed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use edgechat::cluster::log::{AppendError, JetStreamLog, Logged, STREAM, stream_config};
use edgechat::cluster::view::View;
use edgechat::cluster::{ClusterError, NatsOptions, connect};
use edgechat::proto::{Message, RoomEvent, room_event::Kind};
use edgechat::store::cluster::Position;
use edgechat::store::{self, Store};
use tokio_util::sync::CancellationToken;

use crate::nats::Cluster;

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

fn message(room: &str, sender: &str, cmid: &str) -> RoomEvent {
    RoomEvent {
        room_id: room.into(),
        actor_id: sender.into(),
        at_ms: 1,
        kind: Some(Kind::Message(Message {
            room_id: room.into(),
            sender_id: sender.into(),
            text: format!("text of {cmid}"),
            sent_at_ms: 1,
            client_message_id: cmid.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn cmid_of(e: &RoomEvent) -> (String, String) {
    match &e.kind {
        Some(Kind::Message(m)) => (m.sender_id.clone(), m.client_message_id.clone()),
        other => panic!("not a message: {other:?}"),
    }
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
        js.create_stream(config).await.unwrap();
        let err = JetStreamLog::open(client.clone(), 1, WAIT).await.err().expect("refused");
        assert!(matches!(err, ClusterError::Stream(_)), "{err:?}");
        assert!(err.to_string().contains(setting), "{setting}: {err}");
    }
    // Asking for three replicas of a one-replica stream is refused too.
    js.delete_stream(STREAM).await.unwrap();
    js.create_stream(stream_config(1)).await.unwrap();
    let err = JetStreamLog::open(client, 3, WAIT).await.err().expect("refused");
    assert!(err.to_string().contains("num_replicas"), "{err}");
}

#[tokio::test]
async fn appends_are_compare_and_set_and_idempotent() {
    let Some(c) = Cluster::start(1) else { return };
    let l = log(&c, "a", 1).await;
    let room = store::new_id('r');
    let first = l.append(&message(&room, "u1", "m1"), Position::default(), Some("u1:m1")).await;
    let first = first.unwrap();
    assert_eq!((first.seq, first.duplicate), (1, false));
    // Decided on the room as it was before `first`: refused, nothing stored.
    let stale = l.append(&message(&room, "u2", "m2"), Position::default(), Some("u2:m2")).await;
    assert!(matches!(stale, Err(AppendError::Conflict { .. })), "{stale:?}");
    // A retry of `first` decided on the same stale state: a single server checks the
    // expectation first (conflict), a clustered stream the message id first (duplicate);
    // either way nothing new is stored. Decided on the current state: the original.
    let p1 = Position { seq: 1, at: first.at };
    match l.append(&message(&room, "u1", "m1"), Position::default(), Some("u1:m1")).await {
        Err(AppendError::Conflict { .. }) => {}
        Ok(a) => assert_eq!((a.seq, a.at, a.duplicate), (1, first.at, true)),
        other => panic!("{other:?}"),
    }
    let again = l.append(&message(&room, "u1", "m1"), p1, Some("u1:m1")).await.unwrap();
    assert_eq!((again.seq, again.at, again.duplicate), (1, first.at, true));
    let second = l.append(&message(&room, "u2", "m2"), p1, Some("u2:m2")).await.unwrap();
    assert_eq!(second.seq, 2);
    // Another room is independent.
    let other = store::new_id('r');
    assert_eq!(
        l.append(&message(&other, "u1", "x"), Position::default(), None).await.unwrap().seq,
        1
    );

    let events = l.range(&room, 0, 100).await.unwrap();
    let got: Vec<_> = events.iter().map(|e| (e.event.seq, cmid_of(&e.event).1)).collect();
    assert_eq!(got, [(1, "m1".to_string()), (2, "m2".to_string())]);
    assert_eq!(l.range(&room, 1, 100).await.unwrap().len(), 1);
    assert_eq!(l.last_position().await.unwrap(), 3);

    // A batch: stored whole, contiguous, one compare-and-set for all.
    let p2 = Position { seq: 2, at: second.at };
    let batch: Vec<_> = (3..6)
        .map(|i| (message(&room, "u3", &format!("b{i}")), Some(format!("u3:b{i}"))))
        .collect();
    let got = l.append_batch(&batch, p2).await.unwrap();
    let seqs: Vec<_> = got.iter().map(|a| (a.seq, a.at, a.duplicate)).collect();
    assert_eq!(seqs, [(3, 4, false), (4, 5, false), (5, 6, false)]);
    // Decided on stale state: refused whole.
    let stale = l.append_batch(&batch[..2], p2).await;
    assert!(matches!(stale, Err(AppendError::Conflict { .. })), "{stale:?}");
    assert_eq!(l.range(&room, 0, 100).await.unwrap().len(), 5);
    // A batch holding an id already stored (a retry after a lost ack) goes entry by entry:
    // the old one answered with its seq, the new one appended after it.
    let p5 = Position { seq: 5, at: 6 };
    let mixed = [batch[2].clone(), (message(&room, "u3", "b6"), Some("u3:b6".to_string()))];
    let got = l.append_batch(&mixed, p5).await.unwrap();
    let seqs: Vec<_> = got.iter().map(|a| (a.seq, a.duplicate)).collect();
    assert_eq!(seqs, [(5, true), (6, false)]);
    let all: Vec<u64> = l.range(&room, 0, 100).await.unwrap().iter().map(|e| e.event.seq).collect();
    assert_eq!(all, [1, 2, 3, 4, 5, 6]);
}

/// A node's view in a temporary directory, tailing the log.
struct Node {
    _dir: tempfile::TempDir,
    view: Arc<View>,
    store: Store,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    fn start(l: JetStreamLog) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("view.redb"), 8 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        let view = View::new(store.clone(), writer).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (view, stop) = (view.clone(), stop.clone());
            async move { view.run(l, stop).await.unwrap() }
        });
        Node { _dir: dir, view, store, stop, task }
    }

    fn room(&self, room: &str) -> Vec<RoomEvent> {
        let tx = self.store.read().unwrap();
        store::events::range(&tx, room, 0, u64::MAX, 100_000, false).unwrap().0
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// Appends until acked, retrying with the same message id: after a conflict, once the view
/// has caught up past the position that conflicted; after an outage, at once (bounded).
async fn send_until_acked(l: &JetStreamLog, view: &View, event: RoomEvent, id: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "{id} never acked");
        let pos = view.position(&event.room_id).unwrap();
        match l.append(&event, pos, Some(id)).await {
            Ok(a) => return a.seq,
            Err(AppendError::Conflict { busy: true, .. }) => {
                // The room's previous append is still being applied: again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(AppendError::Conflict { .. }) => {
                // Someone appended after `pos`: wait (bounded) for the view to show it.
                let target = view.applied() + 1;
                view.wait_applied(target, Duration::from_millis(500)).await;
            }
            Err(AppendError::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{id}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_write_one_gapless_log_while_the_leader_is_killed() {
    let Some(mut c) = Cluster::start(3) else { return };
    let (la, lb) = (log(&c, "node-a", 3).await, log(&c, "node-b", 3).await);
    let (a, b) = (Node::start(la.clone()), Node::start(lb.clone()));
    let rooms: Vec<String> = (0..3).map(|_| store::new_id('r')).collect();
    let per_writer = 60;

    // A batch on a clustered stream: the positions it reports are where the log has them.
    let room = store::new_id('r');
    let batch: Vec<_> = (0..3)
        .map(|i| (message(&room, "u9", &format!("b{i}")), Some(format!("u9:b{i}"))))
        .collect();
    let got = la.append_batch(&batch, Position::default()).await.unwrap();
    let logged = la.range(&room, 0, 10).await.unwrap();
    let want: Vec<_> = logged.iter().map(|l| (l.event.seq, l.at)).collect();
    assert_eq!(got.iter().map(|a| (a.seq, a.at)).collect::<Vec<_>>(), want);
    assert_eq!(la.room_last(&room).await.unwrap(), Position { seq: 3, at: want[2].1 });

    // Four writers, two per node, each on every room in turn.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (l, view) =
            if w % 2 == 0 { (la.clone(), a.view.clone()) } else { (lb.clone(), b.view.clone()) };
        let rooms = rooms.clone();
        writers.spawn(async move {
            let sender = format!("u{w}");
            let mut acked = Vec::new();
            for i in 0..per_writer {
                let room = &rooms[i % rooms.len()];
                let cmid = format!("c{i}");
                let id = format!("{sender}:{cmid}");
                let seq = send_until_acked(&l, &view, message(room, &sender, &cmid), &id).await;
                acked.push((room.clone(), (sender.clone(), cmid), seq));
            }
            acked
        });
    }
    // Midway, kill -9 the stream's leader, and start it again a moment later.
    let info = loop {
        if let Ok(i) = la.stream_info().await
            && i.state.messages >= 40
        {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let leader = info.cluster.and_then(|cl| cl.leader).expect("a leader");
    c.server(&leader).kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.restart(&leader);
    // Then another server pauses (SIGSTOP) for 3 s while the first catches up: writes stall
    // without a quorum and go on after it.
    let other = c.servers.iter().map(|s| s.name.clone()).find(|n| *n != leader).unwrap();
    c.server(&other).pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.server(&other).resume();

    let mut acked = Vec::new();
    while let Some(r) = writers.join_next().await {
        acked.extend(r.unwrap());
    }
    assert_eq!(acked.len(), 4 * per_writer);

    // Both views catch up with the log, and hold the same rooms, gapless, each acked send
    // exactly once at its acked seq.
    let last = la.last_position().await.unwrap();
    for n in [&a, &b] {
        assert!(n.view.wait_applied(last, WAIT).await, "a view did not catch up to {last}");
        assert_eq!(n.view.halted(&rooms[0]), None);
    }
    let mut at_seq: HashMap<(String, u64), (String, String)> = HashMap::new();
    for room in &rooms {
        let (ea, eb) = (a.room(room), b.room(room));
        assert!(ea == eb, "the views differ in {room}");
        let seqs: Vec<u64> = ea.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seqs of {room}");
        let mut seen = BTreeMap::new();
        for e in &ea {
            assert!(seen.insert(cmid_of(e), e.seq).is_none(), "{:?} stored twice", cmid_of(e));
            at_seq.insert((room.clone(), e.seq), cmid_of(e));
        }
        // The log itself says the same.
        let logged: Vec<Logged> = la.range(room, 0, 100_000).await.unwrap();
        assert!(
            logged.iter().map(|l| &l.event).eq(ea.iter()),
            "the log differs from the views in {room}"
        );
    }
    for (room, id, seq) in &acked {
        assert_eq!(at_seq.get(&(room.clone(), *seq)), Some(id), "{id:?} acked at {room}/{seq}");
    }
    assert_eq!(at_seq.len(), acked.len(), "only acked sends are stored");
    // A view lost is rebuilt from the log: a fresh node ends up holding the same rooms.
    let fresh = Node::start(log(&c, "node-c", 3).await);
    assert!(fresh.view.wait_applied(last, WAIT).await, "the new view did not catch up");
    for room in &rooms {
        assert!(fresh.room(room) == a.room(room), "the rebuilt view differs in {room}");
    }
    fresh.stop().await;
    a.stop().await;
    b.stop().await;
}
