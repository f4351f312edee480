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

    /// Opens a table that may not exist yet (a room's own tables, created by its first write):
    /// `None` when a snapshot does not have it. (In a write transaction it is created.)
    fn table_opt<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Option<impl ReadableTable<K, V> + '_>, StoreError>;
}

impl Snapshot for redb::ReadTransaction {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }

    fn table_opt<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Option<impl ReadableTable<K, V> + '_>, StoreError> {
        match self.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Snapshot for redb::WriteTransaction {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }

    fn table_opt<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Option<impl ReadableTable<K, V> + '_>, StoreError> {
        Ok(Some(self.open_table(def)?))
    }
}

impl Snapshot for super::WriteCtx<'_> {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<impl ReadableTable<K, V> + '_, StoreError> {
        Ok(self.open_table(def)?)
    }

    fn table_opt<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Option<impl ReadableTable<K, V> + '_>, StoreError> {
        Ok(Some(self.open_table(def)?))
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

/// Examines at most `limit` refresh tokens from `cursor` (a token hash; `None` = the start)
/// and deletes those that expired before `now_ms`, spent or not: a spent token is kept until
/// then because presenting it again is how theft is detected, and past its expiry it is
/// refused anyway. Returns how many it deleted and the next cursor (`None`: the end).
pub fn prune_refresh_tokens(
    tx: &redb::WriteTransaction,
    cursor: Option<Vec<u8>>,
    now_ms: i64,
    limit: usize,
) -> Result<(u64, Option<Vec<u8>>), StoreError> {
    let mut t = tx.open_table(REFRESH_TOKENS)?;
    let mut old = Vec::new();
    let mut next = None;
    {
        let start = cursor.as_deref().unwrap_or(&[]);
        for (seen, row) in t.range(start..)?.enumerate() {
            let (k, v) = row?;
            if seen == limit {
                next = Some(k.value().to_vec());
                break;
            }
            let rec: RefreshRecord = decode("refresh_tokens", v.value())?;
            if rec.expires_at_ms < now_ms {
                old.push(k.value().to_vec());
            }
        }
    }
    for k in &old {
        t.remove(k.as_slice())?;
    }
    Ok((old.len() as u64, next))
}
