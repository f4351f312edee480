//! `edgechat bench resume`: N clients follow a room, all disconnect, E messages are sent while
//! they are away, then all reconnect at once and resume with `after_seq`; the time until every
//! client has caught up, per-client percentiles, and every client's seqs checked for gaps.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::{BenchError, Server, Target, quantile};
use crate::client;
use crate::proto::{self, server_frame};

/// `bench resume` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct ResumeArgs {
    /// Clients, each its own connection and stream.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,
    /// Events each client misses while away.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub missed: u32,
    /// Users the clients belong to (at most 10,000 streams each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub users: u32,
    /// How long clients may take to catch up before the run gives up on them.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_secs: f64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct ResumeReport {
    /// Always `resume`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Clients.
    pub clients: u32,
    /// Events missed per client.
    pub missed: u32,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// From the reconnect until the last client had every missed event, s.
    pub all_caught_up_secs: f64,
    /// Per-client catch-up time, ms.
    pub p50_ms: f64,
    /// Per-client catch-up time, ms.
    pub p99_ms: f64,
    /// Clients that did not catch up within the timeout (or whose stream failed).
    pub not_caught_up: u32,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Seqs a client never saw (never expected).
    pub gaps: u64,
    /// Server CPU during the reconnect and catch-up, s.
    pub server_cpu_secs: Option<f64>,
}

/// Runs the scenario.
pub async fn run(args: &ResumeArgs) -> Result<ResumeReport, BenchError> {
    if args.users > args.clients {
        return Err(BenchError::Params("--users must not exceed --clients".into()));
    }
    if args.timeout_secs.is_nan() || args.timeout_secs <= 0.0 {
        return Err(BenchError::Params("--timeout-secs must be positive".into()));
    }
    let per_user = args.clients.div_ceil(args.users);
    if per_user > 10_000 {
        return Err(BenchError::Params("over 10,000 streams per user: use more --users".into()));
    }
    super::ensure_descriptors(u64::from(args.clients) + 256)?;
    let (conns, streams) = ((args.clients + args.users + 16).to_string(), per_user.to_string());
    let settings = [
        ("EDGECHAT_LIMITS_MAX_CONNECTIONS", conns.as_str()),
        ("EDGECHAT_LIMITS_MAX_CONNECTIONS_PER_IP", conns.as_str()),
        ("EDGECHAT_LIMITS_MAX_STREAMS_PER_USER", streams.as_str()),
    ];
    let server = Server::start(&args.target, &settings)?;
    let pid = server.pid;
    let err = |e: &dyn std::fmt::Display| BenchError::Server(e.to_string());
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let users = super::register_many(&server, &format!("r{run_id}u"), args.users, 16).await?;
    let room = super::room_for_all(&users, &format!("resume-{run_id}")).await?;
    let token_of = |i: u32| users[i as usize % users.len()].1.clone();
    // Where every client was when it went away (all at the same seq: one subscription tells).
    let seen_at = {
        let first = super::open_subscribed(&server, &token_of(0), &room, None).await?;
        first.subscribed.last_seq
    };
    // Away: the missed events.
    let mut chat = client::chat_client(users[0].0.clone(), Some(&users[0].1));
    let mut last = seen_at;
    for n in 0..args.missed {
        let m = chat
            .send_message(proto::SendMessageRequest {
                room_id: room.clone(),
                client_message_id: format!("missed-{n}"),
                text: format!("missed while away {n}"),
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        last = m.into_inner().seq;
    }
    // Back, all at once: connect, Subscribe { after_seq }, read until the last seq.
    let cpu0 = pid.and_then(|p| super::cpu_time(Some(p)));
    let started = Instant::now();
    let deadline = Duration::from_secs_f64(args.timeout_secs);
    let one = |i: u32| {
        let (token, room, server) = (token_of(i), room.clone(), &server);
        async move {
            let caught = tokio::time::timeout(deadline, async {
                let mut s = super::open_subscribed(server, &token, &room, Some(seen_at)).await?;
                let (mut at, mut gaps) = (seen_at, 0u64);
                while at < last {
                    match s.stream.message().await.map_err(|e| err(&e))? {
                        Some(proto::ServerFrame { kind: Some(server_frame::Kind::Event(ev)) }) => {
                            if ev.seq > at + 1 {
                                gaps += ev.seq - at - 1;
                            }
                            at = at.max(ev.seq);
                        }
                        Some(_) => {}
                        None => return Err(BenchError::Server("a stream ended early".into())),
                    }
                }
                Ok::<_, BenchError>((started.elapsed(), gaps))
            })
            .await;
            match caught {
                Ok(r) => r,
                Err(_) => Err(BenchError::Server(format!("not caught up within {deadline:?}"))),
            }
        }
    };
    let results: Vec<_> = futures_util::stream::iter(0..args.clients)
        .map(one)
        .buffer_unordered(args.clients as usize)
        .collect()
        .await;
    let all_caught_up_secs = started.elapsed().as_secs_f64();
    let cpu1 = pid.and_then(|p| super::cpu_time(Some(p)));
    let mut times = Vec::new();
    let (mut gaps, mut failed, mut first_error) = (0, 0, None);
    for r in results {
        match r {
            Ok((t, g)) => {
                times.push(t);
                gaps += g;
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    times.sort();
    Ok(ResumeReport {
        scenario: "resume",
        transport: args.target.transport,
        clients: args.clients,
        missed: args.missed,
        server_settings: server.settings.clone(),
        all_caught_up_secs,
        p50_ms: quantile(&times, 0.5).as_secs_f64() * 1e3,
        p99_ms: quantile(&times, 0.99).as_secs_f64() * 1e3,
        not_caught_up: failed,
        first_error,
        gaps,
        server_cpu_secs: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        },
    })
}

impl ResumeReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        format!(
            "resume: {} clients reconnect at once, {} missed events each, {:?}\n\
             all caught up in    {:.2} s\n\
             per client p50/p99  {:.0} / {:.0} ms\n\
             not caught up       {}{}\n\
             gaps                {}\n\
             server CPU          {}\n",
            self.clients,
            self.missed,
            self.transport,
            self.all_caught_up_secs,
            self.p50_ms,
            self.p99_ms,
            self.not_caught_up,
            self.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            self.gaps,
            self.server_cpu_secs.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "n/a".into()),
        )
    }
}
