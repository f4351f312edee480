//! What unread counts are derived from: an index of live messages per room and of mentions
//! per user. Counting scans only what lies after a reader's marker.

use redb::ReadableTable;

use super::tables::{MENTIONS, ROOM_MESSAGES};
use super::{Snapshot, StoreError};

/// Unread counts stop at this many (shown as "10000+" by clients): a reader who is that far
/// behind does not make ListRooms slow.
pub const COUNT_CAP: u64 = 10_000;

/// Indexes a new message.
pub fn index_message(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    sender: &str,
) -> Result<(), StoreError> {
    tx.open_table(ROOM_MESSAGES)?.insert((room, seq), sender)?;
    Ok(())
}

/// Drops a deleted message from the index.
pub fn unindex_message(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
) -> Result<(), StoreError> {
    tx.open_table(ROOM_MESSAGES)?.remove((room, seq))?;
    Ok(())
}

/// Records that a message mentions these users.
pub fn add_mentions(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    sender: &str,
    users: &[String],
) -> Result<(), StoreError> {
    // A self-mention is not one: your own messages are never unread.
    let mut t = tx.open_table(MENTIONS)?;
    for u in users.iter().filter(|u| *u != sender) {
        t.insert((u.as_str(), room, seq), ())?;
    }
    Ok(())
}

/// Forgets a message's mentions (edited or deleted).
pub fn remove_mentions(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    users: &[String],
) -> Result<(), StoreError> {
    let mut t = tx.open_table(MENTIONS)?;
    for u in users {
        t.remove((u.as_str(), room, seq))?;
    }
    Ok(())
}

/// Messages after `after_seq` not sent by `me` and not deleted (at most [`COUNT_CAP`]).
pub fn unread_count(
    s: &impl Snapshot,
    room: &str,
    me: &str,
    after_seq: u64,
) -> Result<u64, StoreError> {
    let t = s.table(ROOM_MESSAGES)?;
    let mut n = 0;
    for row in t.range((room, after_seq.saturating_add(1))..=(room, u64::MAX))? {
        if row?.1.value() != me {
            n += 1;
            if n == COUNT_CAP {
                break;
            }
        }
    }
    Ok(n)
}

/// Live messages after `after_seq` that mention `me` (at most [`COUNT_CAP`]).
pub fn mention_count(
    s: &impl Snapshot,
    me: &str,
    room: &str,
    after_seq: u64,
) -> Result<u64, StoreError> {
    let t = s.table(MENTIONS)?;
    let n = t
        .range((me, room, after_seq.saturating_add(1))..=(me, room, u64::MAX))?
        .take(COUNT_CAP as usize)
        .count();
    Ok(n as u64)
}
