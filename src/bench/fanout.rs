//! `edgechat bench fanout`: one room, N subscribers each on its own connection and `Connect`
//! stream, P publishers sending at R msg/s in all; deliveries per second, end-to-end latency
//! (send to receive, from a timestamp in the message text) in an HDR histogram, and every
//! subscriber's seqs checked for gaps and repeats. Subscribers that cannot keep up show as
//! latency and, after the drain, as undelivered counts, never silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{BenchError, Server, Target, mib, rss};
use crate::client;
use crate::proto::{self, room_event::Kind, server_frame};

/// `bench fanout` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers, each its own user, connection and Connect stream.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub subscribers: u32,
    /// Publishers, each its own user and connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub publishers: u32,
    /// Messages per second, all publishers together.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// How long to publish.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// After publishing, how long subscribers may take to receive the rest.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub bytes: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    /// Always `fanout`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Subscribers.
    pub subscribers: u32,
    /// Publishers.
    pub publishers: u32,
    /// Target rate, msg/s.
    pub rate: u32,
    /// Text bytes per message.
    pub bytes: u32,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// Messages acknowledged.
    pub sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Publishing time, s.
    pub secs: f64,
    /// Acknowledged messages per second.
    pub sent_per_sec: f64,
    /// Messages received, all subscribers.
    pub delivered: u64,
    /// `sent * subscribers - delivered` after the drain.
    pub undelivered: u64,
    /// Deliveries per second over the publishing time plus the time the drain took.
    pub deliveries_per_sec: f64,
    /// Seqs a subscriber never saw (a gap: never expected; any is a bug).
    pub gaps: u64,
    /// Seqs a subscriber saw twice (never expected).
    pub repeats: u64,
    /// Streams that ended early, with the first reason.
    pub stream_errors: u64,
    /// The first stream error, if any.
    pub first_error: Option<String>,
    /// End-to-end latency, ms.
    pub p50_ms: f64,
    /// End-to-end latency, ms.
    pub p99_ms: f64,
    /// End-to-end latency, ms.
    pub p999_ms: f64,
    /// End-to-end latency, ms.
    pub max_ms: f64,
    /// Server CPU time during publishing and drain, s.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU per delivery, µs.
    pub server_us_per_delivery: Option<f64>,
    /// Server RSS at the end, MiB.
    pub server_rss_mib: Option<f64>,
    /// The load generator's own CPU time, s.
    pub bench_cpu_secs: Option<f64>,
}

/// One subscriber's running figures (updated in place, so a subscriber still behind at the
/// end of the drain is counted too).
struct Seen {
    latency_us: Histogram<u64>,
    delivered: u64,
    last_seq: u64,
    gaps: u64,
    repeats: u64,
    error: Option<String>,
}

/// Runs the scenario.
pub async fn run(args: &FanoutArgs) -> Result<FanoutReport, BenchError> {
    if !(args.secs > 0.0 && args.drain_secs >= 0.0) {
        return Err(BenchError::Params(
            "--secs must be positive and --drain-secs not negative".into(),
        ));
    }
    let conns = args.subscribers + args.publishers + 16;
    super::ensure_descriptors(u64::from(conns) * 2 + 64)?;
    let conns = conns.to_string();
    let settings = [
        ("EDGECHAT_LIMITS_SEND_RATE_PER_SEC", "1000000000"),
        ("EDGECHAT_LIMITS_SEND_BURST", "100000"),
        ("EDGECHAT_LIMITS_ACTION_RATE_PER_SEC", "1000000"),
        ("EDGECHAT_LIMITS_ACTION_BURST", "100000"),
        ("EDGECHAT_LIMITS_MAX_CONNECTIONS_PER_IP", conns.as_str()),
    ];
    let server = Server::start(&args.target, &settings)?;
    let pid = server.pid;
    let err = |e: &dyn std::fmt::Display| BenchError::Server(e.to_string());
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let users = args.subscribers + args.publishers;
    let accounts = super::register_many(&server, &format!("f{run_id}u"), users, 16).await?;
    let (publishers, subscribers) = accounts.split_at(args.publishers as usize);
    let room = super::room_for_all(&accounts, &format!("fanout-{run_id}")).await?;
    let base = Instant::now();
    // Subscribe everyone (live only) and wait for every Subscribed before publishing.
    let done_seq = Arc::new(AtomicU64::new(u64::MAX));
    let mut seen = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    for (ch, token) in subscribers {
        let s = Arc::new(Mutex::new(Seen {
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"),
            delivered: 0,
            last_seq: 0,
            gaps: 0,
            repeats: 0,
            error: None,
        }));
        seen.push(s.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut stream = client::chat_client(ch.clone(), Some(token))
            .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|e| err(&e))?
            .into_inner();
        let subscribe = proto::ClientFrame {
            kind: Some(proto::client_frame::Kind::Subscribe(proto::Subscribe {
                room_id: room.clone(),
                after_seq: None,
            })),
        };
        tx.send(subscribe).await.map_err(|e| err(&e))?;
        loop {
            match stream.message().await {
                Ok(Some(proto::ServerFrame {
                    kind: Some(server_frame::Kind::Subscribed(sub)),
                })) => {
                    s.lock().unwrap_or_else(|e| e.into_inner()).last_seq = sub.last_seq;
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(BenchError::Server("a stream ended at subscribe".into())),
                Err(e) => return Err(err(&e)),
            }
        }
        let done_seq = done_seq.clone();
        readers.spawn(async move {
            let _keep_open = tx;
            read_events(&mut stream, &s, base, &done_seq).await
        });
    }

    let (cpu0, own0) = (pid.and_then(|p| super::cpu_time(Some(p))), super::cpu_time(None));
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let send_errors = Arc::new(AtomicU64::new(0));
    let max_seq = Arc::new(AtomicU64::new(0));
    let mut pubs = tokio::task::JoinSet::new();
    let period = Duration::from_secs_f64(f64::from(args.publishers) / f64::from(args.rate));
    let until = started + Duration::from_secs_f64(args.secs);
    for (p, (ch, token)) in publishers.iter().enumerate() {
        let (ch, token, room) = (ch.clone(), token.clone(), room.clone());
        let (sent, send_errors, max_seq) = (sent.clone(), send_errors.clone(), max_seq.clone());
        let bytes = args.bytes as usize;
        pubs.spawn(async move {
            // Open loop: a send goes out every period whether or not earlier ones were acked
            // (at most 256 in flight per publisher; beyond, the publisher falls behind).
            let slots = Arc::new(tokio::sync::Semaphore::new(256));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            let mut n = 0u64;
            while Instant::now() < until {
                tick.tick().await;
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let mut chat = client::chat_client(ch.clone(), Some(&token));
                let text = stamped(base.elapsed(), p, n, bytes);
                let req = proto::SendMessageRequest {
                    room_id: room.clone(),
                    client_message_id: format!("{p}-{n}"),
                    text,
                };
                let (sent, send_errors, max_seq) =
                    (sent.clone(), send_errors.clone(), max_seq.clone());
                inflight.spawn(async move {
                    let _slot = slot;
                    match chat.send_message(req).await {
                        Ok(m) => {
                            sent.fetch_add(1, Ordering::Relaxed);
                            max_seq.fetch_max(m.into_inner().seq, Ordering::Relaxed);
                        }
                        Err(_) => {
                            send_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                n += 1;
            }
            while inflight.join_next().await.is_some() {}
        });
    }
    while pubs.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    // Everything acked is committed; subscribers are done once they reach the last seq.
    done_seq.store(max_seq.load(Ordering::Relaxed), Ordering::Relaxed);
    let drained = tokio::time::timeout(Duration::from_secs_f64(args.drain_secs), async {
        while readers.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    readers.abort_all();
    let total_secs = started.elapsed().as_secs_f64();
    let (cpu1, own1) = (pid.and_then(|p| super::cpu_time(Some(p))), super::cpu_time(None));

    let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let (mut delivered, mut gaps, mut repeats, mut stream_errors) = (0, 0, 0, 0);
    let mut first_error = None;
    for s in &seen {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        all.add(&s.latency_us).expect("same bounds");
        delivered += s.delivered;
        gaps += s.gaps;
        repeats += s.repeats;
        if let Some(e) = &s.error {
            stream_errors += 1;
            first_error.get_or_insert_with(|| e.clone());
        }
    }
    if !drained && first_error.is_none() {
        first_error = Some(format!("not all subscribers caught up within {} s", args.drain_secs));
    }
    let sent = sent.load(Ordering::Relaxed);
    let expected = sent * u64::from(args.subscribers);
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1e3;
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    Ok(FanoutReport {
        scenario: "fanout",
        transport: args.target.transport,
        subscribers: args.subscribers,
        publishers: args.publishers,
        rate: args.rate,
        bytes: args.bytes,
        server_settings: server.settings.clone(),
        sent,
        send_errors: send_errors.load(Ordering::Relaxed),
        secs,
        sent_per_sec: sent as f64 / secs,
        delivered,
        undelivered: expected.saturating_sub(delivered),
        deliveries_per_sec: delivered as f64 / total_secs,
        gaps,
        repeats,
        stream_errors,
        first_error,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: all.max() as f64 / 1e3,
        server_cpu_secs: cpu,
        server_us_per_delivery: cpu.filter(|_| delivered > 0).map(|c| c * 1e6 / delivered as f64),
        server_rss_mib: pid.and_then(rss).map(|(now, _)| mib(now)),
        bench_cpu_secs: match (own0, own1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        },
    })
}

/// Reads one subscriber's stream until it has seen `done_seq` (set once publishing ends).
async fn read_events(
    stream: &mut tonic::Streaming<proto::ServerFrame>,
    seen: &Mutex<Seen>,
    base: Instant,
    done_seq: &AtomicU64,
) {
    loop {
        let frame = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
            Err(_) => {
                let s = seen.lock().unwrap_or_else(|e| e.into_inner());
                if s.last_seq >= done_seq.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).error = Some("stream ended".into());
                return;
            }
            Ok(Err(status)) => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).error = Some(status.to_string());
                return;
            }
        };
        let Some(server_frame::Kind::Event(ev)) = frame.kind else { continue };
        let now = base.elapsed();
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        if ev.seq <= s.last_seq {
            s.repeats += 1;
            continue;
        }
        s.gaps += ev.seq - s.last_seq - 1;
        s.last_seq = ev.seq;
        if let Some(Kind::Message(m)) = &ev.kind
            && let Some(sent_us) = stamp_of(&m.text)
        {
            let us = (now.as_micros() as u64).saturating_sub(sent_us).max(1);
            let _ = s.latency_us.record(us);
            s.delivered += 1;
        }
        if s.last_seq >= done_seq.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// A message text of `bytes` bytes that starts with its send time (µs since the run began).
fn stamped(at: Duration, publisher: usize, n: u64, bytes: usize) -> String {
    let mut t = format!("t{} p{publisher} n{n} ", at.as_micros());
    while t.len() < bytes {
        t.push(char::from(b'a' + (t.len() % 26) as u8));
    }
    t.truncate(bytes.max(t.find(' ').unwrap_or(0)));
    t
}

/// The send time a [`stamped`] text carries.
fn stamp_of(text: &str) -> Option<u64> {
    text.strip_prefix('t')?.split(' ').next()?.parse().ok()
}

impl FanoutReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.2} {unit}"),
            None => "n/a (no --server-pid)".into(),
        };
        format!(
            "fanout: {} subscribers, {} publishers at {} msg/s, {}-byte messages, {:?}\n\
             sent                {} in {:.1} s ({:.0} msg/s), {} send errors\n\
             delivered           {} ({:.0} deliveries/s), {} undelivered after the drain\n\
             gaps / repeats      {} / {}\n\
             stream errors       {}{}\n\
             latency p50/p99/p999 {:.1} / {:.1} / {:.1} ms (max {:.1} ms)\n\
             server CPU          {} ({} per delivery)\n\
             server RSS          {}\n\
             bench CPU           {}\n",
            self.subscribers,
            self.publishers,
            self.rate,
            self.bytes,
            self.transport,
            self.sent,
            self.secs,
            self.sent_per_sec,
            self.send_errors,
            self.delivered,
            self.deliveries_per_sec,
            self.undelivered,
            self.gaps,
            self.repeats,
            self.stream_errors,
            self.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            opt(self.server_cpu_secs, "s"),
            opt(self.server_us_per_delivery, "µs"),
            opt(self.server_rss_mib, "MiB"),
            opt(self.bench_cpu_secs, "s"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_at_every_size() {
        for bytes in [32, 128, 4096] {
            let t = stamped(Duration::from_micros(123_456_789), 3, 42, bytes);
            assert_eq!(t.len(), bytes);
            assert_eq!(stamp_of(&t), Some(123_456_789));
        }
        assert_eq!(stamp_of("hello"), None);
        assert_eq!(stamp_of("t12x rest"), None);
    }
}
