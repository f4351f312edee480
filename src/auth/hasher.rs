//! Password hashing on a small fixed set of worker threads with a bounded wait queue.
//!
//! One argon2id hash takes 19 MiB and tens of milliseconds of a core. Run on tokio's blocking
//! pool, each hash got a fresh allocation on whichever of up to 512 threads ran it, and the
//! allocator kept them: 50 registrations took a small box from 12 MB to 656 MB of RSS, for
//! good. Here `workers` threads (the configured concurrency, default one per core) each own
//! one memory area and reuse it for every hash, so hashing costs at most `workers` x 19 MiB,
//! allocated on first use.
//!
//! Bounded: at most `workers + queue` hashes are accepted at once (running or waiting). When
//! that many are, [`Hasher::reserve`] refuses at once with [`Busy`] and a retry hint, instead
//! of letting a flood of logins queue without bound in front of real ones.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::password::{self, Memory};

/// Every hashing slot is taken: retry after about this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is busy checking passwords; retry in {} s", .retry_after.as_secs().max(1))]
pub struct Busy {
    /// When a slot is likely free again.
    pub retry_after: Duration,
}

enum Work {
    Hash { pw: String, reply: oneshot::Sender<String> },
    Verify { pw: String, phc: Option<String>, reply: oneshot::Sender<bool> },
}

enum Done {
    Hash(String, oneshot::Sender<String>),
    Verify(bool, oneshot::Sender<bool>),
}

struct Job {
    work: Work,
    /// Released when the hash is done: the slot it held is free again.
    _slot: OwnedSemaphorePermit,
}

/// The worker pool. Cheap to clone; the workers stop when every clone is gone.
#[derive(Clone)]
pub struct Hasher {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// `workers + queue` permits: running and waiting hashes.
    slots: Arc<Semaphore>,
    capacity: usize,
    workers: usize,
    /// Recent hash time (µs), for the retry hint.
    recent_us: Arc<AtomicU64>,
}

/// A reserved hashing slot: taking one is the only step that can be refused, so callers can
/// reserve before committing to anything (the login throttle counts an attempt only once it
/// will really be checked).
pub struct Ticket {
    hasher: Hasher,
    slot: OwnedSemaphorePermit,
}

/// How long until a slot is likely free: the work ahead of a new job, spread over the
/// workers, at the recent time per hash. Pure.
pub fn retry_hint(in_flight: usize, workers: usize, recent: Duration) -> Duration {
    let rounds = in_flight.div_ceil(workers.max(1)) as u32;
    (recent * rounds).max(Duration::from_secs(1))
}

impl Hasher {
    /// Starts `workers` threads (at least one) with room for `queue` waiting hashes.
    pub fn start(workers: usize, queue: usize) -> Hasher {
        let workers = workers.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let recent_us = Arc::new(AtomicU64::new(50_000));
        for i in 0..workers {
            let (rx, recent_us) = (rx.clone(), recent_us.clone());
            std::thread::Builder::new()
                .name(format!("edgechat-hash-{i}"))
                .spawn(move || work(&rx, &recent_us))
                .expect("spawning a hashing thread");
        }
        Hasher {
            inner: Arc::new(Inner {
                jobs: Mutex::new(tx),
                slots: Arc::new(Semaphore::new(workers + queue)),
                capacity: workers + queue,
                workers,
                recent_us,
            }),
        }
    }

    /// Takes a slot, or says when to retry. Never waits.
    pub fn reserve(&self) -> Result<Ticket, Busy> {
        let i = &self.inner;
        match i.slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(Ticket { hasher: self.clone(), slot }),
            Err(_) => Err(Busy {
                retry_after: retry_hint(
                    i.capacity,
                    i.workers,
                    Duration::from_micros(i.recent_us.load(Ordering::Relaxed)),
                ),
            }),
        }
    }

    /// Hashes and verifications accepted and not yet finished.
    pub fn in_flight(&self) -> usize {
        self.inner.capacity - self.inner.slots.available_permits()
    }
}

impl Ticket {
    /// Hashes a new password into a PHC string.
    pub async fn hash(self, pw: String) -> String {
        let (reply, rx) = oneshot::channel();
        self.submit(Work::Hash { pw, reply });
        rx.await.expect("hashing workers live as long as the hasher")
    }

    /// Checks a password against a stored PHC string (`None`: an unknown user, which still
    /// costs one hash).
    pub async fn verify(self, pw: String, phc: Option<String>) -> bool {
        let (reply, rx) = oneshot::channel();
        self.submit(Work::Verify { pw, phc, reply });
        rx.await.expect("hashing workers live as long as the hasher")
    }

    fn submit(self, work: Work) {
        let jobs = self.hasher.inner.jobs.lock().expect("hasher lock");
        // The workers hold the receiver until every sender (the hasher) is gone.
        let _ = jobs.send(Job { work, _slot: self.slot });
    }
}

fn work(rx: &Mutex<mpsc::Receiver<Job>>, recent_us: &AtomicU64) {
    let mut memory = Memory::new();
    loop {
        let job = match rx.lock().expect("hasher queue lock").recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let started = std::time::Instant::now();
        let Job { work, _slot: slot } = job;
        let done = match work {
            Work::Hash { pw, reply } => {
                Done::Hash(password::hash_password(&mut memory, &pw), reply)
            }
            Work::Verify { pw, phc, reply } => {
                Done::Verify(password::verify_password(&mut memory, &pw, phc.as_deref()), reply)
            }
        };
        let took = started.elapsed().as_micros() as u64;
        let old = recent_us.load(Ordering::Relaxed);
        recent_us.store((old * 7 + took) / 8, Ordering::Relaxed);
        // The slot is free before the caller hears back. (The caller may have gone away, a
        // cancelled client: the reply is then dropped.)
        drop(slot);
        match done {
            Done::Hash(phc, reply) => {
                let _ = reply.send(phc);
            }
            Done::Verify(ok, reply) => {
                let _ = reply.send(ok);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_spreads_the_work_ahead_over_the_workers() {
        let hash = Duration::from_millis(50);
        assert_eq!(retry_hint(0, 2, hash), Duration::from_secs(1));
        assert_eq!(retry_hint(66, 2, hash), Duration::from_millis(1650));
        assert_eq!(retry_hint(66, 0, hash), Duration::from_millis(3300));
    }

    #[tokio::test]
    async fn slots_are_bounded_refused_at_once_and_released() {
        let h = Hasher::start(1, 1);
        let a = h.reserve().unwrap();
        let b = h.reserve().unwrap();
        let busy = h.reserve().err().unwrap();
        assert!(busy.to_string().contains("retry in"), "{busy}");
        assert_eq!(h.in_flight(), 2);
        let phc = a.hash("correct horse".into()).await;
        assert!(b.verify("correct horse".into(), Some(phc)).await);
        assert_eq!(h.in_flight(), 0);
        assert!(!h.reserve().unwrap().verify("x".into(), None).await);
    }
}
