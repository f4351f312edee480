//! Users and refresh tokens: typed reads (on any snapshot) and writes (inside a writer job).

use redb::{ReadableTable, TableDefinition};

use super::tables::{REFRESH_FAMILIES, REFRESH_TOKENS, USER_BY_NAME, USERS};
use super::{FamilyRecord, RefreshRecord, StoreError, UserRecord, decode};

/// Anything tables can be read from: a read snapshot, or the writer's transaction (whose reads
/// see the batch's earlier writes).
pub trait Snapshot {
    /// Opens a table for reading.
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError>;
}

impl Snapshot for redb::ReadTransaction {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }
}

impl Snapshot for redb::WriteTransaction {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }
}

impl Snapshot for super::WriteCtx<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }
}

/// The user with this id.
pub fn user(s: &impl Snapshot, id: &str) -> Result<Option<UserRecord>, StoreError> {
    let t = s.table(USERS)?;
    let v = t.get(id)?;
    v.map(|v| decode("users", v.value())).transpose()
}

/// The user with this (already lowercased) username.
pub fn user_by_name(s: &impl Snapshot, name: &str) -> Result<Option<UserRecord>, StoreError> {
    let id = {
        let t = s.table(USER_BY_NAME)?;
        let v = t.get(name)?;
        v.map(|v| v.value().to_string())
    };
    match id {
        Some(id) => user(s, &id),
        None => Ok(None),
    }
}

/// Every user, ordered by id.
pub fn users(s: &impl Snapshot) -> Result<Vec<UserRecord>, StoreError> {
    let t = s.table(USERS)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(decode("users", v.value())?);
    }
    Ok(out)
}

/// Creates a user; `false` (and no write) if the username is taken.
pub fn create_user(tx: &redb::WriteTransaction, rec: &UserRecord) -> Result<bool, StoreError> {
    let mut by_name = tx.open_table(USER_BY_NAME)?;
    if by_name.get(rec.username.as_str())?.is_some() {
        return Ok(false);
    }
    by_name.insert(rec.username.as_str(), rec.id.as_str())?;
    drop(by_name);
    put_user(tx, rec)?;
    Ok(true)
}

/// Replaces a user record (the username must not change).
pub fn put_user(tx: &redb::WriteTransaction, rec: &UserRecord) -> Result<(), StoreError> {
    let mut t = tx.open_table(USERS)?;
    t.insert(rec.id.as_str(), prost::Message::encode_to_vec(rec).as_slice())?;
    Ok(())
}

/// The refresh token with this hash.
pub fn refresh_token(
    s: &impl Snapshot,
    hash: &[u8; 32],
) -> Result<Option<RefreshRecord>, StoreError> {
    let t = s.table(REFRESH_TOKENS)?;
    let v = t.get(hash.as_slice())?;
    v.map(|v| decode("refresh_tokens", v.value())).transpose()
}

/// Stores a refresh token record under its hash.
pub fn put_refresh_token(
    tx: &redb::WriteTransaction,
    hash: &[u8; 32],
    rec: &RefreshRecord,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(REFRESH_TOKENS)?;
    t.insert(hash.as_slice(), prost::Message::encode_to_vec(rec).as_slice())?;
    Ok(())
}

/// The refresh token family with this id.
pub fn family(s: &impl Snapshot, id: &str) -> Result<Option<FamilyRecord>, StoreError> {
    let t = s.table(REFRESH_FAMILIES)?;
    let v = t.get(id)?;
    v.map(|v| decode("refresh_families", v.value())).transpose()
}

/// Stores a refresh token family.
pub fn put_family(
    tx: &redb::WriteTransaction,
    id: &str,
    rec: &FamilyRecord,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(REFRESH_FAMILIES)?;
    t.insert(id, prost::Message::encode_to_vec(rec).as_slice())?;
    Ok(())
}

/// Deletes refresh tokens that expired before `now_ms` (keeps the table from growing forever).
pub fn purge_expired_refresh_tokens(
    tx: &redb::WriteTransaction,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let mut t = tx.open_table(REFRESH_TOKENS)?;
    let mut removed = 0;
    t.retain(|_, v| {
        let keep = RefreshRecord::decode_or_keep(v, now_ms);
        if !keep {
            removed += 1;
        }
        keep
    })?;
    Ok(removed)
}

impl RefreshRecord {
    fn decode_or_keep(bytes: &[u8], now_ms: i64) -> bool {
        match <RefreshRecord as prost::Message>::decode(bytes) {
            Ok(r) => r.expires_at_ms >= now_ms,
            Err(_) => true,
        }
    }
}
