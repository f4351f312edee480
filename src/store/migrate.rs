//! Upgrades a file written by an older edgechat, at open, before anything reads it.
//!
//! Schema 1 -> 2: room events and the message index move from one shared table keyed
//! `(room, seq)` into a table per room (see `events`). The move goes in chunks, each its own
//! transaction that inserts the rows into their new tables and removes them from the old one,
//! so a kill at any point leaves a file that is consistent and resumes where it stopped
//! (while the old tables exist, the move goes on, whatever the version says). The first chunk
//! already sets the version to 2, so an older edgechat refuses a half-moved file instead of
//! appending to its half-empty old tables; the last one drops the old tables.
//!
//! Schema 2 -> 3: the search index (`search`) gets every message stored before it existed.
//! The first transaction sets the version to 3 and lists every room in `search_backfill`
//! with the next seq to index; each chunk indexes up to [`CHUNK`] events of the first room
//! listed and moves its mark on (or drops the room), so a kill resumes where it stopped; the
//! last one drops the table. Indexing what is indexed already changes nothing.

use redb::{ReadableDatabase, ReadableTable};

use super::tables::{
    META, META_SCHEMA_VERSION, ROOM_EVENTS, ROOM_MESSAGES, ROOMS, SEARCH_BACKFILL,
};
use super::{StoreError, events, search, unread};

/// Rows moved per transaction (bounds the transaction's dirty pages and the memory held).
const CHUNK: usize = 10_000;

/// Brings the file from `found` to the current schema (or finishes an upgrade an earlier start
/// began). Returns how many rows it moved or indexed.
pub(super) fn run(db: &redb::Database, found: u64) -> Result<u64, StoreError> {
    Ok(to_2(db, found)? + to_3(db, found)?)
}

fn table_exists(db: &redb::Database, name: &str) -> Result<bool, StoreError> {
    let tx = db.begin_read()?;
    let found = tx.list_tables()?.any(|t| redb::TableHandle::name(&t) == name);
    Ok(found)
}

/// Schema 2 -> 3: indexes every stored message for search.
fn to_3(db: &redb::Database, found: u64) -> Result<u64, StoreError> {
    let pending = table_exists(db, redb::TableHandle::name(&SEARCH_BACKFILL))?;
    if found >= 3 && !pending {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    if !pending {
        let tx = db.begin_write()?;
        tx.open_table(META)?.insert(META_SCHEMA_VERSION, 3)?;
        let rooms: Vec<String> = {
            let t = tx.open_table(ROOMS)?;
            t.iter()?.map(|r| r.map(|(k, _)| k.value().to_string())).collect::<Result<_, _>>()?
        };
        let mut todo = tx.open_table(SEARCH_BACKFILL)?;
        for room in &rooms {
            todo.insert(room.as_str(), 1)?;
        }
        drop(todo);
        tx.commit()?;
    }
    let (mut indexed, mut next_log) = (0, 100_000);
    loop {
        let tx = db.begin_write()?;
        let next = {
            let todo = tx.open_table(SEARCH_BACKFILL)?;
            let first = todo.first()?;
            first.map(|(k, v)| (k.value().to_string(), v.value()))
        };
        let Some((room, from)) = next else {
            tx.delete_table(SEARCH_BACKFILL)?;
            tx.commit()?;
            break;
        };
        // Read raw: an event that does not decode is left out of the index (and named by
        // `check`), not a file that no longer starts.
        let rows: Vec<(u64, Vec<u8>)> = {
            let name = events::table_name(&room);
            let t = tx.open_table(events::table(&name))?;
            let rows = t.range(from..)?.take(CHUNK + 1);
            rows.map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
                .collect::<Result<_, _>>()?
        };
        let more = rows.len() > CHUNK;
        for (seq, bytes) in rows.iter().take(CHUNK) {
            if let Ok(ev) = events::unpack(&room, *seq, bytes)
                && let Some(crate::proto::room_event::Kind::Message(m)) = &ev.kind
            {
                search::add(&tx, &room, *seq, &crate::search::words(&m.text))?;
            }
        }
        let mut todo = tx.open_table(SEARCH_BACKFILL)?;
        match rows.get(CHUNK) {
            Some((next, _)) if more => todo.insert(room.as_str(), *next).map(|_| ())?,
            _ => todo.remove(room.as_str()).map(|_| ())?,
        }
        drop(todo);
        tx.commit()?;
        indexed += rows.len().min(CHUNK) as u64;
        if indexed >= next_log {
            tracing::info!(indexed, "upgrading the database to schema 3 (the search index)");
            next_log += 100_000;
        }
    }
    if indexed > 0 {
        tracing::info!(
            indexed,
            secs = started.elapsed().as_secs_f64(),
            "database upgraded to schema 3: every stored message is searchable"
        );
    }
    Ok(indexed)
}

/// Schema 1 -> 2: room events into a table per room.
fn to_2(db: &redb::Database, found: u64) -> Result<u64, StoreError> {
    let pending = {
        let tx = db.begin_read()?;
        let names: Vec<String> =
            tx.list_tables()?.map(|t| redb::TableHandle::name(&t).to_string()).collect();
        names.iter().any(|n| n == "room_events" || n == "room_messages")
    };
    if found >= 2 && !pending {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let mut moved = 0;
    loop {
        let tx = db.begin_write()?;
        tx.open_table(META)?.insert(META_SCHEMA_VERSION, 2)?;
        let n = move_events(&tx)? + move_index(&tx)?;
        if n == 0 {
            if open(&tx, ROOM_EVENTS)?.is_some() {
                tx.delete_table(ROOM_EVENTS)?;
            }
            if open(&tx, ROOM_MESSAGES)?.is_some() {
                tx.delete_table(ROOM_MESSAGES)?;
            }
            tx.commit()?;
            break;
        }
        tx.commit()?;
        moved += n;
        tracing::info!(moved, "upgrading the database to schema 2 (a table per room)");
    }
    if moved > 0 {
        tracing::info!(
            moved,
            secs = started.elapsed().as_secs_f64(),
            "database upgraded to schema 2"
        );
    }
    Ok(moved)
}

/// Moves up to [`CHUNK`] of the oldest `room_events` rows; how many.
fn move_events(tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let rows: Vec<(String, u64, Vec<u8>)> = {
        let Some(old) = open(tx, ROOM_EVENTS)? else { return Ok(0) };
        let mut rows = Vec::new();
        for row in old.iter()?.take(CHUNK) {
            let (k, v) = row?;
            let (room, seq) = k.value();
            rows.push((room.to_string(), seq, v.value().to_vec()));
        }
        rows
    };
    for (room, seq, bytes) in &rows {
        events::put_raw(tx, room, *seq, bytes)?;
    }
    remove_moved(tx, ROOM_EVENTS, &rows)
}

/// Moves up to [`CHUNK`] of the oldest `room_messages` rows; how many.
fn move_index(tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let rows: Vec<(String, u64, String)> = {
        let Some(old) = open(tx, ROOM_MESSAGES)? else { return Ok(0) };
        let mut rows = Vec::new();
        for row in old.iter()?.take(CHUNK) {
            let (k, v) = row?;
            let (room, seq) = k.value();
            rows.push((room.to_string(), seq, v.value().to_string()));
        }
        rows
    };
    for (room, seq, sender) in &rows {
        unread::index_message(tx, room, *seq, sender)?;
    }
    remove_moved(tx, ROOM_MESSAGES, &rows)
}

/// Removes the moved rows (the first `rows.len()` of the table, so one key range).
fn remove_moved<V: redb::Value + 'static, T>(
    tx: &redb::WriteTransaction,
    def: redb::TableDefinition<(&str, u64), V>,
    rows: &[(String, u64, T)],
) -> Result<u64, StoreError> {
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let mut t = tx.open_table(def)?;
        t.retain_in((first.0.as_str(), first.1)..=(last.0.as_str(), last.1), |_, _| false)?;
    }
    Ok(rows.len() as u64)
}

/// A schema-1 table keyed `(room, seq)`.
type OldTable<'t, V> = redb::Table<'t, (&'static str, u64), V>;

/// A schema-1 table, if the file has it (a file created by schema 2 never did).
fn open<'t, V: redb::Value + 'static>(
    tx: &'t redb::WriteTransaction,
    def: redb::TableDefinition<(&str, u64), V>,
) -> Result<Option<OldTable<'t, V>>, StoreError> {
    let exists =
        tx.list_tables()?.any(|t| redb::TableHandle::name(&t) == redb::TableHandle::name(&def));
    Ok(if exists { Some(tx.open_table(def)?) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Message, RoomEvent, room_event::Kind};
    use crate::store::{Store, tables};

    /// A schema-1 file as an older edgechat wrote it: events stored whole, one shared table.
    fn schema_1_file(path: &std::path::Path, per_room: u64) {
        let db = redb::Database::create(path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META).unwrap().insert(META_SCHEMA_VERSION, 1).unwrap();
        tables::create_all(&tx).unwrap();
        {
            let mut ev = tx.open_table(ROOM_EVENTS).unwrap();
            let mut ix = tx.open_table(ROOM_MESSAGES).unwrap();
            let mut rooms = tx.open_table(tables::ROOMS).unwrap();
            for room in ["ra", "rb"] {
                let rec = crate::store::RoomRecord { id: room.into(), ..Default::default() };
                rooms.insert(room, prost::Message::encode_to_vec(&rec).as_slice()).unwrap();
                for seq in 1..=per_room {
                    let sender = if seq % 2 == 0 { "u1" } else { "u2" };
                    let e = RoomEvent {
                        room_id: room.into(),
                        seq,
                        at_ms: 5,
                        actor_id: sender.into(),
                        kind: Some(Kind::Message(Message {
                            room_id: room.into(),
                            seq,
                            sender_id: sender.into(),
                            text: format!("{room} {seq}"),
                            sent_at_ms: 5,
                            ..Default::default()
                        })),
                    };
                    ev.insert((room, seq), prost::Message::encode_to_vec(&e).as_slice()).unwrap();
                    ix.insert((room, seq), sender).unwrap();
                }
            }
        }
        tx.commit().unwrap();
    }

    /// Every seq of `room` with all of `words`, newest first.
    fn found(tx: &redb::ReadTransaction, room: &str, words: &[&str]) -> Vec<u64> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let mut search = search::RoomSearch::new(room, &words);
        let (mut out, mut at_most) = (Vec::new(), u64::MAX);
        while let Some(seq) = search.next(tx, at_most).unwrap() {
            out.push(seq);
            at_most = seq - 1;
        }
        out
    }

    #[test]
    fn an_interrupted_search_backfill_resumes_at_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        schema_1_file(&path, 6);
        drop(Store::open(&path, 1 << 20).unwrap());
        // As if killed while indexing "ra" from seq 4, with "rb" still to do: the index of
        // both rooms emptied, the mark put back.
        {
            let db = redb::Database::open(&path).unwrap();
            let tx = db.begin_write().unwrap();
            for room in ["ra", "rb"] {
                tx.delete_table(search::table(&search::table_name(room))).unwrap();
            }
            let mut todo = tx.open_table(SEARCH_BACKFILL).unwrap();
            todo.insert("ra", 4).unwrap();
            todo.insert("rb", 1).unwrap();
            drop(todo);
            tx.commit().unwrap();
        }
        let store = Store::open(&path, 1 << 20).unwrap();
        let tx = store.read().unwrap();
        assert_eq!(found(&tx, "ra", &["ra"]), [6, 5, 4], "seqs before the mark were done");
        assert_eq!(found(&tx, "rb", &["rb"]), [6, 5, 4, 3, 2, 1]);
        assert!(
            tx.list_tables().unwrap().all(|t| redb::TableHandle::name(&t) != "search_backfill")
        );
    }

    #[test]
    fn a_schema_1_file_moves_in_chunks_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let per_room = CHUNK as u64 / 2 + 7; // more rows than one chunk
        schema_1_file(&path, per_room);
        // An upgrade killed after its first chunk (which already says version 2): the next
        // open finishes the move.
        {
            let db = redb::Database::open(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert(META_SCHEMA_VERSION, 2).unwrap();
            assert_eq!(move_events(&tx).unwrap(), CHUNK as u64);
            tx.commit().unwrap();
        }
        let store = Store::open(&path, 1 << 20).unwrap();
        assert_eq!(store.schema_version().unwrap(), 3);
        let tx = store.read().unwrap();
        assert!(tx.list_tables().unwrap().all(|t| {
            let name = redb::TableHandle::name(&t).to_string();
            name != "room_events" && name != "room_messages" && name != "search_backfill"
        }));
        // And then 2 -> 3: every message is searchable ("ra 5000" has the words ra, 5000).
        assert_eq!(found(&tx, "ra", &["ra"]).len() as u64, per_room);
        assert_eq!(found(&tx, "ra", &["5000", "ra"]), [5000]);
        assert_eq!(found(&tx, "rb", &["ra"]), Vec::<u64>::new());
        for room in ["ra", "rb"] {
            assert_eq!(events::last_seq(&tx, room).unwrap(), per_room);
            let (all, more) = events::range(&tx, room, 0, u64::MAX, usize::MAX, false).unwrap();
            assert!(!more);
            assert_eq!(all.len() as u64, per_room);
            for (i, e) in all.iter().enumerate() {
                let Some(Kind::Message(m)) = &e.kind else { panic!("{e:?}") };
                assert_eq!(
                    (e.seq, m.seq, m.text.clone()),
                    (i as u64 + 1, e.seq, format!("{room} {}", e.seq))
                );
                assert_eq!((e.room_id.as_str(), m.room_id.as_str(), m.sent_at_ms), (room, room, 5));
            }
            // u1 sent the even seqs: after seq 10, the odd ones are unread for u1.
            let unread = unread::unread_count(&tx, room, "u1", 10).unwrap();
            assert_eq!(unread, (per_room - 10).div_ceil(2));
        }
        drop(tx);
        drop(store);
        assert_eq!(
            Store::open(&path, 1 << 20).unwrap().check().unwrap().problems,
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_damaged_schema_1_event_moves_as_it_is_and_check_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        schema_1_file(&path, 3);
        {
            let db = redb::Database::open(&path).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(ROOM_EVENTS)
                .unwrap()
                .insert(("ra", 4), b"\xff\xff\xff".as_slice())
                .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path, 1 << 20).expect("a damaged record does not stop a start");
        let problems = store.check().unwrap().problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("room ra seq 4:"), "{problems:?}");
    }
}
