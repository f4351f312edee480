//! `edgechat bench rooms`: a realistic team server. M rooms of K members drawn from U users;
//! every user has one connection and one `Connect` stream subscribed to all its rooms, and
//! messages go out at a low total rate, each from a random member to one of its rooms. The
//! figures are fan-out's (end-to-end latency, gaps, repeats, undelivered after a drain) plus
//! the share of a core the server used.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::fanout::{Deliveries, Lag, Seen, Totals, drain, read_events, stamped};
use super::{BenchError, Server, Target, mib, rss};
use crate::client;
use crate::proto;

/// `bench rooms` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct RoomsArgs {
    /// Rooms.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rooms: u32,
    /// Members per room (drawn at random from --users, distinct within a room).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub members: u32,
    /// Users, each its own connection and Connect stream.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: u32,
    /// Messages per second, all users together.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: u32,
    /// How long to chat.
    #[arg(long, default_value_t = 20.0)]
    pub secs: f64,
    /// After chatting, how long members may take to receive the rest.
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
pub struct RoomsReport {
    /// Always `rooms`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Rooms.
    pub rooms: u32,
    /// Members per room.
    pub members: u32,
    /// Users.
    pub users: u32,
    /// Users in at least one room (the others only hold a connection).
    pub users_in_rooms: u32,
    /// Target rate, msg/s.
    pub rate: u32,
    /// Text bytes per message.
    pub bytes: u32,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// Seconds the setup (registering, joining, subscribing) took.
    pub setup_secs: f64,
    /// Messages acknowledged.
    pub sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Chatting time, s.
    pub secs: f64,
    /// What the members received (a sender receives its own message too; `undelivered`:
    /// each acked message times its room's members, minus `delivered`).
    #[serde(flatten)]
    pub deliveries: Deliveries,
    /// Server CPU time while chatting and draining, s.
    pub server_cpu_secs: Option<f64>,
    /// That CPU time as a share of one core, %.
    pub server_core_percent: Option<f64>,
    /// Server RSS at the end, MiB.
    pub server_rss_mib: Option<f64>,
    /// The load generator's own CPU time, s.
    pub bench_cpu_secs: Option<f64>,
    /// Why the run stopped before it was done; the figures are what was measured until then.
    pub stopped_early: Option<String>,
}

/// Runs the scenario.
pub async fn run(args: &RoomsArgs) -> Result<RoomsReport, BenchError> {
    if !(args.secs > 0.0 && args.drain_secs >= 0.0) {
        return Err(BenchError::Params(
            "--secs must be positive and --drain-secs not negative".into(),
        ));
    }
    if args.members > args.users {
        return Err(BenchError::Params("--members must not exceed --users".into()));
    }
    // Who is in which room: a fixed seed, so runs with the same parameters are comparable.
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let members: Vec<Vec<usize>> = (0..args.rooms)
        .map(|_| {
            rand::seq::index::sample(&mut rng, args.users as usize, args.members as usize)
                .into_vec()
        })
        .collect();
    let mut rooms_of: Vec<Vec<usize>> = vec![Vec::new(); args.users as usize];
    for (r, m) in members.iter().enumerate() {
        for &u in m {
            rooms_of[u].push(r);
        }
    }
    let most = rooms_of.iter().map(Vec::len).max().unwrap_or(0).max(500);
    super::ensure_descriptors(u64::from(args.users) + 64)?;
    let (conns, subs) = ((args.users + 16).to_string(), most.to_string());
    let settings = [
        ("EDGECHAT_LIMITS_MAX_CONNECTIONS", conns.as_str()),
        ("EDGECHAT_LIMITS_MAX_CONNECTIONS_PER_IP", conns.as_str()),
        ("EDGECHAT_LIMITS_MAX_SUBSCRIPTIONS_PER_STREAM", subs.as_str()),
    ];
    let server = Server::start(&args.target, &settings)?;
    let pid = server.pid;
    let setup = Instant::now();
    super::progress(&format!(
        "setting up: {} users, {} rooms of {} members",
        args.users, args.rooms, args.members
    ));
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let users = super::register_many(&server, &format!("r{run_id}u"), args.users, 16).await?;
    // The first member of each room creates it; the others join, 16 joins at a time.
    let mut room_ids = Vec::new();
    for (r, m) in members.iter().enumerate() {
        room_ids.push(super::create_room(&users[m[0]], &format!("team-{run_id}-{r}")).await?);
    }
    let joins = members.iter().enumerate().flat_map(|(r, m)| m[1..].iter().map(move |&u| (r, u)));
    let joins = futures_util::stream::iter(joins)
        .map(|(r, u)| super::join_room(&users[u], &room_ids[r]))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    joins.into_iter().collect::<Result<Vec<()>, _>>()?;

    let index: Arc<HashMap<String, usize>> =
        Arc::new(room_ids.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect());
    let done: Arc<Vec<AtomicU64>> =
        Arc::new(room_ids.iter().map(|_| AtomicU64::new(u64::MAX)).collect());
    let base = Instant::now();
    let mut seen = Vec::new();
    let mut readers = tokio::task::JoinSet::new();
    let subscribing =
        futures_util::stream::iter(users.iter().zip(&rooms_of).filter(|(_, r)| !r.is_empty()))
            .map(|((ch, token), rooms)| {
                let subs: Vec<(String, Option<u64>)> =
                    rooms.iter().map(|&r| (room_ids[r].clone(), None)).collect();
                async move {
                    let (tx, stream, subscribed) = super::subscribe_on(ch, token, &subs).await?;
                    let last = rooms.iter().zip(&subscribed).map(|(&r, s)| (r, s.last_seq));
                    Ok::<_, BenchError>((tx, stream, last.collect::<Vec<_>>()))
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    for s in subscribing {
        let (tx, mut stream, last) = s?;
        let s = Seen::new(last);
        seen.push(s.clone());
        let (index, done) = (index.clone(), done.clone());
        readers.spawn(async move {
            let _keep_open = tx;
            read_events(&mut stream, &s, &index, base, &done).await
        });
    }
    let users_in_rooms = seen.len() as u32;
    let setup_secs = setup.elapsed().as_secs_f64();

    super::progress(&format!("running: {} msg/s for {} s", args.rate, args.secs));
    let lag0 = Lag::read(&server).await;
    let (cpu0, own0) = (pid.and_then(|p| super::cpu_time(Some(p))), super::cpu_time(None));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.secs);
    let sent: Arc<Vec<AtomicU64>> = Arc::new(room_ids.iter().map(|_| AtomicU64::new(0)).collect());
    let max_seq: Arc<Vec<AtomicU64>> =
        Arc::new(room_ids.iter().map(|_| AtomicU64::new(0)).collect());
    let send_errors = Arc::new(AtomicU64::new(0));
    // Open loop at the total rate; at most 1,024 sends in flight (beyond, the run falls behind
    // its rate rather than queueing without bound).
    let slots = Arc::new(tokio::sync::Semaphore::new(1024));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    let stop = super::stop();
    let mut n = 0u64;
    while Instant::now() < until {
        let Some(_) = stop.or_stopped(tick.tick()).await else { break };
        let Some(Ok(slot)) = stop.or_stopped(slots.clone().acquire_owned()).await else { break };
        let r = rng.random_range(0..room_ids.len());
        let u = members[r][rng.random_range(0..members[r].len())];
        let mut chat = client::chat_client(users[u].0.clone(), Some(&users[u].1));
        let req = proto::SendMessageRequest {
            room_id: room_ids[r].clone(),
            client_message_id: format!("{n}"),
            text: stamped(base.elapsed(), u, n, args.bytes as usize),
            ..Default::default()
        };
        let (sent, max_seq, send_errors) = (sent.clone(), max_seq.clone(), send_errors.clone());
        inflight.spawn(async move {
            let _slot = slot;
            match chat.send_message(req).await {
                Ok(m) => {
                    sent[r].fetch_add(1, Ordering::Relaxed);
                    max_seq[r].fetch_max(m.into_inner().seq, Ordering::Relaxed);
                }
                Err(_) => {
                    send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        n += 1;
    }
    while inflight.join_next().await.is_some() {}
    let secs = started.elapsed().as_secs_f64();
    for (d, m) in done.iter().zip(max_seq.iter()) {
        d.store(m.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    let drained = drain(&seen, &done, args.drain_secs).await;
    readers.abort_all();
    let total_secs = started.elapsed().as_secs_f64();
    let (cpu1, own1) = (pid.and_then(|p| super::cpu_time(Some(p))), super::cpu_time(None));

    let owed: u64 =
        sent.iter().zip(&members).map(|(s, m)| s.load(Ordering::Relaxed) * m.len() as u64).sum();
    let lag = (lag0, Lag::read(&server).await);
    let deliveries = Totals::of(&seen).deliveries(owed, total_secs, drained, lag);
    let secs_between = |a: Option<Duration>, b: Option<Duration>| Some((b? - a?).as_secs_f64());
    let cpu = secs_between(cpu0, cpu1);
    Ok(RoomsReport {
        scenario: "rooms",
        transport: args.target.transport,
        rooms: args.rooms,
        members: args.members,
        users: args.users,
        users_in_rooms,
        rate: args.rate,
        bytes: args.bytes,
        server_settings: server.settings.clone(),
        setup_secs,
        sent: sent.iter().map(|s| s.load(Ordering::Relaxed)).sum(),
        send_errors: send_errors.load(Ordering::Relaxed),
        secs,
        deliveries,
        server_cpu_secs: cpu,
        server_core_percent: cpu.map(|c| c * 100.0 / total_secs),
        server_rss_mib: pid.and_then(rss).map(|(now, _)| mib(now)),
        bench_cpu_secs: secs_between(own0, own1),
        stopped_early: stop.reason(),
    })
}

impl RoomsReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.2} {unit}"),
            None => "n/a (no --server-pid)".into(),
        };
        format!(
            "rooms: {} rooms x {} members of {} users ({} in a room), {} msg/s, {}-byte messages, {:?}\n\
             setup               {:.1} s\n\
             sent                {} in {:.1} s, {} send errors\n\
             {}\
             server CPU          {} ({} of one core)\n\
             server RSS          {}\n\
             bench CPU           {}\n{}",
            self.rooms,
            self.members,
            self.users,
            self.users_in_rooms,
            self.rate,
            self.bytes,
            self.transport,
            self.setup_secs,
            self.sent,
            self.secs,
            self.send_errors,
            self.deliveries.lines(),
            opt(self.server_cpu_secs, "s"),
            opt(self.server_core_percent, "%"),
            opt(self.server_rss_mib, "MiB"),
            opt(self.bench_cpu_secs, "s"),
            super::stopped_line(&self.stopped_early),
        )
    }
}
