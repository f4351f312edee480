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
