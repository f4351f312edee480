//! Table definitions, with each key layout written beside it. Integers in keys are big-endian
//! (redb's `u64` key encoding sorts numerically), so ranges sort.

use redb::TableDefinition;

/// `meta`: setting name -> value. Holds [`META_SCHEMA_VERSION`].
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The schema version key in [`META`].
pub(super) const META_SCHEMA_VERSION: &str = "schema_version";

/// `users`: user id -> `UserRecord`.
pub(super) const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// `user_by_name`: lowercase username -> user id. Uniqueness of usernames lives here.
pub(super) const USER_BY_NAME: TableDefinition<&str, &str> = TableDefinition::new("user_by_name");
/// `refresh_tokens`: SHA-256 of the refresh token -> `RefreshRecord`.
pub(super) const REFRESH_TOKENS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("refresh_tokens");
/// `refresh_families`: family id -> `FamilyRecord`.
pub(super) const REFRESH_FAMILIES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("refresh_families");

/// Opens every table once so that later read transactions find them all.
pub(super) fn create_all(tx: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    tx.open_table(META)?;
    tx.open_table(USERS)?;
    tx.open_table(USER_BY_NAME)?;
    tx.open_table(REFRESH_TOKENS)?;
    tx.open_table(REFRESH_FAMILIES)?;
    Ok(())
}
