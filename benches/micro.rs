//! Micro-benchmarks of the hot paths, each on its own, with Criterion (warm-up, many samples,
//! outliers reported): what a request or a delivery costs before sockets and TLS add theirs.
//! docs/PERFORMANCE.md has the figures and what they mean for the end-to-end scenarios.
//!
//! Run: `cargo bench --bench micro` (one group: `cargo bench --bench micro -- store_append`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgechat::auth::{accounts::Accounts, keys, token};
use edgechat::chat::hub::{Hub, RoomFeed};
use edgechat::config::RawConfig;
use edgechat::proto::{self, room_event, server_frame};
use edgechat::rooms::permissions::{self, Action, Actor, GlobalRole, RoomFacts, RoomRole};
use edgechat::store::{self, Store, events};
use prost::Message as _;

const NOW_MS: i64 = 1_796_000_000_000;

/// A message event as the writer commits it: 128 bytes of text, ids like the server's.
fn message_event(room: &str, seq: u64) -> proto::RoomEvent {
    proto::RoomEvent {
        room_id: room.into(),
        seq,
        at_ms: NOW_MS,
        actor_id: "u01JDKZ3XQ8Y6M1V2W3T4R5S6P".into(),
        kind: Some(room_event::Kind::Message(proto::Message {
            room_id: room.into(),
            seq,
            sender_id: "u01JDKZ3XQ8Y6M1V2W3T4R5S6P".into(),
            text: "x".repeat(128),
            sent_at_ms: NOW_MS,
            client_message_id: format!("cmid-{seq}"),
            mention_user_ids: Vec::new(),
            ..Default::default()
        })),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Token verification: the Ed25519 check and claim parsing every RPC would pay, and the
/// cached path the server takes for a token it has seen (cache hit, expiry check, the user's
/// record read from a snapshot to check it is enabled at the token's version).
fn tokens(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut raw =
        RawConfig { data_dir: dir.path().to_string_lossy().into_owned(), ..RawConfig::default() };
    raw.auth.hash_workers = 1;
    let config = raw.validate().unwrap();
    let key_dir = dir.path().join("keys");
    std::fs::create_dir_all(&key_dir).unwrap();
    keys::generate_key(&key_dir, NOW_MS).unwrap();
    let keyring = keys::Keyring::load(&key_dir).unwrap();
    let (iss, aud) = (config.auth.issuer.clone(), config.auth.audience.clone());
    let claims = token::access_claims(&iss, &aud, "u1", "member", 0, NOW_MS, 900);
    let jwt = token::issue(&keyring, &claims);
    c.bench_function("token_verify/uncached", |b| {
        b.iter(|| token::verify(&keyring, &iss, &aud, black_box(&jwt), NOW_MS).unwrap())
    });

    let rt = runtime();
    let store = Store::open(&dir.path().join("db.redb"), 16 << 20).unwrap();
    let writer = store.start_writer(Box::new(|_| {}));
    let accounts =
        Accounts::new(config.auth.clone(), keyring, store, edgechat::change::Exec::local(writer));
    let now = edgechat::clock::now_ms();
    let issued = rt.block_on(accounts.register("bench", "bench password", "", "", now)).unwrap();
    let jwt = issued.access_token;
    accounts.authenticate(&jwt, now).unwrap();
    c.bench_function("token_verify/cached_with_user_check", |b| {
        b.iter(|| accounts.authenticate(black_box(&jwt), now).unwrap())
    });
}

/// The permission decision every room request makes (a pure function).
fn permission(c: &mut Criterion) {
    let actor =
        Actor { global: GlobalRole::Member, standing: permissions::Standing::In(RoomRole::Member) };
    let room = RoomFacts { visibility: permissions::Visibility::Public, read_only: false };
    c.bench_function("permission_check/post", |b| {
        b.iter(|| permissions::may(black_box(actor), black_box(Action::Post), black_box(room)))
    });
}

/// Encoding one event as the `ServerFrame` a subscriber receives (what fan-out pays per
/// delivery today), and decoding it back (what a client pays).
fn encode(c: &mut Criterion) {
    let frame = proto::ServerFrame {
        kind: Some(server_frame::Kind::Event(message_event("r01JDKZ3XQ8Y6M1V2W3T4R5S6Q", 42))),
    };
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| b.iter(|| black_box(&frame).encode_to_vec()));
    let bytes = frame.encode_to_vec();
    g.bench_function("decode", |b| {
        b.iter(|| proto::ServerFrame::decode(black_box(bytes.as_slice())).unwrap())
    });
    g.bench_function("clone", |b| b.iter(|| black_box(&frame).clone()));
    g.finish();
}

/// Appending N message events to a room in one write transaction (one durable commit), as the
/// writer does for a batch of N sends; per event.
fn store_append(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.redb"), 64 << 20).unwrap();
    let writer = store.start_writer(Box::new(|_| {}));
    let mut g = c.benchmark_group("store_append");
    g.sample_size(20);
    for n in [1u64, 16, 256] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("batch_{n}"), |b| {
            b.iter(|| {
                rt.block_on(writer.write(move |ctx| {
                    for _ in 0..n {
                        let mut ev = message_event("room-a", 0);
                        events::append(ctx, &mut ev)?;
                    }
                    Ok(Ok::<(), store::StoreError>(()))
                }))
                .unwrap()
            })
        });
    }
    g.finish();
}

/// Chat-like text for the indexed appends: 11 words (the corpus's mean) drawn from 5,000
/// made-up ones, skewed toward the first (x^3), different for every `n`.
fn chat_text(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..11)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 10_000) as f64 / 10_000.0;
            format!("w{}", (u * u * u * 5_000.0) as u64)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The same appends with the search index written in the same transaction, as a send does
/// (`search::words` of the text, then `store::search::add`): what the index costs a send.
fn store_append_indexed(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.redb"), 64 << 20).unwrap();
    let writer = store.start_writer(Box::new(|_| {}));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut g = c.benchmark_group("store_append_indexed");
    g.sample_size(20);
    for n in [1u64, 16, 256] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("batch_{n}"), |b| {
            b.iter(|| {
                let next = next.clone();
                rt.block_on(writer.write(move |ctx| {
                    for _ in 0..n {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let mut ev = message_event("room-a", 0);
                        let text = chat_text(i);
                        if let Some(room_event::Kind::Message(m)) = &mut ev.kind {
                            m.text = text.clone();
                        }
                        events::append(ctx, &mut ev)?;
                        store::search::add(ctx, "room-a", ev.seq, &edgechat::search::words(&text))?;
                    }
                    Ok(Ok::<(), store::StoreError>(()))
                }))
                .unwrap()
            })
        });
    }
    g.finish();
}

/// Reading a History page (the newest 50 events of a room of 100,000) from a snapshot.
fn history_page(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db.redb"), 64 << 20).unwrap();
    let writer = store.start_writer(Box::new(|_| {}));
    for _ in 0..100 {
        rt.block_on(writer.write(|ctx| {
            for _ in 0..1000 {
                events::append(ctx, &mut message_event("room-h", 0))?;
            }
            Ok(Ok::<(), store::StoreError>(()))
        }))
        .unwrap();
    }
    let mut g = c.benchmark_group("history_page");
    g.throughput(Throughput::Elements(50));
    g.bench_function("newest_50", |b| {
        b.iter(|| {
            let snap = store.read().unwrap();
            events::range(&snap, "room-h", 0, u64::MAX, 50, true).unwrap()
        })
    });
    g.bench_function("middle_50", |b| {
        b.iter(|| {
            let snap = store.read().unwrap();
            events::range(&snap, "room-h", 50_000, u64::MAX, 50, false).unwrap()
        })
    });
    g.finish();
}

/// Publishing one committed event to a room with 1,000 followers and every follower taking it
/// from the room's ring (what the writer thread and the followers pay per event, before any
/// encoding or socket).
fn hub_publish(c: &mut Criterion) {
    let hub = Hub::new();
    let mut followers: Vec<_> = (0..1000).map(|_| hub.subscribe_room("room-f")).collect();
    let committed =
        store::Committed { events: vec![message_event("room-f", 1)], ..Default::default() };
    let mut g = c.benchmark_group("hub_publish");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("to_1000_followers", |b| {
        b.iter_batched(
            || (),
            |()| {
                hub.publish(black_box(&committed));
                for rx in &mut followers {
                    match rx.try_recv() {
                        Ok(RoomFeed::Event(ev)) => {
                            black_box(Arc::clone(&ev));
                        }
                        other => panic!("follower got {other:?}"),
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(
    benches,
    tokens,
    permission,
    encode,
    store_append,
    store_append_indexed,
    history_page,
    hub_publish
);
criterion_main!(benches);
