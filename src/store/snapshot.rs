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

use super::{Db, StoreError, tables};

/// Entries copied per write transaction of the new file (bounds its dirty state).
const BATCH: usize = 50_000;
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
        let copy = redb::Database::builder()
            .set_cache_size(COPY_CACHE)
            .create(&temp)
            .map_err(|e| StoreError::Db(format!("snapshot {}: {e}", temp.display())))?;
        let mut info = SnapshotInfo::default();
        macro_rules! each_table {
            ($($t:ident),* $(,)?) => {$(
                let n = copy_table(&read, &copy, tables::$t)?;
                info.entries += n;
                if stringify!($t) == "ROOM_EVENTS" {
                    info.events = n;
                }
            )*};
        }
        each_table!(
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
            ROOM_EVENTS,
            SENT_IDS,
            NOTIFICATIONS,
            ROOM_MESSAGES,
            MENTIONS,
        );
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

/// Copies one table in batches of [`BATCH`]; returns how many entries.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    read: &redb::ReadTransaction,
    copy: &redb::Database,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let src = read.open_table(def)?;
    let mut entries = src.iter()?;
    let mut copied = 0u64;
    loop {
        let tx = copy.begin_write()?;
        let mut in_batch = 0;
        {
            let mut dst = tx.open_table(def)?;
            while in_batch < BATCH {
                let Some(entry) = entries.next() else { break };
                let (k, v) = entry?;
                dst.insert(k.value(), v.value())?;
                in_batch += 1;
            }
        }
        tx.commit()?;
        copied += in_batch as u64;
        if in_batch < BATCH {
            return Ok(copied);
        }
    }
}
