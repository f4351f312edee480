//! Room events as people read them (`tail`, `history`, the chat view) and as scripts read
//! them (`--json`: one object per line).

use serde::Serialize;

use super::names::{Names, role_name};
use crate::proto::{self, room_event::Kind};

/// One event, described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Described {
    /// The room's name.
    pub room: String,
    /// The room's id.
    pub room_id: String,
    /// The event's seq.
    pub seq: u64,
    /// When it was committed.
    pub at_ms: i64,
    /// `message`, `edited`, `deleted`, `member` or `room_updated`.
    pub kind: &'static str,
    /// Who caused it (the sender of a message), by username.
    pub sender: String,
    /// Their id.
    pub sender_id: String,
    /// A message's (current) text; for other events a short description.
    pub text: String,
    /// For `edited` and `deleted`: the message's seq.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_seq: Option<u64>,
    /// A message edited since it was sent (History shows the latest text).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// A message deleted since (a tombstone).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// A message's files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<File>,
}

/// A file a message carries, as `--json` gives it (`edgechat save ID` fetches it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct File {
    /// The attachment id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// The media type the server decided.
    pub media_type: String,
    /// Pixels, for images (0 otherwise).
    #[serde(skip_serializing_if = "is_zero")]
    pub width: u32,
    /// Pixels.
    #[serde(skip_serializing_if = "is_zero")]
    pub height: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl File {
    /// The file of an attachment.
    pub fn of(a: &proto::Attachment) -> File {
        File {
            id: a.id.clone(),
            name: a.name.clone(),
            size: a.size,
            media_type: a.media_type.clone(),
            width: a.width,
            height: a.height,
        }
    }
}

/// A file as one line: `📎 name (1.2 MB, 640x480) id` (the name cleaned by the caller).
pub fn file_line(f: &File) -> String {
    let dims = if f.width != 0 { format!(", {}x{}", f.width, f.height) } else { String::new() };
    format!("📎 {} ({}{dims}) {}", f.name, human_size(f.size), f.id)
}

/// Bytes the way people read them: 512 B, 1.2 KB, 10.0 MB (powers of 1024, as the browser
/// app and the server's limits count them; one decimal).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1023.95 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The user ids an event mentions by id (actor, member), to look up before describing it.
pub fn user_ids(e: &proto::RoomEvent) -> Vec<&str> {
    let mut ids = vec![e.actor_id.as_str()];
    match &e.kind {
        Some(Kind::Message(m)) => ids.push(&m.sender_id),
        Some(Kind::Member(m)) => ids.push(&m.user_id),
        _ => {}
    }
    ids.retain(|i| !i.is_empty());
    ids
}

/// Describes `e` of room `room` with the names known. Text is raw: callers that print it
/// to a terminal clean it (`text::clean_lines`); JSON carries it exactly.
pub fn describe(room: &proto::Room, e: &proto::RoomEvent, names: &Names) -> Described {
    let mut d = Described {
        room: room.name.clone(),
        room_id: e.room_id.clone(),
        seq: e.seq,
        at_ms: e.at_ms,
        kind: "message",
        sender: names.name(&e.actor_id),
        sender_id: e.actor_id.clone(),
        text: String::new(),
        target_seq: None,
        edited: false,
        deleted: false,
        attachments: Vec::new(),
    };
    match &e.kind {
        Some(Kind::Message(m)) => {
            d.sender = names.name(&m.sender_id);
            d.sender_id = m.sender_id.clone();
            d.text = m.text.clone();
            d.edited = m.edited_at_ms != 0;
            d.deleted = m.deleted;
            d.attachments = m.attachments.iter().map(File::of).collect();
        }
        Some(Kind::Edited(x)) => {
            d.kind = "edited";
            d.text = x.text.clone();
            d.target_seq = Some(x.target_seq);
        }
        Some(Kind::Deleted(x)) => {
            d.kind = "deleted";
            d.text = format!("deleted message #{}", x.target_seq);
            d.target_seq = Some(x.target_seq);
        }
        Some(Kind::Reaction(x)) => {
            d.kind = "reaction";
            let verb = if x.added { "reacted" } else { "took back" };
            d.text = format!("{verb} {} to message #{}", x.emoji, x.target_seq);
            d.target_seq = Some(x.target_seq);
        }
        Some(Kind::Pin(x)) => {
            d.kind = "pin";
            let verb = if x.pinned { "pinned" } else { "unpinned" };
            d.text = format!("{verb} message #{}", x.target_seq);
            d.target_seq = Some(x.target_seq);
        }
        Some(Kind::Member(m)) => {
            d.kind = "member";
            d.text = member_text(m, &e.actor_id, names);
        }
        Some(Kind::RoomUpdated(u)) => {
            d.kind = "room_updated";
            let r = u.room.clone().unwrap_or_default();
            d.text = format!(
                "set the topic to \"{}\"{}",
                r.topic,
                if r.read_only { " (read-only)" } else { "" }
            );
        }
        None => d.kind = "unknown",
    }
    d
}

fn member_text(m: &proto::MemberChanged, actor: &str, names: &Names) -> String {
    let who = names.name(&m.user_id);
    let by = names.name(actor);
    let reason = if m.reason.is_empty() { String::new() } else { format!(": {}", m.reason) };
    if m.joined {
        format!("{who} joined")
    } else if m.left {
        format!("{who} left")
    } else if m.removed && m.banned {
        format!("{who} was banned by {by}{reason}")
    } else if m.removed {
        format!("{who} was removed by {by}{reason}")
    } else if m.unbanned {
        format!("{who} was unbanned by {by}")
    } else {
        format!("{who} is now {} (by {by})", role_name(m.role))
    }
}

/// One line for a terminal: `HH:MM name: text`, or `HH:MM * text` for other events.
pub fn plain(d: &Described) -> String {
    let time = super::text::local_hm(d.at_ms);
    let text = super::text::clean_lines(&d.text).join("\n      ");
    match d.kind {
        "message" if d.deleted => format!("{time} {}: (deleted)", d.sender),
        "message" => {
            let edited = if d.edited { " (edited)" } else { "" };
            let mut line = format!("{time} {}: {text}{edited}", d.sender);
            for f in &d.attachments {
                line.push_str("\n      ");
                line.push_str(&super::text::clean_lines(&file_line(f)).join(" "));
            }
            line
        }
        "edited" => {
            format!("{time} * {} edited #{}: {text}", d.sender, d.target_seq.unwrap_or_default())
        }
        "member" => format!("{time} * {text}"),
        _ => format!("{time} * {} {text}", d.sender),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_files_read_as_people_say_them() {
        let table = [(0, "0 B"), (1023, "1023 B"), (1024, "1.0 KB"), (1260, "1.2 KB")];
        for (bytes, want) in table {
            assert_eq!(human_size(bytes), want);
        }
        assert_eq!(human_size(10 << 20), "10.0 MB");
        assert_eq!(human_size((1 << 20) - 1), "1.0 MB");
        let a = proto::Attachment {
            id: "f1".into(),
            name: "cat.png".into(),
            size: 2048,
            width: 640,
            height: 480,
            ..Default::default()
        };
        assert_eq!(file_line(&File::of(&a)), "📎 cat.png (2.0 KB, 640x480) f1");
    }

    fn names() -> Names {
        let mut n = Names::default();
        for (id, name) in [("u1", "alice"), ("u2", "bob")] {
            n.learn(&proto::User { id: id.into(), username: name.into(), ..Default::default() });
        }
        n
    }

    fn ev(seq: u64, actor: &str, kind: Kind) -> proto::RoomEvent {
        proto::RoomEvent {
            room_id: "r1".into(),
            seq,
            at_ms: 0,
            actor_id: actor.into(),
            kind: Some(kind),
        }
    }

    #[test]
    fn every_kind_reads_as_a_sentence() {
        let room = proto::Room { id: "r1".into(), name: "general".into(), ..Default::default() };
        let n = names();
        let msg = ev(
            1,
            "u1",
            Kind::Message(proto::Message {
                sender_id: "u1".into(),
                text: "hi\u{1b}[31m".into(),
                edited_at_ms: 5,
                ..Default::default()
            }),
        );
        let d = describe(&room, &msg, &n);
        assert_eq!((d.kind, d.sender.as_str(), d.edited), ("message", "alice", true));
        // JSON keeps the text exactly; the terminal line never carries the escape.
        assert_eq!(d.text, "hi\u{1b}[31m");
        assert!(plain(&d).ends_with("alice: hi^[[31m (edited)"), "{}", plain(&d));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["room"], "general");
        assert_eq!(json["sender"], "alice");
        assert_eq!(json["seq"], 1);
        assert!(json.get("target_seq").is_none());

        let kick = ev(
            2,
            "u1",
            Kind::Member(proto::MemberChanged {
                user_id: "u2".into(),
                removed: true,
                banned: true,
                reason: "spam".into(),
                ..Default::default()
            }),
        );
        assert!(plain(&describe(&room, &kick, &n)).ends_with("* bob was banned by alice: spam"));
        let role = ev(
            3,
            "u1",
            Kind::Member(proto::MemberChanged {
                user_id: "u2".into(),
                role: proto::RoomRole::Moderator as i32,
                ..Default::default()
            }),
        );
        assert!(plain(&describe(&room, &role, &n)).ends_with("* bob is now moderator (by alice)"));
        let del = describe(
            &room,
            &ev(4, "u2", Kind::Deleted(proto::MessageDeleted { target_seq: 1 })),
            &n,
        );
        assert_eq!((del.kind, del.target_seq), ("deleted", Some(1)));
        assert_eq!(user_ids(&kick), ["u1", "u2"]);
    }
}
