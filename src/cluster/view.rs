//! A node's view of the log: the task that tails the stream into the node's store. Each
//! entry is a change (`change::Entry`) applied exactly as a single node applies it, a chunk of
//! whatever has arrived per writer job (group commit, as for local writes), with the applied
//! position beside it in the same transaction. The writer publishes what the changes emit to
//! the hub, so live fan-out, History and resume read the view exactly as in single-node
//! mode. The answer of a change this node appended goes back to the request waiting for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::log::{JetStreamLog, Logged};
use crate::change::Applied;
use crate::store::cluster as store_cluster;
use crate::store::{Store, StoreError, Writer};

/// Entries applied per writer job at most (one transaction; a catch-up of a long log is
/// many jobs, each bounded).
const CHUNK: usize = 1024;

/// How long the consumer may deliver nothing before the view asks the log whether it has
/// more (and follows it again if so).
const STALL_CHECK: Duration = Duration::from_secs(2);

/// The view of one node.
pub struct View {
    writer: Writer,
    /// This process among the log's writers (random per start, so an answer is never handed
    /// to a request of an earlier run).
    node: u64,
    /// The last log position applied (durably): waiters for a position watch it.
    applied: watch::Sender<u64>,
    /// Requests of this node waiting for their change to be applied: request -> reply. At
    /// most one entry per request in flight, which `node::Replicator` bounds.
    waiting: Mutex<HashMap<u64, oneshot::Sender<Applied>>>,
    /// Why the view stopped (an entry it cannot apply): it applies nothing more, and the
    /// node takes no more changes, rather than serve a state that differs from the others.
    stopped: Mutex<Option<String>>,
}

impl View {
    /// The view over a node's store, resuming after what the store holds.
    pub fn new(store: &Store, writer: Writer) -> Result<Arc<View>, StoreError> {
        let applied = store_cluster::applied(&store.read()?)?;
        Ok(Arc::new(View {
            writer,
            node: rand::random(),
            applied: watch::Sender::new(applied),
            waiting: Mutex::new(HashMap::new()),
            stopped: Mutex::new(None),
        }))
    }

    /// This process's id among the log's writers.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// The last log position applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the view has applied log position `at`, for at most `timeout`; whether it
    /// got there.
    pub async fn wait_applied(&self, at: u64, timeout: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&a| a >= at)).await.is_ok_and(|r| r.is_ok())
    }

    /// Why the view stopped, if it did.
    pub fn stopped(&self) -> Option<String> {
        self.stopped.lock().expect("view stopped").clone()
    }

    /// Registers `request` (of this node): its change's answer comes out of the receiver
    /// once the view has applied it.
    pub fn expect(&self, request: u64) -> oneshot::Receiver<Applied> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("waiting requests").insert(request, tx);
        rx
    }

    /// Drops the wait for `request` (its append failed, or its caller gave up).
    pub fn forget(&self, request: u64) {
        self.waiting.lock().expect("waiting requests").remove(&request);
    }

    /// Applies entries in log order, in one writer job. Entries at or below the applied
    /// position (redeliveries) are skipped; a refused change keeps its refusal (it wrote and
    /// announced nothing) and the next goes on, exactly as on every other node.
    pub async fn apply(&self, entries: Vec<Logged>) -> Result<(), StoreError> {
        let Some(last_at) = entries.last().map(|e| e.at) else { return Ok(()) };
        let me = self.node;
        let answers = self
            .writer
            .write(move |ctx| {
                let from = store_cluster::applied(&**ctx)?;
                let mut answers = Vec::new();
                for Logged { at, origin, entry } in entries {
                    let Some(op) = entry.op else { continue };
                    if at <= from {
                        continue;
                    }
                    let mark = ctx.mark();
                    let applied = op.apply(ctx)?;
                    if applied.refused {
                        ctx.drop_since(mark);
                    }
                    if let Some(o) = origin.filter(|o| o.node == me) {
                        answers.push((o.request, applied));
                    }
                }
                if last_at > from {
                    store_cluster::set_applied(ctx, last_at)?;
                }
                Ok(Ok::<_, StoreError>(answers))
            })
            .await?;
        {
            let mut waiting = self.waiting.lock().expect("waiting requests");
            for (request, applied) in answers {
                if let Some(reply) = waiting.remove(&request) {
                    let _ = reply.send(applied);
                }
            }
        }
        self.applied.send_if_modified(|a| {
            let moved = last_at > *a;
            *a = (*a).max(last_at);
            moved
        });
        Ok(())
    }

    /// Tails the log into the view until `stop`: re-tails from the applied position after
    /// any error (a NATS outage, a leader change the ordered consumer did not ride out),
    /// backing off 100 ms .. 5 s. An entry that does not decode stops the view for good
    /// (logged at `error`); a storage failure ends it with the error (the node stops).
    pub async fn run(
        self: Arc<Self>,
        log: JetStreamLog,
        stop: CancellationToken,
    ) -> Result<(), StoreError> {
        let mut backoff = Duration::from_millis(100);
        while !stop.is_cancelled() {
            match log.tail(self.applied()).await {
                Ok(tail) => {
                    let mut chunks = std::pin::pin!(tail.ready_chunks(CHUNK));
                    loop {
                        let chunk = tokio::select! {
                            c = tokio::time::timeout(STALL_CHECK, chunks.next()) => c,
                            () = stop.cancelled() => return Ok(()),
                        };
                        let Ok(chunk) = chunk else {
                            // Nothing for a while: right for an idle log; otherwise the
                            // consumer lost its server without saying so (seen after a
                            // stream-leader kill: acks went on, nothing came for 30 s).
                            match log.last_position().await {
                                Ok(last) if last > self.applied() => {
                                    tracing::warn!(
                                        applied = self.applied(),
                                        last,
                                        "the log's consumer stalled; following it again"
                                    );
                                    break;
                                }
                                _ => continue,
                            }
                        };
                        let Some(chunk) = chunk else {
                            tracing::warn!("the log's consumer ended; following it again");
                            break;
                        };
                        let mut ok = Vec::with_capacity(chunk.len());
                        let mut failed = None;
                        for item in chunk {
                            match item {
                                Ok(l) => ok.push(l),
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        if !ok.is_empty() {
                            backoff = Duration::from_millis(100);
                        }
                        self.apply(ok).await?;
                        match failed {
                            None => continue,
                            Some(e @ ClusterError::Corrupt(_)) => {
                                tracing::error!(error = %e, "an entry of the log cannot be applied; this node's view stops there and the node takes no more changes");
                                *self.stopped.lock().expect("view stopped") = Some(e.to_string());
                                stop.cancelled().await;
                                return Ok(());
                            }
                            Some(e) => {
                                tracing::warn!(error = %e, "following the log failed; following it again");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow the log yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return Ok(()),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        Ok(())
    }
}
