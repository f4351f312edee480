//! Cluster mode on NATS JetStream (docs/cluster.md; the research is SCALE-OUT.md): every
//! change (`crate::change`) goes to a replicated JetStream stream first, and each node's redb
//! file is a view that applies the stream in order, rebuilt from the stream when lost. This
//! module is the NATS side, kept thin: `log` (the stream: create or check it, append, read,
//! follow), `view` (the task that applies the log to a node's store through its writer, so
//! local subscribers get events from the hub as in single-node mode), `node` (a node's
//! start, and the `Replicator` that sends a service's changes to the log and waits for their
//! answers from the view) and `presence` (who is online on the other nodes, over core NATS).

pub mod log;
pub mod node;
pub mod presence;
pub mod view;

use std::path::PathBuf;
use std::time::Duration;

/// Why cluster mode cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server answered (yet).
    #[error("NATS is unreachable at {urls}: {message}")]
    Unreachable {
        /// The servers tried.
        urls: String,
        /// The last attempt's error.
        message: String,
    },
    /// A setting or file edgechat was given is wrong.
    #[error("{0}")]
    Config(String),
    /// The stream is missing and could not be made, or is set up so it breaks a guarantee.
    #[error("{0}")]
    Stream(String),
    /// NATS did not answer a request in time (no quorum, a leader election, a lost link).
    #[error("{0}")]
    Unavailable(String),
    /// The log holds an entry this node cannot read as a change.
    #[error("{0}")]
    Corrupt(String),
    /// The view's own storage failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// How to reach NATS.
#[derive(Debug, Clone, Default)]
pub struct NatsOptions {
    /// `nats://HOST:PORT` (or `tls://`) of one or more servers of the cluster; the client
    /// learns the others from them.
    pub urls: Vec<String>,
    /// A `.creds` file (user JWT and NKey seed), for servers with decentralised auth.
    pub credentials: Option<PathBuf>,
    /// CA certificates to verify the servers with (TLS).
    pub ca: Option<PathBuf>,
    /// A client certificate and key, for servers that require one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// This node's name, shown in the servers' connection lists.
    pub name: String,
}

/// How often the NATS client pings its server; it reconnects (to another server of the
/// cluster) after two unanswered pings.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// Parses `nats://a:4222,b:4223` (a bare `HOST:PORT` gets `nats://`) into URLs.
pub fn parse_urls(list: &str) -> Result<Vec<String>, ClusterError> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let url = if part.contains("://") { part.to_string() } else { format!("nats://{part}") };
        url.parse::<async_nats::ServerAddr>()
            .map_err(|e| ClusterError::Config(format!("NATS server `{part}`: {e}")))?;
        out.push(url);
    }
    if out.is_empty() {
        return Err(ClusterError::Config("no NATS server given (nats://HOST:PORT,...)".into()));
    }
    Ok(out)
}

/// Connects to NATS, trying for at most `wait` (each attempt reported at `warn`), so a node
/// started before its NATS servers comes up when they do, and one pointed at the wrong
/// place says so instead of hanging. Once connected the client reconnects by itself.
pub async fn connect(
    opts: &NatsOptions,
    wait: Duration,
) -> Result<async_nats::Client, ClusterError> {
    let urls = opts.urls.join(",");
    let addrs: Vec<async_nats::ServerAddr> = opts
        .urls
        .iter()
        .map(|u| u.parse().map_err(|e| ClusterError::Config(format!("NATS server `{u}`: {e}"))))
        .collect::<Result<_, _>>()?;
    let file_err = |what: &str, p: &PathBuf, e: &dyn std::fmt::Display| {
        ClusterError::Config(format!("NATS {what} {}: {e}", p.display()))
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut o = async_nats::ConnectOptions::new()
            .name(&opts.name)
            .connection_timeout(Duration::from_secs(2))
            // A server that stops answering (paused, partitioned) with its socket open is
            // noticed after a few missed pings; the client's default of 60 s would leave the
            // node's sends stuck on it that long.
            .ping_interval(PING_INTERVAL)
            // Unbounded reconnects: a node outlives any NATS outage and says so in health.
            .max_reconnects(None);
        if let Some(p) = &opts.credentials {
            o = o.credentials_file(p).await.map_err(|e| file_err("credentials", p, &e))?;
        }
        if let Some(p) = &opts.ca {
            std::fs::metadata(p).map_err(|e| file_err("CA file", p, &e))?;
            o = o.add_root_certificates(p.clone()).require_tls(true);
        }
        if let Some((c, k)) = &opts.client_cert {
            std::fs::metadata(c).map_err(|e| file_err("client certificate", c, &e))?;
            std::fs::metadata(k).map_err(|e| file_err("client key", k, &e))?;
            o = o.add_client_certificate(c.clone(), k.clone());
        }
        match o.connect(addrs.clone()).await {
            Ok(client) => return Ok(client),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(ClusterError::Unreachable { urls, message: e.to_string() });
            }
            Err(e) => {
                tracing::warn!(%urls, attempt, error = %e, "NATS not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
