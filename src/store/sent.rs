//! Idempotency records for sends: `(sender, client_message_id)` -> where the message went.

use super::tables::SENT_IDS;
use super::{SentRecord, Snapshot, StoreError, decode};

/// The record of an earlier send with this id, if any.
pub fn get(
    s: &impl Snapshot,
    sender: &str,
    client_message_id: &str,
) -> Result<Option<SentRecord>, StoreError> {
    use redb::ReadableTable;
    let t = s.table(SENT_IDS)?;
    let v = t.get((sender, client_message_id))?;
    v.map(|v| decode("sent_ids", v.value())).transpose()
}

/// Records a send (in the message's own transaction).
pub fn put(
    tx: &redb::WriteTransaction,
    sender: &str,
    client_message_id: &str,
    rec: &SentRecord,
) -> Result<(), StoreError> {
    let bytes = prost::Message::encode_to_vec(rec);
    tx.open_table(SENT_IDS)?.insert((sender, client_message_id), bytes.as_slice())?;
    Ok(())
}

/// How long idempotency records are kept (API.md: at least 24 hours).
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// Examines at most `limit` records from `cursor` (a `(sender, client_message_id)` key;
/// `None` = the start) and deletes those stored before `cutoff_ms`. Returns how many it
/// deleted and where the next call goes on (`None`: the end was reached). Small batches: one
/// call holds the writer for a bounded time however large the table is.
pub fn prune(
    tx: &redb::WriteTransaction,
    cursor: Option<(String, String)>,
    cutoff_ms: i64,
    limit: usize,
) -> Result<(u64, Option<(String, String)>), StoreError> {
    use redb::ReadableTable;
    let mut t = tx.open_table(SENT_IDS)?;
    let mut old = Vec::new();
    let mut next = None;
    {
        let start = cursor.as_ref().map(|(s, c)| (s.as_str(), c.as_str())).unwrap_or(("", ""));
        for (seen, row) in t.range(start..)?.enumerate() {
            let (k, v) = row?;
            let (sender, cmid) = k.value();
            if seen == limit {
                next = Some((sender.to_string(), cmid.to_string()));
                break;
            }
            let rec: SentRecord = decode("sent_ids", v.value())?;
            if rec.at_ms < cutoff_ms {
                old.push((sender.to_string(), cmid.to_string()));
            }
        }
    }
    for (sender, cmid) in &old {
        t.remove((sender.as_str(), cmid.as_str()))?;
    }
    Ok((old.len() as u64, next))
}
