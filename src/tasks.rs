//! Every task the server spawns, tracked, so that shutdown can wait for them instead of
//! polling, and can end them when its drain deadline passes.
//!
//! [`Tasks::spawn`] runs a future on tokio under a [`TaskTracker`] and a hard-stop token:
//! shutdown first asks everyone to finish (the server's shutdown token: streams say
//! `GoingAway`, listeners stop accepting), waits for the tracker up to the drain deadline,
//! and then cancels the hard stop, which drops every tracked task at its next poll (a client
//! that keeps its flow-control window closed can hold a task's write forever, but not past
//! this). Threads (the writer, the hashing workers) are not tasks: they end when their last
//! handle goes.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server's task set. Cheap to clone.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns `fut`, tracked; it is dropped at [`Tasks::stop`] if still running (then its
    /// handle yields `None`).
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => None,
                out = fut => Some(out),
            }
        })
    }

    /// Cancelled when the drain deadline has passed: whatever holds a connection open (the
    /// TCP wrapper watches this) lets go.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Ends every task now (after the drain deadline).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// No more tasks after this, except those spawned by tasks already running; then waits
    /// until every tracked task has ended.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// How many tracked tasks are running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

/// Runs blocking `f` on a thread of its own at a lower CPU priority (nice 10 on Linux) and
/// waits for it without blocking the runtime: for snapshots and backups, which read the whole
/// database and would otherwise take a core from the requests on a two-core box. `None` if
/// `f` panicked. (A thread per call, not tokio's blocking pool: the priority must not outlive
/// the work. Callers run one at a time per purpose, the periodic snapshot in its loop and
/// online backups behind `Api::backup_slot`, so these threads are bounded.)
pub async fn background<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("edgechat-background".into()).spawn(move || {
        lower_priority();
        let _ = tx.send(f());
    });
    if spawned.is_err() {
        return None;
    }
    rx.await.ok()
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // SAFETY: gettid and setpriority have no memory-safety preconditions; on Linux
    // PRIO_PROCESS with a thread id changes only that thread's nice value.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_sees_every_task_and_stop_ends_the_stuck_ones() {
        let tasks = Tasks::new();
        let quick = tasks.spawn(async { 7 });
        let stuck = tasks.spawn(std::future::pending::<()>());
        assert_eq!(quick.await.unwrap(), Some(7));
        assert_eq!(tasks.len(), 1);
        let waiting = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        tasks.stop();
        assert_eq!(stuck.await.unwrap(), None);
        waiting.await.unwrap();
        assert!(tasks.is_empty());
    }
}
