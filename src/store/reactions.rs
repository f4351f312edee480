//! Who reacted with what, so an add is idempotent and a reader learns which reactions are
//! their own. The counts themselves live in the message record (`Message.reactions`), so a
//! page of history needs no scan here: one lookup per distinct reaction shown.
//!
//! Layout: `reactions`: (room id, seq, reaction, user id) -> ().

use redb::ReadableTable;

use super::tables::REACTIONS;
use super::{Snapshot, StoreError};

/// Whether `user` reacted to the message at `seq` with `reaction`.
pub fn has(
    s: &impl Snapshot,
    room: &str,
    seq: u64,
    reaction: &str,
    user: &str,
) -> Result<bool, StoreError> {
    Ok(s.table(REACTIONS)?.get((room, seq, reaction, user))?.is_some())
}

/// Records (`on`) or removes a user's reaction.
pub fn set(
    tx: &redb::WriteTransaction,
    room: &str,
    seq: u64,
    reaction: &str,
    user: &str,
    on: bool,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(REACTIONS)?;
    if on {
        t.insert((room, seq, reaction, user), ())?;
    } else {
        t.remove((room, seq, reaction, user))?;
    }
    Ok(())
}

/// Removes every reaction to the message at `seq` (deleted, or removed by retention).
pub fn clear(tx: &redb::WriteTransaction, room: &str, seq: u64) -> Result<(), StoreError> {
    let mut t = tx.open_table(REACTIONS)?;
    // `\u{10FFFF}` sorts after every reaction and user id (valid UTF-8 ends there).
    t.retain_in((room, seq, "", "")..=(room, seq, "\u{10FFFF}", "\u{10FFFF}"), |_, _| false)?;
    Ok(())
}
