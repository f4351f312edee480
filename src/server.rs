//! Assembles and runs the server: initialises the data directory on first start, opens the
//! store and its writer, loads the signing keys, and serves the API on the TCP listener until
//! the shutdown token is cancelled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::api::{self, Api, Health};
use crate::auth::Accounts;
use crate::auth::keys::Keyring;
use crate::chat::ratelimit::Budget;
use crate::config::Config;
use crate::store::{DB_FILE_NAME, Store};
use crate::tasks::Tasks;
use crate::transport::guard::{IdleRule, PeerLimits};
use crate::transport::{ConnLimits, tcp, tls};

/// How long HTTP/3 connections get to close by themselves at shutdown (within the drain).
const H3_CLOSE: Duration = Duration::from_secs(2);
/// How long `wait` waits for the database file to close after everything else has stopped.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Data directory initialisation.
    #[error(transparent)]
    Init(#[from] crate::init::InitError),
    /// Signing keys.
    #[error(transparent)]
    Keys(#[from] crate::auth::keys::KeyError),
    /// Database.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Binding the listener.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP/2 server failed.
    #[error("HTTP/2 server: {0}")]
    Transport(String),
    /// Cluster mode could not start (NATS unreachable, an unfit stream, a view from another
    /// log).
    #[error("cluster mode: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The storage failed while serving (a write or fsync error); nothing after it was
    /// acknowledged. Restart the server (a supervisor does) once the disk is fixed.
    #[error("storage failed: {0}; the server stopped")]
    Storage(String),
}

/// A started server.
pub struct Running {
    /// The bound TCP address (useful with port 0).
    pub addr: SocketAddr,
    api: Api,
    shutdown: CancellationToken,
    /// Serves both transports; ends once every HTTP/2 connection and HTTP/3 connection has
    /// closed after shutdown.
    serving: JoinHandle<Option<Result<(), ServeError>>>,
    endpoint: Option<quinn::Endpoint>,
    drain: Duration,
    /// Where `/metrics` is served, if it is.
    pub metrics_addr: Option<SocketAddr>,
}

impl Running {
    /// The services behind the listener (for the CLI and tests: create users, inspect state).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Asks the server to drain and stop.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server has been asked to stop (or its storage failed), then drains:
    /// at most `limits.shutdown_drain_secs` for clients to finish and every task to end, then
    /// it ends whatever is left (a client that never reads holds nothing past the deadline).
    /// Every commit queued before is finished and the database is closed before this returns.
    /// A storage failure is returned as an error (the process exits non-zero).
    pub async fn wait(mut self) -> Result<(), ServeError> {
        let mut failed = None;
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            // Serving ended by itself: the listener failed.
            r = &mut self.serving => {
                failed = match r {
                    Ok(Some(Err(e))) => Some(e),
                    Err(e) => Some(ServeError::Transport(e.to_string())),
                    _ => None,
                };
                self.shutdown.cancel();
            }
        }
        // Load balancers and supervisors stop sending new clients while we drain.
        self.api.health.set(false).await;
        // A snapshot of a large database takes seconds: it must not hold the file past the
        // drain (the one it replaces stays).
        self.api.messages.store().cancel_snapshots();
        let tasks = self.api.tasks.clone();
        let serving = &mut self.serving;
        let drained = tokio::time::timeout(self.drain, async {
            let served = if serving.is_finished() { None } else { serving.await.ok() };
            tasks.wait().await;
            served
        })
        .await;
        let served = match drained {
            Ok(served) => served.flatten().unwrap_or(Ok(())),
            Err(_) => {
                tracing::warn!(
                    tasks = tasks.len(),
                    deadline_secs = self.drain.as_secs(),
                    "drain deadline passed; closing the connections and streams still open"
                );
                tasks.stop();
                if let Some(endpoint) = &self.endpoint {
                    endpoint.close(0u32.into(), b"server stopped");
                }
                tasks.wait().await;
                Ok(())
            }
        };
        // Every commit queued while serving is finished before we report stopped.
        self.api.messages.writer().flush().await;
        let failure = self.api.messages.store().health().failure();
        let mut closed = self.api.messages.store().closed_watch();
        drop(self.api);
        // hyper's connection tasks drop their handles as their connections end (at the latest
        // when their reads fail after the deadline); the file closes with the last one.
        if tokio::time::timeout(CLOSE_WAIT, closed.closed()).await.is_err() {
            tracing::warn!("the database was still in use {CLOSE_WAIT:?} after shutdown");
        }
        if let Some(why) = failure {
            return Err(ServeError::Storage(why));
        }
        match failed {
            Some(e) => Err(e),
            None => served,
        }
    }
}

/// Every `every`, a snapshot of the database into `<data_dir>/snapshots` (see
/// `store::snapshot`), the newest `backup.keep` kept. A failed snapshot (disk full, say) is
/// logged and the previous ones stay; serving goes on.
async fn snapshots(store: Store, config: Arc<Config>, every: Duration, stop: CancellationToken) {
    let dir = config.data_dir.join(crate::store::snapshot::SNAPSHOT_DIR);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let (store, dir, keep) = (store.clone(), dir.clone(), config.backup.keep);
        let started = std::time::Instant::now();
        let taken = crate::tasks::background(move || {
            store.take_snapshot(&dir, keep, crate::clock::now_ms())
        })
        .await;
        match taken {
            Some(Ok((path, info))) => tracing::info!(
                file = %path.display(),
                events = info.events,
                ms = started.elapsed().as_millis() as u64,
                "snapshot taken"
            ),
            Some(Err(e)) => {
                tracing::error!(error = %e, "snapshot failed; the previous ones are kept")
            }
            None => tracing::error!("snapshot thread failed; the previous snapshots are kept"),
        }
    }
}

/// A database that does not open: say which snapshot is newest and how to restore it. The
/// file itself is left as it is.
fn with_snapshot_hint(e: crate::store::StoreError, data_dir: &std::path::Path) -> ServeError {
    let crate::store::StoreError::Open { path, message } = e else {
        return e.into();
    };
    let snapshots =
        crate::store::snapshot::list(&data_dir.join(crate::store::snapshot::SNAPSHOT_DIR));
    let hint = match snapshots.first() {
        Some((file, _)) => format!(
            "; it was not changed. The newest snapshot is {}: stop here and run `edgechat \
             restore --data-dir {}` to put it in place (the damaged file is kept beside it)",
            file.display(),
            data_dir.display()
        ),
        None => "; it was not changed, and there is no snapshot to restore (restore a backup \
                 with `edgechat restore --from FILE`)"
            .into(),
    };
    ServeError::Store(crate::store::StoreError::Open { path, message: format!("{message}{hint}") })
}

/// Binds TCP, and UDP on the same port when HTTP/3 is on. With port 0 the kernel picks a TCP
/// port whose UDP twin may be taken (by any client socket on the machine), so that case
/// retries with another port; an explicit port fails at once.
fn bind_both(
    listen: SocketAddr,
    quic: Option<quinn::ServerConfig>,
) -> Result<(tokio::net::TcpListener, SocketAddr, Option<quinn::Endpoint>), ServeError> {
    let attempts = if listen.port() == 0 { 50 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let listener =
            tcp::bind(listen).map_err(|source| ServeError::Bind { addr: listen, source })?;
        let addr =
            listener.local_addr().map_err(|source| ServeError::Bind { addr: listen, source })?;
        let Some(quic) = &quic else { return Ok((listener, addr, None)) };
        match crate::transport::h3::bind_endpoint(addr, quic.clone()) {
            Ok(endpoint) => return Ok((listener, addr, Some(endpoint))),
            Err(source) => last_err = Some(ServeError::Bind { addr, source }),
        }
    }
    Err(last_err.unwrap_or(ServeError::Bind {
        addr: listen,
        source: std::io::Error::other("no port free for both TCP and UDP"),
    }))
}

/// Starts serving `config`; returns once the listener is bound.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    let config = Arc::new(config);
    let report =
        crate::init::init_data_dir(&config.data_dir, &config.hostnames, crate::clock::now_ms())?;
    for path in &report.created {
        tracing::info!(path = %path.display(), "initialised");
    }
    let mut keys = Keyring::load(&config.data_dir.join("keys"))?;
    keys.trust(&config.auth.trusted_keys)?;
    let jwks = keys.jwks().to_string();
    // Listeners before the database: a start that fails to bind leaves nothing running (no
    // writer thread holding the file while a retry opens it).
    let quic_config = match &config.quic {
        Some(limits) => Some(crate::transport::h3::quic_server_config(&config.tls, limits)?),
        None => None,
    };
    let tcp_tls = match config.tls.insecure_plaintext {
        true => None,
        false => Some(tls::server_config(&config.tls, &[b"h2", b"http/1.1"])?),
    };
    let (listener, addr, endpoint) = bind_both(config.listen, quic_config)?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => {
            Some(crate::metrics::bind(at).map_err(|source| ServeError::Bind { addr: at, source })?)
        }
        None => None,
    };
    let store = Store::open(&config.data_dir.join(DB_FILE_NAME), config.store_cache_bytes)
        .map_err(|e| with_snapshot_hint(e, &config.data_dir))?;
    let hub = crate::chat::Hub::new();
    let publisher = hub.clone();
    let writer = store.start_writer(Box::new(move |committed| publisher.publish(committed)));
    let shutdown = CancellationToken::new();
    let tasks = Tasks::new();
    let (exec, shared) = match &config.cluster {
        None => (crate::change::Exec::local(writer.clone()), None),
        Some(c) => {
            let opts = crate::cluster::node::NodeOptions {
                nats: crate::cluster::NatsOptions {
                    urls: c.nats_urls.clone(),
                    credentials: c.credentials.clone(),
                    ca: c.ca.clone(),
                    client_cert: c.client_cert.clone(),
                    name: c.node_name.clone(),
                },
                replicas: c.replicas,
                connect_wait: c.connect_wait,
            };
            let started = crate::cluster::node::start(
                &opts,
                &store,
                writer.clone(),
                &tasks,
                shutdown.clone(),
            )
            .await;
            let node = match started {
                Ok(node) => node,
                Err(e) => {
                    shutdown.cancel();
                    return Err(e.into());
                }
            };
            tracing::info!(urls = %c.nats_urls.join(","), applied = node.view.applied(), "cluster node: changes go through the log on NATS JetStream");
            let link = (node.client, node.view.node());
            (crate::change::Exec::cluster(writer.clone(), node.replicator), Some(link))
        }
    };
    let accounts = Accounts::new(config.auth.clone(), keys, store.clone(), exec.clone());
    let l = &config.limits;
    // One budget for every change that is not a send, whichever service makes it.
    let budget = Budget::new(l.action_rate_per_sec, l.action_burst);
    let rooms = crate::rooms::Rooms::new(
        store.clone(),
        exec.clone(),
        budget.clone(),
        config.members_may_create_private,
        l.max_notifications_per_user,
    );
    let messages = crate::chat::Messages::new(
        store.clone(),
        exec.clone(),
        l.max_text_bytes,
        l.send_rate_per_sec,
        l.send_burst,
        budget.clone(),
        l.max_notifications_per_user,
    );
    let (remote, outbox) = match shared.is_some() {
        true => {
            let (book, outbox) = crate::cluster::presence::link();
            (Some(book), Some(outbox))
        }
        false => (None, None),
    };
    let presence = crate::presence::Presence::start_shared(
        l.presence_grace,
        hub.clone(),
        store.clone(),
        exec.clone(),
        remote,
        shutdown.clone(),
        &tasks,
    );
    if let (Some((client, node)), Some(outbox)) = (shared, outbox) {
        let run =
            crate::cluster::presence::run(client, presence.clone(), node, outbox, shutdown.clone());
        tasks.spawn(run);
    }
    let storage = store.health().clone();
    let search =
        crate::chat::search::Search::new(store.clone(), l.search_rate_per_sec, l.search_burst);
    let attachments = crate::chat::attachments::Attachments::new(
        store.clone(),
        exec.clone(),
        config.attachments,
        budget.clone(),
    );
    let notifications = crate::notifications::Notifications::new(store, exec, budget);
    let typing = Arc::new(std::sync::Mutex::new(crate::chat::ratelimit::TypingGate::new(
        Duration::from_secs(2),
    )));
    let peers = PeerLimits::new(l.max_connections_per_ip);
    let (health, health_service) = Health::new();
    health.set(true).await;
    let api = Api {
        accounts,
        rooms,
        messages,
        search,
        attachments,
        hub,
        presence,
        notifications,
        typing,
        listeners: Default::default(),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        health: health.clone(),
        backup_slot: Arc::new(tokio::sync::Semaphore::new(1)),
        peers: peers.clone(),
        config: config.clone(),
    };
    let routes = api::routes(api.clone(), health_service);
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    if let Some(listener) = metrics_listener {
        let api = api.clone();
        let gauges = move || {
            let snapshots = crate::store::snapshot::list(
                &api.config.data_dir.join(crate::store::snapshot::SNAPSHOT_DIR),
            );
            let now = crate::clock::now_ms();
            crate::metrics::Gauges {
                connections: api.peers.connections(),
                streams: api.hub.open_streams_total(),
                online: api.presence.online_count(),
                database_bytes: std::fs::metadata(api.messages.store().path())
                    .map(|m| m.len())
                    .unwrap_or(0),
                snapshot: snapshots.first().map(|(path, at)| {
                    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    (bytes, Duration::from_millis((now - at).max(0) as u64))
                }),
            }
        };
        tracing::info!(addr = ?metrics_addr, "serving Prometheus metrics at /metrics");
        let site = crate::metrics::Site { gauges, jwks };
        tasks.spawn(crate::metrics::serve(listener, site, tasks.clone(), shutdown.clone()));
    }
    tasks.spawn(crate::retention::run(
        api.messages.exec().clone(),
        config.retention,
        config.attachments.unposted,
        config.cluster.is_some(),
        shutdown.clone(),
    ));
    if let Some(every) = config.backup.interval {
        let store = api.messages.store().clone();
        tasks.spawn(snapshots(store, config.clone(), every, shutdown.clone()));
    }
    // A failed write or fsync is final for this process: report it and stop, so that the
    // supervisor restarts us, instead of answering every write UNAVAILABLE forever.
    let stop = shutdown.clone();
    tasks.spawn(async move {
        tokio::select! {
            why = storage.failed() => {
                tracing::error!(failure = %why, "storage failed: NOT_SERVING, draining, exiting");
                health.set(false).await;
                stop.cancel();
            }
            () = stop.cancelled() => {}
        }
    });

    let limits = &config.limits;
    let conn_limits = ConnLimits {
        peers: peers.clone(),
        idle: IdleRule { auth_timeout: limits.auth_timeout, idle_timeout: limits.idle_connection },
    };
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .http2_max_header_list_size(limits.max_header_bytes)
        .accept_http1(true)
        .layer(crate::web::WebLayer);
    let router = builder.add_routes(routes.clone());
    let signal = shutdown.clone();
    let h3 = match (&config.quic, &endpoint) {
        (Some(limits), Some(endpoint)) => {
            let serve = crate::transport::h3::serve_h3(
                endpoint.clone(),
                routes.clone(),
                limits.clone(),
                conn_limits.clone(),
                shutdown.clone(),
                tasks.clone(),
            );
            tracing::info!(%addr, "edgechat serving gRPC over HTTP/3 (QUIC, UDP)");
            Some((tasks.spawn(serve), endpoint.clone()))
        }
        _ => None,
    };
    let tcp = if let Some(tls) = tcp_tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let rx = tcp::accept_tls(
            listener,
            acceptor,
            limits.tls_handshake_timeout,
            limits.max_connections,
            conn_limits,
            shutdown.clone(),
            &tasks,
        );
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), signal.cancelled_owned())
                .await
                .map_err(|e| ServeError::Transport(e.to_string()))
        })
    } else {
        tracing::warn!(
            %addr,
            "serving PLAIN-TEXT HTTP/2 (--insecure-plaintext): only behind a TLS-terminating proxy"
        );
        let rx = tcp::accept_plain(
            listener,
            limits.max_connections,
            conn_limits,
            shutdown.clone(),
            &tasks,
        );
        tasks.spawn(async move {
            router
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), signal.cancelled_owned())
                .await
                .map_err(|e| ServeError::Transport(e.to_string()))
        })
    };
    let serving = tasks.spawn(async move {
        let served = match tcp.await {
            Ok(Some(r)) => r,
            Ok(None) => Ok(()),
            Err(e) => Err(ServeError::Transport(e.to_string())),
        };
        if let Some((accepting, endpoint)) = h3 {
            let _ = accepting.await;
            // Connections got GOAWAY and their streams said GoingAway; give them a moment to
            // close by themselves, then close what is left (a client that keeps an idle QUIC
            // connection open would otherwise hold the server, and its database, until the
            // idle timeout).
            let _ = tokio::time::timeout(H3_CLOSE, endpoint.wait_idle()).await;
            endpoint.close(0u32.into(), b"server stopped");
            endpoint.wait_idle().await;
        }
        served
    });
    tracing::info!(%addr, client_auth = ?config.tls.client_auth, "edgechat serving gRPC over HTTP/2");
    Ok(Running {
        api,
        addr,
        shutdown,
        serving,
        endpoint,
        drain: config.limits.shutdown_drain,
        metrics_addr,
    })
}
