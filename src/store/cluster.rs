//! A cluster node's view bookkeeping (cluster mode only; a single-node database never has
//! this table): how far the node has applied the shared log. Written in the same transaction
//! as the changes it covers, so after a crash the view resumes exactly after what it holds.

use super::tables::{CLUSTER_APPLIED, CLUSTER_META};
use super::{Snapshot, StoreError};

/// The last log position this view applied (0: none).
pub fn applied(s: &impl Snapshot) -> Result<u64, StoreError> {
    use redb::ReadableTable;
    let Some(t) = s.table_opt(CLUSTER_META)? else { return Ok(0) };
    Ok(t.get(CLUSTER_APPLIED)?.map(|v| v.value()).unwrap_or(0))
}

/// Records that the log is applied up to position `at`.
pub fn set_applied(tx: &redb::WriteTransaction, at: u64) -> Result<(), StoreError> {
    tx.open_table(CLUSTER_META)?.insert(CLUSTER_APPLIED, at)?;
    Ok(())
}
