//! A node's view of the log: the pure rule for what one log entry does to it, and the task
//! that tails the stream into the store. Entries are applied through the node's writer, a
//! chunk of whatever has arrived per transaction (group commit, as for local writes), and
//! published by the writer to the hub, so live fan-out, History and resume read the view
//! exactly as in single-node mode.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use super::log::{JetStreamLog, Logged};
use crate::store::cluster::{self as store_cluster, Position};
use crate::store::{Store, StoreError, Writer};

/// What a log entry at position `at` carrying room seq `seq` does to a room whose last
/// applied event is `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The room's next event: store it.
    Apply,
    /// Already applied (a redelivery after the consumer was recreated): skip it.
    Repeat,
    /// The entry skips seqs: the log (or the view) lost events. Stop the room.
    Gap {
        /// The seq that was due.
        expected: u64,
    },
    /// A later entry reusing a seq the room already has: two events were given one seq.
    /// Stop the room.
    Backwards,
}

/// The rule, as a pure function (tested as a table).
pub fn judge(last: Position, seq: u64, at: u64) -> Verdict {
    if at <= last.at {
        Verdict::Repeat
    } else if seq == last.seq + 1 {
        Verdict::Apply
    } else if seq <= last.seq {
        Verdict::Backwards
    } else {
        Verdict::Gap { expected: last.seq + 1 }
    }
}

/// Entries applied per writer job at most (one transaction; a catch-up of a long log is
/// many jobs, each bounded).
const CHUNK: usize = 1024;

/// The view of one node.
pub struct View {
    store: Store,
    writer: Writer,
    /// The last log position applied (durably): waiters for a position watch it.
    applied: watch::Sender<u64>,
    /// Rooms stopped because the log disagreed with the view: room -> why. At most one entry
    /// per room that exists; kept in the store too, so a restart does not forget them.
    halted: Mutex<BTreeMap<String, String>>,
}

impl View {
    /// The view over a node's store, resuming after what the store holds.
    pub fn new(store: Store, writer: Writer) -> Result<Arc<View>, StoreError> {
        let tx = store.read()?;
        let applied = store_cluster::applied(&tx)?;
        let halted = store_cluster::halted(&tx)?;
        drop(tx);
        Ok(Arc::new(View {
            store,
            writer,
            applied: watch::Sender::new(applied),
            halted: Mutex::new(halted),
        }))
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

    /// Why the room is stopped, if it is: appends to it must be refused.
    pub fn halted(&self, room: &str) -> Option<String> {
        self.halted.lock().expect("halted rooms").get(room).cloned()
    }

    /// Where the room's last event is, as this view holds it.
    pub fn position(&self, room: &str) -> Result<Position, StoreError> {
        store_cluster::room_position(&self.store.read()?, room)
    }

    /// Applies entries in log order, in one writer job. Entries at or below the applied
    /// position are skipped; an entry that does not fit its room stops that room (logged at
    /// `error`), and the others go on.
    pub async fn apply(&self, entries: Vec<Logged>) -> Result<(), StoreError> {
        let Some(last_at) = entries.last().map(|e| e.at) else { return Ok(()) };
        let from = self.applied();
        let alarms = self
            .writer
            .write(move |ctx| {
                let mut alarms = Vec::new();
                for Logged { event, at } in entries {
                    if at <= from {
                        continue;
                    }
                    let last = store_cluster::room_position(&**ctx, &event.room_id)?;
                    let halted = store_cluster::is_halted(&**ctx, &event.room_id)?;
                    match judge(last, event.seq, at) {
                        Verdict::Apply if !halted => {
                            store_cluster::apply(ctx, &event, at)?;
                            ctx.emit(event);
                        }
                        Verdict::Apply | Verdict::Repeat => store_cluster::set_applied(ctx, at)?,
                        v => {
                            let why = match v {
                                Verdict::Gap { expected } => format!(
                                    "log position {at} holds seq {} where seq {expected} was next",
                                    event.seq
                                ),
                                _ => format!(
                                    "log position {at} holds seq {}, which the room already has (last {} at {})",
                                    event.seq, last.seq, last.at
                                ),
                            };
                            store_cluster::halt(ctx, &event.room_id, at)?;
                            store_cluster::set_applied(ctx, at)?;
                            alarms.push((event.room_id, why));
                        }
                    }
                }
                Ok(Ok::<_, StoreError>(alarms))
            })
            .await?;
        if !alarms.is_empty() {
            let mut halted = self.halted.lock().expect("halted rooms");
            for (room, why) in alarms {
                tracing::error!(%room, %why, "the event log disagrees with this node's view: room stopped");
                halted.entry(room).or_insert(why);
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
    /// backing off 100 ms .. 5 s. A storage failure ends it (the node stops).
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
                            c = chunks.next() => c,
                            () = stop.cancelled() => return Ok(()),
                        };
                        let Some(chunk) = chunk else {
                            tracing::warn!("the event log's consumer ended; following it again");
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
                        if let Some(e) = failed {
                            match &e {
                                ClusterError::Corrupt(_) => {
                                    tracing::error!(error = %e, "an entry of the event log is unreadable; this view stops there")
                                }
                                _ => {
                                    tracing::warn!(error = %e, "following the event log failed; following it again")
                                }
                            }
                            break;
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot follow the event log yet"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_table() {
        let p = |seq, at| Position { seq, at };
        let cases = [
            // (last, seq, at) -> verdict
            (p(0, 0), 1, 7, Verdict::Apply),
            (p(3, 40), 4, 41, Verdict::Apply),
            (p(3, 40), 4, 90, Verdict::Apply), // other rooms' entries in between
            (p(3, 40), 3, 40, Verdict::Repeat),
            (p(3, 40), 2, 12, Verdict::Repeat),
            (p(3, 40), 3, 41, Verdict::Backwards),
            (p(3, 40), 1, 99, Verdict::Backwards),
            (p(3, 40), 5, 41, Verdict::Gap { expected: 4 }),
            (p(0, 0), 2, 1, Verdict::Gap { expected: 1 }),
        ];
        for (last, seq, at, want) in cases {
            assert_eq!(judge(last, seq, at), want, "last {last:?}, seq {seq} at {at}");
        }
    }
}
