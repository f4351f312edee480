//! Names people type and read: rooms by name or id, users by username, senders by id.

use std::collections::HashMap;

use crate::proto;

/// Why a room name did not pick one room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomNameError {
    /// Nothing by that name or id.
    #[error("no room `{0}` among your rooms and the public ones (`edgechat rooms` lists them)")]
    Unknown(String),
    /// Several rooms have that name.
    #[error("`{0}` names {n} rooms; use an id: {1}", n = .1.len())]
    Ambiguous(String, Candidates),
}

/// The rooms an ambiguous name matched, shown as `name (id, kind)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidates(pub Vec<String>);

impl Candidates {
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Display for Candidates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// `public`, `private` or `direct`.
pub fn kind_name(r: &proto::Room) -> &'static str {
    match proto::Visibility::try_from(r.visibility) {
        Ok(proto::Visibility::Private) => "private",
        Ok(proto::Visibility::Direct) => "direct",
        _ => "public",
    }
}

/// A room role's name, `-` for none.
pub fn role_name(role: i32) -> &'static str {
    match proto::RoomRole::try_from(role) {
        Ok(proto::RoomRole::Reader) => "reader",
        Ok(proto::RoomRole::Member) => "member",
        Ok(proto::RoomRole::Moderator) => "moderator",
        Ok(proto::RoomRole::Owner) => "owner",
        _ => "-",
    }
}

/// A room role from its name (`/role USER ROLE`).
pub fn parse_role(s: &str) -> Option<proto::RoomRole> {
    Some(match s.to_ascii_lowercase().as_str() {
        "reader" => proto::RoomRole::Reader,
        "member" => proto::RoomRole::Member,
        "moderator" | "mod" => proto::RoomRole::Moderator,
        "owner" => proto::RoomRole::Owner,
        _ => return None,
    })
}

/// The one room `arg` names among `rooms` (what `ListRooms` returned): an id, or a name
/// (case-insensitive, an optional leading `#`) that only one room has.
pub fn resolve_room<'a>(
    rooms: &'a [proto::Room],
    arg: &str,
) -> Result<&'a proto::Room, RoomNameError> {
    if let Some(r) = rooms.iter().find(|r| r.id == arg) {
        return Ok(r);
    }
    let name = arg.strip_prefix('#').unwrap_or(arg);
    let matches: Vec<&proto::Room> =
        rooms.iter().filter(|r| r.name.eq_ignore_ascii_case(name)).collect();
    match matches.as_slice() {
        [] => Err(RoomNameError::Unknown(super::text::clean(arg))),
        [one] => Ok(one),
        many => Err(RoomNameError::Ambiguous(
            super::text::clean(arg),
            Candidates(
                many.iter()
                    .map(|r| {
                        format!("{} ({}, {})", super::text::clean(&r.name), r.id, kind_name(r))
                    })
                    .collect(),
            ),
        )),
    }
}

/// Most user names kept; beyond it the cache starts over (a name is one lookup away).
const MAX_NAMES: usize = 10_000;

/// User id -> username, filled from member lists and `LookupUsers`.
#[derive(Debug, Default, Clone)]
pub struct Names {
    by_id: HashMap<String, String>,
}

impl Names {
    /// Remembers a user.
    pub fn learn(&mut self, u: &proto::User) {
        if self.by_id.len() >= MAX_NAMES && !self.by_id.contains_key(&u.id) {
            self.by_id.clear();
        }
        self.by_id.insert(u.id.clone(), u.username.clone());
    }

    /// Whether the id's name is known.
    pub fn knows(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The username of `id`, or a short form of the id until it is known.
    pub fn name(&self, id: &str) -> String {
        match self.by_id.get(id) {
            Some(n) => super::text::clean(n),
            None if id.is_empty() => "server".into(),
            None => format!("<{}>", super::text::clean(&id.chars().take(10).collect::<String>())),
        }
    }

    /// The id of a username, if known.
    pub fn id_of(&self, username: &str) -> Option<&str> {
        let want = username.strip_prefix('@').unwrap_or(username);
        self.by_id.iter().find(|(_, n)| n.eq_ignore_ascii_case(want)).map(|(id, _)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str, name: &str, vis: proto::Visibility) -> proto::Room {
        proto::Room {
            id: id.into(),
            name: name.into(),
            visibility: vis as i32,
            ..Default::default()
        }
    }

    #[test]
    fn rooms_resolve_by_id_then_unique_name() {
        let rooms = vec![
            room("r1", "general", proto::Visibility::Public),
            room("r2", "Ops", proto::Visibility::Private),
            room("r3", "ops", proto::Visibility::Public),
            room("r4", "bob", proto::Visibility::Direct),
        ];
        assert_eq!(resolve_room(&rooms, "general").unwrap().id, "r1");
        assert_eq!(resolve_room(&rooms, "#General").unwrap().id, "r1");
        assert_eq!(resolve_room(&rooms, "r3").unwrap().id, "r3");
        assert_eq!(resolve_room(&rooms, "bob").unwrap().id, "r4");
        let e = resolve_room(&rooms, "ops").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`ops` names 2 rooms; use an id: Ops (r2, private), ops (r3, public)"
        );
        let e = resolve_room(&rooms, "nope\u{1b}[2J").unwrap_err();
        assert!(matches!(e, RoomNameError::Unknown(ref n) if n == "nope^[[2J"), "{e}");
    }

    #[test]
    fn unknown_senders_show_a_short_id_until_looked_up() {
        let mut n = Names::default();
        assert_eq!(n.name("u0123456789abcdef"), "<u012345678>");
        n.learn(&proto::User { id: "u1".into(), username: "alice".into(), ..Default::default() });
        assert_eq!(n.name("u1"), "alice");
        assert_eq!(n.id_of("@Alice"), Some("u1"));
        assert_eq!(n.id_of("bob"), None);
    }

    #[test]
    fn roles_parse_and_print() {
        for r in ["reader", "member", "moderator", "owner"] {
            assert_eq!(role_name(parse_role(r).unwrap() as i32), r);
        }
        assert_eq!(parse_role("MOD"), Some(proto::RoomRole::Moderator));
        assert_eq!(parse_role("king"), None);
        assert_eq!(role_name(0), "-");
    }
}
