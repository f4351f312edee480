//! Registration invite codes. Only a code's SHA-256 is stored (like refresh tokens): a copy of
//! the database does not hand out accounts.
//!
//! Layout: `invite_codes`: SHA-256 of the code -> `InviteRecord`.

use redb::ReadableTable;

use super::records::InviteRecord;
use super::tables::INVITE_CODES;
use super::{Snapshot, StoreError, decode};

/// The invite whose code hashes to `hash`.
pub fn get(s: &impl Snapshot, hash: &[u8; 32]) -> Result<Option<InviteRecord>, StoreError> {
    let t = s.table(INVITE_CODES)?;
    let v = t.get(hash.as_slice())?;
    v.map(|v| decode("invite_codes", v.value())).transpose()
}

/// Stores (or updates) an invite.
pub fn put(
    tx: &redb::WriteTransaction,
    hash: &[u8; 32],
    rec: &InviteRecord,
) -> Result<(), StoreError> {
    let bytes = prost::Message::encode_to_vec(rec);
    tx.open_table(INVITE_CODES)?.insert(hash.as_slice(), bytes.as_slice())?;
    Ok(())
}
