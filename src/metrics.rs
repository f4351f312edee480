//! Prometheus metrics, on their own address (`[metrics] listen`, `--metrics-listen`; off by
//! default): `GET /metrics` answers the text exposition format.
//!
//! Recording goes through the `metrics` facade into one process-wide recorder. Hot paths (every
//! delivery, every commit) use handles registered once ([`hot`]): an increment is one atomic
//! add, no lookup. Labels come only from fixed sets (method names from the compiled contract,
//! status code names, a few failure reasons), so no client can grow the label space. Gauges
//! that are cheap to read (connections, streams, presence, file sizes) are set at scrape time.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// The process-wide recorder's handle (installed on first use).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ])
            .expect("constant buckets are valid")
            // A count, not seconds: the writer takes up to 1,024 jobs per commit.
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full("edgechat_commit_batch_size".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            )
            .expect("constant buckets are valid");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding program): then ours only
        // renders what it records through its own handle, which is nothing; say so once.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        handle
    })
}

/// Handles for the hot paths.
pub struct Hot {
    /// Room events handed to a stream.
    pub deliveries: Counter,
    /// Catch-ups of a follower from the store (a gap, a lag, a replay).
    pub catch_ups: Counter,
    /// Streams closed because their client did not read for too long.
    pub slow_consumer_disconnects: Counter,
    /// Durable commits.
    pub commits: Counter,
    /// Chat messages committed.
    pub messages_committed: Counter,
    /// Jobs per commit.
    pub commit_batch: Histogram,
    /// Seconds per commit (the transaction and its fsync).
    pub commit_seconds: Histogram,
}

/// The hot-path handles (registering the recorder on first use).
pub fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        handle();
        Hot {
            deliveries: metrics::counter!("edgechat_fanout_deliveries_total"),
            catch_ups: metrics::counter!("edgechat_catch_ups_total"),
            slow_consumer_disconnects: metrics::counter!(
                "edgechat_slow_consumer_disconnects_total"
            ),
            commits: metrics::counter!("edgechat_commits_total"),
            messages_committed: metrics::counter!("edgechat_messages_committed_total"),
            commit_batch: metrics::histogram!("edgechat_commit_batch_size"),
            commit_seconds: metrics::histogram!("edgechat_commit_seconds"),
        }
    })
}

/// Every RPC path of the compiled contract (and health, reflection): the only method labels.
fn known_methods() -> &'static HashSet<String> {
    static KNOWN: OnceLock<HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = HashSet::new();
        for set in [crate::proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            let Ok(set) = <prost_types::FileDescriptorSet as prost::Message>::decode(set) else {
                continue;
            };
            for file in set.file {
                for service in &file.service {
                    for method in &service.method {
                        known.insert(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        known
    })
}

/// The label for a request path: itself if it is one of ours, else `other`.
pub fn method_label(path: &str) -> String {
    if known_methods().contains(path) { path.to_string() } else { "other".to_string() }
}

/// Records one finished RPC.
pub fn rpc_done(method: &str, code: &'static str, took: Duration) {
    metrics::counter!("edgechat_rpc_total", "method" => method.to_string(), "code" => code)
        .increment(1);
    metrics::histogram!("edgechat_rpc_seconds", "method" => method.to_string())
        .record(took.as_secs_f64());
}

/// Records a refused authentication, by reason (`missing`, `malformed`, `invalid`, `binding`).
pub fn auth_failed(reason: &'static str) {
    metrics::counter!("edgechat_auth_failures_total", "reason" => reason).increment(1);
}

/// What a scrape reads at that moment.
pub struct Gauges {
    /// Open connections, both transports.
    pub connections: usize,
    /// Open `Connect` streams.
    pub streams: usize,
    /// Users online (or in their grace period).
    pub online: usize,
    /// The database file's size.
    pub database_bytes: u64,
    /// The newest snapshot's size and age, if there is one.
    pub snapshot: Option<(u64, Duration)>,
}

/// The exposition text, with the gauges set from `gauges` first.
pub fn render(gauges: &Gauges) -> String {
    let h = handle();
    metrics::gauge!("edgechat_connections_open").set(gauges.connections as f64);
    metrics::gauge!("edgechat_streams_open").set(gauges.streams as f64);
    metrics::gauge!("edgechat_presence_online").set(gauges.online as f64);
    metrics::gauge!("edgechat_database_bytes").set(gauges.database_bytes as f64);
    if let Some((bytes, age)) = gauges.snapshot {
        metrics::gauge!("edgechat_snapshot_bytes").set(bytes as f64);
        metrics::gauge!("edgechat_snapshot_age_seconds").set(age.as_secs_f64());
    }
    h.run_upkeep();
    h.render()
}

/// What the metrics listener serves.
pub struct Site<G> {
    /// Gauges read at each scrape.
    pub gauges: G,
    /// The JWKS document of the keys tokens are verified with (`Keyring::jwks`), served at
    /// `/.well-known/jwks.json` for services that verify edgechat's tokens.
    pub jwks: String,
}

/// The path of the JWKS document on the metrics listener.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Serves `GET /metrics` and `GET /.well-known/jwks.json` on `listener` until `stop`: one short
/// request per connection, a few at a time (each reads at most 8 KiB within 5 s).
pub async fn serve<G: Fn() -> Gauges + Send + Sync + 'static>(
    listener: tokio::net::TcpListener,
    site: Site<G>,
    tasks: crate::tasks::Tasks,
    stop: CancellationToken,
) {
    let site = std::sync::Arc::new(site);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let Ok((mut conn, _)) = accepted else { continue };
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let site = site.clone();
        tasks.spawn(async move {
            let _slot = slot;
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return false,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        return true;
                    }
                }
                false
            })
            .await;
            if !matches!(head, Ok(true)) {
                return;
            }
            let target = |path: &str| {
                let line = format!("GET {path}");
                buf.starts_with(format!("{line} ").as_bytes())
                    || buf.starts_with(format!("{line}?").as_bytes())
            };
            let (status, kind, body) = if target("/metrics") {
                ("200 OK", "text/plain; version=0.0.4", render(&(site.gauges)()))
            } else if target(JWKS_PATH) {
                ("200 OK", "application/json", site.jwks.clone())
            } else {
                let body = format!("only GET /metrics and GET {JWKS_PATH} are served here\n");
                ("404 Not Found", "text/plain", body)
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Binds the metrics address.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(std)
}
