//! Cluster mode end to end on loopback: three nats-servers (R3, file storage,
//! `sync_interval: always`) and edgechat nodes started in this process (real servers over
//! h2c on 127.0.0.1; the clients are the client library). What a sender sees: `SendMessage`
//! ack latency and messages/s for 1, 16 and 256 senders (each its own user and room) on one
//! node, beside the same run against a single node; how long a second node needs to apply
//! the last message after the last ack at the ceiling; the pause a stream-leader kill causes.
//! nats-server comes from `.ci/nats-server`.
//!
//! Run: `bash .ci/nats-server && cargo bench --bench cluster` (add `-- --quick`).

#[path = "../tests/it/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgechat::client::{self, GrpcChannel, TlsFiles};
use edgechat::config::RawConfig;
use edgechat::proto;
use hdrhistogram::Histogram;

/// Channels the senders share (HTTP/2 connections; 100 streams each by default).
const CHANNELS: usize = 8;

/// A node (or a single server) in a temporary directory.
struct Node {
    running: edgechat::server::Running,
    dir: tempfile::TempDir,
}

impl Node {
    /// Starts a server; with `cluster`, a node of it; with `keys_from`, with that data
    /// directory's keys (so it trusts the same tokens).
    async fn start(cluster: Option<&nats::Cluster>, keys_from: Option<&Path>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if let Some(from) = keys_from {
            for sub in ["keys", "certs"] {
                std::fs::create_dir_all(data.join(sub)).unwrap();
                for f in std::fs::read_dir(from.join(sub)).unwrap() {
                    let f = f.unwrap();
                    std::fs::copy(f.path(), data.join(sub).join(f.file_name())).unwrap();
                }
            }
        }
        let mut raw = RawConfig {
            data_dir: data.to_string_lossy().into_owned(),
            listen: "127.0.0.1:0".into(),
            ..RawConfig::default()
        };
        raw.tls.insecure_plaintext = true;
        raw.quic.enabled = false;
        raw.limits.send_rate_per_sec = 1e9;
        raw.limits.send_burst = 100_000;
        raw.limits.action_rate_per_sec = 1e9;
        raw.limits.action_burst = 100_000;
        raw.backup.snapshot_interval_secs = 0;
        if let Some(c) = cluster {
            raw.cluster.nats_urls = c.urls();
        }
        let running = edgechat::server::start(raw.validate().unwrap()).await.unwrap();
        Node { running, dir }
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    async fn channels(&self) -> Vec<GrpcChannel> {
        let url = format!("http://127.0.0.1:{}", self.running.addr.port());
        let mut out = Vec::new();
        for _ in 0..CHANNELS {
            out.push(client::connect(&url, &TlsFiles::default()).await.unwrap());
        }
        out
    }
}

/// A sender: a user with a token and a room of their own.
#[derive(Clone)]
struct Sender {
    token: String,
    room: String,
}

/// `n` users (registered a few at a time: each costs an argon2 hash), each with a room.
async fn senders(channels: &[GrpcChannel], n: usize, tag: &str) -> Vec<Sender> {
    let mut out = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let mut made = tokio::task::JoinSet::new();
        for &i in chunk {
            let ch = channels[i % channels.len()].clone();
            let name = format!("{tag}{i}");
            made.spawn(async move {
                let r = client::auth_client(ch.clone(), None)
                    .register(proto::RegisterRequest {
                        username: name.clone(),
                        password: "correct horse battery".into(),
                        display_name: String::new(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let room = client::rooms_client(ch, Some(&r.access_token))
                    .create_room(proto::CreateRoomRequest {
                        name,
                        visibility: proto::Visibility::Public as i32,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .id;
                Sender { token: r.access_token, room }
            });
        }
        while let Some(s) = made.join_next().await {
            out.push(s.unwrap());
        }
    }
    out
}

/// Acks of all senders.
struct Acks {
    hist: std::sync::Mutex<Histogram<u64>>,
    count: AtomicU64,
    /// The longest time between two consecutive acks (any sender), µs.
    longest_gap_us: AtomicU64,
    last_us: AtomicU64,
    start: Instant,
    /// Sends answered UNAVAILABLE (retried with the same id).
    retries: AtomicU64,
    /// The last acked (room, seq).
    last: std::sync::Mutex<(String, u64)>,
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
            last: std::sync::Mutex::new((String::new(), 0)),
        })
    }

    fn record(&self, took: Duration, room: &str, seq: u64) {
        self.hist.lock().unwrap().record(took.as_micros().max(1) as u64).unwrap();
        self.count.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap() = (room.to_string(), seq);
        let now = self.start.elapsed().as_micros() as u64;
        let prev = self.last_us.swap(now, Ordering::Relaxed);
        if prev > 0 {
            self.longest_gap_us.fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
        }
    }
}

/// Every sender sends (one message at a time, 128 bytes of text) to its room for `secs`,
/// retrying an UNAVAILABLE with the same `client_message_id`.
async fn run(channels: &[GrpcChannel], senders: &[Sender], secs: Duration, acks: &Arc<Acks>) {
    let stop = Instant::now() + secs;
    // Ids unique to this run: a sender's earlier runs used the same counter.
    let run_id: u64 = rand::random();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, s) in senders.iter().enumerate() {
        let (s, acks) = (s.clone(), acks.clone());
        let mut chat = client::chat_client(channels[i % channels.len()].clone(), Some(&s.token));
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                let t = Instant::now();
                let sent = chat
                    .send_message(proto::SendMessageRequest {
                        room_id: s.room.clone(),
                        client_message_id: format!("{run_id:x}-{n}"),
                        text: "x".repeat(128),
                        ..Default::default()
                    })
                    .await;
                match sent {
                    Ok(m) => {
                        acks.record(t.elapsed(), &s.room, m.into_inner().seq);
                        n += 1;
                    }
                    Err(st) if st.code() == tonic::Code::Unavailable => {
                        acks.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(st) => panic!("{st}"),
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
        "| {label} | {:.0} msg/s | {:.2} ms | {:.2} ms | {:.2} ms | {} |",
        n as f64 / secs.as_secs_f64(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        acks.retries.load(Ordering::Relaxed),
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
    println!(
        "three nats-servers (R3, file, sync_interval: always) and edgechat nodes on loopback, \
         {secs:?} per row; each sender its own user and room, one send at a time"
    );
    println!("| mode, senders | msgs/s | p50 ack | p99 ack | max | UNAVAILABLE, retried |");
    println!("|---|---|---|---|---|---|");
    let single = Node::start(None, None).await;
    let ch = single.channels().await;
    let all = senders(&ch, 256, "single").await;
    for n in [1, 16, 256] {
        let acks = Acks::new();
        run(&ch, &all[..n], secs, &acks).await;
        row(&format!("single node, {n}"), &acks, secs);
    }
    drop(ch);

    let a = Node::start(Some(&c), None).await;
    let b = Node::start(Some(&c), Some(&a.data())).await;
    let ch = a.channels().await;
    let all = senders(&ch, 256, "node").await;
    for n in [1, 16, 256] {
        let acks = Acks::new();
        run(&ch, &all[..n], secs, &acks).await;
        row(&format!("cluster node, {n}"), &acks, secs);
        if n == 256 {
            // How long node B needs to show the last message acked on A.
            let done = Instant::now();
            let (room, seq) = acks.last.lock().unwrap().clone();
            let token = all.iter().find(|s| s.room == room).unwrap().token.clone();
            let bch = b.channels().await;
            let mut chat = client::chat_client(bch[0].clone(), Some(&token));
            loop {
                let h = chat
                    .history(proto::HistoryRequest {
                        room_id: room.clone(),
                        before_seq: 0,
                        after_seq: seq - 1,
                        limit: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                if h.events.iter().any(|e| e.seq == seq) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            println!(
                "\nnode B showed the last message acked on A {:.0} ms after the last ack \
                 (its view's apply lag at that rate)\n",
                done.elapsed().as_secs_f64() * 1000.0
            );
        }
    }

    // Leader failover: 16 senders; kill -9 the stream leader after 1 s; the longest time no
    // sender got an ack is the pause.
    let client = edgechat::cluster::connect(
        &edgechat::cluster::NatsOptions {
            urls: edgechat::cluster::parse_urls(&c.urls()).unwrap(),
            name: "bench".into(),
            ..Default::default()
        },
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let log = edgechat::cluster::log::JetStreamLog::open(client, 3, Duration::from_secs(10))
        .await
        .unwrap();
    let acks = Acks::new();
    let long = secs + Duration::from_secs(5);
    let senders_run = run(&ch, &all[..16], long, &acks);
    tokio::pin!(senders_run);
    let killer = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        log.stream_info().await.unwrap().cluster.and_then(|c| c.leader).unwrap()
    };
    let leader = tokio::select! {
        l = killer => l,
        () = &mut senders_run => unreachable!("the senders stopped first"),
    };
    c.server(&leader).kill();
    let killed = Instant::now();
    senders_run.await;
    row("cluster node, 16, across a leader kill", &acks, long);
    println!(
        "\nleader {leader} killed: the longest time without any ack was {:.0} ms (killed {:.1} s \
         before the end)",
        acks.longest_gap_us.load(Ordering::Relaxed) as f64 / 1000.0,
        killed.elapsed().as_secs_f64()
    );
    c.restart(&leader);
}
