//! Whether the storage still works, seen from below redb.
//!
//! After a failed write or fsync redb refuses every later I/O on the file ("previous I/O
//! error"), so the server can no longer acknowledge anything; it must say so (health
//! NOT_SERVING) and exit non-zero so that a supervisor restarts it, rather than run on and
//! answer every send `UNAVAILABLE` forever. [`Guarded`] wraps redb's file backend and records
//! the first I/O error any operation returns in [`StorageHealth`]; the writer records a
//! failed commit there too. Fault injection for tests ([`StorageHealth::fail_syncs`]) lives
//! here for the same reason: it is the one place every byte passes.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use tokio::sync::watch;

/// The storage's health, shared by the backend, the writer and the server.
#[derive(Debug)]
pub struct StorageHealth {
    /// The first failure, once there is one.
    failure: watch::Sender<Option<String>>,
    fail_syncs: AtomicBool,
}

impl StorageHealth {
    pub(super) fn new() -> Arc<StorageHealth> {
        Arc::new(StorageHealth { failure: watch::Sender::new(None), fail_syncs: false.into() })
    }

    /// The first failure recorded, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Waits until the storage has failed; returns what failed.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.subscribe();
        let failure = rx.wait_for(Option::is_some).await.map(|f| f.clone().unwrap_or_default());
        match failure {
            Ok(f) => f,
            // The sender lives as long as `self`.
            Err(_) => std::future::pending().await,
        }
    }

    /// Records a failure (only the first is kept).
    pub fn record(&self, what: String) {
        self.failure.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            tracing::error!(failure = %what, "storage failed; the server will stop");
            *f = Some(what);
            true
        });
    }

    /// Fault injection (tests): every later `sync_data` fails, as a dying disk's would.
    pub fn fail_syncs(&self) {
        self.fail_syncs.store(true, Ordering::SeqCst);
    }
}

/// redb's file backend, reporting its I/O errors to a [`StorageHealth`].
#[derive(Debug)]
pub(super) struct Guarded {
    inner: FileBackend,
    health: Arc<StorageHealth>,
}

impl Guarded {
    pub(super) fn new(file: std::fs::File, health: Arc<StorageHealth>) -> Guarded {
        #[allow(deprecated)] // `new` returns a Result only under redb's experimental API
        let inner = FileBackend::new(file).expect("FileBackend::new cannot fail");
        Guarded { inner, health }
    }

    fn io<T>(&self, op: &str, r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r {
            self.health.record(format!("{op} failed: {e}"));
        }
        r
    }
}

impl StorageBackend for Guarded {
    fn len(&self) -> std::io::Result<u64> {
        self.io("reading the file length", self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.io("read", self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.io("resizing the file", self.inner.set_len(len))
    }

    fn sync_data(&self) -> std::io::Result<()> {
        if self.health.fail_syncs.load(Ordering::SeqCst) {
            let e = std::io::Error::other("injected fsync failure");
            return self.io("fsync", Err(e));
        }
        self.io("fsync", self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.io("write", self.inner.write(offset, data))
    }

    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
