//! What unread counts are derived from: an index of live messages per room and of mentions
//! per user. Counting scans only what lies after a reader's marker.
//!
//! Layout (schema 2): one table per room, `messages/<room id>`: seq -> a 64-bit tag of the
//! sender's id ([`sender_tag`]), for every message that is not deleted. Fixed-width 16-byte
//! rows appended at the right edge of their own tree (see `events`): the index costs about
//! 17 bytes a message instead of the 132 that `(room, seq) -> sender id` rows in one shared
//! table took.

use redb::{ReadableTable, TableDefinition};

use super::tables::MENTIONS;
use super::{Snapshot, StoreError};

/// Per-room message index tables are named this plus the room id.
pub(super) const TABLE_PREFIX: &str = "messages/";

/// A room's message index.
pub(super) fn table(name: &str) -> TableDefinition<'_, u64, u64> {
    TableDefinition::new(name)
}

/// The name of a room's message index.
pub(super) fn table_name(room: &str) -> String {
    format!("{TABLE_PREFIX}{room}")
}

/// A stable 64-bit tag of a user id (FNV-1a), stored instead of the id. Two members of one
/// room with the same tag would see each other's messages as their own in unread counts: with
/// 96-bit random ids and 64-bit tags, about one chance in 10^19 per pair.
pub fn sender_tag(user_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

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
    tx.open_table(table(&table_name(room)))?.insert(seq, sender_tag(sender))?;
    Ok(())
}

/// Drops a deleted message from the index.
pub fn unindex_message(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
) -> Result<(), StoreError> {
    tx.open_table(table(&table_name(room)))?.remove(seq)?;
    Ok(())
}

/// Drops the index entries up to `seq` (events removed by retention).
pub fn unindex_upto(tx: &redb::WriteTransaction, room: &str, seq: u64) -> Result<(), StoreError> {
    tx.open_table(table(&table_name(room)))?.retain_in(..=seq, |_, _| false)?;
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
    let mut mentioned = users.iter().filter(|u| *u != sender).peekable();
    if mentioned.peek().is_none() {
        return Ok(());
    }
    let mut t = tx.open_table(MENTIONS)?;
    for u in mentioned {
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
    let name = table_name(room);
    let Some(t) = s.table_opt(table(&name))? else { return Ok(0) };
    let me = sender_tag(me);
    let mut n = 0;
    for row in t.range(after_seq.saturating_add(1)..)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_tags_are_stable() {
        // Stored in files: the function must never change.
        assert_eq!(sender_tag(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(sender_tag("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(sender_tag("u1"), sender_tag("u2"));
    }
}
