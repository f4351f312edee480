//! The room event log: the one narrow interface for seq assignment and reading ranges, so the
//! log can later move to another engine (DESIGN.md: cluster mode on JetStream).
//!
//! Invariant: a room's seqs are gapless from its first retained seq to its last. A seq is
//! assigned only inside a write transaction, as the room's last key + 1, so two appends can
//! never get the same seq and a failed transaction leaves no hole. Retention removes events
//! only from the front and never a room's last event (it carries the room's seq).
//!
//! Layout (schema 2): one table per room, `events/<room id>`: seq -> the event, stored without
//! what the key and the event already say (room id, seq, the message's sender when it is the
//! actor, its time when it is the event's). One tree per room means every append goes to the
//! right edge of its tree, where redb leaves full pages behind; with all rooms in one table
//! keyed `(room, seq)`, appends landed inside the tree and left half-empty pages (issue 14:
//! 1,635 bytes per 128-byte message measured here).

use redb::{ReadableTable, TableDefinition};

use super::{Snapshot, StoreError, decode};
use crate::proto::RoomEvent;
use crate::proto::room_event::Kind;

/// Per-room event tables are named this plus the room id.
pub(super) const TABLE_PREFIX: &str = "events/";

/// The name of a room's event table.
pub(super) fn table_name(room: &str) -> String {
    format!("{TABLE_PREFIX}{room}")
}

/// A room's event table.
pub(super) fn table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// The room's last seq (0 when it has no events).
pub fn last_seq(s: &impl Snapshot, room: &str) -> Result<u64, StoreError> {
    let name = table_name(room);
    let Some(t) = s.table_opt(table(&name))? else { return Ok(0) };
    Ok(t.last()?.map(|(k, _)| k.value()).unwrap_or(0))
}

/// The room's first retained seq: 1 unless retention removed older events (and 1 for a room
/// without events).
pub fn first_seq(s: &impl Snapshot, room: &str) -> Result<u64, StoreError> {
    let name = table_name(room);
    let Some(t) = s.table_opt(table(&name))? else { return Ok(1) };
    Ok(t.first()?.map(|(k, _)| k.value()).unwrap_or(1))
}

/// Appends `event` with the room's next seq (written into `event.seq`, and into the message's
/// own `seq` for a message) and returns that seq.
///
/// The event's `at_ms` is raised to the last event's when it is below it, so time never falls
/// within a room: two changes stamped a millisecond apart can reach the writer in either
/// order, and a search pages across rooms by time (`chat::search` finds a room's place in a
/// page by bisecting its events by `at_ms`). The message keeps its own `sent_at_ms`.
pub fn append(tx: &redb::WriteTransaction, event: &mut RoomEvent) -> Result<u64, StoreError> {
    // One open of the room's table for the read of its last event and the insert: the writer
    // does this for every send, and each open is a lookup in redb's table tree.
    let name = table_name(&event.room_id);
    let mut t = tx.open_table(table(&name))?;
    let (seq, last_at_ms) = match t.last()? {
        // A last event that does not decode (`check` names it) does not stop the room.
        Some((k, v)) => {
            let at = decode::<RoomEvent>("events", v.value()).map_or(i64::MIN, |e| e.at_ms);
            (k.value() + 1, at)
        }
        None => (1, i64::MIN),
    };
    event.at_ms = event.at_ms.max(last_at_ms);
    event.seq = seq;
    if let Some(Kind::Message(m)) = &mut event.kind {
        m.seq = seq;
        m.room_id.clone_from(&event.room_id);
    }
    let bytes = prost::Message::encode_to_vec(&pack(event));
    t.insert(seq, bytes.as_slice())?;
    Ok(seq)
}

/// The last seq of `room` whose event's `at_ms` is at or before `at_ms` (0: none), by
/// bisection: `at_ms` does not fall within a room (see [`append`]).
pub fn last_at_or_before(s: &impl Snapshot, room: &str, at_ms: i64) -> Result<u64, StoreError> {
    let name = table_name(room);
    let Some(t) = s.table_opt(table(&name))? else { return Ok(0) };
    let (Some((first, _)), Some((last, _))) = (t.first()?, t.last()?) else { return Ok(0) };
    // Invariant: every seq below `lo` is at or before `at_ms`, every seq above `hi` after it.
    let (mut lo, mut hi) = (first.value(), last.value());
    let mut found = 0;
    while lo <= hi {
        let mid = lo + (hi - lo) / 2;
        let at = match t.get(mid)? {
            Some(v) => unpack(room, mid, v.value())?.at_ms,
            // Seqs are gapless from the first to the last; a hole is a damaged file.
            None => {
                return Err(StoreError::Corrupt {
                    table: "events",
                    message: format!("room {room}: no event {mid} between {lo} and {hi}"),
                });
            }
        };
        if at <= at_ms {
            found = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    Ok(found)
}

/// One event.
pub fn get(s: &impl Snapshot, room: &str, seq: u64) -> Result<Option<RoomEvent>, StoreError> {
    let name = table_name(room);
    let Some(t) = s.table_opt(table(&name))? else { return Ok(None) };
    let v = t.get(seq)?;
    v.map(|v| unpack(room, seq, v.value())).transpose()
}

/// Rewrites an existing event in place (a message's latest text after an edit, or its
/// tombstone after a delete). The seq never changes.
pub fn replace(tx: &redb::WriteTransaction, event: &RoomEvent) -> Result<(), StoreError> {
    put(tx, event)
}

fn put(tx: &redb::WriteTransaction, event: &RoomEvent) -> Result<(), StoreError> {
    let bytes = prost::Message::encode_to_vec(&pack(event));
    let name = table_name(&event.room_id);
    tx.open_table(table(&name))?.insert(event.seq, bytes.as_slice())?;
    Ok(())
}

/// The stored form: what the key (room, seq) and the event itself say is left out.
fn pack(event: &RoomEvent) -> RoomEvent {
    let mut e = event.clone();
    e.room_id.clear();
    e.seq = 0;
    if let Some(Kind::Message(m)) = &mut e.kind {
        m.room_id.clear();
        m.seq = 0;
        if m.sender_id == e.actor_id {
            m.sender_id.clear();
        }
        if m.sent_at_ms == e.at_ms {
            m.sent_at_ms = 0;
        }
    }
    e
}

/// Decodes a stored event and puts back what [`pack`] left out. (Events stored whole, by
/// schema 1, decode the same: their fields are simply already there.)
pub(super) fn unpack(room: &str, seq: u64, bytes: &[u8]) -> Result<RoomEvent, StoreError> {
    let mut e: RoomEvent = decode("events", bytes)?;
    room.clone_into(&mut e.room_id);
    e.seq = seq;
    if let Some(Kind::Message(m)) = &mut e.kind {
        room.clone_into(&mut m.room_id);
        m.seq = seq;
        if m.sender_id.is_empty() {
            m.sender_id.clone_from(&e.actor_id);
        }
        if m.sent_at_ms == 0 {
            m.sent_at_ms = e.at_ms;
        }
    }
    Ok(e)
}

/// Stores an event under its own room and seq as schema 1 kept it (the migration's write).
pub(super) fn put_raw(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    bytes: &[u8],
) -> Result<(), StoreError> {
    match unpack(room, seq, bytes) {
        Ok(event) => put(tx, &event),
        // A damaged record moves as it is (a start must not fail on it; `check` names it).
        Err(e) => {
            tracing::warn!(room, seq, error = %e, "moving an undecodable event unchanged");
            let name = table_name(room);
            tx.open_table(table(&name))?.insert(seq, bytes)?;
            Ok(())
        }
    }
}

/// Events with `after < seq < before` (`before = u64::MAX` for no upper bound), at most
/// `limit`, ascending. `newest` picks the newest `limit` of the range instead of the oldest.
/// Returns the events and whether more exist in the range beyond those returned.
pub fn range(
    s: &impl Snapshot,
    room: &str,
    after: u64,
    before: u64,
    limit: usize,
    newest: bool,
) -> Result<(Vec<RoomEvent>, bool), StoreError> {
    let mut out = Vec::with_capacity(limit.min(512));
    if before <= after.saturating_add(1) {
        return Ok((out, false));
    }
    let name = table_name(room);
    let Some(t) = s.table_opt(table(&name))? else { return Ok((out, false)) };
    let rows = t.range(after + 1..=before - 1)?;
    let more = if newest {
        let more = take(room, rows.rev(), limit, &mut out)?;
        out.reverse();
        more
    } else {
        take(room, rows, limit, &mut out)?
    };
    Ok((out, more))
}

/// One row of an event table range.
type Row<'a> =
    Result<(redb::AccessGuard<'a, u64>, redb::AccessGuard<'a, &'static [u8]>), redb::StorageError>;

/// Decodes up to `limit` rows into `out`; whether rows were left over.
fn take<'a>(
    room: &str,
    rows: impl Iterator<Item = Row<'a>>,
    limit: usize,
    out: &mut Vec<RoomEvent>,
) -> Result<bool, StoreError> {
    for row in rows {
        if out.len() == limit {
            return Ok(true);
        }
        let (k, v) = row?;
        out.push(unpack(room, k.value(), v.value())?);
    }
    Ok(false)
}

/// Removes at most `limit` of the room's oldest events for which `expired(seq, event)` holds,
/// stopping at the first that does not, and never the room's last event. Returns the removed
/// events (their seqs ascending), so the caller can drop what indexes them.
pub fn prune_front(
    tx: &redb::WriteTransaction,
    room: &str,
    limit: usize,
    mut expired: impl FnMut(u64, &RoomEvent) -> bool,
) -> Result<Vec<RoomEvent>, StoreError> {
    let name = table_name(room);
    let mut t = tx.open_table(table(&name))?;
    let last = t.last()?.map(|(k, _)| k.value()).unwrap_or(0);
    let mut old = Vec::new();
    for row in t.range(..last)? {
        if old.len() == limit {
            break;
        }
        let (k, v) = row?;
        let e = unpack(room, k.value(), v.value())?;
        if !expired(e.seq, &e) {
            break;
        }
        old.push(e);
    }
    if let (Some(first), Some(end)) = (old.first(), old.last()) {
        t.retain_in(first.seq..=end.seq, |_, _| false)?;
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Message;
    use crate::store::Store;

    fn ev(room: &str) -> RoomEvent {
        RoomEvent { room_id: room.into(), ..Default::default() }
    }

    #[test]
    fn time_never_falls_within_a_room_and_bisects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let tx = store.db.begin_write().unwrap();
        let mut stamped = Vec::new();
        for at_ms in [10, 5, 20, 30, 30, 40] {
            let mut e = RoomEvent { at_ms, ..ev("a") };
            append(&tx, &mut e).unwrap();
            stamped.push(e.at_ms);
        }
        assert_eq!(stamped, [10, 10, 20, 30, 30, 40], "5 came after 10: raised to 10");
        tx.commit().unwrap();
        let tx = store.read().unwrap();
        let at = |ms| last_at_or_before(&tx, "a", ms).unwrap();
        assert_eq!([at(9), at(10), at(19), at(25), at(30), at(40), at(99)], [0, 2, 2, 3, 5, 6, 6]);
        assert_eq!(last_at_or_before(&tx, "none", 50).unwrap(), 0);
    }

    #[tokio::test]
    async fn seqs_are_gapless_per_room_and_ranges_page_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        let seqs = writer
            .write(|ctx| {
                let mut out = vec![];
                for i in 0..10 {
                    let room = if i % 2 == 0 { "a" } else { "b" };
                    out.push(append(ctx, &mut ev(room))?);
                }
                Ok(Ok::<_, StoreError>(out))
            })
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        let tx = store.read().unwrap();
        assert_eq!(last_seq(&tx, "a").unwrap(), 5);
        assert_eq!(last_seq(&tx, "c").unwrap(), 0);
        assert_eq!((first_seq(&tx, "a").unwrap(), first_seq(&tx, "c").unwrap()), (1, 1));
        let seqs_of = |v: Vec<RoomEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
        let (v, more) = range(&tx, "a", 0, u64::MAX, 2, true).unwrap();
        assert_eq!((seqs_of(v), more), (vec![4, 5], true));
        let (v, more) = range(&tx, "a", 0, 4, 2, true).unwrap();
        assert_eq!((seqs_of(v), more), (vec![2, 3], true));
        let (v, more) = range(&tx, "a", 0, 2, 2, true).unwrap();
        assert_eq!((seqs_of(v), more), (vec![1], false));
        let (v, more) = range(&tx, "a", 3, u64::MAX, 2, false).unwrap();
        assert_eq!((seqs_of(v), more), (vec![4, 5], false));
        let (v, more) = range(&tx, "a", 1, u64::MAX, 2, false).unwrap();
        assert_eq!((seqs_of(v), more), (vec![2, 3], true));
        let (v, _) = range(&tx, "a", 1, 5, 10, true).unwrap();
        assert_eq!(seqs_of(v), vec![2, 3, 4]);
        assert!(range(&tx, "a", 3, 4, 10, true).unwrap().0.is_empty());
        assert!(range(&tx, "nowhere", 0, u64::MAX, 10, true).unwrap().0.is_empty());
        assert_eq!(get(&tx, "nowhere", 1).unwrap(), None);
    }

    #[test]
    fn the_stored_form_leaves_out_only_what_it_can_put_back() {
        let message = |sender: &str, sent: i64| RoomEvent {
            room_id: "r1".into(),
            seq: 7,
            at_ms: 1000,
            actor_id: "u1".into(),
            kind: Some(Kind::Message(Message {
                room_id: "r1".into(),
                seq: 7,
                sender_id: sender.into(),
                text: "hi".into(),
                sent_at_ms: sent,
                client_message_id: "c".into(),
                ..Default::default()
            })),
        };
        for e in [message("u1", 1000), message("u2", 999), ev("r1")] {
            let e = RoomEvent { seq: 7, ..e };
            let bytes = prost::Message::encode_to_vec(&pack(&e));
            assert_eq!(unpack("r1", 7, &bytes).unwrap(), e);
            // Schema 1 stored events whole; they read the same.
            let whole = prost::Message::encode_to_vec(&e);
            assert_eq!(unpack("r1", 7, &whole).unwrap(), e);
            assert!(bytes.len() < whole.len() || e.kind.is_none());
        }
    }

    #[tokio::test]
    async fn pruning_takes_the_oldest_and_never_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        let pruned = writer
            .write(|ctx| {
                for _ in 0..6 {
                    append(ctx, &mut ev("a"))?;
                }
                let two = prune_front(ctx, "a", 2, |_, _| true)?;
                let upto4 = prune_front(ctx, "a", 10, |seq, _| seq <= 4)?;
                let all = prune_front(ctx, "a", 10, |_, _| true)?;
                let seqs = |v: Vec<RoomEvent>| v.iter().map(|e| e.seq).collect::<Vec<_>>();
                Ok(Ok::<_, StoreError>((seqs(two), seqs(upto4), seqs(all))))
            })
            .await
            .unwrap();
        assert_eq!(pruned, (vec![1, 2], vec![3, 4], vec![5]));
        let tx = store.read().unwrap();
        assert_eq!((first_seq(&tx, "a").unwrap(), last_seq(&tx, "a").unwrap()), (6, 6));
        drop(tx);
        let next =
            writer.write(|ctx| Ok(Ok::<_, StoreError>(append(ctx, &mut ev("a"))?))).await.unwrap();
        assert_eq!(next, 7, "seqs go on after pruning");
    }
}
