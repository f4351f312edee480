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
    /// What the subscribers received (`undelivered`: `sent * subscribers - delivered`).
    #[serde(flatten)]
    pub deliveries: Deliveries,
    /// Server CPU time during publishing and drain, s.
    pub server_cpu_secs: Option<f64>,
    /// Server CPU per delivery, µs.
    pub server_us_per_delivery: Option<f64>,
    /// Server RSS at the end, MiB.
    pub server_rss_mib: Option<f64>,
    /// The load generator's own CPU time, s.
    pub bench_cpu_secs: Option<f64>,
    /// Why the run stopped before it was done (Ctrl-C, the server went away): the figures
    /// are what was measured until then.
    pub stopped_early: Option<String>,
}

/// What subscribers received, in the figures `fanout` and `rooms` share.
#[derive(Debug, Serialize)]
pub struct Deliveries {
    /// Messages received, all subscribers.
    pub delivered: u64,
    /// Deliveries owed by the acked messages minus `delivered`, after the drain.
    pub undelivered: u64,
    /// Deliveries per second over the sending time plus the time the drain took.
    pub deliveries_per_sec: f64,
    /// Seqs a subscriber never saw (a gap: never expected; any is a bug).
    pub gaps: u64,
    /// Seqs a subscriber saw twice (never expected).
    pub repeats: u64,
    /// Streams that ended early.
    pub stream_errors: u64,
    /// The first stream error, or why the drain ended with deliveries owed.
    pub first_error: Option<String>,
    /// End-to-end latency, ms.
    pub p50_ms: f64,
    /// End-to-end latency, ms.
    pub p99_ms: f64,
    /// End-to-end latency, ms.
    pub p999_ms: f64,
    /// End-to-end latency, ms.
    pub max_ms: f64,
    /// Times a server follower fell behind its room's ring and caught up from the store
    /// during the run (a server this run started; lag, never loss).
    pub server_catch_ups: Option<u64>,
    /// Streams the server ended because their client did not read (they would resume).
    pub server_slow_consumer_disconnects: Option<u64>,
}

/// The server's lag counters at one moment, to report their change over a run.
pub(super) struct Lag {
    catch_ups: Option<u64>,
    slow: Option<u64>,
}

impl Lag {
    /// Reads them from a server this run started.
    pub(super) async fn read(server: &super::Server) -> Lag {
        Lag {
            catch_ups: server.counter("edgechat_catch_ups_total").await,
            slow: server.counter("edgechat_slow_consumer_disconnects_total").await,
        }
    }
}

impl Deliveries {
    /// The table's lines for these figures.
    pub fn lines(&self) -> String {
        format!(
            "delivered           {} ({:.0} deliveries/s), {} undelivered after the drain\n\
             gaps / repeats      {} / {}\n\
             lag                 {} catch-ups from the store, {} slow-consumer disconnects\n\
             stream errors       {}{}\n\
             latency p50/p99/p999 {:.1} / {:.1} / {:.1} ms (max {:.1} ms)\n",
            self.delivered,
            self.deliveries_per_sec,
            self.undelivered,
            self.gaps,
            self.repeats,
            self.server_catch_ups.map_or("n/a".into(), |n| n.to_string()),
            self.server_slow_consumer_disconnects.map_or("n/a".into(), |n| n.to_string()),
            self.stream_errors,
            self.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
        )
    }
}

/// One subscriber's running figures (updated in place, so a subscriber still behind at the
/// end of the drain is counted too).
pub(super) struct Seen {
    latency_us: Histogram<u64>,
    delivered: u64,
    /// The rooms this subscriber follows (index into the run's room list) and the last seq
    /// it saw in each.
    rooms: Vec<(usize, u64)>,
    gaps: u64,
    repeats: u64,
    error: Option<String>,
}

impl Seen {
    /// A subscriber following `rooms`, each as of the `Subscribed` answer's `last_seq`.
    pub(super) fn new(rooms: Vec<(usize, u64)>) -> Arc<Mutex<Seen>> {
        Arc::new(Mutex::new(Seen {
            latency_us: new_histogram(),
            delivered: 0,
            rooms,
            gaps: 0,
            repeats: 0,
            error: None,
        }))
    }

    /// Whether it has seen every room's `done` seq (`u64::MAX` until publishing ends).
    fn done(&self, done: &[AtomicU64]) -> bool {
        self.rooms.iter().all(|&(i, last)| last >= done[i].load(Ordering::Relaxed))
    }
}

/// Latencies from 1 µs to 10 minutes, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// Every subscriber's figures added up.
pub(super) struct Totals {
    latency_us: Histogram<u64>,
    delivered: u64,
    gaps: u64,
    repeats: u64,
    stream_errors: u64,
    first_error: Option<String>,
}

impl Totals {
    pub(super) fn of(seen: &[Arc<Mutex<Seen>>]) -> Totals {
        let mut t = Totals {
            latency_us: new_histogram(),
            delivered: 0,
            gaps: 0,
            repeats: 0,
            stream_errors: 0,
            first_error: None,
        };
        for s in seen {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            t.latency_us.add(&s.latency_us).expect("same bounds");
            t.delivered += s.delivered;
            t.gaps += s.gaps;
            t.repeats += s.repeats;
            if let Some(e) = &s.error {
                t.stream_errors += 1;
                t.first_error.get_or_insert_with(|| e.clone());
            }
        }
        t
    }

    /// The report's figures: `owed` deliveries were due over `secs`; `drained` says whether
    /// every subscriber caught up before the drain ended (if not, and no stream failed and
    /// the run was not stopped, that is the error reported); the server's lag counters
    /// before and after.
    pub(super) fn deliveries(
        &self,
        owed: u64,
        secs: f64,
        drained: bool,
        (before, after): (Lag, Lag),
    ) -> Deliveries {
        let ms = |us: u64| us as f64 / 1e3;
        let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
        let mut first_error = self.first_error.clone();
        if !drained && first_error.is_none() && super::stop().reason().is_none() {
            first_error = Some("not all subscribers caught up before the drain ended".into());
        }
        Deliveries {
            delivered: self.delivered,
            undelivered: owed.saturating_sub(self.delivered),
            deliveries_per_sec: self.delivered as f64 / secs,
            gaps: self.gaps,
            repeats: self.repeats,
            stream_errors: self.stream_errors,
            first_error,
            p50_ms: ms(self.latency_us.value_at_quantile(0.5)),
            p99_ms: ms(self.latency_us.value_at_quantile(0.99)),
            p999_ms: ms(self.latency_us.value_at_quantile(0.999)),
            max_ms: ms(self.latency_us.max()),
            server_catch_ups: delta(before.catch_ups, after.catch_ups),
            server_slow_consumer_disconnects: delta(before.slow, after.slow),
        }
    }
}

/// Runs the scenario.
pub async fn run(args: &FanoutArgs) -> Result<FanoutReport, BenchError> {
    if !(args.secs > 0.0 && args.drain_secs >= 0.0) {
        return Err(BenchError::Params(
            "--secs must be positive and --drain-secs not negative".into(),
        ));
    }
    let conns = args.subscribers + args.publishers + 16;
    super::ensure_descriptors(u64::from(conns) + 64)?;
    let conns = conns.to_string();
    let settings = [("EDGECHAT_LIMITS_MAX_CONNECTIONS_PER_IP", conns.as_str())];
    let server = Server::start(&args.target, &settings)?;
    let pid = server.pid;
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let users = args.subscribers + args.publishers;
    super::progress(&format!(
        "setting up: {users} users, one room, {} subscriptions",
        args.subscribers
    ));
    let accounts = super::register_many(&server, &format!("f{run_id}u"), users, 16).await?;
    let (publishers, subscribers) = accounts.split_at(args.publishers as usize);
    let room = super::room_for_all(&accounts, &format!("fanout-{run_id}")).await?;
    let base = Instant::now();
    // Subscribe everyone (live only) and wait for every Subscribed before publishing.
    let done_seq = Arc::new([AtomicU64::new(u64::MAX)]);
    let index = Arc::new(std::collections::HashMap::from([(room.clone(), 0)]));
    let mut seen = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    for (ch, token) in subscribers {
        let subs = [(room.clone(), None)];
        let (tx, mut stream, subscribed) = super::subscribe_on(ch, token, &subs).await?;
        let s = Seen::new(vec![(0, subscribed[0].last_seq)]);
        seen.push(s.clone());
        let (done_seq, index) = (done_seq.clone(), index.clone());
        readers.spawn(async move {
            let _keep_open = tx;
            read_events(&mut stream, &s, &index, base, &done_seq[..]).await
        });
    }

    super::progress(&format!("running: {} msg/s for {} s", args.rate, args.secs));
    let lag0 = Lag::read(&server).await;
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
            let stop = super::stop();
            while Instant::now() < until {
                let Some(_) = stop.or_stopped(tick.tick()).await else { break };
                let Some(Ok(slot)) = stop.or_stopped(slots.clone().acquire_owned()).await else {
                    break;
                };
                let mut chat = client::chat_client(ch.clone(), Some(&token));
                let text = stamped(base.elapsed(), p, n, bytes);
                let req = proto::SendMessageRequest {
                    room_id: room.clone(),
                    client_message_id: format!("{p}-{n}"),
                    text,
                    ..Default::default()
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
    done_seq[0].store(max_seq.load(Ordering::Relaxed), Ordering::Relaxed);
    let drained = drain(&seen, &done_seq[..], args.drain_secs).await;
    readers.abort_all();
    let total_secs = started.elapsed().as_secs_f64();
    let (cpu1, own1) = (pid.and_then(|p| super::cpu_time(Some(p))), super::cpu_time(None));

    let sent = sent.load(Ordering::Relaxed);
    let lag = (lag0, Lag::read(&server).await);
    let deliveries =
        Totals::of(&seen).deliveries(sent * u64::from(args.subscribers), total_secs, drained, lag);
    let delivered = deliveries.delivered;
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
        deliveries,
        server_cpu_secs: cpu,
        server_us_per_delivery: cpu.filter(|_| delivered > 0).map(|c| c * 1e6 / delivered as f64),
        server_rss_mib: pid.and_then(rss).map(|(now, _)| mib(now)),
        bench_cpu_secs: match (own0, own1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        },
        stopped_early: super::stop().reason(),
    })
}

/// Waits up to `secs` (or until the run is stopped) for every subscriber to have seen every
/// room's `done` seq; whether they all did.
pub(super) async fn drain(seen: &[Arc<Mutex<Seen>>], done: &[AtomicU64], secs: f64) -> bool {
    let all_done = || seen.iter().all(|s| s.lock().unwrap_or_else(|e| e.into_inner()).done(done));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let stop = super::stop();
    while !all_done() {
        if Instant::now() >= until || stop.is_stopped() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Reads one subscriber's stream until it has seen every room's `done` seq (set once
/// publishing ends), or the stream ends; `index` maps a room id to its place in the run's
/// room list.
pub(super) async fn read_events(
    stream: &mut tonic::Streaming<proto::ServerFrame>,
    seen: &Mutex<Seen>,
    index: &std::collections::HashMap<String, usize>,
    base: Instant,
    done: &[AtomicU64],
) {
    loop {
        // No timer per message (the load generator shares the cores with the server): a
        // reader that is done while no more messages come is ended by [`drain`].
        let frame = match stream.message().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).error = Some("stream ended".into());
                return;
            }
            Err(status) => {
                seen.lock().unwrap_or_else(|e| e.into_inner()).error = Some(status.to_string());
                return;
            }
        };
        let Some(server_frame::Kind::Event(ev)) = frame.kind else { continue };
        let now = base.elapsed();
        let Some(&room) = index.get(&ev.room_id) else { continue };
        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = s.rooms.iter().position(|&(i, _)| i == room) else { continue };
        let last = s.rooms[at].1;
        if ev.seq <= last {
            s.repeats += 1;
            continue;
        }
        s.gaps += ev.seq - last - 1;
        s.rooms[at].1 = ev.seq;
        if let Some(Kind::Message(m)) = &ev.kind
            && let Some(sent_us) = stamp_of(&m.text)
        {
            let us = (now.as_micros() as u64).saturating_sub(sent_us).max(1);
            let _ = s.latency_us.record(us);
            s.delivered += 1;
        }
        if s.done(done) {
            return;
        }
    }
}

/// A message text of `bytes` bytes that starts with its send time (µs since the run began).
pub(super) fn stamped(at: Duration, publisher: usize, n: u64, bytes: usize) -> String {
    let mut t = format!("t{} p{publisher} n{n} ", at.as_micros());
    while t.len() < bytes {
        t.push(char::from(b'a' + (t.len() % 26) as u8));
    }
    t.truncate(bytes.max(t.find(' ').unwrap_or(0)));
    t
}

/// The send time a [`stamped`] text carries.
pub(super) fn stamp_of(text: &str) -> Option<u64> {
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
             {}\
             server CPU          {} ({} per delivery)\n\
             server RSS          {}\n\
             bench CPU           {}\n{}",
            self.subscribers,
            self.publishers,
            self.rate,
            self.bytes,
            self.transport,
            self.sent,
            self.secs,
            self.sent_per_sec,
            self.send_errors,
            self.deliveries.lines(),
            opt(self.server_cpu_secs, "s"),
            opt(self.server_us_per_delivery, "µs"),
            opt(self.server_rss_mib, "MiB"),
            opt(self.bench_cpu_secs, "s"),
            super::stopped_line(&self.stopped_early),
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
