//! Threads: which messages are replies under which root, so `History` can page one thread
//! without reading the whole room.
//!
//! Layout: `threads`: (room id, root seq, seq) -> () for the root itself (written with the
//! first reply) and every reply under it. A reply to a reply joins its root's thread, so a
//! thread is one flat, seq-ordered list, as in Slack and Mattermost.

use redb::ReadableTable;

use super::tables::THREADS;
use super::{Snapshot, StoreError};

/// Records `seq` as a reply in the thread of `root` (and the root itself, once).
pub fn add_reply(
    tx: &redb::WriteTransaction,
    room: &str,
    root: u64,
    seq: u64,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(THREADS)?;
    t.insert((room, root, root), ())?;
    t.insert((room, root, seq), ())?;
    Ok(())
}

/// One row of a `threads` range.
type Row<'a> = Result<
    (redb::AccessGuard<'a, (&'static str, u64, u64)>, redb::AccessGuard<'a, ()>),
    redb::StorageError,
>;

/// Seqs of the thread of `root` (the root included once it has a reply) with
/// `after < seq < before`, at most `limit`, ascending; `newest` picks the newest `limit` of the
/// range. Also whether more exist in the range.
pub fn range(
    s: &impl Snapshot,
    room: &str,
    root: u64,
    after: u64,
    before: u64,
    limit: usize,
    newest: bool,
) -> Result<(Vec<u64>, bool), StoreError> {
    if before <= after.saturating_add(1) {
        return Ok((Vec::new(), false));
    }
    let t = s.table(THREADS)?;
    let rows = t.range((room, root, after + 1)..=(room, root, before - 1))?;
    let seqs = |row: Row<'_>| row.map(|(k, _)| k.value().2);
    // One more than asked for says whether more exist.
    let mut out: Vec<u64> = if newest {
        rows.rev().take(limit + 1).map(seqs).collect::<Result<_, redb::StorageError>>()?
    } else {
        rows.take(limit + 1).map(seqs).collect::<Result<_, redb::StorageError>>()?
    };
    let more = out.len() > limit;
    out.truncate(limit);
    if newest {
        out.reverse();
    }
    Ok((out, more))
}

/// Forgets the thread rows of events removed by retention (`seqs`, with their roots).
pub fn forget(
    tx: &redb::WriteTransaction,
    room: &str,
    rows: &[(u64, u64)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut t = tx.open_table(THREADS)?;
    for &(root, seq) in rows {
        t.remove((room, root, seq))?;
    }
    Ok(())
}
