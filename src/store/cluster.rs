//! A cluster node's view bookkeeping (cluster mode only; a single-node database never has
//! these tables): for each room, its last seq and where that event sits in the shared log,
//! and how far the node has applied the log. Written in the same transaction as the events
//! they describe, so after a crash the view resumes exactly after what it holds.

use super::events;
use super::tables::{CLUSTER_APPLIED, CLUSTER_META, CLUSTER_ROOMS};
use super::{Snapshot, StoreError};
use crate::proto::RoomEvent;

/// Where a room's last event is: its room seq and its position in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The room seq (0: the room has no events yet).
    pub seq: u64,
    /// The log position (JetStream stream sequence) of that event; 0 with `seq` 0.
    pub at: u64,
}

/// The room's last applied event (zeros for a room the log has not shown yet).
pub fn room_position(s: &impl Snapshot, room: &str) -> Result<Position, StoreError> {
    use redb::ReadableTable;
    let Some(t) = s.table_opt(CLUSTER_ROOMS)? else { return Ok(Position::default()) };
    Ok(t.get(room)?.map(|v| v.value()).map(|(seq, at)| Position { seq, at }).unwrap_or_default())
}

/// The last log position this view applied (0: none).
pub fn applied(s: &impl Snapshot) -> Result<u64, StoreError> {
    use redb::ReadableTable;
    let Some(t) = s.table_opt(CLUSTER_META)? else { return Ok(0) };
    Ok(t.get(CLUSTER_APPLIED)?.map(|v| v.value()).unwrap_or(0))
}

/// Stores `event` (which must carry the room's next seq: the caller judged it with
/// `cluster::view::judge`) found at log position `at`, and moves the room's position and the
/// view's applied position to it.
pub fn apply(tx: &redb::WriteTransaction, event: &RoomEvent, at: u64) -> Result<(), StoreError> {
    let mut stored = event.clone();
    let seq = events::append(tx, &mut stored)?;
    if seq != event.seq {
        return Err(StoreError::Corrupt {
            table: "cluster_rooms",
            message: format!(
                "room {} holds events up to {} but its log position says {}",
                event.room_id,
                seq - 1,
                event.seq - 1
            ),
        });
    }
    tx.open_table(CLUSTER_ROOMS)?.insert(event.room_id.as_str(), (seq, at))?;
    set_applied(tx, at)
}

/// Moves the applied position past a log entry that changed nothing in the view (a repeat).
pub fn set_applied(tx: &redb::WriteTransaction, at: u64) -> Result<(), StoreError> {
    tx.open_table(CLUSTER_META)?.insert(CLUSTER_APPLIED, at)?;
    Ok(())
}

/// The `cluster_meta` key marking a stopped room.
fn halted_key(room: &str) -> String {
    format!("halted/{room}")
}

/// Marks `room` stopped: the log disagreed with the view at position `at`.
pub fn halt(tx: &redb::WriteTransaction, room: &str, at: u64) -> Result<(), StoreError> {
    tx.open_table(CLUSTER_META)?.insert(halted_key(room).as_str(), at)?;
    Ok(())
}

/// Whether `room` is stopped.
pub fn is_halted(s: &impl Snapshot, room: &str) -> Result<bool, StoreError> {
    use redb::ReadableTable;
    let Some(t) = s.table_opt(CLUSTER_META)? else { return Ok(false) };
    Ok(t.get(halted_key(room).as_str())?.is_some())
}

/// Every stopped room, with the position where it stopped.
pub fn halted(s: &impl Snapshot) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    use redb::ReadableTable;
    let mut out = std::collections::BTreeMap::new();
    let Some(t) = s.table_opt(CLUSTER_META)? else { return Ok(out) };
    for row in t.range("halted/".."halted0")? {
        let (k, v) = row?;
        let room = k.value().trim_start_matches("halted/").to_string();
        out.insert(room, format!("stopped at log position {}", v.value()));
    }
    Ok(out)
}
