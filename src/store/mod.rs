//! The redb store: the one module that knows table names, key encodings and transactions.
//!
//! Invariants:
//! - Every write goes through the [`Writer`] (one thread owning write transactions, group
//!   commit), so concurrent writers share one fsync and jobs see each other's writes in order.
//! - Commits are durable (`Durability::Immediate`) before any job's result is released.
//! - The schema version in the file is checked at open: a newer file is refused.
//!
//! Reads take a [`redb::ReadTransaction`] from [`Store::read`] and call the typed functions in
//! the submodules.

pub mod attachments;
pub mod audit;
mod check;
pub mod cluster;
pub mod events;
mod health;
pub mod invites;
mod migrate;
pub mod notifications;
pub mod pins;
pub mod reactions;
mod records;
pub mod rooms;
pub mod search;
pub mod sent;
pub mod snapshot;
mod tables;
pub mod threads;
pub mod unread;
pub mod users;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

pub use check::{CheckReport, SizeReport, TableSize};
pub use health::StorageHealth;
pub use records::{
    AttachmentRecord, BanRecord, FamilyRecord, InviteRecord, MemberRecord, PinRecord,
    RefreshRecord, RoomRecord, SentRecord, UserRecord,
};
pub use users::Snapshot;
pub use writer::{Committed, JobResult, Mark, Publisher, WriteCtx, Writer};

/// The schema this build reads and writes. Bump it (and add a migration) whenever a table's key
/// or value encoding changes incompatibly.
pub const SCHEMA_VERSION: u64 = 3;

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "edgechat.redb";

/// A store failure. Messages say which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally a running `edgechat serve`) holds the database.
    #[error(
        "database {0} is in use by another process (is `edgechat serve` running?); stop it first"
    )]
    Locked(PathBuf),
    /// The file was written by a newer edgechat.
    #[error(
        "database {path} has schema version {found}, newer than this edgechat understands \
         ({supported}); upgrade edgechat"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u64,
        /// Version of this build.
        supported: u64,
    },
    /// The file could not be opened (damaged, not a database, permissions).
    #[error("cannot open database {path}: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// A read or write failed.
    #[error("database error: {0}")]
    Db(String),
    /// A stored record does not decode: the file is damaged.
    #[error("database record in {table} does not decode: {message}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Decoder message.
        message: String,
    },
    /// The writer thread is gone (shutting down).
    #[error("the database writer has stopped")]
    WriterGone,
    /// Cluster mode: the shared log did not take the change (NATS unreachable, no quorum, an
    /// election in progress). Nothing was acknowledged; a retry with the same
    /// `client_message_id` is safe.
    #[error("the cluster's log is unavailable: {0}")]
    LogUnavailable(String),
}

macro_rules! db_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_error_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The database and, dropped right after it, the sender whose end tells waiters it closed.
pub(crate) struct Db {
    db: redb::Database,
    /// Set at shutdown: snapshots in progress stop at their next batch (see `snapshot`), so
    /// they do not hold the file open past the drain.
    snapshots_cancelled: std::sync::atomic::AtomicBool,
    _closed: tokio::sync::watch::Sender<()>,
}

impl std::ops::Deref for Db {
    type Target = redb::Database;
    fn deref(&self) -> &redb::Database {
        &self.db
    }
}

/// The open database. Cheap to clone (an `Arc` inside); the file closes when the last clone
/// (and the writer thread) is gone.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    path: PathBuf,
    health: Arc<StorageHealth>,
    closed: tokio::sync::watch::Receiver<()>,
}

impl Store {
    /// Opens (creating if missing) the database at `path`, checks its schema version and
    /// creates every table, so readers never see a missing table.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: path.into(),
            message: e.to_string(),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| open_err(&e))?;
        let health = StorageHealth::new();
        let backend = health::Guarded::new(file, health.clone());
        let db = redb::Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.into()),
                other => open_err(&other),
            })?;
        let tx = db.begin_write()?;
        let found = {
            let mut meta = tx.open_table(tables::META)?;
            let found = meta.get(tables::META_SCHEMA_VERSION)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: path.into(),
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(v) => v,
                None => {
                    meta.insert(tables::META_SCHEMA_VERSION, SCHEMA_VERSION)?;
                    SCHEMA_VERSION
                }
            }
        };
        tables::create_all(&tx)?;
        tx.commit()?;
        migrate::run(&db, found)?;
        let (closed_tx, closed) = tokio::sync::watch::channel(());
        Ok(Store {
            db: Arc::new(Db {
                db,
                snapshots_cancelled: std::sync::atomic::AtomicBool::new(false),
                _closed: closed_tx,
            }),
            path: path.to_path_buf(),
            health,
            closed,
        })
    }

    /// A handle that tells when every user of this database is gone and the file is closed
    /// (its lock released).
    pub fn closed_watch(&self) -> ClosedWatch {
        ClosedWatch(self.closed.clone())
    }

    /// Whether the storage still works (a failed write or fsync is final for this process).
    pub fn health(&self) -> &Arc<StorageHealth> {
        &self.health
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A consistent read snapshot.
    pub fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Starts the group-commit writer thread for this store; `publisher` receives every
    /// committed batch's room events.
    pub fn start_writer(&self, publisher: Publisher) -> Writer {
        Writer::start(self.db.clone(), self.health.clone(), publisher)
    }

    /// Writes a consistent copy of the database as it is at one commit into `out` (a new
    /// file, complete or absent), while the writer goes on. Blocking: call it off the async
    /// threads.
    pub fn snapshot_to(&self, out: &Path) -> Result<snapshot::SnapshotInfo, StoreError> {
        snapshot::write(&self.db, out)
    }

    /// Stops every snapshot in progress (periodic, online backup, compaction) at its next
    /// batch of entries, and refuses new ones: for shutdown, so the file can close.
    pub fn cancel_snapshots(&self) {
        self.db.snapshots_cancelled.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        let tx = self.read()?;
        let meta = tx.open_table(tables::META)?;
        Ok(meta.get(tables::META_SCHEMA_VERSION)?.map(|v| v.value()).unwrap_or(0))
    }
}

/// See [`Store::closed_watch`].
pub struct ClosedWatch(tokio::sync::watch::Receiver<()>);

impl ClosedWatch {
    /// Whether the database has been closed.
    pub fn is_closed(&self) -> bool {
        self.0.has_changed().is_err()
    }

    /// Waits until the database has been closed.
    pub async fn closed(&mut self) {
        while self.0.changed().await.is_ok() {}
    }
}

/// A fresh random id with a one-letter kind prefix (`u…` users, `r…` rooms, `f…` token
/// families): 96 random bits, so ids are unguessable and never collide in practice.
pub fn new_id(prefix: char) -> String {
    let bytes: [u8; 12] = rand::random();
    let mut s = String::with_capacity(25);
    s.push(prefix);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode<M: prost::Message + Default>(table: &'static str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt { table, message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_version_is_written_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path, 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        {
            let tx = store.db.begin_write().unwrap();
            tx.open_table(tables::META)
                .unwrap()
                .insert(tables::META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
                .unwrap();
            tx.commit().unwrap();
        }
        drop(store);
        let err = Store::open(&path, 1 << 20).err().unwrap();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
        assert!(err.to_string().contains("upgrade edgechat"));
    }

    #[test]
    fn a_second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let _store = Store::open(&path, 1 << 20).unwrap();
        let err = Store::open(&path, 1 << 20).err().unwrap();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        std::fs::write(&path, b"this is not a database at all, not even close").unwrap();
        let err = Store::open(&path, 1 << 20).err().unwrap();
        assert!(err.to_string().contains("db.redb"), "{err}");
    }
}
