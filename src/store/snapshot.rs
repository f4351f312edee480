//! Consistent copies of the database, taken while serving.
//!
//! redb has no backup call, and a file copy of a database that is being written is not a
//! database (most copies do not open: their roots point at pages overwritten meanwhile). A
//! snapshot instead reads every table through one read transaction (redb's MVCC: the writer
//! goes on, the snapshot sees one commit) and writes it into a new database file under a
//! temporary name, which is committed durably, fsynced and renamed into place: the result is
//! a normal, cleanly closed database file, complete or absent.

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::{Db, StoreError, events, search, tables, unread};

/// Entries copied per write transaction of the new file (bounds its dirty state) ...
const BATCH: usize = 50_000;
/// ... and bytes of values (attachments' chunks are up to 256 KiB each).
const BATCH_BYTES: usize = 32 << 20;
/// The new file's page cache.
const COPY_CACHE: usize = 16 << 20;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Entries copied, all tables.
    pub entries: u64,
    /// Room events among them.
    pub events: u64,
}

/// Copies everything `db` holds at one commit into a new database at `out` (which must not
/// exist), through a temporary file renamed into place when complete.
pub(super) fn write(db: &Db, out: &Path) -> Result<SnapshotInfo, StoreError> {
    let io = |e: std::io::Error| StoreError::Db(format!("snapshot {}: {e}", out.display()));
    if out.exists() {
        return Err(io(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "file exists")));
    }
    let temp = crate::files::temp_path(out);
    let result = (|| {
        let read = db.begin_read()?;
        // A small cache: the copy is written once, in key order (which also packs its pages
        // full), and must not take the box's memory.
        let mut copy = redb::Database::builder()
            .set_cache_size(COPY_CACHE)
            .create(&temp)
            .map_err(|e| StoreError::Db(format!("snapshot {}: {e}", temp.display())))?;
        let mut info = SnapshotInfo::default();
        let mut copier = Copier {
            copy: &copy,
            tx: None,
            in_batch: 0,
            bytes_in_batch: 0,
            cancelled: &db.snapshots_cancelled,
        };
        // Every table the file has, by name: one this version does not know is an error, not
        // a table silently left out of every backup (threads, reactions, pins, the audit log
        // and invite codes were, until a test compared the two files' tables).
        let names: Vec<String> =
            read.list_tables()?.map(|t| redb::TableHandle::name(&t).to_string()).collect();
        for name in &names {
            macro_rules! fixed {
                ($($t:ident),* $(,)?) => {
                    $(if name == redb::TableHandle::name(&tables::$t) {
                        info.entries += copier.table(&read, tables::$t)?;
                        continue;
                    })*
                };
            }
            fixed!(
                META,
                USERS,
                USER_BY_NAME,
                REFRESH_TOKENS,
                REFRESH_FAMILIES,
                ROOMS,
                PUBLIC_ROOMS,
                ROOM_MEMBERS,
                USER_ROOMS,
                ROOM_BANS,
                ROOM_INVITES,
                USER_INVITES,
                DIRECT_ROOMS,
                SENT_IDS,
                NOTIFICATIONS,
                MENTIONS,
                THREADS,
                REACTIONS,
                PINS,
                AUDIT,
                AUDIT_BY_ROOM,
                INVITE_CODES,
                ATTACHMENTS,
                UPLOAD_CHUNKS,
                BLOBS,
                BLOB_CHUNKS,
                ATTACHMENT_ROOMS,
                USER_UPLOADS,
                ATTACHMENT_USAGE,
                ATTACHMENTS_IDLE,
                // A cluster node's applied position: a restored or compacted view must resume
                // the log after what it holds, not apply it all again.
                CLUSTER_META,
                // An upgrade's progress (only in a file whose upgrade was interrupted).
                SEARCH_BACKFILL,
            );
            if name.starts_with(events::TABLE_PREFIX) {
                let n = copier.table(&read, events::table(name))?;
                info.entries += n;
                info.events += n;
            } else if name.starts_with(unread::TABLE_PREFIX) {
                info.entries += copier.table(&read, unread::table(name))?;
            } else if name.starts_with(search::TABLE_PREFIX) {
                info.entries += copier.table(&read, search::table(name))?;
            } else {
                return Err(StoreError::Db(format!(
                    "snapshot: table {name} is unknown to this version of edgechat"
                )));
            }
        }
        copier.finish()?;
        // Committing batch after batch leaves the new file with free regions redb grew it by
        // (525 MiB for 333 MiB of pages, measured on 1.2M events); compacting the copy, which
        // nothing else uses, gives them back in about a second.
        copy.compact().map_err(|e| StoreError::Db(format!("snapshot {}: {e}", temp.display())))?;
        drop(copy);
        std::fs::File::open(&temp).and_then(|f| f.sync_all()).map_err(io)?;
        crate::files::publish(&temp, out).map_err(io)?;
        Ok(info)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Copies tables into the new file, committing every [`BATCH`] entries (however many tables
/// those span: a server with 10,000 rooms has 20,000 small tables).
struct Copier<'a> {
    copy: &'a redb::Database,
    tx: Option<redb::WriteTransaction>,
    in_batch: usize,
    /// Value bytes copied in the open transaction.
    bytes_in_batch: usize,
    /// `Db::snapshots_cancelled`, checked before each batch.
    cancelled: &'a std::sync::atomic::AtomicBool,
}

impl Copier<'_> {
    /// Copies one table; how many entries.
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        read: &redb::ReadTransaction,
        def: TableDefinition<K, V>,
    ) -> Result<u64, StoreError> {
        let src = read.open_table(def)?;
        let mut entries = src.iter()?;
        let mut copied = 0u64;
        loop {
            if self.cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(StoreError::Db("snapshot cancelled: the server is stopping".into()));
            }
            let tx = match self.tx.take() {
                Some(tx) => tx,
                None => self.copy.begin_write()?,
            };
            let mut done = false;
            {
                let mut dst = tx.open_table(def)?;
                while self.in_batch < BATCH && self.bytes_in_batch < BATCH_BYTES {
                    let Some(entry) = entries.next() else {
                        done = true;
                        break;
                    };
                    let (k, v) = entry?;
                    self.bytes_in_batch += V::as_bytes(&v.value()).as_ref().len();
                    dst.insert(k.value(), v.value())?;
                    self.in_batch += 1;
                    copied += 1;
                }
            }
            if done {
                self.tx = Some(tx);
                return Ok(copied);
            }
            tx.commit()?;
            self.in_batch = 0;
            self.bytes_in_batch = 0;
        }
    }

    fn finish(mut self) -> Result<(), StoreError> {
        if let Some(tx) = self.tx.take() {
            tx.commit()?;
        }
        Ok(())
    }
}

/// Where snapshots live inside the data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// A snapshot's file name: its time (ms since the epoch, zero-padded so names sort by time).
pub fn snapshot_name(at_ms: i64) -> String {
    format!("edgechat-{at_ms:016}.redb")
}

/// The snapshots in `dir` (complete ones: temp files have other names), newest first, with the
/// time each was taken.
pub fn list(dir: &Path) -> Vec<(std::path::PathBuf, i64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let at = name.strip_prefix("edgechat-")?.strip_suffix(".redb")?.parse().ok()?;
            Some((e.path(), at))
        })
        .collect();
    found.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
    found
}

impl super::Store {
    /// Takes a snapshot into `dir` named after `now_ms` (the snapshot holds everything
    /// committed before it started), then deletes all but the newest `keep`. Blocking.
    pub fn take_snapshot(
        &self,
        dir: &Path,
        keep: usize,
        now_ms: i64,
    ) -> Result<(std::path::PathBuf, SnapshotInfo), StoreError> {
        let io = |e: std::io::Error| StoreError::Db(format!("snapshots in {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        crate::files::remove_stale_temps(dir).map_err(io)?;
        let path = dir.join(snapshot_name(now_ms));
        let info = self.snapshot_to(&path)?;
        for (old, _) in list(dir).into_iter().skip(keep) {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(file = %old.display(), error = %e, "could not delete an old snapshot");
            }
        }
        Ok((path, info))
    }
}

/// What `edgechat restore` did.
#[derive(Debug)]
pub struct Restored {
    /// The snapshot now in place.
    pub from: std::path::PathBuf,
    /// Where the database it replaced was moved, if there was one.
    pub replaced: Option<std::path::PathBuf>,
    /// What the restored database holds.
    pub report: super::CheckReport,
}

/// Puts a snapshot in place of `<data_dir>/edgechat.redb` (the server must be stopped):
/// `from`, or the newest snapshot in `<data_dir>/snapshots` that passes `check` (older ones
/// are tried in turn). The chosen file is copied (never moved) to a temporary file beside the
/// database and checked there; the database it replaces is renamed aside, never deleted.
pub fn restore(data_dir: &Path, from: Option<&Path>, now_ms: i64) -> Result<Restored, StoreError> {
    let live = data_dir.join(super::DB_FILE_NAME);
    if live.exists() {
        // A running server holds the file's lock; a read-only open fails on it, without
        // writing anything (a torn file is not repaired by a read-only open).
        if let Err(redb::DatabaseError::DatabaseAlreadyOpen) =
            redb::Builder::new().open_read_only(&live)
        {
            return Err(StoreError::Locked(live));
        }
    }
    let candidates = match from {
        Some(f) => vec![f.to_path_buf()],
        None => list(&data_dir.join(SNAPSHOT_DIR)).into_iter().map(|(p, _)| p).collect(),
    };
    if candidates.is_empty() {
        return Err(StoreError::Db(format!(
            "no snapshot in {}; name a backup file with --from",
            data_dir.join(SNAPSHOT_DIR).display()
        )));
    }
    fn io(p: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |e| StoreError::Db(format!("{}: {e}", p.display()))
    }
    let mut refused = Vec::new();
    for candidate in candidates {
        let temp = crate::files::temp_path(&live);
        std::fs::copy(&candidate, &temp).map_err(io(&candidate))?;
        std::fs::File::open(&temp).and_then(|f| f.sync_all()).map_err(io(&temp))?;
        let checked = super::Store::open(&temp, 16 << 20).and_then(|s| s.check());
        match checked {
            Ok(report) if report.problems.is_empty() => {
                let replaced = live
                    .exists()
                    .then(|| data_dir.join(format!("{}.replaced-{now_ms}", super::DB_FILE_NAME)));
                if let Some(aside) = &replaced {
                    std::fs::rename(&live, aside).map_err(io(&live))?;
                }
                crate::files::publish(&temp, &live).map_err(io(&live))?;
                return Ok(Restored { from: candidate, replaced, report });
            }
            Ok(report) => {
                refused.push(format!("{}: {}", candidate.display(), report.problems.join("; ")))
            }
            Err(e) => refused.push(format!("{}: {e}", candidate.display())),
        }
        let _ = std::fs::remove_file(&temp);
    }
    Err(StoreError::Db(format!("no snapshot passes the check: {}", refused.join(" | "))))
}
/// What `edgechat compact` did.
#[derive(Debug)]
pub struct Compacted {
    /// The file's size before.
    pub before_bytes: u64,
    /// Its size after.
    pub after_bytes: u64,
    /// What it holds.
    pub report: super::CheckReport,
}

/// Rewrites `<data_dir>/edgechat.redb` (the server must be stopped) as a snapshot of itself:
/// every table copied in key order into a new file, which packs pages full and leaves out the
/// free pages a busy file accumulates (redb never shrinks a file by itself). The copy is
/// checked, then renamed over the original, so a kill at any moment leaves either file whole.
/// Needs free disk for the copy: up to about 1.5 times the live data while it is written, the
/// live data once compacted (not the size of the file).
pub fn compact(data_dir: &Path) -> Result<Compacted, StoreError> {
    let live = data_dir.join(super::DB_FILE_NAME);
    let io = |p: &Path, e: std::io::Error| StoreError::Db(format!("{}: {e}", p.display()));
    let before_bytes = std::fs::metadata(&live).map_err(|e| io(&live, e))?.len();
    let copy = data_dir.join(format!("{}.compacting", super::DB_FILE_NAME));
    // The database first: its lock proves no server runs here (one would be writing temp
    // files, an online backup say, that the cleanup below must not touch). It stays open,
    // locked, until the copy has replaced it, so no server can start on it in between.
    let store = super::Store::open(&live, 16 << 20)?;
    // What an earlier, interrupted compaction left.
    crate::files::remove_stale_temps(data_dir).map_err(|e| io(data_dir, e))?;
    if copy.exists() {
        std::fs::remove_file(&copy).map_err(|e| io(&copy, e))?;
    }
    store.snapshot_to(&copy)?;
    let report = super::Store::open(&copy, 16 << 20).and_then(|s| s.check());
    match report {
        Ok(report) if report.problems.is_empty() => {
            crate::files::publish(&copy, &live).map_err(|e| io(&live, e))?;
            drop(store);
            let after_bytes = std::fs::metadata(&live).map_err(|e| io(&live, e))?.len();
            Ok(Compacted { before_bytes, after_bytes, report })
        }
        other => {
            let _ = std::fs::remove_file(&copy);
            Err(StoreError::Db(match other {
                Ok(r) => format!("the compacted copy failed its check: {}", r.problems.join("; ")),
                Err(e) => format!("the compacted copy does not open: {e}"),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every table of the file is in the copy, with all its entries: a table the snapshot
    /// does not know fails the snapshot instead of vanishing from backups and compactions.
    #[test]
    fn a_snapshot_holds_every_table_with_every_entry() {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let tx = store.db.begin_write().unwrap();
        let mut ev = crate::proto::RoomEvent { room_id: "r1".into(), ..Default::default() };
        super::events::append(&tx, &mut ev).unwrap();
        super::unread::index_message(&tx, "r1", 1, "u1").unwrap();
        super::super::threads::add_reply(&tx, "r1", 1, 2).unwrap();
        super::super::cluster::set_applied(&tx, 7).unwrap();
        tx.commit().unwrap();
        let out = dir.path().join("snap.redb");
        store.snapshot_to(&out).unwrap();
        let tables = |db: &redb::Database| {
            let tx = db.begin_read().unwrap();
            let mut found: Vec<(String, u64)> = tx
                .list_tables()
                .unwrap()
                .map(|h| {
                    let name = redb::TableHandle::name(&h).to_string();
                    (name, tx.open_untyped_table(h).unwrap().len().unwrap())
                })
                .collect();
            found.sort();
            found
        };
        let live = tables(&store.db);
        drop(store);
        let copy = tables(&redb::Database::open(&out).unwrap());
        assert!(live.iter().any(|(n, len)| n == "threads" && *len == 2), "{live:?}");
        assert!(live.iter().any(|(n, len)| n == "cluster_meta" && *len == 1), "{live:?}");
        assert_eq!(copy, live);
    }

    #[test]
    fn a_cancelled_snapshot_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let out = dir.path().join("snap.redb");
        store.cancel_snapshots();
        let e = store.snapshot_to(&out).unwrap_err().to_string();
        assert!(e.contains("server is stopping"), "{e}");
        let left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("db.redb")], "no snapshot, no temp file");
    }
}
