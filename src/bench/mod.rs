//! `edgechat bench`: the load generator, in the same binary, on the client library.
//!
//! A scenario runs against a server it starts itself (this binary's `serve`, in its own
//! process, on a temporary data directory, on 127.0.0.1 with an ephemeral port, with the
//! limits the run needs raised and printed) or against a running one (`--server URL`, with
//! `--server-pid` so its memory and CPU can be read). The server's figures come from
//! `/proc/PID/{status,stat}` (Linux), so they are the real process's, not an in-process guess;
//! the load generator's own CPU is reported next to them, to show when it is the bottleneck.

pub mod durable;
pub mod fanout;
pub mod files;
pub mod idle;
pub mod login;
pub mod resume;
pub mod rooms;
pub mod search;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::client::TlsFiles;

/// Why a run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A parameter that cannot work; refused before any load starts.
    #[error("{0}")]
    Params(String),
    /// Starting or reaching the server failed.
    #[error("server: {0}")]
    Server(String),
}

/// Why a run stops before it is done: Ctrl-C, or the server went away. Scenarios stop their
/// load when it is set and report what they measured so far, marked partial.
pub struct Stop {
    token: tokio_util::sync::CancellationToken,
    reason: Mutex<Option<String>>,
}

/// The process's one [`Stop`] (a bench run is one scenario in one process).
pub fn stop() -> &'static Stop {
    static STOP: std::sync::OnceLock<Stop> = std::sync::OnceLock::new();
    STOP.get_or_init(|| Stop { token: Default::default(), reason: Mutex::new(None) })
}

impl Stop {
    /// Stops the run; the first reason given is the one reported.
    pub fn stop(&self, reason: &str) {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| reason.into());
        self.token.cancel();
    }

    /// Whether the run was stopped.
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once the run is stopped.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// Why it was stopped, if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `fut`'s output, or `None` if the run is stopped first.
    pub async fn or_stopped<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            v = fut => Some(v),
            () = self.stopped() => None,
        }
    }
}

/// Which transport the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/3 over QUIC.
    H3,
}

/// Where the server under test is.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// An already running server (https://host:port); default: start one.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// CA that signed the running server's certificate (with --server).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Process id of the running server, to read its memory and CPU (with --server).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Transport for the clients.
    #[arg(long, value_enum, default_value = "h2")]
    pub transport: Transport,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Data directory for the server this run starts, kept afterwards (default: a temporary
    /// one, removed). For looking at the database a run leaves, e.g. with `edgechat check`.
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    pub keep_data_dir: Option<PathBuf>,
}

/// Set on every server a run starts: the per-user send, action and search budgets, which
/// would otherwise measure the rate limiter instead of the server.
const RAISED_BUDGETS: [(&str, &str); 6] = [
    ("EDGECHAT_LIMITS_SEND_RATE_PER_SEC", "1000000000"),
    ("EDGECHAT_LIMITS_SEND_BURST", "100000"),
    ("EDGECHAT_LIMITS_ACTION_RATE_PER_SEC", "1000000"),
    ("EDGECHAT_LIMITS_ACTION_BURST", "100000"),
    ("EDGECHAT_LIMITS_SEARCH_RATE_PER_SEC", "1000000"),
    ("EDGECHAT_LIMITS_SEARCH_BURST", "100000"),
];

/// The server a run talks to; a server this run started is stopped (SIGTERM) and its data
/// directory removed on drop.
pub struct Server {
    /// Base URL for the clients (`https://` or `h3://`).
    pub url: String,
    /// TLS files trusting the server.
    pub tls: TlsFiles,
    /// Its process, when known.
    pub pid: Option<u32>,
    /// The limits this run set on a server it started (`EDGECHAT_*` variables).
    pub settings: Vec<(String, String)>,
    /// The started server's metrics listener (`GET /metrics`), for its counters.
    metrics: Option<std::net::SocketAddr>,
    child: Option<Child>,
    /// Set while this run stops the server itself, so its exit is not reported as a failure.
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// The server's last log lines (a server this run started).
    log: Arc<Mutex<std::collections::VecDeque<String>>>,
    /// The started server's data directory.
    data_dir: Option<PathBuf>,
    /// A temporary data directory to remove on drop.
    dir: Option<PathBuf>,
}

impl Server {
    /// Starts `edgechat serve` (this executable) with [`RAISED_BUDGETS`] and `settings` as
    /// `EDGECHAT_*` variables, or describes the running server of `target`.
    pub fn start(target: &Target, settings: &[(&str, &str)]) -> Result<Server, BenchError> {
        // A free port for its metrics listener (taken back by the server a moment later).
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).ok();
        let metrics_listen = metrics.map(|a| a.to_string()).unwrap_or_default();
        let settings: Vec<(&str, &str)> = RAISED_BUDGETS
            .iter()
            .chain(settings)
            .copied()
            .chain(metrics.map(|_| ("EDGECHAT_METRICS_LISTEN", metrics_listen.as_str())))
            .collect();
        let scheme = match target.transport {
            Transport::H2 => "https",
            Transport::H3 => "h3",
        };
        if let Some(url) = &target.server {
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
            let server = Server {
                url: format!("{scheme}://{rest}"),
                tls: TlsFiles { ca: target.ca.clone(), client_cert: None },
                pid: target.server_pid,
                settings: Vec::new(),
                metrics: None,
                child: None,
                closing: Default::default(),
                log: Default::default(),
                data_dir: None,
                dir: None,
            };
            server.watch();
            return Ok(server);
        }
        let (dir, keep) = match &target.keep_data_dir {
            Some(d) => (d.clone(), true),
            None => (
                std::env::temp_dir().join(format!(
                    "edgechat-bench-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                )),
                false,
            ),
        };
        let exe = std::env::current_exe().map_err(|e| BenchError::Server(e.to_string()))?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so a Ctrl-C meant for the bench reaches the bench only: the
        // bench stops its load, reads the server's figures, then stops the server (SIGTERM).
        // If the bench dies first, the kernel sends the server SIGTERM (Linux).
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
            #[cfg(target_os = "linux")]
            // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of
            // ours; it runs in the child between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        for (k, v) in &settings {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| BenchError::Server(format!("spawn: {e}")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        // The server's log is drained all along (a full pipe would stall it); its last lines
        // explain a server that failed to start.
        let log = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let tail = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                if tail.len() == 5 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        // `serve` prints exactly one line once it listens: `edgechat listening on ADDR`.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Server {
            url: String::new(),
            tls: TlsFiles { ca: Some(dir.join("certs/ca.pem")), client_cert: None },
            pid: Some(child.id()),
            settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            metrics,
            child: Some(child),
            closing: Default::default(),
            log: log.clone(),
            data_dir: Some(dir.clone()),
            dir: Some(dir).filter(|_| !keep),
        };
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let addr = line.trim().strip_prefix("edgechat listening on ").ok_or_else(|| {
            let tail = log.lock().unwrap_or_else(|e| e.into_inner());
            let tail: Vec<&str> = tail.iter().map(String::as_str).collect();
            BenchError::Server(format!("did not start: {}", tail.join(" / ")))
        })?;
        let port = addr.rsplit(':').next().unwrap_or_default();
        server.url = format!("{scheme}://localhost:{port}");
        server.watch();
        Ok(server)
    }

    /// Watches the server's process (when its pid is known): if it exits while the run is
    /// going on, the run stops with the reason and the server's last log lines.
    fn watch(&self) {
        let Some(pid) = self.pid else { return };
        let (closing, log) = (self.closing.clone(), self.log.clone());
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering;
            while !closing.load(Ordering::Relaxed) {
                if !alive(pid) {
                    if !closing.load(Ordering::Relaxed) {
                        let tail = log.lock().unwrap_or_else(|e| e.into_inner());
                        let tail: Vec<&str> =
                            tail.iter().rev().take(2).rev().map(String::as_str).collect();
                        let last = if tail.is_empty() {
                            String::new()
                        } else {
                            format!("; its last log lines: {}", tail.join(" / "))
                        };
                        stop().stop(&format!("the server (pid {pid}) went away{last}"));
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }
}

/// Sums the samples of counter `name` in Prometheus text (0 if it has none yet).
fn counter_in(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Whether process `pid` is running (not gone and not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
        // Without /proc (not Linux) nothing can be told: assume it runs.
        Err(_) => !Path::new("/proc/self/stat").exists(),
    }
}

impl Server {
    /// The started server's counter `name` (summed over its labels), from its `/metrics`;
    /// `None` for a server this run did not start, or if it cannot be read.
    pub async fn counter(&self, name: &str) -> Option<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.metrics?).await.ok()?;
        let req = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
        conn.write_all(req.as_bytes()).await.ok()?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut body))
            .await
            .ok()?
            .ok()?;
        Some(counter_in(&body, name))
    }

    /// The data directory of a server this run started.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(child) = &mut self.child {
            // SIGTERM: the server drains and closes its database like in production.
            #[cfg(unix)]
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            #[cfg(not(unix))]
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Registers `n` users named `prefix0`, `prefix1`, ... each over its own connection, at most
/// `concurrency` at a time (each is one password hash on the server; a busy refusal is retried
/// after 100 ms). Returns each user's channel and access token, in order.
pub async fn register_many(
    server: &Server,
    prefix: &str,
    n: u32,
    concurrency: usize,
) -> Result<Vec<(crate::client::GrpcChannel, String)>, BenchError> {
    use futures_util::StreamExt;
    let one = |i: u32| async move {
        let ch = crate::client::connect(&server.url, &server.tls)
            .await
            .map_err(|e| BenchError::Server(e.to_string()))?;
        let mut auth = crate::client::auth_client(ch.clone(), None);
        let username = format!("{prefix}{i}");
        loop {
            let r = auth
                .register(crate::proto::RegisterRequest {
                    username: username.clone(),
                    password: "bench password".into(),
                    display_name: String::new(),
                    ..Default::default()
                })
                .await;
            match r {
                Ok(r) => return Ok((ch, r.into_inner().access_token)),
                Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(s) => return Err(BenchError::Server(format!("register {username}: {s}"))),
            }
        }
    };
    futures_util::stream::iter(0..n)
        .map(one)
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Creates a public room named `name` as `user`; its id.
pub async fn create_room(
    user: &(crate::client::GrpcChannel, String),
    name: &str,
) -> Result<String, BenchError> {
    let room = crate::client::rooms_client(user.0.clone(), Some(&user.1))
        .create_room(crate::proto::CreateRoomRequest {
            name: name.into(),
            topic: String::new(),
            visibility: crate::proto::Visibility::Public as i32,
            read_only: false,
        })
        .await
        .map_err(|e| BenchError::Server(format!("create room: {e}")))?;
    Ok(room.into_inner().id)
}

/// Has `user` join `room`.
pub async fn join_room(
    user: &(crate::client::GrpcChannel, String),
    room: &str,
) -> Result<(), BenchError> {
    crate::client::rooms_client(user.0.clone(), Some(&user.1))
        .join_room(crate::proto::JoinRoomRequest { room_id: room.into() })
        .await
        .map_err(|e| BenchError::Server(format!("join room: {e}")))?;
    Ok(())
}

/// One public room for every one of `users`: the first creates it, the others join.
pub async fn room_for_all(
    users: &[(crate::client::GrpcChannel, String)],
    name: &str,
) -> Result<String, BenchError> {
    let room = create_room(&users[0], name).await?;
    for user in &users[1..] {
        join_room(user, &room).await?;
    }
    Ok(room)
}

/// A client's own connection with a `Connect` stream subscribed to `room` (from `after_seq`,
/// or live), once `Subscribed` has come. The sender keeps the stream's request side open.
pub struct Subscribed {
    /// The connection.
    pub channel: crate::client::GrpcChannel,
    /// Client frames (kept to keep the stream open).
    pub frames: tokio::sync::mpsc::Sender<crate::proto::ClientFrame>,
    /// Server frames.
    pub stream: tonic::Streaming<crate::proto::ServerFrame>,
    /// What the server answered.
    pub subscribed: crate::proto::Subscribed,
}

/// Connects, opens `Connect` as `token` and subscribes to `room`.
pub async fn open_subscribed(
    server: &Server,
    token: &str,
    room: &str,
    after_seq: Option<u64>,
) -> Result<Subscribed, BenchError> {
    let channel = crate::client::connect(&server.url, &server.tls)
        .await
        .map_err(|e| BenchError::Server(e.to_string()))?;
    let (frames, stream, mut subscribed) =
        subscribe_on(&channel, token, &[(room.to_string(), after_seq)]).await?;
    Ok(Subscribed { channel, frames, stream, subscribed: subscribed.remove(0) })
}

/// Opens `Connect` as `token` on `channel` and subscribes to every room of `subs` (from its
/// `after_seq`, or live); returns once every `Subscribed` has come, in the order of `subs`.
pub async fn subscribe_on(
    channel: &crate::client::GrpcChannel,
    token: &str,
    subs: &[(String, Option<u64>)],
) -> Result<
    (
        tokio::sync::mpsc::Sender<crate::proto::ClientFrame>,
        tonic::Streaming<crate::proto::ServerFrame>,
        Vec<crate::proto::Subscribed>,
    ),
    BenchError,
> {
    use crate::proto::{self, server_frame};
    let err = |e: &dyn std::fmt::Display| BenchError::Server(e.to_string());
    let (frames, rx) = tokio::sync::mpsc::channel(subs.len().max(1));
    let mut stream = crate::client::chat_client(channel.clone(), Some(token))
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| err(&e))?
        .into_inner();
    for (room, after_seq) in subs {
        let sub = proto::Subscribe { room_id: room.clone(), after_seq: *after_seq };
        let frame = proto::ClientFrame { kind: Some(proto::client_frame::Kind::Subscribe(sub)) };
        frames.send(frame).await.map_err(|e| err(&e))?;
    }
    let mut got: Vec<Option<proto::Subscribed>> = vec![None; subs.len()];
    while got.iter().any(Option::is_none) {
        match stream.message().await.map_err(|e| err(&e))? {
            Some(proto::ServerFrame { kind: Some(server_frame::Kind::Subscribed(s)) }) => {
                if let Some(i) = subs.iter().position(|(room, _)| *room == s.room_id) {
                    got[i] = Some(s);
                }
            }
            Some(proto::ServerFrame { kind: Some(server_frame::Kind::Error(e)) }) => {
                return Err(BenchError::Server(format!("subscribe refused: {}", e.message)));
            }
            Some(_) => {}
            None => return Err(BenchError::Server("a stream ended at subscribe".into())),
        }
    }
    Ok((frames, stream, got.into_iter().flatten().collect()))
}

/// Makes sure this process may open `need` file descriptors (raising the soft limit up to the
/// hard one if it must), or refuses the run before any load starts. (One per client
/// connection plus some; a server this run starts is its own process and inherits the limit.)
pub fn ensure_descriptors(need: u64) -> Result<(), BenchError> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit write/read only the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Ok(());
            }
            if lim.rlim_cur < need {
                let raised =
                    libc::rlimit { rlim_cur: lim.rlim_max.min(need as _), rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        if lim.rlim_cur < need {
            return Err(BenchError::Params(format!(
                "this run needs about {need} file descriptors and the limit is {} (hard {});                  raise it with `ulimit -n` or use fewer connections",
                lim.rlim_cur, lim.rlim_max
            )));
        }
    }
    Ok(())
}

/// A process's resident set size now and its peak, in bytes (`VmRSS`, `VmHWM`).
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => PathBuf::from(format!("/proc/{p}/stat")),
        None => Path::new("/proc/self/stat").to_path_buf(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux configuration that matters here.
    Some(Duration::from_millis(ticks * 10))
}

/// The `q` quantile (0..=1) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A progress line on stderr (the report goes to stdout), so a long setup is not mistaken for
/// a hang; the line `running: ...` marks the start of the measured load.
pub fn progress(line: &str) {
    eprintln!("bench: {line}");
}

/// The table line that marks a report partial (empty if the run was not stopped).
pub fn stopped_line(stopped_early: &Option<String>) -> String {
    match stopped_early {
        Some(why) => format!("STOPPED EARLY       {why}: these figures are partial\n"),
        None => String::new(),
    }
}

/// Mebibytes, for tables.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let text = "# TYPE edgechat_catch_ups_total counter\n\
                    edgechat_catch_ups_total 12\n\
                    edgechat_catch_ups_total_other 99\n\
                    edgechat_rpc_total{method=\"a\"} 3\n\
                    edgechat_rpc_total{method=\"b\"} 4\n";
        assert_eq!(counter_in(text, "edgechat_catch_ups_total"), 12);
        assert_eq!(counter_in(text, "edgechat_rpc_total"), 7);
        assert_eq!(counter_in(text, "edgechat_missing_total"), 0);
    }

    #[test]
    fn quantiles_and_proc_figures() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
        let (rss_now, peak) = rss(std::process::id()).unwrap();
        assert!(rss_now > 0 && peak >= rss_now);
        assert!(cpu_time(None).is_some());
    }
}
