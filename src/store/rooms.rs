//! Rooms, members, bans, invites and direct-room pairs: typed reads (any snapshot) and writes
//! (inside a writer job). Membership is kept in two tables (`room_members` by room,
//! `user_rooms` by user) that are always written together here.

use redb::ReadableTable;

use super::tables::{
    DIRECT_ROOMS, PUBLIC_ROOMS, ROOM_BANS, ROOM_INVITES, ROOM_MEMBERS, ROOMS, USER_INVITES,
    USER_ROOMS,
};
use super::{BanRecord, MemberRecord, RoomRecord, Snapshot, StoreError, decode};

type Tx = redb::WriteTransaction;

fn encode(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

/// The room with this id.
pub fn room(s: &impl Snapshot, id: &str) -> Result<Option<RoomRecord>, StoreError> {
    let t = s.table(ROOMS)?;
    let v = t.get(id)?;
    v.map(|v| decode("rooms", v.value())).transpose()
}

/// Creates or replaces a room; public rooms are also indexed.
pub fn put_room(tx: &Tx, rec: &RoomRecord, public: bool) -> Result<(), StoreError> {
    tx.open_table(ROOMS)?.insert(rec.id.as_str(), encode(rec).as_slice())?;
    if public {
        tx.open_table(PUBLIC_ROOMS)?.insert(rec.id.as_str(), ())?;
    }
    Ok(())
}

/// Ids of every public room.
pub fn public_room_ids(s: &impl Snapshot) -> Result<Vec<String>, StoreError> {
    let t = s.table(PUBLIC_ROOMS)?;
    let mut out = Vec::new();
    for row in t.iter()? {
        out.push(row?.0.value().to_string());
    }
    Ok(out)
}

/// Up to `limit` room ids from `from` on (inclusive), in id order: for passes over every room
/// in slices.
pub fn room_ids_from(
    s: &impl Snapshot,
    from: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let t = s.table(ROOMS)?;
    let rows = t.range::<&str>(from..)?;
    let mut out = Vec::new();
    for row in rows.take(limit) {
        out.push(row?.0.value().to_string());
    }
    Ok(out)
}

/// A member's record.
pub fn member(
    s: &impl Snapshot,
    room: &str,
    user: &str,
) -> Result<Option<MemberRecord>, StoreError> {
    let t = s.table(ROOM_MEMBERS)?;
    let v = t.get((room, user))?;
    v.map(|v| decode("room_members", v.value())).transpose()
}

/// Every member of a room: (user id, record), ordered by user id.
pub fn members(s: &impl Snapshot, room: &str) -> Result<Vec<(String, MemberRecord)>, StoreError> {
    let t = s.table(ROOM_MEMBERS)?;
    let mut out = Vec::new();
    for row in t.range((room, "")..)? {
        let (k, v) = row?;
        let (r, u) = k.value();
        if r != room {
            break;
        }
        out.push((u.to_string(), decode("room_members", v.value())?));
    }
    Ok(out)
}

/// Ids of the rooms a user is a member of.
pub fn user_room_ids(s: &impl Snapshot, user: &str) -> Result<Vec<String>, StoreError> {
    pairs_after(s.table(USER_ROOMS)?, user)
}

fn pairs_after<V: redb::Value + 'static>(
    t: impl ReadableTable<(&'static str, &'static str), V>,
    first: &str,
) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    for row in t.range((first, "")..)? {
        let (k, _) = row?;
        let (a, b) = k.value();
        if a != first {
            break;
        }
        out.push(b.to_string());
    }
    Ok(out)
}

/// Adds or updates a member (both membership tables).
pub fn put_member(tx: &Tx, room: &str, user: &str, rec: &MemberRecord) -> Result<(), StoreError> {
    tx.open_table(ROOM_MEMBERS)?.insert((room, user), encode(rec).as_slice())?;
    tx.open_table(USER_ROOMS)?.insert((user, room), ())?;
    Ok(())
}

/// Removes a member (both membership tables).
pub fn delete_member(tx: &Tx, room: &str, user: &str) -> Result<(), StoreError> {
    tx.open_table(ROOM_MEMBERS)?.remove((room, user))?;
    tx.open_table(USER_ROOMS)?.remove((user, room))?;
    Ok(())
}

/// A ban, if the user is banned from the room.
pub fn ban(s: &impl Snapshot, room: &str, user: &str) -> Result<Option<BanRecord>, StoreError> {
    let t = s.table(ROOM_BANS)?;
    let v = t.get((room, user))?;
    v.map(|v| decode("room_bans", v.value())).transpose()
}

/// Records a ban.
pub fn put_ban(tx: &Tx, room: &str, user: &str, rec: &BanRecord) -> Result<(), StoreError> {
    tx.open_table(ROOM_BANS)?.insert((room, user), encode(rec).as_slice())?;
    Ok(())
}

/// Lifts a ban.
pub fn delete_ban(tx: &Tx, room: &str, user: &str) -> Result<(), StoreError> {
    tx.open_table(ROOM_BANS)?.remove((room, user))?;
    Ok(())
}

/// The inviter of a pending invite.
pub fn invite(s: &impl Snapshot, room: &str, user: &str) -> Result<Option<String>, StoreError> {
    let t = s.table(ROOM_INVITES)?;
    let v = t.get((room, user))?;
    Ok(v.map(|v| v.value().to_string()))
}

/// Rooms a user has a pending invite to.
pub fn invited_room_ids(s: &impl Snapshot, user: &str) -> Result<Vec<String>, StoreError> {
    pairs_after(s.table(USER_INVITES)?, user)
}

/// Stores an invite (replacing an earlier one to the same room).
pub fn put_invite(tx: &Tx, room: &str, user: &str, inviter: &str) -> Result<(), StoreError> {
    tx.open_table(ROOM_INVITES)?.insert((room, user), inviter)?;
    tx.open_table(USER_INVITES)?.insert((user, room), ())?;
    Ok(())
}

/// Removes an invite (used, or the user was banned).
pub fn delete_invite(tx: &Tx, room: &str, user: &str) -> Result<(), StoreError> {
    tx.open_table(ROOM_INVITES)?.remove((room, user))?;
    tx.open_table(USER_INVITES)?.remove((user, room))?;
    Ok(())
}

/// Removes every pending invite `inviter` made in `room` (the inviter left).
pub fn delete_invites_by(tx: &Tx, room: &str, inviter: &str) -> Result<(), StoreError> {
    let invited: Vec<String> = {
        let t = tx.open_table(ROOM_INVITES)?;
        let mut out = Vec::new();
        for row in t.range((room, "")..)? {
            let (k, v) = row?;
            let (r, u) = k.value();
            if r != room {
                break;
            }
            if v.value() == inviter {
                out.push(u.to_string());
            }
        }
        out
    };
    for user in invited {
        delete_invite(tx, room, &user)?;
    }
    Ok(())
}

/// The key of a pair of users' direct room: the two ids in order, so either side finds it.
pub fn direct_key(a: &str, b: &str) -> String {
    if a < b { format!("{a}/{b}") } else { format!("{b}/{a}") }
}

/// The direct room of a pair.
pub fn direct_room_id(s: &impl Snapshot, key: &str) -> Result<Option<String>, StoreError> {
    let t = s.table(DIRECT_ROOMS)?;
    let v = t.get(key)?;
    Ok(v.map(|v| v.value().to_string()))
}

/// Records a pair's direct room.
pub fn put_direct_room(tx: &Tx, key: &str, room: &str) -> Result<(), StoreError> {
    tx.open_table(DIRECT_ROOMS)?.insert(key, room)?;
    Ok(())
}
