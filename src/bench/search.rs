//! `edgechat bench search`: loads a corpus of chat messages (benches/search/corpus.py) into a
//! server through `SendMessage`, then times `Search` for each query of a query file as a user
//! in every room and as one in a few. The figures behind the search section of
//! docs/PERFORMANCE.md: load rate with the index written in each send's transaction, the
//! database file per message, the server's memory, and query latency.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;

use super::{BenchError, Server, Target, mib, quantile, rss};
use crate::client::{self, GrpcChannel};
use crate::proto;

/// `bench search` parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// The corpus: `room<TAB>at_ms<TAB>text` a line (`python3 benches/search/corpus.py N`).
    /// Each distinct room name becomes a room with its own sender; `at_ms` is ignored (the
    /// server stamps its own time).
    #[arg(long, value_name = "FILE", required_unless_present = "data_dir")]
    pub corpus: Option<PathBuf>,
    /// The queries, one a line (`python3 benches/search/corpus.py --queries`).
    #[arg(long, value_name = "FILE")]
    pub queries: PathBuf,
    /// Load at most this many messages of the corpus (0: all of it).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Sends in flight per room (each room's sender is its own user and connection).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub depth: u32,
    /// The second searcher is a member of this many rooms (the first, of all of them).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub few_rooms: u32,
    /// Timed searches per query and searcher (after 3 untimed ones).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub runs: u32,
    /// Results asked for per search (`SearchRequest.limit`).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,
    /// Skip loading: search the database a --keep-data-dir run left (with --data-dir).
    #[arg(long, value_name = "DIR", conflicts_with = "keep_data_dir")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: Target,
}

/// One query's figures for one searcher.
#[derive(Debug, Serialize)]
pub struct QueryFigures {
    /// The query.
    pub query: String,
    /// Hits on the first page (at most `limit`).
    pub hits: usize,
    /// Whether there were more (a `next_page_token`).
    pub more: bool,
    /// Latency, ms.
    pub p50_ms: f64,
    /// Latency, ms.
    pub p99_ms: f64,
}

/// One searcher's figures.
#[derive(Debug, Serialize)]
pub struct SearcherFigures {
    /// Rooms the searcher is in (all of them are searched).
    pub rooms: usize,
    /// Per query.
    pub queries: Vec<QueryFigures>,
    /// Over every timed search of every query, ms.
    pub p50_ms: f64,
    /// Same, ms.
    pub p99_ms: f64,
    /// Same, ms.
    pub max_ms: f64,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct SearchReport {
    /// Always `search`.
    pub scenario: &'static str,
    /// The transport.
    pub transport: super::Transport,
    /// Limits set on a server this run started.
    pub server_settings: Vec<(String, String)>,
    /// Rooms in the corpus.
    pub rooms: usize,
    /// Messages acknowledged while loading (0 with --data-dir).
    pub loaded: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Loading time, s.
    pub load_secs: f64,
    /// Acknowledged messages per second while loading.
    pub load_msgs_per_sec: f64,
    /// Server CPU while loading, s.
    pub load_server_cpu_secs: Option<f64>,
    /// The database file after loading, MiB (a server this run started).
    pub file_mib: Option<f64>,
    /// The searchers.
    pub searchers: Vec<SearcherFigures>,
    /// Server RSS after the searches, MiB.
    pub server_rss_mib: Option<f64>,
    /// Server peak RSS (VmHWM), MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// Why the run stopped before it was done; the figures are what was measured until then.
    pub stopped_early: Option<String>,
}

/// The corpus, by room, in file order: at most `limit` messages (0: all).
fn read_corpus(path: &PathBuf, limit: u64) -> Result<BTreeMap<String, Vec<String>>, BenchError> {
    use std::io::BufRead;
    let f = std::fs::File::open(path)
        .map_err(|e| BenchError::Params(format!("--corpus {}: {e}", path.display())))?;
    let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        if limit > 0 && n as u64 >= limit {
            break;
        }
        let line = line.map_err(|e| BenchError::Params(format!("--corpus: {e}")))?;
        let mut fields = line.splitn(3, '\t');
        let (Some(room), Some(_at), Some(text)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(BenchError::Params(format!(
                "--corpus line {}: expected room<TAB>at_ms<TAB>text",
                n + 1
            )));
        };
        rooms.entry(room.to_string()).or_default().push(text.to_string());
    }
    if rooms.is_empty() {
        return Err(BenchError::Params("--corpus is empty".into()));
    }
    Ok(rooms)
}

/// Runs the scenario.
pub async fn run(args: &SearchArgs) -> Result<SearchReport, BenchError> {
    let queries: Vec<String> = std::fs::read_to_string(&args.queries)
        .map_err(|e| BenchError::Params(format!("--queries {}: {e}", args.queries.display())))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if queries.is_empty() {
        return Err(BenchError::Params("--queries has no query".into()));
    }
    let mut target = args.target.clone();
    if let Some(dir) = &args.data_dir {
        target.keep_data_dir = Some(dir.clone());
    }
    let stop = super::stop();
    let server = Server::start(&target, &[])?;
    let pid = server.pid;
    // Loading, or the rooms a kept directory already has (the searchers' names are fixed so a
    // second run on the same directory logs in as them).
    let (room_ids, loaded, send_errors, load_secs, load_cpu) = if args.data_dir.is_none() {
        load(args, &server).await?
    } else {
        let s = login(&server, SEARCHERS[0]).await?;
        let rooms = client::rooms_client(s.0.clone(), Some(&s.1))
            .list_rooms(proto::ListRoomsRequest::default())
            .await
            .map_err(|e| BenchError::Server(format!("list rooms: {e}")))?
            .into_inner()
            .rooms;
        (rooms.into_iter().map(|r| r.id).collect(), 0, 0, 0.0, None)
    };
    let file_mib = server
        .data_dir()
        .and_then(|d| std::fs::metadata(d.join(crate::store::DB_FILE_NAME)).ok())
        .map(|m| mib(m.len()));

    super::progress(&format!(
        "searching: {} queries x {} runs, two searchers",
        queries.len(),
        args.runs
    ));
    let mut searchers = Vec::new();
    for (name, rooms) in SEARCHERS.into_iter().zip([room_ids.len(), args.few_rooms as usize]) {
        if stop.is_stopped() {
            break;
        }
        let user = login(&server, name).await?;
        let mut chat = client::chat_client(user.0.clone(), Some(&user.1));
        let mut all = Vec::new();
        let mut figures = Vec::new();
        for q in &queries {
            let req =
                proto::SearchRequest { query: q.clone(), limit: args.limit, ..Default::default() };
            let mut times = Vec::with_capacity(args.runs as usize);
            let mut first = None;
            for i in 0..args.runs + 3 {
                let started = Instant::now();
                let Some(r) = stop.or_stopped(chat.search(req.clone())).await else { break };
                let elapsed = started.elapsed();
                let r = r.map_err(|e| BenchError::Server(format!("search {q:?}: {e}")))?;
                if i >= 3 {
                    times.push(elapsed);
                }
                first.get_or_insert(r.into_inner());
            }
            times.sort();
            all.extend_from_slice(&times);
            let first = first.unwrap_or_default();
            figures.push(QueryFigures {
                query: q.clone(),
                hits: first.hits.len(),
                more: !first.next_page_token.is_empty(),
                p50_ms: ms(quantile(&times, 0.5)),
                p99_ms: ms(quantile(&times, 0.99)),
            });
        }
        all.sort();
        searchers.push(SearcherFigures {
            rooms: rooms.min(room_ids.len()),
            queries: figures,
            p50_ms: ms(quantile(&all, 0.5)),
            p99_ms: ms(quantile(&all, 0.99)),
            max_ms: ms(all.last().copied().unwrap_or_default()),
        });
    }
    let memory = pid.and_then(rss);
    Ok(SearchReport {
        scenario: "search",
        transport: args.target.transport,
        server_settings: server.settings.clone(),
        rooms: room_ids.len(),
        loaded,
        send_errors,
        load_secs,
        load_msgs_per_sec: if load_secs > 0.0 { loaded as f64 / load_secs } else { 0.0 },
        load_server_cpu_secs: load_cpu,
        file_mib,
        searchers,
        server_rss_mib: memory.map(|(now, _)| mib(now)),
        server_peak_rss_mib: memory.map(|(_, peak)| mib(peak)),
        stopped_early: stop.reason(),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Logs in as one of the searchers.
async fn login(server: &Server, name: &str) -> Result<(GrpcChannel, String), BenchError> {
    let ch = client::connect(&server.url, &server.tls)
        .await
        .map_err(|e| BenchError::Server(e.to_string()))?;
    let r = client::auth_client(ch.clone(), None)
        .login(proto::LoginRequest { username: name.into(), password: "bench password".into() })
        .await
        .map_err(|e| BenchError::Server(format!("login {name}: {e}")))?;
    Ok((ch, r.into_inner().access_token))
}

/// The searchers' user names: one in every room, one in `--few-rooms`. Fixed, so a run with
/// `--data-dir` logs in as the ones a loading run registered.
const SEARCHERS: [&str; 2] = ["searcher-0", "searcher-1"];

/// Room ids, messages acked, send errors, seconds and server CPU seconds of the load.
type Loaded = (Vec<String>, u64, u64, f64, Option<f64>);

/// Creates a room per corpus room (its sender creates it), the two searchers (one joins
/// every room, the other the first `few_rooms`), then sends every room's messages, `depth`
/// at a time per room, all rooms at once.
async fn load(args: &SearchArgs, server: &Server) -> Result<Loaded, BenchError> {
    let path =
        args.corpus.as_ref().ok_or_else(|| BenchError::Params("--corpus is needed".into()))?;
    let corpus = read_corpus(path, args.messages)?;
    let total: usize = corpus.values().map(Vec::len).sum();
    super::progress(&format!("setting up: {} rooms, {total} messages to load", corpus.len()));
    let senders = super::register_many(server, "sender-", corpus.len() as u32, 16).await?;
    // `register_many` names its users prefix + index: "searcher-" 0 and 1 are SEARCHERS.
    let searchers = super::register_many(server, "searcher-", 2, 2).await?;
    let mut room_ids = Vec::new();
    for ((name, _), sender) in corpus.iter().zip(&senders) {
        room_ids.push(super::create_room(sender, name).await?);
    }
    for (i, room) in room_ids.iter().enumerate() {
        super::join_room(&searchers[0], room).await?;
        if i < args.few_rooms as usize {
            super::join_room(&searchers[1], room).await?;
        }
    }
    super::progress(&format!("running: loading {total} messages"));
    let stop = super::stop();
    let (acked, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let cpu0 = server.pid.and_then(|p| super::cpu_time(Some(p)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for ((_, texts), (sender, id)) in
        corpus.into_iter().zip(senders.into_iter().zip(room_ids.clone()))
    {
        let (acked, errors) = (acked.clone(), errors.clone());
        let depth = args.depth as usize;
        tasks.spawn(async move {
            let chat = client::chat_client(sender.0.clone(), Some(&sender.1));
            let sends = texts.into_iter().enumerate().map(|(n, text)| {
                let mut chat = chat.clone();
                let req = proto::SendMessageRequest {
                    room_id: id.clone(),
                    client_message_id: n.to_string(),
                    text,
                    ..Default::default()
                };
                async move { chat.send_message(req).await }
            });
            let mut sends = futures_util::stream::iter(sends).buffer_unordered(depth);
            while let Some(Some(r)) = stop.or_stopped(sends.next()).await {
                match r {
                    Ok(_) => acked.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        });
    }
    let mut last = Instant::now();
    loop {
        let done = tokio::time::timeout(Duration::from_secs(10), tasks.join_next()).await;
        if let Ok(None) = done {
            break;
        }
        if last.elapsed() >= Duration::from_secs(10) {
            last = Instant::now();
            let n = acked.load(Ordering::Relaxed);
            super::progress(&format!(
                "{n} of {total} loaded ({:.0} msg/s)",
                n as f64 / started.elapsed().as_secs_f64()
            ));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = server.pid.and_then(|p| super::cpu_time(Some(p)));
    let cpu = cpu0.zip(cpu1).map(|(a, b)| (b - a).as_secs_f64());
    Ok((room_ids, acked.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), secs, cpu))
}

impl SearchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let opt = |v: Option<f64>, unit: &str| match v {
            Some(v) => format!("{v:.1} {unit}"),
            None => "n/a".into(),
        };
        let mut out = format!(
            "search: {} rooms, {:?}\n\
             loaded              {} messages in {:.1} s ({:.0} msg/s), {} send errors\n\
             server CPU (load)   {}\n\
             database file       {}\n",
            self.rooms,
            self.transport,
            self.loaded,
            self.load_secs,
            self.load_msgs_per_sec,
            self.send_errors,
            opt(self.load_server_cpu_secs, "s"),
            opt(self.file_mib, "MiB"),
        );
        for s in &self.searchers {
            out += &format!(
                "searching {} rooms   p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n",
                s.rooms, s.p50_ms, s.p99_ms, s.max_ms
            );
            for q in &s.queries {
                out += &format!(
                    "  {:<28} {:>3}{} hits  p50 {:>7.2} ms  p99 {:>7.2} ms\n",
                    q.query,
                    q.hits,
                    if q.more { "+" } else { " " },
                    q.p50_ms,
                    q.p99_ms
                );
            }
        }
        out += &format!(
            "server RSS          {} (peak {})\n{}",
            opt(self.server_rss_mib, "MiB"),
            opt(self.server_peak_rss_mib, "MiB"),
            super::stopped_line(&self.stopped_early)
        );
        out
    }
}
