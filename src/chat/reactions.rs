//! Reactions and pins: marks on a message that are events of their own (`ReactionChanged`,
//! `PinChanged`) and change the message's stored state (its `reactions` counts, `pinned`), so
//! History shows a message as it is now without replaying its marks.

use super::messages::{ChatError, MessageAt, job, mark_mine, record, target};
use crate::audit::{self, AuditAction};
use crate::change::Change;
use crate::proto::{self, room_event::Kind};
use crate::rooms::permissions::{self, Action};
use crate::rooms::service::facts;
use crate::store::{JobResult, PinRecord, WriteCtx, events, pins, reactions};

/// Distinct reactions one message may carry: a message with a thousand different reactions
/// would make every page of history that shows it large, and says nothing a reader can take in.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 20;
/// Longest reaction, in characters (a family emoji with skin tones is 7-11 code points) ...
pub const MAX_EMOJI_CHARS: usize = 16;
/// ... and in bytes.
pub const MAX_EMOJI_BYTES: usize = 64;
/// Pins one room may hold: a pin list is read whole.
pub const MAX_PINS_PER_ROOM: usize = 50;

/// Checks that `emoji` looks like one emoji: 1-16 characters and at most 64 bytes, no
/// whitespace or control characters (bidi controls included: they would reorder what a
/// client shows around it), and at least one character outside ASCII, so `:+1:` or a word is
/// refused. Which sequences are real emoji is left to clients: Unicode adds new ones every
/// year, and a server that refused them would need an update for each.
pub fn check_emoji(emoji: &str) -> Result<(), ChatError> {
    let bad = |why: &str| Err(ChatError::InvalidArgument(format!("emoji {why}")));
    if emoji.is_empty() {
        return bad("is empty");
    }
    if emoji.len() > MAX_EMOJI_BYTES || emoji.chars().count() > MAX_EMOJI_CHARS {
        return bad(&format!(
            "is longer than {MAX_EMOJI_CHARS} characters or {MAX_EMOJI_BYTES} bytes"
        ));
    }
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if emoji.chars().any(|c| c.is_whitespace() || c.is_control() || bidi(c)) {
        return bad("contains spaces or control characters");
    }
    if emoji.is_ascii() {
        return bad("is plain text; send the emoji itself (e.g. 👍), not a name");
    }
    Ok(())
}

/// Change: `AddReaction` (`on`) or `RemoveReaction` by the caller.
#[derive(Clone, PartialEq, prost::Message)]
pub struct React {
    /// Caller, room, message, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<MessageAt>,
    /// The reaction (checked before the change was made).
    #[prost(string, tag = "2")]
    pub emoji: String,
    /// Add (true) or remove.
    #[prost(bool, tag = "3")]
    pub on: bool,
}

impl Change for React {
    type T = proto::Message;
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Message, ChatError> {
        let (who, room_id, seq, now_ms) = MessageAt::parts(self.at);
        let (emoji, on) = (self.emoji, self.on);
        job((|| {
            let (l, mut ev, mut msg) = target(ctx, &who, &room_id, seq)?;
            permissions::may(l.actor, Action::React, facts(&l.room))?;
            if msg.deleted {
                return Err(ChatError::FailedPrecondition(format!("message {seq} is deleted")));
            }
            let had = reactions::has(&**ctx, &room_id, seq, &emoji, &who.user_id)?;
            if had != on {
                let Some(Kind::Message(m)) = &mut ev.kind else {
                    unreachable!("target() returns messages")
                };
                apply_reaction(&mut m.reactions, &emoji, on)?;
                reactions::set(ctx, &room_id, seq, &emoji, &who.user_id, on)?;
                events::replace(ctx, &ev)?;
                let change = proto::ReactionChanged { target_seq: seq, emoji, added: on };
                record(ctx, &room_id, &who.user_id, now_ms, Kind::Reaction(change))?;
                msg = match ev.kind {
                    Some(Kind::Message(m)) => m,
                    _ => unreachable!("target() returns messages"),
                };
            }
            mark_mine(&**ctx, &who.user_id, &mut msg)?;
            Ok(msg)
        })())
    }
}

/// Counts one user's reaction in (`on`) or out of a message's reactions, keeping the order in
/// which reactions were first added. Refuses a new distinct reaction past the bound.
fn apply_reaction(
    counts: &mut Vec<proto::Reaction>,
    emoji: &str,
    on: bool,
) -> Result<(), ChatError> {
    let found = counts.iter().position(|r| r.emoji == emoji);
    match (found, on) {
        (Some(i), true) => counts[i].count += 1,
        (None, true) if counts.len() >= MAX_REACTIONS_PER_MESSAGE => {
            return Err(ChatError::ResourceExhausted(format!(
                "this message already has {MAX_REACTIONS_PER_MESSAGE} different reactions; \
                 add one of those instead"
            )));
        }
        (None, true) => {
            counts.push(proto::Reaction { emoji: emoji.to_string(), count: 1, mine: false });
        }
        (Some(i), false) => {
            counts[i].count = counts[i].count.saturating_sub(1);
            if counts[i].count == 0 {
                counts.remove(i);
            }
        }
        // The reactions table said the user had it; the counts cannot lack it.
        (None, false) => {}
    }
    Ok(())
}

/// Change: `PinMessage` (`on`) or `UnpinMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pin {
    /// Caller, room, message, time.
    #[prost(message, optional, tag = "1")]
    pub at: Option<MessageAt>,
    /// Pin (true) or unpin.
    #[prost(bool, tag = "2")]
    pub on: bool,
}

impl Change for Pin {
    type T = proto::Message;
    type E = ChatError;
    fn apply(self, ctx: &mut WriteCtx<'_>) -> JobResult<proto::Message, ChatError> {
        let (who, room_id, seq, now_ms) = MessageAt::parts(self.at);
        let on = self.on;
        job((|| {
            let (l, mut ev, mut msg) = target(ctx, &who, &room_id, seq)?;
            permissions::may(l.actor, Action::Pin, facts(&l.room))?;
            if msg.deleted && on {
                return Err(ChatError::FailedPrecondition(format!("message {seq} is deleted")));
            }
            if msg.pinned != on {
                if on && pins::count(&**ctx, &room_id)? >= MAX_PINS_PER_ROOM {
                    return Err(ChatError::ResourceExhausted(format!(
                        "this room already has {MAX_PINS_PER_ROOM} pinned messages; unpin one first"
                    )));
                }
                let pin = PinRecord { by: who.user_id.clone(), at_ms: now_ms };
                pins::set(ctx, &room_id, seq, on.then_some(&pin))?;
                if let Some(Kind::Message(m)) = &mut ev.kind {
                    m.pinned = on;
                    msg.pinned = on;
                }
                events::replace(ctx, &ev)?;
                let change = proto::PinChanged { target_seq: seq, pinned: on };
                record(ctx, &room_id, &who.user_id, now_ms, Kind::Pin(change))?;
                let on_msg = audit::Target { room_id: &room_id, user_id: &msg.sender_id, seq };
                let act =
                    if on { AuditAction::MessagePinned } else { AuditAction::MessageUnpinned };
                audit::record(ctx, now_ms, &who.user_id, act, on_msg, "", String::new())?;
            }
            mark_mine(&**ctx, &who.user_id, &mut msg)?;
            Ok(msg)
        })())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_rules() {
        for ok in ["👍", "🎉", "❤️", "👨‍👩‍👧‍👦", "1️⃣", "🇩🇪", "👍🏽", "✓"]
        {
            assert!(check_emoji(ok).is_ok(), "{ok:?}");
        }
        let too_long = "😀".repeat(17);
        let rtl = "\u{202E}👍";
        for bad in ["", ":+1:", "ok", " 👍", "👍\n", "\u{0}👍", rtl, &too_long] {
            let Err(ChatError::InvalidArgument(m)) = check_emoji(bad) else {
                panic!("{bad:?} accepted")
            };
            assert!(m.starts_with("emoji "), "{m}");
        }
        // 16 characters of 4 bytes each is exactly at both bounds.
        assert!(check_emoji(&"😀".repeat(16)).is_ok());
    }

    #[test]
    fn counts_keep_first_added_order_and_the_bound() {
        let mut c = Vec::new();
        for (emoji, on) in [("👍", true), ("🎉", true), ("👍", true), ("👍", false)] {
            apply_reaction(&mut c, emoji, on).unwrap();
        }
        let seen: Vec<_> = c.iter().map(|r| (r.emoji.as_str(), r.count)).collect();
        assert_eq!(seen, [("👍", 1), ("🎉", 1)]);
        apply_reaction(&mut c, "👍", false).unwrap();
        assert_eq!(c.len(), 1, "a count at zero is removed");
        for i in 0..(MAX_REACTIONS_PER_MESSAGE - 1) {
            apply_reaction(
                &mut c,
                &format!("{}", char::from_u32(0x1F600 + i as u32).unwrap()),
                true,
            )
            .unwrap();
        }
        assert_eq!(c.len(), MAX_REACTIONS_PER_MESSAGE);
        assert!(matches!(apply_reaction(&mut c, "🦀", true), Err(ChatError::ResourceExhausted(_))));
        // One more of an existing reaction is fine at the bound.
        apply_reaction(&mut c, "🎉", true).unwrap();
    }
}
