//! Durable send throughput (group commit) and fan-out delivery rate, measured end to end:
//! an in-process server over HTTP/2 + TLS on 127.0.0.1, clients from `edgechat::client`, on
//! the same machine. Prints a table; `--quick` runs shorter.
//!
//! Run: `cargo bench --bench durable` (add `-- --quick` for a smoke run).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use edgechat::client::{self, TlsFiles};
use edgechat::config::RawConfig;
use edgechat::proto;

struct Bench {
    _dir: tempfile::TempDir,
    url: String,
    tls: TlsFiles,
    running: edgechat::server::Running,
}

async fn start() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawConfig {
        data_dir: dir.path().join("data").to_string_lossy().into_owned(),
        listen: "127.0.0.1:0".into(),
        ..RawConfig::default()
    };
    raw.limits.send_rate_per_sec = 1e9;
    raw.limits.send_burst = 100_000;
    let running = edgechat::server::start(raw.validate().unwrap()).await.unwrap();
    let url = format!("https://localhost:{}", running.addr.port());
    let tls = TlsFiles { ca: Some(dir.path().join("data/certs/ca.pem")), client_cert: None };
    Bench { _dir: dir, url, tls, running }
}

async fn user(b: &Bench, name: &str) -> (edgechat::client::GrpcChannel, String) {
    let ch = client::connect(&b.url, &b.tls).await.unwrap();
    let r = client::auth_client(ch.clone(), None)
        .register(proto::RegisterRequest {
            username: name.into(),
            password: "correct horse battery".into(),
            display_name: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (ch, r.access_token)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn durable(
    b: &Bench,
    room: &str,
    tokens: &[(edgechat::client::GrpcChannel, String)],
    senders: usize,
    secs: f64,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (ch, token) = tokens[s % tokens.len()].clone();
        let (room, stop) = (room.to_string(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = client::chat_client(ch, Some(&token));
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.send_message(proto::SendMessageRequest {
                    room_id: room.clone(),
                    client_message_id: format!("s{s}-{i}"),
                    text: "a durable message of about sixty bytes, like a short chat line".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = t0.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "durable  senders={senders:<4} {:>8.0} msg/s  ack p50 {:>6.2} ms  p99 {:>6.2} ms  ({} msgs)",
        lat.len() as f64 / elapsed,
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.len()
    );
    let _ = &b.url;
}

async fn fanout(b: &Bench, subscribers: usize, messages: u64) {
    let (pub_ch, pub_token) = user(b, "publisher").await;
    let room = client::rooms_client(pub_ch.clone(), Some(&pub_token))
        .create_room(proto::CreateRoomRequest {
            name: "fanout".into(),
            topic: String::new(),
            visibility: proto::Visibility::Public as i32,
            read_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    let delivered = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    let mut ready = Vec::new();
    for i in 0..subscribers {
        let (ch, token) = user(b, &format!("sub{i}")).await;
        client::rooms_client(ch.clone(), Some(&token))
            .join_room(proto::JoinRoomRequest { room_id: room.id.clone() })
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut stream = client::chat_client(ch, Some(&token))
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        tx.send(proto::ClientFrame {
            kind: Some(proto::client_frame::Kind::Subscribe(proto::Subscribe {
                room_id: room.id.clone(),
                after_seq: None,
            })),
        })
        .await
        .unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        ready.push(ready_rx);
        let delivered = delivered.clone();
        subs.push(tokio::spawn(async move {
            let _keep = tx;
            let mut ready_tx = Some(ready_tx);
            let mut got = 0;
            while got < messages {
                let Some(f) = stream.message().await.unwrap() else { break };
                match f.kind {
                    Some(proto::server_frame::Kind::Subscribed(_)) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Some(proto::server_frame::Kind::Event(e))
                        if matches!(e.kind, Some(proto::room_event::Kind::Message(_))) =>
                    {
                        got += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }
    for r in ready {
        r.await.unwrap();
    }
    let t0 = Instant::now();
    let mut c = client::chat_client(pub_ch, Some(&pub_token));
    for i in 0..messages {
        c.send_message(proto::SendMessageRequest {
            room_id: room.id.clone(),
            client_message_id: format!("f{i}"),
            text: "fan-out message".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    for s in subs {
        s.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = delivered.load(Ordering::Relaxed);
    println!(
        "fanout   subscribers={subscribers:<4} {messages} msgs -> {n} deliveries in {secs:.2} s = {:.0} deliveries/s",
        n as f64 / secs
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let b = start().await;
        let mut tokens = Vec::new();
        for i in 0..16 {
            tokens.push(user(&b, &format!("sender{i}")).await);
        }
        let room = client::rooms_client(tokens[0].0.clone(), Some(&tokens[0].1))
            .create_room(proto::CreateRoomRequest {
                name: "durable".into(),
                topic: String::new(),
                visibility: proto::Visibility::Public as i32,
                read_only: false,
            })
            .await
            .unwrap()
            .into_inner();
        for (ch, token) in &tokens[1..] {
            client::rooms_client(ch.clone(), Some(token))
                .join_room(proto::JoinRoomRequest { room_id: room.id.clone() })
                .await
                .unwrap();
        }
        let secs = if quick { 1.0 } else { 5.0 };
        for senders in [1, 16, 256] {
            durable(&b, &room.id, &tokens, senders, secs).await;
        }
        fanout(&b, if quick { 20 } else { 200 }, if quick { 100 } else { 1000 }).await;
        b.running.shutdown();
    });
}
