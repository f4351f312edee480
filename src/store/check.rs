//! `edgechat check`: reads a whole database through one snapshot and says what is damaged.
//!
//! Checked: the schema version; every room event decodes and belongs to a known room; each
//! room's seqs are gapless from its first retained one to its last; each room's member count
//! matches its member records; attachments' contents are all there, counted right and hash to
//! their keys (`attachments::check`). Reading every event and every file also makes redb
//! verify the checksum of every page of the log and of the files.

use redb::{ReadableTable, ReadableTableMetadata};

use super::tables::{ROOM_MEMBERS, ROOMS, USERS};
use super::{Snapshot, Store, StoreError, decode, events, records::RoomRecord};

/// What a check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The file's schema version.
    pub schema_version: u64,
    /// Users.
    pub users: u64,
    /// Rooms.
    pub rooms: u64,
    /// Room events (messages, edits, deletes, membership, room updates).
    pub events: u64,
    /// What is damaged, one line each (empty: the database is good).
    pub problems: Vec<String>,
}

/// At most this many problems are listed (the count of the rest is given).
const MAX_LISTED: usize = 50;

impl CheckReport {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
}

/// Where a database's bytes go (`edgechat check --sizes`), from redb's own page accounting.
#[derive(Debug, Default, Clone)]
pub struct SizeReport {
    /// The file's length.
    pub file_bytes: u64,
    /// Pages in use (tables, their branches, redb's own metadata), times the page size.
    pub allocated_bytes: u64,
    /// Free space inside allocated pages plus free pages.
    pub fragmented_bytes: u64,
    /// One row per table, largest first.
    pub tables: Vec<TableSize>,
}

/// One table's share of the file.
#[derive(Debug, Clone)]
pub struct TableSize {
    /// Table name (`events/*`: every room's event table).
    pub name: String,
    /// How many tables the row sums.
    pub tables: u64,
    /// Rows.
    pub entries: u64,
    /// Bytes of keys and values as stored.
    pub stored_bytes: u64,
    /// Bytes of redb's per-entry and per-page bookkeeping.
    pub metadata_bytes: u64,
    /// Unused bytes inside the table's pages.
    pub fragmented_bytes: u64,
    /// Leaf plus branch pages, times the page size.
    pub page_bytes: u64,
}

impl Store {
    /// Per-table sizes. Opens a write transaction (redb reports page use there) and drops it
    /// uncommitted, so it changes nothing; for a database no server holds.
    pub fn sizes(&self, file_bytes: u64) -> Result<SizeReport, StoreError> {
        let tx = self.db.begin_write()?;
        let stats = tx.stats()?;
        let page = stats.page_size() as u64;
        let mut tables = Vec::new();
        let read = self.read()?;
        let mut by_name = std::collections::BTreeMap::<String, TableSize>::new();
        for handle in read.list_tables()? {
            let name = redb::TableHandle::name(&handle).to_string();
            // A room's own tables are summed over all rooms: `events/*`, `messages/*`.
            let name = match name.split_once('/') {
                Some((prefix, _)) => format!("{prefix}/*"),
                None => name,
            };
            let t = read.open_untyped_table(handle)?;
            let st = t.stats()?;
            let row = by_name.entry(name.clone()).or_insert(TableSize {
                name,
                tables: 0,
                entries: 0,
                stored_bytes: 0,
                metadata_bytes: 0,
                fragmented_bytes: 0,
                page_bytes: 0,
            });
            row.tables += 1;
            row.entries += t.len()?;
            row.stored_bytes += st.stored_bytes();
            row.metadata_bytes += st.metadata_bytes();
            row.fragmented_bytes += st.fragmented_bytes();
            row.page_bytes += (st.leaf_pages() + st.branch_pages()) * page;
        }
        tables.extend(by_name.into_values());
        tx.abort()?;
        tables.sort_by_key(|t| std::cmp::Reverse(t.page_bytes));
        Ok(SizeReport {
            file_bytes,
            allocated_bytes: stats.allocated_pages() * page,
            fragmented_bytes: stats.fragmented_bytes(),
            tables,
        })
    }

    /// Checks the whole database (see the module doc).
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let tx = self.read()?;
        let mut r = CheckReport { schema_version: self.schema_version()?, ..Default::default() };
        if r.schema_version != super::SCHEMA_VERSION {
            r.problem(format!(
                "schema version {} (this edgechat reads {})",
                r.schema_version,
                super::SCHEMA_VERSION
            ));
        }
        r.users = tx.table(USERS)?.len()?;
        let rooms = tx.table(ROOMS)?;
        r.rooms = rooms.len()?;
        for row in rooms.iter()? {
            let (id, _) = row?;
            let room = id.value();
            let name = events::table_name(room);
            let Some(t) = tx.table_opt(events::table(&name))? else { continue };
            let mut expected = None;
            for row in t.iter()? {
                let (key, value) = row?;
                let seq = key.value();
                r.events += 1;
                if let Some(expected) = expected.filter(|e| *e != seq) {
                    r.problem(format!("room {room}: seq {seq} follows {} (a gap)", expected - 1));
                }
                expected = Some(seq + 1);
                if let Err(e) = events::unpack(room, seq, value.value()) {
                    r.problem(format!("room {room} seq {seq}: {e}"));
                }
            }
        }
        // Tables of rooms that do not exist.
        for handle in tx.list_tables()? {
            let name = redb::TableHandle::name(&handle);
            let room = name
                .strip_prefix(events::TABLE_PREFIX)
                .or_else(|| name.strip_prefix(super::unread::TABLE_PREFIX))
                .or_else(|| name.strip_prefix(super::search::TABLE_PREFIX));
            if let Some(room) = room
                && rooms.get(room)?.is_none()
            {
                r.problem(format!("{name}: a table of room {room}, which does not exist"));
            }
        }
        let members = tx.table(ROOM_MEMBERS)?;
        for row in rooms.iter()? {
            let (id, value) = row?;
            let id = id.value();
            let room: RoomRecord = match decode("rooms", value.value()) {
                Ok(room) => room,
                Err(e) => {
                    r.problem(format!("room {id}: {e}"));
                    continue;
                }
            };
            let n = members
                .range((id, "")..)?
                .take_while(|m| m.as_ref().is_ok_and(|(k, _)| k.value().0 == id));
            let count = n.count() as u32;
            if count != room.member_count {
                r.problem(format!(
                    "room {id}: member_count says {} but {count} members are stored",
                    room.member_count
                ));
            }
        }
        for p in super::attachments::check(&tx)? {
            r.problem(p);
        }
        if r.problems.len() > MAX_LISTED {
            let more = r.problems.len() - MAX_LISTED;
            r.problems.truncate(MAX_LISTED);
            r.problems.push(format!("... and {more} more"));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_good_database_and_a_snapshot_of_it_check_clean() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        writer
            .write(|ctx| {
                let room = RoomRecord { id: "r1".into(), member_count: 0, ..Default::default() };
                super::super::rooms::put_room(ctx, &room, true)?;
                for _ in 0..3 {
                    let mut ev =
                        crate::proto::RoomEvent { room_id: "r1".into(), ..Default::default() };
                    super::super::events::append(ctx, &mut ev)?;
                }
                Ok(Ok::<_, StoreError>(()))
            })
            .await
            .unwrap();
        let report = store.check().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!((report.rooms, report.events), (1, 3));
        let copy = dir.path().join("copy.redb");
        let info = store.snapshot_to(&copy).unwrap();
        assert_eq!(info.events, 3);
        assert!(store.snapshot_to(&copy).is_err(), "never overwrites");
        drop(writer);
        let copied = Store::open(&copy, 1 << 20).unwrap();
        assert_eq!(copied.check().unwrap(), report);
        // A hole in the log is named.
        let writer = copied.start_writer(Box::new(|_| {}));
        writer
            .write(|ctx| {
                let name = events::table_name("r1");
                ctx.open_table(events::table(&name))?.remove(2)?;
                Ok(Ok::<_, StoreError>(()))
            })
            .await
            .unwrap();
        let damaged = copied.check().unwrap();
        assert_eq!(damaged.problems, vec!["room r1: seq 3 follows 1 (a gap)".to_string()]);
    }
}
