//! `edgechat bench idle`: C idle connections, each with an authenticated `Connect` stream
//! subscribed to a room; the server's RSS before, with them open, per connection, and after
//! they close. (Users are shared: `--users`, each with up to C / users streams, so the run
//! does not spend minutes on password hashes.)

use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;

use super::{BenchError, Server, Target, mib, rss};

/// `bench idle` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Connections, each with one subscribed Connect stream.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// Users the streams belong to (at most 10,000 streams each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub users: u32,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Always `idle`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Connections opened (each with a subscribed stream).
    pub connections: u32,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// Seconds it took to open them all.
    pub open_secs: f64,
    /// Server RSS before the connections, MiB.
    pub rss_before_mib: Option<f64>,
    /// Server RSS with them open, MiB.
    pub rss_open_mib: Option<f64>,
    /// Server RSS 2 s after they closed, MiB.
    pub rss_after_close_mib: Option<f64>,
    /// (open - before) / connections, KiB.
    pub kib_per_connection: Option<f64>,
}

/// Runs the scenario.
pub async fn run(args: &IdleArgs) -> Result<IdleReport, BenchError> {
    let c = args.connections;
    if args.users > c {
        return Err(BenchError::Params("--users must not exceed --connections".into()));
    }
    let per_user = c.div_ceil(args.users);
    if per_user > 10_000 {
        return Err(BenchError::Params(format!(
            "{per_user} streams per user is over the server's limit of 10,000: use more --users"
        )));
    }
    super::ensure_descriptors(u64::from(c) + 256)?;
    let (conns, streams) = ((c + args.users + 16).to_string(), per_user.to_string());
    let settings = [
        ("EDGECHAT_LIMITS_MAX_CONNECTIONS", conns.as_str()),
        ("EDGECHAT_LIMITS_MAX_CONNECTIONS_PER_IP", conns.as_str()),
        ("EDGECHAT_LIMITS_MAX_STREAMS_PER_USER", streams.as_str()),
    ];
    let server = Server::start(&args.target, &settings)?;
    let pid = server.pid;
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    let users = super::register_many(&server, &format!("i{run_id}u"), args.users, 16).await?;
    let room = super::room_for_all(&users, &format!("idle-{run_id}")).await?;
    let settle = || tokio::time::sleep(Duration::from_secs(2));
    settle().await;
    let before = pid.and_then(rss).map(|(now, _)| now);
    let started = std::time::Instant::now();
    let tokens: Vec<String> = users.iter().map(|(_, t)| t.clone()).collect();
    let open_one = |i: u32| {
        let (token, room, server) = (&tokens[i as usize % tokens.len()], &room, &server);
        super::open_subscribed(server, token, room, None)
    };
    let open: Vec<_> = futures_util::stream::iter(0..c)
        .map(open_one)
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let open_secs = started.elapsed().as_secs_f64();
    settle().await;
    let with = pid.and_then(rss).map(|(now, _)| now);
    drop(open);
    settle().await;
    let after = pid.and_then(rss).map(|(now, _)| now);
    let per = match (before, with) {
        (Some(b), Some(w)) => Some(w.saturating_sub(b) as f64 / 1024.0 / f64::from(c)),
        _ => None,
    };
    Ok(IdleReport {
        scenario: "idle",
        transport: args.target.transport,
        connections: c,
        server_settings: server.settings.clone(),
        open_secs,
        rss_before_mib: before.map(mib),
        rss_open_mib: with.map(mib),
        rss_after_close_mib: after.map(mib),
        kib_per_connection: per,
    })
}

impl IdleReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.1} {unit}"),
            None => "n/a (no --server-pid)".into(),
        };
        format!(
            "idle: {} connections with a subscribed Connect stream each, {:?}\n\
             opened in           {:.1} s\n\
             server RSS before   {}\n\
             server RSS open     {}\n\
             per connection      {}\n\
             after close         {}\n",
            self.connections,
            self.transport,
            self.open_secs,
            opt(self.rss_before_mib, "MiB"),
            opt(self.rss_open_mib, "MiB"),
            opt(self.kib_per_connection, "KiB"),
            opt(self.rss_after_close_mib, "MiB"),
        )
    }
}
