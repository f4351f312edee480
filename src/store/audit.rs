//! The audit log of moderation and admin acts: one server-wide gapless sequence, written in
//! the transaction of the act it records, so an act and its entry are durable together.
//!
//! Layout: `audit`: id -> `proto::AuditEntry`; `audit_by_room`: (room id, id) -> () for the
//! entries of a room. The oldest entries are dropped past `keep` (one per append: the one that
//! just fell off the end).

use redb::ReadableTable;

use super::tables::{AUDIT, AUDIT_BY_ROOM};
use super::{Snapshot, StoreError, decode};
use crate::proto::AuditEntry;

/// Appends `e` with the next id (written into `e.id`), dropping the oldest past `keep`.
pub fn append(
    tx: &redb::WriteTransaction,
    e: &mut AuditEntry,
    keep: usize,
) -> Result<u64, StoreError> {
    let mut t = tx.open_table(AUDIT)?;
    let id = t.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
    e.id = id;
    t.insert(id, prost::Message::encode_to_vec(&*e).as_slice())?;
    let mut by_room = tx.open_table(AUDIT_BY_ROOM)?;
    if !e.room_id.is_empty() {
        by_room.insert((e.room_id.as_str(), id), ())?;
    }
    let oldest_kept = id.saturating_sub(keep as u64) + 1;
    let stale: Vec<(u64, String)> = t
        .range(..oldest_kept)?
        .map(|r| {
            let (k, v) = r?;
            let old: AuditEntry = decode("audit", v.value())?;
            Ok((k.value(), old.room_id))
        })
        .collect::<Result<_, StoreError>>()?;
    for (old, room) in stale {
        t.remove(old)?;
        if !room.is_empty() {
            by_room.remove((room.as_str(), old))?;
        }
    }
    Ok(id)
}

/// Entries with id > `after`, at most `limit`, ascending.
pub fn after(s: &impl Snapshot, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
    let t = s.table(AUDIT)?;
    let mut out = Vec::new();
    for row in t.range(after.saturating_add(1)..)?.take(limit) {
        out.push(decode("audit", row?.1.value())?);
    }
    Ok(out)
}

/// The room's entries with id > `after`, at most `limit`, ascending.
pub fn room_after(
    s: &impl Snapshot,
    room: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let (index, t) = (s.table(AUDIT_BY_ROOM)?, s.table(AUDIT)?);
    let mut out = Vec::new();
    for row in index.range((room, after.saturating_add(1))..=(room, u64::MAX))?.take(limit) {
        let id = row?.0.value().1;
        if let Some(v) = t.get(id)? {
            out.push(decode("audit", v.value())?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[tokio::test]
    async fn ids_are_gapless_and_the_oldest_fall_off_with_their_room_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1 << 20).unwrap();
        let writer = store.start_writer(Box::new(|_| {}));
        let ids = writer
            .write(|ctx| {
                let mut ids = Vec::new();
                for i in 0..5 {
                    let room = if i % 2 == 0 { "a" } else { "" };
                    let mut e = AuditEntry { room_id: room.into(), ..Default::default() };
                    ids.push(append(ctx, &mut e, 3)?);
                }
                Ok(Ok::<_, StoreError>(ids))
            })
            .await
            .unwrap();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        let tx = store.read().unwrap();
        let kept: Vec<u64> = after(&tx, 0, 10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(kept, [3, 4, 5], "the newest 3 kept");
        let in_a: Vec<u64> = room_after(&tx, "a", 0, 10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(in_a, [3, 5], "entry 1 of room a went with its index row");
        let rows =
            redb::ReadableTableMetadata::len(&tx.open_table(AUDIT_BY_ROOM).unwrap()).unwrap();
        assert_eq!(rows, 2);
        let paged: Vec<u64> = after(&tx, 3, 1).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(paged, [4]);
    }
}
