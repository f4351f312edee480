//! The cluster event log on a real three-server JetStream cluster on loopback (R3, file
//! storage, `sync_interval: always`): how long an append waits for JetStream's ack, how many
//! appends per second 1, 16 and 256 senders get (each sender on its own room, so no
//! compare-and-set conflicts: the floor under a cluster send's latency), atomic batches of a
//! room's pending sends, the pause a stream-leader kill causes, and how far a node's view
//! falls behind at the ceiling. nats-server comes from `.ci/nats-server`.
//!
//! Run: `bash .ci/nats-server && cargo bench --bench cluster` (add `-- --quick`).

#[path = "../tests/it/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgechat::cluster::log::{AppendError, JetStreamLog};
use edgechat::cluster::view::View;
use edgechat::cluster::{NatsOptions, connect, parse_urls};
use edgechat::proto::{Message, RoomEvent, room_event::Kind};
use edgechat::store::cluster::Position;
use edgechat::store::{self, Store};
use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn event(room: &str, sender: &str, n: u64) -> RoomEvent {
    let text = "x".repeat(128);
    RoomEvent {
        room_id: room.into(),
        actor_id: sender.into(),
        at_ms: 1,
        kind: Some(Kind::Message(Message {
            room_id: room.into(),
            sender_id: sender.into(),
            text,
            sent_at_ms: 1,
            client_message_id: format!("c{n}"),
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn open(c: &nats::Cluster, name: &str) -> JetStreamLog {
    let opts = NatsOptions {
        urls: parse_urls(&c.urls()).unwrap(),
        name: name.into(),
        ..Default::default()
    };
    JetStreamLog::open(connect(&opts, WAIT).await.unwrap(), 3, WAIT).await.unwrap()
}

/// Acks of all senders: (latency histogram in µs, count, time of the last ack).
struct Acks {
    hist: std::sync::Mutex<Histogram<u64>>,
    count: AtomicU64,
    /// The longest time between two consecutive acks (any sender), µs.
    longest_gap_us: AtomicU64,
    last_us: AtomicU64,
    start: Instant,
    /// Appends answered "unavailable" (retried) and conflicts (resynchronised).
    retries: AtomicU64,
    conflicts: AtomicU64,
    busy: AtomicU64,
    /// Conflicts after which the room had not moved.
    spurious: AtomicU64,
}

impl Acks {
    fn new() -> Arc<Acks> {
        Arc::new(Acks {
            hist: std::sync::Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap()),
            count: AtomicU64::new(0),
            longest_gap_us: AtomicU64::new(0),
            last_us: AtomicU64::new(0),
            start: Instant::now(),
            retries: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            spurious: AtomicU64::new(0),
        })
    }

    fn record(&self, took: Duration, n: u64) {
        self.hist.lock().unwrap().record(took.as_micros().max(1) as u64).unwrap();
        self.count.fetch_add(n, Ordering::Relaxed);
        let now = self.start.elapsed().as_micros() as u64;
        let prev = self.last_us.swap(now, Ordering::Relaxed);
        if prev > 0 {
            self.longest_gap_us.fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
        }
    }
}

/// `senders` tasks, each appending to its own room for `secs` (batches of `batch`), retrying
/// what the log could not take. Returns when all stop.
async fn run(log: &JetStreamLog, senders: usize, batch: usize, secs: Duration, acks: &Arc<Acks>) {
    let stop = Instant::now() + secs;
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..senders {
        let (log, acks) = (log.clone(), acks.clone());
        tasks.spawn(async move {
            let room = store::new_id('r');
            let sender = format!("s{s}");
            let mut pos = Position::default();
            let mut n = 0u64;
            while Instant::now() < stop {
                let events: Vec<_> = (0..batch as u64)
                    .map(|i| (event(&room, &sender, n + i), Some(format!("{sender}:{}", n + i))))
                    .collect();
                let t = Instant::now();
                match log.append_batch(&events, pos).await {
                    Ok(done) => {
                        acks.record(t.elapsed(), done.len() as u64);
                        let last = done.last().unwrap();
                        pos = Position { seq: last.seq, at: last.at };
                        n += batch as u64;
                    }
                    Err(AppendError::Unavailable(_)) => {
                        acks.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    // The previous append is still being applied by the leader: again.
                    Err(AppendError::Conflict { busy: true, .. }) => {
                        acks.busy.fetch_add(1, Ordering::Relaxed);
                    }
                    // After an append whose answer was lost (a timeout) but which was
                    // stored: resynchronise from the log; the retry is then a duplicate.
                    Err(AppendError::Conflict { .. }) => {
                        acks.conflicts.fetch_add(1, Ordering::Relaxed);
                        if let Ok(p) = log.room_last(&room).await {
                            if p == pos {
                                // Nobody else writes this room: JetStream refused a
                                // compare-and-set that was right.
                                acks.spurious.fetch_add(1, Ordering::Relaxed);
                            }
                            pos = p;
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn row(label: &str, acks: &Acks, secs: Duration) {
    let h = acks.hist.lock().unwrap();
    let n = acks.count.load(Ordering::Relaxed);
    println!(
        "| {label} | {:.0} msg/s | {:.2} ms | {:.2} ms | {:.2} ms | {} / {} ({} spurious) / {} |",
        n as f64 / secs.as_secs_f64(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        acks.retries.load(Ordering::Relaxed),
        acks.conflicts.load(Ordering::Relaxed),
        acks.spurious.load(Ordering::Relaxed),
        acks.busy.load(Ordering::Relaxed),
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = Duration::from_secs(if quick { 2 } else { 5 });
    let Some(mut c) = nats::Cluster::start(3) else {
        eprintln!("no nats-server: run `bash .ci/nats-server` first");
        std::process::exit(1);
    };
    let log = open(&c, "bench").await;
    println!("three nats-servers (R3, file, sync_interval: always) on loopback, {secs:?} per row");
    println!(
        "| senders (rooms) x batch | appends/s | p50 ack | p99 ack | max | retried / conflicts / busy |"
    );
    println!("|---|---|---|---|---|---|");
    for (senders, batch) in [(1, 1), (16, 1), (256, 1), (1, 16), (16, 16)] {
        let acks = Acks::new();
        run(&log, senders, batch, secs, &acks).await;
        row(&format!("{senders} x {batch}"), &acks, secs);
    }

    // A view at the ceiling: 256 senders for `secs` while a node's view tails; how far it
    // falls behind (sampled every 50 ms), and how long it needs after the last ack.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("view.redb"), 64 << 20).unwrap();
    let view = View::new(store.clone(), store.start_writer(Box::new(|_| {}))).unwrap();
    let stop = CancellationToken::new();
    let tail = tokio::spawn({
        let (view, log, stop) = (view.clone(), log.clone(), stop.clone());
        async move { view.run(log, stop).await.unwrap() }
    });
    let caught_up = log.last_position().await.unwrap();
    assert!(view.wait_applied(caught_up, Duration::from_secs(120)).await);
    let acks = Acks::new();
    let sampler = tokio::spawn({
        let (view, log) = (view.clone(), log.clone());
        let stop = Instant::now() + secs;
        async move {
            let mut worst = 0;
            while Instant::now() < stop {
                if let Ok(last) = log.last_position().await {
                    worst = worst.max(last.saturating_sub(view.applied()));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            worst
        }
    });
    run(&log, 256, 1, secs, &acks).await;
    let done = Instant::now();
    let last = log.last_position().await.unwrap();
    assert!(view.wait_applied(last, Duration::from_secs(120)).await);
    let worst = sampler.await.unwrap();
    println!();
    row("256 x 1, with a view tailing", &acks, secs);
    println!(
        "view apply lag at that rate: at most {worst} entries behind the stream (sampled every 50 ms); caught up {:.0} ms after the last ack",
        done.elapsed().as_secs_f64() * 1000.0
    );
    stop.cancel();
    tail.await.unwrap();

    // Leader failover: 16 senders; kill -9 the stream leader after 1 s; the longest time no
    // sender got an ack is the pause.
    let acks = Acks::new();
    let killer = {
        let log = log.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            log.stream_info().await.unwrap().cluster.and_then(|c| c.leader).unwrap()
        })
    };
    let senders = run(&log, 16, 1, secs + Duration::from_secs(5), &acks);
    tokio::pin!(senders);
    let leader = tokio::select! {
        l = killer => l.unwrap(),
        () = &mut senders => unreachable!("the senders stopped first"),
    };
    c.server(&leader).kill();
    let killed = Instant::now();
    senders.await;
    println!();
    row("16 x 1 across a leader kill", &acks, secs + Duration::from_secs(5));
    println!(
        "leader {leader} killed: the longest time without any ack was {:.0} ms (killed {:.1} s before the end)",
        acks.longest_gap_us.load(Ordering::Relaxed) as f64 / 1000.0,
        killed.elapsed().as_secs_f64()
    );
    c.restart(&leader);
}
