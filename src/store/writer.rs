//! The single writer: one thread owns every write transaction and commits whatever jobs are
//! waiting in one transaction (group commit), so N concurrent writers pay about one fsync.
//!
//! A job is a closure run inside the shared transaction, given a [`WriteCtx`]: the transaction
//! and a place to emit the room events it appended. After the commit is durable, the batch's
//! events go to the publisher (the fan-out hub) in commit order, then the jobs' results are
//! released: no subscriber sees an event and no sender gets an ack before it is on disk.
//! Invariants a job must keep:
//! - it does all its checks before its first write, so a job that returns a domain error has
//!   written nothing (later jobs in the batch see the transaction as if it never ran);
//! - it never blocks or does slow work (hash passwords before submitting).
//!
//! (A job may also write on purpose and still refuse: presenting a spent refresh token
//! revokes its family and answers UNAUTHENTICATED; its writes are committed with the batch.)
//!
//! A storage error inside any job, or a failed commit, fails every job of that batch: none of
//! them is acknowledged, which is the safe answer (the client retries with the same
//! `client_message_id`). Results are released only after the commit is durable, in job order.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Db, StorageHealth, StoreError};
use crate::proto::{RoomEvent, ServerFrame};

/// What a committed batch announces: room events (in seq order per room), frames for
/// particular users (notifications) and users whose tokens were revoked. Handed to the
/// publisher only after the commit, by the writer itself: what a job committed is announced
/// even if the client that asked for it has gone away.
#[derive(Debug, Default)]
pub struct Committed {
    /// Room events, in commit order.
    pub events: Vec<RoomEvent>,
    /// (user id, frame) to push to every open stream of that user.
    pub signals: Vec<(String, ServerFrame)>,
    /// (user id, why): every open stream of that user must end with UNAUTHENTICATED.
    pub revoked: Vec<(String, &'static str)>,
}

impl Committed {
    fn len(&self) -> (usize, usize, usize) {
        (self.events.len(), self.signals.len(), self.revoked.len())
    }

    fn truncate(&mut self, (events, signals, revoked): (usize, usize, usize)) {
        self.events.truncate(events);
        self.signals.truncate(signals);
        self.revoked.truncate(revoked);
    }

    fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }

    fn clear(&mut self) {
        self.truncate((0, 0, 0));
    }
}

/// Receives every committed batch, on the writer thread. It must not block (the hub hands
/// events to bounded rings).
pub type Publisher = Box<dyn FnMut(&Committed) + Send>;

/// What a job works with: the batch's write transaction and what the batch will announce.
pub struct WriteCtx<'a> {
    tx: &'a redb::WriteTransaction,
    out: &'a mut Committed,
}

impl WriteCtx<'_> {
    /// Queues a committed-to-be event for the publisher.
    pub fn emit(&mut self, event: RoomEvent) {
        self.out.events.push(event);
    }

    /// Queues a frame for every open stream of `user_id`, sent after the commit.
    pub fn signal(&mut self, user_id: &str, frame: ServerFrame) {
        self.out.signals.push((user_id.to_string(), frame));
    }

    /// Ends every open stream of `user_id` after the commit (their token version changed).
    pub fn revoke(&mut self, user_id: &str, why: &'static str) {
        self.out.revoked.push((user_id.to_string(), why));
    }

    /// How much the batch announces so far: a job that runs several changes (a node applying
    /// the log) takes a mark before each and drops what a refused one emitted.
    pub fn mark(&self) -> Mark {
        Mark(self.out.len())
    }

    /// Drops the events, signals and revocations queued since `mark`.
    pub fn drop_since(&mut self, mark: Mark) {
        self.out.truncate(mark.0);
    }
}

/// A point in a batch's announcements ([`WriteCtx::mark`]).
#[derive(Debug, Clone, Copy)]
pub struct Mark((usize, usize, usize));

impl std::ops::Deref for WriteCtx<'_> {
    type Target = redb::WriteTransaction;
    fn deref(&self) -> &redb::WriteTransaction {
        self.tx
    }
}

/// Jobs waiting for the writer; when full, submitters wait (backpressure on senders).
const QUEUE_BOUND: usize = 4096;
/// At most this many jobs share one transaction, so one commit's latency stays bounded.
const MAX_BATCH: usize = 1024;

/// A job erased to a trait object so the queue can carry jobs of any result type.
trait Job: Send {
    /// Runs inside the batch's transaction. `Err` only for storage failures.
    fn apply(&mut self, ctx: &mut WriteCtx<'_>) -> Result<(), StoreError>;
    /// Runs after the batch committed (`Ok`) or failed (`Err`), on the writer thread.
    fn finish(self: Box<Self>, committed: Result<(), &StoreError>);
}

/// Handle to the writer thread. Cheap to clone; the thread stops when every handle is dropped,
/// after committing what was already queued.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
}

/// What a job closure returns: the job's own outcome, or a storage error that aborts the batch.
pub type JobResult<T, E> = Result<Result<T, E>, StoreError>;

struct ClosureJob<F, T, E> {
    run: Option<F>,
    outcome: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for ClosureJob<F, T, E>
where
    F: FnOnce(&mut WriteCtx<'_>) -> JobResult<T, E> + Send,
    T: Send,
    E: From<StoreError> + Send,
{
    fn apply(&mut self, ctx: &mut WriteCtx<'_>) -> Result<(), StoreError> {
        let Some(run) = self.run.take() else {
            return Ok(());
        };
        let emitted_before = ctx.out.len();
        // A panicking job (a bug) fails its batch, unacknowledged, instead of killing the
        // one writer thread for good.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(ctx)))
            .map_err(|_| {
                StoreError::Db("a write job panicked; the batch was not committed".into())
            })??;
        if outcome.is_err() {
            // A refused job wrote nothing (its checks come first); it publishes nothing either.
            ctx.out.truncate(emitted_before);
        }
        self.outcome = Some(outcome);
        Ok(())
    }

    fn finish(self: Box<Self>, committed: Result<(), &StoreError>) {
        let result = match (committed, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            (Err(e), _) => Err(E::from(StoreError::Db(e.to_string()))),
            (Ok(()), None) => Err(E::from(StoreError::Db("job did not run".into()))),
        };
        // The submitter may have gone away (client cancelled); the write stands regardless.
        let _ = self.reply.send(result);
    }
}

impl Writer {
    pub(super) fn start(db: Arc<Db>, health: Arc<StorageHealth>, publisher: Publisher) -> Writer {
        let (queue, rx) = mpsc::channel(QUEUE_BOUND);
        std::thread::Builder::new()
            .name("edgechat-writer".into())
            .spawn(move || run(&db, &health, rx, publisher))
            .expect("spawning the writer thread");
        Writer { queue }
    }

    /// Runs `job` inside the next group transaction and returns its result once that
    /// transaction is durably committed.
    pub async fn write<T, E, F>(&self, job: F) -> Result<T, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> JobResult<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.submit(job).await?.await
    }

    /// Waits until every job queued before this call is committed (or refused).
    pub async fn flush(&self) {
        let _ = self.write(|_| Ok(Ok::<(), StoreError>(()))).await;
    }

    /// Queues `job` (waiting only for queue space) and returns a future of its committed
    /// result. Jobs run in the order they were queued, so a stream that queues its sends one
    /// after another gets seqs in that order while their commits are still in flight.
    pub async fn submit<T, E, F>(
        &self,
        job: F,
    ) -> Result<impl Future<Output = Result<T, E>> + Send + 'static, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> JobResult<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(ClosureJob { run: Some(job), outcome: None, reply });
        self.queue.send(job).await.map_err(|_| E::from(StoreError::WriterGone))?;
        Ok(async move { rx.await.map_err(|_| E::from(StoreError::WriterGone))? })
    }
}

fn run(
    db: &Db,
    health: &StorageHealth,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    mut publisher: Publisher,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut out = Committed::default();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let result = commit_batch(db, health, &mut batch, &mut out);
        match &result {
            Ok(()) if !out.is_empty() => {
                // The batch is durable: a panicking publisher (a bug) must not take the writer
                // down with it, or every later write would fail.
                let published = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    publisher(&out);
                }));
                if published.is_err() {
                    tracing::error!(
                        events = out.events.len(),
                        "the publisher panicked after a durable commit; live subscribers catch \
                         up from the store"
                    );
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, jobs = batch.len(), "commit failed; batch refused")
            }
        }
        out.clear();
        for job in batch.drain(..) {
            job.finish(result.as_ref().map(|_| ()));
        }
    }
}

/// Runs the batch in one transaction and commits it. A transaction that cannot begin or
/// commit means the storage failed (redb refuses all later I/O after a failed write or
/// fsync): that is recorded in `health`, which stops the server.
fn commit_batch(
    db: &Db,
    health: &StorageHealth,
    batch: &mut [Box<dyn Job>],
    out: &mut Committed,
) -> Result<(), StoreError> {
    let storage = |e: &dyn std::fmt::Display| {
        health.record(format!("commit failed: {e}"));
        StoreError::Db(e.to_string())
    };
    let started = std::time::Instant::now();
    let mut tx = db.begin_write().map_err(|e| storage(&e))?;
    // Quick repair: each commit also saves the allocator state (and commits in two phases),
    // so opening the file after a crash or power loss takes milliseconds instead of a walk
    // over the whole database (1.5 s and 80 MB of RSS at 764k messages). Costs commit time;
    // docs/PERFORMANCE.md has both figures.
    tx.set_quick_repair(true);
    let mut ctx = WriteCtx { tx: &tx, out };
    for job in batch.iter_mut() {
        if let Err(e) = job.apply(&mut ctx) {
            tx.abort().ok();
            return Err(e);
        }
    }
    tx.commit().map_err(|e| storage(&e))?;
    let m = crate::metrics::hot();
    m.commits.increment(1);
    m.commit_batch.record(batch.len() as f64);
    m.commit_seconds.record(started.elapsed().as_secs_f64());
    let messages = out
        .events
        .iter()
        .filter(|e| matches!(e.kind, Some(crate::proto::room_event::Kind::Message(_))))
        .count();
    m.messages_committed.increment(messages as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_publisher_does_not_stop_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| panic!("a bug in the fan-out")));
        for round in 0..3 {
            let r = writer
                .write(move |ctx: &mut WriteCtx<'_>| {
                    ctx.emit(RoomEvent { seq: round, ..Default::default() });
                    Ok(Ok::<_, StoreError>(round))
                })
                .await;
            assert_eq!(r.unwrap(), round, "the commit of round {round} is acknowledged");
        }
        assert!(store.health().failure().is_none());
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_the_batch_and_marks_the_storage_failed() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        let ok = writer.write(|_| Ok(Ok::<_, StoreError>(()))).await;
        assert!(ok.is_ok());
        store.health().fail_syncs();
        let failed = writer.write(|_| Ok(Ok::<_, StoreError>(()))).await;
        assert!(failed.is_err());
        let why = store.health().failure().expect("recorded");
        assert!(why.contains("fsync"), "{why}");
        // redb refuses every later I/O: so does the writer, and it says why.
        assert!(writer.write(|_| Ok(Ok::<_, StoreError>(()))).await.is_err());
    }
}
