//! `edgechat bench durable`: S senders, each on its own connection (or all on one), send as
//! fast as acks come back, spread over M rooms, by `SendMessage` calls or by `Send` frames on
//! a `Connect` stream (what chat clients do); acked messages per second,
//! ack latency percentiles, the server's CPU and, for a server this run started, the database
//! file's size per message (what issue 14's size target is measured with).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, Server, Target, mib, quantile, rss};
use crate::client::{self, GrpcChannel};
use crate::proto;

/// `bench durable` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct DurableArgs {
    /// Concurrent senders, one user each.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub senders: u32,
    /// Rooms the senders are spread over (sender i sends to room i mod M).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rooms: u32,
    /// Stop after this many acked messages in all (0: run for --secs).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// How long to send when --messages is 0.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Message text size in bytes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub bytes: u32,
    /// All senders share one connection (default: one connection each).
    #[arg(long)]
    pub shared_connection: bool,
    /// How each message is sent: one `SendMessage` call each, or a `Send` frame on the
    /// sender's `Connect` stream (acked by `SendAck` on the same stream).
    #[arg(long, value_enum, default_value_t = Via::Unary)]
    pub via: Via,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// How a durable bench sender sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `SendMessage`, one call per message.
    Unary,
    /// `Send` frames on one `Connect` stream per sender.
    Stream,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct DurableReport {
    /// Always `durable`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Senders.
    pub senders: u32,
    /// Rooms.
    pub rooms: u32,
    /// Text bytes per message.
    pub bytes: u32,
    /// Whether the senders shared one connection.
    pub shared_connection: bool,
    /// How messages were sent.
    pub via: Via,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// Messages acknowledged.
    pub acked: u64,
    /// Sends that failed (counted, not retried).
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Sending time, s.
    pub secs: f64,
    /// Acknowledged messages per second.
    pub msgs_per_sec: f64,
    /// Ack latency, ms.
    pub p50_ms: f64,
    /// Ack latency, ms.
    pub p99_ms: f64,
    /// Ack latency, ms.
    pub p999_ms: f64,
    /// Ack latency, ms.
    pub max_ms: f64,
    /// Server CPU time during the run, s.
    pub server_cpu_secs: Option<f64>,
    /// Server RSS at the end, MiB.
    pub server_rss_mib: Option<f64>,
    /// The load generator's own CPU time, s.
    pub bench_cpu_secs: Option<f64>,
    /// The database file's size at the end (a server this run started), bytes.
    pub db_bytes: Option<u64>,
    /// Why the run stopped before it was done; the figures are what was measured until then.
    pub stopped_early: Option<String>,
}

/// Runs the scenario.
pub async fn run(args: &DurableArgs) -> Result<DurableReport, BenchError> {
    if args.messages == 0 && (args.secs.is_nan() || args.secs <= 0.0) {
        return Err(BenchError::Params("--secs must be positive (or give --messages)".into()));
    }
    let conns = (args.senders + 16).to_string();
    let settings = [("EDGECHAT_LIMITS_MAX_CONNECTIONS_PER_IP", conns.as_str())];
    let server = Server::start(&args.target, &settings)?;
    let pid = server.pid;
    let err = |e: &dyn std::fmt::Display| BenchError::Server(e.to_string());
    let shared = if args.shared_connection {
        Some(client::connect(&server.url, &server.tls).await.map_err(|e| err(&e))?)
    } else {
        None
    };
    let run_id = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
    // Every sender registers, the first one creates the rooms, each joins its own room.
    super::progress(&format!("setting up: {} users, {} rooms", args.senders, args.rooms));
    super::ensure_descriptors(u64::from(args.senders) + 64)?;
    let senders: Vec<(GrpcChannel, String)> = match &shared {
        Some(ch) => {
            let mut out = Vec::new();
            for (_, token) in
                super::register_many(&server, &format!("d{run_id}u"), args.senders, 16).await?
            {
                out.push((ch.clone(), token));
            }
            out
        }
        None => super::register_many(&server, &format!("d{run_id}u"), args.senders, 16).await?,
    };
    let mut rooms = Vec::new();
    for r in 0..args.rooms {
        rooms.push(super::create_room(&senders[0], &format!("durable-{run_id}-{r}")).await?);
    }
    for (i, sender) in senders.iter().enumerate().skip(1) {
        super::join_room(sender, &rooms[i % rooms.len()]).await?;
    }

    super::progress(&match args.messages {
        0 => format!("running: {} senders for {} s", args.senders, args.secs),
        n => format!("running: {} senders, {n} messages", args.senders),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let remaining =
        Arc::new(AtomicU64::new(if args.messages == 0 { u64::MAX } else { args.messages }));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    // Without a pid the server's CPU is unknown (`cpu_time(None)` would be our own).
    let server_cpu = || pid.and_then(|p| super::cpu_time(Some(p)));
    let (cpu0, own0) = (server_cpu(), super::cpu_time(None));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (ch, token)) in senders.into_iter().enumerate() {
        let room = rooms[i % rooms.len()].clone();
        let (stop, remaining, errors, first_error) =
            (stop.clone(), remaining.clone(), errors.clone(), first_error.clone());
        let bytes = args.bytes as usize;
        let via = args.via;
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut sender = match Sender::open(via, ch, &token).await {
                Ok(s) => s,
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                    return lat;
                }
            };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed)
                && !super::stop().is_stopped()
                && take_one(&remaining)
            {
                let t = Instant::now();
                let r = sender.send(&room, format!("{i}-{n}"), text(i, n, bytes)).await;
                n += 1;
                match r {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e.text);
                        // A sender whose stream ended stops (retrying would spin).
                        if e.dead {
                            break;
                        }
                    }
                }
            }
            lat
        });
    }
    if args.messages == 0 {
        let stop = stop.clone();
        let secs = args.secs;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            stop.store(true, Ordering::Relaxed);
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = tasks.join_next().await {
        latencies.extend(r.map_err(|e| err(&e))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, own1) = (server_cpu(), super::cpu_time(None));
    latencies.sort();
    let ms = |q: f64| quantile(&latencies, q).as_secs_f64() * 1e3;
    let secs = |a: Option<Duration>, b: Option<Duration>| Some((b? - a?).as_secs_f64());
    let db_bytes = server
        .data_dir()
        .and_then(|d| std::fs::metadata(d.join(crate::store::DB_FILE_NAME)).ok())
        .map(|m| m.len());
    let acked = latencies.len() as u64;
    let first_error = first_error.lock().unwrap().clone();
    Ok(DurableReport {
        scenario: "durable",
        transport: args.target.transport,
        senders: args.senders,
        rooms: args.rooms,
        bytes: args.bytes,
        shared_connection: args.shared_connection,
        via: args.via,
        server_settings: server.settings.clone(),
        acked,
        errors: errors.load(Ordering::Relaxed),
        first_error,
        secs: elapsed,
        msgs_per_sec: acked as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: ms(1.0),
        server_cpu_secs: secs(cpu0, cpu1),
        server_rss_mib: pid.and_then(rss).map(|(now, _)| mib(now)),
        bench_cpu_secs: secs(own0, own1),
        db_bytes,
        stopped_early: super::stop().reason(),
    })
}

/// One bench sender's way of sending.
enum Sender {
    Unary(proto::chat_service_client::ChatServiceClient<client::Authed>),
    Stream {
        frames: tokio::sync::mpsc::Sender<proto::ClientFrame>,
        stream: tonic::Streaming<proto::ServerFrame>,
        /// Held for the stream's life: an HTTP/3 connection closes when its last handle goes.
        _channel: GrpcChannel,
    },
}

/// A refused or failed send. `dead`: the sender cannot send again (its stream ended).
struct SendError {
    text: String,
    dead: bool,
}

impl Sender {
    async fn open(via: Via, ch: GrpcChannel, token: &str) -> Result<Sender, String> {
        Ok(match via {
            Via::Unary => Sender::Unary(client::chat_client(ch, Some(token))),
            Via::Stream => {
                let (frames, stream, _) =
                    super::subscribe_on(&ch, token, &[]).await.map_err(|e| e.to_string())?;
                Sender::Stream { frames, stream, _channel: ch }
            }
        })
    }

    /// Sends one message and waits for its ack.
    async fn send(&mut self, room: &str, cmid: String, text: String) -> Result<(), SendError> {
        let refused = |text: String| SendError { text, dead: false };
        let dead = |text: String| SendError { text, dead: true };
        use proto::server_frame::Kind;
        match self {
            Sender::Unary(chat) => chat
                .send_message(proto::SendMessageRequest {
                    room_id: room.to_string(),
                    client_message_id: cmid,
                    text,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|s| refused(s.to_string())),
            Sender::Stream { frames, stream, .. } => {
                let send = proto::Send {
                    room_id: room.to_string(),
                    client_message_id: cmid,
                    text,
                    ..Default::default()
                };
                let frame =
                    proto::ClientFrame { kind: Some(proto::client_frame::Kind::Send(send)) };
                frames.send(frame).await.map_err(|_| dead("the stream is closed".into()))?;
                // One send in flight per stream: the next ack or error is this message's.
                loop {
                    match stream.message().await {
                        Ok(Some(proto::ServerFrame { kind: Some(Kind::SendAck(_)) })) => {
                            return Ok(());
                        }
                        Ok(Some(proto::ServerFrame { kind: Some(Kind::Error(e)) })) => {
                            return Err(refused(format!("{}: {}", e.code, e.message)));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => return Err(dead("the stream ended".into())),
                        Err(s) => return Err(dead(s.to_string())),
                    }
                }
            }
        }
    }
}

/// Takes one message from the shared budget; false once it is spent.
fn take_one(remaining: &AtomicU64) -> bool {
    remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
}

/// A message of exactly `bytes` bytes that names its sender and number (so a reader can tell
/// messages apart), padded with letters.
fn text(sender: usize, n: u64, bytes: usize) -> String {
    let mut t = format!("s{sender} m{n} ");
    while t.len() < bytes {
        t.push(char::from(b'a' + (t.len() % 26) as u8));
    }
    t.truncate(bytes);
    t
}

impl DurableReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.1} {unit}"),
            None => "n/a".into(),
        };
        let per_msg = match self.db_bytes {
            Some(b) if self.acked > 0 => {
                format!("{:.1} MiB ({} bytes per message)", mib(b), b / self.acked)
            }
            _ => "n/a".into(),
        };
        format!(
            "durable: {} senders ({}, {}), {} rooms, {}-byte messages, {:?}\n\
             acked               {} in {:.1} s ({:.0} msg/s)\n\
             errors              {}{}\n\
             ack p50/p99/p999    {:.2} / {:.2} / {:.2} ms (max {:.1} ms)\n\
             server CPU          {}\n\
             server RSS          {}\n\
             bench CPU           {}\n\
             database            {}\n{}",
            self.senders,
            if self.shared_connection { "one connection" } else { "own connections" },
            match self.via {
                Via::Unary => "SendMessage",
                Via::Stream => "Connect stream",
            },
            self.rooms,
            self.bytes,
            self.transport,
            self.acked,
            self.secs,
            self.msgs_per_sec,
            self.errors,
            self.first_error.as_ref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms,
            opt(self.server_cpu_secs, "s"),
            opt(self.server_rss_mib, "MiB"),
            opt(self.bench_cpu_secs, "s"),
            per_msg,
            super::stopped_line(&self.stopped_early),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_have_the_size_asked_and_the_budget_runs_out() {
        for bytes in [16, 128, 1000] {
            assert_eq!(text(12, 345_678, bytes).len(), bytes);
        }
        assert!(text(3, 7, 128).starts_with("s3 m7 "));
        let budget = AtomicU64::new(2);
        assert!(take_one(&budget) && take_one(&budget));
        assert!(!take_one(&budget) && !take_one(&budget));
    }
}
