//! A node of a cluster: its start (NATS, the stream, the view caught up before it serves)
//! and the [`Replicator`], through which the services' changes go to the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::log::{JetStreamLog, Origin};
use super::view::View;
use super::{ClusterError, NatsOptions};
use crate::change::{Change, Entry};
use crate::store::{Store, StoreError, Writer};

/// Changes of one node appended and not yet answered, at most; beyond it a request waits for
/// a slot (as a single node's requests wait for writer queue space).
pub const MAX_IN_FLIGHT: usize = 4096;
/// How long a request whose change is stored waits for this node's view to apply it before
/// it answers `UNAVAILABLE` (the change stands; a retry is answered as a retry).
pub const APPLY_WAIT: Duration = Duration::from_secs(30);

/// Sends a service's changes to the log and hands back their answers from the view.
pub struct Replicator {
    log: JetStreamLog,
    view: Arc<View>,
    next: AtomicU64,
    slots: Arc<Semaphore>,
}

fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::LogUnavailable(why.to_string())
}

impl Replicator {
    /// A replicator over the log and this node's view of it.
    pub fn new(log: JetStreamLog, view: Arc<View>) -> Replicator {
        Replicator {
            log,
            view,
            next: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Appends `change` (waiting for a slot and for the send, so changes submitted one after
    /// another from one task are stored in that order) and returns the future of its answer:
    /// once JetStream acknowledged it and this node's view applied it.
    pub async fn submit<C: Change>(
        &self,
        change: C,
    ) -> Result<impl Future<Output = Result<C::T, C::E>> + Send + 'static + use<C>, C::E> {
        let permit =
            self.slots.clone().acquire_owned().await.map_err(|_| StoreError::WriterGone)?;
        if let Some(why) = self.view.stopped() {
            return Err(unavailable(format!("this node's view stopped: {why}")).into());
        }
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let answer = self.view.expect(request);
        let entry = Entry { op: Some(change.into()) };
        let ack = match self.log.append(&entry, Origin { node: self.view.node(), request }).await {
            Ok(ack) => ack,
            Err(e) => {
                self.view.forget(request);
                return Err(unavailable(e).into());
            }
        };
        // However this future ends (answered, failed, or dropped by a caller that went
        // away), the view stops holding a reply for it.
        let waiting = Waiting { view: self.view.clone(), request };
        Ok(async move {
            let _slot = permit;
            let _waiting = waiting;
            if let Err(e) = ack.await {
                return Err(unavailable(e).into());
            }
            match tokio::time::timeout(APPLY_WAIT, answer).await {
                Ok(Ok(applied)) => match applied.answer.downcast::<Result<C::T, C::E>>() {
                    Ok(answer) => *answer,
                    Err(_) => {
                        Err(StoreError::Db("a change's answer has another type".into()).into())
                    }
                },
                _ => Err(unavailable(
                    "the change is stored in the log but this node has not applied it yet; \
                         it takes effect, and a retry is answered as a retry",
                )
                .into()),
            }
        })
    }
}

impl Replicator {
    /// Waits (at most `timeout`) until this node's view has applied everything the log holds
    /// now: for a client that saw a seq on another node. With NATS away it returns at once,
    /// and the view answers as far as it got.
    pub async fn catch_up(&self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.log.last_position()).await {
            Ok(Ok(last)) => {
                self.view.wait_applied(last, timeout).await;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the log's end; answering from this node's view")
            }
            Err(_) => tracing::warn!(
                "the log's end did not come in time; answering from this node's view"
            ),
        }
    }
}

/// A request's reply slot in the view, released when dropped.
struct Waiting {
    view: Arc<View>,
    request: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.view.forget(self.request);
    }
}

/// What a cluster node needs to start.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// How to reach NATS.
    pub nats: NatsOptions,
    /// Stream replicas (3 in production; 1 for a test on one server).
    pub replicas: usize,
    /// How long to wait for NATS and the stream at start before giving up.
    pub connect_wait: Duration,
}

/// A started node: its view (tailing), its replicator and its NATS connection.
pub struct Node {
    /// The view.
    pub view: Arc<View>,
    /// Where the services' changes go.
    pub replicator: Arc<Replicator>,
    /// The connection (for presence).
    pub client: async_nats::Client,
}

/// Connects to NATS (waiting at most `connect_wait`, saying so), opens or checks the stream,
/// starts the view on `tasks` and waits until it has applied the whole log as it was at
/// start, so a node never serves an older state than it could. `writer` must be the node's
/// writer (publishing to its hub).
pub async fn start(
    opts: &NodeOptions,
    store: &Store,
    writer: Writer,
    tasks: &crate::tasks::Tasks,
    stop: CancellationToken,
) -> Result<Node, ClusterError> {
    let client = super::connect(&opts.nats, opts.connect_wait).await?;
    let log = JetStreamLog::open(client.clone(), opts.replicas, opts.connect_wait).await?;
    let view = View::new(store, writer)?;
    let last = log.last_position().await?;
    let from = view.applied();
    if from > last {
        return Err(ClusterError::Stream(format!(
            "this node's view has applied the log up to position {from}, but the log ends at \
             {last}: it is another cluster's log, or the stream was recreated; move the \
             database aside to rebuild the view from this log"
        )));
    }
    let health = store.health().clone();
    let running = view.clone();
    let following = log.clone();
    tasks.spawn(async move {
        if let Err(e) = running.run(following, stop).await {
            health.record(format!("applying the cluster's log failed: {e}"));
        }
    });
    if last > from {
        tracing::info!(from, to = last, "catching up with the cluster's log before serving");
        while !view.wait_applied(last, Duration::from_secs(10)).await {
            if let Some(why) = view.stopped() {
                return Err(ClusterError::Corrupt(why));
            }
            tracing::info!(applied = view.applied(), to = last, "still catching up");
        }
    }
    let replicator = Arc::new(Replicator::new(log, view.clone()));
    Ok(Node { view, replicator, client })
}
