//! Pinned messages per room, so `ListPins` reads one short range.
//!
//! Layout: `pins`: (room id, seq) -> `PinRecord` (who pinned it, when).

use redb::ReadableTable;

use super::records::PinRecord;
use super::tables::PINS;
use super::{Snapshot, StoreError, decode};

/// The room's pins, ascending by message seq.
pub fn list(s: &impl Snapshot, room: &str) -> Result<Vec<(u64, PinRecord)>, StoreError> {
    let t = s.table(PINS)?;
    let mut out = Vec::new();
    for row in t.range((room, 0)..=(room, u64::MAX))? {
        let (k, v) = row?;
        out.push((k.value().1, decode("pins", v.value())?));
    }
    Ok(out)
}

/// How many messages of the room are pinned.
pub fn count(s: &impl Snapshot, room: &str) -> Result<usize, StoreError> {
    Ok(s.table(PINS)?.range((room, 0)..=(room, u64::MAX))?.count())
}

/// Pins (`Some`) or unpins the message at `seq`.
pub fn set(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    pin: Option<&PinRecord>,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(PINS)?;
    match pin {
        Some(p) => {
            t.insert((room, seq), prost::Message::encode_to_vec(p).as_slice())?;
        }
        None => {
            t.remove((room, seq))?;
        }
    }
    Ok(())
}
