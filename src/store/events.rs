//! The room event log: the one narrow interface for seq assignment and reading ranges, so the
//! log can later move to another engine (DESIGN.md: cluster mode on JetStream).
//!
//! Invariant: a room's seqs are 1, 2, 3, ... with no gap. A seq is assigned only inside a write
//! transaction, as the room's last key + 1, so two appends can never get the same seq and a
//! failed transaction leaves no hole.

use redb::ReadableTable;

use super::tables::ROOM_EVENTS;
use super::{Snapshot, StoreError, decode};
use crate::proto::RoomEvent;

/// The room's last seq (0 when it has no events).
pub fn last_seq(s: &impl Snapshot, room: &str) -> Result<u64, StoreError> {
    let t = s.table(ROOM_EVENTS)?;
    let mut range = t.range((room, 0)..=(room, u64::MAX))?;
    Ok(match range.next_back() {
        Some(row) => row?.0.value().1,
        None => 0,
    })
}

/// Appends `event` with the room's next seq (written into `event.seq`, and into the message's
/// own `seq` for a message) and returns that seq.
pub fn append(tx: &redb::WriteTransaction, event: &mut RoomEvent) -> Result<u64, StoreError> {
    let seq = last_seq(tx, &event.room_id)? + 1;
    event.seq = seq;
    if let Some(crate::proto::room_event::Kind::Message(m)) = &mut event.kind {
        m.seq = seq;
    }
    let bytes = prost::Message::encode_to_vec(&*event);
    tx.open_table(ROOM_EVENTS)?.insert((event.room_id.as_str(), seq), bytes.as_slice())?;
    Ok(seq)
}

/// One event.
pub fn get(s: &impl Snapshot, room: &str, seq: u64) -> Result<Option<RoomEvent>, StoreError> {
    let t = s.table(ROOM_EVENTS)?;
    let v = t.get((room, seq))?;
    v.map(|v| decode("room_events", v.value())).transpose()
}

/// Rewrites an existing event in place (a message's latest text after an edit, or its
/// tombstone after a delete). The seq never changes.
pub fn replace(tx: &redb::WriteTransaction, event: &RoomEvent) -> Result<(), StoreError> {
    let bytes = prost::Message::encode_to_vec(event);
    tx.open_table(ROOM_EVENTS)?.insert((event.room_id.as_str(), event.seq), bytes.as_slice())?;
    Ok(())
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
    let t = s.table(ROOM_EVENTS)?;
    let rows = t.range((room, after + 1)..=(room, before - 1))?;
    let more = if newest {
        let more = take(rows.rev(), limit, &mut out)?;
        out.reverse();
        more
    } else {
        take(rows, limit, &mut out)?
    };
    Ok((out, more))
}

/// One row of a `room_events` range.
type Row<'a> = Result<
    (redb::AccessGuard<'a, (&'static str, u64)>, redb::AccessGuard<'a, &'static [u8]>),
    redb::StorageError,
>;

/// Decodes up to `limit` rows into `out`; whether rows were left over.
fn take<'a>(
    rows: impl Iterator<Item = Row<'a>>,
    limit: usize,
    out: &mut Vec<RoomEvent>,
) -> Result<bool, StoreError> {
    for row in rows {
        if out.len() == limit {
            return Ok(true);
        }
        let (_, v) = row?;
        out.push(decode("room_events", v.value())?);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn ev(room: &str) -> RoomEvent {
        RoomEvent { room_id: room.into(), ..Default::default() }
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
    }
}
