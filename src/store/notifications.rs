//! Per-user notifications: a gapless id per user, the newest `keep` retained.

use redb::ReadableTable;

use super::tables::NOTIFICATIONS;
use super::{Snapshot, StoreError, decode};
use crate::proto::Notification;

/// The user's last notification id (0 when none).
pub fn last_id(s: &impl Snapshot, user: &str) -> Result<u64, StoreError> {
    let t = s.table(NOTIFICATIONS)?;
    let mut r = t.range((user, 0)..=(user, u64::MAX))?;
    Ok(match r.next_back() {
        Some(row) => row?.0.value().1,
        None => 0,
    })
}

/// Appends `n` with the user's next id (written into `n.id`), dropping the oldest beyond
/// `keep`.
pub fn append(
    tx: &redb::WriteTransaction,
    user: &str,
    n: &mut Notification,
    keep: usize,
) -> Result<u64, StoreError> {
    let id = last_id(tx, user)? + 1;
    n.id = id;
    let mut t = tx.open_table(NOTIFICATIONS)?;
    t.insert((user, id), prost::Message::encode_to_vec(&*n).as_slice())?;
    let oldest_kept = id.saturating_sub(keep as u64) + 1;
    if oldest_kept > 1 {
        // Usually exactly one row: the one that just fell off the end.
        let stale: Vec<u64> = t
            .range((user, 0)..(user, oldest_kept))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        for old in stale {
            t.remove((user, old))?;
        }
    }
    Ok(id)
}

/// Notifications with id > `after`, at most `limit`, ascending.
pub fn after(
    s: &impl Snapshot,
    user: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<Notification>, StoreError> {
    let t = s.table(NOTIFICATIONS)?;
    let mut out = Vec::new();
    for row in t.range((user, after.saturating_add(1))..=(user, u64::MAX))? {
        if out.len() == limit {
            break;
        }
        out.push(decode("notifications", row?.1.value())?);
    }
    Ok(out)
}
